"""Hybrid sim-real training: H2O (Niu, Sharma, Qiu, Li, Zhou, Hu & Zhan, "When to Trust Your Simulator:
Dynamics-Aware Hybrid Offline-and-Online Reinforcement Learning", NeurIPS 2022) and DARC's reward correction
(Eysenbach, Asawa, Chaudhari, Levine & Salakhutdinov, "Off-Dynamics Reinforcement Learning: Training for
Transfer with Domain Classifiers", ICLR 2021), on the SAC base and the online loop.

Data: every batch mixes rows of the recorded dataset ("real", M, dynamics P) and of the online replay filled by a
sim env ("sim", M^, dynamics P^): Batch.online is 1 on sim rows (online_replay.MixedSampler), and the run's
online_ratio is the sim share.

Two discriminators, trained every update with the logistic loss, real = positive class, on the normalized state
features (images are not read) with Gaussian noise of std discriminator_noise on every input:
    l_sa(s, a)       = log p(real | s, a)     / p(sim | s, a)       (log-odds)
    l_sas(s, a, s')  = log p(real | s, a, s') / p(sim | s, a, s')  = l_sa(s, a) + h(s, a, s')
    L(D) = E_real softplus(-l) + E_sim softplus(l)         (each class's mean, so a 50/50 batch is not required)
Bayes' rule turns them into the dynamics ratio (the state-action marginals cancel):
    log P(s'|s,a) / P^(s'|s,a) = l_sas(s, a, s') - l_sa(s, a) = h(s, a, s')          (real over sim)
The (s, a, s') classifier is l_sa (held fixed in its loss) plus a network h of its own, as DARC's and H2O's
authors build it: h is asked only what s' adds to what (s, a) already tells, so with unlimited data h -> 0 and the
ratio -> 1 where the dynamics agree, however different the data's state-action distributions are. With little
real data it does not get there: on reach2d with no gap (20 real episodes, docs/results.md) the mean ratio of sim
transitions was 0.27 (0.50 with two independent classifiers), against 0.15 and 0.03 on two real gaps.
SIGN CONVENTIONS (both are easy to flip, and a flipped one still trains, just wrongly):
    w(s, a, s') = P / P^ = exp(l_sas - l_sa), clipped to [ratio_min, ratio_max]
        importance weight of a sim transition's TD error: sim data that real dynamics would rarely produce
        (w -> 0) stops shaping Q. w <= 1 by default (the authors' clip), so sim data is never trusted above real.
    u(s, a) = KL(P^(.|s,a) || P(.|s,a)) = E_{s' ~ P^} log P^ / P = E [ -(l_sas - l_sa) ]     (sim over real)
        the dynamics gap, >= 0 and LARGE where the sim is wrong; estimated on gap_samples next states s' + eps,
        eps ~ N(0, gap_noise^2) in normalized units (the authors perturb s' by the data's std, gap_noise 1),
        clipped to [gap_min, gap_max].
H2O's critic objective (its eq. 6; beta = penalty_weight, per critic Q_i):
    min_Q  beta ( max_{d} E_{(s,a)~d} Q(s,a) + R(d) - E_real Q(s,a) )
           + 1/2 E_real (Q - B^pi Q_targ)^2 + 1/2 E_sim w(s,a,s') (Q - B^pi Q_targ)^2
with R(d) = -KL(d || omega), omega(s,a) = u(s,a) / sum_sim u over the sim rows. The max is attained at
d(s,a) = omega(s,a) exp Q(s,a) / Z, so THE SOFTMAX IS OVER Q PLUS LOG OMEGA, NOT OVER Q ALONE, and its value is
    max_d [...] = log sum_{(s,a) in sim} omega(s,a) exp Q(s,a) = logsumexp_sim (Q(s,a) + log omega(s,a))
(s, a the sim rows' own data actions). The penalty therefore pushes Q down hardest on the sim pairs with the
LARGEST gaps (largest omega) and up on real data. With ratio and gap as above the TD weight falls and the
penalty's pull rises on the same transitions; tests/test_learn_h2o.py fails if either sign flips.
The TD losses are means over each kind of row (real rows unweighted); the actor is SAC's on every state, real and
sim; backup_entropy off and target entropy -dim(A), as the authors' code; penalty_weight 0.01 is their default.

DARC (the "cheap correction" comparator) uses the same discriminators and corrects sim rewards instead:
    r~ = r + clip(log P / P^, -correction_clip, correction_clip) = r + (l_sas - l_sa)           (sim rows)
then plain SAC on the whole batch. Departure, on purpose: the original trains its agent on sim data only (it has
little target data, used only for its classifiers); here real rows stay in the batch with their own rewards, so
naive mixing, DARC and H2O see the same data and differ only in the correction.

n-step returns are refused (n_step 1): the correction and the weights are per transition.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from robot_stack.errors import LearnError
from robot_stack.learn.algorithms.sac import SAC
from robot_stack.learn.networks import MLP, soft_update
from robot_stack.learn.replay import Batch


class Discriminators(nn.Module):
    """The (s, a) and (s, a, s') classifiers of real vs sim transitions; see the module docstring for the signs."""

    def __init__(self, state_dim: int, action_dim: int, hidden_dims: list[int]) -> None:
        super().__init__()
        self.sa = MLP(state_dim + action_dim, 1, hidden_dims)
        self.sas = MLP(2 * state_dim + action_dim, 1, hidden_dims)

    def logits(self, state: Tensor, action: Tensor, next_state: Tensor) -> tuple[Tensor, Tensor]:
        """(l_sa [B], l_sas [B]): log-odds of real over sim; l_sas = l_sa (no gradient) + h(s, a, s')."""
        l_sa = self.sa(torch.cat([state, action], dim=-1)).squeeze(-1)
        return l_sa, l_sa.detach() + self.log_ratio(state, action, next_state)

    def log_ratio(self, state: Tensor, action: Tensor, next_state: Tensor) -> Tensor:
        """log P(s'|s,a) / P^(s'|s,a), real dynamics over sim, [B]: h(s, a, s') = l_sas - l_sa."""
        return self.sas(torch.cat([state, action, next_state], dim=-1)).squeeze(-1)

    def loss(self, state: Tensor, action: Tensor, next_state: Tensor, sim: Tensor, noise: float
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """Both classifiers' logistic losses (summed; each a mean over real rows + a mean over sim rows) on inputs with
        N(0, noise^2) added, and their accuracies on these rows."""
        if noise > 0:
            state, action, next_state = (x + noise * torch.randn_like(x) for x in (state, action, next_state))
        l_sa, l_sas = self.logits(state, action, next_state)
        real = 1.0 - sim
        n_sim, n_real = sim.sum().clamp(min=1.0), real.sum().clamp(min=1.0)

        def logistic(logit: Tensor) -> Tensor:
            return (real * F.softplus(-logit)).sum() / n_real + (sim * F.softplus(logit)).sum() / n_sim

        def accuracy(logit: Tensor) -> Tensor:
            right = torch.where(sim > 0, (logit < 0).float(), (logit > 0).float())
            return 0.5 * ((right * real).sum() / n_real + (right * sim).sum() / n_sim)

        loss_sa, loss_sas = logistic(l_sa), logistic(l_sas)
        return loss_sa + loss_sas, {"d_sa_loss": loss_sa.detach(), "d_sas_loss": loss_sas.detach(),
                                    "d_sas_accuracy": accuracy(l_sas.detach())}


class HybridSAC(SAC):
    """SAC plus the discriminators and their optimizer: what H2O and DARC share."""

    def __init__(self, spec, config, device) -> None:
        super().__init__(spec, config, device)
        if spec.state_dim == 0:
            raise LearnError(f"{config.algo}'s discriminators read the state features and this run has none: add "
                             "state features (--obs)")
        if int(config.n_step) != 1:
            raise LearnError(f"{config.algo} weighs or corrects each transition: use n_step 1, not {config.n_step}")
        c = self.config
        self.discriminators = Discriminators(spec.state_dim, self.action_dim, list(c.discriminator_dims)).to(self.device)
        self.discriminator_optimizer = self.adam(self.discriminators.parameters(), c.discriminator_lr)

    def sim_mask(self, batch: Batch) -> Tensor:
        """float [B]: 1 on sim rows (the online replay's), 0 on real ones; all real when the batch has no mask."""
        if batch.online is None:
            return torch.zeros_like(batch.reward)
        return batch.online

    def discriminator_step(self, batch: Batch, sim: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One step of both discriminators on this batch; then, with the updated ones, log P/P^ [B] (no gradient)."""
        state, next_state = batch.obs["state"], batch.next_obs["state"]
        action = self.actor.snap(batch.action)
        loss, metrics = self.discriminators.loss(state, action, next_state, sim, self.config.discriminator_noise)
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.discriminator_optimizer.step()
        with torch.no_grad():
            log_ratio = self.discriminators.log_ratio(state, action, next_state)
        return log_ratio, metrics


class H2O(HybridSAC):
    name = "h2o"

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, Tensor]:
        c = self.config
        sim = self.sim_mask(batch)
        real = 1.0 - sim
        log_ratio, metrics = self.discriminator_step(batch, sim)
        with torch.no_grad():
            weight = log_ratio.exp().clamp(c.ratio_min, c.ratio_max)
            gap = self.dynamics_gap(batch)
        obs = self.encode(batch.obs)
        alpha_ent = self.temperature().detach()
        metrics |= self.actor_step(obs.detach(), batch, alpha_ent) if update_actor else {}
        with torch.no_grad():
            target = self.td_target(batch, self.encode(batch.next_obs), alpha_ent)
        q = self.critic(obs, self.actor.snap(batch.action))  # [E, B]
        squared = (q - target) ** 2
        td_real = (squared * real).sum(dim=1) / real.sum().clamp(min=1.0)  # [E]
        td_sim = (squared * weight * sim).sum(dim=1) / sim.sum().clamp(min=1.0)
        penalty = gap_penalty(q, gap, sim)
        critic_loss = (td_real + td_sim + c.penalty_weight * penalty).sum()
        self.critic_step(critic_loss)
        soft_update(self.critic_target, self.critic, c.tau)
        return metrics | {"critic_loss": critic_loss.detach(), "td_real": td_real.detach().mean(),
                          "td_sim": td_sim.detach().mean(), "gap_penalty": penalty.detach().mean(),
                          "alpha_entropy": alpha_ent, "q": q.detach().mean()} | sim_mean(
            weight, sim, "dynamics_ratio") | sim_mean(gap, sim, "dynamics_gap")

    @torch.no_grad()
    def dynamics_gap(self, batch: Batch) -> Tensor:
        """u(s, a) [B]: E over gap_samples perturbed next states of log P^/P (sim over real), clipped to
        [gap_min, gap_max] (see the module docstring)."""
        c = self.config
        state, next_state = batch.obs["state"], batch.next_obs["state"]
        action = self.actor.snap(batch.action)
        k, size = int(c.gap_samples), state.shape[0]
        state_k, action_k, next_k = (x.repeat_interleave(k, dim=0) for x in (state, action, next_state))
        next_k = next_k + c.gap_noise * torch.randn_like(next_k)
        log_sim_over_real = -self.discriminators.log_ratio(state_k, action_k, next_k).view(size, k)
        return log_sim_over_real.mean(dim=1).clamp(c.gap_min, c.gap_max)


def sim_mean(value: Tensor, sim: Tensor, name: str) -> dict[str, Tensor]:
    """{name: the mean of `value` [B] over the sim rows}, a logged metric."""
    return {name: (value * sim).sum() / sim.sum().clamp(min=1.0)}


def gap_penalty(q: Tensor, gap: Tensor, sim: Tensor) -> Tensor:
    """H2O's dynamics-gap-aware penalty per critic, [E]: logsumexp over the sim rows of Q + log omega, omega = the gap
    normalized over the sim rows, minus the mean Q of the real rows; 0 for a batch without both kinds of row.

    q [E, B] (the critics on the batch's data actions), gap u(s, a) [B] > 0, sim float [B] (1 = sim row)."""
    real = 1.0 - sim
    has_sim, has_real = sim.sum() > 0, real.sum() > 0
    log_omega = torch.log(gap) - torch.log((gap * sim).sum().clamp(min=torch.finfo(gap.dtype).tiny))
    pulled = torch.where(sim > 0, q + log_omega, torch.full_like(q, float("-inf")))
    soft_max = torch.logsumexp(pulled, dim=1)  # [E]
    real_mean = (q * real).sum(dim=1) / real.sum().clamp(min=1.0)
    return torch.where(has_sim & has_real, soft_max - real_mean, torch.zeros_like(real_mean))


class DARC(HybridSAC):
    name = "darc"

    def update(self, batch: Batch, update_actor: bool = True) -> dict[str, Tensor]:
        c = self.config
        sim = self.sim_mask(batch)
        log_ratio, metrics = self.discriminator_step(batch, sim)
        correction = log_ratio.clamp(-c.correction_clip, c.correction_clip) * sim
        corrected = dataclasses.replace(batch, reward=batch.reward + correction)
        return SAC.update(self, corrected, update_actor) | metrics | sim_mean(
            correction, sim, "reward_correction") | sim_mean(
            log_ratio.exp().clamp(max=1e6), sim, "dynamics_ratio")
