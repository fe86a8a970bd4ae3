"""CQL(H) (Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline RL", NeurIPS 2020) on SAC.

Critic: SAC's TD error plus a penalty that pushes Q down on sampled actions and up on the data's:
    y = r + gamma^k (1 - terminal) min_i Q_targ_i(s', a'),  a' ~ pi(.|s')
    penalty_i = temperature * logsumexp_j( Q_i(s, a_j) / temperature ) - E_D Q_i(s, a)
where the a_j are N uniform actions, N policy actions at s and N at s', each importance-weighted by its
sampling density (Q - log density: log 0.5^A for uniform, log pi for the policy's):
    L(Q) = sum_i [ E (Q_i(s, a) - y)^2 / 2 + alpha * penalty_i ]
Actor and entropy temperature as in SAC:
    L(pi) = E [ alpha_ent log pi(a~|s) - min_i Q_i(s, a~) ],   L(alpha_ent) = -log alpha_ent * E[log pi + H_target]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robot_stack.learn.algorithms.base import Algorithm, frozen_copy
from robot_stack.learn.networks import QEnsemble, TanhGaussianActor, soft_update
from robot_stack.learn.replay import Batch


def cql_penalty(q_sampled: Tensor, log_density: Tensor, q_data: Tensor, temperature: float) -> Tensor:
    """Per critic: temperature * logsumexp((Q_sampled - log density) / temperature) - Q_data, averaged over the batch.

    q_sampled [E, B, M] (M sampled actions), log_density [B, M] (or broadcastable), q_data [E, B] -> [E].
    """
    ood = temperature * torch.logsumexp((q_sampled - log_density) / temperature, dim=-1)
    return (ood - q_data).mean(dim=1)


class Temperature(nn.Module):
    """SAC's entropy temperature alpha_ent = exp(log_alpha), a module so it is saved and compiled with the rest."""

    def __init__(self, initial: float = 1.0) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> Tensor:
        return self.log_alpha.exp()


class CQL(Algorithm):
    name = "cql"

    def __init__(self, spec, config, device) -> None:
        super().__init__(spec, config, device)
        c = self.config
        self.actor = TanhGaussianActor(self.obs_dim, self.action_dim, self.hidden_dims).to(self.device)
        self.critic = QEnsemble(self.obs_dim, self.action_dim, self.hidden_dims, c.n_critics).to(self.device)
        self.critic_target = frozen_copy(self.critic)
        self.temperature = Temperature().to(self.device)
        self.target_entropy = -float(self.action_dim) if c.target_entropy is None else float(c.target_entropy)
        self.actor_optimizer = self.adam(self.actor.parameters(), c.actor_lr)
        self.critic_optimizer = self.adam([*self.critic.parameters(), *self.encoder.parameters()], c.critic_lr)
        self.temperature_optimizer = self.adam(self.temperature.parameters(), c.alpha_lr)

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, Tensor]:
        c = self.config
        obs = self.encode(batch.obs)
        batch_size, n, dim = batch.action.shape[0], c.n_actions, self.action_dim

        # Actor and entropy temperature (SAC), on features the critic's loss will not see twice.
        features = obs.detach()
        pi, log_pi = self.actor.sample(features)
        alpha_ent = self.temperature().detach()
        actor_loss = (alpha_ent * log_pi - self.critic(features, pi).min(dim=0).values).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        temperature_loss = -(self.temperature.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
        self.temperature_optimizer.zero_grad(set_to_none=True)
        temperature_loss.backward()
        self.temperature_optimizer.step()

        with torch.no_grad():
            next_obs = self.encode(batch.next_obs)
            next_action, next_log_pi = self.actor.sample(next_obs)
            next_q = self.critic_target(next_obs, next_action).min(dim=0).values
            if c.backup_entropy:
                next_q = next_q - alpha_ent * next_log_pi
            target = batch.reward + batch.discount * (1.0 - batch.terminal) * next_q
            # N actions per state: uniform in [-1, 1]^A, and the policy's at s and at s' (evaluated at s).
            repeated_obs = features.repeat_interleave(n, dim=0)
            repeated_next = next_obs.repeat_interleave(n, dim=0)
            random_action = torch.rand(batch_size * n, dim, device=obs.device) * 2.0 - 1.0
            pi_action, pi_log = self.actor.sample(repeated_obs)
            next_pi_action, next_pi_log = self.actor.sample(repeated_next)
            log_density = torch.cat([
                torch.full((batch_size, n), dim * math.log(0.5), device=obs.device),
                pi_log.view(batch_size, n), next_pi_log.view(batch_size, n)], dim=1)

        q = self.critic(obs, batch.action)
        td_loss = 0.5 * ((q - target) ** 2).mean(dim=1)
        obs_n = obs.repeat_interleave(n, dim=0)
        sampled = torch.cat([random_action, pi_action, next_pi_action], dim=0)
        q_sampled = self.critic(obs_n.repeat(3, 1), sampled)  # [E, 3 * B * N], blocks of B * N
        q_sampled = q_sampled.view(-1, 3, batch_size, n).permute(0, 2, 1, 3).reshape(-1, batch_size, 3 * n)
        penalty = cql_penalty(q_sampled, log_density, q, c.temperature)
        critic_loss = (td_loss + c.alpha * penalty).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        soft_update(self.critic_target, self.critic, c.tau)
        return {"critic_loss": critic_loss.detach(), "td_loss": td_loss.detach().mean(),
                "cql_penalty": penalty.detach().mean(), "actor_loss": actor_loss.detach(),
                "alpha_entropy": alpha_ent, "q": q.detach().mean()}
