"""TD3+BC (Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021).

Critic (TD3, every step), with target policy smoothing and the clipped double-Q target:
    a' = clip(pi_targ(s') + clip(eps, -c, c), -1, 1),   eps ~ N(0, sigma^2)
    y  = r + gamma^k (1 - terminal) min_i Q_targ_i(s', a')
    L(Q) = sum_i E (Q_i(s, a) - y)^2
Actor (every policy_freq steps), Q normalised so that alpha sets the RL/BC balance whatever Q's scale:
    lambda = alpha / E|Q_1(s, pi(s))|   (no gradient through lambda)
    L(pi)  = -lambda E Q_1(s, pi(s)) + E mean_j (pi(s)_j - a_j)^2   (F.mse_loss, as in the authors' code)
then the targets move: theta_targ <- (1 - tau) theta_targ + tau theta.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robot_stack.learn.algorithms.base import Algorithm, frozen_copy, with_exploration_noise
from robot_stack.learn.networks import DeterministicActor, QEnsemble, soft_update
from robot_stack.learn.replay import Batch


def td3bc_lambda(q: Tensor, alpha: float) -> Tensor:
    """lambda = alpha / mean|Q| over the batch, detached (the paper's normalisation)."""
    return alpha / q.abs().mean().detach()


class TD3BC(Algorithm):
    name = "td3bc"

    def __init__(self, spec, config, device) -> None:
        super().__init__(spec, config, device)
        c = self.config
        self.actor_every = c.policy_freq
        self.actor = DeterministicActor(self.obs_dim, self.action_dim, self.hidden_dims).to(self.device)
        self.critic = QEnsemble(self.obs_dim, self.action_dim, self.hidden_dims, c.n_critics).to(self.device)
        self.actor_target, self.critic_target = frozen_copy(self.actor), frozen_copy(self.critic)
        self.actor_optimizer = self.adam(self.actor.parameters(), c.actor_lr)
        self.critic_optimizer = self.adam([*self.critic.parameters(), *self.encoder.parameters()], c.critic_lr)

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, Tensor]:
        c = self.config
        obs = self.encode(batch.obs)
        with torch.no_grad():
            next_obs = self.encode(batch.next_obs)
            noise = (torch.randn_like(batch.action) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            next_action = (self.actor_target(next_obs) + noise).clamp(-1.0, 1.0)
            next_q = self.critic_target(next_obs, next_action).min(dim=0).values
            target = batch.reward + batch.discount * (1.0 - batch.terminal) * next_q

        q = self.critic(obs, batch.action)
        critic_loss = ((q - target) ** 2).mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        metrics = {"critic_loss": critic_loss.detach(), "q": q.detach().mean()}
        if not update_actor:
            return metrics

        obs = obs.detach()
        pi = self.actor(obs)
        q_pi = self.critic(obs, pi, members=1)[0]  # only Q_1 enters the actor's loss
        lmbda = td3bc_lambda(q_pi, c.alpha)
        actor_loss = -lmbda * q_pi.mean() + ((pi - batch.action) ** 2).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        soft_update(self.critic_target, self.critic, c.tau)
        soft_update(self.actor_target, self.actor, c.tau)
        return metrics | {"actor_loss": actor_loss.detach(), "lambda": lmbda.detach()}

    @torch.no_grad()
    def explore(self, obs: dict[str, Tensor]) -> Tensor:
        return with_exploration_noise(self.act(obs))
