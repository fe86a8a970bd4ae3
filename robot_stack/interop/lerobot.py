"""LeRobot dataset v3 <-> robot_stack (docs/interop.md, "LeRobot v3": the mapping of features both ways).

A LeRobot v3 dataset is a folder: meta/info.json (codebase_version "v3.0", fps, features), meta/tasks.parquet,
meta/episodes/chunk-*/file-*.parquet (one row per episode: its frame range in the data files, its time range in
each camera's video file), data/chunk-*/file-*.parquet (one row per frame, all episodes concatenated) and
videos/<camera key>/chunk-*/file-*.mp4 (one stream per camera holding many episodes back to back).

Export packs every state feature into `observation.state` (what LeRobot's policies read), writes each camera as
`observation.images.<camera>` (H.264, lossless in YUV 4:4:4 by default) and keeps what a round trip needs in
info.json's "robot_stack" section (the robot, each column's robot_stack features in order, their specs) and in
`robot_stack/...` episode columns (success, notes, operator, source). Import reads that section back when it is
there, and otherwise maps LeRobot's conventional keys (observation.state, observation.images.*, action,
next.reward, next.success, next.done) onto robot_stack features, decoding each episode's frame range with PyAV.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robot_stack.data import TIMESTAMP, Dataset, FeatureSpec
from robot_stack.errors import DatasetError
from robot_stack.interop import require
from robot_stack.interop.common import Source, SourceEpisode, fresh_output, write_import

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
CHUNKS_SIZE = 1000  # files per chunk folder, LeRobot's default
DATA_FILE_MB = 100  # a data parquet file is closed past this size (LeRobot's default)
VIDEO_FILE_MB = 200  # a video file is closed past this size (LeRobot's default)

STATE_KEY = "observation.state"
IMAGE_PREFIX = "observation.images."
ACTION_KEY = "action"
REWARD_KEY = "next.reward"
SUCCESS_KEY = "next.success"
DONE_KEY = "next.done"
STALE_KEY = "stale"
"""Every stale.<feature> flag of an export, packed (bool [n]; names say which feature each is)."""
TIME_KEY = "robot_stack.timestamp"
"""The robot_stack timestamps (float64 s) of an export: LeRobot's own `timestamp` must be frame_index / fps."""
INDEX_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
SECTION = "robot_stack"
"""info.json's key for what a round trip back into robot_stack needs."""

VIDEO_CODEC = "libx264"
VIDEO_PIX_FMT = "yuv444p"  # no chroma subsampling: crf 0 is then lossless up to the RGB <-> YUV rounding
VIDEO_GOP = 2  # a key frame every 2 frames, as LeRobot encodes, for fast random access while training
IMAGE_TOLERANCE = 2
"""Largest difference (of 255) between an exported frame and the frame decoded back at crf 0 (measured)."""


@dataclass(frozen=True)
class Column:
    """One LeRobot feature and the robot_stack features it holds, flattened and packed in order along its one
    axis (a scalar feature takes one slot). A camera column holds one image feature."""

    key: str
    features: tuple[FeatureSpec, ...]

    @property
    def is_video(self) -> bool:
        return self.features[0].is_image

    @property
    def width(self) -> int:
        return sum(_size(spec) for spec in self.features)

    @property
    def dtype(self) -> str:
        dtypes = {spec.dtype for spec in self.features}
        return dtypes.pop() if len(dtypes) == 1 else "float64"  # float64 holds float32, ints and bools exactly

    def pack(self, frames: dict[str, np.ndarray]) -> np.ndarray:
        """[T, width] (or the [T, H, W, 3] images of a camera) from robot_stack frames."""
        if self.is_video:
            return np.asarray(frames[self.features[0].name])
        parts = [np.asarray(frames[spec.name]).reshape(len(frames[spec.name]), -1) for spec in self.features]
        return np.concatenate(parts, axis=1).astype(self.dtype, copy=False)

    def unpack(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """robot_stack frames {feature: [T, *shape]} from [T, width] (or [T, H, W, 3]) values."""
        if self.is_video:
            return {self.features[0].name: values}
        values = values.reshape(len(values), -1)
        if values.shape[1] != self.width:
            raise DatasetError(f"LeRobot feature {self.key!r} has {values.shape[1]} values a frame, its robot_stack "
                               f"features {[spec.name for spec in self.features]} take {self.width}")
        out, start = {}, 0
        for spec in self.features:
            stop = start + _size(spec)
            out[spec.name] = values[:, start:stop].astype(spec.dtype).reshape(len(values), *spec.shape)
            start = stop
        return out


def _size(spec: FeatureSpec) -> int:
    return int(np.prod(spec.shape, dtype=np.int64))


# ---------------------------------------------------------------------------------------------------------- export


def export_dataset(dataset: Dataset, out: str | os.PathLike, *, progress: bool = True, crf: int = 0) -> Path:
    """Write `dataset`'s committed episodes as a LeRobot v3 dataset folder `out` (must not exist).

    crf: the H.264 quality of the camera videos (0: lossless in YUV 4:4:4, images back within IMAGE_TOLERANCE;
    LeRobot's own recorder uses 30, much smaller files). Returns `out`.
    """
    pa = require("pyarrow", "the LeRobot export")
    pq = require("pyarrow.parquet", "the LeRobot export")
    if dataset.n_episodes < 1:
        raise DatasetError(f"{dataset.path} has no committed episodes: nothing to export")
    columns = export_columns(dataset)
    fps = _fps_value(dataset.record_hz)
    tasks = list(dataset.tasks)
    table = dataset.episode_table()
    if np.any(table["task"] < 0) and "" not in tasks:
        tasks.append("")  # LeRobot needs a task per frame: an unknown task is the empty text
    with fresh_output(out) as root:
        root.mkdir(parents=True)
        data = _ParquetFiles(root, DATA_PATH, DATA_FILE_MB, pq)
        videos = {column.key: _VideoFiles(root, column.key, fps, crf) for column in columns if column.is_video}
        stats = _Stats()  # over the whole dataset: meta/stats.json
        episodes: list[dict[str, Any]] = []
        try:
            for index in tqdm(range(dataset.n_episodes), desc=f"export lerobot -> {root.name}", unit="episode",
                              disable=not progress):
                span = dataset.episode_slice(index)
                frames = {name: dataset.frames(name, span.start, span.stop) for name in dataset.features}
                info = dataset.episode_info(index)
                task = tasks.index(info.task_text if info.task >= 0 else "")
                count = span.stop - span.start
                rows = {
                    "timestamp": (np.arange(count) / fps).astype(np.float32),
                    "frame_index": np.arange(count, dtype=np.int64),
                    "episode_index": np.full(count, index, dtype=np.int64),
                    "index": np.arange(span.start, span.stop, dtype=np.int64),
                    "task_index": np.full(count, task, dtype=np.int64),
                    TIME_KEY: np.asarray(frames[TIMESTAMP], dtype=np.float64),
                }
                episode: dict[str, Any] = {"episode_index": index, "tasks": [tasks[task]], "length": count}
                episode_stats = _Stats()  # the episode's own: LeRobot's editing tools re-aggregate them
                for column in columns:
                    values = column.pack(frames)
                    if column.is_video:
                        episode.update(videos[column.key].add(values))
                        for accumulator in (stats, episode_stats):
                            accumulator.add_images(column.key, values)
                    else:
                        rows[column.key] = values
                for key, values in rows.items():
                    for accumulator in (stats, episode_stats):
                        accumulator.add(key, values)
                chunk, file = data.add(_frame_table(pa, rows))
                episode.update({"data/chunk_index": chunk, "data/file_index": file,
                                "dataset_from_index": span.start, "dataset_to_index": span.stop,
                                "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
                kept = {"success": int(dataset.success[index]), "notes": info.notes, "operator": info.operator,
                        "source": info.source}
                episode.update({f"{SECTION}/{name}": value for name, value in kept.items()})
                episode.update({f"stats/{key}/{name}": value for key, entry in episode_stats.result().items()
                                for name, value in entry.items()})
                episodes.append(episode)
        finally:
            data.close()
            for files in videos.values():
                files.close()
        _write_table(pq, root / EPISODES_PATH.format(chunk_index=0, file_index=0), pa.Table.from_pylist(episodes))
        _write_table(pq, root / TASKS_PATH, _tasks_table(pa, tasks))
        (root / STATS_PATH).write_text(json.dumps(stats.result(), indent=2))
        info_json = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": str(dataset.robot.get("name", "")),
            "total_episodes": dataset.n_episodes,
            "total_frames": dataset.n_frames,
            "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILE_MB,
            "video_files_size_in_mb": VIDEO_FILE_MB,
            "fps": fps,
            "splits": {"train": f"0:{dataset.n_episodes}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if videos else None,
            "features": _info_features(columns, dataset.robot, fps, crf),
            SECTION: {
                "robot": dataset.robot,
                "record_hz": dataset.record_hz,
                "columns": {column.key: [spec.name for spec in column.features] for column in columns},
                "features": {name: spec.to_json() for name, spec in dataset.features.items()},
                "tasks": list(dataset.tasks),
                "provenance": dataset.provenance,
            },
        }
        (root / INFO_PATH).write_text(json.dumps(info_json, indent=4))
    return Path(out)


def export_columns(dataset: Dataset) -> list[Column]:
    """The LeRobot features an export writes, in order: observation.state (every state feature), the cameras,
    action, next.reward (the one reward feature), next.success (the one success flag), stale (every stale flag)
    and the rest under their own names ("image" in a name written "camera")."""
    specs = [spec for name, spec in dataset.features.items() if name != TIMESTAMP]
    by_kind = {kind: [spec for spec in specs if spec.kind == kind] for kind in ("state", "action", "reward", "flag")}
    columns: list[Column] = []
    if by_kind["state"]:
        columns.append(Column(STATE_KEY, tuple(by_kind["state"])))
    for spec in specs:
        if spec.is_image:
            if spec.shape[2] != 3:
                raise DatasetError(f"camera {spec.name!r} has {spec.shape[2]} channels: the LeRobot export writes RGB "
                                   "videos only (3 channels)")
            camera = spec.name.removeprefix("image.")
            columns.append(Column(IMAGE_PREFIX + camera, (spec,)))
    if by_kind["action"]:
        columns.append(Column(ACTION_KEY, tuple(by_kind["action"])))
    if len(by_kind["reward"]) == 1:
        columns.append(Column(REWARD_KEY, tuple(by_kind["reward"])))
    successes = [spec for spec in by_kind["flag"] if spec.name.endswith("success") and not spec.name.startswith("stale.")]
    if len(successes) == 1:
        columns.append(Column(SUCCESS_KEY, tuple(successes)))
    stale = [spec for spec in by_kind["flag"] if spec.name.startswith("stale.") and spec.dtype == "bool"]
    if stale:
        columns.append(Column(STALE_KEY, tuple(stale)))
    taken = {spec.name for column in columns for spec in column.features}
    keys = {column.key for column in columns} | set(INDEX_KEYS) | {TIME_KEY}
    for spec in specs:
        if spec.name not in taken:
            # LeRobot's statistics tools take any key that contains "image" for a camera's
            key = spec.name.replace("image", "camera")
            key = key if key not in keys else f"{SECTION}.{key}"
            columns.append(Column(key, (spec,)))
            keys.add(key)
    return columns


def _fps_value(record_hz: float) -> float:
    return int(record_hz) if float(record_hz).is_integer() else float(record_hz)


def _info_features(columns: list[Column], robot: dict[str, Any], fps: float, crf: int) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for column in columns:
        if column.is_video:
            height, width, channels = column.features[0].shape
            features[column.key] = {
                "dtype": "video", "shape": [height, width, channels], "names": ["height", "width", "channels"],
                "info": {"video.height": height, "video.width": width, "video.codec": "h264",
                         "video.pix_fmt": VIDEO_PIX_FMT, "video.is_depth_map": False, "video.fps": fps,
                         "video.channels": channels, "video.crf": crf, "has_audio": False}}
        else:
            features[column.key] = {"dtype": column.dtype, "shape": [column.width], "names": _names(column, robot)}
    for key, dtype in zip(INDEX_KEYS, ("float32", "int64", "int64", "int64", "int64"), strict=True):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    features[TIME_KEY] = {"dtype": "float64", "shape": [1], "names": None}
    return features


def _names(column: Column, robot: dict[str, Any]) -> list[str]:
    """One name per value: the feature's name, or <feature>.<i> for a vector (the robot's command names for a
    single action feature that has them)."""
    command = list((robot.get("command_spec") or {}).get("names") or [])
    if column.key == ACTION_KEY and len(column.features) == 1 and len(command) == column.width:
        return [str(name) for name in command]
    names: list[str] = []
    for spec in column.features:
        size = _size(spec)
        names.extend([spec.name] if size == 1 and not spec.shape else [f"{spec.name}.{i}" for i in range(size)])
    return names


def _frame_table(pa: Any, rows: dict[str, np.ndarray]) -> Any:
    """A pyarrow table of one episode's frames: scalars as plain columns, vectors as fixed-size lists (what
    LeRobot's `datasets` features read: Value for shape (1,), Sequence(length=n) otherwise)."""
    arrays = {}
    for key, values in rows.items():
        values = np.ascontiguousarray(values)
        if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1):
            arrays[key] = pa.array(values.reshape(-1))
        else:
            arrays[key] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    return pa.table(arrays)


def _tasks_table(pa: Any, tasks: list[str]) -> Any:
    """meta/tasks.parquet: task_index with the task text as the pandas index (what LeRobot's load_tasks reads)."""
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "pandas_version": "2.0.0", "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}]}
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _write_table(pq: Any, path: Path, table: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


class _ParquetFiles:
    """data/chunk-*/file-*.parquet, one row group per episode, a new file past `limit_mb`."""

    def __init__(self, root: Path, template: str, limit_mb: int, pq: Any) -> None:
        self.root, self.template, self.limit, self.pq = root, template, limit_mb << 20, pq
        self.chunk, self.file, self.bytes, self.writer = 0, 0, 0, None

    def add(self, table: Any) -> tuple[int, int]:
        """Append one episode's frames; returns the (chunk, file) they went to."""
        if self.writer is not None and self.bytes >= self.limit:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file)
            self.bytes = 0
        if self.writer is None:
            path = self.root / self.template.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = self.pq.ParquetWriter(path, table.schema, compression="snappy")
        self.writer.write_table(table)
        self.bytes += table.nbytes
        return self.chunk, self.file

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _VideoFiles:
    """videos/<key>/chunk-*/file-*.mp4 of one camera: episodes back to back (frame k of a file at k / fps s), a new
    file past VIDEO_FILE_MB."""

    def __init__(self, root: Path, key: str, fps: float, crf: int) -> None:
        self.root, self.key, self.rate, self.crf = root, key, Fraction(fps).limit_denominator(1_000_000), crf
        self.chunk, self.file, self.frames, self.bytes = 0, 0, 0, 0
        self.container: Any = None
        self.stream: Any = None

    def add(self, images: np.ndarray) -> dict[str, Any]:
        """Encode one episode's [T, H, W, 3] uint8 frames; returns its episodes-parquet video fields."""
        av = require("av", "the LeRobot export")
        if self.container is not None and self.bytes >= VIDEO_FILE_MB << 20:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file)
        if self.container is None:
            self._open(av, images.shape[1:])
        start = self.frames
        for image in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames
            self._mux(self.stream.encode(frame))
            self.frames += 1
        prefix = f"videos/{self.key}/"
        return {prefix + "chunk_index": self.chunk, prefix + "file_index": self.file,
                prefix + "from_timestamp": float(start / self.rate), prefix + "to_timestamp": float(self.frames / self.rate)}

    def _open(self, av: Any, shape: tuple[int, ...]) -> None:
        path = self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk, file_index=self.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.container = av.open(str(path), "w")
            # no B-frames: each frame's presentation time is its index / fps, with no decoder delay shift
            self.stream = self.container.add_stream(VIDEO_CODEC, rate=self.rate, options={
                "crf": str(self.crf), "g": str(VIDEO_GOP), "bf": "0"})
        except (av.error.FFmpegError, ValueError) as error:
            raise DatasetError(f"cannot encode {path} with {VIDEO_CODEC} ({error}): this FFmpeg (PyAV's) lacks the "
                               "H.264 encoder; install PyAV's wheels from PyPI") from None
        self.stream.pix_fmt = VIDEO_PIX_FMT
        self.stream.height, self.stream.width = int(shape[0]), int(shape[1])
        self.stream.time_base = 1 / self.rate
        self.frames, self.bytes = 0, 0

    def _mux(self, packets: Iterable[Any]) -> None:
        for packet in packets:
            self.bytes += packet.size
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            self._mux(self.stream.encode())
            self.container.close()
            self.container = None


class _Stats:
    """meta/stats.json: per feature min, max, mean, std, count and the 1/10/50/90/99 % quantiles over all frames
    (images: per channel, in [0, 1], shape [3, 1, 1], quantiles from a subsample), as LeRobot's normalizers read."""

    QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
    IMAGE_SAMPLES = 16  # frames per episode that image quantiles are taken from
    IMAGE_SIDE = 64  # pixels along each side of a sampled frame, at most
    FRAMES_AT_ONCE = 8

    def __init__(self) -> None:
        self.values: dict[str, list[np.ndarray]] = {}
        self.images: dict[str, list[np.ndarray]] = {}
        self.image_moments: dict[str, list[np.ndarray]] = {}

    def add(self, key: str, values: np.ndarray) -> None:
        self.values.setdefault(key, []).append(np.asarray(values, dtype=np.float64).reshape(len(values), -1))

    def add_images(self, key: str, images: np.ndarray) -> None:
        """One episode's [T, H, W, C] uint8 frames: per-channel moments, a few frames at a time (bounded memory)."""
        for start in range(0, len(images), self.FRAMES_AT_ONCE):
            pixels = images[start:start + self.FRAMES_AT_ONCE].reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
            self.image_moments.setdefault(key, []).append(np.stack([
                pixels.min(0), pixels.max(0), pixels.sum(0), (pixels ** 2).sum(0), np.full(pixels.shape[1], len(pixels))]))
        step = max(1, max(images.shape[1:3]) // self.IMAGE_SIDE)
        picks = np.linspace(0, len(images) - 1, min(len(images), self.IMAGE_SAMPLES)).astype(int)
        self.images.setdefault(key, []).append(images[picks, ::step, ::step].reshape(-1, images.shape[-1]) / 255.0)

    def result(self) -> dict[str, dict[str, list]]:
        out: dict[str, dict[str, list]] = {}
        for key, parts in self.values.items():
            values = np.concatenate(parts)
            stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0),
                     "count": np.array([len(values)])}
            stats.update({f"q{round(q * 100):02d}": np.quantile(values, q, axis=0) for q in self.QUANTILES})
            out[key] = {name: value.tolist() for name, value in stats.items()}
        for key, parts in self.image_moments.items():
            moments = np.stack(parts)
            count = moments[:, 4].sum(0)
            mean = moments[:, 2].sum(0) / count
            std = np.sqrt(np.maximum(moments[:, 3].sum(0) / count - mean ** 2, 0.0))
            sample = np.concatenate(self.images[key])
            stats = {"min": moments[:, 0].min(0), "max": moments[:, 1].max(0), "mean": mean, "std": std}
            stats.update({f"q{round(q * 100):02d}": np.quantile(sample, q, axis=0) for q in self.QUANTILES})
            out[key] = {name: value.reshape(-1, 1, 1).tolist() for name, value in stats.items()}
            out[key]["count"] = [int(count[0])]
        return out


# ---------------------------------------------------------------------------------------------------------- import


def import_dataset(src: str | os.PathLike, out: str | os.PathLike, *, progress: bool = True,
                   record_hz: float | None = None, task: str | None = None) -> Dataset:
    """Import the LeRobot v3 dataset folder `src` into the new robot_stack dataset `out`, one episode at a time
    (resumable). record_hz: overrides info.json's fps; task: the task text of episodes that have none."""
    reader = LeRobotReader(Path(src), task=task)
    return write_import(reader.source(record_hz), out, progress)


class LeRobotReader:
    """An opened, checked LeRobot v3 folder: its columns mapped onto robot_stack features, episode by episode."""

    def __init__(self, root: Path, task: str | None = None) -> None:
        self.pa = require("pyarrow", "the LeRobot import")
        self.pq = require("pyarrow.parquet", "the LeRobot import")
        self.root, self.default_task = root, task
        self.info = _read_info(root)
        self.fps = float(self.info.get("fps") or 0)
        self.features: dict[str, dict[str, Any]] = self.info.get("features") or {}
        self.tasks = self._read_tasks()
        self.episodes = self._read_episodes()
        section = self.info.get(SECTION)
        self.columns, self.skipped = _section_columns(section, self.features) if section else _lerobot_columns(self.features)
        self.section = section or {}
        self._data_file: tuple[Path, Any] | None = None

    def source(self, record_hz: float | None) -> Source:
        specs = [spec for column in self.columns for spec in column.features]
        if self.section:  # the exported dataset's own feature order, its timestamp included
            order = list(self.section["features"])
            specs = [FeatureSpec.from_json(name, self.section["features"][name]) for name in order
                     if name != TIMESTAMP or self._has_time]
        names = {}  # LeRobot's per-value names of a column that became one robot_stack feature
        for column in self.columns:
            listed = self.features[column.key].get("names")
            if not column.is_video and len(column.features) == 1 and isinstance(listed, list):
                names[column.features[0].name] = listed
        provenance: dict[str, Any] = {
            "codebase_version": self.info.get("codebase_version"), "robot_type": self.info.get("robot_type"),
            "fps": self.info.get("fps"),
            "columns": {column.key: [spec.name for spec in column.features] for column in self.columns},
            "timestamps": ("the export's robot_stack.timestamp column" if self._has_time
                           else f"frame index / {record_hz or self.fps:g} Hz, episodes back to back"),
        }
        if names:
            provenance["names"] = names
        if self.skipped:
            provenance["skipped"] = self.skipped
        if self.section:
            provenance["origin"] = self.section.get("provenance") or {}
        robot = self.section.get("robot") or {"name": str(self.info.get("robot_type") or "lerobot")}
        tasks = list(self.section.get("tasks") or [text for text in self.tasks.values() if text])
        if self.default_task and self.default_task not in tasks:
            tasks.append(self.default_task)
        return Source(format="lerobot", path=self.root, version=str(self.info.get("codebase_version")), robot=robot,
                      record_hz=float(record_hz or self.section.get("record_hz") or self.fps), features=specs,
                      tasks=tasks, n_episodes=len(self.episodes), episode=self.episode, provenance=provenance)

    @property
    def _has_time(self) -> bool:
        return bool(self.section) and TIME_KEY in self.features

    def episode(self, index: int) -> SourceEpisode:
        """Episode `index` (in episode_index order): its frames, task, success and notes."""
        row = self.episodes[index]
        table = self._episode_rows(row)
        frames: dict[str, np.ndarray] = {}
        relative = _column_values(table, "timestamp").astype(np.float64).reshape(-1)
        for column in self.columns:
            if self.features[column.key]["dtype"] == "image":  # PNG in the parquet (recorded with use_videos=False)
                values = _png_frames(table.column(column.key).to_pylist(), self.root, column.key)
            elif column.is_video:
                values = self._decode_video(column.key, row, relative)
            else:
                values = _column_values(table, column.key)
            frames.update(column.unpack(values))
        if self._has_time:
            frames[TIMESTAMP] = _column_values(table, TIME_KEY).astype(np.float64).reshape(-1)
        texts = [text for text in (row.get("tasks") or []) if text]
        if not texts:
            texts = [self.tasks.get(int(i), "") for i in np.unique(_column_values(table, "task_index"))]
            texts = [text for text in texts if text]
        success = row.get(f"{SECTION}/success")
        if success is None:
            success = bool(np.any(_column_values(table, SUCCESS_KEY))) if SUCCESS_KEY in self.features else None
        else:
            success = None if int(success) < 0 else bool(success)
        notes = row.get(f"{SECTION}/notes")
        if notes is None:
            notes = f"lerobot episode {row['episode_index']}" + (f"; tasks: {texts}" if len(texts) > 1 else "")
        return SourceEpisode(frames, task=texts[0] if texts else self.default_task, success=success, notes=notes)

    def _episode_rows(self, row: dict[str, Any]) -> Any:
        path = self.root / str(self.info.get("data_path") or DATA_PATH).format(
            chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"]))
        if self._data_file is None or self._data_file[0] != path:
            try:
                self._data_file = (path, self.pq.read_table(path))
            except (OSError, self.pa.ArrowException) as error:
                raise DatasetError(f"{path} cannot be read as parquet ({error}): the LeRobot dataset is damaged") from None
        table = self._data_file[1]
        episode = _column_values(table, "episode_index").reshape(-1)
        rows = table.filter(self.pa.array(episode == int(row["episode_index"])))
        frame_index = _column_values(rows, "frame_index").reshape(-1)
        if len(rows) != int(row["length"]) or np.any(np.diff(frame_index) <= 0):
            raise DatasetError(f"{path}: episode {row['episode_index']} has {len(rows)} frames, the episodes index says "
                               f"{row['length']}: the LeRobot dataset is damaged")
        return rows

    def _decode_video(self, key: str, row: dict[str, Any], relative: np.ndarray) -> np.ndarray:
        """The frames of `key`'s video shown at from_timestamp + each frame's timestamp, [T, H, W, 3] uint8."""
        av = require("av", "the LeRobot import")
        path = self.root / str(self.info.get("video_path") or VIDEO_PATH).format(
            video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]), file_index=int(row[f"videos/{key}/file_index"]))
        wanted = float(row[f"videos/{key}/from_timestamp"]) + relative
        tolerance = 0.25 / self.fps  # a quarter frame: the nearest frame is then the one meant
        images, times = [], []
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                container.seek(max(0, int((wanted[0] - tolerance) / stream.time_base)), stream=stream, backward=True)
                for frame in container.decode(stream):
                    if frame.time is None or frame.time < wanted[0] - tolerance:
                        continue
                    if frame.time > wanted[-1] + tolerance:
                        break
                    images.append(frame.to_ndarray(format="rgb24"))
                    times.append(frame.time)
        except (av.error.FFmpegError, IndexError, OSError) as error:
            raise DatasetError(f"{path} cannot be decoded ({error}): the LeRobot dataset's video is missing or damaged") from None
        if not times:
            raise DatasetError(f"{path} has no frames from {wanted[0]:.3f} s (episode {row['episode_index']}): the video "
                               "is shorter than the episodes index says")
        times_array = np.asarray(times)
        nearest = np.abs(times_array[None, :] - wanted[:, None]).argmin(1)
        off = np.abs(times_array[nearest] - wanted)
        if off.max() > tolerance:
            raise DatasetError(f"{path}: episode {row['episode_index']} has no frame within {tolerance * 1e3:.1f} ms of "
                               f"{wanted[off.argmax()]:.4f} s: the video and the frame timestamps disagree")
        return np.stack([images[i] for i in nearest])

    def _read_tasks(self) -> dict[int, str]:
        path = self.root / TASKS_PATH
        if not path.exists():
            return {}
        table = self._read(path)
        texts = [field.name for field in table.schema if field.name != "task_index"
                 and (self.pa.types.is_string(field.type) or self.pa.types.is_large_string(field.type))]
        if "task_index" not in table.column_names or not texts:
            raise DatasetError(f"{path} has no task_index and task text columns: the LeRobot dataset is damaged")
        return dict(zip(table.column("task_index").to_pylist(), table.column(texts[0]).to_pylist(), strict=True))

    def _read_episodes(self) -> list[dict[str, Any]]:
        paths = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not paths:
            raise DatasetError(f"{self.root} has no meta/episodes/chunk-*/file-*.parquet: not a complete LeRobot v3 dataset")
        rows: list[dict[str, Any]] = []
        for path in paths:
            table = self._read(path)
            keep = [name for name in table.column_names if not name.startswith("stats/")]
            rows.extend(table.select(keep).to_pylist())
        rows.sort(key=lambda row: int(row["episode_index"]))
        needed = {"episode_index", "length", "data/chunk_index", "data/file_index"}
        missing = sorted(needed - set(rows[0])) if rows else []
        if missing:
            raise DatasetError(f"{self.root}/meta/episodes lacks the columns {missing}: not a LeRobot v3 dataset")
        return rows

    def _read(self, path: Path) -> Any:
        try:
            return self.pq.read_table(path)
        except (OSError, self.pa.ArrowException) as error:
            raise DatasetError(f"{path} cannot be read as parquet ({error}): the LeRobot dataset is damaged") from None


def _read_info(root: Path) -> dict[str, Any]:
    path = root / INFO_PATH
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: give the LeRobot dataset's folder (the one holding meta/info.json)")
    if not path.is_file():
        raise DatasetError(f"{root} is not a LeRobot dataset: it has no {INFO_PATH}")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path} is not readable JSON ({error}): the LeRobot dataset is damaged") from None
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise DatasetError(f"{path} has no features table: not a LeRobot dataset's info.json")
    version = str(info.get("codebase_version", "?"))
    if not version.startswith("v3."):
        raise DatasetError(f"{root} is a LeRobot {version} dataset and only v3.0 imports: convert it with LeRobot's "
                           "`python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=...` first")
    if not float(info.get("fps") or 0) > 0:
        raise DatasetError(f"{path}: fps is {info.get('fps')!r}; give the frame rate with --record-hz")
    return info


def _section_columns(section: dict[str, Any], features: dict[str, Any]) -> tuple[list[Column], list[str]]:
    """The columns of a robot_stack export, from info.json's robot_stack section."""
    try:
        specs = {name: FeatureSpec.from_json(name, entry) for name, entry in section["features"].items()}
        columns = [Column(key, tuple(specs[name] for name in names)) for key, names in section["columns"].items()]
    except (KeyError, TypeError, AttributeError) as error:
        raise DatasetError(f"info.json's {SECTION} section is malformed ({error!r}): import the dataset without it "
                           f"(delete the {SECTION!r} key) to map LeRobot's own keys") from None
    missing = [column.key for column in columns if column.key not in features]
    if missing:
        raise DatasetError(f"info.json's {SECTION} section names features {missing} the dataset lacks: it was changed "
                           f"after the export; delete the {SECTION!r} key to map LeRobot's own keys")
    return columns, []


def _lerobot_columns(features: dict[str, Any]) -> tuple[list[Column], list[str]]:
    """LeRobot's keys mapped onto robot_stack features (LeRobot's index columns give episode boundaries and tasks
    instead); the keys that map to nothing (strings, keys outside observation.*, action, next.*) come back as
    skipped."""
    columns: list[Column] = []
    skipped: list[str] = []
    for key, entry in features.items():
        dtype, shape = entry.get("dtype"), tuple(int(n) for n in entry.get("shape") or ())
        if key in INDEX_KEYS:
            continue
        if dtype in ("video", "image"):
            channels_first = list(entry.get("names") or [])[:1] == ["channels"]
            height, width = (shape[1], shape[2]) if channels_first else (shape[0], shape[1])
            camera = key.removeprefix(IMAGE_PREFIX).removeprefix("observation.")
            columns.append(Column(key, (FeatureSpec(f"image.{camera}", "uint8", (height, width, 3), "image"),)))
            continue
        try:
            numeric = np.dtype(dtype).kind in "biuf"
        except TypeError:
            numeric = False
        if not numeric:  # strings and LeRobot's own types: nothing a robot_stack feature holds
            skipped.append(key)
            continue
        scalar = shape in ((), (1,))
        if key == ACTION_KEY or key.startswith("action."):
            spec = FeatureSpec(key, dtype, shape, "action")
        elif key == REWARD_KEY:
            spec = FeatureSpec("reward", dtype, (), "reward")
        elif key in (SUCCESS_KEY, DONE_KEY) and scalar:
            spec = FeatureSpec(key.removeprefix("next."), "bool", (), "flag")
        elif key.startswith("observation."):
            spec = FeatureSpec(key.removeprefix("observation."), dtype, shape, "state")
        else:
            skipped.append(key)  # e.g. complementary_info.*: not an observation, action, reward or flag
            continue
        columns.append(Column(key, (spec,)))
    return columns, skipped


def _column_values(table: Any, key: str) -> np.ndarray:
    """A parquet column as [rows, ...] numpy values (lists of lists flattened into trailing axes)."""
    array = table.column(key).combine_chunks()
    shape = [len(array)]
    while hasattr(array.type, "value_type"):  # list, large_list or fixed_size_list
        array = array.flatten()
        shape.append(len(array) // max(1, int(np.prod(shape))))
    return array.to_numpy(zero_copy_only=False).reshape(shape)


def _png_frames(cells: list[Any], root: Path, key: str) -> np.ndarray:
    """LeRobot "image" features: PNG bytes (or a path beside the dataset) per frame -> [T, H, W, 3] uint8."""
    from PIL import Image

    images = []
    for cell in cells:
        data = (cell or {}).get("bytes") if isinstance(cell, dict) else None
        source = io.BytesIO(data) if data else root / str((cell or {}).get("path", ""))
        try:
            images.append(np.asarray(Image.open(source).convert("RGB")))
        except (OSError, ValueError) as error:
            raise DatasetError(f"{root}: a frame of image feature {key!r} cannot be read ({error})") from None
    return np.stack(images)
