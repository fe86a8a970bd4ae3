"""A Bradley-Terry reward model (Bradley & Terry 1952) fitted to frame preferences, as in PEBBLE (Lee et al.
2021) and RL-VLM-F (Wang et al. 2024): an ensemble of small networks r(x), each trained on a bootstrap
resample of the answered pairs with the cross-entropy of

    P(first ≻ second) = sigmoid(r(x_first) - r(x_second))

against the answer: PREFER_FIRST (0) is target 1, PREFER_SECOND (1) is target 0; ABSTAIN pairs are left out.
So a frame preferred more often gets the HIGHER reward. Inputs are frozen embeddings float32 [n_frames, E]
(an MLP) or uint8 camera frames [n_frames, H, W, 3] (a small CNN trained from scratch). A frame's reward is
the ensemble mean of the members' r, each member first standardised over all frames of the dataset (BT
fixes r only up to an offset and a scale the data happens to give; never per episode).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from robot_stack.errors import LabelError
from robot_stack.label.base import ABSTAIN, PREFER_FIRST

PIXEL_SIZE = 64
"""Camera frames are resized to S x S for the CNN, S = PIXEL_SIZE or the frame's short side if smaller."""


def mlp(in_dim: int, hidden: int = 64) -> nn.Module:
    """r(x) on an embedding: [B, in_dim] -> [B]."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1), nn.Flatten(0))


def cnn() -> nn.Module:
    """r(x) on camera frames: float [B, 3, S, S] in [0, 1] -> [B] (any S: it pools globally)."""
    return nn.Sequential(nn.Conv2d(3, 16, 5, 2, 2), nn.ReLU(), nn.Conv2d(16, 32, 5, 2, 2), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 1), nn.Flatten(0))


def pixels(frames: np.ndarray, device: torch.device) -> Tensor:
    """uint8 [B, H, W, 3] -> uint8 [B, 3, S, S] on `device`, S = min(PIXEL_SIZE, H, W) (antialiased resize)."""
    batch = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float()
    size = min(PIXEL_SIZE, *batch.shape[2:])
    small = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return small.round().clamp(0, 255).to(torch.uint8)


def fit_bradley_terry(inputs: np.ndarray, pairs: np.ndarray, answers: np.ndarray, *, ensemble: int = 3,
                      steps: int = 400, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                      device: str = "cpu", read: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Fit the ensemble and return every frame's reward: float32 [n_frames], the ensemble mean.

    inputs: embeddings float32 [n_frames, E], or (with `read`) anything of length n_frames whose frames
    read(indices) returns as uint8 [k, H, W, 3] (the CNN is used then); pairs: int64 [P, 2] frame indices;
    answers: int8 [P] in {0, 1, -1}. Raises LabelError when no pair was answered.
    """
    answered = answers != ABSTAIN
    pairs, target = pairs[answered], (answers[answered] == PREFER_FIRST).astype(np.float32)
    if len(pairs) == 0:
        raise LabelError("the judge abstained on every pair: no preference to fit a reward model to (ask more "
                         "pairs, raise the budget, lower the margin, or choose another judge)")
    device = torch.device(device)
    n_frames = len(inputs)
    generator = np.random.default_rng([seed, 0xB7])
    if read is None:
        table = torch.from_numpy(np.asarray(inputs, np.float32)).to(device)
        rows = pairs
    else:  # the frames the pairs use, read once and kept small: [k, 3, S, S] uint8
        frames = np.unique(pairs.ravel())
        table = torch.cat([pixels(read(frames[i : i + 256]), device) for i in range(0, len(frames), 256)])
        rows = np.searchsorted(frames, pairs)

    def encode(x: Tensor) -> Tensor:
        return x if read is None else x.float() / 255

    members = []
    for member in range(ensemble):
        torch.manual_seed(seed * 1000 + member)
        net = (mlp(inputs.shape[1]) if read is None else cnn()).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        boot = generator.integers(0, len(rows), len(rows))  # bootstrap resample: members disagree where data is thin
        for _ in range(steps):
            pick = boot[generator.integers(0, len(boot), min(batch_size, len(boot)))]
            used, inverse = np.unique(rows[pick].ravel(), return_inverse=True)
            r = net(encode(table[torch.from_numpy(used).to(device)]))[torch.from_numpy(inverse).to(device)].view(-1, 2)
            loss = F.binary_cross_entropy_with_logits(r[:, 0] - r[:, 1], torch.from_numpy(target[pick]).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        members.append(net.eval())
    rewards = np.zeros((ensemble, n_frames), np.float64)
    with torch.inference_mode():
        for start in range(0, n_frames, 1024):
            index = np.arange(start, min(n_frames, start + 1024))
            x = table[torch.from_numpy(index).to(device)] if read is None else encode(pixels(read(index), device))
            for member, net in enumerate(members):
                rewards[member, index] = net(x).double().cpu().numpy()
    rewards = (rewards - rewards.mean(1, keepdims=True)) / np.maximum(rewards.std(1, keepdims=True), 1e-8)
    return rewards.mean(0).astype(np.float32)
