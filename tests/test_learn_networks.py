"""The shared networks: the target-network soft update, the batched Q-ensemble, and the actors' log-probabilities.

Each is checked against an independent computation: plain nn.Linear stacks with the ensemble's weights,
torch.distributions.Normal, the tanh change-of-variables formula written out. CPU only, tiny sizes.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from robot_stack.learn.networks import (
    MLP,
    DeterministicActor,
    EnsembleLinear,
    GaussianActor,
    QEnsemble,
    TanhGaussianActor,
    soft_update,
)


def member_as_linear_stack(ensemble: QEnsemble, member: int) -> nn.Sequential:
    """Critic `member` of the ensemble as ordinary nn.Linear layers holding the same numbers (weight [E, in, out])."""
    layers: list[nn.Module] = []
    for layer in [*ensemble.hidden, ensemble.out]:
        in_dim, out_dim = layer.weight.shape[1:]
        linear = nn.Linear(in_dim, out_dim)
        with torch.no_grad():
            linear.weight.copy_(layer.weight[member].T)
            linear.bias.copy_(layer.bias[member, 0])
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


# ---- soft update


def test_soft_update_moves_every_target_parameter_tau_of_the_way_to_the_source():
    torch.manual_seed(0)
    source, target = MLP(3, 2, [5]), MLP(3, 2, [5])
    old = [p.detach().clone() for p in target.parameters()]
    soft_update(target, source, tau=0.25)
    for new, before, src in zip(target.parameters(), old, source.parameters()):
        expected = 0.75 * before + 0.25 * src.detach()
        torch.testing.assert_close(new.detach(), expected, rtol=1e-6, atol=1e-7)
        assert not torch.equal(new.detach(), before)


def test_soft_update_with_tau_one_copies_the_source_exactly():
    torch.manual_seed(0)
    source, target = QEnsemble(3, 2, [4], ensemble_size=2), QEnsemble(3, 2, [4], ensemble_size=2)
    soft_update(target, source, tau=1.0)
    for new, src in zip(target.parameters(), source.parameters()):
        assert torch.equal(new, src)


def test_soft_update_leaves_the_source_alone_and_takes_no_gradient():
    torch.manual_seed(0)
    source, target = MLP(3, 2, [5]), MLP(3, 2, [5])
    before = [p.detach().clone() for p in source.parameters()]
    soft_update(target, source, tau=0.5)
    assert all(torch.equal(p, b) for p, b in zip(source.parameters(), before))
    assert all(p.grad is None for p in target.parameters())


# ---- Q-ensemble


def test_q_ensemble_returns_one_q_per_member_and_sample():
    q = QEnsemble(obs_dim=3, action_dim=2, hidden_dims=[8, 8], ensemble_size=5)(torch.randn(7, 3), torch.randn(7, 2))
    assert q.shape == (5, 7)


def test_q_ensemble_equals_each_member_run_as_its_own_linear_stack():
    torch.manual_seed(0)
    ensemble = QEnsemble(obs_dim=3, action_dim=2, hidden_dims=[8, 6], ensemble_size=3)
    obs, action = torch.randn(5, 3), torch.rand(5, 2) * 2 - 1
    q = ensemble(obs, action)
    for member in range(3):
        expected = member_as_linear_stack(ensemble, member)(torch.cat([obs, action], -1)).squeeze(-1)
        torch.testing.assert_close(q[member], expected, rtol=1e-5, atol=1e-6)


def test_q_ensemble_members_start_from_different_weights():
    ensemble = QEnsemble(obs_dim=3, action_dim=2, hidden_dims=[8, 8], ensemble_size=2)
    for layer in [*ensemble.hidden, ensemble.out]:
        assert not torch.equal(layer.weight[0], layer.weight[1])
        assert not torch.equal(layer.bias[0], layer.bias[1])
    q = ensemble(torch.randn(4, 3), torch.randn(4, 2))
    assert not torch.allclose(q[0], q[1])


def test_q_ensemble_member_gradients_stay_inside_that_member():
    torch.manual_seed(0)
    ensemble = QEnsemble(obs_dim=3, action_dim=2, hidden_dims=[8, 8], ensemble_size=2)
    ensemble(torch.randn(6, 3), torch.randn(6, 2))[0].sum().backward()
    for layer in [*ensemble.hidden, ensemble.out]:
        assert layer.weight.grad[0].abs().sum() > 0
        assert torch.equal(layer.weight.grad[1], torch.zeros_like(layer.weight.grad[1]))
        assert torch.equal(layer.bias.grad[1], torch.zeros_like(layer.bias.grad[1]))


def test_ensemble_linear_is_initialised_within_nn_linear_bounds():
    # kaiming_uniform_(a=sqrt(5)): gain sqrt(2 / (1 + 5)) * sqrt(3 / fan_in) = 1 / sqrt(fan_in), like the bias.
    torch.manual_seed(0)
    in_dim, out_dim, members = 64, 128, 4
    layer = EnsembleLinear(in_dim, out_dim, members)
    bound = 1.0 / math.sqrt(in_dim)
    assert layer.weight.shape == (members, in_dim, out_dim) and layer.bias.shape == (members, 1, out_dim)
    for values in (layer.weight, layer.bias):
        assert values.abs().max() <= bound
        assert values.abs().max() > 0.95 * bound  # the whole range is used, not a narrower init
        # Uniform on [-bound, bound]: standard deviation bound / sqrt(3).
        assert values.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    reference = nn.Linear(in_dim, out_dim)
    assert reference.weight.abs().max() <= bound  # the same bound nn.Linear itself keeps


# ---- actors


def test_gaussian_actor_log_prob_is_the_normal_log_density_summed_over_action_dims():
    torch.manual_seed(0)
    actor = GaussianActor(obs_dim=3, action_dim=2, hidden_dims=[8])
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([-0.5, 0.3]))
    obs, action = torch.randn(6, 3), torch.rand(6, 2) * 2 - 1
    mean = torch.tanh(actor.net(obs))
    expected = Normal(mean, torch.tensor([-0.5, 0.3]).exp()).log_prob(action).sum(-1)
    log_prob = actor.log_prob(obs, action)
    assert log_prob.shape == (6,)
    torch.testing.assert_close(log_prob, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(actor(obs), mean)


def test_gaussian_actor_clamps_log_std_to_its_bounds():
    torch.manual_seed(0)
    actor = GaussianActor(obs_dim=3, action_dim=2, hidden_dims=[8], log_std_min=-5.0, log_std_max=2.0)
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([-9.0, 7.0]))
    obs, action = torch.randn(4, 3), torch.rand(4, 2) * 2 - 1
    expected = Normal(torch.tanh(actor.net(obs)), torch.tensor([-5.0, 2.0]).exp()).log_prob(action).sum(-1)
    torch.testing.assert_close(actor.log_prob(obs, action), expected, rtol=1e-5, atol=1e-5)


def test_tanh_gaussian_sample_log_prob_follows_the_change_of_variables_formula():
    torch.manual_seed(0)
    actor = TanhGaussianActor(obs_dim=3, action_dim=2, hidden_dims=[8])
    obs = torch.randn(16, 3)
    torch.manual_seed(1)
    action, log_prob = actor.sample(obs)

    torch.manual_seed(1)
    mean, log_std = actor.net(obs).double().chunk(2, dim=-1)
    std = log_std.clamp(-5.0, 2.0).exp()
    u = mean + std * torch.randn(16, 2).double()  # the same draw sample() made
    # a = tanh(u): log pi(a) = log N(u; mean, std) - sum_j log |d tanh(u_j) / du_j| = ... - sum_j log(1 - tanh(u_j)^2)
    expected = Normal(mean, std).log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2).sum(-1)

    assert action.shape == (16, 2) and log_prob.shape == (16,)
    torch.testing.assert_close(action, torch.tanh(u).float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_prob.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actor(obs), torch.tanh(mean).float(), rtol=1e-5, atol=1e-6)


def test_tanh_gaussian_sample_is_reparameterised():
    torch.manual_seed(0)
    actor = TanhGaussianActor(obs_dim=3, action_dim=2, hidden_dims=[8])
    action, log_prob = actor.sample(torch.randn(4, 3))
    (action.sum() + log_prob.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())


def binary_actor(binary: list[int]) -> TanhGaussianActor:
    torch.manual_seed(0)
    return TanhGaussianActor(obs_dim=3, action_dim=3, hidden_dims=[8], binary=binary)


def test_tanh_gaussian_with_a_binary_element_acts_with_the_bound_its_logit_favours():
    actor = binary_actor([2])
    obs = torch.randn(64, 3) * 3
    mean, _ = actor.net(obs).chunk(2, dim=-1)
    action = actor(obs)
    torch.testing.assert_close(action[:, :2], torch.tanh(mean[:, :2]))
    assert torch.equal(action[:, 2], torch.where(mean[:, 2] > 0, 1.0, -1.0))
    assert (mean[:, 2] > 0).any() and (mean[:, 2] < 0).any()  # both bounds were exercised


def test_tanh_gaussian_binary_sample_is_bernoulli_over_the_bounds_with_its_log_mass():
    actor = binary_actor([2])
    obs = torch.randn(4, 3).repeat_interleave(4000, dim=0)
    torch.manual_seed(1)
    action, log_pi = actor.sample(obs)

    torch.manual_seed(1)
    mean, log_std = actor.net(obs).double().chunk(2, dim=-1)
    std = log_std.clamp(-5.0, 2.0).exp()
    u = mean[:, :2] + std[:, :2] * torch.randn(len(obs), 2).double()  # the continuous draw, then the Bernoulli's
    closed = torch.rand(len(obs), 1).double() < torch.sigmoid(mean[:, 2:])
    bound = torch.where(closed, 1.0, -1.0).double()
    expected = (Normal(mean[:, :2], std[:, :2]).log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2).sum(-1)
                + torch.log(torch.sigmoid(bound * mean[:, 2:])).sum(-1))
    torch.testing.assert_close(action[:, :2].double(), torch.tanh(u), rtol=1e-5, atol=1e-6)
    assert torch.equal(action[:, 2].double(), bound[:, 0])
    torch.testing.assert_close(log_pi.double(), expected, rtol=1e-5, atol=1e-5)
    # The frequency of +1 per state is the sigmoid of its logit (4000 draws: standard error <= 0.008).
    frequency = (action[:, 2] > 0).double().view(4, 4000).mean(1)
    torch.testing.assert_close(frequency, torch.sigmoid(mean[::4000, 2]), rtol=0, atol=0.04)
    # log_prob of a sampled action is its sample's log-probability (continuous part away from the bounds,
    # where atanh is exact in float32).
    inside = (action[:, :2].abs() < 0.99).all(-1)
    assert inside.sum() > 10_000
    torch.testing.assert_close(actor.log_prob(obs[inside], action[inside]), log_pi[inside], rtol=1e-4, atol=1e-4)


def test_tanh_gaussian_modes_enumerate_the_binary_bounds_and_their_gradient_is_the_q_difference():
    actor = binary_actor([0, 2])
    obs = torch.randn(5, 3)
    torch.manual_seed(2)
    actions, log_pi, probability = actor.sample_modes(obs)
    assert actions.shape == (4, 5, 3) and log_pi.shape == probability.shape == (4, 5)
    torch.testing.assert_close(probability.sum(0), torch.ones(5))
    assert torch.equal(actions[:, :, [0, 2]], torch.tensor([[-1.0, -1], [-1, 1], [1, -1], [1, 1]])[:, None].expand(4, 5, 2))
    assert torch.equal(actions[:, :, 1], actions[0, :, 1].expand(4, 5))  # one continuous draw for every mode
    for m in range(4):  # each mode's log pi is the sampled action's log-probability
        torch.testing.assert_close(actor.log_prob(obs, actions[m]), log_pi[m], rtol=1e-4, atol=1e-4)

    # The expectation of f over the modes of one binary element moves its logit by p (1 - p) (f(+1) - f(-1)):
    # with f = the element itself, f(+1) - f(-1) = 2, whatever side of 0 the logit is on.
    single = binary_actor([2])
    obs = torch.randn(7, 3)
    actions, _, probability = single.sample_modes(obs)
    expectation = (probability * actions[..., 2]).sum(0)
    expectation.sum().backward()
    p = torch.sigmoid(single.net(obs).detach()[:, 2])  # the logit's unit (means first, then log-stds)
    torch.testing.assert_close(expectation.detach(), 2 * p - 1)
    bias = single.net.net[-1].bias.grad  # d logit / d its output bias = 1
    torch.testing.assert_close(bias[2], (2 * p * (1 - p)).sum())
    assert bias[5] == 0  # the binary element's log-std output is unused


def test_a_gaussian_gripper_stays_in_a_q_valley_that_the_binary_actor_crosses():
    """The failure the binary element is for: Q(g) = (g + 0.2)^2 over the gripper g, higher at +1 (1.44)
    than at -1 (0.64) with a valley between. SAC's actor loss by gradient from g near -1 stays at -1; with
    the gripper binary it goes to +1."""
    def q(action: torch.Tensor) -> torch.Tensor:
        return (action[..., 1] + 0.2) ** 2

    final = {}
    for binary in ([], [1]):
        torch.manual_seed(0)
        actor = TanhGaussianActor(obs_dim=3, action_dim=2, hidden_dims=[16], binary=binary)
        with torch.no_grad():
            actor.net.net[-1].bias[1] = -2.0  # the gripper starts open (tanh(-2) = -0.96; P(+1) = 0.12)
        optimizer = torch.optim.Adam(actor.parameters(), lr=1e-2)
        obs = torch.randn(64, 3)
        for _ in range(300):
            actions, log_pi, probability = actor.sample_modes(obs)
            loss = (probability * (0.01 * log_pi - q(actions))).sum(0).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        final[bool(binary)] = actor(obs)[:, 1]
    assert (final[False] < -0.9).all()  # the Gaussian gripper never closes
    assert (final[True] == 1.0).all()  # the binary one does


def test_tanh_gaussian_snaps_binary_elements_and_refuses_bad_indices():
    actor = binary_actor([1])
    action = torch.tensor([[0.3, 0.2, -0.5], [-0.7, -0.01, 0.9]])
    assert torch.equal(actor.snap(action), torch.tensor([[0.3, 1.0, -0.5], [-0.7, -1.0, 0.9]]))
    assert binary_actor([]).snap(action) is action
    with pytest.raises(ValueError, match="distinct indices below 3"):
        TanhGaussianActor(obs_dim=3, action_dim=3, hidden_dims=[8], binary=[3])
    with pytest.raises(ValueError, match="distinct indices"):
        TanhGaussianActor(obs_dim=3, action_dim=3, hidden_dims=[8], binary=[1, 1])


def test_deterministic_actor_acts_within_minus_one_to_one():
    torch.manual_seed(0)
    actor = DeterministicActor(obs_dim=3, action_dim=2, hidden_dims=[8])
    with torch.no_grad():
        actor.net.net[-1].weight.mul_(100.0)  # push the pre-tanh outputs far outside [-1, 1]
    action = actor(torch.randn(32, 3) * 10)
    assert action.shape == (32, 2)
    assert action.abs().max() <= 1.0 and action.abs().max() > 0.99
