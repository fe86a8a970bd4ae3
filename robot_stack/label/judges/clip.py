"""The `clip` judge (local, no endpoint): prefers the frame whose CLIP image embedding is more similar to the
task text (cosine, as VLM-RM, Rocamonde et al. 2023), and abstains when the two similarities differ by less
than `margin` (default 0.01).

Embeddings are the job's (LabelContext.embeddings of the camera by the model), or computed and cached by
robot_stack.learn.clip_embed when a labeler gives none. The task text is embedded once per judge.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from robot_stack.errors import LabelError
from robot_stack.label.base import ABSTAIN, PREFER_FIRST, PREFER_SECOND, LabelContext
from robot_stack.label.judges.base import Judge, option
from robot_stack.learn.clip_embed import clip_embeddings, load_clip, parse_model, weights_identity

PROMPT = "{task}"


class ClipJudge(Judge):
    name = "clip"
    cached = True

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.margin = option(config, "margin", float, 0.01)
        self._similarity: np.ndarray | None = None

    def cache_key(self, context: LabelContext) -> dict[str, Any]:
        self._check(context)
        return {"model": context.model, "weights": weights_identity(parse_model(context.model)), "prompt": PROMPT,
                "task": context.task, "margin": self.margin, "feature": context.camera}

    def _check(self, context: LabelContext) -> None:
        if not context.model:
            raise LabelError("the clip judge needs an open_clip model: give --model (a local model folder, "
                             "ARCH:/path/checkpoint.pt, or ARCH/TAG)")
        if not context.task.strip():
            raise LabelError("the clip judge compares frames to the task sentence: give a non-empty --task")

    def ask(self, pairs: np.ndarray, context: LabelContext) -> np.ndarray:
        if self._similarity is None:
            self._similarity = self._similarities(context)
        difference = self._similarity[pairs[:, 1]] - self._similarity[pairs[:, 0]]
        answers = np.where(difference > 0, PREFER_SECOND, PREFER_FIRST)
        return np.where(np.abs(difference) < self.margin, ABSTAIN, answers).astype(np.int8)

    def _similarities(self, context: LabelContext) -> np.ndarray:
        """float32 [n_frames]: cosine of each frame's image embedding with the task text's."""
        import open_clip

        self._check(context)
        images = context.embeddings
        if images is None:
            images = clip_embeddings(context.dataset, self._feature(context), context.model, device=context.device,
                                     progress=context.progress)
        clip, _ = load_clip(context.model, context.device)
        source = parse_model(context.model)
        name = {"folder": f"local-dir:{source.path}", "hub": f"hf-hub:{source.tag}"}.get(source.kind, source.arch)
        tokens = open_clip.get_tokenizer(name)([PROMPT.format(task=context.task)]).to(context.device)
        with torch.inference_mode():
            text = F.normalize(clip.encode_text(tokens).float(), dim=-1)[0].cpu().numpy()
        return (np.asarray(images, np.float32) @ text).astype(np.float32)
