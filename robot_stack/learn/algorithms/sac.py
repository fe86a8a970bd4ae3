"""SAC (Haarnoja, Zhou, Abbeel & Levine, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep Reinforcement Learning
with a Stochastic Actor", ICML 2018; the automatic temperature from Haarnoja et al., "Soft Actor-Critic Algorithms
and Applications", 2018): the base of CQL/Cal-QL, RLPD, WSRL and H2O.

Actor a = tanh(u), u ~ N(mu(s), sigma(s)) (TanhGaussianActor), on a reparameterised sample a~ ~ pi(.|s):
    L(pi) = E [ alpha log pi(a~|s) - Q(s, a~) ],   Q = min_i Q_i (actor_q: min, SAC's clipped double Q)
                                                    or mean_i Q_i (mean: RLPD's and WSRL's ensembles)
Entropy temperature alpha = exp(log_alpha), towards a target entropy H (default -dim(A)):
    L(alpha) = -log_alpha * E [ log pi(a~|s) + H ]
Critic: an ensemble of E critics (QEnsemble, LayerNorm optional); the target takes the min over a random subset M of
critic_subset target critics, drawn anew each update (all E when None; REDQ, Chen et al. 2021, as RLPD uses):
    y = r + gamma^k (1 - terminal) ( min_{i in M} Q_targ_i(s', a') - alpha log pi(a'|s') ),   a' ~ pi(.|s')
        (the entropy term only with backup_entropy)
    L(Q) = sum_i E (Q_i(s, a) - y)^2
then Q_targ <- (1 - tau) Q_targ + tau Q.

Order of one update: the actor and temperature step first, on features the critic's loss does not see twice, then
the critic, whose target samples come from the updated actor (the order CQL here has always had, which its numerics
tests pin).
actor_every > 1 updates the actor and temperature once per that many critic updates (0: once per environment step,
the run's utd, as RLPD's code does); alpha in the target is the value before this update's temperature step.

binary_actions (ours, for grippers): those command elements are open/close choices, a Bernoulli over the bounds
{-1, +1} (TanhGaussianActor), and the actor's loss takes the exact expectation over their modes
    L(pi) = E_u [ sum_m pi(m|s) (alpha log pi(a_u,m|s) - Q(s, (a_u, m))) ]
so an element moves by the difference of Q between open and closed; the data's commands are snapped to a bound.
Their target entropy counts only the Gaussian elements (a Bernoulli's entropy lies in [0, log 2] anyway).
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


class SAC(Algorithm):
    name = "sac"

    def __init__(self, spec, config, device) -> None:
        super().__init__(spec, config, device)
        c = self.config
        binary = binary_indices(c.binary_actions, self.spec)
        self.actor = TanhGaussianActor(self.obs_dim, self.action_dim, self.hidden_dims, binary=binary).to(self.device)
        self.critic = QEnsemble(self.obs_dim, self.action_dim, self.hidden_dims, c.n_critics,
                                layer_norm=c.layer_norm).to(self.device)
        self.critic_target = frozen_copy(self.critic)
        self.temperature = Temperature().to(self.device)
        gaussian_elements = self.action_dim - len(binary)
        self.target_entropy = (c.target_entropy_per_element * gaussian_elements if c.target_entropy is None
                               else float(c.target_entropy))
        self.actor_every = c.actor_every or int(config.utd)
        self.actor_optimizer = self.adam(self.actor.parameters(), c.actor_lr)
        self.critic_optimizer = self.adam([*self.critic.parameters(), *self.encoder.parameters()], c.critic_lr)
        self.temperature_optimizer = self.adam(self.temperature.parameters(), c.alpha_lr)

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, Tensor]:
        obs = self.encode(batch.obs)
        alpha_ent = self.temperature().detach()
        metrics = self.actor_step(obs.detach(), batch, alpha_ent) if update_actor else {}
        with torch.no_grad():
            target = self.td_target(batch, self.encode(batch.next_obs), alpha_ent)
        q = self.critic(obs, self.actor.snap(batch.action))
        td_loss = ((q - target) ** 2).mean(dim=1)  # [E], no 1/2 (as CQL's, whose alpha weighs a penalty against it)
        critic_loss = td_loss.sum()
        self.critic_step(critic_loss)
        soft_update(self.critic_target, self.critic, self.config.tau)
        return metrics | {"critic_loss": critic_loss.detach(), "td_loss": td_loss.detach().mean(),
                          "alpha_entropy": alpha_ent, "q": q.detach().mean()}

    # -- the parts CQL, WSRL and H2O reuse ----------------------------------------------------------------------

    def actor_loss(self, features: Tensor, batch: Batch, alpha_ent: Tensor) -> tuple[Tensor, Tensor]:
        """SAC's actor loss (a scalar) and E_m log pi [B] (minus the entropy estimate), on detached features
        [B, D]; the exact expectation over the modes of the binary elements (one mode without any)."""
        batch_size, dim = features.shape[0], self.action_dim
        pi, log_pis, mode_probability = self.actor.sample_modes(features)  # [M, B, A], [M, B], [M, B]
        modes = pi.shape[0]
        every_mode = features.expand(modes, *features.shape).reshape(modes * batch_size, -1)  # a view for one mode
        q_pi = self.critic(every_mode, pi.reshape(modes * batch_size, dim))
        q_pi = q_pi.min(dim=0).values if self.config.actor_q == "min" else q_pi.mean(dim=0)
        loss = (mode_probability * (alpha_ent * log_pis - q_pi.view(modes, batch_size))).sum(0).mean()
        return loss, (mode_probability * log_pis).sum(0)

    def actor_step(self, features: Tensor, batch: Batch, alpha_ent: Tensor) -> dict[str, Tensor]:
        """One step of the actor, then of the entropy temperature; their losses."""
        actor_loss, log_pi = self.actor_loss(features, batch, alpha_ent)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        temperature_loss = -(self.temperature.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
        self.temperature_optimizer.zero_grad(set_to_none=True)
        temperature_loss.backward()
        self.temperature_optimizer.step()
        return {"actor_loss": actor_loss.detach(), "entropy": -log_pi.detach().mean()}

    def target_members(self) -> Tensor | None:
        """The target critics this update's target takes the min over: int64 [critic_subset], a random subset
        without repeats drawn on the device (a fixed shape, so it can be captured in a CUDA graph), or None (all)."""
        c = self.config
        if c.critic_subset is None:
            return None
        return torch.rand(c.n_critics, device=self.device).argsort()[:c.critic_subset]

    def target_q(self, obs: Tensor, action: Tensor) -> Tensor:
        """min over target_members() of Q_targ_i(s, a): [B] for obs [B, D], action [B, A]."""
        return self.critic_target(obs, action, members=self.target_members()).min(dim=0).values

    def next_value(self, next_obs: Tensor, alpha_ent: Tensor) -> Tensor:
        """The soft value at s' the target bootstraps from, [B]: target_q(s', a') (- alpha log pi(a'|s'))."""
        next_action, next_log_pi = self.actor.sample(next_obs)
        next_q = self.target_q(next_obs, next_action)
        return next_q - alpha_ent * next_log_pi if self.config.backup_entropy else next_q

    def td_target(self, batch: Batch, next_obs: Tensor, alpha_ent: Tensor) -> Tensor:
        """y = r + gamma^k (1 - terminal) next_value(s'), [B] (call under no_grad)."""
        return batch.reward + batch.discount * (1.0 - batch.terminal) * self.next_value(next_obs, alpha_ent)

    def critic_step(self, critic_loss: Tensor) -> None:
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

    @torch.no_grad()
    def explore(self, obs: dict[str, Tensor]) -> Tensor:
        """A sample of the squashed Gaussian (a Bernoulli draw for binary elements), [B, A] in [-1, 1]."""
        return self.actor.sample(self.encode(obs, augment=False))[0]
