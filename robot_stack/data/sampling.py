"""What learners read from a dataset: transitions (with n-step returns) and fixed-length windows.

The rules (docs/dataset.md, "Samplers"):

- Reward per frame r_f comes from a source: "success" (1.0 at the last frame of a successful episode,
  else 0; refused when no episode succeeded), "feature:<name>" (a recorded per-frame reward, e.g. sim
  ground truth), "label:<run>" (labels/<run>/reward), or "none" (0: behaviour cloning). r_f rewards
  the state observed at frame f.
- An episode of T frames gives T - 1 transitions t -> t + 1 (no transition crosses an episode end);
  transition t earns r_{t+1}, the reward of the state its action led to.
- The last transition of an episode is `terminal` if the episode succeeded (success == 1: the task is
  done, nothing follows) or its last frame raises a `terminated` flag feature (an MDP termination as
  gymnasium and Minari record it: a fall ends the episode too), and a `timeout` otherwise (failed, stopped
  or unknown: the world went on, so learners bootstrap from next_obs).
- n-step: k = min(n, frames left after t); reward = sum_{i<k} gamma^i r_{t+1+i}; next_obs = obs_{t+k};
  discount = gamma^k; terminal / timeout say whether t + k is the episode's last frame (as above). The
  target is reward + discount * (1 - terminal) * V(next_obs).
- return_to_go of transition t is the data's own discounted return from there to the episode's end,
  sum_{i >= 0} gamma^i r_{t+1+i} (1-step rewards whatever n is; not bootstrapped past a timeout).
- Windows of `length` frames start at every frame of every episode; frames past the episode's last
  repeat the last frame and are marked invalid (valid[i, j] False).

Everything here is numpy on the host; `Transitions.to_torch(device)` moves the low-dim set to a
device, and robot_stack.data.loader reads images for a torch DataLoader.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from robot_stack.data.dataset import Dataset
from robot_stack.errors import DatasetError


def frame_rewards(ds: Dataset, source: str) -> np.ndarray:
    """Reward of every committed frame, float32 [n_frames], from `source` (see the module docstring)."""
    kind, _, name = source.partition(":")
    if source == "none":
        return np.zeros(ds.n_frames, np.float32)
    if source == "success":
        success = ds.success
        if not (success == 1).any():
            raise DatasetError(
                f"reward source 'success': no episode of {ds.path} is marked successful ({int((success == 0).sum())} "
                f"failed, {int((success == -1).sum())} unknown), so every reward would be 0: mark the episodes that "
                f"succeeded with `robot-stack data mark {ds.path} EPISODES success` (EPISODES: e.g. 3, 0,2,5, 4-9)")
        reward = np.zeros(ds.n_frames, np.float32)
        reward[ds.episode_ends[success == 1] - 1] = 1.0
        return reward
    if kind == "feature" and name:
        spec = ds.features.get(name)
        if spec is None or spec.shape not in ((), (1,)):
            raise DatasetError(f"reward source {source!r}: {ds.path} has no scalar feature {name!r} "
                               f"(scalar features: {[n for n, s in ds.features.items() if s.shape in ((), (1,))]})")
        return ds.frames(name).reshape(ds.n_frames).astype(np.float32)
    if kind == "label" and name:
        labels = ds.read_labels(name)
        if len(labels.reward) != ds.n_frames:
            raise DatasetError(f"labels/{name} cover {len(labels.reward)} frames but {ds.path} has {ds.n_frames} "
                               "committed: label the dataset again (it gained episodes since)")
        return labels.reward
    raise DatasetError(f"unknown reward source {source!r}: use 'success', 'feature:<name>', 'label:<run>' or 'none'")


@dataclass(frozen=True)
class TransitionIndex:
    """Frame indices and flags of every transition, [n_transitions] each (the rules are the module's)."""

    frame: np.ndarray  # int64, frame of obs and action
    next_frame: np.ndarray  # int64, frame of next_obs (frame + k)
    reward: np.ndarray  # float32, n-step discounted reward
    discount: np.ndarray  # float32, gamma ** k
    terminal: np.ndarray  # bool
    timeout: np.ndarray  # bool
    episode: np.ndarray  # int64
    return_to_go: np.ndarray  # float32, the data's discounted return from the transition to its episode's end


def return_to_go(ds: Dataset, r_frame: np.ndarray, gamma: float) -> np.ndarray:
    """float64 [n_frames]: at frame f, sum_{i >= 0} gamma^i r_{f+1+i} over the rest of f's episode (0 at its last)."""
    out = np.zeros(ds.n_frames, np.float64)
    for start, end in zip(ds.episode_starts, ds.episode_ends):
        running = 0.0
        for f in range(end - 2, start - 1, -1):
            running = r_frame[f + 1] + gamma * running
            out[f] = running
    return out


TERMINATED = "terminated"
"""A flag feature that, raised at an episode's last frame, makes that frame terminal (see the module docstring)."""


def terminated_episodes(ds: Dataset) -> np.ndarray:
    """bool [n_episodes]: the episodes whose last frame raises the `terminated` flag (False without the feature)."""
    spec = ds.features.get(TERMINATED)
    if spec is None or spec.kind != "flag" or ds.n_episodes == 0:
        return np.zeros(ds.n_episodes, bool)
    return np.asarray(ds.frames(TERMINATED), bool).reshape(ds.n_frames, -1).any(axis=1)[ds.episode_ends - 1]


def transition_index(ds: Dataset, reward: str = "success", n_step: int = 1, gamma: float = 0.99,
                     reward_offset: float = 0.0) -> TransitionIndex:
    """Every transition of the committed episodes under the module's rules; `reward_offset` is added to every
    frame's reward first (n-step sums and return_to_go included)."""
    if n_step < 1:
        raise DatasetError(f"n_step must be at least 1, got {n_step}")
    r_frame = frame_rewards(ds, reward) + np.float32(reward_offset)
    lengths = ds.episode_ends - ds.episode_starts
    episode = np.repeat(np.arange(ds.n_episodes), lengths - 1)
    last = ds.episode_ends[episode] - 1  # the episode's last frame, for each transition
    frame = np.arange(ds.n_frames)[np.isin(np.arange(ds.n_frames), ds.episode_ends - 1, invert=True)]
    k = np.minimum(n_step, last - frame)
    total = np.zeros(len(frame), np.float64)
    for i in range(n_step):
        live = i < k
        total[live] += gamma**i * r_frame[frame[live] + 1 + i]
    next_frame = frame + k
    ends_here = next_frame == last
    succeeded = (ds.success == 1) | terminated_episodes(ds)
    succeeded = succeeded[episode]
    return TransitionIndex(
        frame=frame, next_frame=next_frame, reward=total.astype(np.float32),
        discount=(gamma ** k.astype(np.float64)).astype(np.float32),
        terminal=ends_here & succeeded, timeout=ends_here & ~succeeded, episode=episode,
        return_to_go=return_to_go(ds, r_frame, gamma)[frame].astype(np.float32),
    )


@dataclass(frozen=True)
class Transitions:
    """Low-dim transitions held in memory: numpy arrays, or torch tensors after `to_torch`.

    obs / next_obs: {feature: [N, *shape]}; action [N, *shape]; reward, discount float32 [N];
    terminal, timeout bool [N]; episode, frame int64 [N] (where each transition came from).
    """

    obs: dict[str, Any]
    action: Any
    reward: Any
    next_obs: dict[str, Any]
    discount: Any
    terminal: Any
    timeout: Any
    episode: Any
    frame: Any

    def __len__(self) -> int:
        return len(self.reward)

    def batch(self, index: Any) -> Transitions:
        """The transitions at `index` (an integer array or tensor on the same device)."""
        return Transitions(**{f.name: _map(getattr(self, f.name), lambda x: x[index]) for f in fields(self)})

    def to_torch(self, device: Any = "cpu") -> Transitions:
        """The same transitions as torch tensors on `device` (bool flags stay bool)."""
        import torch  # the learn extra; the rest of this module needs only numpy

        return replace(self, **{f.name: _map(getattr(self, f.name), lambda x: torch.as_tensor(x, device=device)) for f in fields(self)})


def _map(value: Any, function: Any) -> Any:
    return {key: function(item) for key, item in value.items()} if isinstance(value, dict) else function(value)


def _low_dim(ds: Dataset, names: list[str]) -> dict[str, np.ndarray]:
    images = [name for name in names if ds.features.get(name) is not None and ds.features[name].is_image]
    if images:
        raise DatasetError(f"{images} are images: load_* keeps low-dim data in memory; use "
                           "robot_stack.data.loader (TransitionDataset / WindowDataset) for images")
    missing = [name for name in names if name not in ds.features]
    if missing:
        raise DatasetError(f"{ds.path} has no feature {missing[0]!r}; it has {sorted(ds.features)}")
    return {name: ds.frames(name) for name in names}


def load_transitions(ds: Dataset, obs: list[str], action: str = "action", reward: str = "success",
                     n_step: int = 1, gamma: float = 0.99) -> Transitions:
    """All transitions of the committed episodes with low-dim `obs` features, in memory (numpy)."""
    data = _low_dim(ds, [*obs, action])
    index = transition_index(ds, reward, n_step, gamma)
    return Transitions(
        obs={name: data[name][index.frame] for name in obs},
        action=data[action][index.frame],
        reward=index.reward,
        next_obs={name: data[name][index.next_frame] for name in obs},
        discount=index.discount,
        terminal=index.terminal,
        timeout=index.timeout,
        episode=index.episode,
        frame=index.frame,
    )


def window_index(ds: Dataset, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows starting at every committed frame: (frames int64 [n_frames, length], valid bool [same]).

    Frames past the episode's last repeat the last frame and have valid False.
    """
    if length < 1:
        raise DatasetError(f"window length must be at least 1, got {length}")
    start = np.arange(ds.n_frames)
    last = ds.episode_ends[ds.episode_of(start)] - 1
    wanted = start[:, None] + np.arange(length)[None, :]
    return np.minimum(wanted, last[:, None]), wanted <= last[:, None]


@dataclass(frozen=True)
class Windows:
    """Fixed-length windows of low-dim features: data {feature: [N, length, *shape]}, valid bool [N, length],
    episode int64 [N], start int64 [N] (the window's first frame)."""

    data: dict[str, np.ndarray]
    valid: np.ndarray
    episode: np.ndarray
    start: np.ndarray


def load_windows(ds: Dataset, features: list[str], length: int) -> Windows:
    """A window of `length` frames at every committed frame, low-dim features in memory (numpy)."""
    data = _low_dim(ds, features)
    frames, valid = window_index(ds, length)
    start = np.arange(ds.n_frames)
    return Windows({name: data[name][frames] for name in features}, valid, ds.episode_of(start), start)
