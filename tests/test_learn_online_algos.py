"""The online fine-tuning algorithms: the SAC base, Cal-QL, RLPD and WSRL, and every algorithm's explore/start_online.

Updates on hand-made batches are recomputed in float64 from copies of the networks taken before the update, with
the random draws reproduced by seeding the global RNG and drawing in the order update() does (as
test_learn_losses.py does for the offline algorithms). The training test runs each new algorithm through the
Trainer on a real reach2d dataset collected in MuJoCo. CPU only, tiny networks.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import os

import pytest
import tiny_learning
import torch
from robot_stack.sim.collect import collect
from tiny_learning import (
    ACTION_DIM,
    BATCH,
    every_q,
    f64,
    make_algorithm,
    parameters,
)
from torch import Tensor, nn
from torch.distributions import Normal

from robot_stack.errors import LearnError
from robot_stack.learn.algorithms import ALGORITHMS
from robot_stack.learn.algorithms.base import Algorithm
from robot_stack.learn.algorithms.sac import SAC
from robot_stack.learn.config import load_config
from robot_stack.learn.networks import QEnsemble
from robot_stack.learn.replay import Batch
from robot_stack.learn.trainer import Trainer, load_policy

os.environ.setdefault("MUJOCO_GL", "osmesa")

NEW = ["sac", "calql", "rlpd", "wsrl"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks on a shared 2-core machine: a second intra-op thread only contends (200 SAC updates took 39 s
    with 2 threads under load, 2 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_batch(seed: int = 0) -> Batch:
    # Around the initial critics' Q (|Q| < 1): Cal-QL's bound binds at some states and not at others.
    return tiny_learning.tiny_batch(seed, return_to_go=[5.0, -5.0, 0.05, -0.05, 0.2, -10.0])


def tanh_gaussian(actor: nn.Module, obs: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """a = tanh(mu + sigma eps), log pi(a|s) = log N(u; mu, sigma) - sum_j log(1 - tanh(u_j)^2)."""
    mean, log_std = actor.net(obs).chunk(2, dim=-1)
    std = log_std.clamp(actor.log_std_min, actor.log_std_max).exp()
    u = mean + std * eps
    return torch.tanh(u), Normal(mean, std).log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2).sum(-1)


def perturb(algo: Algorithm, names: tuple[str, ...] = ("critic", "critic_target")) -> None:
    """Move the named modules' parameters off their initial values (LayerNorm gains off 1, targets off their sources)."""
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name in names:
            for p in getattr(algo, name).parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=generator))


def assert_loss(value: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(value.double(), expected, rtol=1e-4, atol=1e-5)


# ---- SAC and RLPD: the update against the paper's formulas


@pytest.mark.parametrize("algo_name", ["sac", "rlpd"])
def test_sac_update_is_the_papers_and_rlpd_takes_the_target_over_a_random_pair_of_ten_layernorm_critics(algo_name):
    """sac: twin critics, the actor on their min, target min over both, entropy in the backup, H = -dim(A).
    rlpd: 10 LayerNorm critics, the actor on their mean, target min over a random pair, H = -dim(A)/2, no entropy
    in the backup (rewards <= 0 with a terminal success: see configs/rlpd.yaml)."""
    algo, batch = make_algorithm(algo_name), tiny_batch()
    c = algo.config
    rlpd = algo_name == "rlpd"
    assert (c.n_critics, c.critic_subset, c.layer_norm, c.actor_q) == ((10, 2, True, "mean") if rlpd else (2, None, False, "min"))
    assert (algo.critic.norms is not None) == rlpd
    assert algo.target_entropy == (-1.0 if rlpd else -2.0)
    assert c.backup_entropy == (not rlpd)
    perturb(algo)
    actor, critic, critic_target = (f64(m) for m in (algo.actor, algo.critic, algo.critic_target))
    old_target, alpha = parameters(algo.critic_target), algo.temperature().item()
    old_log_alpha = algo.temperature.log_alpha.item()
    torch.manual_seed(7)
    losses = algo.update(batch)

    s, a, r, s2 = (t.double() for t in (batch.obs["state"], batch.action, batch.reward, batch.next_obs["state"]))
    discount, terminal = batch.discount.double(), batch.terminal.double()
    # update()'s draws in order: the actor's sample at s, the next action at s', then (rlpd) the target's subset.
    torch.manual_seed(7)
    eps_actor, eps_next = torch.randn(BATCH, ACTION_DIM).double(), torch.randn(BATCH, ACTION_DIM).double()
    members = torch.rand(c.n_critics).argsort()[:2] if rlpd else torch.arange(2)

    sampled, log_pi = tanh_gaussian(actor, s, eps_actor)
    q_pi = every_q(critic, s, sampled)
    q_pi = q_pi.mean(dim=0) if rlpd else q_pi.min(dim=0).values
    assert_loss(losses["actor_loss"], (alpha * log_pi - q_pi).mean())
    gradient = -(log_pi + algo.target_entropy).mean().item()  # Adam's first step: lr against the gradient's sign
    assert algo.temperature.log_alpha.item() == pytest.approx(old_log_alpha - c.alpha_lr * math.copysign(1, gradient))

    next_action, next_log_pi = tanh_gaussian(f64(algo.actor), s2, eps_next)  # the actor after its step
    next_q = every_q(critic_target, s2, next_action)
    entropy_term = 0.0 if rlpd else alpha * next_log_pi
    y = r + discount * (1 - terminal) * (next_q[members].min(dim=0).values - entropy_term)
    td = ((every_q(critic, s, a) - y) ** 2).mean(dim=1)
    assert_loss(losses["td_loss"], td.mean())
    assert_loss(losses["critic_loss"], td.sum())
    if rlpd:  # the pair, not the whole ensemble, sets the target
        y_all = r + discount * (1 - terminal) * next_q.min(dim=0).values
        assert not torch.allclose(y, y_all)
    for new, old, src in zip(algo.critic_target.parameters(), old_target, algo.critic.parameters()):
        torch.testing.assert_close(new.detach(), (1 - c.tau) * old + c.tau * src.detach(), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("algo_name", ["rlpd", "wsrl"])
def test_a_critic_only_update_leaves_the_actor_and_temperature_alone(algo_name):
    """update_actor False (the updates between two of RLPD's actor updates) trains the critic and its target only."""
    algo = make_algorithm(algo_name, n_actions=2) if algo_name == "wsrl" else make_algorithm(algo_name)
    actor, temperature, critic = (parameters(m) for m in (algo.actor, algo.temperature, algo.critic))
    losses = algo.update(tiny_batch(), update_actor=False)
    assert "actor_loss" not in losses and torch.isfinite(losses["critic_loss"])
    assert all(torch.equal(p, b) for p, b in zip(algo.actor.parameters(), actor))
    assert all(torch.equal(p, b) for p, b in zip(algo.temperature.parameters(), temperature))
    assert any(not torch.equal(p, b) for p, b in zip(algo.critic.parameters(), critic))


def test_rlpd_target_subsets_are_fresh_pairs_of_distinct_members_each_update():
    algo = make_algorithm("rlpd")
    torch.manual_seed(0)
    subsets = [algo.target_members().tolist() for _ in range(30)]
    assert all(len(pair) == 2 and pair[0] != pair[1] and 0 <= min(pair) and max(pair) < 10 for pair in subsets)
    assert len({tuple(sorted(pair)) for pair in subsets}) > 5  # drawn anew, not one fixed pair
    # target_q is the min over exactly the drawn members.
    perturb(algo)
    obs, action = torch.randn(BATCH, 3), torch.rand(BATCH, ACTION_DIM) * 2 - 1
    torch.manual_seed(3)
    members = algo.target_members()
    torch.manual_seed(3)
    target = algo.target_q(obs, action)
    every = every_q(f64(algo.critic_target), obs.double(), action.double())
    assert_loss(target, every[members].min(dim=0).values)
    assert make_algorithm("sac").target_members() is None  # critic_subset null: all members, no draw


def test_layer_norm_critic_normalises_each_hidden_layer_with_its_members_own_gain_and_bias():
    critic = QEnsemble(3, 2, [8, 8], ensemble_size=4, layer_norm=True)
    perturb_module = copy.deepcopy(critic)
    with torch.no_grad():
        for p in perturb_module.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    obs, action = torch.randn(5, 3) * 10, torch.rand(5, 2)
    torch.testing.assert_close(perturb_module(obs, action).double(),
                               every_q(f64(perturb_module), obs.double(), action.double()), rtol=1e-5, atol=1e-5)
    # Members picked by index run those members' layers and norms, in that order.
    picked = torch.tensor([3, 1])
    torch.testing.assert_close(perturb_module(obs, action, members=picked), perturb_module(obs, action)[picked])
    plain = QEnsemble(3, 2, [8, 8], ensemble_size=4)
    assert plain.norms is None and len(list(plain.parameters())) + 4 == len(list(critic.parameters()))


# ---- Cal-QL


def test_calql_penalty_sees_the_policys_q_no_lower_than_the_return_to_go_where_the_bound_binds():
    calql = make_algorithm("calql", n_actions=4)
    assert calql.config.calibrated and calql.config.max_target_backup  # the Cal-QL authors' defaults
    plain = copy.deepcopy(calql)
    plain.config = dataclasses.replace(plain.config, calibrated=False)
    batch, n = tiny_batch(), 4
    obs, next_obs = calql.encode(batch.obs), calql.encode(batch.next_obs)
    seen = {}
    for name, algo in (("calibrated", calql), ("plain", plain)):
        torch.manual_seed(5)  # the same sampled actions for both
        seen[name] = algo.sampled_q(obs, next_obs, batch.return_to_go)[0].detach()  # [E, B, 3n]
    bound = batch.return_to_go[None, :, None]
    policy_cal, policy_plain = seen["calibrated"][..., n:], seen["plain"][..., n:]  # the policy's 2n actions
    binds = policy_plain < bound
    assert binds.any() and (~binds).any(), "the batch must have states where the bound binds and where it does not"
    assert (policy_cal >= bound).all()
    assert torch.equal(policy_cal[binds], bound.expand_as(policy_cal)[binds])
    assert not torch.equal(policy_cal[binds], policy_plain[binds])  # the uncalibrated penalty differs there
    assert torch.equal(policy_cal[~binds], policy_plain[~binds])
    assert torch.equal(seen["calibrated"][..., :n], seen["plain"][..., :n])  # uniform actions are never lifted
    # Through update(): the penalty the critic is trained on is the calibrated one.
    results = []
    for algo in (calql, plain):
        torch.manual_seed(9)
        results.append(algo.update(batch)["cql_penalty"])
    assert not torch.isclose(results[0], results[1])


def test_calql_keeps_its_calibration_online_and_refuses_to_be_uncalibrated():
    calql = make_algorithm("calql")
    calql.start_online()
    assert calql.penalty_weight.item() == 1.0 and calql.config.calibrated
    with pytest.raises(LearnError, match="calql is CQL with calibrated: true; train --algo cql"):
        load_config("calql", overrides={"algorithm.calibrated": "false"})


# ---- WSRL


def test_wsrl_start_online_drops_the_penalty_and_updates_exactly_as_sac_on_the_same_networks():
    wsrl, batch = make_algorithm("wsrl", n_actions=3), tiny_batch()
    c = wsrl.config
    assert (c.n_critics, c.critic_subset, c.layer_norm, c.calibrated) == (10, 2, True, True)
    for _ in range(2):  # a little pre-training, so the optimizers carry state across the switch
        wsrl.update(batch)
    sac = SAC(wsrl.spec, wsrl.train_config, torch.device("cpu"))  # plain SAC with WSRL's networks and options
    sac.load_state_dict(copy.deepcopy(wsrl.state_dict()))
    captured = copy.deepcopy(wsrl)  # stands in for a step compiled or captured before the switch

    def update(algo: Algorithm) -> dict[str, Tensor]:
        torch.manual_seed(21)
        return algo.update(batch)

    before = update(copy.deepcopy(wsrl))
    reference = update(copy.deepcopy(sac))
    assert before["critic_loss"] > reference["critic_loss"] + 1.0  # offline: Cal-QL's penalty is in the loss

    wsrl.start_online()
    wsrl.start_online()  # idempotent: a resumed run calls it again
    captured.start_online()
    captured.online = False  # what a pre-switch graph runs: the penalty path, reading penalty_weight 0
    reference_sac = copy.deepcopy(sac)
    expected = update(reference_sac)
    for algo in (wsrl, captured):
        losses = update(algo)
        assert_loss(losses["critic_loss"], expected["critic_loss"].double())
        assert_loss(losses["critic_loss"], expected["td_loss"].double() * c.n_critics)
        assert_loss(losses["actor_loss"], expected["actor_loss"].double())
        for name in ("critic", "actor", "temperature", "critic_target"):
            for mine, theirs in zip(getattr(algo, name).parameters(), getattr(reference_sac, name).parameters()):
                torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert "cql_penalty" not in update(wsrl)  # the eager path skips the penalty's sampling altogether


# ---- every algorithm: explore, act, start_online, checkpoints


@pytest.mark.parametrize("algo_name", list(ALGORITHMS))
def test_explore_is_stochastic_and_in_bounds_while_act_is_deterministic(algo_name):
    algo = make_algorithm(algo_name)
    obs = {"state": torch.randn(256, 3) * 20}  # far out: the means sit near the bounds, noise would cross them
    first, second = algo.act(obs), algo.act(obs)
    assert torch.equal(first, second) and first.abs().max() <= 1
    explored, again = algo.explore(obs), algo.explore(obs)
    assert explored.shape == (256, ACTION_DIM) and not explored.requires_grad
    assert explored.abs().max() <= 1 and again.abs().max() <= 1
    assert not torch.equal(explored, again) and not torch.equal(explored, first)
    algo.start_online()  # every algorithm has the switch (a no-op for most)
    assert torch.equal(algo.act(obs), first)


def test_explore_of_a_binary_element_draws_both_bounds_and_only_them():
    algo = make_algorithm("rlpd", binary_actions=["1"])
    explored = algo.explore({"state": torch.randn(256, 3) * 0.01})  # logits near 0: both bounds are likely
    assert set(explored[:, 1].tolist()) == {-1.0, 1.0}
    assert (explored[:, 0].abs() < 1).all() and explored[:, 0].unique().numel() > 200


@pytest.mark.parametrize("algo_name", NEW)
def test_new_algorithm_loaded_from_a_saved_state_acts_and_learns_identically(algo_name):
    small = {"n_actions": 3} if algo_name in ("calql", "wsrl") else {}
    trained, batch = make_algorithm(algo_name, seed=0, **small), tiny_batch()
    for step in range(3):
        torch.manual_seed(step)
        trained.update(batch)
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    fresh = make_algorithm(algo_name, seed=1, **small)
    obs = {"state": torch.randn(5, 3)}
    assert not torch.equal(fresh.act(obs), trained.act(obs))
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh.act(obs), trained.act(obs))
    for algo in (trained, fresh):  # a resume into the online phase calls start_online on the loaded algorithm
        algo.start_online()
    losses = []
    for algo in (trained, fresh):
        torch.manual_seed(100)
        losses.append(algo.update(batch))
    assert losses[0].keys() == losses[1].keys()
    assert all(torch.equal(losses[0][key], losses[1][key]) for key in losses[0])
    assert torch.equal(fresh.temperature.log_alpha, trained.temperature.log_alpha)
    assert torch.equal(fresh.act(obs), trained.act(obs))


# ---- configs


def test_online_algorithm_defaults_are_the_papers():
    rlpd = load_config("rlpd", online="sim:reach2d")
    assert (rlpd.utd, rlpd.online_ratio, rlpd.steps) == (20, 0.5, 0)
    assert (rlpd.algorithm.n_critics, rlpd.algorithm.critic_subset, rlpd.algorithm.layer_norm) == (10, 2, True)
    wsrl = load_config("wsrl")
    assert (wsrl.utd, wsrl.online_ratio, wsrl.warmup_steps) == (4, 1.0, 5000)
    assert (wsrl.algorithm.n_critics, wsrl.algorithm.critic_subset, wsrl.algorithm.calibrated) == (10, 2, True)
    calql = load_config("calql")
    assert (calql.online_ratio, calql.algorithm.alpha, calql.algorithm.calibrated) == (0.5, 5.0, True)
    sac = load_config("sac")
    assert (sac.algorithm.n_critics, sac.algorithm.backup_entropy, sac.algorithm.critic_subset) == (2, True, None)
    assert load_config("cql").algorithm.backup_entropy is False  # CQL's numbers unchanged by its new base


@pytest.mark.parametrize("algo, overrides, message", [
    ("rlpd", {"algorithm.critic_subset": "11", "steps": "10"}, r"algorithm.critic_subset must be between 1 and n_critics \(10\), got 11"),
    ("sac", {"algorithm.critic_subset": "0"}, r"critic_subset must be between 1 and n_critics \(2\), got 0"),
    ("wsrl", {"algorithm.n_critics": "1"}, r"critic_subset must be between 1 and n_critics \(1\), got 2"),
    ("sac", {"algorithm.actor_q": "max"}, "algorithm.actor_q must be min or mean, got 'max'"),
    ("rlpd", {"algorithm.actor_every": "-1", "steps": "10"}, "algorithm.actor_every must be >= 0"),
    ("sac", {"algorithm.layer_norm": "maybe"}, "layer_norm: 'maybe' is not a bool"),
    ("rlpd", {}, r"steps 0 \(no offline phase\) is for online runs: give --online sim:TASK or robot, or --steps N"),
])
def test_online_algorithm_options_are_checked_at_load_in_one_line(algo, overrides, message):
    with pytest.raises(LearnError, match=message) as error:
        load_config(algo, overrides=overrides)
    assert "\n" not in str(error.value)


def test_rlpd_updates_its_actor_once_per_environment_step():
    assert make_algorithm("rlpd").actor_every == load_config("rlpd", online="sim:reach2d").utd == 20
    assert make_algorithm("sac").actor_every == 1
    assert make_algorithm("wsrl").actor_every == 1


# ---- training through the Trainer


@pytest.fixture(scope="module")
def reach_medium(tmp_path_factory):
    """16 reach2d episodes, mostly medium skill, with the sim reward recorded."""
    return collect("reach2d", tmp_path_factory.mktemp("data") / "reach_medium.zarr", 16,
                   mix={"expert": 0.25, "medium": 0.75}, seed=0, progress=False)


@pytest.mark.parametrize("algo", NEW)
def test_new_algorithm_trains_a_few_hundred_updates_on_reach2d_and_its_checkpoint_acts(reach_medium, tmp_path, algo):
    config = load_config(algo, dataset=str(reach_medium.path), steps=200, batch_size=32, hidden_dims=[32, 32],
                         eval_every=-1, log_every=50, checkpoint_every=1000, device="cpu", out=str(tmp_path / algo),
                         overrides={"algorithm.n_actions": 4} if algo in ("calql", "wsrl") else None)
    trainer = Trainer(config, progress=False)
    before = {name: parameters(module) for name, module in trainer.algorithm._modules().items()}
    result = trainer.run()  # raises LearnError if a logged loss went non-finite
    assert result["steps"] == 200
    for name in ("actor", "critic", "temperature"):
        after = list(getattr(trainer.algorithm, name).parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before[name])), f"{name} did not learn"
        assert all(torch.isfinite(p).all() for p in after)
    algorithm, spec, loaded = load_policy(tmp_path / algo)
    assert loaded.algo == algo and type(algorithm) is type(trainer.algorithm)
    obs = {"state": torch.randn(4, spec.state_dim)}
    assert torch.equal(algorithm.act(obs), trainer.algorithm.act(obs))
    assert algorithm.explore(obs).abs().max() <= 1
