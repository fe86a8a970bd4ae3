"""CQL(H) (Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline RL", NeurIPS 2020) on SAC.

Critic: SAC's TD error plus a penalty that pushes Q down on sampled actions and up on the data's:
    y = r + gamma^k (1 - terminal) min_i Q_targ_i(s', a'),  a' ~ pi(.|s')
    penalty_i = temperature * logsumexp_j( Q_i(s, a_j) / temperature ) - E_D Q_i(s, a)
where the a_j are N uniform actions, N policy actions at s and N at s', each importance-weighted by its
sampling density (Q - log density: log 0.5^A for uniform, log pi for the policy's):
    L(Q) = sum_i [ E (Q_i(s, a) - y)^2 + alpha * penalty_i ]   (the authors' nn.MSELoss: no 1/2)
Actor, entropy temperature, critic ensemble and target are SAC's (robot_stack.learn.algorithms.sac: its options,
critic_subset, layer_norm, actor_q, apply here too):
    L(pi) = E [ alpha_ent log pi(a~|s) - min_i Q_i(s, a~) ],   L(alpha_ent) = -log alpha_ent * E[log pi + H_target]
The conservative term is multiplied by penalty_weight, 1 unless WSRL's start_online has dropped it to 0.

Options from the authors' code for hard, sparse tasks (all off by default, which is the paper's CQL(H)):
- bc_steps: for the first updates the actor is a maximum-likelihood policy of the data,
      L(pi) = E [ alpha_ent log pi(a~|s) - log pi(a|s) ],
  so the first targets use in-data actions instead of an untrained policy's.
- max_target_backup: y = r + gamma^k (1 - terminal) max_j min_i Q_targ_i(s', a'_j), a'_j ~ pi(.|s'), j = 1..N.
- clip_diff_min/max: each per-sample term (logsumexp - Q_data) is clipped before the batch mean.
- calibrated (Cal-QL, Nakamoto et al. 2023): in the penalty the policy's actions count with
  max(Q_i(s, a), R(s)), R(s) the data's discounted return-to-go from s, so Q is never pushed below the
  value of the policy that collected the data (the uniform actions are left as they are).
- lagrange_gap (CQL-Lagrange): alpha * penalty becomes alpha' * alpha * (penalty - gap), and alpha' >= 0
  rises while the penalty exceeds the gap:  L(alpha') = -alpha' * alpha * (penalty - gap).

binary_actions (ours, for grippers; not in the paper, whose tasks have none): those command elements are
open/close choices. The actor is a Bernoulli over their bounds {-1, +1} (a tanh-Gaussian in the others),
and its loss takes the expectation over their modes exactly,
    L(pi) = E_u [ sum_m pi(m|s) (alpha_ent log pi(a_u,m|s) - min_i Q_i(s, (a_u, m))) ],
so an element moves by the difference of Q between open and closed, not by dQ/da, which cannot cross
a valley between them (on Lift every CQL critic has one and a Gaussian gripper never closes:
docs/results.md). The data's commands and the uniform samples are snapped to the bound on their side
of 0 (uniform over the two bounds: still density 0.5 per element), so the critic is asked about the
policy's action space only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from robot_stack.learn.algorithms.sac import SAC, Temperature
from robot_stack.learn.networks import soft_update
from robot_stack.learn.replay import Batch


def cql_penalty(q_sampled: Tensor, log_density: Tensor, q_data: Tensor, temperature: float,
                clip_min: float | None = None, clip_max: float | None = None) -> Tensor:
    """Per critic: temperature * logsumexp((Q_sampled - log density) / temperature) - Q_data, averaged over the batch.

    q_sampled [E, B, M] (M sampled actions), log_density [B, M] (or broadcastable), q_data [E, B] -> [E].
    clip_min/clip_max clip each state's term before the mean (None: not clipped on that side).
    """
    ood = temperature * torch.logsumexp((q_sampled - log_density) / temperature, dim=-1)
    difference = ood - q_data
    if clip_min is not None or clip_max is not None:
        difference = difference.clamp(clip_min, clip_max)
    return difference.mean(dim=1)


class CQL(SAC):
    name = "cql"

    def __init__(self, spec, config, device) -> None:
        super().__init__(spec, config, device)
        c = self.config
        if c.lagrange_gap is not None:
            self.alpha_prime = Temperature().to(self.device)
            self.alpha_prime_optimizer = self.adam(self.alpha_prime.parameters(), c.alpha_prime_lr)
        # 1 while the actor is warm-started by maximum likelihood, then 0: a tensor, so a compiled step or a
        # captured CUDA graph reads it instead of branching on the step number.
        self.bc_weight = torch.ones((), device=self.device)
        self._warm_starting = True  # what bc_weight holds, so schedule() writes it only when it changes
        # What the conservative term is multiplied by: 1, until WSRL's start_online drops it to 0 (a tensor, as bc_weight).
        self.penalty_weight = torch.ones((), device=self.device)

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, Tensor]:
        c = self.config
        obs = self.encode(batch.obs)
        data_action = self.actor.snap(batch.action)  # binary elements at their bound (as is without any)
        features = obs.detach()
        alpha_ent = self.temperature().detach()
        metrics = self.actor_step(features, batch, alpha_ent) if update_actor else {}

        with torch.no_grad():
            next_obs = self.encode(batch.next_obs)
            target = self.td_target(batch, next_obs, alpha_ent)
        q = self.critic(obs, data_action)
        td_loss = ((q - target) ** 2).mean(dim=1)  # the authors' MSE, no 1/2: alpha weighs the penalty against it
        q_sampled, log_density = self.sampled_q(obs, next_obs, batch.return_to_go)
        penalty = cql_penalty(q_sampled, log_density, q, c.temperature, c.clip_diff_min, c.clip_diff_max)
        if c.lagrange_gap is None:
            conservative = c.alpha * penalty
        else:
            alpha_prime = self.alpha_prime().clamp(0.0, 1e6).detach()
            conservative = alpha_prime * c.alpha * (penalty - c.lagrange_gap)
            metrics["alpha_prime"] = alpha_prime
        critic_loss = (td_loss + self.penalty_weight * conservative).sum()
        self.critic_step(critic_loss)
        if c.lagrange_gap is not None:  # after the critic's backward: its own graph (one backward per compiled graph)
            alpha_prime_loss = -(self.penalty_weight * self.alpha_prime().clamp(0.0, 1e6) * c.alpha
                                 * (penalty.detach() - c.lagrange_gap)).mean()
            self.alpha_prime_optimizer.zero_grad(set_to_none=True)
            alpha_prime_loss.backward()
            self.alpha_prime_optimizer.step()

        soft_update(self.critic_target, self.critic, c.tau)
        return metrics | {"critic_loss": critic_loss.detach(), "td_loss": td_loss.detach().mean(),
                          "cql_penalty": penalty.detach().mean(), "alpha_entropy": alpha_ent, "q": q.detach().mean()}

    def sampled_q(self, obs: Tensor, next_obs: Tensor, return_to_go: Tensor | None) -> tuple[Tensor, Tensor]:
        """What the penalty's logsumexp sees: Q_i(s, a_j) [E, B, 3N] for, per state, N uniform actions, N policy
        actions at s and N at s' (all evaluated at s; with `calibrated`, the policy's 2N as max(Q, return_to_go [B])),
        and the log densities they are drawn with [B, 3N]. obs, next_obs: encoded features [B, D] (the critic's
        gradient flows through obs)."""
        c = self.config
        batch_size, n, dim = obs.shape[0], c.n_actions, self.action_dim
        with torch.no_grad():
            random_action = self.actor.snap(torch.rand(batch_size * n, dim, device=obs.device) * 2.0 - 1.0)
            pi_action, pi_log = self.actor.sample(obs.detach().repeat_interleave(n, dim=0))
            next_pi_action, next_pi_log = self.actor.sample(next_obs.repeat_interleave(n, dim=0))
            log_density = torch.cat([
                torch.full((batch_size, n), dim * math.log(0.5), device=obs.device),
                pi_log.view(batch_size, n), next_pi_log.view(batch_size, n)], dim=1)
        obs_n = obs.repeat_interleave(n, dim=0)
        sampled = torch.cat([random_action, pi_action, next_pi_action], dim=0)
        q_sampled = self.critic(obs_n.repeat(3, 1), sampled)  # [E, 3 * B * N], blocks of B * N
        q_sampled = q_sampled.view(-1, 3, batch_size, n).permute(0, 2, 1, 3).reshape(-1, batch_size, 3 * n)
        if c.calibrated:  # the policy's 2n actions at each state: no lower than the data's return from there
            bound = return_to_go[None, :, None]
            q_sampled = torch.cat([q_sampled[..., :n], torch.maximum(q_sampled[..., n:], bound)], -1)
        return q_sampled, log_density

    def actor_loss(self, features: Tensor, batch: Batch, alpha_ent: Tensor) -> tuple[Tensor, Tensor]:
        """SAC's, or during the bc_steps warm start the maximum likelihood of the data's actions (with the entropy term)."""
        loss, log_pi = super().actor_loss(features, batch, alpha_ent)
        if self.config.bc_steps > 0:
            bc_loss = (alpha_ent * log_pi - self.actor.log_prob(features, batch.action)).mean()
            loss = torch.lerp(loss, bc_loss, self.bc_weight)
        return loss, log_pi

    def next_value(self, next_obs: Tensor, alpha_ent: Tensor) -> Tensor:
        """SAC's, or with max_target_backup the best of n_actions policy samples at s' (and that sample's log pi)."""
        c = self.config
        if not c.max_target_backup:
            return super().next_value(next_obs, alpha_ent)
        batch_size, n = next_obs.shape[0], c.n_actions
        repeated_next = next_obs.repeat_interleave(n, dim=0)
        next_action, next_log_pi = self.actor.sample(repeated_next)
        next_q, best = self.target_q(repeated_next, next_action).view(batch_size, n).max(dim=1)
        if not c.backup_entropy:
            return next_q
        return next_q - alpha_ent * next_log_pi.view(batch_size, n).gather(1, best[:, None]).squeeze(1)

    def schedule(self, step: int, total_steps: int) -> None:
        warm_starting = step < self.config.bc_steps
        if warm_starting != self._warm_starting:  # once a run (or on resuming), not a device write every step
            self.bc_weight.fill_(float(warm_starting))
            self._warm_starting = warm_starting
