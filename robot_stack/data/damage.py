"""Finding damage in recorded frames: chunk files that are missing, truncated or corrupted (the zstd frame
checksum catches a flipped bit), image shards whose index is damaged, and NaN or Inf values.

Each finding is a Damage: an array, a range of frames and what is wrong; Damage.line names the episodes
and what to do. Every reader goes through read_frames, so damage is one line and never silent zeros
(Zarr returns the fill value for a missing chunk); validate and the trainer list it with find_damage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import google_crc32c  # Zarr's own dependency: the checksum of a shard's index
import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from robot_stack.data.store import RESTORE
from robot_stack.errors import DatasetError

STORED, MISSING, BROKEN = 0, 1, 2
"""Per-frame state of the files that hold a frame: stored, no file (deleted), a file that cannot hold it."""
_NOT_WRITTEN = 2**64 - 1  # a shard index entry of an inner chunk never written


@dataclass(frozen=True)
class Damage:
    """Frames [start, stop) of an array (`data/<feature>`) that cannot be trusted, and why."""

    array: str
    start: int
    stop: int
    problem: str  # completes "frames a-b ...", e.g. "are missing on disk (deleted chunk files)"

    def line(self, episode_ends: np.ndarray) -> str:
        """One line: the array, the frames, the episodes they belong to, and what to do."""
        return (f"{self.array}: frames {self.start}-{self.stop - 1} {self.problem}; they belong to "
                f"{episode_span(episode_ends, self.start, self.stop)}: {RESTORE}")


def episode_span(ends: np.ndarray, start: int, stop: int) -> str:
    """The episodes that frames [start, stop) belong to, in words (frames past the last end: the unfinished one)."""
    first, last = np.searchsorted(ends, [start, stop - 1], side="right")
    if first >= len(ends):
        return "the unfinished episode"
    last = min(int(last), len(ends) - 1)
    return f"episode {first}" if first == last else f"episodes {first}-{last}"


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) ranges where a boolean mask is True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _units(array: zarr.Array, start: int, stop: int) -> list[tuple[int, int]]:
    """Frame ranges [lo, hi) covering [start, stop), one per stored file (shard, or chunk if unsharded)."""
    step = array.shards[0] if array.shards else array.chunks[0]
    return [(max(lo, start), min(stop, lo + step)) for lo in range(start - start % step, stop, step)]


def _file(array: zarr.Array, folder: Path, frame: int) -> Path:
    step = array.shards[0] if array.shards else array.chunks[0]
    return folder / array.metadata.encode_chunk_key((frame // step,) + (0,) * (array.ndim - 1))


def stored_frames(array: zarr.Array, folder: Path, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(compressed bytes int64, content checksum uint32, state uint8) of frames [start, stop) of an image array.

    Image frames are one chunk each, compressed by zstd with its frame checksum on: the last 4 bytes of
    every stored frame are the low 32 bits of the xxhash64 of its raw pixels. So this reads 4 bytes a
    frame (and each shard's index: (offset, nbytes) uint64 pairs + a crc32c at the end of the shard
    file, which is checked), never decoding a pixel. state is STORED, MISSING (bytes -1) or BROKEN (a
    zero-byte or truncated file, or a shard whose index fails its checksum; bytes -1).
    """
    if array.chunks[0] != 1:
        raise DatasetError(f"{folder}: image arrays hold one frame per chunk, this one {array.chunks[0]}")
    codecs = array.metadata.codecs[0].codecs if array.shards else array.metadata.codecs
    if not (isinstance(codecs[-1], ZstdCodec) and codecs[-1].checksum):
        raise DatasetError(f"{folder}: image frames must be compressed by zstd with checksums (written by DatasetWriter)")
    n = stop - start
    nbytes = np.full(n, -1, np.int64)
    checksum = np.zeros(n, np.uint32)
    state = np.full(n, STORED, np.uint8)
    shard = array.shards[0] if array.shards else 1
    for lo, hi in _units(array, start, stop):
        file = _file(array, folder, lo)
        if not file.is_file():
            state[lo - start : hi - start] = MISSING
            continue
        first = lo - lo % shard  # the shard's first frame
        with file.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if array.shards:
                index_bytes = 16 * shard + 4
                if size < index_bytes:
                    state[lo - start : hi - start] = BROKEN
                    continue
                handle.seek(size - index_bytes)
                raw = handle.read(index_bytes)
                if google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                    state[lo - start : hi - start] = BROKEN
                    continue
                table = np.frombuffer(raw[:-4], "<u8").reshape(shard, 2)
            else:
                table = np.array([[0, size]], np.uint64)
            for frame in range(lo, hi):
                offset, length = (int(v) for v in table[frame - first])
                if length == _NOT_WRITTEN:
                    state[frame - start] = MISSING
                    continue
                if length < 4 or offset + length > size:
                    state[frame - start] = BROKEN
                    continue
                handle.seek(offset + length - 4)
                nbytes[frame - start] = length
                checksum[frame - start] = int.from_bytes(handle.read(4), "little")
    return nbytes, checksum, state


def file_states(array: zarr.Array, folder: Path, start: int, stop: int) -> np.ndarray:
    """uint8 [stop - start]: STORED, MISSING or BROKEN for each frame, from the files alone (nothing decoded)."""
    if array.chunks[0] == 1:  # images: one frame per chunk, maybe inside shards
        return stored_frames(array, folder, start, stop)[2]
    state = np.full(stop - start, STORED, np.uint8)
    for lo, hi in _units(array, start, stop):
        file = _file(array, folder, lo)
        if not file.is_file():
            state[lo - start : hi - start] = MISSING
        elif file.stat().st_size == 0:
            state[lo - start : hi - start] = BROKEN
    return state


def _state_damage(name: str, states: np.ndarray, start: int) -> list[Damage]:
    found = []
    for code, problem in ((MISSING, "are missing on disk (deleted chunk files)"),
                          (BROKEN, "are in a damaged file (empty, truncated or overwritten)")):
        found += [Damage(f"data/{name}", start + lo, start + hi, problem) for lo, hi in runs(states == code)]
    return found


def _nonfinite(name: str, values: np.ndarray, start: int) -> list[Damage]:
    if values.dtype.kind != "f":
        return []
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    return [Damage(f"data/{name}", start + lo, start + hi, "hold NaN or Inf values") for lo, hi in runs(bad)]


def _undecodable(name: str, array: zarr.Array, lo: int, hi: int, error: Exception) -> list[Damage]:
    """The frames of [lo, hi) that fail to decode (per frame for images, whose frames are chunks of their own)."""
    reason = f"cannot be read: the file is corrupted ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    if array.chunks[0] != 1:
        return [Damage(f"data/{name}", lo, hi, reason)]
    bad = np.zeros(hi - lo, bool)
    for frame in range(lo, hi):
        try:
            array[frame]
        except Exception:  # a damaged chunk raises whatever its codec raises
            bad[frame - lo] = True
    return [Damage(f"data/{name}", lo + a, lo + b, reason) for a, b in runs(bad)] or [Damage(f"data/{name}", lo, hi, reason)]


def find_damage(name: str, array: zarr.Array, folder: Path, start: int, stop: int, decode: bool = True) -> list[Damage]:
    """Every problem of frames [start, stop) of data/<name>: missing or broken files, and (decode=True)
    frames that fail to decode or hold NaN/Inf. Reads one stored file at a time. Sorted by frame."""
    states = file_states(array, folder, start, stop)
    found = _state_damage(name, states, start)
    if decode:
        for lo, hi in _units(array, start, stop):
            if (states[lo - start : hi - start] != STORED).any():
                continue
            try:
                values = array[lo:hi]
            except Exception as error:  # a damaged chunk raises whatever its codec raises
                found += _undecodable(name, array, lo, hi, error)
                continue
            found += _nonfinite(name, values, lo)
    return _merged(sorted(found, key=lambda d: (d.start, d.problem)))


def _merged(found: list[Damage]) -> list[Damage]:
    """Adjacent findings of one kind become one (a run of frames across files)."""
    out: list[Damage] = []
    for damage in found:
        if out and out[-1].problem == damage.problem and out[-1].stop == damage.start:
            out[-1] = Damage(damage.array, out[-1].start, damage.stop, damage.problem)
        else:
            out.append(damage)
    return out


def read_frames(path: Path, name: str, array: zarr.Array, start: int, stop: int, episode_ends: np.ndarray) -> np.ndarray:
    """Frames [start, stop) of data/<name>, or DatasetError with the line of the first damage among them.

    Checks that the files are there (a stat per file; an image shard's index) before reading, and that
    float values are finite after; only damaged reads pay for find_damage's frame-by-frame search.
    """
    folder = path / "data" / name
    if stop <= start:
        return array[start:stop]
    states = file_states(array, folder, start, stop)
    values, failed = None, False
    if not (states != STORED).any():
        try:
            values = array[start:stop]
        except Exception:  # a damaged chunk raises whatever its codec raises
            failed = True
    if values is not None and not failed and (values.dtype.kind != "f" or np.isfinite(values).all()):
        return values
    found = find_damage(name, array, folder, start, stop)
    if not found:  # a read that failed for another reason (e.g. the disk): say so rather than guess
        raise DatasetError(f"{path}: data/{name}: frames {start}-{stop - 1} cannot be read: check the disk, then "
                           f"run `robot-stack data validate {path}`")
    raise damage_error(path, found, episode_ends)


def damage_error(path: Path, found: list[Damage], episode_ends: np.ndarray) -> DatasetError:
    """The one line a reader raises: the first damage found, and how many more there are."""
    more = f" ({len(found) - 1} more problems: `robot-stack data validate {path}` lists them)" if len(found) > 1 else ""
    return DatasetError(f"{path}: {found[0].line(episode_ends)}{more}")


def image_file_damage(name: str, states: np.ndarray, start: int = 0) -> list[Damage]:
    """The Damage of frames whose files are missing or broken, from stored_frames' state."""
    return _state_damage(name, states, start)
