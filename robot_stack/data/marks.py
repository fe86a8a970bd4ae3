"""Outcome marks: an operator's success/fail verdict on recorded episodes (`robot-stack data mark`), kept
beside the recorded data with who marked what, when, and what it was before.

    meta/marks/zarr.json  attributes {"marks": [{episode, success, previous, by, at, robot_stack}, ...]}

A log in the order marked; an episode's last mark is its outcome (Dataset.success, the episode table,
`--reward success`). The recorded rows (meta/episodes/success) are never rewritten. The attributes are
one file that Zarr replaces atomically, so a kill while marking leaves the marks before or after it.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from robot_stack import __version__
from robot_stack.data.schema import UNKNOWN
from robot_stack.data.store import Store, now, writing
from robot_stack.errors import DatasetError

MARKS = "marks"
"""The group under meta/ whose attributes hold the marks (a group of its own: a recorder rewrites meta's)."""


def read_marks(meta: zarr.Group) -> list[dict[str, Any]]:
    """The marks log of a dataset's meta group, oldest first ([] when nothing was marked)."""
    group = meta.get(MARKS)
    if group is None:
        return []
    marks = group.attrs.get("marks", [])
    if not isinstance(marks, list) or not all(isinstance(m, dict) and {"episode", "success"} <= m.keys() for m in marks):
        raise DatasetError(f"meta/{MARKS}/zarr.json does not hold a list of marks: mark the episodes again "
                           "(robot-stack data mark DATASET EPISODES success|fail)")
    return marks


def apply_marks(success: np.ndarray, marks: list[dict[str, Any]]) -> np.ndarray:
    """The recorded outcomes int8 [n_episodes] (1, 0, -1) with each episode's last mark applied."""
    out = success.copy()
    for mark in marks:
        if 0 <= int(mark["episode"]) < len(out):
            out[int(mark["episode"])] = 1 if mark["success"] else 0
    return out


def parse_episodes(text: str, n_episodes: int) -> list[int]:
    """`3`, `0,2,5`, `4-9` (inclusive), `-1` (the last) or `all` -> sorted episode indices, checked to exist."""
    if text.strip() == "all":
        return list(range(n_episodes))
    chosen: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part and not part.startswith("-"):
                first, last = (int(v) for v in part.split("-", 1))
                if first > last:
                    raise ValueError
                values = range(first, last + 1)
            else:
                values = [int(part)]
        except ValueError:
            raise DatasetError(f"episodes {text!r}: {part!r} is not an episode index or range; write e.g. 3, 0,2,5, "
                               "4-9 or all") from None
        for value in values:
            if not -n_episodes <= value < n_episodes:
                raise DatasetError(f"episode {value} does not exist: the dataset has episodes 0-{n_episodes - 1}"
                                   if n_episodes else "the dataset has no committed episodes to mark")
            chosen.add(value % n_episodes)
    return sorted(chosen)


def mark_episodes(path: str | os.PathLike, episodes: str | list[int], success: bool, by: str | None = None) -> list[dict[str, Any]]:
    """Record `success` (True: succeeded, False: failed) for `episodes` (indices, or text for parse_episodes).

    Each mark keeps the episode's outcome before it (`previous`: 1, 0 or -1 unknown), who marked it
    (`by`, default the login name), when (`at`, UTC) and the robot_stack version. Returns the new marks.
    """
    store = Store.open(Path(path), writable=True)
    n = len(store.episode_ends)
    indices = parse_episodes(episodes, n) if isinstance(episodes, str) else parse_episodes(",".join(map(str, episodes)), n)
    marks = read_marks(store.meta)
    current = apply_marks(store.episode_fields["success"][:n], marks)
    who, when = by or _login(), now()
    added = [{"episode": i, "success": bool(success), "previous": int(current[i]) if current[i] != UNKNOWN else UNKNOWN,
              "by": who, "at": when, "robot_stack": __version__} for i in indices]
    with writing(store.path, f"meta/{MARKS}"):
        store.meta.require_group(MARKS).attrs.put({"marks": marks + added})
    return added


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        return "unknown"
