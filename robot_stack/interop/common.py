"""What every importer and exporter of robot_stack.interop shares.

An importer reads another project's dataset into a `Source`: the dataset-level description (robot, rate, features,
tasks) and a function giving one episode at a time. `write_import` turns it into a robot_stack dataset episode by
episode, each committed as it is written (source "import"), under a progress bar. It is resumable: the same
import into an `out` that an earlier, interrupted run of it left carries on after that run's last committed
episode (an unfinished one is dropped); an `out` made by anything else is refused. The dataset's provenance
records where the data came from: {"import": {format, source (absolute path), version, importer, episodes,
...the format's own fields}}.

An exporter reads a robot_stack Dataset (committed episodes only) and writes the other format to a new path; a
partly written output is removed on any error (`fresh_output`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robot_stack.data import TIMESTAMP, Dataset, DatasetWriter, FeatureSpec
from robot_stack.errors import DatasetError

IMPORT_KEY = "import"
"""The provenance key of an imported dataset."""


@dataclass
class SourceEpisode:
    """One episode of another format: frames {feature name: [T, ...]} for every feature of the Source except,
    optionally, the timestamp (then spaced at 1 / record_hz after the previous episode's last frame); its task
    text (None: unknown), success (None: unknown) and free-text notes."""

    frames: dict[str, np.ndarray]
    task: str | None = None
    success: bool | None = None
    notes: str = ""


@dataclass
class Source:
    """Another format's dataset, opened and checked: what write_import needs.

    format: the registry name ("lerobot", ...); path: what was opened; version: the format's version as the source
    states it; robot: the robot attribute (a JSON-able dict, with "name"); features: the robot_stack features each
    episode gives (FeatureSpec; a float64 "timestamp" is added when absent); episode(i): SourceEpisode i in
    [0, n_episodes); provenance: the format's own fields for the provenance record (e.g. where timestamps came from).
    """

    format: str
    path: Path
    version: str
    robot: dict[str, Any]
    record_hz: float
    features: list[FeatureSpec]
    tasks: list[str]
    n_episodes: int
    episode: Callable[[int], SourceEpisode]
    provenance: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None


def import_record(source: Source) -> dict[str, Any]:
    """The provenance record of an import of `source` (what a resumed import must match)."""
    return {"format": source.format, "source": str(Path(source.path).resolve()), "version": str(source.version),
            "importer": f"robot-stack data import {source.format}", "episodes": int(source.n_episodes),
            **source.provenance}


def write_import(source: Source, out: str | os.PathLike, progress: bool = True) -> Dataset:
    """Write `source` into the robot_stack dataset `out`, one committed episode at a time; resumes an interrupted
    import of the same source into `out` (see the module docstring). Returns the dataset opened for reading."""
    out = Path(out)
    record = import_record(source)
    try:
        if source.n_episodes < 1:
            raise DatasetError(f"{source.path} holds no episodes: nothing to import")
        if not source.record_hz > 0:
            raise DatasetError(f"{source.path}: the frame rate must be positive, got {source.record_hz}")
        writer, start = _open_output(source, out, record)
        clock = _next_clock(writer, out, source.record_hz)
        names = list(writer.schema.features)
        with writer, tqdm(total=source.n_episodes, initial=start, desc=f"import {source.format} -> {out.name}",
                          unit="episode", disable=not progress) as bar:
            for index in range(start, source.n_episodes):
                episode = source.episode(index)
                frames = dict(episode.frames)
                count = _frame_count(frames, index, source.path)
                if TIMESTAMP not in frames:
                    frames[TIMESTAMP] = clock + np.arange(count) / source.record_hz
                missing = sorted(set(names) - set(frames))
                if missing:
                    raise DatasetError(f"{source.path}: episode {index} lacks feature(s) {missing}")
                writer.append_frames({name: frames[name] for name in names})
                writer.commit_episode(episode.task, episode.success, notes=episode.notes or f"{source.format} episode {index}",
                                      source="import")
                clock = float(np.asarray(frames[TIMESTAMP])[-1]) + 1.0 / source.record_hz
                bar.update(1)
    finally:
        source.close()
    return Dataset.open(out)


def _open_output(source: Source, out: Path, record: dict[str, Any]) -> tuple[DatasetWriter, int]:
    """A writer on `out` and the first episode to import: a new dataset (0), or a resumed import of this source."""
    if not out.exists():
        writer = DatasetWriter.create(out, robot=source.robot, record_hz=source.record_hz, features=source.features,
                                      tasks=source.tasks, provenance={IMPORT_KEY: record})
        return writer, 0
    try:
        existing = Dataset.open(out)
    except DatasetError:
        raise DatasetError(f"{out} exists and is not a robot_stack dataset: import into a new path") from None
    earlier = existing.provenance.get(IMPORT_KEY) or {}
    same = {key: earlier.get(key) for key in ("format", "source", "version")} == {
        key: record[key] for key in ("format", "source", "version")}
    if not same:
        raise DatasetError(f"{out} exists and is not an import of {source.path} ({source.format}): import into a new "
                           "path (merge datasets afterwards with `robot-stack data merge`)")
    if existing.n_episodes >= source.n_episodes:
        raise DatasetError(f"{out} already holds all {source.n_episodes} episodes of {source.path}: nothing to import")
    if existing.unfinished_frames:  # the episode the interrupted run was writing: dropped, imported again
        from robot_stack.data import recover

        recover(out, keep=False)
    return DatasetWriter.open(out), existing.n_episodes


def _next_clock(writer: DatasetWriter, out: Path, record_hz: float) -> float:
    if writer.committed_frames == 0:
        return 0.0
    last = Dataset.open(out).frames(TIMESTAMP, writer.committed_frames - 1)
    return float(np.asarray(last).reshape(-1)[0]) + 1.0 / record_hz


def _frame_count(frames: dict[str, np.ndarray], index: int, path: Path) -> int:
    counts = {name: len(values) for name, values in frames.items()}
    if not counts or min(counts.values()) < 1:
        raise DatasetError(f"{path}: episode {index} has no frames")
    if len(set(counts.values())) != 1:
        raise DatasetError(f"{path}: episode {index}'s features have different lengths {counts}")
    return next(iter(counts.values()))


@contextmanager
def fresh_output(out: str | os.PathLike) -> Iterator[Path]:
    """A new output path for an exporter: refused if it exists; removed again if the export fails."""
    out = Path(out)
    if out.exists():
        raise DatasetError(f"{out} exists: export into a new path")
    try:
        yield out
    except BaseException:
        if out.is_dir():
            shutil.rmtree(out, ignore_errors=True)
        elif out.exists():
            out.unlink()
        raise
