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


def test_deterministic_actor_acts_within_minus_one_to_one():
    torch.manual_seed(0)
    actor = DeterministicActor(obs_dim=3, action_dim=2, hidden_dims=[8])
    with torch.no_grad():
        actor.net.net[-1].weight.mul_(100.0)  # push the pre-tanh outputs far outside [-1, 1]
    action = actor(torch.randn(32, 3) * 10)
    assert action.shape == (32, 2)
    assert action.abs().max() <= 1.0 and action.abs().max() > 0.99
