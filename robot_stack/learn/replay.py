"""The replay buffer: every frame of a dataset on the training device, and the transitions between them.

Frames are stored once (state float32 [F, D], images uint8 [F, H, W, 3], actions in [-1, 1]); a
transition is two frame indices plus its n-step reward, discount and terminal flag
(robot_stack.data.sampling's rules). ``sample`` draws indices with torch.randint on the device and
gathers: no host round trip, so it can sit inside a compiled step or a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robot_stack.data.sampling import frame_rewards, transition_index
from robot_stack.data import Dataset
from robot_stack.errors import LearnError
from robot_stack.learn.observations import ObservationSpec


@dataclass
class Batch:
    """A batch of transitions. obs/next_obs: {"state": float32 [B, D], "image.<cam>": uint8 [B, H, W, 3]};
    action float32 [B, A] in [-1, 1]; reward, discount (gamma**k), terminal (1.0 = no bootstrap) float32 [B];
    return_to_go float32 [B]: the data's discounted return from obs to its episode's end (Cal-QL's bound);
    online float32 [B]: 1 on rows from the online replay, 0 on the dataset's (set by online_replay.MixedSampler;
    None: every row is the dataset's)."""

    obs: dict[str, Tensor]
    action: Tensor
    reward: Tensor
    next_obs: dict[str, Tensor]
    discount: Tensor
    terminal: Tensor
    return_to_go: Tensor | None = None
    online: Tensor | None = None


class ReplayBuffer:
    """Frames and transitions resident on one device; `sample(batch_size)` returns a Batch."""

    def __init__(self, frames: dict[str, Tensor], action: Tensor, frame: Tensor, next_frame: Tensor,
                 reward: Tensor, discount: Tensor, terminal: Tensor, return_to_go: Tensor | None = None) -> None:
        if len(frame) == 0:
            raise LearnError("the dataset has no transitions (every episode is a single frame?)")
        self.frames, self.action = frames, action
        self.frame, self.next_frame = frame, next_frame
        self.reward, self.discount, self.terminal = reward, discount, terminal
        self.return_to_go = torch.zeros_like(reward) if return_to_go is None else return_to_go

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def device(self) -> torch.device:
        return self.action.device

    def sample(self, batch_size: int) -> Batch:
        index = torch.randint(len(self.frame), (batch_size,), device=self.device)
        return self.gather(index)

    def gather(self, index: Tensor) -> Batch:
        """The transitions at `index` (int64 [B] on the buffer's device)."""
        frame, next_frame = self.frame[index], self.next_frame[index]
        return Batch(
            obs={name: values[frame] for name, values in self.frames.items()},
            action=self.action[frame],
            reward=self.reward[index],
            next_obs={name: values[next_frame] for name, values in self.frames.items()},
            discount=self.discount[index],
            terminal=self.terminal[index],
            return_to_go=self.return_to_go[index],
        )

    def reward_stats(self) -> dict[str, float]:
        """Mean / min / max of the transition reward (read once, for the run's log)."""
        reward = self.reward.float().cpu()
        return {"mean": float(reward.mean()), "min": float(reward.min()), "max": float(reward.max())}


def reward_source(ds: Dataset, reward: str) -> str:
    """The TrainConfig reward name -> the sampler's source string (robot_stack.data.sampling.frame_rewards)."""
    if reward == "sim":
        recorded = [name for name, spec in ds.features.items() if spec.kind == "reward"]
        if not recorded:
            raise LearnError(f"{ds.path} has no recorded sim reward (no feature of kind 'reward'): it was not "
                             "recorded in the sim; train with --reward success or a label run (labels/<run>)")
        return f"feature:{recorded[0]}"
    if reward.startswith("labels/"):
        run = reward[len("labels/"):]
        if run not in ds.label_runs():
            raise LearnError(f"{ds.path} has no label run {run!r} (runs: {ds.label_runs() or 'none'}): "
                             "run a labeling job first, or use --reward sim / success")
        return f"label:{run}"
    return reward  # success, none, feature:<name>: the sampler's own names


def reward_offset(ds: Dataset, reward: str, offset: Any = "auto") -> float:
    """What is added to every frame's reward: `offset` when it is a number; for "auto", minus the largest frame
    reward of a label run (its rewards become <= 0, its best frame 0), else 0.

    Why: the last transition of a successful episode is terminal (robot_stack.data.sampling), so reaching the goal
    ends the reward stream. A labeler's rewards are calibrated to about [0, 1]: positive rewards make an episode
    that wanders on worth more than one that succeeds and stops, and IQL on reach2d fell from 1.00 (sim reward,
    -distance) to 0.38 success on the sim reward mapped affinely to [0, 1], and back to 1.00 shifted by -1. Rewards
    <= 0 keep the goal the best place to end, as the sim reward (-distance) does and as IQL's AntMaze setting
    (r - 1, Kostrikov et al. 2021) and absorbing-state treatments (Kostrikov et al. 2019) do.
    """
    if offset != "auto":
        return float(offset)
    if not reward.startswith("labels/"):
        return 0.0
    return -float(np.max(frame_rewards(ds, reward_source(ds, reward)))) if ds.n_frames else 0.0


def build_replay(ds: Dataset, spec: ObservationSpec, reward: str, *, n_step: int = 1, gamma: float = 0.99,
                 embeddings: dict[str, np.ndarray] | None = None, device: str | torch.device = "cpu",
                 offset: float = 0.0) -> ReplayBuffer:
    """Load every committed frame of `ds` onto `device` as `spec` describes, with its transitions (`offset` added to
    every frame's reward: reward_offset)."""
    index = transition_index(ds, reward_source(ds, reward), n_step, gamma, reward_offset=offset)
    state = spec.state_from({name: ds.frames(name) for name in spec.state}, embeddings)
    frames = {"state": torch.as_tensor(state, device=device)}
    for name in spec.images:
        frames[name] = torch.as_tensor(ds.frames(name), device=device)
    action = torch.as_tensor(spec.scale(ds.frames(spec.action).reshape(ds.n_frames, -1)), device=device)
    rewards = np.zeros_like(index.reward) if reward == "none" else index.reward
    returns = np.zeros_like(index.return_to_go) if reward == "none" else index.return_to_go

    def tensor(values: np.ndarray, dtype: torch.dtype) -> Tensor:
        return torch.as_tensor(np.asarray(values), device=device).to(dtype)

    return ReplayBuffer(frames, action, tensor(index.frame, torch.int64), tensor(index.next_frame, torch.int64),
                        tensor(rewards, torch.float32), tensor(index.discount, torch.float32),
                        tensor(index.terminal, torch.float32), tensor(returns, torch.float32))
