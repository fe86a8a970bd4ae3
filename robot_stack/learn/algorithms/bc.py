"""Behaviour cloning: the deterministic actor regressed onto the dataset's actions.

    L(pi) = E_(s,a)~D || pi(s) - a ||^2

The baseline offline RL must beat: it copies every behaviour in the data, good and bad alike.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robot_stack.learn.algorithms.base import Algorithm, with_exploration_noise
from robot_stack.learn.networks import DeterministicActor
from robot_stack.learn.replay import Batch


class BC(Algorithm):
    name = "bc"

    def __init__(self, spec, config, device) -> None:
        super().__init__(spec, config, device)
        self.actor = DeterministicActor(self.obs_dim, self.action_dim, self.hidden_dims).to(self.device)
        self.actor_optimizer = self.adam([*self.actor.parameters(), *self.encoder.parameters()], self.config.actor_lr)

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, Tensor]:
        obs = self.encode(batch.obs)
        actor_loss = ((self.actor(obs) - batch.action) ** 2).sum(-1).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        return {"actor_loss": actor_loss.detach()}

    @torch.no_grad()
    def explore(self, obs: dict[str, Tensor]) -> Tensor:
        return with_exploration_noise(self.act(obs))
