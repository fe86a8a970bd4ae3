"""`clip`: VLM-RM (Rocamonde et al. 2023, "Vision-Language Models are Zero-Shot Reward Models for RL") —
each frame's reward is how close its CLIP image embedding is to the task text's, measured along the direction
from a baseline prompt to the task (the goal–baseline projection).

With x the frame's L2-normalised image embedding, g the task text's and b the baseline prompt's (both
L2-normalised), d = (g - b) / |g - b| and P = alpha d d^T + (1 - alpha) I:

    score = 1 - 1/2 |P (x - g)|^2

alpha = 0 gives P = I and score = 1 - 1/2 |x - g|^2 = x . g, the plain cosine similarity; alpha = 1 keeps only
the component of x - g along d (how far the frame is from the goal in the baseline-to-goal direction). Higher
is closer to the task. These are raw scores: the job calibrates them with one affine map over the whole dataset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from robot_stack.errors import LabelError, LearnError
from robot_stack.label.base import LabelContext, LabelResult
from robot_stack.learn import clip_embed

DEFAULTS: dict[str, Any] = {
    "baseline": "a robot arm",  # VLM-RM's baseline: what every frame shows, whether or not the task is done
    "alpha": 0.5,
    "template": "{task}",  # the goal prompt; {task} is the task sentence
}


def vlm_rm_scores(images: np.ndarray, goal: np.ndarray, baseline: np.ndarray, alpha: float) -> np.ndarray:
    """VLM-RM scores float64 [N] of unit image embeddings [N, E] for unit goal and baseline text embeddings [E]
    (the module docstring gives the formula)."""
    offset = images.astype(np.float64) - goal
    if alpha == 0:
        projected = offset
    else:
        direction = goal.astype(np.float64) - baseline
        norm = np.linalg.norm(direction)
        if norm < 1e-6:
            raise LabelError("clip labeler: the baseline prompt embeds like the task (no goal–baseline direction): "
                             "choose another baseline with --set baseline=..., or --set alpha=0")
        direction /= norm
        projected = alpha * np.outer(offset @ direction, direction) + (1 - alpha) * offset
    return 1 - 0.5 * np.sum(projected**2, axis=1)


def encode_texts(model: str, texts: list[str], device: str = "cpu") -> np.ndarray:
    """L2-normalised CLIP text embeddings float32 [len(texts), E] by the text tower of `model` (the model
    string the image embeddings were made with, robot_stack.learn.clip_embed.MODEL_FORMS)."""
    import open_clip

    source = clip_embed.parse_model(model)
    clip, _ = clip_embed.load_clip(model, device)
    tokenizer_name = {"folder": f"local-dir:{source.path}", "hub": f"hf-hub:{source.tag}"}.get(source.kind, source.arch)
    try:
        tokenizer = open_clip.get_tokenizer(tokenizer_name)
    except (OSError, ValueError, RuntimeError) as error:
        raise LearnError(f"CLIP model {model!r}: its text tokenizer cannot be loaded ({error})") from None
    with torch.inference_mode():
        tokens = tokenizer(texts).to(device)
        return F.normalize(clip.encode_text(tokens).float(), dim=-1).cpu().numpy()


class ClipLabeler:
    """VLM-RM rewards from frozen CLIP embeddings. Options (--set): baseline (prompt), alpha (0..1; 0 = plain
    cosine), template (goal prompt with {task})."""

    name = "clip"
    needs_images = True
    needs_embeddings = True

    def label(self, context: LabelContext) -> LabelResult:
        config = options(context.config)
        goal_prompt = config["template"].format(task=context.task)
        text = encode_texts(context.model, [goal_prompt, config["baseline"]], context.device)
        scores = vlm_rm_scores(context.embeddings, text[0], text[1], config["alpha"])
        context.log(f"clip: scored {len(scores)} frames against {goal_prompt!r} (baseline {config['baseline']!r}, "
                    f"alpha {config['alpha']})")
        return LabelResult(scores.astype(np.float32), {"prompts": {"goal": goal_prompt, "baseline": config["baseline"]},
                                                       "config": config})


def options(config: dict[str, Any]) -> dict[str, Any]:
    """DEFAULTS updated by `config`, checked: LabelError naming the option that cannot be used."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise LabelError(f"clip labeler has no option {unknown[0]!r}: its options are {', '.join(DEFAULTS)}")
    merged = DEFAULTS | config
    try:
        alpha = float(merged["alpha"])
    except (TypeError, ValueError):
        alpha = float("nan")
    if not 0 <= alpha <= 1:
        raise LabelError(f"clip labeler: alpha must be a number from 0 to 1 (0 = plain cosine), got {merged['alpha']!r}")
    template, baseline = str(merged["template"]), str(merged["baseline"])
    if "{task}" not in template:
        raise LabelError(f"clip labeler: template {template!r} must contain {{task}}, where the task sentence goes")
    try:
        template.format(task="")
    except (KeyError, IndexError, ValueError):
        raise LabelError(f"clip labeler: template {template!r} may hold only {{task}} in braces") from None
    if not baseline.strip():
        raise LabelError("clip labeler: the baseline prompt is empty: give one with --set baseline='a robot arm'")
    return {"baseline": baseline, "alpha": alpha, "template": template}
