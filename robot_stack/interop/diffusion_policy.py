"""A robot_stack dataset -> the Zarr layout diffusion_policy's ReplayBuffer opens (docs/interop.md).

A Zarr format 2 group: data/<key> time-major arrays of the committed frames, all of length episode_ends[-1], and
meta/episode_ends (int64, cumulative exclusive ends) alone under meta/ (ReplayBuffer reads every meta/ item as an
array, so anything else there breaks it). Keys are the names its shape_meta configs read: `action`, each state,
reward or flag feature under its own name, `timestamp`, and each camera `image.<camera>` as `<camera>` (uint8
[N, H, W, 3], as its real-robot and robomimic image datasets store them). What the layout has no place for (tasks,
success, the robot, the rate, where the data came from) goes into the root group's attribute `robot_stack`, which
its loader ignores. Arrays are Blosc-LZ4 compressed (ReplayBuffer's own default codec, which every numcodecs
decodes) and chunked along time about one episode per chunk, at most 2 MB (its get_optimal_chunks target).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import Blosc
from tqdm import tqdm

from robot_stack.data import Dataset
from robot_stack.errors import DatasetError
from robot_stack.interop.common import fresh_output

CHUNK_BYTES = 2_000_000
"""Upper bound on one chunk's raw size [bytes]."""
IMAGE_PREFIX = "image."


def array_keys(dataset: Dataset) -> dict[str, str]:
    """{feature name: key under data/}: cameras lose the `image.` prefix, every other feature keeps its name."""
    keys = {name: name.removeprefix(IMAGE_PREFIX) if spec.is_image else name for name, spec in dataset.features.items()}
    clashes = sorted({key for key in keys.values() if list(keys.values()).count(key) > 1})
    if clashes:
        raise DatasetError(f"{dataset.path}: camera and feature names meet at data/{clashes[0]} in diffusion_policy's "
                           "layout: rename one of them before exporting")
    return keys


def chunk_length(frame_bytes: int, episode_lengths: np.ndarray) -> int:
    """Frames per chunk: the median episode's length, fewer where that would pass CHUNK_BYTES (at least 1)."""
    return int(max(1, min(int(np.median(episode_lengths)), CHUNK_BYTES // max(1, frame_bytes))))


def export_dataset(dataset: Dataset, out: str | os.PathLike, *, progress: bool = True) -> Path:
    """Write the committed episodes of `dataset` to the new Zarr format 2 group `out` (the module docstring's layout);
    returns its path."""
    if dataset.n_episodes < 1:
        raise DatasetError(f"{dataset.path} has no committed episode: nothing to export")
    keys = array_keys(dataset)
    lengths = dataset.episode_ends - dataset.episode_starts
    codec = Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE)
    with fresh_output(out) as path:
        root = zarr.open_group(path, mode="w-", zarr_format=2)
        root.attrs["robot_stack"] = _description(dataset, keys)
        data = root.create_group("data")
        arrays = {}
        for name, spec in dataset.features.items():
            arrays[name] = data.create_array(
                keys[name], shape=(dataset.n_frames, *spec.shape), dtype=spec.dtype, compressors=codec,
                chunks=(chunk_length(spec.frame_bytes, lengths), *spec.shape))
        for index in tqdm(range(dataset.n_episodes), desc=f"export diffusion-policy -> {path.name}", unit="episode",
                          disable=not progress):
            span = dataset.episode_slice(index)
            for name, array in arrays.items():
                array[span] = dataset.frames(name, span.start, span.stop)
        # episode_ends last: a reader that finds it finds every frame it counts
        meta = root.create_group("meta")
        meta.create_array("episode_ends", data=dataset.episode_ends.astype(np.int64), compressors=None,
                          chunks=(dataset.n_episodes,))
    return path


def _description(dataset: Dataset, keys: dict[str, str]) -> dict[str, Any]:
    """What the layout does not hold, for the root attribute `robot_stack` (JSON)."""
    table = dataset.episode_table()
    return {
        "exported_from": str(Path(dataset.path).resolve()), "fingerprint": dataset.fingerprint(),
        "robot": dataset.robot, "record_hz": dataset.record_hz, "tasks": dataset.tasks,
        "keys": {key: {"feature": name, **dataset.features[name].to_json()} for name, key in keys.items()},
        "episodes": {"task": np.asarray(table["task"]).tolist(), "success": np.asarray(table["success"]).tolist()},
    }
