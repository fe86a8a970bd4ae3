"""Settling the unfinished episode a stopped recording left (`robot-stack data recover`): keep it as an
episode or drop it, and clear what a killed write left past the index."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from robot_stack.data.schema import UNKNOWN
from robot_stack.data.writer import DatasetWriter


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
            index = writer.commit_episode(task_arg, success, str(row["operator"]), str(row["notes"]), str(row["source"]))
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
