"""What a dataset is: its features (FeatureSpec), its schema (DatasetSchema: robot, rate, features, tasks,
as zarr.json's attributes say them) and the constants of the format (docs/dataset.md is the contract).

Nothing here touches the disk; store.py opens the Zarr store, writer.py writes it, dataset.py reads it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from zarr.codecs import ZstdCodec

from robot_stack.errors import DatasetError

FORMAT = "robot_stack.dataset"
SCHEMA_VERSION = 1
"""Bumped when a reader of the previous version would misread a new dataset; readers refuse newer ones."""

FEATURE_KINDS = {
    "state": "low-dim observation (joint positions, poses)",
    "image": "camera frame, uint8 [H, W, C]",
    "action": "the command sent to the robot at this frame",
    "reward": "a reward recorded with the data (sim ground truth)",
    "flag": "a per-frame boolean (e.g. sim success)",
    "time": "the frame's timestamp",
}
TIMESTAMP = "timestamp"
"""Every dataset has this feature: float64 seconds (ROS time of the frame); the writer adds it if missing."""

EPISODE_FIELDS: dict[str, Any] = {
    "task": "int32",  # index into the tasks list; -1 = unknown (recovered episodes)
    "success": "int8",  # 1 succeeded, 0 failed, -1 unknown
    "start_time": "float64",  # s, timestamp of the episode's first frame
    "duration": "float64",  # s, last timestamp - first timestamp
    "operator": str,
    "notes": str,
    "source": str,  # what produced the episode: one of EPISODE_SOURCES, "" unknown
}
EPISODE_SOURCES = ("teleop", "scripted", "policy", "online", "import")
"""Values of meta/episodes/source: an operator teleoperating, a scripted expert, a policy acting alone, an
online learner's actor (a policy, possibly corrected by the operator: data/intervention), another format."""
ADDED_EPISODE_FIELDS: dict[str, str] = {"source": ""}
"""Episode text fields added after datasets were first written, with the value an episode of a dataset without
the field reads as. Readers fill it in; a writer appending to such a dataset adds the array (rows of that value)."""
UNKNOWN = -1
UNWRITTEN_END = -1
"""Fill value of meta/episode_ends: the slot a commit grew but was killed before writing reads as this."""

ARRAY_RUN = "arrays"
"""labels/<run> attribute `holds` of a run of label arrays (write_label_array), written when the run is created."""
LOW_DIM_CHUNK_BYTES = 1 << 20  # about 1 MiB of raw values per chunk along time
IMAGE_SHARD_BYTES = 64 << 20  # cap on one image shard's raw size
EPISODE_ROWS_PER_CHUNK = 4096
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def compressor() -> ZstdCodec:
    # The zstd frame checksum makes a corrupted chunk fail to decode instead of reading as wrong numbers.
    return ZstdCodec(level=3, checksum=True)


def check_name(what: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DatasetError(f"{what} name {name!r} is not usable as a folder name: use letters, digits, _ . -")
    return name


@dataclass(frozen=True)
class FeatureSpec:
    """One per-frame quantity, stored as data/<name> with shape [n_frames, *shape] and this dtype.

    kind is one of FEATURE_KINDS; images are uint8 [H, W, C] (rgb8). topic is the ROS topic it was
    recorded from (provenance); units are SI ("rad", "m", "s", "m/s") or "" where unitless.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    kind: str
    topic: str = ""
    units: str = ""

    def __post_init__(self) -> None:
        check_name("feature", self.name)
        try:
            dtype = np.dtype(self.dtype)
        except TypeError as error:
            raise DatasetError(f"feature {self.name!r}: unknown dtype {self.dtype!r} ({error})") from None
        if dtype.kind not in "biuf":
            raise DatasetError(f"feature {self.name!r}: dtype {dtype} is not a bool, integer or float type")
        object.__setattr__(self, "dtype", dtype.name)
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if any(n < 1 for n in self.shape):
            raise DatasetError(f"feature {self.name!r}: shape {self.shape} has an empty axis")
        if self.kind not in FEATURE_KINDS:
            raise DatasetError(f"feature {self.name!r}: kind {self.kind!r} is not one of {sorted(FEATURE_KINDS)}")
        if self.kind == "image" and (self.dtype != "uint8" or len(self.shape) != 3):
            raise DatasetError(f"image feature {self.name!r} must be uint8 [H, W, C], got {self.dtype} {self.shape}")
        if self.name == TIMESTAMP and (self.kind, self.dtype, self.shape) != ("time", "float64", ()):
            raise DatasetError(f"feature {TIMESTAMP!r} is reserved: float64 seconds, shape (), kind 'time'")

    @property
    def is_image(self) -> bool:
        return self.kind == "image"

    @property
    def frame_bytes(self) -> int:
        """Raw bytes of one frame of this feature."""
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape), "kind": self.kind, "topic": self.topic, "units": self.units}

    @classmethod
    def from_json(cls, name: str, entry: Mapping[str, Any]) -> FeatureSpec:
        try:
            return cls(name, entry["dtype"], tuple(entry["shape"]), entry["kind"], entry.get("topic", ""), entry.get("units", ""))
        except (KeyError, TypeError) as error:
            raise DatasetError(f"feature {name!r} in the dataset attributes is malformed ({error!r})") from None


@dataclass
class DatasetSchema:
    """What zarr.json's attributes say: the robot, the rate, the features and the task texts."""

    robot: dict[str, Any]
    record_hz: float
    features: dict[str, FeatureSpec]
    tasks: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_attrs(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "schema_version": self.schema_version,
            "robot": self.robot,
            "record_hz": self.record_hz,
            "features": {name: spec.to_json() for name, spec in self.features.items()},
            "tasks": list(self.tasks),
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], path: Path) -> DatasetSchema:
        try:
            features = {name: FeatureSpec.from_json(name, entry) for name, entry in attrs["features"].items()}
            return cls(dict(attrs["robot"]), float(attrs["record_hz"]), features, list(attrs["tasks"]), int(attrs["schema_version"]))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise DatasetError(f"{path}/zarr.json attributes are malformed ({error!r}): the dataset is damaged") from None

    def first_mismatch(self, other: DatasetSchema) -> str | None:
        """Why data recorded under `other` cannot join data recorded under this schema, or None if it can.

        Robot, rate and every feature's dtype, shape, kind and units must match; topics may differ (remaps).
        """
        if self.robot != other.robot:
            keys = sorted(set(self.robot) | set(other.robot), key=str)
            key = next(k for k in keys if self.robot.get(k) != other.robot.get(k))
            return f"robot[{key!r}] is {self.robot.get(key)!r} in one and {other.robot.get(key)!r} in the other"
        if self.record_hz != other.record_hz:
            return f"record_hz is {self.record_hz} in one and {other.record_hz} in the other"
        for name in self.features.keys() | other.features.keys():
            if name not in self.features or name not in other.features:
                return f"feature {name!r} is in only one of them"
        for name, spec in self.features.items():
            theirs = other.features[name]
            for attr in ("dtype", "shape", "kind", "units"):
                if getattr(spec, attr) != getattr(theirs, attr):
                    return f"feature {name!r} has {attr} {getattr(spec, attr)!r} in one and {getattr(theirs, attr)!r} in the other"
        return None
