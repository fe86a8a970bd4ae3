"""Metrics that score a reward labeling against ground truth, in numpy only (no scipy dependency).

Conventions shared by every function here:
- Inputs are 1-D arrays of one value per frame (or per episode); episodes are given as `starts` / `ends`
  (int arrays, frames [start, end) of each episode, as Dataset.episode_starts / episode_ends).
- A statistic that is undefined (a constant input, fewer than 2 values, one class missing) is NaN; the
  caller decides how to count it (VOC counts such an episode as 0, see value_order_correlation).
- Ranks are 1-based with ties given the average of the ranks they span (the "average" method), so
  Spearman's rho is Pearson's r of the ranks, and ROC AUC counts a tied positive/negative pair as 1/2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rankdata(values: np.ndarray) -> np.ndarray:
    """Average ranks float64 [n], 1-based, tied values sharing the mean of their ranks:
    [10, 20, 20, 5] -> [2, 3.5, 3.5, 1]."""
    values = np.asarray(values).ravel()
    n = len(values)
    if n == 0:
        return np.zeros(0)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    new_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(new_group) - 1
    bounds = np.r_[np.flatnonzero(new_group), n]  # group k spans sorted positions [bounds[k], bounds[k+1])
    mean_rank = (bounds[:-1] + bounds[1:] - 1) / 2.0 + 1.0
    ranks = np.empty(n)
    ranks[order] = mean_rank[group]
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r of two equal-length arrays; NaN when either is constant or has fewer than 2 values."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(x) != len(y):
        raise ValueError(f"pearson needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    norm = np.sqrt((dx @ dx) * (dy @ dy))
    if norm == 0 or not np.isfinite(norm):
        return float("nan")
    return float(np.clip((dx @ dy) / norm, -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the average ranks (ties averaged); NaN when either input is constant."""
    return pearson(rankdata(x), rankdata(y))


def kendall_tau_b(x: np.ndarray, y: np.ndarray, rows_per_block: int = 512) -> float:
    """Kendall's tau-b = (C - D) / sqrt((P - Tx) (P - Ty)) over the P = n(n-1)/2 pairs, where C / D count
    concordant / discordant pairs and Tx / Ty the pairs tied in x / in y (a pair tied in both is in both).
    NaN when x or y is constant. O(n^2) time, memory O(rows_per_block * n): meant for per-episode values."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(x) != len(y):
        raise ValueError(f"kendall_tau_b needs equal lengths, got {len(x)} and {len(y)}")
    n = len(x)
    if n < 2:
        return float("nan")
    score = tied_x = tied_y = 0
    for start in range(0, n - 1, rows_per_block):
        rows = np.arange(start, min(start + rows_per_block, n - 1))
        later = np.arange(n)[None, :] > rows[:, None]  # each pair once: j > i
        sx = np.sign(x[None, :] - x[rows, None])
        sy = np.sign(y[None, :] - y[rows, None])
        score += int((sx * sy)[later].sum())
        tied_x += int(((sx == 0) & later).sum())
        tied_y += int(((sy == 0) & later).sum())
    pairs = n * (n - 1) // 2
    denominator = np.sqrt(float(pairs - tied_x) * float(pairs - tied_y))
    return float(score / denominator) if denominator > 0 else float("nan")


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of `scores` for the boolean `positive`: the probability that a random positive scores above
    a random negative, a tie counting 1/2 (Mann-Whitney U / (n_pos n_neg)); NaN without both classes."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = rankdata(scores)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def precision_recall(scores: np.ndarray, positive: np.ndarray, threshold: float) -> tuple[float, float]:
    """(precision, recall) of predicting positive where score >= threshold. Precision is NaN when nothing is
    predicted positive, recall NaN when there is no positive."""
    predicted = np.asarray(scores, dtype=np.float64).ravel() >= threshold
    positive = np.asarray(positive, dtype=bool).ravel()
    hits = int((predicted & positive).sum())
    precision = hits / int(predicted.sum()) if predicted.any() else float("nan")
    recall = hits / int(positive.sum()) if positive.any() else float("nan")
    return float(precision), float(recall)


@dataclass(frozen=True)
class EpisodeAverage:
    """A per-episode statistic averaged over episodes: value (NaN when no episode counted), episodes that
    counted, and how many of them were unanswerable (counted as 0) or skipped (left out of the mean)."""

    value: float
    episodes: int
    unanswerable: int = 0
    skipped: int = 0


def value_order_correlation(reward: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> EpisodeAverage:
    """VOC, value-order correlation (GVL: Ma et al. 2024, "Vision Language Models are In-Context Value
    Learners"): Spearman's rho of the reward against the frame index within each episode given, averaged over
    those episodes (pass the successful ones: a good reward rises along a successful demonstration).

    An episode whose rho is undefined (fewer than 2 frames, or a constant reward) counts 0 in the mean and
    in `unanswerable`: a labeler that says nothing about progress earns nothing. NaN when no episode is given.
    """
    reward = np.asarray(reward, dtype=np.float64)
    values, unanswerable = [], 0
    for start, end in zip(starts, ends):
        rho = spearman(reward[start:end], np.arange(end - start))
        if np.isnan(rho):
            unanswerable += 1
            rho = 0.0
        values.append(rho)
    return EpisodeAverage(float(np.mean(values)) if values else float("nan"), len(values), unanswerable)


def episode_correlation(reward: np.ndarray, truth: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                        statistic=pearson) -> EpisodeAverage:
    """`statistic` (pearson or spearman) of reward vs the true reward within each episode, averaged.

    Episodes whose true reward is constant have nothing to correlate with and are `skipped` (left out of the
    mean); an episode whose labeled reward is constant while the truth varies counts 0 (`unanswerable`).
    """
    reward = np.asarray(reward, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    values, unanswerable, skipped = [], 0, 0
    for start, end in zip(starts, ends):
        true = truth[start:end]
        if end - start < 2 or np.all(true == true[0]):
            skipped += 1
            continue
        value = statistic(reward[start:end], true)
        if np.isnan(value):
            unanswerable += 1
            value = 0.0
        values.append(value)
    return EpisodeAverage(float(np.mean(values)) if values else float("nan"), len(values), unanswerable, skipped)


def episode_means(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """float64 [n_episodes]: the mean of `values` over each episode's frames (NaN for an empty episode)."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.add.reduceat(values, starts) if len(values) else np.zeros(len(starts))
    lengths = np.asarray(ends) - np.asarray(starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(lengths > 0, sums / np.maximum(lengths, 1), np.nan)


def sample_pairs(n_frames: int, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n_pairs frame pairs (first, second), int64 [n_pairs] each, uniform over ordered pairs of distinct
    frames of the whole dataset (episodes mixed), from numpy.random.default_rng(seed)."""
    if n_frames < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n_frames, n_pairs)
    second = (first + rng.integers(1, n_frames, n_pairs)) % n_frames  # never the same frame
    return first, second


@dataclass(frozen=True)
class PairAccuracy:
    """Pairwise preference agreement with the truth on the pairs whose true rewards differ.

    accuracy: fraction of the answered pairs (labeled rewards differ) where the higher labeled reward is the
    frame with the higher true reward (NaN when none was answered); abstain_rate: fraction of compared pairs
    whose labeled rewards are equal; compared: pairs with a true difference (ties in truth are skipped);
    gap: (low, high) of the absolute true reward difference this result covers.
    """

    accuracy: float
    abstain_rate: float
    compared: int
    gap: tuple[float, float]


def pairwise_accuracy(reward: np.ndarray, truth: np.ndarray, first: np.ndarray, second: np.ndarray,
                      n_bins: int = 4) -> tuple[PairAccuracy, list[PairAccuracy]]:
    """Agreement of the labeled preferences with the true ones on frame pairs (first[k], second[k]): the
    labeling prefers the frame with the higher reward (equal rewards abstain), the truth the frame with the
    higher true reward (pairs tied in truth are skipped). Returns the overall result and one per quantile bin
    of the absolute true reward gap (n_bins bins of about equal counts, fewer where gaps repeat), smallest gap
    first: a good labeling is most accurate where the truth differs most."""
    reward = np.asarray(reward, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    true_diff = truth[second] - truth[first]
    keep = true_diff != 0
    label_diff = (reward[second] - reward[first])[keep]
    true_diff = true_diff[keep]
    gap = np.abs(true_diff)
    agree = np.sign(label_diff) == np.sign(true_diff)
    answered = label_diff != 0

    def summary(mask: np.ndarray) -> PairAccuracy:
        n, n_answered = int(mask.sum()), int((mask & answered).sum())
        return PairAccuracy(
            accuracy=float((agree & mask).sum() / n_answered) if n_answered else float("nan"),
            abstain_rate=float((mask & ~answered).sum() / n) if n else float("nan"),
            compared=n,
            gap=(float(gap[mask].min()), float(gap[mask].max())) if n else (float("nan"), float("nan")),
        )

    overall = summary(np.ones(len(gap), bool))
    if not len(gap):
        return overall, []
    edges = np.unique(np.quantile(gap, np.linspace(0, 1, n_bins + 1))[1:-1])
    bin_of = np.searchsorted(edges, gap, side="left")  # bin k holds gaps in (edges[k-1], edges[k]]
    bins = [summary(bin_of == k) for k in range(len(edges) + 1)]
    return overall, [result for result in bins if result.compared]
