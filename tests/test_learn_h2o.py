"""Hybrid sim-real training (robot_stack.learn.algorithms.h2o): H2O's discriminators, dynamics ratio, gap and penalty,
DARC's reward correction, the sampler's sim-row marks, evaluations in the dataset's dynamics, a short run that
exports, and the one-line errors.

Real components: reach2d transitions stepped in MuJoCo under two dynamics from the SAME states and commands (so
only s' differs: a sim state is copied into the variant before each step), datasets collected by the scripted
experts, the CLI. Networks are 64 units, one thread.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from robot_stack.cli.main import main as cli
from robot_stack.errors import LearnError
from robot_stack.learn.algorithms import algorithm_class
from robot_stack.learn.algorithms.h2o import gap_penalty
from robot_stack.learn.config import load_config
from robot_stack.learn.observations import ObservationSpec, build_spec
from robot_stack.learn.online_replay import MixedSampler, OnlineReplay
from robot_stack.learn.replay import Batch, build_replay
from robot_stack.sim.collect import collect
from robot_stack.sim.task import make_task

os.environ.setdefault("MUJOCO_GL", "osmesa")
STATE = ("joint_position", "joint_velocity", "eef_pose", "object_pose")
WEAK = {"actuator_gain": 0.3}  # reach2d's arm at 30% torque: s' after the same (s, a) is clearly elsewhere


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: the networks are tiny


def transitions(count: int, seed: int, **dynamics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s, a, s') [count, ...] of reach2d: states visited by random commands under nominal dynamics; from each, the
    same random command stepped in an env with `dynamics` (nominal when none) after copying the state into it."""
    rng = np.random.default_rng(seed)
    walker = make_task("reach2d", seed=seed)
    stepper = make_task("reach2d", seed=seed, **dynamics)
    states, actions, next_states = [], [], []
    episode = 0
    while len(states) < count:
        walker.reset(seed=int(rng.integers(1 << 30)))
        stepper.reset(seed=episode)
        episode += 1
        for _ in range(10):
            walker.step(rng.uniform(-1, 1, 2))
            stepper.set_state(walker.get_state())
            observation = walker.observe()
            action = rng.uniform(-1, 1, 2)
            stepper.step(action)
            states.append(np.concatenate([np.ravel(observation[k]) for k in STATE]))
            actions.append(action)
            following = stepper.observe()
            next_states.append(np.concatenate([np.ravel(following[k]) for k in STATE]))
    walker.close()
    stepper.close()
    return tuple(np.asarray(x[:count], np.float32) for x in (states, actions, next_states))


@pytest.fixture(scope="module")
def reach_transitions():
    """Sim (nominal) transitions, "real" ones under a large gap (30% torque), real ones with no gap (nominal, other
    states), and held-out sim ones: 1,200 each, normalized with the sim ones' statistics."""
    sim = transitions(1200, seed=0)
    gap = transitions(1200, seed=1, **WEAK)
    same = transitions(1200, seed=2)
    held_sim = transitions(600, seed=3)
    held_gap = transitions(600, seed=4, **WEAK)
    mean, std = sim[0].mean(0), np.maximum(sim[0].std(0), 1e-3)

    def normalized(data):
        s, a, s2 = data
        return torch.tensor((s - mean) / std), torch.tensor(a), torch.tensor((s2 - mean) / std)

    return {name: normalized(data) for name, data in
            {"sim": sim, "gap": gap, "same": same, "held_sim": held_sim, "held_gap": held_gap}.items()}


def spec_of(state_dim: int) -> ObservationSpec:
    return ObservationSpec(state={"x": [state_dim]}, mean=[0.0] * state_dim, std=[1.0] * state_dim,
                           action_low=[-1.0, -1.0], action_high=[1.0, 1.0])


def make(algo: str, state_dim: int, seed: int = 0, **algorithm):
    overrides = {f"algorithm.{key}": value for key, value in algorithm.items()}
    config = load_config(algo, overrides=overrides, online="sim:reach2d", device="cpu", hidden_dims=[64, 64])
    torch.manual_seed(seed)
    return algorithm_class(algo)(spec_of(state_dim), config, torch.device("cpu"))


def mixed_batch(real, sim, size: int, generator: torch.Generator) -> Batch:
    """size/2 real rows then size/2 sim rows (Batch.online 0 then 1), rewards 0, nothing terminal."""
    half = size // 2
    rows = [torch.randint(len(part[0]), (half,), generator=generator) for part in (real, sim)]
    s, a, s2 = (torch.cat([real[i][rows[0]], sim[i][rows[1]]]) for i in range(3))
    zeros = torch.zeros(2 * half)
    return Batch(obs={"state": s}, action=a, reward=zeros, next_obs={"state": s2}, discount=zeros + 0.99,
                 terminal=zeros, online=torch.cat([torch.zeros(half), torch.ones(half)]))


def train_discriminators(algorithm, real, sim, steps: int = 600, size: int = 256) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = mixed_batch(real, sim, size, generator)
        algorithm.discriminator_step(batch, batch.online)


def held_out_accuracy(algorithm, real, sim) -> float:
    """Balanced accuracy of the (s, a, s') discriminator on held-out real and sim transitions."""
    with torch.no_grad():
        real_logit = algorithm.discriminators.logits(*real)[1]
        sim_logit = algorithm.discriminators.logits(*sim)[1]
    return 0.5 * (float((real_logit > 0).float().mean()) + float((sim_logit < 0).float().mean()))


@pytest.fixture(scope="module")
def trained(reach_transitions):
    """H2O's discriminators trained on real = the large-gap variant (gap) and on real = nominal (same), sim = nominal."""
    torch.set_num_threads(1)
    data = reach_transitions
    state_dim = data["sim"][0].shape[1]
    models = {}
    for name in ("gap", "same"):
        algorithm = make("h2o", state_dim, gap_noise=0.0)
        train_discriminators(algorithm, data[name], data["sim"])
        models[name] = algorithm
    return models


def test_the_discriminators_separate_sim_from_real_on_a_large_gap_and_not_on_the_nominal(trained, reach_transitions):
    data = reach_transitions
    # Held out: variant transitions from new states vs sim ones; nominal vs nominal from new states.
    gap = held_out_accuracy(trained["gap"], data["held_gap"], data["held_sim"])
    same = held_out_accuracy(trained["same"], data["same"], data["held_sim"])
    assert gap > 0.85, gap
    assert same < 0.62, same


def test_weights_are_lower_and_the_gap_higher_for_gap_transitions_than_for_no_gap_ones(trained, reach_transitions):
    """The same held-out sim transitions judged by the model that saw a gap and by the one that saw none: with the
    signs of the module docstring the first trusts them less (w = P/P^ lower) and finds a larger gap (u = KL(P^||P)).
    Flip either sign and this fails (a flipped ratio is > 1 where P^ is wrong and clips at 1; a flipped gap is < 0
    and clips at gap_min)."""
    held = reach_transitions["held_sim"]
    out = {}
    for name, algorithm in trained.items():
        batch = Batch(obs={"state": held[0]}, action=held[1], reward=torch.zeros(len(held[0])),
                      next_obs={"state": held[2]}, discount=torch.ones(len(held[0])), terminal=torch.zeros(len(held[0])),
                      online=torch.ones(len(held[0])))
        c = algorithm.config
        with torch.no_grad():
            weight = algorithm.discriminators.log_ratio(held[0], held[1], held[2]).exp().clamp(c.ratio_min, c.ratio_max)
            gap = algorithm.dynamics_gap(batch)
        out[name] = (float(weight.mean()), float(gap.mean()))
    (w_gap, u_gap), (w_same, u_same) = out["gap"], out["same"]
    assert w_gap < 0.5 * w_same, out
    assert u_gap > 1.0 and u_gap > 5 * u_same, out


def test_the_gap_is_the_mean_log_ratio_sim_over_real_and_the_weight_its_clipped_inverse(trained, reach_transitions):
    """By hand from the two discriminators' logits (gap_noise 0: every perturbed s' is s')."""
    algorithm = trained["gap"]
    s, a, s2 = (x[:32] for x in reach_transitions["held_sim"])
    with torch.no_grad():
        l_sa = algorithm.discriminators.sa(torch.cat([s, a], 1)).squeeze(1).double()
        l_sas = l_sa + algorithm.discriminators.sas(torch.cat([s, a, s2], 1)).squeeze(1).double()  # l_sa + h
        torch.testing.assert_close(algorithm.discriminators.logits(s, a, s2)[1].double(), l_sas)
        batch = Batch(obs={"state": s}, action=a, reward=torch.zeros(32), next_obs={"state": s2},
                      discount=torch.ones(32), terminal=torch.zeros(32), online=torch.ones(32))
        gap = algorithm.dynamics_gap(batch).double()
    c = algorithm.config
    expected_gap = (l_sa - l_sas).clamp(c.gap_min, c.gap_max)  # log P^/P = l_sa - l_sas
    torch.testing.assert_close(gap, expected_gap, rtol=1e-5, atol=1e-5)
    weight = algorithm.discriminators.log_ratio(s, a, s2).exp().clamp(c.ratio_min, c.ratio_max).double()
    torch.testing.assert_close(weight, torch.exp(l_sas - l_sa).clamp(c.ratio_min, c.ratio_max), rtol=1e-5, atol=1e-7)


def test_the_gap_penalty_matches_a_hand_computed_value_on_a_tiny_batch():
    q = torch.tensor([[1.0, 2.0, -1.0, 0.5, 3.0],
                      [0.0, 1.5, -2.0, 1.0, 2.0]], dtype=torch.float64)
    gap = torch.tensor([9.0, 0.5, 1.0, 3.0, 2.0], dtype=torch.float64)
    sim = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)  # rows 1-3 sim, rows 0 and 4 real
    # omega over the sim rows: 0.5, 1, 3 / 4.5; logsumexp_i (Q_i + log omega_i) = log sum_i omega_i e^Q_i.
    omega = [0.5 / 4.5, 1.0 / 4.5, 3.0 / 4.5]
    expected = []
    for critic in range(2):
        row = q[critic].tolist()
        soft = math.log(omega[0] * math.exp(row[1]) + omega[1] * math.exp(row[2]) + omega[2] * math.exp(row[3]))
        expected.append(soft - (row[0] + row[4]) / 2)
    torch.testing.assert_close(gap_penalty(q, gap, sim), torch.tensor(expected, dtype=torch.float64))
    # By hand: critic 0: log(e^2/9 + e^-1*2/9 + e^0.5*6/9) - 2 = 0.2779...
    assert expected[0] == pytest.approx(math.log(math.exp(2) / 9 + 2 * math.exp(-1) / 9 + 6 * math.exp(0.5) / 9) - 2)
    # A batch with no sim rows (or no real ones) has no penalty.
    assert torch.equal(gap_penalty(q, gap, torch.zeros(5, dtype=torch.float64)), torch.zeros(2, dtype=torch.float64))


def test_an_h2o_update_weighs_sim_td_errors_and_adds_the_penalty(trained, reach_transitions):
    """One update's critic loss equals sum over critics of the real TD mean + the weighted sim TD mean + beta x the
    penalty, recomputed from the losses it reports; the weight and gap it logs are P/P^ clipped and -log P/P^ of its
    sim rows by the discriminators it just stepped (trained on a large gap first, so a flipped sign shows)."""
    data = reach_transitions
    algorithm = make("h2o", data["sim"][0].shape[1], penalty_weight=0.5, gap_noise=0.0)
    algorithm.discriminators.load_state_dict(trained["gap"].discriminators.state_dict())
    generator = torch.Generator().manual_seed(1)
    batch = mixed_batch(data["gap"], data["sim"], 64, generator)
    metrics = algorithm.update(batch)
    expected = 2 * (metrics["td_real"] + metrics["td_sim"] + 0.5 * metrics["gap_penalty"])  # 2 critics, means reported
    assert float(metrics["critic_loss"]) == pytest.approx(float(expected), rel=1e-4)
    c = algorithm.config
    with torch.no_grad():
        h = algorithm.discriminators.log_ratio(batch.obs["state"], batch.action, batch.next_obs["state"])[32:]
    assert float(metrics["dynamics_ratio"]) == pytest.approx(float(h.exp().clamp(c.ratio_min, c.ratio_max).mean()), rel=1e-4)
    assert float(metrics["dynamics_gap"]) == pytest.approx(float((-h).clamp(c.gap_min, c.gap_max).mean()), rel=1e-4)
    assert float(metrics["dynamics_ratio"]) < 0.5 and float(metrics["dynamics_gap"]) > 1.0
    assert set(metrics) >= {"d_sa_loss", "d_sas_loss", "d_sas_accuracy", "actor_loss", "entropy"}


def test_darc_adds_the_clipped_log_ratio_to_sim_rewards_only(trained, reach_transitions, monkeypatch):
    from robot_stack.learn.algorithms.sac import SAC

    data = reach_transitions
    algorithm = make("darc", data["sim"][0].shape[1], correction_clip=0.5)
    algorithm.discriminators.load_state_dict(trained["gap"].discriminators.state_dict())
    seen = {}
    original = SAC.update  # what DARC hands the corrected batch to

    def spy(self, batch, update_actor=True):
        seen["reward"] = batch.reward.clone()
        return original(self, batch, update_actor)

    monkeypatch.setattr(SAC, "update", spy)
    generator = torch.Generator().manual_seed(2)
    batch = mixed_batch(data["gap"], data["sim"], 64, generator)
    batch.reward = torch.linspace(-1, 0, 64)
    metrics = algorithm.update(batch)
    with torch.no_grad():  # the discriminators after this update's step: what the correction was computed with
        log_ratio = algorithm.discriminators.log_ratio(batch.obs["state"], batch.action, batch.next_obs["state"])
    correction = seen["reward"] - batch.reward
    assert torch.equal(correction[:32], torch.zeros(32))  # real rows keep their rewards
    torch.testing.assert_close(correction[32:], log_ratio[32:].clamp(-0.5, 0.5))
    assert float(correction[32:].abs().max()) == pytest.approx(0.5)  # a large gap: the clip binds
    assert float(metrics["reward_correction"]) == pytest.approx(float(correction[32:].mean()), abs=1e-6)


# -- the sampler's marks, the evaluation dynamics, a short run, errors ---------------------------------------------


@pytest.fixture(scope="module")
def weak_dataset(tmp_path_factory):
    """12 medium reach2d episodes recorded under weak_actuators: the "real" robot."""
    return collect("reach2d", tmp_path_factory.mktemp("hybrid") / "real.zarr", 12, mix={"medium": 1.0}, seed=0,
                   dynamics="weak_actuators", progress=False)


@pytest.mark.parametrize("ratio", [0.25, "proportional"])
def test_every_mixed_batch_marks_its_online_rows(weak_dataset, ratio):
    spec = build_spec(weak_dataset, [], [])
    offline = build_replay(weak_dataset, spec, "sim")
    online = OnlineReplay(spec, 400)
    from robot_stack.learn.online_replay import Episode

    where = weak_dataset.episode_slice(0)
    observations = {name: weak_dataset.frames(name, where.start, where.stop) for name in weak_dataset.features}
    marked = np.full(where.stop - where.start, 100.0, np.float32)  # no offline transition earns 100
    online.add_episode(Episode(observations, observations["action"], marked, False))
    batch = MixedSampler(offline, online, ratio).sample(256)
    assert torch.equal(batch.online == 1, batch.reward == 100.0)
    if ratio == 0.25:
        assert int(batch.online.sum()) == 64
    assert MixedSampler(offline, OnlineReplay(spec, 400), ratio).sample(8).online is None  # offline mode: all real


def test_hybrid_runs_and_offline_runs_evaluate_in_the_datasets_dynamics(weak_dataset, tmp_path):
    from robot_stack.learn.evaluate import evaluation_dynamics

    provenance = weak_dataset.provenance
    assert provenance["sim_collect"]["dynamics"] == "weak_actuators"
    cases = [({"algo": "iql"}, "weak_actuators"),  # offline: the data's dynamics
             ({"algo": "h2o", "online": "sim:reach2d:sim", "steps": 0, "warmup_steps": 30}, "weak_actuators"),
             ({"algo": "iql", "online": "sim:reach2d:laggy"}, "laggy"),  # fine-tuning: where it interacts
             ({"algo": "iql", "online": "sim:reach2d"}, None),
             ({"algo": "sac", "online": "sim:reach2d", "eval_dynamics": "dataset"}, "weak_actuators"),  # --sim
             ({"algo": "iql", "eval_dynamics": "noisy"}, "noisy")]
    for fields, expected in cases:
        config = load_config(fields.pop("algo"), dataset=str(weak_dataset.path), **fields)
        assert evaluation_dynamics(config, provenance) == expected, (fields, expected)


@pytest.fixture(scope="module")
def h2o_run(weak_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "h2o"
    code = cli(["train", "--algo", "h2o", "--dataset", str(weak_dataset.path), "--sim", "reach2d:sim",
                "--online-steps", "150", "--warmup-steps", "60", "--batch-size", "64", "--eval-episodes", "3",
                "--online-eval-every", "0", "--device", "cpu", "--out", str(out), "--no-progress",
                "--set", "hidden_dims=[32,32]", "--set", "log_every=30"])
    return code, out


def test_a_short_h2o_run_trains_logs_its_weights_and_exports(h2o_run, tmp_path):
    code, out = h2o_run
    assert code == 0
    info = json.loads((out / "run.json").read_text())
    assert info["eval_dynamics"] == "weak_actuators" and info["config"]["online"] == "sim:reach2d:sim"
    result = json.loads((out / "result.json").read_text())
    assert result["online"]["env_steps"] == 150 and result["online"]["updates"] == 90  # 60 warm-up steps, no updates
    rows = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [30, 60, 90]
    assert all(0 < row["dynamics_ratio"] <= 1 and row["dynamics_gap"] > 0 for row in rows)
    model = tmp_path / "h2o.onnx"
    assert cli(["export", str(out), "--out", str(model)]) == 0
    assert model.stat().st_size > 1000


@pytest.mark.parametrize("argv, message", [
    (["--algo", "h2o"], "give --sim TASK[:PRESET]"),
    (["--algo", "h2o", "--sim", "reach2d", "--steps", "100"], "has no offline phase"),
    (["--algo", "darc", "--sim", "reach2d", "--online-ratio", "1"], "needs real and sim rows"),
    (["--algo", "h2o", "--sim", "reach2d", "--warmup-steps", "0"], "warmup_steps >= 1"),
    (["--algo", "h2o", "--sim", "reach2d", "--online", "sim:reach2d"], "not both"),
    (["--algo", "h2o", "--sim", "reach2d", "--set", "algorithm.ratio_min=2"], "ratio_min/ratio_max"),
    (["--algo", "h2o", "--sim", "reach2d", "--set", "n_step=3"], "n_step 1"),
    (["--algo", "h2o", "--sim", "nosuchtask"], "nosuchtask"),
])
def test_bad_hybrid_input_is_one_line(weak_dataset, tmp_path, capsys, argv, message):
    code = cli(["train", "--dataset", str(weak_dataset.path), "--out", str(tmp_path / "run"), "--no-progress",
                "--device", "cpu", *argv])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and len(error.splitlines()) == 1, error


def test_config_errors_raise_learn_error():
    with pytest.raises(LearnError, match="give --sim"):
        load_config("darc", online="")
