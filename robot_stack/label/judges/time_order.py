"""The `time` judge (Rank2Reward, Yang et al. 2024): free preferences from time order.

Within one successful episode a later frame is closer to achieving the task than an earlier one, so the pair
(i, j) of the same successful episode is answered PREFER_SECOND when j > i and PREFER_FIRST when j < i.
Pairs across episodes, within failed or unmarked episodes, or of one frame twice abstain: time says nothing
there. Its pairs are sampled within successful episodes, so mixed with another judge (mix=time+chat) it
spends no queries on pairs it cannot answer.
"""

from __future__ import annotations

import numpy as np

from robot_stack.errors import LabelError
from robot_stack.label.base import ABSTAIN, PREFER_FIRST, PREFER_SECOND, LabelContext
from robot_stack.label.judges.base import Judge


class TimeOrderJudge(Judge):
    name = "time"

    def ask(self, pairs: np.ndarray, context: LabelContext) -> np.ndarray:
        ds = context.dataset
        episode = ds.episode_of(pairs.ravel()).reshape(pairs.shape)
        good = (episode[:, 0] == episode[:, 1]) & (ds.success[episode[:, 0]] == 1) & (pairs[:, 0] != pairs[:, 1])
        later = np.where(pairs[:, 1] > pairs[:, 0], PREFER_SECOND, PREFER_FIRST)
        return np.where(good, later, ABSTAIN).astype(np.int8)

    def sample_pairs(self, context: LabelContext, n: int, rng: np.random.Generator) -> np.ndarray:
        """n pairs of two distinct frames of one successful episode (longer episodes drawn more often)."""
        ds = context.dataset
        lengths = ds.episode_ends - ds.episode_starts
        usable = np.flatnonzero((ds.success == 1) & (lengths >= 2))
        if len(usable) == 0:
            raise LabelError(f"the time judge needs successful episodes of 2 frames or more: {ds.path} has none "
                             "(mark outcomes with `robot-stack data mark`, or choose another judge)")
        episode = rng.choice(usable, n, p=lengths[usable] / lengths[usable].sum())
        start, length = ds.episode_starts[episode], lengths[episode]
        first = (rng.random(n) * length).astype(np.int64)
        second = (first + 1 + (rng.random(n) * (length - 1)).astype(np.int64)) % length
        return np.stack([start + first, start + second], 1).astype(np.int64)
