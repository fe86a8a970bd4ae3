"""Normalization statistics of the low-dim features, computed in blocks and stored beside the data.

Stored as the attributes of meta/stats with the fingerprint of the data they were computed on, so a
dataset that gained episodes (or changed) is recomputed on the next `dataset_stats(ds)`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np

from robot_stack.data.dataset import Dataset
from robot_stack.data.store import open_group, writing
from robot_stack.errors import DatasetError

BLOCK_FRAMES = 1 << 16
QUANTILE_BINS = 4096
"""Histogram bins per component between min and max: quantiles are within (max - min) / QUANTILE_BINS."""


@dataclass(frozen=True)
class FeatureStats:
    """Statistics of one feature over the committed frames; every array has the feature's shape.

    std is the population standard deviation (numpy's default, ddof=0); q01 and q99 are the 1% and 99%
    quantiles (numpy's linear method, to within (max - min) / QUANTILE_BINS).
    """

    count: int
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray

    def to_json(self) -> dict:
        return {"count": self.count} | {name: getattr(self, name).tolist() for name in ("mean", "std", "min", "max", "q01", "q99")}

    @classmethod
    def from_json(cls, entry: dict) -> FeatureStats:
        arrays = {name: np.asarray(entry[name], np.float64) for name in ("mean", "std", "min", "max", "q01", "q99")}
        return cls(count=int(entry["count"]), **arrays)


def stats_features(ds: Dataset) -> list[str]:
    """The features that get statistics: every feature except images and timestamps."""
    return [name for name, spec in ds.features.items() if spec.kind not in ("image", "time")]


def compute_stats(ds: Dataset, features: list[str] | None = None, block_frames: int = BLOCK_FRAMES) -> dict[str, FeatureStats]:
    """Statistics per feature over committed frames, reading `block_frames` at a time (two passes)."""
    return {name: _feature_stats(ds, name, block_frames) for name in (features or stats_features(ds))}


def _blocks(ds: Dataset, name: str, block_frames: int):
    for start in range(0, ds.n_frames, block_frames):
        block = ds.frames(name, start, start + block_frames)
        yield block.reshape(len(block), -1).astype(np.float64)


def _feature_stats(ds: Dataset, name: str, block_frames: int) -> FeatureStats:
    shape = ds.features[name].shape
    n = ds.n_frames
    if n == 0:
        raise DatasetError(f"{ds.path} has no committed frames: record episodes before computing statistics")
    # Pass 1: count, mean and sum of squared deviations merged block by block (Chan et al.), min, max.
    count, mean, m2 = 0, None, None
    low = high = None
    for block in _blocks(ds, name, block_frames):
        b_count, b_mean = len(block), block.mean(axis=0)
        b_m2 = ((block - b_mean) ** 2).sum(axis=0)
        if mean is None:
            count, mean, m2, low, high = b_count, b_mean, b_m2, block.min(axis=0), block.max(axis=0)
            continue
        delta, total = b_mean - mean, count + b_count
        mean = mean + delta * b_count / total
        m2 = m2 + b_m2 + delta**2 * count * b_count / total
        count = total
        low, high = np.minimum(low, block.min(axis=0)), np.maximum(high, block.max(axis=0))
    # Pass 2: a histogram per component between min and max, for the quantiles.
    width = np.where(high > low, (high - low) / QUANTILE_BINS, 1.0)
    dims = len(mean)
    counts = np.zeros(dims * QUANTILE_BINS, np.int64)
    offsets = np.arange(dims) * QUANTILE_BINS
    for block in _blocks(ds, name, block_frames):
        bins = np.clip(((block - low) / width).astype(np.int64), 0, QUANTILE_BINS - 1)
        counts += np.bincount((bins + offsets).ravel(), minlength=dims * QUANTILE_BINS)
    histogram = counts.reshape(dims, QUANTILE_BINS)

    cumulative = histogram.cumsum(axis=1)

    def order_statistic(k: int) -> np.ndarray:
        """The k-th smallest value per component, to within its bin's width."""
        bins = np.array([np.searchsorted(cumulative[d], k, side="right") for d in range(dims)])
        rows = np.arange(dims)
        before = cumulative[rows, bins] - histogram[rows, bins]
        inside = (k - before + 0.5) / histogram[rows, bins]  # spread a bin's values evenly across it
        return low + (bins + inside) * width

    def quantile(q: float) -> np.ndarray:
        rank = q * (count - 1)  # numpy's linear method: between the floor and ceil order statistics
        below, above = order_statistic(int(np.floor(rank))), order_statistic(int(np.ceil(rank)))
        return np.clip(below + (rank - np.floor(rank)) * (above - below), low, high)

    def shaped(values: np.ndarray) -> np.ndarray:
        return values.reshape(shape)

    return FeatureStats(
        count=count, mean=shaped(mean), std=shaped(np.sqrt(m2 / count)), min=shaped(low), max=shaped(high),
        q01=shaped(quantile(0.01)), q99=shaped(quantile(0.99)),
    )


def dataset_stats(ds: Dataset, recompute: bool = False) -> dict[str, FeatureStats]:
    """Stored statistics if they were computed on this data (same fingerprint), else computed and stored.

    Storing needs write access (compute_stats computes without storing).
    """
    fingerprint = ds.fingerprint()
    stored = ds._store.meta.get("stats")
    if stored is not None and not recompute:
        attrs = stored.attrs.asdict()
        if attrs.get("fingerprint") == fingerprint and set(attrs.get("features", {})) == set(stats_features(ds)):
            return {name: FeatureStats.from_json(entry) for name, entry in attrs["features"].items()}
    stats = compute_stats(ds)
    attrs = {
        "fingerprint": fingerprint,
        "n_frames": ds.n_frames,
        "quantile_bins": QUANTILE_BINS,
        "computed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "features": {name: entry.to_json() for name, entry in stats.items()},
    }
    with writing(ds.path, "meta/stats"):
        # A group of its own: a writer recording at the same time rewrites meta's attributes.
        open_group(ds.path, writable=True)["meta"].require_group("stats").attrs.put(attrs)
    ds._store.meta = open_group(ds.path, writable=False)["meta"]
    return stats
