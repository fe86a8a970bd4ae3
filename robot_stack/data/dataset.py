"""Reading a dataset: Dataset.open checks the store, then gives the committed episodes (frames, episode
rows, success), and adds what later stages put beside the data (labels, label arrays).

Only committed episodes are visible; every read goes through robot_stack.data.damage, so a damaged or
missing chunk is a DatasetError line, never silent zeros.
"""

from __future__ import annotations

import json
from collections import Counter
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from robot_stack.data.damage import read_frames
from robot_stack.data.fingerprint import fingerprint
from robot_stack.data.marks import apply_marks, read_marks
from robot_stack.data.schema import ADDED_EPISODE_FIELDS, ARRAY_RUN, UNKNOWN, FeatureSpec, check_name
from robot_stack.data.store import RESTORE, Store, create_array, now, open_group, writing
from robot_stack.errors import DatasetError


class FrameView:
    """Frames [start, stop) of one feature, read from disk only when indexed: shape [n, *feature shape]."""

    def __init__(self, ds: Dataset, name: str, start: int, stop: int) -> None:
        self._ds, self._name, self.start, self.stop = ds, name, start, stop
        array = ds.array(name)
        self.shape = (stop - start, *array.shape[1:])
        self.dtype = array.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice) -> np.ndarray:
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            frames = self._ds.frames(self._name, self.start + lo, self.start + max(lo, hi))
            return frames if step == 1 else frames[::step]
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        frame = self.start + index % len(self)
        return self._ds.frames(self._name, frame, frame + 1)[0]

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
    source: str = ""  # teleop | scripted | policy | online | import; "" unknown (and every episode of older datasets)
    marked: bool = False  # success comes from an operator's mark (robot-stack data mark), not the recording

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Labels:
    """A label run: reward float32 [n_frames of the dataset when labeled], its provenance attributes, and the
    labeler's raw scores float32 [n_frames] before calibration when the run kept them (else None)."""

    run: str
    reward: np.ndarray
    attrs: dict[str, Any]
    raw: np.ndarray | None = None


class Dataset:
    """A recorded dataset, read-only except for what later stages add beside the data (labels, stats).

    Only committed episodes are visible: frames past the last episode end belong to an unfinished episode
    (`unfinished_frames`) and are ignored. Open with `Dataset.open(path)`.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self.path = store.path
        self.schema = store.schema
        self.episode_ends = store.episode_ends.copy()
        self.episode_starts = np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)
        self._table: dict[str, np.ndarray] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> Dataset:
        """Open and check a dataset; raises DatasetError saying what is wrong and what to do."""
        return cls(Store.open(Path(path), writable=False))

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
    def provenance(self) -> dict[str, Any]:
        """Where the data came from (the root attribute `provenance`: sim_collect's task and dynamics, a bag import,
        a merge, ...); {} when the writer recorded none."""
        from robot_stack.data.store import read_root_attrs

        return dict(read_root_attrs(self.path).get("provenance") or {})

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
        """Committed frames [start, stop) of a feature: [stop - start, *shape]. Missing, broken or corrupted
        chunk files and NaN/Inf are a DatasetError naming the array, frames and episodes (robot_stack.data.damage)."""
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        return read_frames(self.path, name, self.array(name), start, stop, self.episode_ends)

    def episode(self, index: int) -> dict[str, np.ndarray | FrameView]:
        """{feature: frames of episode `index`}: numpy arrays for low-dim features, FrameView for images."""
        span = self.episode_slice(index)
        return {
            name: FrameView(self, name, span.start, span.stop) if spec.is_image else self.frames(name, span.start, span.stop)
            for name, spec in self.schema.features.items()
        }

    # ---- per-episode metadata

    def episode_table(self) -> dict[str, np.ndarray]:
        """Per-episode columns, one row per committed episode: index, start, stop, length, the meta/episodes
        fields (task, success, start_time [s], duration [s], operator, notes, source: "" in every row of a
        dataset written before the field existed), and marked (bool: success comes from an operator's mark,
        which overrides the recorded outcome; see robot_stack.data.marks)."""
        if self._table is None:
            n = self.n_episodes
            table = {"index": np.arange(n), "start": self.episode_starts, "stop": self.episode_ends,
                     "length": self.episode_ends - self.episode_starts}
            for name, array in self._store.episode_fields.items():
                try:
                    table[name] = array[:n]
                except Exception as error:  # a damaged chunk raises whatever its codec raises
                    raise DatasetError(f"{self.path}: meta/episodes/{name} cannot be read ({type(error).__name__}): "
                                       f"the episode rows are damaged; {RESTORE}") from None
            for name, value in ADDED_EPISODE_FIELDS.items():
                if name not in table:
                    table[name] = np.full(n, value, dtype=np.dtypes.StringDType())  # as the stored text fields read
            marks = read_marks(self._store.meta)
            table["marked"] = np.isin(table["index"], [int(mark["episode"]) for mark in marks])
            table["success"] = apply_marks(table["success"], marks)
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
            operator=str(row["operator"]), notes=str(row["notes"]), source=str(row["source"]), marked=bool(row["marked"]),
        )

    @property
    def success(self) -> np.ndarray:
        """int8 [n_episodes]: 1 succeeded, 0 failed, -1 unknown (an operator's mark overrides the recording)."""
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
        sources = Counter(source or "unknown" for source in self.episode_table()["source"].tolist())
        lines.append(f"  sources: {dict(sorted(sources.items()))}")
        lines.append(f"  label runs: {self.label_runs()}")
        if self.label_arrays():
            lines.append(f"  label arrays: {self.label_arrays()}")
        return "\n".join(lines)

    # ---- fingerprint, statistics, labels: what later stages add beside the data

    def fingerprint(self, store: bool = False) -> str:
        """A stable hex digest of the committed data (robot_stack.data.fingerprint says what it covers);
        `store=True` also writes it to meta/fingerprint."""
        return fingerprint(self._store, store)

    def _label_groups(self) -> dict[str, zarr.Group]:
        labels = self._store.root.get("labels")
        return dict(labels.groups()) if labels is not None else {}

    def label_runs(self) -> list[str]:
        """Reward label runs (write_labels), interrupted ones included; runs of other arrays: label_arrays().
        Groups named '_...' (labels/_cache: judge answers, partial work) are no label runs."""
        return sorted(name for name, group in self._label_groups().items()
                      if group.attrs.get("holds") != ARRAY_RUN and not name.startswith("_"))

    def label_arrays(self) -> dict[str, list[str]]:
        """{run: [array names]} of the label runs that hold per-frame arrays other than rewards (write_label_array)."""
        return {name: sorted(key for key, _ in group.arrays()) for name, group in sorted(self._label_groups().items())
                if group.attrs.get("holds") == ARRAY_RUN and not name.startswith("_")}

    def write_labels(self, run: str, reward: np.ndarray, attrs: Mapping[str, Any], overwrite: bool = False,
                     raw: np.ndarray | None = None) -> None:
        """Store a reward label run: reward float32 [n_frames] for the committed frames, with provenance, and
        optionally the labeler's raw scores before calibration (labels/<run>/raw, float32 [n_frames]).

        attrs must name the `labeler` and should give model, prompts and config; the dataset fingerprint,
        n_frames, n_episodes and the creation time are added. The attributes are written last, so a run
        without them is one whose writing was interrupted.
        """
        check_name("label run", run)
        arrays = {"reward": reward} if raw is None else {"reward": reward, "raw": raw}
        for name, values in arrays.items():
            values = arrays[name] = np.asarray(values, dtype=np.float32)
            if values.shape != (self.n_frames,):
                raise DatasetError(f"labels for {self.path} need one {name} per committed frame: shape "
                                   f"({self.n_frames},), got {values.shape}")
            if not np.isfinite(values).all():
                raise DatasetError(f"label run {run!r} has non-finite {name}s at frames "
                                   f"{np.flatnonzero(~np.isfinite(values))[:5]}")
        if "labeler" not in attrs:
            raise DatasetError(f"label run {run!r}: attrs must name the 'labeler' that produced it")
        provenance = json.loads(json.dumps(dict(attrs), default=str)) | {
            "dataset_fingerprint": self.fingerprint(), "n_frames": self.n_frames,
            "n_episodes": self.n_episodes, "created": now(),
        }
        root = open_group(self.path, writable=True)
        with writing(self.path, f"labels/{run}"):
            labels = root.require_group("labels")
            if run in labels:
                if not overwrite:
                    raise DatasetError(f"{self.path} already has label run {run!r}: choose a new run name or pass overwrite=True")
                del labels[run]
            group = labels.create_group(run)
            for name, values in arrays.items():
                array = create_array(group, name, FeatureSpec(name, "float32", (), "reward"), shard_frames=1)
                array.resize((self.n_frames,))
                array[:] = values
            group.update_attributes(provenance)
        self._store.root = open_group(self.path, writable=False)

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
        return Labels(run, group["reward"][:], attrs, group["raw"][:] if "raw" in group else None)

    def write_label_array(self, run: str, name: str, array: np.ndarray, attrs: Mapping[str, Any], overwrite: bool = False) -> None:
        """Store labels/<run>/<name>: any per-frame array [n_frames, ...] (e.g. image embeddings), with provenance.

        One row per committed frame; dtype bool, integer or float (floats must be finite). attrs (JSON-able:
        what produced it, model, config) get the dataset fingerprint, n_frames, n_episodes and the creation
        time added, and are written to the array last, so an array without them is one whose writing was
        interrupted. A run holds any number of arrays but no rewards (those are write_labels' runs);
        overwrite=True replaces an existing array of the run, leaving its other arrays alone.
        """
        check_name("label run", run)
        check_name("label array", name)
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
            "n_episodes": self.n_episodes, "created": now(),
        }
        root = open_group(self.path, writable=True)
        with writing(self.path, f"labels/{run}/{name}"):
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
            stored = create_array(group, name, spec, shard_frames=1)
            stored.resize(array.shape)
            stored[:] = array
            stored.update_attributes(provenance)
        self._store.root = open_group(self.path, writable=False)

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


CAMERA_PREFIX = "image."
"""A recorder's camera `<name>` (cameras:=<name>:HxW) is the feature image.<name>."""


def camera_feature(ds: Dataset, camera: str | None) -> str:
    """The image feature to use: `camera`, or the only one; DatasetError listing the cameras otherwise.

    `camera` is the feature name (`image.agentview`) or the camera's name as the launch and the sim take it
    (`cameras:=agentview:84x84` records the feature `image.agentview`).
    """
    cameras = [name for name, spec in ds.features.items() if spec.is_image]
    if not cameras:
        raise DatasetError(f"{ds.path} has no image features: it was recorded without cameras")
    if camera is None:
        if len(cameras) > 1:
            raise DatasetError(f"{ds.path} has {len(cameras)} cameras: choose one with --camera ({camera_names(cameras)})")
        return cameras[0]
    for name in (camera, f"{CAMERA_PREFIX}{camera}"):
        if name in cameras:
            return name
    raise DatasetError(f"{ds.path} has no camera {camera!r}: its cameras are {camera_names(cameras)}")


def camera_names(features: list[str]) -> str:
    """'agentview (image.agentview), wrist_rgb': each camera by the name a launch takes, and its feature."""
    return ", ".join(f"{name.removeprefix(CAMERA_PREFIX)} ({name})" if name.startswith(CAMERA_PREFIX) else name
                     for name in features)
