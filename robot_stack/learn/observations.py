"""What the policy sees and does, in numbers: the observation spec (features, normalization) and action scaling.

An ObservationSpec is built once from a dataset and a TrainConfig, saved with the run (and later in the
model card), and turns dataset frames or live env observations into the same tensors:
``{"state": float32 [N, D] normalized, "image.<cam>": uint8 [N, H, W, 3]}``. Actions are learned in
[-1, 1]; ``scale``/``unscale`` map to and from the robot's command bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_stack.data import Dataset
from robot_stack.data.stats import dataset_stats
from robot_stack.errors import LearnError

MIN_STD = 1e-3  # a constant feature (a quaternion that never turns) is centred, not blown up


@dataclass
class ObservationSpec:
    """State features (name -> shape) in order, their mean/std per component, images, embeddings, action bounds."""

    state: dict[str, list[int]]
    mean: list[float]
    std: list[float]
    images: dict[str, list[int]] = field(default_factory=dict)  # image.<cam> -> [H, W, C]
    embeddings: dict[str, dict[str, Any]] = field(default_factory=dict)  # image.<cam> -> {model, dim, shape}: frozen CLIP
    action: str = "action"
    action_low: list[float] = field(default_factory=list)
    action_high: list[float] = field(default_factory=list)
    action_names: list[str] = field(default_factory=list)  # the command's element names (robot command_spec), if known

    @property
    def state_dim(self) -> int:
        """Components of the "state" tensor: the state features, then each embedding."""
        return int(sum(np.prod(shape, dtype=int) for shape in self.state.values())
                   + sum(e["dim"] for e in self.embeddings.values()))

    @property
    def action_dim(self) -> int:
        return len(self.action_low)

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "mean": self.mean, "std": self.std, "images": self.images,
                "embeddings": self.embeddings, "action": self.action,
                "action_low": self.action_low, "action_high": self.action_high, "action_names": self.action_names}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObservationSpec:
        return cls(**data)

    def state_from(self, values: dict[str, np.ndarray], embeddings: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Normalized state float32 [N, D] from raw feature arrays {name: [N, *shape]} (and embeddings [N, E])."""
        missing = [name for name in self.state if name not in values]
        if missing:
            raise LearnError(f"observation lacks state feature(s) {missing}; the policy was trained on {list(self.state)}")
        parts = [np.asarray(values[name], np.float64).reshape(len(values[name]), -1) for name in self.state]
        for name in self.embeddings:
            if embeddings is None or name not in embeddings:
                raise LearnError(f"observation lacks the {name} embedding this policy needs")
            parts.append(np.asarray(embeddings[name], np.float64))
        raw = np.concatenate(parts, axis=1)
        return ((raw - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)

    def scale(self, command: np.ndarray) -> np.ndarray:
        """Robot command -> learned action in [-1, 1] (clipped), float32 [N, A]."""
        low, high = np.asarray(self.action_low), np.asarray(self.action_high)
        return np.clip(2.0 * (np.asarray(command, np.float64) - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)

    def unscale(self, action: np.ndarray) -> np.ndarray:
        """Learned action in [-1, 1] -> robot command within its bounds, float64 [N, A]."""
        low, high = np.asarray(self.action_low), np.asarray(self.action_high)
        return low + (np.clip(np.asarray(action, np.float64), -1.0, 1.0) + 1.0) * (high - low) / 2.0


def state_features(ds: Dataset, chosen: list[str]) -> list[str]:
    """The state features to use: `chosen`, checked, or every feature of kind 'state'."""
    if not chosen:
        chosen = [name for name, spec in ds.features.items() if spec.kind == "state"]
        if not chosen:
            raise LearnError(f"{ds.path} has no features of kind 'state'; name observations explicitly "
                             f"(features: {sorted(ds.features)})")
        return chosen
    for name in chosen:
        spec = ds.features.get(name)
        if spec is None:
            raise LearnError(f"observation {name!r} is not a feature of {ds.path}; its features: {sorted(ds.features)}")
        if spec.is_image:
            raise LearnError(f"observation {name!r} is an image: list it under images, not observations")
        if spec.kind in ("action", "time"):
            raise LearnError(f"observation {name!r} is the dataset's {spec.kind}, not an observation")
    return list(chosen)


def image_features(ds: Dataset, chosen: list[str]) -> dict[str, list[int]]:
    out = {}
    for name in chosen:
        spec = ds.features.get(name)
        if spec is None or not spec.is_image:
            images = [n for n, s in ds.features.items() if s.is_image]
            raise LearnError(f"image {name!r} is not an image feature of {ds.path}; its images: {images or 'none'}")
        out[name] = list(spec.shape)
    return out


def action_bounds(ds: Dataset, action: str = "action") -> tuple[list[float], list[float]]:
    """The command bounds from the dataset's robot (command_spec low/high); else the recorded min/max."""
    if action not in ds.features:
        raise LearnError(f"{ds.path} has no {action!r} feature: it cannot be learned from")
    spec = ds.robot.get("command_spec") or {}
    dim = int(np.prod(ds.features[action].shape, dtype=int))
    low, high = spec.get("low"), spec.get("high")
    if low is None or high is None or len(low) != dim or len(high) != dim:
        stats = dataset_stats(ds)[action]
        low, high = np.asarray(stats.min).reshape(-1).tolist(), np.asarray(stats.max).reshape(-1).tolist()
        high = [h if h > lo else lo + 1.0 for lo, h in zip(low, high)]
    return [float(v) for v in low], [float(v) for v in high]


def build_spec(ds: Dataset, observations: list[str], images: list[str],
               embeddings: dict[str, np.ndarray] | None = None, embedding_model: str = "") -> ObservationSpec:
    """The spec of a training run: features, their statistics over the dataset, action bounds."""
    names = state_features(ds, observations)
    stats = dataset_stats(ds)
    mean, std = [], []
    for name in names:
        mean += np.asarray(stats[name].mean, np.float64).reshape(-1).tolist()
        std += np.maximum(np.asarray(stats[name].std, np.float64).reshape(-1), MIN_STD).tolist()
    embedding_info = {}
    for name, values in (embeddings or {}).items():
        embedding_info[name] = {"model": embedding_model, "dim": int(values.shape[1]), "shape": list(ds.features[name].shape)}
        mean += values.mean(0).astype(np.float64).tolist()
        std += np.maximum(values.std(0).astype(np.float64), MIN_STD).tolist()
    low, high = action_bounds(ds)
    command_names = [str(n) for n in (ds.robot.get("command_spec") or {}).get("names") or []]
    return ObservationSpec(
        state={name: list(ds.features[name].shape) for name in names}, mean=mean, std=std,
        images=image_features(ds, [i for i in images if i not in (embeddings or {})]),
        embeddings=embedding_info, action_low=low, action_high=high,
        action_names=command_names if len(command_names) == len(low) else [],
    )


def env_key(feature: str) -> str:
    """Dataset feature name -> the sim env's observation key (image.<cam> -> image/<cam>)."""
    return "image/" + feature[len("image."):] if feature.startswith("image.") else feature
