"""The Zarr store on disk: opening it with every check a reader makes before trusting it (Store.open),
the guard that turns a failed write into one line (writing), and the arrays' storage layout (create_array).

writer.py and dataset.py build on this; docs/dataset.md says what each check and each write protects.
"""

from __future__ import annotations

import datetime
import errno
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from robot_stack import __version__
from robot_stack.data.schema import (
    ADDED_EPISODE_FIELDS,
    EPISODE_FIELDS,
    FORMAT,
    LOW_DIM_CHUNK_BYTES,
    SCHEMA_VERSION,
    UNWRITTEN_END,
    DatasetSchema,
    FeatureSpec,
    compressor,
)
from robot_stack.errors import DatasetError

# Every chunk is stored even when it equals the fill value, so a missing chunk file is always damage.
WRITE_CONFIG = {"write_empty_chunks": True}
RESTORE = "restore the dataset from a backup copy, or re-record those episodes"
"""What an operator can do about damaged recorded data (raw data is never repaired in place)."""


def now() -> str:
    """The current UTC time, ISO 8601 to the second (the format of every `created`/`computed` attribute)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------
# Opening: every check a reader makes before trusting the store, with a message that says what to do.


def read_root_attrs(path: Path) -> dict[str, Any]:
    """zarr.json's attributes, checked to be a robot_stack dataset this code can read (DatasetError if not)."""
    if not path.exists():
        raise DatasetError(f"no dataset at {path}: the path does not exist (record one, or check the path)")
    if not (path / "zarr.json").is_file():
        v2 = " (it is a Zarr v2 store; robot_stack datasets are Zarr v3)" if (path / ".zgroup").exists() else ""
        raise DatasetError(f"{path} is not a Zarr v3 store: it has no zarr.json{v2}; give the path of a dataset.zarr folder")
    try:
        root = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}/zarr.json cannot be read ({error}): the dataset's description is damaged; "
                           "restore the dataset from a backup copy") from None
    if not isinstance(root, dict) or root.get("zarr_format") != 3 or root.get("node_type") != "group":
        found = root if not isinstance(root, dict) else f"format {root.get('zarr_format')}, node type {root.get('node_type')}"
        raise DatasetError(f"{path} is not a Zarr v3 group (its zarr.json says {found})")
    attrs = root.get("attributes") or {}
    if attrs.get("format") != FORMAT:
        if _killed_while_created(path):
            raise DatasetError(f"{path} was being created when its recorder stopped (it has no format marker and no "
                               f"episode): nothing was recorded in it; remove the folder (rm -r {path}) and record again")
        raise DatasetError(
            f"{path} is a Zarr store but not a robot_stack dataset (its zarr.json attributes lack format={FORMAT!r}): "
            "record into a new dataset, or convert the data with an importer (robot-stack data import-bag)"
        )
    version = attrs.get("schema_version")
    if not isinstance(version, int):
        raise DatasetError(f"{path} has no integer schema_version in its zarr.json attributes: the dataset's description "
                           "is damaged; restore the dataset from a backup copy")
    if version > SCHEMA_VERSION:
        raise DatasetError(
            f"{path} uses dataset schema_version {version}, newer than the {SCHEMA_VERSION} that robot_stack "
            f"{__version__} reads: upgrade robot_stack"
        )
    return attrs


def _killed_while_created(path: Path) -> bool:
    """The shape a kill during DatasetWriter.create leaves: data/ and meta/ groups, no committed episode.

    The format marker is create's last write, so a store without it that has our groups was never finished.
    """
    if not ((path / "data" / "zarr.json").is_file() and (path / "meta" / "zarr.json").is_file()):
        return False
    ends = path / "meta" / "episode_ends" / "c"
    return not ends.exists() or not any(ends.iterdir())


def open_group(path: Path, writable: bool) -> zarr.Group:
    """The root group of the store at `path` (read-only unless `writable`)."""
    return zarr.open_group(zarr.storage.LocalStore(path, read_only=not writable), mode="r+" if writable else "r")


def member(group: zarr.Group, key: str, path: Path) -> Any:
    """group[key], or DatasetError naming what is missing or whose zarr.json is damaged."""
    where = f"{group.path + '/' if group.path else ''}{key}"
    try:
        return group[key]
    except KeyError:
        raise DatasetError(f"{path}: {where} is missing: the dataset is damaged; {RESTORE} "
                           f"(`robot-stack data validate {path}` lists every problem)") from None
    except Exception as error:  # a damaged zarr.json raises whatever its parser raises
        raise DatasetError(f"{path}: {where}/zarr.json is damaged ({type(error).__name__}: {_short(error)}), so "
                           f"{where} cannot be read at all (every frame): {RESTORE}") from None


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text[:160]


def committed_ends(ends: np.ndarray, path: Path) -> np.ndarray:
    """The committed entries of meta/episode_ends, checked to be strictly increasing."""
    # A commit killed between growing episode_ends and writing its value leaves one trailing fill value.
    if len(ends) and ends[-1] == UNWRITTEN_END:
        ends = ends[:-1]
    starts = np.concatenate([[0], ends[:-1]])
    bad = np.flatnonzero(ends <= starts)
    if len(bad):
        raise DatasetError(
            f"{path}: meta/episode_ends is not strictly increasing at episode {bad[0]} ({ends[bad[0]]} after "
            f"{starts[bad[0]]}): the dataset's index is damaged; restore the dataset from a backup copy"
        )
    return ends.astype(np.int64)


@dataclass
class Store:
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
    def open(cls, path: Path, writable: bool) -> Store:
        schema = DatasetSchema.from_attrs(read_root_attrs(path), path)
        root = open_group(path, writable)
        data_group, meta = member(root, "data", path), member(root, "meta", path)
        data = {}
        for name, spec in schema.features.items():
            array = member(data_group, name, path)
            if array.dtype != np.dtype(spec.dtype) or tuple(array.shape[1:]) != spec.shape:
                raise DatasetError(f"{path}: data/{name} is {array.dtype} {tuple(array.shape[1:])} per frame but the "
                                   f"features say {spec.dtype} {spec.shape}: the dataset is damaged; {RESTORE}")
            data[name] = array.with_config(WRITE_CONFIG) if writable else array
        episode_group = member(meta, "episodes", path)
        # A dataset written before a field was added lacks its folder: readers fill in its value, writers add it.
        fields = {name: member(episode_group, name, path) for name in EPISODE_FIELDS
                  if name not in ADDED_EPISODE_FIELDS or (path / "meta" / "episodes" / name).exists()}
        if writable:
            fields = {name: array.with_config(WRITE_CONFIG) for name, array in fields.items()}
        ends_array = member(meta, "episode_ends", path)
        try:
            stored_ends = ends_array[:]
        except Exception as error:  # a damaged chunk raises whatever its codec raises
            raise DatasetError(f"{path}: meta/episode_ends cannot be read ({type(error).__name__}: {_short(error)}): "
                               "the dataset's index is damaged; restore the dataset from a backup copy") from None
        ends = committed_ends(stored_ends, path)
        committed = int(ends[-1]) if len(ends) else 0
        for name, array in data.items():
            if array.shape[0] < committed:
                raise DatasetError(
                    f"{path}: data/{name} has {array.shape[0]} frames but meta/episode_ends commits {committed}: "
                    f"feature lengths are inconsistent, the dataset is damaged; {RESTORE}"
                )
        for name, array in fields.items():
            if array.shape[0] < len(ends):
                raise DatasetError(f"{path}: meta/episodes/{name} has {array.shape[0]} rows for {len(ends)} committed "
                                   f"episodes: the dataset is damaged; {RESTORE}")
        written = int(meta.attrs.get("written_frames", committed))
        return cls(path, root, schema, data, meta, ends_array, fields, ends, written)

    @property
    def committed_frames(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0


# --------------------------------------------------------------------------------------------------
# Writing

# errno -> (what happened, what to do), in an operator's terms.
_WRITE_FAILURES = {
    errno.ENOSPC: ("the disk is full", "free disk space"),
    errno.EDQUOT: ("the disk quota is used up", "free space in your quota"),
    errno.ENOENT: ("a folder on the way to it does not exist (removed or unmounted?)",
                   "check that the folder exists and is mounted, or record into another path"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose a dataset path under a folder"),
    errno.EACCES: ("permission denied: this user may not write there", "record into a folder you may write to"),
    errno.EPERM: ("the operation is not permitted there", "record into a folder you may write to"),
    errno.EROFS: ("the file system is read-only", "record onto a writable disk"),
}


@contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """Turn a failed write into a DatasetError that names the dataset, the write, the cause and the way out."""
    try:
        yield
    except OSError as error:
        cause, action = _WRITE_FAILURES.get(error.errno, (str(error), "fix the cause"))
        where = f" ({error.filename})" if error.filename and error.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES) else ""
        raise DatasetError(f"cannot write {what} to {path}: {cause}{where}. Committed episodes are intact; {action}, "
                           "then try again") from error


def create_array(group: zarr.Group, name: str, spec: FeatureSpec, shard_frames: int) -> zarr.Array:
    """An empty array [0, *spec.shape] laid out as docs/dataset.md says (chunks, shards, zstd with checksums)."""
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
        compressors=compressor(), fill_value=0, config=WRITE_CONFIG,
    )
