"""`success`: a success classifier on frozen embeddings or pixels, trained on the dataset itself (RoboFuME,
Yang et al. 2023); reward = P(success) of each frame in [0, 1], raw (never min-max normalised per episode).

Frame labels (config `labels`):
- `final` (default): positives are the final `final_frames` frames of each successful episode (Dataset.success,
  operator marks included), negatives every other frame of an episode with a known outcome (all frames of
  failed episodes, the earlier frames of successful ones); episodes with an unknown outcome are not used;
- the name of a per-frame flag feature (e.g. `labels=sim_success`): its value is the label of every frame.
  A feature the sim recorded is ground truth: the run says so (ground_truth_used).

Training draws positives and negatives equally often, so P(success) is the probability under equal class
priors. The decision threshold (info["threshold"], probability units) is chosen on held-out episodes: a
seeded split by episode, `holdout` of the episodes with positive frames and of those without, the model
trained on the rest; the threshold maximises F1 of the positive frames (`threshold_by=f1`, default: positives
are rare and it is their detection that matters) or balanced accuracy (`threshold_by=balanced_accuracy`),
and sits halfway between that held-out score and the next lower one. With fewer than 2 episodes holding
positives nothing can be held out: the threshold is chosen on the training episodes and info says so.

The run keeps the one model that scored all its frames (labels/<run>/model, robot_stack.label.apply scores
episodes recorded later with it): the one trained without the held-out episodes. New episodes are out of sample
for it as those were, so the threshold chosen on them speaks for new episodes too; a model refitted on every
episode would give rewards the run never held.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_stack.errors import LabelError
from robot_stack.label.base import LabelContext, LabelResult
from robot_stack.label.frame_models import (
    FrameModelLabeler,
    EMBEDDINGS,
    TrainSettings,
    episode_windows,
    frame_inputs,
    no_success_error,
    predict,
    read_options,
    save_frame_model,
    train_frame_model,
)

FINAL = "final"
THRESHOLD_BY = ("f1", "balanced_accuracy")
DEFAULTS: dict[str, Any] = {
    "input": EMBEDDINGS, "labels": FINAL, "final_frames": 5, "holdout": 0.25, "threshold_by": "f1",
    "window": 1, "stride": 1, "steps": 300, "batch": 64, "lr": 1e-3, "hidden": 256, "feature_dim": 64,
    "augment_pad": 2, "threads": 1,
}


def choose_threshold(scores: np.ndarray, positive: np.ndarray, by: str = "f1") -> tuple[float, dict[str, float]]:
    """The threshold on `scores` (float [N] in [0, 1]; a frame is called a success when score >= threshold)
    that maximises `by` over the labels `positive` (bool [N], both classes present), placed halfway between
    the best score cut and the next lower score; and precision, recall, f1, balanced_accuracy there."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order].astype(float)
    last_of_value = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])  # a cut keeps all equal scores
    true_pos = np.cumsum(hits)[last_of_value]
    called = last_of_value + 1.0
    n_pos, n_neg = hits.sum(), len(hits) - hits.sum()
    precision, recall = true_pos / called, true_pos / n_pos
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    balanced = 0.5 * (recall + (n_neg - (called - true_pos)) / n_neg)
    best = int(np.argmax(f1 if by == "f1" else balanced))
    cut = ranked[last_of_value[best]]
    lower = ranked[last_of_value[best] + 1] if last_of_value[best] + 1 < len(ranked) else 0.0
    stats = {"precision": precision[best], "recall": recall[best], "f1": f1[best], "balanced_accuracy": balanced[best]}
    return float(0.5 * (cut + lower)), {key: float(value) for key, value in stats.items()}


class SuccessLabeler(FrameModelLabeler):
    """RoboFuME-style success classifier; options (config): input (embeddings | pixels), labels (final | a
    flag feature), final_frames, holdout (fraction of episodes), threshold_by (f1 | balanced_accuracy),
    window, stride (frames), steps, batch, lr, hidden, feature_dim, augment_pad, threads
    (robot_stack.label.frame_models.TrainSettings)."""

    name = "success"
    defaults = DEFAULTS

    def label(self, context: LabelContext) -> LabelResult:
        options = read_options(self.name, context.config, DEFAULTS)
        if (options["final_frames"] < 1 or not 0 < options["holdout"] < 1 or options["threshold_by"] not in THRESHOLD_BY
                or options["window"] < 1 or options["stride"] < 1):
            raise LabelError(f"labeler 'success': final_frames, window and stride must be >= 1, holdout in (0, 1) and "
                             f"threshold_by one of {', '.join(THRESHOLD_BY)}; "
                             f"got final_frames={options['final_frames']}, "
                             f"window={options['window']}, stride={options['stride']}, holdout={options['holdout']}, "
                             f"threshold_by={options['threshold_by']}")
        ds = context.dataset
        inputs = frame_inputs(context, options["input"], self.name)
        positive, used, ground_truth = self._frame_labels(context, options)
        windows = episode_windows(context, options["window"], options["stride"])
        episode_of = ds.episode_of(np.arange(ds.n_frames))
        episodes = np.flatnonzero(np.bincount(episode_of, weights=used, minlength=ds.n_episodes) > 0)
        with_positive = np.bincount(episode_of, weights=positive & used, minlength=ds.n_episodes) > 0
        rng = np.random.default_rng(context.seed)
        held: list[int] = []
        for group in (episodes[with_positive[episodes]], episodes[~with_positive[episodes]]):
            count = min(len(group) - 1, max(1, round(options["holdout"] * len(group)))) if len(group) >= 2 else 0
            held += sorted(rng.permutation(group)[:count].tolist())
        if not with_positive[held].any():
            held = []  # too few episodes with success frames to hold one out
        train = used & ~np.isin(episode_of, held)
        settings = TrainSettings(**{key: options[key] for key in ("steps", "batch", "lr", "hidden", "feature_dim",
                                                                  "augment_pad", "threads")})
        n_pos, n_neg = int((positive & train).sum()), int((~positive & train).sum())
        if n_neg == 0:
            raise LabelError(f"labeler 'success': every frame of {ds.path} is labeled a success, so there is nothing "
                             "to tell it from; use fewer final_frames or record episodes that fail")
        context.log(f"success: training on {inputs.kind}, {n_pos} success and {n_neg} other frames; "
                    f"{len(held)} episodes held out")
        weights = np.where(positive[train], 0.5 / n_pos, 0.5 / n_neg)  # balanced batches
        model = train_frame_model(inputs, windows[train], positive[train].astype(np.float32), settings, context.seed,
                                  context.device, weights, log=context.log if context.progress else None)
        scores = predict(model, inputs, windows, context.device, threads=options["threads"])
        chosen = np.isin(episode_of, held) & used if held else train
        threshold, at_threshold = choose_threshold(scores[chosen], positive[chosen], options["threshold_by"])
        info = {"config": options, "input": inputs.source, "threshold": threshold,
                "threshold_by": options["threshold_by"],
                "threshold_on": "held-out episodes" if held else "training episodes (fewer than 2 episodes have "
                                "success frames, none could be held out)",
                "heldout_episodes": [int(e) for e in held], "at_threshold": at_threshold,
                "frames": {"success": int((positive & used).sum()), "other": int((~positive & used).sum())},
                "reward": "P(success) in [0, 1] per frame under equal class priors (raw)",
                "method": "RoboFuME-style success classifier (Yang et al. 2023)"}
        return LabelResult(scores=scores, info=info, ground_truth_used=ground_truth,
                           model=save_frame_model(model, inputs, options["window"], options["stride"], settings))

    def _frame_labels(self, context: LabelContext, options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, bool]:
        """(positive bool [n_frames], used bool [n_frames]: the frame has a label, ground truth used)."""
        ds = context.dataset
        if options["labels"] == FINAL:
            success = ds.success
            if not (success == 1).any():
                raise no_success_error(context, self.name)
            positive = np.zeros(ds.n_frames, bool)
            used = np.zeros(ds.n_frames, bool)
            for episode in np.flatnonzero(success != -1):
                span = ds.episode_slice(int(episode))
                used[span] = True
                if success[episode] == 1:
                    positive[max(span.start, span.stop - options["final_frames"]):span.stop] = True
            return positive, used, False
        flags = sorted(name for name, spec in ds.features.items() if spec.dtype == "bool" and spec.kind == "flag"
                       and not name.startswith("stale."))
        name = options["labels"]
        if name not in flags:
            others = f" or one of {', '.join(flags)}" if flags else ""
            raise LabelError(f"labeler 'success': labels={name!r} is not a per-frame flag of {ds.path}; use "
                             f"labels=final (the final frames of successful episodes){others}")
        positive = ds.frames(name).astype(bool)
        if not positive.any():
            raise LabelError(f"labeler 'success': {name} is never true in {ds.path}, so there is no success to learn; "
                             "use labels=final with episodes marked successful (robot-stack data mark DATASET "
                             "EPISODES success)")
        spec = ds.features[name]
        return positive, np.ones(ds.n_frames, bool), name.startswith("sim_") or spec.topic.startswith("/sim/")
