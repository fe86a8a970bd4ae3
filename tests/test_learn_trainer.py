"""The training loop end to end: real Zarr datasets collected by the scripted experts in MuJoCo, real sim evaluation.

The datasets are small reach2d ones (sim_collect, a few seconds); runs are a few hundred to a few thousand
updates on the CPU. The learning test (IQL beats a random policy) is the small-scale version of
docs/results.md's runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from robot_stack.sim.collect import collect

from robot_stack.cli.main import main as cli
from robot_stack.errors import LearnError
from robot_stack.learn.config import load_config
from robot_stack.learn.evaluate import SIM_ENV, PolicyRunner, evaluate, make_env
from robot_stack.learn.observations import build_spec
from robot_stack.learn.trainer import Trainer, load_checkpoint, load_policy

os.environ.setdefault("MUJOCO_GL", "osmesa")


@pytest.fixture(scope="module")
def reach_mixed(tmp_path_factory):
    """40 reach2d episodes: 20% expert, 80% medium, with the sim ground-truth reward recorded."""
    return collect("reach2d", tmp_path_factory.mktemp("data") / "reach_mixed.zarr", 40,
                   mix={"expert": 0.2, "medium": 0.8}, seed=0, progress=False)


@pytest.fixture(scope="module")
def reach_camera(tmp_path_factory):
    """6 short reach2d episodes with a 32x32 top camera."""
    return collect("reach2d", tmp_path_factory.mktemp("data") / "reach_camera.zarr", 6, mix={"expert": 1.0},
                   seed=0, cameras=["top:32x32"], progress=False)


def config(dataset, tmp_path, algo="iql", overrides=None, **fields):
    fields = {"steps": 60, "batch_size": 32, "hidden_dims": [32, 32], "eval_every": -1, "log_every": 20,
              "checkpoint_every": 1000, "device": "cpu", "out": str(tmp_path / f"run_{algo}")} | fields
    return load_config(algo, overrides=overrides, dataset=str(dataset.path), **fields)


# -- configs ---------------------------------------------------------------------------------------------------


def test_algorithm_defaults_are_the_papers():
    iql, cql, td3bc = load_config("iql"), load_config("cql"), load_config("td3bc")
    assert (iql.algorithm.expectile, iql.algorithm.beta, iql.algorithm.max_weight) == (0.7, 3.0, 100.0)
    assert (cql.algorithm.alpha, cql.algorithm.n_actions) == (5.0, 10)
    assert (td3bc.algorithm.alpha, td3bc.algorithm.policy_noise, td3bc.algorithm.policy_freq) == (2.5, 0.2, 2)
    assert load_config("bc").reward == "none"


def test_config_file_and_overrides_layer_over_the_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("steps: 1234\nalgorithm:\n  beta: 10\n")
    loaded = load_config("iql", path, {"algorithm.expectile": "0.9", "batch_size": "64"}, seed=3)
    assert (loaded.steps, loaded.batch_size, loaded.seed) == (1234, 64, 3)
    assert (loaded.algorithm.beta, loaded.algorithm.expectile, loaded.algorithm.tau) == (10.0, 0.9, 0.005)


def test_optional_config_values_take_their_type_or_none_from_the_command_line():
    loaded = load_config("cql", overrides={"algorithm.lagrange_gap": "5", "algorithm.clip_diff_min": "-200",
                                           "algorithm.target_entropy": "null"})
    assert loaded.algorithm.lagrange_gap == 5.0 and isinstance(loaded.algorithm.lagrange_gap, float)
    assert (loaded.algorithm.clip_diff_min, loaded.algorithm.target_entropy) == (-200.0, None)
    assert load_config("cql", overrides={"algorithm.lagrange_gap": "none"}).algorithm.lagrange_gap is None


@pytest.mark.parametrize("algo, overrides, message", [
    ("iql", {"algorithm.expectil": "0.9"}, "unknown key"),
    ("iql", {"steps": "many"}, "is not a int"),
    ("iql", {"algorithm.expectile": "1.5"}, "expectile must be in"),
    ("iql", {"reward": "none"}, "needs a reward"),
    ("iql", {"compile": "maybe"}, "auto, on or off"),
    ("cql", {"algorithm.lagrange_gap": "wide"}, r"lagrange_gap: 'wide' is not a float"),
    ("cql", {"algorithm.clip_diff_min": "1", "algorithm.clip_diff_max": "0"}, "clip_diff_min .1.0. is above"),
])
def test_bad_config_values_are_named(algo, overrides, message):
    with pytest.raises(LearnError, match=message):
        load_config(algo, overrides=overrides)


def test_unknown_algorithm_and_missing_file_are_errors(tmp_path):
    with pytest.raises(LearnError, match="unknown algorithm 'ppo'"):
        load_config("ppo")
    with pytest.raises(LearnError, match="does not exist"):
        load_config("iql", tmp_path / "nope.yaml")


# -- runs ------------------------------------------------------------------------------------------------------


def test_a_run_writes_config_fingerprint_checkpoints_logs_and_evaluation(reach_mixed, tmp_path):
    run = Trainer(config(reach_mixed, tmp_path, eval_every=30, eval_episodes=2), progress=False).run()
    folder = tmp_path / "run_iql"
    info = json.loads((folder / "run.json").read_text())
    assert info["dataset"]["fingerprint"] == reach_mixed.fingerprint() == run["dataset_fingerprint"]
    assert info["config"]["algorithm"]["expectile"] == 0.7
    assert info["reward"]["source"] == "sim" and info["reward"]["transition_reward"]["max"] <= 0.0
    assert list(info["observation_spec"]["state"]) == ["joint_position", "joint_velocity", "eef_pose", "object_pose"]
    assert "expectile: 0.7" in (folder / "config.yaml").read_text()
    evaluations = [json.loads(line) for line in (folder / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evaluations] == [30, 60] and all(e["episodes"] == 2 for e in evaluations)
    assert run["evaluation"]["step"] == 60
    assert list(folder.glob("tb/events.out.tfevents.*"))
    state = load_checkpoint(folder / "checkpoints" / "latest.pt")
    assert state["step"] == 60 and state["dataset_fingerprint"] == reach_mixed.fingerprint()


def test_the_progress_bar_shows_losses_and_the_latest_evaluation(reach_mixed, tmp_path, capsys):
    Trainer(config(reach_mixed, tmp_path, steps=40, eval_every=20, eval_episodes=1), progress=True).run()
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    final = [line for line in bar if "40/40" in line][-1]
    assert "critic_loss=" in final and "value_loss=" in final and "success=" in final, final


def test_resuming_continues_exactly_where_the_run_stopped(reach_mixed, tmp_path):
    straight = Trainer(config(reach_mixed, tmp_path, out=str(tmp_path / "straight"), steps=40), progress=False)
    straight.run()
    first = Trainer(config(reach_mixed, tmp_path, out=str(tmp_path / "resumed"), steps=20), progress=False)
    first.run()
    resumed = Trainer(resume=tmp_path / "resumed", steps=40, progress=False)
    assert resumed.start_step == 20
    resumed.run()
    # Same RNG, optimizer state and schedule: the resumed run is the uninterrupted one, bit for bit.
    # (IQL's cosine schedule depends on the total, so both runs were planned with 40 steps... except the
    # first half of `resumed`, planned with 20: compare the critic and value, which have no schedule.)
    for name in ("critic", "value"):
        a = straight.algorithm.state_dict()["modules"][name]
        b = resumed.algorithm.state_dict()["modules"][name]
        assert all(torch.equal(a[key], b[key]) for key in a), name


def test_resume_refuses_a_dataset_that_changed(tmp_path):
    path = tmp_path / "growing.zarr"
    ds = collect("reach2d", path, 4, mix={"expert": 1.0}, seed=0, progress=False)
    Trainer(config(ds, tmp_path, steps=10), progress=False).run()
    collect("reach2d", path, 1, mix={"expert": 1.0}, seed=10, append=True, progress=False)
    with pytest.raises(LearnError, match="changed since run"):
        Trainer(resume=tmp_path / "run_iql", steps=20, progress=False)


def test_a_new_run_will_not_overwrite_an_old_one(reach_mixed, tmp_path):
    Trainer(config(reach_mixed, tmp_path, steps=5), progress=False).run()
    with pytest.raises(LearnError, match="already holds a run"):
        Trainer(config(reach_mixed, tmp_path, steps=5), progress=False)


@pytest.mark.parametrize("fields, message", [
    ({"observations": ["nope"]}, "not a feature"),
    ({"observations": ["action"]}, "is the dataset's action"),
    ({"images": ["image.top"]}, "not an image feature"),
    ({"reward": "labels/vlm"}, "no label run 'vlm'"),
])
def test_bad_observations_and_rewards_are_named(reach_mixed, tmp_path, fields, message):
    with pytest.raises(LearnError, match=message):
        Trainer(config(reach_mixed, tmp_path, **fields), progress=False)


def test_a_label_run_is_the_reward_and_its_provenance_is_kept_with_the_run(reach_mixed, tmp_path):
    # calibrated like a labeler's, about [0, 1], and distinct from sim_reward
    labels = 1 - np.arange(reach_mixed.n_frames, dtype=np.float32) / reach_mixed.n_frames
    reach_mixed.write_labels("distance_test", labels, {"labeler": "test", "model": "none", "prompt": "reach"},
                             overwrite=True)
    run = Trainer(config(reach_mixed, tmp_path, reward="labels/distance_test", steps=5), progress=False)
    frame, reward = run.replay.frame.numpy(), run.replay.reward.numpy()
    # transition t earns the label of frame t + 1, shifted so the best frame earns 0: a successful episode's end is
    # terminal, and positive rewards would make wandering on worth more than succeeding
    assert np.allclose(reward, labels[frame + 1] - 1.0) and reward.max() <= 0
    run.run()
    info = json.loads((tmp_path / "run_iql" / "run.json").read_text())
    assert info["reward"]["source"] == "labels/distance_test" and info["reward"]["offset"] == -1.0
    assert info["reward"]["label_run"]["labeler"] == "test"
    assert info["reward"]["label_run"]["dataset_fingerprint"] == reach_mixed.fingerprint()


def test_reward_offset_auto_leaves_other_sources_and_a_number_is_added_to_any(reach_mixed, tmp_path):
    sim = Trainer(config(reach_mixed, tmp_path / "a", reward="sim", steps=5), progress=False)
    shifted = Trainer(config(reach_mixed, tmp_path / "b", reward="sim", steps=5, reward_offset=0.5), progress=False)
    assert sim.reward_offset == 0.0 and shifted.reward_offset == 0.5
    assert np.allclose(shifted.replay.reward.numpy(), sim.replay.reward.numpy() + 0.5)
    with pytest.raises(LearnError, match="reward_offset must be auto or a number"):
        config(reach_mixed, tmp_path / "c", reward_offset="high")


@pytest.mark.parametrize("algo", ["bc", "td3bc", "cql"])
def test_every_algorithm_trains_and_its_checkpoint_acts(reach_mixed, tmp_path, algo):
    reward = "none" if algo == "bc" else "success"
    result = Trainer(config(reach_mixed, tmp_path, algo=algo, steps=20, reward=reward), progress=False).run()
    assert result["steps"] == 20
    algorithm, spec, loaded = load_policy(tmp_path / f"run_{algo}")
    assert loaded.algo == algo and spec.action_dim == 2
    obs = {"state": torch.zeros(3, spec.state_dim)}
    action = algorithm.act(obs)
    assert action.shape == (3, 2) and bool((action.abs() <= 1).all())


def test_cql_with_a_binary_element_acts_on_its_bounds_and_the_run_keeps_the_command_names(reach_mixed, tmp_path):
    """binary_actions names an element of the dataset robot's command (reach2d's dy stands in for a gripper)."""
    run = Trainer(config(reach_mixed, tmp_path, "cql", {"algorithm.binary_actions": "dy"}, steps=20,
                         reward="success"), progress=False).run()
    algorithm, spec, loaded = load_policy(run["run_dir"])
    assert spec.action_names == ["dx", "dy"] and loaded.algorithm.binary_actions == ["dy"]
    action = algorithm.act({"state": torch.randn(64, spec.state_dim) * 3})
    assert set(action[:, 1].tolist()) <= {-1.0, 1.0}
    assert (action[:, 0].abs() < 1).all()  # dx stays a tanh-Gaussian's mean
    with pytest.raises(LearnError, match=r"'gripper' is not an element of the command \(its elements are \['dx', 'dy'\]\)"):
        Trainer(config(reach_mixed, tmp_path, "cql", {"algorithm.binary_actions": "gripper"}, steps=2,
                       reward="success", out=str(tmp_path / "bad")), progress=False)


def test_images_train_through_the_cnn_and_the_policy_sees_the_camera_in_the_sim(reach_camera, tmp_path):
    run = Trainer(config(reach_camera, tmp_path, algo="bc", reward="none", images=["image.top"], steps=10,
                         eval_every=0, eval_episodes=1), progress=False)
    before = [p.detach().clone() for p in run.algorithm.encoder.parameters()]
    assert before, "an image encoder has parameters"
    result = run.run()
    assert any(not torch.equal(a, b) for a, b in zip(before, run.algorithm.encoder.parameters()))
    assert result["evaluation"]["episodes"] == 1
    assert run.spec.images == {"image.top": [32, 32, 3]}


def test_frozen_clip_embeddings_are_cached_in_the_dataset_and_computed_live_in_the_sim(reach_camera, tmp_path):
    import open_clip

    arch = "robot-stack-test-train-clip"  # a tiny CLIP built here: nothing is downloaded
    tiny = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / f"{arch}.json").write_text(json.dumps(tiny))
    open_clip.add_model_config(tmp_path / f"{arch}.json")
    torch.save(open_clip.create_model(arch).state_dict(), tmp_path / "tiny.pt")
    model = f"{arch}:{tmp_path / 'tiny.pt'}"
    run = Trainer(config(reach_camera, tmp_path, algo="bc", reward="none", images=["image.top"], steps=10,
                         image_encoder=f"clip:{model}", eval_every=0, eval_episodes=1), progress=False)
    assert run.spec.embeddings["image.top"]["dim"] == 16 and run.spec.images == {}
    assert run.spec.state_dim == 18 + 16  # reach2d's state, then the embedding
    assert any(name.startswith("clip_embed.image.top") for name in reach_camera.label_arrays())
    assert not list(run.algorithm.encoder.parameters())  # frozen: nothing of CLIP is trained
    assert run.run()["evaluation"]["episodes"] == 1


def test_the_evaluator_runs_seeded_episodes_of_the_sim_task(reach_mixed):
    env = make_env("reach2d", build_spec(reach_mixed, [], []))
    rng = np.random.default_rng(0)
    first = evaluate(lambda obs: rng.uniform(-1, 1, 2), env, 3, seed=5)
    hold = evaluate(lambda obs: np.zeros(2), env, 3, seed=5)
    hold_again = evaluate(lambda obs: np.zeros(2), env, 3, seed=5)
    env.close()
    assert [row["seed"] for row in first["rows"]] == [5, 6, 7]
    assert 0.0 <= first["success_rate"] <= 1.0 and first["mean_return"] < 0
    assert hold["rows"] == hold_again["rows"]  # same seeds, same policy: the same episodes


def test_cli_trains_and_reports_errors_in_one_line(reach_mixed, tmp_path, capsys):
    code = cli(["train", "--algo", "bc", "--dataset", str(reach_mixed.path), "--steps", "20", "--eval-every", "-1",
                "--device", "cpu", "--out", str(tmp_path / "cli_run"), "--no-progress", "--set", "batch_size=16"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 20
    assert cli(["train", "--algo", "iql", "--dataset", str(tmp_path / "missing.zarr"), "--no-progress"]) == 2
    assert "cannot train on" in capsys.readouterr().err
    assert cli(["train", "--algo", "iql", "--print-config", "--set", "algorithm.beta=7"]) == 0
    assert "beta: 7.0" in capsys.readouterr().out


def test_train_help_documents_reward_sources():
    done = subprocess.run([sys.executable, "-m", "robot_stack.cli.main", "train", "--help"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0 and "labels/<run>" in done.stdout and "--resume" in done.stdout


# -- learning --------------------------------------------------------------------------------------------------


def test_iql_learns_to_reach_far_better_than_a_random_policy(reach_mixed, tmp_path):
    """Small-scale docs/results.md: IQL on mixed expert/medium data, sim reward, evaluated on unseen seeds."""
    # 800 updates of 2x128 MLPs: 0.75-0.8 success over 3 seeds (random: ~0.02); the full runs are in docs/results.md.
    trainer = Trainer(config(reach_mixed, tmp_path, steps=800, batch_size=256, hidden_dims=[128, 128],
                             log_every=400, eval_every=0, eval_episodes=20), progress=False)
    iql = trainer.run()["evaluation"]["success_rate"]
    env = make_env("reach2d", trainer.spec)
    rng = np.random.default_rng(0)
    random = evaluate(lambda obs: rng.uniform(-1, 1, 2), env, 20, seed=1_000_000)["success_rate"]
    # The policy through PolicyRunner on the same seeds gives the trainer's figure (the evaluation is reproducible).
    again = evaluate(PolicyRunner(trainer.algorithm.act, trainer.spec, "cpu"), env, 20, seed=1_000_000)["success_rate"]
    env.close()
    assert iql >= random + 0.5, (iql, random)
    assert again == iql
    assert SIM_ENV.startswith("robot_stack.sim:")


# -- native load order -----------------------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess:
    env = os.environ | {"MUJOCO_GL": "osmesa"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)


def test_torch_then_the_sim_on_osmesa_trains_and_renders():
    # The order a training process has: torch (and its triton) first, MuJoCo's OSMesa renderer second.
    done = _python("import torch\nimport robot_stack.sim\nfrom robot_stack.sim.task import make_task\n"
                   "t = make_task('reach2d', cameras=['top:16x16']); t.reset(0)\n"
                   "torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])\nprint(t.observe()['image/top'].shape)")
    assert done.returncode == 0, done.stderr[-500:]
    assert "(16, 16, 3)" in done.stdout


def test_learn_after_mujoco_on_osmesa_is_a_clear_error_not_a_crash():
    done = _python("import mujoco\nimport robot_stack.learn")
    if "triton" not in done.stderr and done.returncode == 0:
        pytest.skip("this torch has no triton: nothing clashes with OSMesa")
    assert done.returncode == 1  # an ImportError, not the segmentation fault (-11) it replaces
    assert "import robot_stack.learn (or torch) before" in done.stderr


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algo, options, modules", [
    ("iql", {}, ("critic", "value", "actor")),
    # CQL's actor warm-start ends half-way (a tensor weight, not a branch) and alpha' is tuned (Lagrange).
    ("cql", {"algorithm.bc_steps": 3, "algorithm.lagrange_gap": 1.0, "algorithm.n_actions": 2},
     ("critic", "actor", "alpha_prime")),
    # A binary element (Bernoulli draws, the actor's expectation over both bounds), the max backup, and
    # Cal-QL's bound (the replay's return-to-go inside the step).
    ("cql", {"algorithm.binary_actions": "dy", "algorithm.max_target_backup": True, "algorithm.calibrated": True,
             "algorithm.n_actions": 2}, ("critic", "actor")),
])
def test_the_compiled_step_computes_what_the_eager_step_does(reach_mixed, tmp_path, algo, options, modules, device):
    """compile: on (the CUDA default): the same updates as eager, schedules included (CUDA graphs off here:
    their capture warm-up adds updates, see the next test)."""
    import torch._inductor.config

    runs = {}
    for mode in ("off", "on"):
        trainer = Trainer(config(reach_mixed, tmp_path, algo, options, steps=6, compile=mode, log_every=3,
                                 device=device, cuda_graphs="off",
                                 out=str(tmp_path / f"compile_{algo}_{mode}")), progress=False)
        with torch._inductor.config.patch(fallback_random=True):  # eager's random numbers, for comparing
            trainer.run()
        runs[mode] = trainer.algorithm.state_dict()["modules"]
    for name in modules:
        for key, eager in runs["off"][name].items():
            torch.testing.assert_close(runs["on"][name][key], eager, rtol=1e-4, atol=1e-5, msg=f"{name}.{key}")


@CUDA
@pytest.mark.parametrize("algo, options", [("bc", {}), ("td3bc", {}), ("iql", {}), ("cql", {}),
                                           ("cql", {"algorithm.binary_actions": "dy"})])
def test_on_cuda_the_step_is_compiled_and_captured_in_a_cuda_graph_and_trains(reach_mixed, tmp_path, algo, options):
    """The CUDA defaults (compile and CUDA graphs: auto): the capture succeeds (no fallback to eager), the
    losses stay finite, the parameters move, and the checkpoint acts on the CPU."""
    messages: list[str] = []
    trainer = Trainer(config(reach_mixed, tmp_path, algo, options, steps=40, device="cuda", log_every=10),
                      progress=False, log=messages.append)
    before = {name: {k: v.clone() for k, v in module.items()}
              for name, module in trainer.algorithm.state_dict()["modules"].items()}
    result = trainer.run()
    assert not [m for m in messages if "capture failed" in m or "without graphs" in m], messages
    assert result["device"].startswith("cuda")
    after = trainer.algorithm.state_dict()["modules"]
    moved = [name for name in before if any(not torch.equal(before[name][k], after[name][k]) for k in before[name])]
    assert "actor" in moved, moved
    assert all(torch.isfinite(v).all() for module in after.values() for v in module.values())
    algorithm, spec, _ = load_policy(tmp_path / f"run_{algo}", device="cpu")
    obs = {"state": torch.zeros(1, spec.state_dim)}
    assert algorithm.act(obs).shape == (1, spec.action_dim)
