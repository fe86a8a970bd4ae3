"""The `oracle` judge: preferences from the recorded sim reward, for measuring the rest of the chain only.

Convention: the frame with the higher per-frame `sim_reward` is preferred (the reward labels estimate a
per-frame reward, so the judge compares that, not return-to-go, which would favour early frames of a dense
task); equal rewards abstain. With error_rate=e (0 <= e <= 1) each answered pair is flipped with probability
e, drawn from a generator seeded by the labeler's seed, so a run is reproducible. A labeler using it sets
LabelResult.ground_truth_used, and `label list` says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_stack.errors import LabelError
from robot_stack.label.base import ABSTAIN, PREFER_FIRST, PREFER_SECOND, LabelContext
from robot_stack.label.judges.base import Judge, option

SIM_REWARD = "sim_reward"


class OracleJudge(Judge):
    name = "oracle"
    ground_truth = True

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.error_rate = option(config, "error_rate", float, 0.0)
        if not 0.0 <= self.error_rate <= 1.0:
            raise LabelError(f"error_rate={self.error_rate}: the share of oracle answers flipped must be in [0, 1]")
        self._rng: np.random.Generator | None = None

    def ask(self, pairs: np.ndarray, context: LabelContext) -> np.ndarray:
        ds = context.dataset
        if SIM_REWARD not in ds.features:
            raise LabelError(f"the oracle judge needs the recorded sim reward: {ds.path} has no {SIM_REWARD!r} "
                             "feature (record in sim, or choose another judge)")
        if self._rng is None:
            self._rng = np.random.default_rng([context.seed, 0x0AC1E])
        reward = np.asarray(ds.frames(SIM_REWARD), np.float64).reshape(ds.n_frames)
        first, second = reward[pairs[:, 0]], reward[pairs[:, 1]]
        answers = np.where(first > second, PREFER_FIRST, PREFER_SECOND)
        flip = self._rng.random(len(pairs)) < self.error_rate
        answers = np.where(flip, 1 - answers, answers)
        return np.where(first == second, ABSTAIN, answers).astype(np.int8)
