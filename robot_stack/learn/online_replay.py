"""Online data for offline-to-online training: finished episodes, the device-resident online replay, the mixed sampler.

An Episode is what one online rollout gives (a sim env's, or one the recorder committed on a robot). Its
transitions follow robot_stack.data.sampling's rules exactly (transition t earns r_{t+1}; the last transition
of a successful episode is terminal, of any other a timeout; n-step sums; return-to-go for Cal-QL), so an
online transition means what an offline one does. The OnlineReplay holds them on the training device in
preallocated arrays and grows by whole episodes; the MixedSampler draws each batch from the offline replay
and the online one. Neither syncs with the host when sampling: sizes live in device tensors, so a compiled
step or a CUDA graph can sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from robot_stack.errors import LearnError
from robot_stack.learn.observations import ObservationSpec
from robot_stack.learn.replay import Batch, ReplayBuffer

_DRAW_RANGE = 2**62  # uniform integers reduced modulo the buffer size: a bias below 1e-12 for any real buffer


@dataclass
class Episode:
    """One finished online episode of T frames.

    observations: dataset feature name -> raw values [T, ...] (every state feature of the run's ObservationSpec,
    every image it uses, and for a labels/<run> reward the images the label model reads); action: [T, A] robot
    command units (the last frame's is the hold command, as datasets store it); reward: float32 [T], frame f's
    reward of the state observed at f, BEFORE the run's reward offset (r_0 is never earned by a transition);
    success: the task was achieved; intervention: bool [T] (the operator's command was used), or None.
    """

    observations: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    success: bool
    intervention: np.ndarray | None = None

    @property
    def frames(self) -> int:
        return len(self.action)

    @property
    def transitions(self) -> int:
        """Environment steps the episode holds (T - 1)."""
        return max(len(self.action) - 1, 0)


def episode_transitions(reward: np.ndarray, success: bool, n_step: int, gamma: float) -> dict[str, np.ndarray]:
    """The transitions of one episode under robot_stack.data.sampling's rules, frame indices from its first frame.

    reward: float32 [T] per-frame rewards (offset already added). Returns frame, next_frame int64 [T - 1];
    reward (n-step discounted), discount (gamma**k), terminal, return_to_go float32 [T - 1].
    """
    r = np.asarray(reward, np.float32)
    frames = len(r)
    last = frames - 1
    frame = np.arange(max(last, 0))
    k = np.minimum(n_step, last - frame)
    total = np.zeros(len(frame), np.float64)
    for i in range(n_step):
        live = i < k
        total[live] += gamma**i * r[frame[live] + 1 + i]
    running, to_go = 0.0, np.zeros(frames, np.float64)
    for f in range(frames - 2, -1, -1):
        running = r[f + 1] + gamma * running
        to_go[f] = running
    next_frame = frame + k
    return {"frame": frame, "next_frame": next_frame, "reward": total.astype(np.float32),
            "discount": (gamma ** k.astype(np.float64)).astype(np.float32),
            "terminal": ((next_frame == last) & bool(success)).astype(np.float32),
            "return_to_go": to_go[frame].astype(np.float32)}


class OnlineReplay:
    """Online frames and transitions preallocated on one device, appended a whole episode at a time.

    Frames: {"state": float32 [capacity, D] normalized, "image.<cam>": uint8 [capacity, H, W, 3]}, action float32
    [capacity, A] in [-1, 1]; transitions (at most one per frame) index them. `sample(k)` draws uniformly over the
    transitions added so far, their count read from a device tensor (no host sync).
    """

    def __init__(self, spec: ObservationSpec, capacity_frames: int, *, gamma: float = 0.99, n_step: int = 1,
                 device: str | torch.device = "cpu") -> None:
        if capacity_frames < 2:
            raise LearnError(f"the online replay needs room for at least 2 frames, got {capacity_frames}")
        self.spec, self.capacity, self.gamma, self.n_step = spec, int(capacity_frames), float(gamma), int(n_step)
        device = torch.device(device)
        self.frames: dict[str, Tensor] = {"state": torch.zeros(self.capacity, spec.state_dim, device=device)}
        for name, shape in spec.images.items():
            self.frames[name] = torch.zeros(self.capacity, *shape, dtype=torch.uint8, device=device)
        self.action = torch.zeros(self.capacity, spec.action_dim, device=device)
        self.frame = torch.zeros(self.capacity, dtype=torch.int64, device=device)
        self.next_frame = torch.zeros(self.capacity, dtype=torch.int64, device=device)
        self.reward, self.discount, self.terminal, self.return_to_go = (
            torch.zeros(self.capacity, device=device) for _ in range(4))
        self.size = torch.zeros((), dtype=torch.int64, device=device)  # transitions, as sample() reads them
        self.n_frames = self.n_transitions = self.n_episodes = 0
        # What a compiled step may read on the host: a flag that changes once (the counts above would be guards
        # that recompile the step at every episode).
        self.has_data = False

    def __len__(self) -> int:
        return self.n_transitions

    @property
    def device(self) -> torch.device:
        return self.action.device

    def add_episode(self, episode: Episode, offset: float = 0.0, embeddings: dict[str, np.ndarray] | None = None) -> None:
        """Append `episode` (its rewards + `offset`, as the offline replay's; embeddings: CLIP [T, E] per camera)."""
        frames = episode.frames
        if frames < 2:
            return  # a single frame holds no transition
        if self.n_frames + frames > self.capacity:
            raise LearnError(f"the online replay is full ({self.n_frames} of {self.capacity} frames; this episode has "
                             f"{frames}): lower online_steps or run it in parts")
        reward = np.asarray(episode.reward, np.float32).reshape(frames) + np.float32(offset)
        index = episode_transitions(reward, episode.success, self.n_step, self.gamma)
        start, stop = self.n_frames, self.n_frames + frames
        state = self.spec.state_from({name: episode.observations[name] for name in self.spec.state}, embeddings)
        self.frames["state"][start:stop] = torch.as_tensor(state, device=self.device)
        for name in self.spec.images:
            self.frames[name][start:stop] = torch.as_tensor(np.asarray(episode.observations[name]), device=self.device)
        self.action[start:stop] = torch.as_tensor(self.spec.scale(np.asarray(episode.action).reshape(frames, -1)),
                                                  device=self.device)
        first, last = self.n_transitions, self.n_transitions + frames - 1
        self.frame[first:last] = torch.as_tensor(index["frame"] + start, device=self.device)
        self.next_frame[first:last] = torch.as_tensor(index["next_frame"] + start, device=self.device)
        for name in ("reward", "discount", "terminal", "return_to_go"):
            getattr(self, name)[first:last] = torch.as_tensor(index[name], device=self.device)
        self.n_frames, self.n_transitions, self.n_episodes = stop, last, self.n_episodes + 1
        self.size.fill_(last)
        self.has_data = True

    def sample(self, batch_size: int) -> Batch:
        index = torch.randint(_DRAW_RANGE, (batch_size,), device=self.device) % self.size.clamp(min=1)
        return self.gather(index)

    def gather(self, index: Tensor) -> Batch:
        """The transitions at `index` (int64 [B] on the buffer's device)."""
        frame, next_frame = self.frame[index], self.next_frame[index]
        return Batch(obs={name: values[frame] for name, values in self.frames.items()}, action=self.action[frame],
                     reward=self.reward[index], next_obs={name: values[next_frame] for name, values in self.frames.items()},
                     discount=self.discount[index], terminal=self.terminal[index], return_to_go=self.return_to_go[index],
                     online=torch.ones(len(index), device=index.device))


class MixedSampler:
    """Batches from the offline replay and the online one: the trainer's step samples through it.

    ratio r in [0, 1]: every batch of B holds exactly round(r * B) online transitions and the rest offline
    (RLPD's symmetric sampling is r = 0.5); "proportional": each row uniform over offline + online (the IQL paper
    appends online data to its buffer). While the online replay is empty every row is offline; with no offline
    data (dropped, as WSRL does, or none) batches are all online and nothing can be sampled before the first
    online episode (`ready` False). `mode` names which of these applies: a step function keeps one compiled
    step / CUDA graph per mode. Every batch carries Batch.online, 1 on its online rows (hybrid sim-real training
    tells sim rows from real ones by it); None in mode "offline".
    """

    def __init__(self, offline: ReplayBuffer | None, online: OnlineReplay, ratio: float | str) -> None:
        self.offline, self.online, self.ratio = offline, online, ratio
        if ratio != "proportional" and not 0.0 <= float(ratio) <= 1.0:
            raise LearnError(f"online_ratio must be in [0, 1] or proportional, got {ratio!r}")

    @property
    def mode(self) -> str:
        if self.offline is None:
            return "online"
        if not self.online.has_data:
            return "offline"
        return "online" if self.ratio != "proportional" and float(self.ratio) == 1.0 else "mixed"

    @property
    def ready(self) -> bool:
        return self.mode != "online" or self.online.has_data

    @property
    def device(self) -> torch.device:
        return self.online.device

    def online_rows(self, batch_size: int) -> int:
        """How many of a batch's rows are online in mode "mixed" with a numeric ratio."""
        return round(float(self.ratio) * batch_size)

    def drop_offline(self) -> None:
        """Forget the offline data (its device memory is freed once nothing else holds it)."""
        self.offline = None

    def sample(self, batch_size: int) -> Batch:
        mode = self.mode
        if mode == "offline":
            return self.offline.sample(batch_size)
        if mode == "online":
            return self.online.sample(batch_size)
        if self.ratio == "proportional":
            return self._proportional(batch_size)
        k = self.online_rows(batch_size)
        if k == 0:
            return _marked(self.offline.sample(batch_size))
        if k == batch_size:
            return self.online.sample(batch_size)
        return _concatenate(self.online.sample(k), _marked(self.offline.sample(batch_size - k)))

    def _proportional(self, batch_size: int) -> Batch:
        n_offline = len(self.offline)
        draw = torch.randint(_DRAW_RANGE, (batch_size,), device=self.device) % (self.online.size + n_offline)
        online = draw >= n_offline
        return _select(online, self.online.gather((draw - n_offline).clamp(min=0)),
                       _marked(self.offline.gather(draw.clamp(max=n_offline - 1))))


def _marked(batch: Batch) -> Batch:
    """An offline batch with Batch.online zeros (so it joins online rows field by field)."""
    batch.online = torch.zeros_like(batch.reward)
    return batch


def _concatenate(first: Batch, second: Batch) -> Batch:
    def cat(a: Any, b: Any) -> Any:
        if isinstance(a, dict):
            return {key: torch.cat([a[key], b[key]]) for key in a}
        return torch.cat([a, b])

    return Batch(**{name: cat(getattr(first, name), getattr(second, name)) for name in _FIELDS})


def _select(mask: Tensor, where_true: Batch, where_false: Batch) -> Batch:
    def pick(a: Any, b: Any) -> Any:
        if isinstance(a, dict):
            return {key: pick(a[key], b[key]) for key in a}
        return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)

    return Batch(**{name: pick(getattr(where_true, name), getattr(where_false, name)) for name in _FIELDS})


_FIELDS = ("obs", "action", "reward", "next_obs", "discount", "terminal", "return_to_go", "online")
