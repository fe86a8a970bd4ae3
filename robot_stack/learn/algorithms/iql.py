"""IQL (Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022).

Never queries Q on actions outside the dataset:
    L(V)  = E L2^tau( min_i Q_targ_i(s, a) - V(s) ),     L2^tau(u) = |tau - 1(u < 0)| u^2   (expectile tau)
    L(Q)  = mean_i E ( Q_i(s, a) - (r + gamma^k (1 - terminal) V(s')) )^2
    L(pi) = -E exp(beta (min_i Q_targ_i(s, a) - V(s))) log pi(a | s),   the weight clipped at max_weight
then Q_targ <- (1 - tau) Q_targ + tau Q. The actor's learning rate decays with a cosine schedule.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from robot_stack.learn.algorithms.base import Algorithm, frozen_copy, set_lr
from robot_stack.learn.networks import MLP, GaussianActor, QEnsemble, soft_update
from robot_stack.learn.replay import Batch


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """|tau - 1(u < 0)| u^2 elementwise, u = diff = target - prediction."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff**2


def awr_weights(advantage: Tensor, beta: float, max_weight: float) -> Tensor:
    """exp(beta * A), clipped at max_weight (advantage-weighted regression's weights)."""
    return torch.exp(beta * advantage).clamp(max=max_weight)


class IQL(Algorithm):
    name = "iql"

    def __init__(self, spec, config, device) -> None:
        super().__init__(spec, config, device)
        c = self.config
        self.actor = GaussianActor(self.obs_dim, self.action_dim, self.hidden_dims, c.dropout).to(self.device)
        self.critic = QEnsemble(self.obs_dim, self.action_dim, self.hidden_dims, c.n_critics).to(self.device)
        self.critic_target = frozen_copy(self.critic)
        self.value = MLP(self.obs_dim, 1, self.hidden_dims).to(self.device)
        self.actor_optimizer = self.adam(self.actor.parameters(), c.actor_lr)
        self.critic_optimizer = self.adam([*self.critic.parameters(), *self.encoder.parameters()], c.critic_lr)
        self.value_optimizer = self.adam(self.value.parameters(), c.value_lr)

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, Tensor]:
        c = self.config
        obs = self.encode(batch.obs)
        with torch.no_grad():
            next_obs = self.encode(batch.next_obs)
            target_q = self.critic_target(obs, batch.action).min(dim=0).values
            next_v = self.value(next_obs).squeeze(-1)

        # Value: an upper expectile of Q over the dataset's actions.
        v = self.value(obs.detach()).squeeze(-1)
        advantage = target_q - v
        value_loss = expectile_loss(advantage, c.expectile).mean()
        self.value_optimizer.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_optimizer.step()

        # Q: regress onto r + gamma^k V(s').
        target = batch.reward + batch.discount * (1.0 - batch.terminal) * next_v
        q = self.critic(obs, batch.action)
        critic_loss = ((q - target) ** 2).mean(dim=1).mean()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        # Actor: advantage-weighted log-likelihood of the dataset's actions.
        weights = awr_weights(advantage.detach(), c.beta, c.max_weight)
        actor_loss = -(weights * self.actor.log_prob(obs.detach(), batch.action)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()

        soft_update(self.critic_target, self.critic, c.tau)
        return {"value_loss": value_loss.detach(), "critic_loss": critic_loss.detach(),
                "actor_loss": actor_loss.detach(), "q": q.detach().mean(), "v": v.detach().mean(),
                "advantage": advantage.detach().mean()}

    @torch.no_grad()
    def explore(self, obs: dict[str, Tensor]) -> Tensor:
        """A draw of the actor's Gaussian, clipped to [-1, 1]."""
        return self.actor.sample(self.encode(obs, augment=False))

    def schedule(self, step: int, total_steps: int) -> None:
        if self.config.actor_cosine_decay:
            set_lr(self.actor_optimizer, self.config.actor_lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps)))
