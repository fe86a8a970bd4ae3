"""The algorithms' losses, pinned against numbers worked out by hand and against each paper's formula.

The loss helpers (expectile, AWR weights, CQL's logsumexp penalty, TD3+BC's lambda) get tiny inputs whose
answers are written out. Each algorithm's update on a hand-made Batch is recomputed independently, in float64,
from copies of its networks taken before the update, following the formulas in the algorithm's docstring;
random draws are reproduced by seeding the global RNG and drawing in the order update() does. CPU only.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from tiny_learning import (
    ACTION_DIM,
    BATCH,
    every_q,
    f64,
    make_algorithm,
    member_q,
    parameters,
    tiny_batch,
    tiny_spec,
)
from torch import Tensor, nn
from torch.distributions import Normal

from robot_stack.errors import LearnError
from robot_stack.learn.algorithms.base import Algorithm, adam, set_lr
from robot_stack.learn.algorithms.cql import cql_penalty
from robot_stack.learn.algorithms.iql import awr_weights, expectile_loss
from robot_stack.learn.algorithms.sac import binary_indices
from robot_stack.learn.algorithms.td3bc import td3bc_lambda
from robot_stack.learn.observations import ObservationSpec
from robot_stack.learn.replay import Batch


def as_float64(batch: Batch) -> tuple[Tensor, ...]:
    """(s, a, r, s', discount, terminal) in float64."""
    return tuple(t.double() for t in (batch.obs["state"], batch.action, batch.reward, batch.next_obs["state"],
                                      batch.discount, batch.terminal))


def assert_soft_updated(target: nn.Module, old_target: list[Tensor], source: nn.Module, tau: float) -> None:
    """target == (1 - tau) * old_target + tau * source, parameter by parameter, and it moved."""
    for new, old, src in zip(target.parameters(), old_target, source.parameters()):
        torch.testing.assert_close(new.detach(), (1 - tau) * old + tau * src.detach(), rtol=1e-6, atol=1e-8)
    assert any(not torch.equal(new, old) for new, old in zip(target.parameters(), old_target))


def move_targets_away(algo: Algorithm) -> None:
    """Perturb every target network so it no longer equals its source (a target mixed up with its source shows)."""
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, module in vars(algo).items():
            if name.endswith("_target"):
                for p in module.parameters():
                    p.add_(0.1 * torch.randn(p.shape, generator=generator))


def assert_loss(value: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)


# ---- the loss helpers on hand-computed numbers


def test_expectile_loss_weights_negative_errors_by_one_minus_tau_and_positive_by_tau():
    diff = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0])
    expected = torch.tensor([0.3 * 4, 0.3 * 0.25, 0.0, 0.7 * 1, 0.7 * 9])
    torch.testing.assert_close(expectile_loss(diff, 0.7), expected)


def test_expectile_loss_at_one_half_is_half_the_squared_error():
    diff = torch.tensor([-2.0, 0.5, 3.0])
    torch.testing.assert_close(expectile_loss(diff, 0.5), 0.5 * diff**2)


def test_awr_weights_are_exp_beta_advantage_clipped_at_max_weight():
    advantage = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    expected = torch.tensor([math.exp(-3.0), 1.0, math.exp(1.5), 100.0])  # exp(6) = 403.4 is clipped to 100
    torch.testing.assert_close(awr_weights(advantage, beta=3.0, max_weight=100.0), expected)
    torch.testing.assert_close(awr_weights(advantage, beta=3.0, max_weight=2.0),
                               torch.tensor([math.exp(-3.0), 1.0, 2.0, 2.0]))


def test_cql_penalty_is_logsumexp_of_density_corrected_q_minus_data_q():
    ln = math.log
    # E=2 critics, B=2 states, M=2 sampled actions; Q - log density is chosen so each logsumexp is a log of an integer.
    log_density = torch.tensor([[0.0, ln(2)], [ln(4), 0.0]])
    q_sampled = torch.tensor([[[0.0, ln(2) + ln(3)], [ln(4) + ln(5), ln(3)]],  # critic 0: Q - log density = [0, ln 3], [ln 5, ln 3]
                              [[0.0, ln(2)], [ln(4), 0.0]]])  # critic 1: [0, 0], [0, 0]
    q_data = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    expected = torch.tensor([((ln(1 + 3) - 1.0) + (ln(5 + 3) - 2.0)) / 2, ln(2)])
    torch.testing.assert_close(cql_penalty(q_sampled, log_density, q_data, temperature=1.0), expected)


def test_cql_penalty_scales_the_logsumexp_by_its_temperature():
    ln = math.log
    q_sampled = torch.tensor([[[2 * ln(1), 2 * ln(2), 2 * ln(5)]]])  # E=1, B=1, M=3
    log_density, q_data = torch.zeros(1, 3), torch.tensor([[1.0]])
    # 2 * log(exp(x / 2) summed) = 2 * log(1 + 2 + 5), not log(1 + 4 + 25) as at temperature 1.
    torch.testing.assert_close(cql_penalty(q_sampled, log_density, q_data, temperature=2.0),
                               torch.tensor([2 * ln(8) - 1.0]))
    torch.testing.assert_close(cql_penalty(q_sampled, log_density, q_data, temperature=1.0),
                               torch.tensor([ln(30) - 1.0]))


def test_cql_penalty_clips_each_states_term_before_the_batch_mean():
    ln = math.log
    q_sampled = torch.tensor([[[ln(2), ln(2)], [ln(3), ln(5)], [0.0, 0.0]]])  # E=1, B=3: logsumexp ln 4, ln 8, ln 2
    q_data = torch.tensor([[ln(4) - 7.0, ln(8) + 9.0, ln(2) - 0.5]])  # terms 7, -9, 0.5
    log_density = torch.zeros(3, 2)
    torch.testing.assert_close(cql_penalty(q_sampled, log_density, q_data, 1.0), torch.tensor([(7 - 9 + 0.5) / 3]))
    torch.testing.assert_close(cql_penalty(q_sampled, log_density, q_data, 1.0, clip_min=-2.0),
                               torch.tensor([(7 - 2 + 0.5) / 3]))
    torch.testing.assert_close(cql_penalty(q_sampled, log_density, q_data, 1.0, clip_min=-2.0, clip_max=1.0),
                               torch.tensor([(1 - 2 + 0.5) / 3]))


def test_td3bc_lambda_is_alpha_over_mean_absolute_q_with_no_gradient_through_it():
    q = torch.tensor([1.0, -3.0, 2.0], requires_grad=True)
    lmbda = td3bc_lambda(q, alpha=2.5)
    assert lmbda.item() == pytest.approx(2.5 / 2.0)
    assert not lmbda.requires_grad
    (lmbda * q.sum()).backward()
    torch.testing.assert_close(q.grad, torch.full((3,), 1.25))  # lambda is a constant: d(lambda sum Q)/dQ = lambda


# ---- one update per algorithm, recomputed from the networks before it


def test_bc_update_returns_the_mean_squared_action_error_before_the_step():
    algo, batch = make_algorithm("bc"), tiny_batch()
    actor = f64(algo.actor)
    losses = algo.update(batch)
    s, a, *_ = as_float64(batch)
    assert_loss(losses["actor_loss"], ((actor(s) - a) ** 2).sum(-1).mean())  # E ||pi(s) - a||^2
    assert any(not torch.equal(p, q) for p, q in zip(algo.actor.parameters(), actor.float().parameters()))


def test_bc_loss_goes_down_on_a_constant_batch():
    algo, batch = make_algorithm("bc", actor_lr=1e-2), tiny_batch()
    losses = [algo.update(batch)["actor_loss"].item() for _ in range(150)]
    assert losses[-1] < 0.3 * losses[0]


def test_iql_update_returns_the_paper_losses_from_the_pre_update_networks():
    algo, batch = make_algorithm("iql", beta=3.0, max_weight=1.2), tiny_batch()
    c = algo.config
    with torch.no_grad():  # spread V(s) so the advantages take both signs (at init they are all slightly negative)
        algo.value.net[-1].weight.mul_(10.0)
    move_targets_away(algo)
    actor, critic, critic_target, value = (f64(m) for m in (algo.actor, algo.critic, algo.critic_target, algo.value))
    old_target = parameters(algo.critic_target)
    losses = algo.update(batch)

    s, a, r, s2, discount, terminal = as_float64(batch)
    v = value(s).squeeze(-1)
    u = every_q(critic_target, s, a).min(dim=0).values - v
    value_loss = (torch.abs(c.expectile - (u < 0).double()) * u**2).mean()  # L2^tau(u) = |tau - 1(u < 0)| u^2
    y = r + discount * (1 - terminal) * value(s2).squeeze(-1)
    critic_loss = torch.stack([((member_q(critic, i, s, a) - y) ** 2).mean() for i in range(c.n_critics)]).mean()
    weight = torch.exp(c.beta * u).clamp(max=c.max_weight)
    policy = Normal(torch.tanh(actor.net(s)), actor.log_std.clamp(-5.0, 2.0).exp())
    actor_loss = -(weight * policy.log_prob(a).sum(-1)).mean()

    assert (u < 0).any() and (u > 0).any(), "both sides of the expectile must be exercised"
    assert (weight == c.max_weight).any() and (weight < c.max_weight).any(), "the clip must be exercised"
    assert_loss(losses["value_loss"], value_loss)
    assert_loss(losses["critic_loss"], critic_loss)
    assert_loss(losses["actor_loss"], actor_loss)
    assert_loss(losses["advantage"], u.mean())
    assert_soft_updated(algo.critic_target, old_target, algo.critic, c.tau)


def test_td3bc_update_returns_the_paper_losses_with_the_same_smoothing_noise():
    algo, batch = make_algorithm("td3bc", policy_noise=0.5, noise_clip=0.3), tiny_batch()
    c = algo.config
    move_targets_away(algo)
    actor, actor_target, critic, critic_target = (f64(m) for m in (algo.actor, algo.actor_target, algo.critic,
                                                                    algo.critic_target))
    old_actor_target, old_critic_target = parameters(algo.actor_target), parameters(algo.critic_target)
    torch.manual_seed(7)
    losses = algo.update(batch, update_actor=True)

    s, a, r, s2, discount, terminal = as_float64(batch)
    torch.manual_seed(7)
    eps = torch.randn(BATCH, ACTION_DIM).double()  # update()'s only random draw: the target smoothing noise
    assert (eps * c.policy_noise).abs().max() > c.noise_clip, "the noise clip must be exercised"
    next_action = (actor_target(s2) + (eps * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)).clamp(-1, 1)
    y = r + discount * (1 - terminal) * every_q(critic_target, s2, next_action).min(dim=0).values
    critic_loss = sum(((member_q(critic, i, s, a) - y) ** 2).mean() for i in range(c.n_critics))
    # The actor's step comes after the critic's: its Q_1 is the critic just updated, its pi the actor before.
    pi = actor(s)
    q1 = member_q(f64(algo.critic), 0, s, pi)
    lmbda = c.alpha / q1.abs().mean()
    # The BC term as in the authors' code (F.mse_loss): the mean over batch and action components.
    actor_loss = -lmbda * q1.mean() + ((pi - a) ** 2).mean()

    assert_loss(losses["critic_loss"], critic_loss)
    assert_loss(losses["q"], every_q(critic, s, a).mean())
    assert_loss(losses["lambda"], lmbda)
    assert_loss(losses["actor_loss"], actor_loss)
    assert_soft_updated(algo.critic_target, old_critic_target, algo.critic, c.tau)
    assert_soft_updated(algo.actor_target, old_actor_target, algo.actor, c.tau)


def test_td3bc_critic_only_update_leaves_the_actor_and_targets_unchanged():
    algo, batch = make_algorithm("td3bc"), tiny_batch()
    actor, actor_target, critic, critic_target = (parameters(m) for m in (algo.actor, algo.actor_target, algo.critic,
                                                                           algo.critic_target))
    losses = algo.update(batch, update_actor=False)
    assert "actor_loss" not in losses
    for module, before in ((algo.actor, actor), (algo.actor_target, actor_target), (algo.critic_target, critic_target)):
        assert all(torch.equal(p, b) for p, b in zip(module.parameters(), before))
    assert any(not torch.equal(p, b) for p, b in zip(algo.critic.parameters(), critic))


def tanh_gaussian(actor: nn.Module, obs: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """a = tanh(mu + sigma eps) and log pi(a|s) = log N(u; mu, sigma) - sum_j log(1 - tanh(u_j)^2)."""
    mean, log_std = actor.net(obs).chunk(2, dim=-1)
    std = log_std.clamp(actor.log_std_min, actor.log_std_max).exp()
    u = mean + std * eps
    return torch.tanh(u), Normal(mean, std).log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2).sum(-1)


@pytest.mark.parametrize("temperature, backup_entropy, calibrated", [(1.0, False, False), (2.0, True, False),
                                                                   (1.0, False, True)])
def test_cql_update_returns_the_paper_losses_with_the_same_sampled_actions(temperature, backup_entropy, calibrated):
    """calibrated (Cal-QL): the policy's actions enter the penalty as max(Q, the data's return-to-go)."""
    n = 3
    algo = make_algorithm("cql", n_actions=n, temperature=temperature, backup_entropy=backup_entropy,
                          calibrated=calibrated)
    batch, c = tiny_batch(), algo.config
    # Returns-to-go around the policy actions' Q (|Q| < 1 here): some states' bounds bind, others' do not.
    batch.return_to_go = torch.tensor([5.0, -5.0, 0.05, -0.05, 0.2, -10.0])
    bound = batch.return_to_go.double() if calibrated else torch.full((BATCH,), -math.inf, dtype=torch.float64)
    lifted = []
    move_targets_away(algo)
    actor, critic, critic_target = (f64(m) for m in (algo.actor, algo.critic, algo.critic_target))
    old_target, alpha_ent = parameters(algo.critic_target), algo.temperature().item()
    old_log_alpha = algo.temperature.log_alpha.item()
    torch.manual_seed(11)
    losses = algo.update(batch)

    s, a, r, s2, discount, terminal = as_float64(batch)
    # update()'s random draws in order: the actor's sample at s, the next action at s', then per state
    # n uniform actions, n policy actions at s, n at s' (rows b * n ... b * n + n - 1 belong to state b).
    torch.manual_seed(11)
    eps_actor, eps_next = torch.randn(BATCH, ACTION_DIM).double(), torch.randn(BATCH, ACTION_DIM).double()
    uniform = (torch.rand(BATCH * n, ACTION_DIM) * 2 - 1).double()
    eps_pi, eps_next_pi = torch.randn(BATCH * n, ACTION_DIM).double(), torch.randn(BATCH * n, ACTION_DIM).double()

    # SAC's actor loss, with the actor and critic before the update.
    sampled, log_pi = tanh_gaussian(actor, s, eps_actor)
    actor_loss = (alpha_ent * log_pi - every_q(critic, s, sampled).min(dim=0).values).mean()
    assert_loss(losses["actor_loss"], actor_loss)
    assert losses["alpha_entropy"].item() == pytest.approx(alpha_ent)
    # L(alpha_ent) = -log alpha E[log pi + H]: Adam's first step moves log alpha by alpha_lr against the gradient's sign.
    gradient = -(log_pi + algo.target_entropy).mean().item()
    assert algo.temperature.log_alpha.item() == pytest.approx(old_log_alpha - c.alpha_lr * math.copysign(1, gradient))

    # The critic's samples come from the actor after its step.
    policy = f64(algo.actor)
    next_action, next_log_pi = tanh_gaussian(policy, s2, eps_next)
    next_q = every_q(critic_target, s2, next_action).min(dim=0).values
    if backup_entropy:
        next_q = next_q - alpha_ent * next_log_pi
    y = r + discount * (1 - terminal) * next_q
    q_data = every_q(critic, s, a)  # [E, B]
    td = ((q_data - y) ** 2).mean(dim=1)
    penalty = torch.zeros(c.n_critics, dtype=torch.float64)
    for b in range(BATCH):
        rows = slice(b * n, (b + 1) * n)
        pi_action, pi_log = tanh_gaussian(policy, s[b].expand(n, 3), eps_pi[rows])
        next_pi_action, next_pi_log = tanh_gaussian(policy, s2[b].expand(n, 3), eps_next_pi[rows])
        actions = torch.cat([uniform[rows], pi_action, next_pi_action])  # all evaluated at s_b
        log_density = torch.cat([torch.full((n,), ACTION_DIM * math.log(0.5), dtype=torch.float64), pi_log, next_pi_log])
        for i in range(c.n_critics):
            q = member_q(critic, i, s[b].expand(3 * n, 3), actions)
            q = torch.cat([q[:n], torch.maximum(q[n:], bound[b])])  # the uniform actions are never lifted
            lifted += (q[n:] == bound[b]).tolist()
            penalty[i] += (temperature * torch.logsumexp((q - log_density) / temperature, 0) - q_data[i, b]) / BATCH
    assert (0 < sum(lifted) < len(lifted)) == calibrated, "some, not all, policy actions are lifted to their bound"
    critic_loss = (td + c.alpha * penalty).sum()

    assert_loss(losses["td_loss"], td.mean())
    assert_loss(losses["cql_penalty"], penalty.mean())
    assert_loss(losses["critic_loss"], critic_loss)
    assert_soft_updated(algo.critic_target, old_target, algo.critic, c.tau)


def tanh_gaussian_log_prob(actor: nn.Module, obs: Tensor, action: Tensor, edge: float = 1e-4) -> Tensor:
    """log pi(a|s) of a given action: a moved `edge` inside the bounds, u = atanh(a), change of variables."""
    mean, log_std = actor.net(obs).chunk(2, dim=-1)
    std = log_std.clamp(actor.log_std_min, actor.log_std_max).exp()
    a = action.float().clamp(-1 + edge, 1 - edge).double()  # where float32 puts the clip, then exact
    return Normal(mean, std).log_prob(torch.atanh(a)).sum(-1) - torch.log(1 - a ** 2).sum(-1)


def test_tanh_gaussian_log_prob_of_its_own_sample_is_the_samples_log_prob_and_finite_on_the_bounds():
    algo = make_algorithm("cql")
    obs = torch.randn(BATCH, 3)
    torch.manual_seed(3)
    action, log_pi = algo.actor.sample(obs)
    assert action.abs().max() < 0.99  # away from the bounds, where atanh is exact in float32
    torch.testing.assert_close(algo.actor.log_prob(obs, action), log_pi, rtol=1e-4, atol=1e-4)
    on_bounds = torch.tensor([[1.0, -1.0]] * BATCH)
    log_prob = algo.actor.log_prob(obs, on_bounds)
    assert torch.isfinite(log_prob).all()
    assert_loss(log_prob, tanh_gaussian_log_prob(f64(algo.actor), obs.double(), on_bounds.double()))


@pytest.mark.parametrize("warm_start", [True, False])
def test_cql_with_the_authors_options_bc_warm_start_max_backup_clipping_and_lagrange(warm_start):
    """bc_steps, max_target_backup, clip_diff_min/max and lagrange_gap together, recomputed by hand."""
    n, gap = 3, 0.5
    algo = make_algorithm("cql", n_actions=n, bc_steps=5, max_target_backup=True, clip_diff_min=3.4,
                          clip_diff_max=3.55, lagrange_gap=gap, alpha_prime_lr=0.01)
    algo.schedule(step=4 if warm_start else 5, total_steps=10)  # the last warm-start step, or the first after
    batch, c = tiny_batch(), algo.config
    move_targets_away(algo)
    actor, critic, critic_target = (f64(m) for m in (algo.actor, algo.critic, algo.critic_target))
    old_target, alpha_ent = parameters(algo.critic_target), algo.temperature().item()
    torch.manual_seed(13)
    losses = algo.update(batch)

    s, a, r, s2, discount, terminal = as_float64(batch)
    # Draws in order: the actor's sample at s, n next actions per s', then n uniform, n policy at s, n at s'.
    torch.manual_seed(13)
    eps_actor, eps_next = torch.randn(BATCH, ACTION_DIM).double(), torch.randn(BATCH * n, ACTION_DIM).double()
    uniform = (torch.rand(BATCH * n, ACTION_DIM) * 2 - 1).double()
    eps_pi, eps_next_pi = torch.randn(BATCH * n, ACTION_DIM).double(), torch.randn(BATCH * n, ACTION_DIM).double()

    sampled, log_pi = tanh_gaussian(actor, s, eps_actor)
    if warm_start:  # maximum likelihood of the data's actions, with SAC's entropy term
        actor_loss = (alpha_ent * log_pi - tanh_gaussian_log_prob(actor, s, a)).mean()
    else:
        actor_loss = (alpha_ent * log_pi - every_q(critic, s, sampled).min(dim=0).values).mean()
    assert_loss(losses["actor_loss"], actor_loss)

    policy = f64(algo.actor)
    y = torch.zeros(BATCH, dtype=torch.float64)
    for b in range(BATCH):  # the best of n policy actions at s', by the smaller target critic
        next_action, _ = tanh_gaussian(policy, s2[b].expand(n, 3), eps_next[b * n:(b + 1) * n])
        best = every_q(critic_target, s2[b].expand(n, 3), next_action).min(dim=0).values.max()
        y[b] = r[b] + discount[b] * (1 - terminal[b]) * best
    q_data = every_q(critic, s, a)
    td = ((q_data - y) ** 2).mean(dim=1)
    penalty = torch.zeros(c.n_critics, dtype=torch.float64)
    terms = []
    for b in range(BATCH):
        rows = slice(b * n, (b + 1) * n)
        pi_action, pi_log = tanh_gaussian(policy, s[b].expand(n, 3), eps_pi[rows])
        next_pi_action, next_pi_log = tanh_gaussian(policy, s2[b].expand(n, 3), eps_next_pi[rows])
        actions = torch.cat([uniform[rows], pi_action, next_pi_action])
        log_density = torch.cat([torch.full((n,), ACTION_DIM * math.log(0.5), dtype=torch.float64), pi_log, next_pi_log])
        for i in range(c.n_critics):
            q = member_q(critic, i, s[b].expand(3 * n, 3), actions)
            term = torch.logsumexp(q - log_density, 0) - q_data[i, b]
            terms.append(term.item())
            penalty[i] += term.clamp(3.4, 3.55) / BATCH
    assert min(terms) < 3.4 and max(terms) > 3.55, "both clips must be exercised"
    # alpha' starts at 1: the conservative term is alpha * (penalty - gap); alpha' then steps by its lr
    # in the direction of (penalty - gap) (Adam's first step).
    critic_loss = (td + c.alpha * (penalty - gap)).sum()
    assert_loss(losses["td_loss"], td.mean())
    assert_loss(losses["cql_penalty"], penalty.mean())
    assert_loss(losses["critic_loss"], critic_loss)
    assert losses["alpha_prime"].item() == pytest.approx(1.0)
    direction = math.copysign(1, (penalty - gap).mean().item())
    assert algo.alpha_prime.log_alpha.item() == pytest.approx(0.01 * direction, abs=1e-6)
    assert_soft_updated(algo.critic_target, old_target, algo.critic, c.tau)


def hybrid(actor: nn.Module, obs: Tensor, eps: Tensor, uniform: Tensor) -> tuple[Tensor, Tensor]:
    """An actor with element 0 tanh-Gaussian and element 1 binary: a = (tanh(u), +1 if uniform < sigmoid(logit)
    else -1), log pi = log N(u) - log(1 - tanh(u)^2) + log sigmoid(bound * logit). eps, uniform [B, 1]."""
    mean, log_std = actor.net(obs).chunk(2, dim=-1)
    std = log_std.clamp(actor.log_std_min, actor.log_std_max).exp()
    u = mean[:, :1] + std[:, :1] * eps
    bound = torch.where(uniform < torch.sigmoid(mean[:, 1:]), 1.0, -1.0).double()
    log_pi = (Normal(mean[:, :1], std[:, :1]).log_prob(u) - torch.log(1 - torch.tanh(u) ** 2)
              + torch.log(torch.sigmoid(bound * mean[:, 1:]))).sum(-1)
    return torch.cat([torch.tanh(u), bound], dim=-1), log_pi


def test_cql_with_a_binary_gripper_takes_the_actor_expectation_over_open_and_closed_and_snaps_the_critics_actions():
    n = 3
    algo = make_algorithm("cql", n_actions=n, binary_actions=["1"])  # the tiny spec names no element: an index
    batch, c = tiny_batch(), algo.config
    assert algo.target_entropy == -1.0  # SAC's -dim over the Gaussian elements only
    move_targets_away(algo)
    actor, critic, critic_target = (f64(m) for m in (algo.actor, algo.critic, algo.critic_target))
    alpha_ent = algo.temperature().item()
    torch.manual_seed(17)
    losses = algo.update(batch)

    s, a, r, s2, discount, terminal = as_float64(batch)
    # Draws in order: the actor's continuous sample at s; the next action at s' (Gaussian, then Bernoulli);
    # n uniform actions per state; n policy actions at s and n at s' (each Gaussian, then Bernoulli).
    torch.manual_seed(17)
    eps_actor = torch.randn(BATCH, 1).double()
    eps_next, coin_next = torch.randn(BATCH, 1).double(), torch.rand(BATCH, 1).double()
    uniform = (torch.rand(BATCH * n, ACTION_DIM) * 2 - 1).double()
    eps_pi, coin_pi = torch.randn(BATCH * n, 1).double(), torch.rand(BATCH * n, 1).double()
    eps_next_pi, coin_next_pi = torch.randn(BATCH * n, 1).double(), torch.rand(BATCH * n, 1).double()

    # Actor: E over the gripper's two bounds, weighted by their probabilities, of alpha log pi - min Q.
    mean, log_std = actor.net(s).chunk(2, dim=-1)
    std = log_std.clamp(actor.log_std_min, actor.log_std_max).exp()
    u = mean[:, :1] + std[:, :1] * eps_actor
    continuous_log = (Normal(mean[:, :1], std[:, :1]).log_prob(u) - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)
    actor_loss = torch.zeros(BATCH, dtype=torch.float64)
    for bound in (-1.0, 1.0):
        mass = torch.sigmoid(bound * mean[:, 1])
        action = torch.cat([torch.tanh(u), torch.full((BATCH, 1), bound, dtype=torch.float64)], dim=-1)
        q = every_q(critic, s, action).min(dim=0).values
        actor_loss += mass * (alpha_ent * (continuous_log + torch.log(mass)) - q)
    assert_loss(losses["actor_loss"], actor_loss.mean())

    policy = f64(algo.actor)
    next_action, _ = hybrid(policy, s2, eps_next, coin_next)
    y = r + discount * (1 - terminal) * every_q(critic_target, s2, next_action).min(dim=0).values
    snapped = a.clone()
    snapped[:, 1] = torch.where(a[:, 1] > 0, 1.0, -1.0)  # the data's gripper at its bound
    q_data = every_q(critic, s, snapped)
    td = ((q_data - y) ** 2).mean(dim=1)
    uniform[:, 1] = torch.where(uniform[:, 1] > 0, 1.0, -1.0)  # uniform over the two bounds: still density 1/2
    penalty = torch.zeros(c.n_critics, dtype=torch.float64)
    for b in range(BATCH):
        rows = slice(b * n, (b + 1) * n)
        pi_action, pi_log = hybrid(policy, s[b].expand(n, 3), eps_pi[rows], coin_pi[rows])
        next_pi_action, next_pi_log = hybrid(policy, s2[b].expand(n, 3), eps_next_pi[rows], coin_next_pi[rows])
        actions = torch.cat([uniform[rows], pi_action, next_pi_action])
        log_density = torch.cat([torch.full((n,), ACTION_DIM * math.log(0.5), dtype=torch.float64), pi_log, next_pi_log])
        for i in range(c.n_critics):
            q = member_q(critic, i, s[b].expand(3 * n, 3), actions)
            penalty[i] += (torch.logsumexp(q - log_density, 0) - q_data[i, b]) / BATCH
    assert_loss(losses["td_loss"], td.mean())
    assert_loss(losses["cql_penalty"], penalty.mean())
    assert_loss(losses["critic_loss"], (td + c.alpha * penalty).sum())


def test_cql_binary_actions_name_elements_of_the_command_or_say_which_there_are():
    spec = ObservationSpec(state={"x": [3]}, mean=[0.0] * 3, std=[1.0] * 3, action_low=[-1.0] * 3,
                           action_high=[1.0] * 3, action_names=["dx", "dy", "gripper"])
    assert binary_indices(["gripper"], spec) == [2]
    assert binary_indices(["0", 2], spec) == [0, 2]
    with pytest.raises(LearnError, match=r"'grip' is not an element of the command \(its elements are \['dx', 'dy', 'gripper'\]\)"):
        binary_indices(["grip"], spec)
    with pytest.raises(LearnError, match="names an element twice"):
        binary_indices(["gripper", "2"], spec)
    with pytest.raises(LearnError, match=r"names none of its 2 elements: give indices 0..1"):
        binary_indices(["gripper"], tiny_spec())


# ---- learning rates and checkpoints


def test_set_lr_changes_a_float_learning_rate():
    parameter = nn.Parameter(torch.zeros(3))
    optimizer = adam([parameter], 0.1, torch.device("cpu"))
    set_lr(optimizer, 0.02)
    assert optimizer.param_groups[0]["lr"] == 0.02
    parameter.grad = torch.ones(3)
    optimizer.step()  # Adam's first step has the size of the learning rate
    torch.testing.assert_close(parameter.detach(), torch.full((3,), -0.02))


def test_set_lr_fills_a_tensor_learning_rate_in_place():
    parameter = nn.Parameter(torch.zeros(3))
    lr = torch.tensor(0.1)
    optimizer = torch.optim.Adam([parameter], lr=lr)
    set_lr(optimizer, 0.02)
    assert optimizer.param_groups[0]["lr"] is lr  # the tensor a compiled step holds, now holding the new value
    assert lr.item() == pytest.approx(0.02)
    parameter.grad = torch.ones(3)
    optimizer.step()
    torch.testing.assert_close(parameter.detach(), torch.full((3,), -0.02))


def test_iql_schedule_decays_the_actor_learning_rate_on_a_cosine_to_zero():
    algo = make_algorithm("iql")
    actor_lr, total = algo.config.actor_lr, 1000
    lr = {}
    for step in (0, 500, total - 1):
        algo.schedule(step, total)
        lr[step] = algo.actor_optimizer.param_groups[0]["lr"]
    assert lr[0] == pytest.approx(actor_lr)
    assert lr[500] == pytest.approx(actor_lr / 2)
    assert 0 < lr[total - 1] < 1e-5 * actor_lr
    assert algo.critic_optimizer.param_groups[0]["lr"] == algo.config.critic_lr
    assert algo.value_optimizer.param_groups[0]["lr"] == algo.config.value_lr


def test_iql_schedule_leaves_the_learning_rate_alone_without_cosine_decay():
    algo = make_algorithm("iql", actor_cosine_decay=False)
    algo.schedule(999, 1000)
    assert algo.actor_optimizer.param_groups[0]["lr"] == algo.config.actor_lr


@pytest.mark.parametrize("algo_name", ["bc", "td3bc", "iql", "cql"])
def test_algorithm_loaded_from_a_saved_state_acts_and_learns_identically(algo_name):
    trained, batch = make_algorithm(algo_name, seed=0), tiny_batch()
    for step in range(3):
        torch.manual_seed(step)
        trained.update(batch)
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)  # through bytes, as a checkpoint is
    fresh = make_algorithm(algo_name, seed=1)
    obs = {"state": torch.randn(5, 3)}
    assert not torch.equal(fresh.act(obs), trained.act(obs))

    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh.act(obs), trained.act(obs))
    # The optimizers' moments came along too: the next update is the same on both.
    losses = []
    for algo in (trained, fresh):
        torch.manual_seed(100)
        losses.append(algo.update(batch))
    assert losses[0].keys() == losses[1].keys()
    assert all(torch.equal(losses[0][key], losses[1][key]) for key in losses[0])
    assert torch.equal(fresh.act(obs), trained.act(obs))
    if algo_name == "cql":
        assert torch.equal(fresh.temperature.log_alpha, trained.temperature.log_alpha)
