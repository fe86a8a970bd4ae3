"""Writing a dataset while it is recorded: DatasetWriter appends frames, then commits or discards the episode.

Frames are buffered in memory and written by a background thread; the writes are ordered so that a kill
between any two of them leaves a dataset whose committed episodes are intact (docs/dataset.md, "Crash
safety": each write below says why it comes where it does).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from robot_stack import __version__
from robot_stack.data.schema import (
    ADDED_EPISODE_FIELDS,
    EPISODE_FIELDS,
    EPISODE_ROWS_PER_CHUNK,
    EPISODE_SOURCES,
    IMAGE_SHARD_BYTES,
    TIMESTAMP,
    UNKNOWN,
    UNWRITTEN_END,
    DatasetSchema,
    FeatureSpec,
    compressor,
)
from robot_stack.data.damage import read_frames
from robot_stack.data.store import WRITE_CONFIG, Store, create_array, now, writing
from robot_stack.errors import DatasetError


def _as_task_index(task: str | int | None, tasks: list[str]) -> int:
    if task is None:
        return UNKNOWN
    if isinstance(task, (int, np.integer)):
        if not 0 <= task < len(tasks):
            raise DatasetError(f"task index {task} is out of range: the dataset has {len(tasks)} tasks")
        return int(task)
    return tasks.index(task) if task in tasks else len(tasks)


def _add_episode_fields(store: Store) -> None:
    """Give a dataset written before an episode field existed that field's array, one row per existing row
    holding the value such episodes read as (ADDED_EPISODE_FIELDS), so that commits can write their rows."""
    rows = max(array.shape[0] for array in store.episode_fields.values())
    for name, value in ADDED_EPISODE_FIELDS.items():
        if name in store.episode_fields:
            continue
        with writing(store.path, f"meta/episodes/{name}"):
            array = store.meta["episodes"].create_array(
                name, shape=(rows,), dtype=EPISODE_FIELDS[name], chunks=(EPISODE_ROWS_PER_CHUNK,), fill_value=value,
                compressors=compressor(), config=WRITE_CONFIG)
            array[:] = value  # chunks stored, as every other array's are (a missing chunk file is damage)
        store.episode_fields[name] = array


class DatasetWriter:
    """Records episodes into a dataset: append frames while recording, then commit or discard the episode.

    Frames are buffered in memory; every `flush_interval_s` seconds of appends (or `flush_frames` frames,
    one image shard by default) the buffer goes to a background thread that writes it to Zarr while the
    next one fills, so an append costs a copy, not a write. A crash loses at most the frames not yet on
    disk (under two flush intervals) of the episode being recorded, never a committed episode. A failed
    background write (disk full) is raised as DatasetError by the next call. Use `create` for a new
    dataset and `open` to append to an existing one; one writer per dataset at a time.
    """

    def __init__(self, store: Store, flush_interval_s: float, flush_frames: int) -> None:
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
        with writing(path, "the new dataset"):
            root = zarr.open_group(zarr.storage.LocalStore(path), mode="w-", zarr_format=3)
            data_group = root.create_group("data")
            for name, spec in specs.items():
                shard = image_shard_frames or min(flush_frames, max(1, IMAGE_SHARD_BYTES // spec.frame_bytes))
                create_array(data_group, name, spec, shard)
            meta = root.create_group("meta", attributes={"written_frames": 0})
            episodes = meta.create_group("episodes")
            for name, dtype in EPISODE_FIELDS.items():
                episodes.create_array(name, shape=(0,), dtype=dtype, chunks=(EPISODE_ROWS_PER_CHUNK,),
                                      compressors=compressor(), config=WRITE_CONFIG)
            meta.create_array("episode_ends", shape=(0,), dtype="int64", chunks=(EPISODE_ROWS_PER_CHUNK,),
                              fill_value=UNWRITTEN_END, compressors=compressor(), config=WRITE_CONFIG)
            # Last: the format marker. A kill before this leaves "a Zarr store, not a robot_stack dataset".
            attrs = schema.to_attrs() | {"created": now(), "created_by": f"robot_stack {__version__}"}
            root.update_attributes(attrs | ({"provenance": dict(provenance)} if provenance else {}))
        return cls(Store.open(path, writable=True), flush_interval_s, flush_frames)

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
                    f"{writer.path} --keep` or `--drop` before recording into it"
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
        store = Store.open(path, writable=True)
        _add_episode_fields(store)
        flush_frames = max(1, round(store.schema.record_hz * flush_interval_s))
        writer = cls(store, flush_interval_s, flush_frames)
        committed = store.committed_frames
        lengths = [array.shape[0] for array in store.data.values()]
        writer._written = writer._submitted = max(committed, min([store.written_frames, *lengths]))
        if writer._written > committed:
            times = read_frames(path, TIMESTAMP, store.data[TIMESTAMP], committed, writer._written, store.episode_ends)
            writer._first_time, writer._last_time = float(times[0]), float(times[-1])
        return writer

    def _drop_unreferenced(self) -> None:
        """Remove what a killed writer left past the index: data past written frames, extra episode rows."""
        with writing(self.path, "the cleanup of an interrupted write"):
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
            raise DatasetError(f"the episode being recorded is lost: {self._failed}") from self._failed.__cause__

    def _write_frames(self, buffers: dict[str, np.ndarray], start: int, n: int) -> int:
        """Write frames [start, start + n) of every feature (on the background thread); returns start + n."""
        stop = start + n
        with writing(self.path, f"frames {start}-{stop - 1}"):
            for name, array in self._store.data.items():
                # Grow, then write: Zarr writes only inside the shape. Frames past written_frames are
                # ignored by everyone, so a kill between the two is harmless. Each chunk file is replaced
                # atomically (temp file + rename), so committed frames sharing a chunk survive a kill.
                array.resize((stop, *array.shape[1:]))
                array[start:stop] = buffers[name][:n]
            # Last: every data array now holds these frames in full.
            self._store.meta.update_attributes({"written_frames": stop})
        return stop

    def commit_episode(self, task: str | int | None, success: bool | None, operator: str = "", notes: str = "",
                       source: str = "") -> int:
        """Make the current episode part of the dataset and return its index.

        task: the task text (added to the dataset's tasks if new), its index, or None if unknown;
        success: whether the task was achieved (None: unknown); source: what produced the episode, one of
        schema.EPISODE_SOURCES or "" (unknown). Writes the episode's row first and extends meta/episode_ends
        last: that write is the commit.
        """
        if source and source not in EPISODE_SOURCES:
            raise DatasetError(f"episode source {source!r} is not one of {', '.join(EPISODE_SOURCES)} (or empty: unknown)")
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
            "source": source,
        }
        with writing(self.path, f"episode {index}"):
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
            with writing(self.path, "the discard of the current episode"):
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
