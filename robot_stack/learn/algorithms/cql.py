"""CQL(H) (Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline RL", NeurIPS 2020) on SAC.

Critic: SAC's TD error plus a penalty that pushes Q down on sampled actions and up on the data's:
    y = r + gamma^k (1 - terminal) min_i Q_targ_i(s', a'),  a' ~ pi(.|s')
    penalty_i = temperature * logsumexp_j( Q_i(s, a_j) / temperature ) - E_D Q_i(s, a)
where the a_j are N uniform actions, N policy actions at s and N at s', each importance-weighted by its
sampling density (Q - log density: log 0.5^A for uniform, log pi for the policy's):
    L(Q) = sum_i [ E (Q_i(s, a) - y)^2 + alpha * penalty_i ]   (the authors' nn.MSELoss: no 1/2)
Actor and entropy temperature as in SAC:
    L(pi) = E [ alpha_ent log pi(a~|s) - min_i Q_i(s, a~) ],   L(alpha_ent) = -log alpha_ent * E[log pi + H_target]

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
from torch import Tensor, nn

from robot_stack.errors import LearnError
from robot_stack.learn.algorithms.base import Algorithm, frozen_copy
from robot_stack.learn.networks import QEnsemble, TanhGaussianActor, soft_update
from robot_stack.learn.observations import ObservationSpec
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


class Temperature(nn.Module):
    """A positive weight exp(log_alpha) learned by gradient: SAC's entropy temperature, CQL-Lagrange's alpha'.

    A module so it is saved and compiled with the rest."""

    def __init__(self, initial: float = 1.0) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial)))

    def forward(self) -> Tensor:
        return self.log_alpha.exp()


def binary_indices(elements: list[str | int], spec: ObservationSpec) -> list[int]:
    """Indices of the command elements named (robot command_spec names) or numbered in `elements`."""
    indices = []
    for element in elements:
        key = str(element)
        if key in spec.action_names:
            indices.append(spec.action_names.index(key))
        elif key.isdigit() and int(key) < spec.action_dim:
            indices.append(int(key))
        else:
            known = (f"its elements are {spec.action_names}" if spec.action_names
                     else f"the dataset names none of its {spec.action_dim} elements: give indices 0..{spec.action_dim - 1}")
            raise LearnError(f"algorithm.binary_actions: {key!r} is not an element of the command ({known})")
    if len(set(indices)) != len(indices):
        raise LearnError(f"algorithm.binary_actions {elements} names an element twice")
    return indices


class CQL(Algorithm):
    name = "cql"

    def __init__(self, spec, config, device) -> None:
        super().__init__(spec, config, device)
        c = self.config
        binary = binary_indices(c.binary_actions, self.spec)
        self.actor = TanhGaussianActor(self.obs_dim, self.action_dim, self.hidden_dims, binary=binary).to(self.device)
        self.critic = QEnsemble(self.obs_dim, self.action_dim, self.hidden_dims, c.n_critics).to(self.device)
        self.critic_target = frozen_copy(self.critic)
        self.temperature = Temperature().to(self.device)
        # SAC's -dim(A), over the Gaussian elements (a Bernoulli's entropy is within [0, log 2] anyway).
        self.target_entropy = -float(self.action_dim - len(binary)) if c.target_entropy is None else float(c.target_entropy)
        self.actor_optimizer = self.adam(self.actor.parameters(), c.actor_lr)
        self.critic_optimizer = self.adam([*self.critic.parameters(), *self.encoder.parameters()], c.critic_lr)
        self.temperature_optimizer = self.adam(self.temperature.parameters(), c.alpha_lr)
        if c.lagrange_gap is not None:
            self.alpha_prime = Temperature().to(self.device)
            self.alpha_prime_optimizer = self.adam(self.alpha_prime.parameters(), c.alpha_prime_lr)
        # 1 while the actor is warm-started by maximum likelihood, then 0: a tensor, so a compiled step or a
        # captured CUDA graph reads it instead of branching on the step number.
        self.bc_weight = torch.ones((), device=self.device)
        self._warm_starting = True  # what bc_weight holds, so schedule() writes it only when it changes

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, Tensor]:
        c = self.config
        obs = self.encode(batch.obs)
        data_action = self.actor.snap(batch.action)  # binary elements at their bound (as is without any)
        batch_size, n, dim = batch.action.shape[0], c.n_actions, self.action_dim

        # Actor and entropy temperature (SAC), on features the critic's loss will not see twice; exact
        # expectation over the modes of the binary elements (one mode, probability 1, without any).
        features = obs.detach()
        pi, log_pis, mode_probability = self.actor.sample_modes(features)  # [M, B, A], [M, B], [M, B]
        modes = pi.shape[0]
        every_mode = features.expand(modes, *features.shape).reshape(modes * batch_size, -1)  # a view for one mode
        q_pi = self.critic(every_mode, pi.reshape(modes * batch_size, dim)).min(dim=0).values
        alpha_ent = self.temperature().detach()
        actor_loss = (mode_probability * (alpha_ent * log_pis - q_pi.view(modes, batch_size))).sum(0).mean()
        log_pi = (mode_probability * log_pis).sum(0)  # E_m log pi: minus the policy's entropy estimate
        if c.bc_steps > 0:
            bc_loss = (alpha_ent * log_pi - self.actor.log_prob(features, batch.action)).mean()
            actor_loss = torch.lerp(actor_loss, bc_loss, self.bc_weight)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        temperature_loss = -(self.temperature.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
        self.temperature_optimizer.zero_grad(set_to_none=True)
        temperature_loss.backward()
        self.temperature_optimizer.step()

        with torch.no_grad():
            next_obs = self.encode(batch.next_obs)
            repeated_next = next_obs.repeat_interleave(n, dim=0)
            if c.max_target_backup:
                next_action, next_log_pi = self.actor.sample(repeated_next)
                next_q = self.critic_target(repeated_next, next_action).min(dim=0).values.view(batch_size, n)
                next_q, best = next_q.max(dim=1)
                next_log_pi = next_log_pi.view(batch_size, n).gather(1, best[:, None]).squeeze(1)
            else:
                next_action, next_log_pi = self.actor.sample(next_obs)
                next_q = self.critic_target(next_obs, next_action).min(dim=0).values
            if c.backup_entropy:
                next_q = next_q - alpha_ent * next_log_pi
            target = batch.reward + batch.discount * (1.0 - batch.terminal) * next_q
            # N actions per state: uniform in [-1, 1]^A, and the policy's at s and at s' (evaluated at s).
            repeated_obs = features.repeat_interleave(n, dim=0)
            random_action = self.actor.snap(torch.rand(batch_size * n, dim, device=obs.device) * 2.0 - 1.0)
            pi_action, pi_log = self.actor.sample(repeated_obs)
            next_pi_action, next_pi_log = self.actor.sample(repeated_next)
            log_density = torch.cat([
                torch.full((batch_size, n), dim * math.log(0.5), device=obs.device),
                pi_log.view(batch_size, n), next_pi_log.view(batch_size, n)], dim=1)

        q = self.critic(obs, data_action)
        td_loss = ((q - target) ** 2).mean(dim=1)  # the authors' MSE, no 1/2: alpha weighs the penalty against it
        obs_n = obs.repeat_interleave(n, dim=0)
        sampled = torch.cat([random_action, pi_action, next_pi_action], dim=0)
        q_sampled = self.critic(obs_n.repeat(3, 1), sampled)  # [E, 3 * B * N], blocks of B * N
        q_sampled = q_sampled.view(-1, 3, batch_size, n).permute(0, 2, 1, 3).reshape(-1, batch_size, 3 * n)
        if c.calibrated:  # the policy's 2n actions at each state: no lower than the data's return from there
            q_sampled = torch.cat([q_sampled[..., :n], torch.maximum(q_sampled[..., n:], batch.return_to_go[None, :, None])], -1)
        penalty = cql_penalty(q_sampled, log_density, q, c.temperature, c.clip_diff_min, c.clip_diff_max)
        metrics: dict[str, Tensor] = {}
        if c.lagrange_gap is None:
            conservative = c.alpha * penalty
        else:
            alpha_prime = self.alpha_prime().clamp(0.0, 1e6).detach()
            conservative = alpha_prime * c.alpha * (penalty - c.lagrange_gap)
            metrics["alpha_prime"] = alpha_prime
        critic_loss = (td_loss + conservative).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        if c.lagrange_gap is not None:  # after the critic's backward: its own graph (one backward per compiled graph)
            alpha_prime_loss = -(self.alpha_prime().clamp(0.0, 1e6) * c.alpha
                                 * (penalty.detach() - c.lagrange_gap)).mean()
            self.alpha_prime_optimizer.zero_grad(set_to_none=True)
            alpha_prime_loss.backward()
            self.alpha_prime_optimizer.step()

        soft_update(self.critic_target, self.critic, c.tau)
        return {"critic_loss": critic_loss.detach(), "td_loss": td_loss.detach().mean(),
                "cql_penalty": penalty.detach().mean(), "actor_loss": actor_loss.detach(),
                "alpha_entropy": alpha_ent, "q": q.detach().mean(), **metrics}

    def schedule(self, step: int, total_steps: int) -> None:
        warm_starting = step < self.config.bc_steps
        if warm_starting != self._warm_starting:  # once a run (or on resuming), not a device write every step
            self.bc_weight.fill_(float(warm_starting))
            self._warm_starting = warm_starting
