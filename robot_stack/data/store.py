"""The dataset storage format: one Zarr v3 store per dataset, written while it is recorded.

    dataset.zarr/
      zarr.json              attrs: format, schema_version, robot, record_hz, features, tasks
      data/<feature>         [n, *shape] per feature, all episodes concatenated along time
      meta/                  attrs: written_frames (frames every data array holds in full)
      meta/episode_ends      int64 [n_episodes], exclusive end frame of each committed episode: the commit point
      meta/episodes/<field>  one row per episode: task, success, start_time, duration, operator, notes
      labels/<run>/reward    float32 [n_frames] per committed frame; provenance in labels/<run> attrs
      labels/<run>/<name>    other per-frame arrays [n_frames, ...] (embeddings); provenance in each array's attrs

docs/dataset.md is the schema. The writes are ordered so that a kill between any two of them leaves a
dataset whose committed episodes are intact and readable; each write below says why it comes where it does.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm
from zarr.codecs import ZstdCodec

from robot_stack import __version__
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
}
UNKNOWN = -1
UNWRITTEN_END = -1
"""Fill value of meta/episode_ends: the slot a commit grew but was killed before writing reads as this."""

ARRAY_RUN = "arrays"
"""labels/<run> attribute `holds` of a run of label arrays (write_label_array), written when the run is created."""
LOW_DIM_CHUNK_BYTES = 1 << 20  # about 1 MiB of raw values per chunk along time
IMAGE_SHARD_BYTES = 64 << 20  # cap on one image shard's raw size
EPISODE_ROWS_PER_CHUNK = 4096
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
# Every chunk is stored even when it equals the fill value, so a missing chunk file is always damage.
_WRITE_CONFIG = {"write_empty_chunks": True}


def _compressor() -> ZstdCodec:
    # The zstd frame checksum makes a corrupted chunk fail to decode instead of reading as wrong numbers.
    return ZstdCodec(level=3, checksum=True)


def _check_name(what: str, name: str) -> str:
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
        _check_name("feature", self.name)
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


# --------------------------------------------------------------------------------------------------
# Opening: every check a reader makes before trusting the store, with a message that says what to do.


def _read_root_attrs(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DatasetError(f"no dataset at {path}: the path does not exist (record one, or check the path)")
    if not (path / "zarr.json").is_file():
        v2 = " (it is a Zarr v2 store; robot_stack datasets are Zarr v3)" if (path / ".zgroup").exists() else ""
        raise DatasetError(f"{path} is not a Zarr v3 store: it has no zarr.json{v2}; give the path of a dataset.zarr folder")
    try:
        root = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}/zarr.json cannot be read ({error}): the store is damaged") from None
    if root.get("zarr_format") != 3 or root.get("node_type") != "group":
        raise DatasetError(f"{path} is not a Zarr v3 group (its zarr.json says format {root.get('zarr_format')}, "
                           f"node type {root.get('node_type')})")
    attrs = root.get("attributes") or {}
    if attrs.get("format") != FORMAT:
        raise DatasetError(
            f"{path} is a Zarr store but not a robot_stack dataset (its zarr.json attributes lack format={FORMAT!r}): "
            "record into a new dataset with robot_stack.data.DatasetWriter, or convert the data with an importer"
        )
    version = attrs.get("schema_version")
    if not isinstance(version, int):
        raise DatasetError(f"{path} has no integer schema_version in its zarr.json attributes: the dataset is damaged")
    if version > SCHEMA_VERSION:
        raise DatasetError(
            f"{path} uses dataset schema_version {version}, newer than the {SCHEMA_VERSION} that robot_stack "
            f"{__version__} reads: upgrade robot_stack"
        )
    return attrs


def _open_group(path: Path, writable: bool) -> zarr.Group:
    return zarr.open_group(zarr.storage.LocalStore(path, read_only=not writable), mode="r+" if writable else "r")


def _member(group: zarr.Group, key: str, path: Path) -> Any:
    try:
        return group[key]
    except KeyError:
        raise DatasetError(f"{path}: {group.path + '/' if group.path else ''}{key} is missing: the dataset is damaged "
                           f"(run `robot-stack data validate {path}`)") from None


def _committed_ends(ends: np.ndarray, path: Path) -> np.ndarray:
    """The committed entries of meta/episode_ends, checked to be strictly increasing."""
    # A commit killed between growing episode_ends and writing its value leaves one trailing fill value.
    if len(ends) and ends[-1] == UNWRITTEN_END:
        ends = ends[:-1]
    starts = np.concatenate([[0], ends[:-1]])
    bad = np.flatnonzero(ends <= starts)
    if len(bad):
        raise DatasetError(
            f"{path}: meta/episode_ends is not strictly increasing at episode {bad[0]} ({ends[bad[0]]} after "
            f"{starts[bad[0]]}): the dataset is damaged (run `robot-stack data validate {path}`)"
        )
    return ends.astype(np.int64)


@dataclass
class _Store:
    """The opened store: the checked schema, its arrays, and the committed index."""

    path: Path
    root: zarr.Group
    schema: DatasetSchema
    data: dict[str, zarr.Array]
    meta: zarr.Group
    episode_ends_array: zarr.Array
    episode_fields: dict[str, zarr.Array]
    episode_ends: np.ndarray  # committed ends only
    written_frames: int

    @classmethod
    def open(cls, path: Path, writable: bool) -> _Store:
        schema = DatasetSchema.from_attrs(_read_root_attrs(path), path)
        root = _open_group(path, writable)
        data_group, meta = _member(root, "data", path), _member(root, "meta", path)
        data = {}
        for name, spec in schema.features.items():
            array = _member(data_group, name, path)
            if array.dtype != np.dtype(spec.dtype) or tuple(array.shape[1:]) != spec.shape:
                raise DatasetError(f"{path}: data/{name} is {array.dtype} {tuple(array.shape[1:])} per frame but the "
                                   f"features say {spec.dtype} {spec.shape}: the dataset is damaged")
            data[name] = array.with_config(_WRITE_CONFIG) if writable else array
        episode_group = _member(meta, "episodes", path)
        fields = {name: _member(episode_group, name, path) for name in EPISODE_FIELDS}
        if writable:
            fields = {name: array.with_config(_WRITE_CONFIG) for name, array in fields.items()}
        ends_array = _member(meta, "episode_ends", path)
        ends = _committed_ends(ends_array[:], path)
        committed = int(ends[-1]) if len(ends) else 0
        for name, array in data.items():
            if array.shape[0] < committed:
                raise DatasetError(
                    f"{path}: data/{name} has {array.shape[0]} frames but meta/episode_ends commits {committed}: "
                    f"feature lengths are inconsistent, the dataset is damaged (run `robot-stack data validate {path}`)"
                )
        for name, array in fields.items():
            if array.shape[0] < len(ends):
                raise DatasetError(f"{path}: meta/episodes/{name} has {array.shape[0]} rows for {len(ends)} committed "
                                   "episodes: the dataset is damaged")
        written = int(meta.attrs.get("written_frames", committed))
        return cls(path, root, schema, data, meta, ends_array, fields, ends, written)

    @property
    def committed_frames(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0


# --------------------------------------------------------------------------------------------------
# Writing


@contextmanager
def _writing(path: Path, what: str) -> Iterator[None]:
    """Turn a failed write into a DatasetError that names the dataset, the write and the way out."""
    try:
        yield
    except OSError as error:
        cause = "the disk is full" if error.errno == errno.ENOSPC else str(error)
        raise DatasetError(
            f"cannot write {what} to {path}: {cause}. Committed episodes are intact; free space, then retry or "
            f"discard the episode being recorded (or run `robot-stack data recover {path}` later)"
        ) from error


def _create_array(group: zarr.Group, name: str, spec: FeatureSpec, shard_frames: int) -> zarr.Array:
    if spec.is_image:
        # One frame per chunk (a loader reads exactly the frames it needs) inside shards of many frames
        # (one file per shard, not per frame); docs/dataset.md has the measurements behind this.
        chunks, shards = (1, *spec.shape), (shard_frames, *spec.shape) if shard_frames > 1 else None
    else:
        # Chunked along time only: a power of two frames, about LOW_DIM_CHUNK_BYTES raw.
        frames = 1 << max(0, int(math.log2(max(1, LOW_DIM_CHUNK_BYTES // spec.frame_bytes))))
        chunks, shards = (frames, *spec.shape), None
    return group.create_array(
        name, shape=(0, *spec.shape), dtype=spec.dtype, chunks=chunks, shards=shards,
        compressors=_compressor(), fill_value=0, config=_WRITE_CONFIG,
    )


def _as_task_index(task: str | int | None, tasks: list[str]) -> int:
    if task is None:
        return UNKNOWN
    if isinstance(task, (int, np.integer)):
        if not 0 <= task < len(tasks):
            raise DatasetError(f"task index {task} is out of range: the dataset has {len(tasks)} tasks")
        return int(task)
    return tasks.index(task) if task in tasks else len(tasks)


class DatasetWriter:
    """Records episodes into a dataset: append frames while recording, then commit or discard the episode.

    Frames are buffered in memory; every `flush_interval_s` seconds of appends (or `flush_frames` frames,
    one image shard by default) the buffer goes to a background thread that writes it to Zarr while the
    next one fills, so an append costs a copy, not a write. A crash loses at most the frames not yet on
    disk (under two flush intervals) of the episode being recorded, never a committed episode. A failed
    background write (disk full) is raised as DatasetError by the next call. Use `create` for a new
    dataset and `open` to append to an existing one; one writer per dataset at a time.
    """

    def __init__(self, store: _Store, flush_interval_s: float, flush_frames: int) -> None:
        self._store = store
        self.path = store.path
        self.schema = store.schema
        self.flush_interval_s = flush_interval_s
        self.flush_frames = flush_frames
        self._ends = [int(end) for end in store.episode_ends]
        self._written = store.committed_frames  # frames every data array holds
        self._submitted = self._written  # frames written or being written
        # Two buffers: appends fill one while the background thread writes the other.
        self._buffers, self._spare = (
            {name: np.zeros((flush_frames, *spec.shape), spec.dtype) for name, spec in self.schema.features.items()}
            for _ in range(2)
        )
        self._buffered = 0
        self._last_flush = time.monotonic()
        self._first_time: float | None = None
        self._last_time: float | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dataset-writer:{self.path.name}")
        self._pending: Future | None = None
        self._failed: DatasetError | None = None

    # ---- opening

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        robot: Mapping[str, Any],
        record_hz: float,
        features: list[FeatureSpec],
        tasks: Sequence[str] = (),
        flush_interval_s: float = 1.0,
        image_shard_frames: int | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> DatasetWriter:
        """Create a new dataset at `path` (which must not exist) and return its writer.

        robot: JSON-able description (name, and the meaning of the action/command); record_hz: frames/s;
        features: what each frame holds (a float64 `timestamp` feature in seconds is added if absent);
        tasks: known task texts (more are added as episodes name them); flush_interval_s: how often
        appends hand the buffer to the write thread (bounds the loss on a crash); image_shard_frames:
        frames per image shard (default: one flush, at most IMAGE_SHARD_BYTES; 1: no sharding, a file
        per frame); provenance: JSON-able record of where the data came from (merge, split, an
        importer), stored in the root attributes.
        """
        path = Path(path)
        if path.exists():
            raise DatasetError(f"{path} exists: open it with DatasetWriter.open to append, or choose a new path")
        if not record_hz > 0:
            raise DatasetError(f"record_hz must be positive frames per second, got {record_hz}")
        specs = {}
        for spec in features:
            if spec.name in specs:
                raise DatasetError(f"feature {spec.name!r} is given twice")
            specs[spec.name] = spec
        specs.setdefault(TIMESTAMP, FeatureSpec(TIMESTAMP, "float64", (), "time", units="s"))
        schema = DatasetSchema(json.loads(json.dumps(dict(robot))), float(record_hz), specs, list(dict.fromkeys(tasks)))
        flush_frames = max(1, round(record_hz * flush_interval_s))
        with _writing(path, "the new dataset"):
            root = zarr.open_group(zarr.storage.LocalStore(path), mode="w-", zarr_format=3)
            data_group = root.create_group("data")
            for name, spec in specs.items():
                shard = image_shard_frames or min(flush_frames, max(1, IMAGE_SHARD_BYTES // spec.frame_bytes))
                _create_array(data_group, name, spec, shard)
            meta = root.create_group("meta", attributes={"written_frames": 0})
            episodes = meta.create_group("episodes")
            for name, dtype in EPISODE_FIELDS.items():
                episodes.create_array(name, shape=(0,), dtype=dtype, chunks=(EPISODE_ROWS_PER_CHUNK,),
                                      compressors=_compressor(), config=_WRITE_CONFIG)
            meta.create_array("episode_ends", shape=(0,), dtype="int64", chunks=(EPISODE_ROWS_PER_CHUNK,),
                              fill_value=UNWRITTEN_END, compressors=_compressor(), config=_WRITE_CONFIG)
            # Last: the format marker. A kill before this leaves "a Zarr store, not a robot_stack dataset".
            attrs = schema.to_attrs() | {"created": _now(), "created_by": f"robot_stack {__version__}"}
            root.update_attributes(attrs | ({"provenance": dict(provenance)} if provenance else {}))
        return cls(_Store.open(path, writable=True), flush_interval_s, flush_frames)

    @classmethod
    def open(cls, path: str | os.PathLike, features: list[FeatureSpec] | None = None, *, flush_interval_s: float = 1.0) -> DatasetWriter:
        """Open an existing dataset to append episodes; `features`, if given, must match the stored ones.

        A dataset with an unfinished episode (frames past the last committed end) must be recovered first.
        """
        writer = cls._open(Path(path), flush_interval_s)
        try:
            if writer.episode_frames:
                raise DatasetError(
                    f"{writer.path} has an unfinished episode ({writer.episode_frames} frames past the last commit, "
                    "from a recording that stopped without commit or discard): run `robot-stack data recover "
                    f"{writer.path} --keep` or `--drop` (robot_stack.data.recover) before appending"
                )
            if features is not None:
                given = {spec.name: spec for spec in features}
                given.setdefault(TIMESTAMP, writer.schema.features[TIMESTAMP])
                problem = writer.schema.first_mismatch(DatasetSchema(writer.schema.robot, writer.schema.record_hz, given))
                if problem:
                    raise DatasetError(f"cannot append to {writer.path}: the features differ ({problem})")
            writer._drop_unreferenced()
        except DatasetError:
            writer._thread.shutdown()
            raise
        return writer

    @classmethod
    def _open(cls, path: Path, flush_interval_s: float) -> DatasetWriter:
        """Open for writing and adopt frames past the last commit as the current episode (they are flushed)."""
        store = _Store.open(path, writable=True)
        flush_frames = max(1, round(store.schema.record_hz * flush_interval_s))
        writer = cls(store, flush_interval_s, flush_frames)
        committed = store.committed_frames
        lengths = [array.shape[0] for array in store.data.values()]
        writer._written = writer._submitted = max(committed, min([store.written_frames, *lengths]))
        if writer._written > committed:
            times = store.data[TIMESTAMP]
            writer._first_time, writer._last_time = float(times[committed]), float(times[writer._written - 1])
        return writer

    def _drop_unreferenced(self) -> None:
        """Remove what a killed writer left past the index: data past written frames, extra episode rows."""
        with _writing(self.path, "the cleanup of an interrupted write"):
            for array in self._store.data.values():
                if array.shape[0] > self._written:
                    array.resize((self._written, *array.shape[1:]))
            for array in self._store.episode_fields.values():
                if array.shape[0] > len(self._ends):
                    array.resize((len(self._ends),))
            if self._store.episode_ends_array.shape[0] > len(self._ends):
                self._store.episode_ends_array.resize((len(self._ends),))

    # ---- state

    @property
    def n_episodes(self) -> int:
        """Committed episodes."""
        return len(self._ends)

    @property
    def committed_frames(self) -> int:
        return self._ends[-1] if self._ends else 0

    @property
    def episode_frames(self) -> int:
        """Frames appended to the episode being recorded (on disk or not)."""
        return self._submitted + self._buffered - self.committed_frames

    @property
    def tasks(self) -> list[str]:
        return list(self.schema.tasks)

    # ---- recording

    def append_frame(self, frame: Mapping[str, Any]) -> None:
        """Append one frame to the current episode: {feature: value of that feature's shape and dtype}.

        The first frame after a commit or discard starts a new episode. Costs a copy into the buffer; the
        write to disk happens on the background thread (this waits only if the previous one is unfinished).
        """
        if len(frame) != len(self._buffers) or any(name not in frame for name in self._buffers):
            self._frame_keys_error(frame)
        self._check_not_failed()
        row = self._buffered
        for name, buffer in self._buffers.items():
            value = frame[name]
            if np.shape(value) != buffer.shape[1:]:
                raise DatasetError(f"feature {name!r} expects shape {buffer.shape[1:]} per frame, got {np.shape(value)}")
            buffer[row] = value
        stamp = float(self._buffers[TIMESTAMP][row])
        self._note_times(stamp, stamp)
        self._buffered += 1
        if self._buffered == self.flush_frames or time.monotonic() - self._last_flush >= self.flush_interval_s:
            self._hand_off()

    def append_frames(self, frames: Mapping[str, Any]) -> None:
        """Append a batch: {feature: array [n, *shape]}, the same n for every feature."""
        if len(frames) != len(self._buffers) or any(name not in frames for name in self._buffers):
            self._frame_keys_error(frames)
        arrays = {name: np.asarray(frames[name]) for name in self._buffers}
        lengths = {len(array) if array.ndim else -1 for array in arrays.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise DatasetError(f"append_frames needs arrays [n, *shape] with one n for every feature, got lengths "
                               f"{ {name: array.shape[:1] for name, array in arrays.items()} }")
        for name, array in arrays.items():
            if array.shape[1:] != self._buffers[name].shape[1:]:
                raise DatasetError(f"feature {name!r} expects frames of shape {self._buffers[name].shape[1:]}, got {array.shape[1:]}")
        self._check_not_failed()
        n, done = lengths.pop(), 0
        if n:
            self._note_times(arrays[TIMESTAMP][0], arrays[TIMESTAMP][-1])
        while done < n:
            take = min(n - done, self.flush_frames - self._buffered)
            for name, array in arrays.items():
                self._buffers[name][self._buffered : self._buffered + take] = array[done : done + take]
            self._buffered += take
            done += take
            if self._buffered == self.flush_frames:
                self._hand_off()
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self._hand_off()

    def flush(self) -> None:
        """Write the buffered frames to disk and wait for it. Appends flush on their own (in the background)."""
        self._hand_off()
        self._wait()

    def _hand_off(self) -> None:
        """Give the buffered frames to the background thread and switch to the other buffer."""
        self._wait()  # the previous write used the other buffer; waiting also throttles to the disk's pace
        n = self._buffered
        if n:
            self._pending = self._thread.submit(self._write_frames, self._buffers, self._submitted, n)
            self._buffers, self._spare = self._spare, self._buffers
            self._submitted += n
            self._buffered = 0
        self._last_flush = time.monotonic()

    def _wait(self) -> None:
        """Wait for the background write; its failure stops the episode (discard it to go on)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                self._written = pending.result()
            except DatasetError as error:
                self._failed = error
        self._check_not_failed()

    def _check_not_failed(self) -> None:
        if self._failed is not None:
            raise DatasetError(f"a background write failed, so this episode cannot continue (discard_episode() to go on): {self._failed}")

    def _write_frames(self, buffers: dict[str, np.ndarray], start: int, n: int) -> int:
        """Write frames [start, start + n) of every feature (on the background thread); returns start + n."""
        stop = start + n
        with _writing(self.path, f"frames {start}-{stop - 1}"):
            for name, array in self._store.data.items():
                # Grow, then write: Zarr writes only inside the shape. Frames past written_frames are
                # ignored by everyone, so a kill between the two is harmless. Each chunk file is replaced
                # atomically (temp file + rename), so committed frames sharing a chunk survive a kill.
                array.resize((stop, *array.shape[1:]))
                array[start:stop] = buffers[name][:n]
            # Last: every data array now holds these frames in full.
            self._store.meta.update_attributes({"written_frames": stop})
        return stop

    def commit_episode(self, task: str | int | None, success: bool | None, operator: str = "", notes: str = "") -> int:
        """Make the current episode part of the dataset and return its index.

        task: the task text (added to the dataset's tasks if new), its index, or None if unknown;
        success: whether the task was achieved (None: unknown). Writes the episode's row first and extends
        meta/episode_ends last: that write is the commit.
        """
        if self.episode_frames == 0:
            raise DatasetError("nothing to commit: append frames to the episode first")
        self.flush()
        index, end = self.n_episodes, self._written
        task_index = _as_task_index(task, self.schema.tasks)
        row = {
            "task": task_index,
            "success": UNKNOWN if success is None else int(bool(success)),
            "start_time": self._first_time,
            "duration": self._last_time - self._first_time,
            "operator": str(operator),
            "notes": str(notes),
        }
        with _writing(self.path, f"episode {index}"):
            if task_index == len(self.schema.tasks):
                # Before the row that refers to it; a kill after this leaves an unused task text, harmless.
                self._store.root.update_attributes({"tasks": [*self.schema.tasks, task]})
                self.schema.tasks.append(task)
            for name, array in self._store.episode_fields.items():
                # Rows past the committed episode count are ignored, so these may be written in any order.
                array.resize((index + 1,))
                array[index] = row[name]
            # The commit point. Growing episode_ends and writing the value are two writes: a kill between them
            # leaves a trailing fill value (UNWRITTEN_END), which readers skip.
            self._store.episode_ends_array.resize((index + 1,))
            self._store.episode_ends_array[index] = end
        self._ends.append(end)
        self._first_time = self._last_time = None
        return index

    def discard_episode(self) -> None:
        """Drop the episode being recorded: the buffer and anything of it already on disk."""
        self._buffered = 0
        self._failed = None
        try:
            self._wait()
        except DatasetError:
            self._failed = None  # the frames it failed to write are being dropped anyway
        self._submitted = self._written
        committed = self.committed_frames
        if self._written > committed:
            with _writing(self.path, "the discard of the current episode"):
                # First the marker: once written_frames is back at the last end, the frames past it are nobody's.
                self._store.meta.update_attributes({"written_frames": committed})
                for array in self._store.data.values():
                    array.resize((committed, *array.shape[1:]))
            self._written = self._submitted = committed
        self._first_time = self._last_time = None

    def close(self) -> None:
        """Flush and stop the write thread. An episode not committed stays on disk as unfinished data
        (recover keeps or drops it)."""
        try:
            self.flush()
        finally:
            self._thread.shutdown(wait=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _note_times(self, first: float, last: float) -> None:
        if self._first_time is None:
            self._first_time = float(first)
        self._last_time = float(last)

    def _frame_keys_error(self, frame: Mapping[str, Any]) -> None:
        missing = sorted(set(self._buffers) - set(frame))
        extra = sorted(set(frame) - set(self._buffers))
        raise DatasetError(f"a frame must hold exactly the dataset's features: missing {missing}, unknown {extra}")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------
# Reading


class FrameView:
    """Frames [start, stop) of one feature, read from disk only when indexed: shape [n, *feature shape]."""

    def __init__(self, array: zarr.Array, start: int, stop: int) -> None:
        self._array, self.start, self.stop = array, start, stop
        self.shape = (stop - start, *array.shape[1:])
        self.dtype = array.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice) -> np.ndarray:
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            frames = self._array[self.start + lo : self.start + hi]
            return frames if step == 1 else frames[::step]
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        return self._array[self.start + index % len(self)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        frames = self[:]
        return frames if dtype is None else frames.astype(dtype)


@dataclass(frozen=True)
class EpisodeInfo:
    """One committed episode: frames [start, stop) and its row in meta/episodes."""

    index: int
    start: int
    stop: int
    task: int  # index into Dataset.tasks; -1 unknown
    task_text: str | None
    success: bool | None
    start_time: float  # s
    duration: float  # s
    operator: str
    notes: str

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Labels:
    """A label run: reward float32 [n_frames of the dataset when labeled] and its provenance attributes."""

    run: str
    reward: np.ndarray
    attrs: dict[str, Any]


class Dataset:
    """A recorded dataset, read-only except for what later stages add beside the data (labels, stats).

    Only committed episodes are visible: frames past the last episode end belong to an unfinished episode
    (`unfinished_frames`) and are ignored. Open with `Dataset.open(path)`.
    """

    def __init__(self, store: _Store) -> None:
        self._store = store
        self.path = store.path
        self.schema = store.schema
        self.episode_ends = store.episode_ends.copy()
        self.episode_starts = np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)
        self._table: dict[str, np.ndarray] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> Dataset:
        """Open and check a dataset; raises DatasetError saying what is wrong and what to do."""
        return cls(_Store.open(Path(path), writable=False))

    # ---- shape of the data

    @property
    def features(self) -> dict[str, FeatureSpec]:
        return dict(self.schema.features)

    @property
    def robot(self) -> dict[str, Any]:
        return dict(self.schema.robot)

    @property
    def record_hz(self) -> float:
        return self.schema.record_hz

    @property
    def tasks(self) -> list[str]:
        return list(self.schema.tasks)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_frames(self) -> int:
        """Committed frames (all episodes)."""
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    @property
    def unfinished_frames(self) -> int:
        """Frames written past the last committed end: an episode that was neither committed nor discarded."""
        return max(0, self._store.written_frames - self.n_frames)

    def episode_slice(self, index: int) -> slice:
        """Frames of episode `index` as a slice of the data arrays."""
        index = self._episode_index(index)
        return slice(int(self.episode_starts[index]), int(self.episode_ends[index]))

    def episode_of(self, frames: np.ndarray | int) -> np.ndarray:
        """Episode index of each committed frame index."""
        return np.searchsorted(self.episode_ends, frames, side="right")

    # ---- data

    def array(self, name: str) -> zarr.Array:
        """The raw Zarr array of a feature (it may hold unfinished frames past n_frames)."""
        if name not in self._store.data:
            raise DatasetError(f"{self.path} has no feature {name!r}; it has {sorted(self._store.data)}")
        return self._store.data[name]

    def frames(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Committed frames [start, stop) of a feature: [stop - start, *shape]."""
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        return self.array(name)[start:stop]

    def episode(self, index: int) -> dict[str, np.ndarray | FrameView]:
        """{feature: frames of episode `index`}: numpy arrays for low-dim features, FrameView for images."""
        span = self.episode_slice(index)
        return {
            name: FrameView(self.array(name), span.start, span.stop) if spec.is_image else self.array(name)[span]
            for name, spec in self.schema.features.items()
        }

    # ---- per-episode metadata

    def episode_table(self) -> dict[str, np.ndarray]:
        """Per-episode columns, one row per committed episode: index, start, stop, length, and the
        meta/episodes fields (task, success, start_time [s], duration [s], operator, notes)."""
        if self._table is None:
            n = self.n_episodes
            table = {"index": np.arange(n), "start": self.episode_starts, "stop": self.episode_ends,
                     "length": self.episode_ends - self.episode_starts}
            for name, array in self._store.episode_fields.items():
                table[name] = array[:n]
            self._table = table
        return {name: column.copy() for name, column in self._table.items()}

    def episode_info(self, index: int) -> EpisodeInfo:
        index = self._episode_index(index)
        row = {name: column[index] for name, column in self.episode_table().items()}
        task = int(row["task"])
        return EpisodeInfo(
            index=index, start=int(row["start"]), stop=int(row["stop"]), task=task,
            task_text=self.tasks[task] if 0 <= task < len(self.tasks) else None,
            success=None if row["success"] == UNKNOWN else bool(row["success"]),
            start_time=float(row["start_time"]), duration=float(row["duration"]),
            operator=str(row["operator"]), notes=str(row["notes"]),
        )

    @property
    def success(self) -> np.ndarray:
        """int8 [n_episodes]: 1 succeeded, 0 failed, -1 unknown."""
        return self.episode_table()["success"]

    @property
    def success_rate(self) -> float:
        """Fraction of episodes with a known outcome that succeeded; nan if none is known."""
        known = self.success[self.success != UNKNOWN]
        return float(known.mean()) if len(known) else float("nan")

    def size_bytes(self) -> int:
        """Bytes the store takes on disk (file sizes)."""
        return sum(entry.stat().st_size for entry in self.path.rglob("*") if entry.is_file())

    def describe(self) -> str:
        """A few lines for `robot-stack data info`."""
        seconds = self.n_frames / self.record_hz
        lines = [
            f"{self.path}: robot_stack dataset, schema {self.schema.schema_version}",
            f"  robot: {json.dumps(self.robot)}",
            f"  {self.n_episodes} episodes, {self.n_frames} frames at {self.record_hz:g} Hz ({seconds / 60:.1f} min), "
            f"success rate {self.success_rate:.2f}, {self.size_bytes() / 1e6:.1f} MB",
        ]
        if self.unfinished_frames:
            lines.append(f"  unfinished episode: {self.unfinished_frames} frames (robot-stack data recover)")
        lines.append("  features:")
        for spec in self.schema.features.values():
            lines.append(f"    {spec.name:20s} {spec.kind:7s} {spec.dtype:8s} {str(spec.shape):16s} {spec.units:6s} {spec.topic}")
        lines.append(f"  tasks: {self.tasks}")
        lines.append(f"  label runs: {self.label_runs()}")
        if self.label_arrays():
            lines.append(f"  label arrays: {self.label_arrays()}")
        return "\n".join(lines)

    # ---- fingerprint, statistics, labels: what later stages add beside the data

    def fingerprint(self, store: bool = False) -> str:
        """A stable hex digest of the committed data; `store=True` also writes it to meta attrs.

        Covers the schema attributes (not provenance), meta/episode_ends, every committed value of the
        low-dim features, and for image features the stored size and zstd content checksum (xxhash64 of
        the pixels, stored with each compressed frame) of every committed frame, which it reads without
        decoding. Frames past the last commit do not count, so a dataset being recorded keeps its
        fingerprint until the next commit. docs/dataset.md says why.
        """
        digest = hashlib.sha256(b"robot_stack.dataset fingerprint 1\n")
        schema = self.schema.to_attrs()
        digest.update(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode())
        digest.update(self.episode_ends.astype("<i8").tobytes())
        n = self.n_frames
        for name in sorted(self.schema.features):
            spec, array = self.schema.features[name], self.array(name)
            digest.update(f"\n{name}\n".encode())
            if not n:
                continue
            if spec.is_image:
                nbytes, checksum = stored_frames(array, self.path / "data" / name, n)
                digest.update(nbytes.astype("<i8").tobytes() + checksum.astype("<u4").tobytes())
            else:
                step = array.chunks[0]
                for start in range(0, n, step):
                    block = np.ascontiguousarray(array[start : min(n, start + step)])
                    digest.update(block.astype(block.dtype.newbyteorder("<")).tobytes())
        value = digest.hexdigest()
        if store:
            # A group of its own: a writer recording at the same time rewrites meta's attributes.
            with _writing(self.path, "the fingerprint"):
                _open_group(self.path, writable=True)["meta"].require_group("fingerprint").update_attributes(
                    {"value": value, "n_episodes": self.n_episodes, "n_frames": self.n_frames, "computed": _now()})
        return value

    def stats(self, recompute: bool = False) -> dict[str, Any]:
        """Normalization statistics per low-dim feature ({name: FeatureStats}), see robot_stack.data.stats."""
        from robot_stack.data.stats import dataset_stats  # stats builds on this module

        return dataset_stats(self, recompute=recompute)

    def _label_groups(self) -> dict[str, zarr.Group]:
        labels = self._store.root.get("labels")
        return dict(labels.groups()) if labels is not None else {}

    def label_runs(self) -> list[str]:
        """Reward label runs (write_labels), interrupted ones included; runs of other arrays: label_arrays()."""
        return sorted(name for name, group in self._label_groups().items() if group.attrs.get("holds") != ARRAY_RUN)

    def label_arrays(self) -> dict[str, list[str]]:
        """{run: [array names]} of the label runs that hold per-frame arrays other than rewards (write_label_array)."""
        return {name: sorted(key for key, _ in group.arrays())
                for name, group in sorted(self._label_groups().items()) if group.attrs.get("holds") == ARRAY_RUN}

    def write_labels(self, run: str, reward: np.ndarray, attrs: Mapping[str, Any], overwrite: bool = False) -> None:
        """Store a reward label run: reward float32 [n_frames] for the committed frames, with provenance.

        attrs must name the `labeler` and should give model, prompts and config; the dataset fingerprint,
        n_frames, n_episodes and the creation time are added. The attributes are written last, so a run
        without them is one whose writing was interrupted.
        """
        _check_name("label run", run)
        reward = np.asarray(reward, dtype=np.float32)
        if reward.shape != (self.n_frames,):
            raise DatasetError(f"labels for {self.path} need one reward per committed frame: shape ({self.n_frames},), got {reward.shape}")
        if not np.isfinite(reward).all():
            raise DatasetError(f"label run {run!r} has non-finite rewards at frames {np.flatnonzero(~np.isfinite(reward))[:5]}")
        if "labeler" not in attrs:
            raise DatasetError(f"label run {run!r}: attrs must name the 'labeler' that produced it")
        provenance = json.loads(json.dumps(dict(attrs), default=str)) | {
            "dataset_fingerprint": self.fingerprint(), "n_frames": self.n_frames,
            "n_episodes": self.n_episodes, "created": _now(),
        }
        root = _open_group(self.path, writable=True)
        with _writing(self.path, f"labels/{run}"):
            labels = root.require_group("labels")
            if run in labels:
                if not overwrite:
                    raise DatasetError(f"{self.path} already has label run {run!r}: choose a new run name or pass overwrite=True")
                del labels[run]
            group = labels.create_group(run)
            spec = FeatureSpec("reward", "float32", (), "reward")
            array = _create_array(group, "reward", spec, shard_frames=1)
            array.resize((self.n_frames,))
            array[:] = reward
            group.update_attributes(provenance)
        self._store.root = _open_group(self.path, writable=False)

    def read_labels(self, run: str) -> Labels:
        """A label run written by write_labels."""
        labels = self._store.root.get("labels")
        if labels is None or run not in labels:
            raise DatasetError(f"{self.path} has no label run {run!r} (runs: {self.label_runs()}): run a labeler first")
        group = labels[run]
        attrs = group.attrs.asdict()
        if attrs.get("holds") == ARRAY_RUN:
            raise DatasetError(f"label run {run!r} in {self.path} holds per-frame arrays {self.label_arrays()[run]}, not "
                               "rewards: read them with read_label_array(run, name), or name a reward label run")
        if "dataset_fingerprint" not in attrs or "reward" not in group:
            raise DatasetError(f"label run {run!r} in {self.path} is incomplete (its writing was interrupted): label again with overwrite")
        return Labels(run, group["reward"][:], attrs)

    def write_label_array(self, run: str, name: str, array: np.ndarray, attrs: Mapping[str, Any], overwrite: bool = False) -> None:
        """Store labels/<run>/<name>: any per-frame array [n_frames, ...] (e.g. image embeddings), with provenance.

        One row per committed frame; dtype bool, integer or float (floats must be finite). attrs (JSON-able:
        what produced it, model, config) get the dataset fingerprint, n_frames, n_episodes and the creation
        time added, and are written to the array last, so an array without them is one whose writing was
        interrupted. A run holds any number of arrays but no rewards (those are write_labels' runs);
        overwrite=True replaces an existing array of the run, leaving its other arrays alone.
        """
        _check_name("label run", run)
        _check_name("label array", name)
        if name == "reward":
            raise DatasetError("label array name 'reward' is reserved for reward runs: store rewards with write_labels")
        array = np.asarray(array)
        if array.dtype.kind not in "biuf":
            raise DatasetError(f"label array {run}/{name}: dtype {array.dtype} is not a bool, integer or float type")
        if array.ndim == 0 or array.shape[0] != self.n_frames:
            raise DatasetError(f"label array {run}/{name} needs one row per committed frame of {self.path}: "
                               f"shape ({self.n_frames}, ...), got {array.shape}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
            raise DatasetError(f"label array {run}/{name} has non-finite values at frames {bad[:5]}")
        provenance = json.loads(json.dumps(dict(attrs), default=str)) | {
            "dataset_fingerprint": self.fingerprint(), "n_frames": self.n_frames,
            "n_episodes": self.n_episodes, "created": _now(),
        }
        root = _open_group(self.path, writable=True)
        with _writing(self.path, f"labels/{run}/{name}"):
            labels = root.require_group("labels")
            if run in labels:
                group = labels[run]
                if group.attrs.get("holds") != ARRAY_RUN:
                    raise DatasetError(f"{self.path} has a reward label run {run!r}: choose another run name for arrays")
                if name in group:
                    if not overwrite:
                        raise DatasetError(f"label run {run!r} in {self.path} already has array {name!r}: choose a "
                                           "new name or pass overwrite=True")
                    del group[name]
            else:
                group = labels.create_group(run, attributes={"holds": ARRAY_RUN})
            spec = FeatureSpec(name, array.dtype.name, array.shape[1:], "state")  # chunked along time like low-dim data
            stored = _create_array(group, name, spec, shard_frames=1)
            stored.resize(array.shape)
            stored[:] = array
            stored.update_attributes(provenance)
        self._store.root = _open_group(self.path, writable=False)

    def label_array_attrs(self, run: str, name: str) -> dict[str, Any]:
        """The provenance attributes of labels/<run>/<name> (see write_label_array), without reading the array."""
        group = self._label_groups().get(run)
        if group is None:
            raise DatasetError(f"{self.path} has no label run {run!r} (array runs: {sorted(self.label_arrays())}): "
                               "compute the array first")
        if group.attrs.get("holds") != ARRAY_RUN:
            raise DatasetError(f"label run {run!r} in {self.path} holds rewards, not arrays: read it with read_labels")
        if name not in group:
            raise DatasetError(f"label run {run!r} in {self.path} has no array {name!r} (it has {self.label_arrays()[run]})")
        attrs = group[name].attrs.asdict()
        if "dataset_fingerprint" not in attrs:
            raise DatasetError(f"label array {run}/{name} in {self.path} is incomplete (its writing was interrupted): "
                               "write it again with overwrite=True")
        return attrs

    def read_label_array(self, run: str, name: str) -> tuple[np.ndarray, dict[str, Any]]:
        """labels/<run>/<name> as written by write_label_array: (array [n_frames when written, ...], attrs)."""
        attrs = self.label_array_attrs(run, name)
        return self._label_groups()[run][name][:], attrs

    def _episode_index(self, index: int) -> int:
        if not -self.n_episodes <= index < self.n_episodes:
            raise DatasetError(f"episode {index} out of range: {self.path} has {self.n_episodes} committed episodes")
        return int(index) % self.n_episodes


def stored_frames(array: zarr.Array, folder: Path, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(compressed bytes int64, content checksum uint32) of frames [0, stop) of an image array; bytes -1 if missing.

    Image frames are one chunk each, compressed by zstd with its frame checksum on: the last 4 bytes of
    every stored frame are the low 32 bits of the xxhash64 of its raw pixels. So this reads 4 bytes a
    frame (and each shard's index: (offset, nbytes) uint64 pairs + a crc32c at the end of the shard
    file), never decoding a pixel.
    """
    if array.chunks[0] != 1:
        raise DatasetError(f"{folder}: image arrays hold one frame per chunk, this one {array.chunks[0]}")
    codecs = array.metadata.codecs[0].codecs if array.shards else array.metadata.codecs
    if not (isinstance(codecs[-1], ZstdCodec) and codecs[-1].checksum):
        raise DatasetError(f"{folder}: image frames must be compressed by zstd with checksums (written by DatasetWriter)")
    nbytes = np.full(stop, -1, np.int64)
    checksum = np.zeros(stop, np.uint32)
    shard = array.shards[0] if array.shards else 1
    for first in range(0, stop, shard):
        file = folder / array.metadata.encode_chunk_key((first // shard,) + (0,) * (array.ndim - 1))
        if not file.is_file():
            continue
        count = min(shard, stop - first)
        with file.open("rb") as handle:
            if array.shards:
                index_bytes = 16 * shard + 4
                handle.seek(-index_bytes, os.SEEK_END)
                table = np.frombuffer(handle.read(index_bytes)[:-4], "<u8").reshape(shard, 2)[:count]
            else:
                table = np.array([[0, os.fstat(handle.fileno()).st_size]], np.uint64)
            for i, (offset, size) in enumerate(table.tolist()):
                if size == 2**64 - 1:  # the index marks an inner chunk never written
                    continue
                handle.seek(offset + size - 4)
                nbytes[first + i] = size
                checksum[first + i] = int.from_bytes(handle.read(4), "little")
    return nbytes, checksum


# --------------------------------------------------------------------------------------------------
# Repair and checking


@dataclass(frozen=True)
class RecoverResult:
    """What recover did: frames kept as a new episode (and its index), or frames dropped."""

    kept_frames: int
    kept_episode: int | None
    dropped_frames: int


def recover(path: str | os.PathLike, keep: bool, task: str | int | None = None) -> RecoverResult:
    """Keep or drop the unfinished episode of a dataset whose recording stopped without commit or discard.

    keep=True commits the flushed frames past the last end as an episode (success unknown, notes
    "recovered", `task` if given) - unless a commit of them was killed just before its last write, which
    this completes with the row it had written. keep=False truncates the data arrays back to the last
    committed end. Both remove episode rows and data past what the index refers to, and the temporary
    files of writes a kill interrupted (Zarr writes `<name>.<random>.partial`, then renames it).
    """
    writer = DatasetWriter._open(Path(path), flush_interval_s=1.0)
    store = writer._store
    frames, index = writer.episode_frames, None
    if keep and frames:
        # A trailing unwritten end means the killed commit had written its whole row before growing the index.
        interrupted = store.episode_ends_array.shape[0] > writer.n_episodes
        if interrupted:
            row = {name: array[writer.n_episodes] for name, array in store.episode_fields.items()}
            success = None if row["success"] == UNKNOWN else bool(row["success"])
            task_arg = None if row["task"] == UNKNOWN else int(row["task"])
            index = writer.commit_episode(task_arg, success, str(row["operator"]), str(row["notes"]))
        else:
            index = writer.commit_episode(task, None, notes="recovered")
    else:
        writer.discard_episode()
    writer._drop_unreferenced()
    writer.close()
    for leftover in Path(path).rglob("*.partial"):
        leftover.unlink()
    kept = index is not None
    return RecoverResult(frames if kept else 0, index, 0 if kept else frames)


def _episode_span(ends: np.ndarray, lo: int, hi: int) -> str:
    """The committed episodes that frames [lo, hi) belong to, in words."""
    first, last = np.searchsorted(ends, [lo, hi - 1], side="right")
    return f"episode {first}" if first == last else f"episodes {first}-{last}"


def validate(path: str | os.PathLike, progress: bool = True) -> list[str]:
    """Read every committed chunk and check the index; returns the problems found (empty: all good).

    A chunk that cannot be read or is missing is reported with the array, the frames and the episodes
    it holds. Also checks schema, lengths, episode_ends, episode rows, timestamps and label runs.
    """
    path = Path(path)
    try:
        ds = Dataset.open(path)
    except DatasetError as error:
        return [str(error)]
    problems: list[str] = []
    n, ends = ds.n_frames, ds.episode_ends
    for field_name, array in ds._store.episode_fields.items():
        try:
            array[:]
        except Exception as error:  # a damaged chunk raises whatever its codec raises
            problems.append(f"meta/episodes/{field_name} cannot be read ({type(error).__name__}: {error})")
    if not problems:
        table = ds.episode_table()
        bad_task = np.flatnonzero((table["task"] < UNKNOWN) | (table["task"] >= len(ds.tasks)))
        if len(bad_task):
            problems.append(f"meta/episodes/task: episodes {bad_task.tolist()} name no task of the {len(ds.tasks)} in the tasks list")
        bad_success = np.flatnonzero(~np.isin(table["success"], [UNKNOWN, 0, 1]))
        if len(bad_success):
            problems.append(f"meta/episodes/success: episodes {bad_success.tolist()} are not 1, 0 or -1")
    what = "drop them by copying the other episodes out (robot_stack.data.select_episodes), or re-record"
    units = [(name, unit) for name in ds.features for unit in _read_units(ds.array(name), n)]
    for name, (lo, hi) in tqdm(units, desc=f"validate {path.name}", unit="chunk", disable=not progress):
        array = ds.array(name)
        try:
            array[lo:hi]
        except Exception as error:  # a damaged chunk raises whatever its codec raises
            bad = [(lo, hi)] if array.chunks[0] != 1 else _unreadable_frames(array, lo, hi)
            for b_lo, b_hi in bad:
                problems.append(f"data/{name}: frames {b_lo}-{b_hi - 1} cannot be read ({type(error).__name__}: {error}); "
                                f"they belong to {_episode_span(ends, b_lo, b_hi)}: {what}")
    for name, spec in ds.features.items():
        missing = _missing_frames(ds.array(name), path / "data" / name, n)
        for lo, hi in _runs(missing):
            problems.append(f"data/{name}: frames {lo}-{hi - 1} are missing on disk (deleted chunk files); "
                            f"they belong to {_episode_span(ends, lo, hi)}: {what}")
    if n:
        try:
            times = ds.frames(TIMESTAMP)
            back = np.flatnonzero(np.diff(times) < 0)
            back = back[~np.isin(back + 1, ends)]  # a new episode may start earlier than the last ended
            if len(back):
                where = _episode_span(ends, back[0], back[0] + 1)
                problems.append(f"data/{TIMESTAMP}: time goes backwards inside {where} (frame {back[0] + 1})")
        except Exception:
            pass  # already reported as an unreadable chunk
    for run in ds.label_runs():
        try:
            labels = ds.read_labels(run)
            if len(labels.reward) > n:
                problems.append(f"labels/{run}: {len(labels.reward)} rewards for {n} committed frames")
        except Exception as error:
            problems.append(f"labels/{run}: {error}")
    for run, names in ds.label_arrays().items():
        for name in names:
            try:
                values, _ = ds.read_label_array(run, name)
                if len(values) > n:
                    problems.append(f"labels/{run}/{name}: {len(values)} rows for {n} committed frames")
            except Exception as error:
                problems.append(f"labels/{run}/{name}: {error}")
    return problems


def _read_units(array: zarr.Array, stop: int) -> list[tuple[int, int]]:
    """Frame ranges [lo, hi) covering [0, stop), one per stored object (shard, or chunk if unsharded)."""
    step = array.shards[0] if array.shards else array.chunks[0]
    return [(lo, min(stop, lo + step)) for lo in range(0, stop, step)]


def _unreadable_frames(array: zarr.Array, lo: int, hi: int) -> list[tuple[int, int]]:
    bad = np.zeros(hi - lo, bool)
    for frame in range(lo, hi):
        try:
            array[frame]
        except Exception:
            bad[frame - lo] = True
    return [(lo + a, lo + b) for a, b in _runs(bad)] or [(lo, hi)]


def _missing_frames(array: zarr.Array, folder: Path, stop: int) -> np.ndarray:
    if array.chunks[0] == 1:
        return stored_frames(array, folder, stop)[0] < 0
    missing = np.zeros(stop, bool)
    for lo, hi in _read_units(array, stop):
        key = array.metadata.encode_chunk_key((lo // array.chunks[0],) + (0,) * (array.ndim - 1))
        missing[lo:hi] = not (folder / key).is_file()
    return missing


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) ranges where a boolean mask is True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
