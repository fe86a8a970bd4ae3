"""WSRL (Zhou, Peng, Li, Levine & Kumar, "Efficient Online Reinforcement Learning Fine-Tuning Need Not Retain Offline
Data", 2024): Cal-QL pre-training, then SAC without the offline data.

Offline: Cal-QL (robot_stack.learn.algorithms.cql, calibrated) on a LayerNorm ensemble of 10 critics, the target a
min over a random pair of them, the actor on their mean. At the switch (start_online) the conservative penalty goes
to 0: from then on each update is SAC's on the same networks and optimizers,
    L(Q) = sum_i E (Q_i(s, a) - y)^2,   y = r + gamma^k (1 - terminal) min_{i in M} Q_targ_i(s', a'),
while the trainer drops the offline data (online_ratio 1) and first fills the online buffer with warmup_steps
environment steps of the frozen pre-trained policy (the paper's warm start, which keeps Q from collapsing when the
offline data goes).
"""

from __future__ import annotations

from torch import Tensor

from robot_stack.learn.algorithms.cql import CQL
from robot_stack.learn.algorithms.sac import SAC
from robot_stack.learn.replay import Batch


class WSRL(CQL):
    name = "wsrl"

    def __init__(self, spec, config, device) -> None:
        super().__init__(spec, config, device)
        self.online = False

    def start_online(self) -> None:
        """Drop the conservative penalty: penalty_weight 0, which a step compiled or captured before the switch
        reads; a step built after it runs SAC's update, which computes the same without sampling for a penalty
        it would multiply by 0 (about 6x faster with 10 critics on the CPU)."""
        self.penalty_weight.fill_(0.0)
        self.online = True

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, Tensor]:
        if self.online:  # constant through a phase: torch.compile guards on it, a captured graph keeps its path
            return SAC.update(self, batch, update_actor)
        return super().update(batch, update_actor)
