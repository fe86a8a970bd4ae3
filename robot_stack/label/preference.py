"""The `preference` labeler (RL-VLM-F, Wang et al. 2024): sample frame pairs, ask a judge which frame is closer
to achieving the task, fit a Bradley-Terry reward-model ensemble to the answers (robot_stack.label.bradley_terry)
and label every committed frame with the ensemble mean.

Options (LabelContext.config, from --set KEY=VALUE):
    judge=time|oracle|clip|chat|logprob   one judge (default time: needs no model and no ground truth)
    mix=time+chat                         several judges, each asked an equal share of the pairs (overrides judge)
    pairs=N        pairs sampled in all (default 2000); half within one episode, half across episodes, except
                   the time judge's, which are within successful episodes (robot_stack.label.judges.time_order)
    budget=N       at most N pairs put to each judge in this run (cache hits free); the rest abstain
    ensemble=K     reward networks (default 3); steps=N gradient steps each (default 400)
    pixels=true    fit a small CNN on the camera frames instead of an MLP on the frozen embeddings
    threads=N      torch CPU threads while fitting (default 1: faster for models this small, as for progress and
                   success; 2 threads took 4x longer on a loaded 2-core machine, 42.7 s vs 10.1 s)
    judges' own:   error_rate (oracle), margin (clip, logprob), endpoint, model_name, api_key_env, timeout,
                   retries, backoff, max_tokens, temperature (chat, logprob)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_stack.errors import LabelError
from robot_stack.label.base import ABSTAIN, LabelContext, LabelResult
from robot_stack.label.bradley_terry import fit_bradley_terry
from robot_stack.label.frame_models import cpu_threads
from robot_stack.label.judges.base import build_judge, option, stats_dict

OPTIONS = {"judge", "mix", "pairs", "budget", "ensemble", "steps", "pixels", "threads", "error_rate", "margin", "endpoint",
           "model_name", "api_key_env", "timeout", "retries", "backoff", "max_tokens", "temperature"}


class PreferenceLabeler:
    name = "preference"
    needs_images = True
    needs_embeddings = True  # the reward model's default input; requirements(config) says it per run

    @classmethod
    def requirements(cls, config: dict[str, Any]) -> tuple[bool, bool]:
        """(needs_images, needs_embeddings) for a run with these options: the camera always (the judges and the
        reward model look at its frames); CLIP embeddings unless pixels=true and no clip judge is asked."""
        return True, not option(config, "pixels", bool, False) or "clip" in judge_names(config)

    def label(self, context: LabelContext) -> LabelResult:
        config = dict(context.config)
        names = judge_names(config)
        n_pairs = option(config, "pairs", int, 2000)
        ensemble = option(config, "ensemble", int, 3)
        steps = option(config, "steps", int, 400)
        on_pixels = option(config, "pixels", bool, False)
        threads = option(config, "threads", int, 1)
        if n_pairs < len(names) or ensemble < 1 or steps < 1 or threads < 1:
            raise LabelError(f"pairs={n_pairs}, ensemble={ensemble}, steps={steps}, threads={threads}: each must be at "
                             "least 1 (pairs at least one per judge)")
        judges = [build_judge(name, config) for name in names]
        rng = np.random.default_rng([context.seed, 0x9A1F])
        pairs, answers = [], []
        for i, judge in enumerate(judges):
            share = n_pairs // len(judges) + (i < n_pairs % len(judges))
            asked = judge.sample_pairs(context, share, rng)
            context.log(f"preference: asking the {judge.name} judge {len(asked)} pairs")
            pairs.append(asked)
            answers.append(judge.prefer(asked, context))
        pairs, answers = np.concatenate(pairs), np.concatenate(answers)
        context.log(f"preference: {int((answers != ABSTAIN).sum())} of {len(pairs)} pairs answered; fitting "
                    f"{ensemble} reward models")
        inputs, read = self._inputs(context, on_pixels)
        with cpu_threads(threads, context.device):
            scores = fit_bradley_terry(inputs, pairs, answers, ensemble=ensemble, steps=steps, seed=context.seed,
                                       device=context.device, read=read)
        stats = {judge.name: stats_dict(judge) | {
            key: getattr(judge, key) for key in ("malformed", "no_logprobs", "error_rate") if hasattr(judge, key)}
            for judge in judges}
        info = {
            "judge": "+".join(judge.name for judge in judges), "pairs_asked": int(len(pairs)),
            "answered": int((answers != ABSTAIN).sum()), "abstained": int((answers == ABSTAIN).sum()),
            "cache_hits": sum(judge.stats.cache_hits for judge in judges),
            "calls": sum(judge.stats.calls for judge in judges), "budget": option(config, "budget", int, None),
            "ensemble": ensemble, "steps": steps, "threads": threads, "input": "pixels" if on_pixels else "embeddings",
            "judges": stats, "config": config,
        }
        return LabelResult(scores, info, ground_truth_used=any(judge.ground_truth for judge in judges))

    @staticmethod
    def _inputs(context: LabelContext, on_pixels: bool) -> tuple[Any, Any]:
        """(inputs, read) for fit_bradley_terry: embeddings, or the camera's frames read by index."""
        ds = context.dataset
        if on_pixels:
            if not context.camera or context.camera not in ds.features or not ds.features[context.camera].is_image:
                images = [name for name, spec in ds.features.items() if spec.is_image]
                raise LabelError(f"pixels=true trains on camera frames: choose a camera from {images} (--camera)")

            def read(index: np.ndarray) -> np.ndarray:
                """uint8 [len(index), H, W, 3]; a contiguous run of frames is read at once."""
                lo, hi = int(index[0]), int(index[-1]) + 1
                if hi - lo == len(index) and (np.diff(index) == 1).all():
                    return ds.frames(context.camera, lo, hi)
                return np.stack([ds.frames(context.camera, int(i), int(i) + 1)[0] for i in index])

            return range(ds.n_frames), read
        if context.embeddings is None:
            raise LabelError("the preference labeler fits its reward model on frame embeddings: give --model (an "
                             "open_clip model) so the job embeds the frames, or set pixels=true")
        if len(context.embeddings) != ds.n_frames:
            raise LabelError(f"embeddings have {len(context.embeddings)} rows for {ds.n_frames} committed frames")
        return context.embeddings, None


def judge_names(config: dict[str, Any]) -> list[str]:
    """The judges a run asks (mix=a+b, else judge=NAME, else time); LabelError for an unknown option."""
    unknown = sorted(set(config) - OPTIONS)
    if unknown:
        raise LabelError(f"the preference labeler has no option {', '.join(unknown)}: it takes {sorted(OPTIONS)}")
    return [name.strip() for name in str(config.get("mix") or config.get("judge") or "time").split("+")]
