"""What is wrong with a dataset: validate (`robot-stack data validate`) reads every committed chunk and
checks the index, the episode rows, the timestamps and the label runs; dataset_damage is the part that
finds damaged frames, shared with the trainer, which refuses damaged data with the same lines.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from robot_stack.data.damage import find_damage
from robot_stack.data.dataset import Dataset
from robot_stack.data.schema import TIMESTAMP, UNKNOWN
from robot_stack.errors import DatasetError


def dataset_damage(ds: Dataset, features: Iterable[str] | None = None, decode: Iterable[str] | None = None,
                   progress: bool = False) -> list[str]:
    """One line per damage in the committed frames of `features` (default: all): missing or broken chunk
    files, chunks that fail to decode, NaN or Inf. Only the features in `decode` (default: all) are
    decoded; the others are checked from their files (a stat per file, an image shard's index)."""
    features = list(ds.features if features is None else features)
    decode = set(features if decode is None else decode)
    lines = []
    for name in tqdm(features, desc=f"check {ds.path.name}", unit="array", disable=not progress):
        found = find_damage(name, ds.array(name), ds.path / "data" / name, 0, ds.n_frames, decode=name in decode)
        lines += [damage.line(ds.episode_ends) for damage in found]
    return lines


def validate(path: str | os.PathLike, progress: bool = True) -> list[str]:
    """Read every committed chunk and check the index; returns the problems found (empty: all good).

    Damaged frames (dataset_damage) are reported with the array, the frames and the episodes they belong
    to. Also checks schema, lengths, episode_ends, episode rows, timestamps and label runs. Frames past
    the last commit (an unfinished episode) are not damage: Dataset.unfinished_frames counts them.
    """
    path = Path(path)
    try:
        ds = Dataset.open(path)
    except DatasetError as error:
        return [str(error)]
    problems: list[str] = []
    try:
        table = ds.episode_table()
    except DatasetError as error:
        problems.append(str(error))
    else:
        bad_task = np.flatnonzero((table["task"] < UNKNOWN) | (table["task"] >= len(ds.tasks)))
        if len(bad_task):
            problems.append(f"meta/episodes/task: episodes {bad_task.tolist()} name no task of the {len(ds.tasks)} in the tasks list")
        bad_success = np.flatnonzero(~np.isin(table["success"], [UNKNOWN, 0, 1]))
        if len(bad_success):
            problems.append(f"meta/episodes/success: episodes {bad_success.tolist()} are not 1, 0 or -1")
    damage = dataset_damage(ds, progress=progress)
    problems += damage
    n, ends = ds.n_frames, ds.episode_ends
    if n and not any(line.startswith(f"data/{TIMESTAMP}:") for line in damage):
        back = np.flatnonzero(np.diff(ds.frames(TIMESTAMP)) < 0)
        back = back[~np.isin(back + 1, ends)]  # a new episode may start earlier than the last ended
        if len(back):
            episode = int(np.searchsorted(ends, back[0] + 1, side="right"))
            problems.append(f"data/{TIMESTAMP}: time goes backwards inside episode {episode} (frame {back[0] + 1})")
    for run in ds.label_runs():
        try:
            labels = ds.read_labels(run)
            if len(labels.reward) > n:
                problems.append(f"labels/{run}: {len(labels.reward)} rewards for {n} committed frames")
        except Exception as error:  # a damaged label chunk raises whatever its codec raises
            problems.append(f"labels/{run}: {error}")
    for run, names in ds.label_arrays().items():
        for name in names:
            try:
                values, _ = ds.read_label_array(run, name)
                if len(values) > n:
                    problems.append(f"labels/{run}/{name}: {len(values)} rows for {n} committed frames")
            except Exception as error:  # a damaged label chunk raises whatever its codec raises
                problems.append(f"labels/{run}/{name}: {error}")
    return problems
