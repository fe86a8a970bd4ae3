"""`robot-stack label eval`: score label runs against the ground truth a simulator recorded in the dataset
(data/sim_reward, data/sim_success, the episodes' success), side by side with two baselines made on the spot.

Baselines: `time` (t / (T - 1) within each episode of T frames: rises 0 -> 1 on every episode, failures too)
and `random` (uniform [0, 1) noise from the seed). Metrics (robot_stack.label.metrics holds the definitions):
- voc: VOC, Spearman of reward vs time averaged over successful episodes; an unanswerable episode counts 0;
- kendall: Kendall tau-b between episode scores and ground-truth episode scores over all episodes (failed
  ones included: the check VOC cannot make). An episode's score is its MEAN reward, on both sides (the
  ground truth's is its return divided by its length; equal to ranking by return for fixed-length episodes).
  Scores that are all equal rank nothing and count 0 (the time baseline: its mean is 0.5 on every episode);
- kendall_success: the same episode scores vs the episodes' success (1/0), episodes with a known outcome;
- pearson/spearman: reward vs sim_reward within each episode (averaged) and over all frames;
- pairs: preference accuracy on seeded frame pairs (higher reward preferred; truth ties skipped, equal
  labeled rewards abstain), overall and per quantile bin of the true reward gap;
- auc, precision, recall: the reward as a per-frame detector of sim_success, at the run's threshold
  (run_threshold: attrs["threshold"] in reward units, or the labeler's info["threshold"] through the run's
  calibration, else 0.5); final_auc: the final frame's reward as a detector of the episode's success
  (needs only the outcomes);
- cost: judge calls, cache hits and seconds per frame from the run's provenance, where it gives them.

A dataset without data/sim_reward (a real robot's) still gets the metrics that need only the episodes'
outcomes (voc, kendall_success, final_auc) when it has a successful and a failed episode; otherwise eval
refuses with one line. The dataset is only read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.data import Dataset
from robot_stack.errors import LabelError
from robot_stack.label import metrics

SIM_REWARD, SIM_SUCCESS = "sim_reward", "sim_success"
"""The ground-truth features sim datasets record (launch/params/recorder_<task>.yaml, robot_stack.sim.collect)."""
DEFAULT_THRESHOLD = 0.5
"""Success threshold in calibrated reward units for a run whose provenance gives none (and the baselines)."""
THRESHOLD_SOURCES = ("run", "labeler, calibrated", "default")
"""Where a row's threshold comes from: the run's attrs["threshold"], the labeler's info["threshold"] mapped
through the run's calibration, or DEFAULT_THRESHOLD (run_threshold)."""
DEFAULT_PAIRS = 10_000
COST_KEYS = {"judge_calls": ("judge_calls", "calls"), "cache_hits": ("cache_hits",),
             "seconds_per_frame": ("seconds_per_frame",)}
"""Cost fields -> the provenance keys read for them, in a run's attrs, then attrs["cost"] (as the labeling job
writes it), then attrs["info"]; seconds_per_frame is also derived from a total "seconds" over the frames."""


@dataclass
class GroundTruth:
    """What a dataset records about how well its episodes went.

    reward: float64 [n_frames] sim_reward, or None; success: bool [n_frames] sim_success, or None;
    outcome: int8 [n_episodes] 1 / 0 / -1 unknown (Dataset.success, marks applied); starts, ends: int64
    [n_episodes], frames [start, end) of each episode.
    """

    reward: np.ndarray | None
    success: np.ndarray | None
    outcome: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def of(cls, ds: Dataset) -> GroundTruth:
        """Read the ground truth of `ds`; LabelError when it has neither sim_reward nor both outcomes."""
        features = ds.features
        reward = ds.frames(SIM_REWARD).astype(np.float64) if SIM_REWARD in features else None
        success = ds.frames(SIM_SUCCESS).astype(bool) if SIM_SUCCESS in features else None
        truth = cls(reward, success, ds.success.astype(np.int8), ds.episode_starts.copy(), ds.episode_ends.copy())
        if reward is None and not ((truth.outcome == 1).any() and (truth.outcome == 0).any()):
            raise LabelError(f"{ds.path} has no sim ground truth (data/{SIM_REWARD}) and not both successful and "
                             "failed episodes: label eval scores runs against the reward a simulator recorded; for "
                             "a real robot's data, mark outcomes (robot-stack data mark) to get the success-only "
                             "metrics (voc, kendall_success, final_auc)")
        return truth


@dataclass
class RunScore:
    """One row of the report: a label run or a baseline, its metrics (NaN where undefined or not
    measurable on this dataset), how they were measured (threshold and its source), and its cost."""

    name: str
    kind: str  # "run" or "baseline"
    labeler: str
    oracle: bool  # the run used the recorded ground truth (attrs["ground_truth_used"])
    metrics: dict[str, float]
    counts: dict[str, int]
    pair_bins: list[dict[str, float]]
    threshold: float
    threshold_source: str  # one of THRESHOLD_SOURCES
    cost: dict[str, float | None] = field(default_factory=dict)


@dataclass
class EvalReport:
    dataset: str
    n_episodes: int
    n_frames: int
    n_successful: int
    n_failed: int
    ground_truth: dict[str, bool]
    seed: int
    pairs: int
    rows: list[RunScore]


def evaluate(ds: Dataset, runs: Sequence[str], seed: int = 0, pairs: int = DEFAULT_PAIRS) -> EvalReport:
    """Score the label runs `runs` of `ds` and the baselines against its ground truth.

    Every row is scored on the same `pairs` frame pairs (sampled with `seed`); `seed` also draws the random
    baseline. LabelError for an unknown run (naming the runs there are), a run that does not cover every
    committed frame, or a dataset without ground truth (GroundTruth.of).
    """
    known = ds.label_runs()
    for run in runs:
        if run not in known:
            listed = ", ".join(known) if known else "none"
            raise LabelError(f"{ds.path} has no label run {run!r} (its runs: {listed}); see robot-stack label list")
    truth = GroundTruth.of(ds)
    first, second = metrics.sample_pairs(ds.n_frames, pairs, seed)
    rows = []
    for run in runs:
        labels = ds.read_labels(run)
        if labels.reward.shape != (ds.n_frames,):
            raise LabelError(f"label run {run!r} covers {len(labels.reward)} frames but {ds.path} now has "
                             f"{ds.n_frames} committed frames: label the dataset again to evaluate it")
        threshold, source = run_threshold(labels.attrs)
        rows.append(_score(run, "run", str(labels.attrs.get("labeler", "")), labels.reward, truth, first, second,
                           threshold, source, oracle=bool(labels.attrs.get("ground_truth_used", False)),
                           cost=_cost(labels.attrs, ds.n_frames)))
    for name, reward in baseline_rewards(truth, seed).items():
        rows.append(_score(name, "baseline", name, reward, truth, first, second, DEFAULT_THRESHOLD,
                           THRESHOLD_SOURCES[2]))
    return EvalReport(
        dataset=str(ds.path), n_episodes=ds.n_episodes, n_frames=ds.n_frames,
        n_successful=int((truth.outcome == 1).sum()), n_failed=int((truth.outcome == 0).sum()),
        ground_truth={SIM_REWARD: truth.reward is not None, SIM_SUCCESS: truth.success is not None,
                      "episode_success": bool((truth.outcome != -1).any())},
        seed=seed, pairs=len(first), rows=rows,
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def run_threshold(attrs: Mapping[str, Any]) -> tuple[float, str]:
    """The success threshold of a run in reward units, and where it came from (THRESHOLD_SOURCES): its
    attrs["threshold"] (reward units), else the labeler's attrs["info"]["threshold"] (raw-score units, as the
    success labeler chooses it) mapped through the run's calibration (reward = scale * raw + offset), else 0.5."""
    threshold = _number(attrs.get("threshold"))
    if threshold is not None:
        return threshold, THRESHOLD_SOURCES[0]
    info, calibration = attrs.get("info"), attrs.get("calibration")
    threshold = _number(info.get("threshold")) if isinstance(info, Mapping) else None
    if threshold is not None:
        scale, offset = (_number(calibration.get(key)) for key in ("scale", "offset")) \
            if isinstance(calibration, Mapping) else (1.0, 0.0)
        if scale is not None and offset is not None and scale > 0:
            return scale * threshold + offset, THRESHOLD_SOURCES[1]
    return DEFAULT_THRESHOLD, THRESHOLD_SOURCES[2]


def baseline_rewards(truth: GroundTruth, seed: int) -> dict[str, np.ndarray]:
    """The baselines' rewards float64 [n_frames]: time = t / (T - 1) within each episode of T frames (0 for a
    one-frame episode), random = uniform [0, 1) from numpy.random.default_rng((seed, 1)), a stream apart from
    the frame pairs' (metrics.sample_pairs draws those from default_rng(seed))."""
    n_frames = int(truth.ends[-1]) if len(truth.ends) else 0
    time = np.zeros(n_frames)
    for start, end in zip(truth.starts, truth.ends):
        time[start:end] = np.arange(end - start) / max(end - start - 1, 1)
    return {"time": time, "random": np.random.default_rng((seed, 1)).random(n_frames)}


def _score(name: str, kind: str, labeler: str, reward: np.ndarray, truth: GroundTruth, first: np.ndarray,
           second: np.ndarray, threshold: float, threshold_source: str, oracle: bool = False,
           cost: dict[str, float | None] | None = None) -> RunScore:
    nan = float("nan")
    reward = np.asarray(reward, dtype=np.float64)
    starts, ends = truth.starts, truth.ends
    successful, known = truth.outcome == 1, truth.outcome != -1
    voc = metrics.value_order_correlation(reward, starts[successful], ends[successful])
    episode_score = metrics.episode_means(reward, starts, ends)
    final = reward[ends - 1] if len(ends) else np.zeros(0)
    values = {"voc": voc.value,
              "kendall_success": _kendall(episode_score[known], truth.outcome[known]),
              "final_auc": metrics.roc_auc(final[known], truth.outcome[known] == 1)}
    counts = {"voc_episodes": voc.episodes, "voc_unanswerable": voc.unanswerable}
    pair_bins: list[dict[str, float]] = []
    if truth.reward is not None:
        values["kendall"] = _kendall(episode_score, metrics.episode_means(truth.reward, starts, ends))
        per_pearson = metrics.episode_correlation(reward, truth.reward, starts, ends, metrics.pearson)
        per_spearman = metrics.episode_correlation(reward, truth.reward, starts, ends, metrics.spearman)
        values |= {"pearson_episode": per_pearson.value, "spearman_episode": per_spearman.value,
                   "pearson_all": metrics.pearson(reward, truth.reward),
                   "spearman_all": metrics.spearman(reward, truth.reward)}
        counts |= {"correlated_episodes": per_pearson.episodes, "constant_truth_episodes": per_pearson.skipped}
        overall, bins = metrics.pairwise_accuracy(reward, truth.reward, first, second)
        values |= {"pair_accuracy": overall.accuracy, "pair_abstain_rate": overall.abstain_rate}
        counts["pairs_compared"] = overall.compared
        pair_bins = [{"gap_low": b.gap[0], "gap_high": b.gap[1], "pairs": b.compared, "accuracy": b.accuracy,
                      "abstain_rate": b.abstain_rate} for b in bins]
    else:
        values |= dict.fromkeys(("kendall", "pearson_episode", "spearman_episode", "pearson_all", "spearman_all",
                                 "pair_accuracy", "pair_abstain_rate"), nan)
    if truth.success is not None:
        values["auc"] = metrics.roc_auc(reward, truth.success)
        values["precision"], values["recall"] = metrics.precision_recall(reward, truth.success, threshold)
    else:
        values |= {"auc": nan, "precision": nan, "recall": nan}
    return RunScore(name, kind, labeler, oracle, values, counts, pair_bins, threshold, threshold_source,
                    cost if cost is not None else dict.fromkeys(COST_KEYS))


def _kendall(scores: np.ndarray, truth: np.ndarray) -> float:
    """Kendall tau-b of episode scores vs the truth's; 0 when the scores are all equal (they rank nothing,
    as the time baseline's mean of 0.5 on every episode) while the truth varies, NaN when the truth is constant.
    Means are compared at float32 resolution, the labels' own, so rounding noise of the sums fakes no order."""
    scores, truth = np.float32(scores), np.float32(truth)
    if len(truth) < 2 or np.all(truth == truth[0]):
        return float("nan")
    tau = metrics.kendall_tau_b(scores, truth)
    return 0.0 if np.isnan(tau) else tau


def _cost(attrs: Mapping[str, Any], n_frames: int) -> dict[str, float | None]:
    """The cost fields (COST_KEYS) a run's provenance gives; None where it gives none."""
    places = [attrs] + [attrs[key] for key in ("cost", "info") if isinstance(attrs.get(key), Mapping)]

    def find(keys: tuple[str, ...]) -> float | None:
        values = (_number(place.get(key)) for place in places for key in keys)
        return next((value for value in values if value is not None), None)

    cost = {name: find(keys) for name, keys in COST_KEYS.items()}
    seconds, frames = find(("seconds",)), find(("frames",)) or n_frames
    if cost["seconds_per_frame"] is None and seconds is not None and frames:
        cost["seconds_per_frame"] = seconds / frames
    return cost


# ---- output: table, JSON, PNG

COLUMNS = [("voc", "VOC"), ("kendall", "Kendall"), ("kendall_success", "K(succ)"), ("pearson_episode", "Pear/ep"),
           ("pearson_all", "Pear/all"), ("spearman_episode", "Spear/ep"), ("spearman_all", "Spear/all"),
           ("pair_accuracy", "PairAcc"), ("pair_abstain_rate", "Abstain"), ("auc", "AUC"),
           ("precision", "Prec"), ("recall", "Recall"), ("final_auc", "AUC(end)")]


def format_table(report: EvalReport) -> str:
    """The report as a text table: one row per run and baseline, blank where a value is undefined."""
    def number(value: float | None, digits: int = 3) -> str:
        return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"

    header = ["run", *(title for _, title in COLUMNS), "thr", "calls", "hits", "s/frame", "note"]
    lines = []
    for row in report.rows:
        notes = []
        if row.counts.get("voc_unanswerable"):
            notes.append(f"VOC: {row.counts['voc_unanswerable']} of {row.counts['voc_episodes']} episodes unanswerable")
        if row.oracle:
            notes.append("oracle: uses ground truth")
        thr = f"{row.threshold:.3g}{'*' if row.threshold_source == THRESHOLD_SOURCES[2] else ''}"
        calls, hits, per_frame = (row.cost.get(key) for key in COST_KEYS)
        lines.append([("baseline:" if row.kind == "baseline" else "") + row.name,
                      *(number(row.metrics.get(key)) for key, _ in COLUMNS), thr,
                      number(calls, 0), number(hits, 0), number(per_frame, 4), "; ".join(notes)])
    widths = [max(len(str(cells[i])) for cells in [header, *lines]) for i in range(len(header))]
    text = ["  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip()
            for cells in [header, *lines]]
    truth = ", ".join(name for name, present in report.ground_truth.items() if present) or "none"
    text.append(f"{report.n_episodes} episodes ({report.n_successful} successful, {report.n_failed} failed), "
                f"{report.n_frames} frames; ground truth: {truth}; {report.pairs} frame pairs, seed {report.seed}.")
    text.append("thr*: no threshold in the run's provenance, 0.5 used. Episode score = mean reward (both sides). "
                "Blank: undefined or no ground truth for it.")
    return "\n".join(text)


def report_json(report: EvalReport) -> dict[str, Any]:
    """The report as JSON-able data; undefined values are null."""
    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        return value

    return clean({
        "dataset": report.dataset, "n_episodes": report.n_episodes, "n_frames": report.n_frames,
        "n_successful": report.n_successful, "n_failed": report.n_failed, "ground_truth": report.ground_truth,
        "seed": report.seed, "pairs": report.pairs,
        "conventions": {
            "episode_score": "mean reward over the episode's frames, for the run and for sim_reward alike",
            "voc": "Spearman of reward vs frame index per successful episode, averaged; unanswerable episodes count 0",
            "per_episode": "episodes with a constant sim_reward are skipped; a constant labeled reward counts 0",
            "pairs": "higher reward preferred; pairs tied in sim_reward skipped; equal labeled rewards abstain; "
                     "accuracy over answered pairs; bins are quantiles of |sim_reward gap|",
            "threshold": "the run's attrs['threshold'] (reward units), else the labeler's info['threshold'] through "
                         "the run's calibration, else 0.5; threshold_source says which",
            "baselines": "time = t/(T-1) per episode; random = uniform [0,1) from the seed",
        },
        "rows": [{"name": row.name, "kind": row.kind, "labeler": row.labeler, "oracle": row.oracle,
                  "metrics": row.metrics, "counts": row.counts, "pair_bins": row.pair_bins,
                  "threshold": row.threshold, "threshold_source": row.threshold_source, "cost": row.cost}
                 for row in report.rows],
    })


def default_output(ds: Dataset) -> Path:
    """runs/label_eval/<dataset name without .zarr>.json, relative to the working folder."""
    return Path("runs") / "label_eval" / (ds.path.name.removesuffix(".zarr") + ".json")


def write_json(report: EvalReport, out: str | os.PathLike) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report_json(report), indent=2) + "\n")
    return out


def plot_episodes(ds: Dataset, runs: Sequence[str], out: str | os.PathLike, per_outcome: int = 2) -> Path:
    """A PNG of reward vs time [s] for up to `per_outcome` successful and `per_outcome` failed episodes
    (evenly spread over the dataset), each run overlaid on sim_reward. Every curve is scaled to [0, 1] by its
    minimum and maximum over the WHOLE dataset, for display only (never per episode), and the figure says so."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    truth = GroundTruth.of(ds)
    curves = {run: ds.read_labels(run).reward.astype(np.float64) for run in runs}
    if truth.reward is not None:
        curves = {f"{SIM_REWARD} (ground truth)": truth.reward} | curves
    episodes = []
    for outcome, word in ((1, "success"), (0, "failed")):
        chosen = np.flatnonzero(truth.outcome == outcome)
        spread = np.unique(np.linspace(0, len(chosen) - 1, per_outcome).round().astype(int)) if len(chosen) else []
        picks = chosen[spread] if len(chosen) else []
        episodes += [(int(index), word) for index in picks]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(max(len(episodes), 1), 1, figsize=(8, 2.2 * max(len(episodes), 1)), squeeze=False)
    for ax, (index, word) in zip(axes[:, 0], episodes):
        span = slice(int(truth.starts[index]), int(truth.ends[index]))
        seconds = np.arange(span.stop - span.start) / ds.record_hz
        for name, values in curves.items():
            low, high = float(values.min()), float(values.max())
            scaled = (values[span] - low) / (high - low) if high > low else np.zeros(span.stop - span.start)
            truth_curve = name.startswith(SIM_REWARD)
            ax.plot(seconds, scaled, label=name, color="black" if truth_curve else None,
                    linestyle="--" if truth_curve else "-", linewidth=2 if truth_curve else 1.2)
        ax.set_title(f"episode {index} ({word})", fontsize=9)
        ax.set_ylabel("reward (scaled)")
    axes[-1, 0].set_xlabel("time in episode [s]")
    if episodes:
        axes[0, 0].legend(fontsize=7, loc="best",
                          title="each curve scaled to [0, 1] over the whole dataset, for display only",
                          title_fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
