"""New datasets made of committed episodes of others: merge several, split one, or select episodes.

The sources are only read (raw data is never rewritten); the output is a new dataset written episode
by episode through DatasetWriter, with its origin in the root attribute `provenance`. Labels and
statistics are not copied: they belong to the source's fingerprint (compute them again on the output).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from robot_stack.data.dataset import Dataset
from robot_stack.data.writer import DatasetWriter
from robot_stack.errors import DatasetError

COPY_BLOCK_BYTES = 64 << 20  # frames are copied in blocks of about this many raw bytes


def _copy_episodes(writer: DatasetWriter, source: Dataset, episodes: Sequence[int], bar: tqdm) -> None:
    """Append `episodes` of `source` to `writer`, one committed episode each, task texts and episode sources kept."""
    block = writer.flush_frames
    for index in episodes:
        info = source.episode_info(index)
        for start in range(info.start, info.stop, block):
            stop = min(info.stop, start + block)
            writer.append_frames({name: source.frames(name, start, stop) for name in source.features})
        writer.commit_episode(info.task_text, info.success, info.operator, info.notes, info.source)
        bar.update(1)


def _new_writer(out: str | os.PathLike, like: Dataset, tasks: list[str], provenance: dict,
                image_shard_frames: int | None) -> DatasetWriter:
    """A writer with the source's image layout (or the one asked for) that flushes blocks of about COPY_BLOCK_BYTES."""
    shards = [like.array(name).shards for name, spec in like.features.items() if spec.is_image]
    shard = image_shard_frames or (shards[0][0] if shards and shards[0] else 1)
    frame_bytes = sum(spec.frame_bytes for spec in like.features.values())
    # Whole image shards per flush; and few flushes, since each rewrites the low-dim chunk it ends in.
    block = max(shard, COPY_BLOCK_BYTES // frame_bytes // shard * shard)
    return DatasetWriter.create(
        out, robot=like.robot, record_hz=like.record_hz, features=list(like.features.values()), tasks=tasks,
        image_shard_frames=shard if shards else None, provenance=provenance, flush_interval_s=block / like.record_hz,
    )


def merge(out: str | os.PathLike, paths: Sequence[str | os.PathLike], progress: bool = True,
          image_shard_frames: int | None = None) -> Dataset:
    """Write the committed episodes of every dataset in `paths`, in order, into a new dataset at `out`.

    All must share the feature schema (robot, record_hz, and each feature's dtype, shape, kind and units);
    the first mismatch is named otherwise. Task lists are merged (first appearance order) and episode task
    indices remapped by task text. image_shard_frames: the output's image layout (default: the first
    source's; 1 = a file per frame, faster random reads).
    """
    if not paths:
        raise DatasetError("merge needs at least one dataset")
    sources = [Dataset.open(path) for path in paths]
    first = sources[0]
    for source in sources[1:]:
        problem = first.schema.first_mismatch(source.schema)
        if problem:
            raise DatasetError(f"cannot merge {source.path} into a dataset with {first.path}: {problem}")
    tasks = list(dict.fromkeys(task for source in sources for task in source.tasks))
    provenance = {"merged_from": [{"path": str(s.path), "fingerprint": s.fingerprint(), "n_episodes": s.n_episodes} for s in sources]}
    writer = _new_writer(out, first, tasks, provenance, image_shard_frames)
    with tqdm(total=sum(s.n_episodes for s in sources), desc=f"merge into {Path(out).name}", unit="episode", disable=not progress) as bar:
        for source in sources:
            _copy_episodes(writer, source, range(source.n_episodes), bar)
    writer.close()
    return Dataset.open(out)


def select_episodes(path: str | os.PathLike, out: str | os.PathLike, episodes: Sequence[int], progress: bool = True,
                    provenance: dict | None = None, image_shard_frames: int | None = None) -> Dataset:
    """Write the given committed episodes of `path` (in the given order) into a new dataset at `out`.

    image_shard_frames: the output's image layout (default: the source's; 1 = a file per frame).
    """
    source = Dataset.open(path)
    episodes = [int(index) for index in episodes]
    bad = [index for index in episodes if not 0 <= index < source.n_episodes]
    if bad:
        raise DatasetError(f"{path} has {source.n_episodes} committed episodes; there is no episode {bad[0]}")
    provenance = provenance or {"selected_from": {"path": str(source.path), "fingerprint": source.fingerprint(), "episodes": episodes}}
    writer = _new_writer(out, source, source.tasks, provenance, image_shard_frames)
    with tqdm(total=len(episodes), desc=f"copy into {Path(out).name}", unit="episode", disable=not progress) as bar:
        _copy_episodes(writer, source, episodes, bar)
    writer.close()
    return Dataset.open(out)


def split(path: str | os.PathLike, out_train: str | os.PathLike, out_val: str | os.PathLike, val_fraction: float,
          seed: int = 0, progress: bool = True, image_shard_frames: int | None = None) -> tuple[Dataset, Dataset]:
    """Split by episode into two new datasets: round(val_fraction * n) random episodes go to `out_val`.

    The choice depends only on (n_episodes, val_fraction, seed); both outputs keep the source's episode
    order and record the source fingerprint, seed and episode indices in `provenance`.
    """
    source = Dataset.open(path)
    if not 0 < val_fraction < 1:
        raise DatasetError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n_val = round(val_fraction * source.n_episodes)
    if not 0 < n_val < source.n_episodes:
        raise DatasetError(f"{path} has {source.n_episodes} episodes: val_fraction {val_fraction} leaves one side empty")
    order = np.random.default_rng(seed).permutation(source.n_episodes)
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    origin = {"path": str(source.path), "fingerprint": source.fingerprint(), "seed": seed, "val_fraction": val_fraction}
    train_ds = select_episodes(path, out_train, train, progress, {"split_of": origin | {"part": "train", "episodes": train}},
                               image_shard_frames)
    val_ds = select_episodes(path, out_val, val, progress, {"split_of": origin | {"part": "val", "episodes": val}},
                             image_shard_frames)
    return train_ds, val_ds

