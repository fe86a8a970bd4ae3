"""The `logprob` judge (TOPReward-style): the chat endpoint asked one closed question per pair,
"Is Image 2 closer to achieving <task> than Image 1? Answer True or False.", with logprobs: true,
top_logprobs: 5, max_tokens: 1, and scored from the next token's top log-probabilities.

Convention: P(True) and P(False) are the summed probabilities of the top tokens that read "true" / "false"
(case, spaces and a tokenizer's leading-space mark ignored); p = P(True) / (P(True) + P(False)). p > 0.5 + margin prefers the
second frame (PREFER_SECOND), p < 0.5 - margin the first (PREFER_FIRST), otherwise abstain (margin default
0.1). When the server returns no log-probabilities (or neither word is among the top tokens) the reply text
is used instead: exactly "True" -> second, "False" -> first, anything else abstains (stats: malformed).
Endpoint options as the chat judge's (robot_stack.label.judges.chat).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from robot_stack.label.base import ABSTAIN, PREFER_FIRST, PREFER_SECOND, LabelContext
from robot_stack.label.judges.base import Judge, option
from robot_stack.label.judges.chat import ChatEndpoint, pair_message, reply_text

QUESTION = "Is Image 2 closer to achieving the goal than Image 1? The goal: {task}\nAnswer True or False."
DECODING = {"temperature": 0.0, "max_tokens": 1, "logprobs": True, "top_logprobs": 5}


def true_false(response: dict[str, Any]) -> tuple[float, float] | None:
    """(P(True), P(False)) from the first generated token's top log-probabilities, or None when absent."""
    try:
        top = response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        return None
    totals = {"true": 0.0, "false": 0.0}
    for entry in top or []:
        word = str(entry.get("token", "")).strip().lstrip("\u0120\u2581").lower()  # BPE / SentencePiece space marks
        if word in totals:
            totals[word] += math.exp(float(entry["logprob"]))
    return (totals["true"], totals["false"]) if totals["true"] + totals["false"] > 0 else None


class LogprobJudge(Judge):
    name = "logprob"
    cached = True

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.endpoint = ChatEndpoint(config)
        self.margin = option(config, "margin", float, 0.1)
        self.malformed = 0
        self.no_logprobs = 0  # answers read from the text because the server gave no log-probabilities

    def cache_key(self, context: LabelContext) -> dict[str, Any]:
        return {"model": self.endpoint.model_name, "prompt": QUESTION, "task": context.task, "decoding": DECODING,
                "margin": self.margin, "feature": self._feature(context)}

    def ask(self, pairs: np.ndarray, context: LabelContext) -> np.ndarray:
        feature = self._feature(context)
        answers = np.full(len(pairs), ABSTAIN, np.int8)
        for i, (a, b) in enumerate(pairs):
            response = self.endpoint.complete([pair_message(
                context.dataset.frames(feature, a, a + 1)[0], context.dataset.frames(feature, b, b + 1)[0],
                QUESTION.format(task=context.task))], **DECODING)
            probabilities = true_false(response)
            if probabilities is not None:
                p_true = probabilities[0] / sum(probabilities)
                if abs(p_true - 0.5) > self.margin:
                    answers[i] = PREFER_SECOND if p_true > 0.5 else PREFER_FIRST
                continue
            self.no_logprobs += 1
            text = (reply_text(response) or "").strip().rstrip(".").strip().lower()
            if text in ("true", "false"):
                answers[i] = PREFER_SECOND if text == "true" else PREFER_FIRST
            else:
                self.malformed += 1
        return answers
