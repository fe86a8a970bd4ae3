"""Offline-to-online training with the sim target: the online replay and its sampler, the switch and WSRL's warm-up,
a short online run in MuJoCo, online.zarr, kill and resume, and the CLI's errors.

Real components throughout: reach2d datasets collected by the scripted experts, real Zarr, the gymnasium env of the
sim, the CLI in a subprocess for the kill. Networks are 64 units, runs a few hundred to ~1,500 updates, one thread.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from robot_stack.sim.collect import collect

from robot_stack.cli.main import main as cli
from robot_stack.data import Dataset
from robot_stack.data.sampling import transition_index
from robot_stack.errors import DatasetError
from robot_stack.learn.config import load_config
from robot_stack.learn.observations import build_spec
from robot_stack.learn.online import OnlineRun, run_online
from robot_stack.learn.online_replay import (
    Episode,
    MixedSampler,
    OnlineReplay,
    episode_transitions,
)
from robot_stack.learn.replay import build_replay
from robot_stack.learn.trainer import Trainer, load_checkpoint

os.environ.setdefault("MUJOCO_GL", "osmesa")
ONLINE_MARK = 100.0  # every frame reward of the marked online episode: no offline transition earns it


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: the networks are tiny


@pytest.fixture(scope="module")
def reach_mixed(tmp_path_factory):
    """40 reach2d episodes: 20% expert, 80% medium, with the sim ground-truth reward recorded."""
    return collect("reach2d", tmp_path_factory.mktemp("data") / "reach_mixed.zarr", 40,
                   mix={"expert": 0.2, "medium": 0.8}, seed=0, progress=False)


def config(dataset, out, **fields):
    fields = {"steps": 20, "batch_size": 64, "hidden_dims": [64, 64], "eval_every": -1, "log_every": 50,
              "checkpoint_every": 100_000, "device": "cpu", "out": str(out), "online": "sim:reach2d",
              "online_steps": 60, "online_eval_every": 0} | fields
    return load_config(fields.pop("algo", "iql"), dataset=str(dataset.path), **fields)


def episode_of(dataset: Dataset, index: int, reward: np.ndarray | None = None) -> Episode:
    where = dataset.episode_slice(index)
    observations = {name: dataset.frames(name, where.start, where.stop) for name in dataset.features}
    return Episode(observations, observations["action"],
                   observations["sim_reward"] if reward is None else reward, bool(dataset.success[index] == 1))


def replays(dataset):
    spec = build_spec(dataset, [], [])
    return build_replay(dataset, spec, "sim"), OnlineReplay(spec, 400)


# -- the online replay and the sampler ------------------------------------------------------------------------------


def test_an_added_episode_has_the_datasets_transitions_and_return_to_go(reach_mixed):
    spec = build_spec(reach_mixed, [], [])
    online = OnlineReplay(spec, 200, gamma=0.9, n_step=3)
    index = int(np.flatnonzero(reach_mixed.success == 1)[0])  # a successful episode: its last transition is terminal
    online.add_episode(episode_of(reach_mixed, index), offset=-0.5)
    offline = transition_index(reach_mixed, "feature:sim_reward", n_step=3, gamma=0.9, reward_offset=-0.5)
    mine = offline.episode == index
    assert len(online) == mine.sum() == reach_mixed.episode_slice(index).stop - reach_mixed.episode_slice(index).start - 1
    for name in ("reward", "discount", "return_to_go"):
        np.testing.assert_allclose(getattr(online, name)[: len(online)].numpy(), getattr(offline, name)[mine], rtol=1e-5)
    np.testing.assert_array_equal(online.terminal[: len(online)].numpy().astype(bool), offline.terminal[mine])
    assert online.terminal[len(online) - 1] == 1.0
    first = reach_mixed.episode_slice(index).start
    np.testing.assert_array_equal(online.next_frame[: len(online)].numpy(), offline.next_frame[mine] - first)
    # The states are the offline replay's frames, normalized the same way.
    offline_replay = build_replay(reach_mixed, spec, "sim")
    np.testing.assert_allclose(online.frames["state"][:3].numpy(), offline_replay.frames["state"][first:first + 3].numpy())


def test_return_to_go_by_hand():
    # r_f = 0, 1, 2, 3 (r_0 rewards the start state and is never earned), gamma 0.5, the episode succeeded.
    out = episode_transitions(np.array([0, 1, 2, 3], np.float32), True, n_step=1, gamma=0.5)
    np.testing.assert_allclose(out["return_to_go"], [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3])
    np.testing.assert_allclose(out["reward"], [1, 2, 3])
    np.testing.assert_array_equal(out["terminal"], [0, 0, 1])
    failed = episode_transitions(np.array([0, 1, 2, 3], np.float32), False, n_step=2, gamma=0.5)
    np.testing.assert_allclose(failed["reward"], [1 + 0.5 * 2, 2 + 0.5 * 3, 3])
    np.testing.assert_array_equal(failed["terminal"], [0, 0, 0])  # a timeout: learners bootstrap
    np.testing.assert_array_equal(failed["next_frame"], [2, 3, 3])


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_the_sampler_draws_exactly_the_asked_share_of_online_rows(reach_mixed, ratio):
    offline, online = replays(reach_mixed)
    sampler = MixedSampler(offline, online, ratio)
    assert sampler.mode == "offline" and sampler.ready  # no online episode yet: every row is offline
    assert not (sampler.sample(64).reward == ONLINE_MARK).any()
    online.add_episode(episode_of(reach_mixed, 0, np.full(31, ONLINE_MARK, np.float32)))
    for _ in range(5):
        assert int((sampler.sample(64).reward == ONLINE_MARK).sum()) == round(ratio * 64)


def test_the_proportional_sampler_draws_uniformly_over_offline_and_online(reach_mixed):
    offline, online = replays(reach_mixed)
    for i in range(4):
        online.add_episode(episode_of(reach_mixed, i, np.full(31, ONLINE_MARK, np.float32)))
    sampler = MixedSampler(offline, online, "proportional")
    share = np.mean([(sampler.sample(256).reward == ONLINE_MARK).float().mean().item() for _ in range(40)])
    expected = len(online) / (len(online) + len(offline))  # 120 / 1320
    assert abs(share - expected) < 0.02, (share, expected)


def test_without_offline_data_nothing_is_sampled_before_the_first_online_episode(reach_mixed):
    offline, online = replays(reach_mixed)
    sampler = MixedSampler(offline, online, 1.0)
    sampler.drop_offline()
    assert not sampler.ready and sampler.mode == "online"
    online.add_episode(episode_of(reach_mixed, 0, np.full(31, ONLINE_MARK, np.float32)))
    assert sampler.ready and bool((sampler.sample(32).reward == ONLINE_MARK).all())


# -- the switch and WSRL's warm-up ------------------------------------------------------------------------------------


def parameters(state: dict) -> dict[str, torch.Tensor]:
    return {f"{module}.{name}": value for module, values in state["modules"].items() for name, value in values.items()}


def test_warmup_collects_with_the_frozen_policy_and_the_offline_data_is_dropped(reach_mixed, tmp_path):
    # online_ratio 1 (WSRL's): at the switch the offline data goes, and no update can run before an online episode.
    run = OnlineRun(Trainer(config(reach_mixed, tmp_path / "switch", online_ratio=1.0, warmup_steps=60), progress=False))
    run.pretrain()
    run.switch()
    assert run.sampler.offline is None and run.trainer.replay is None
    assert run.update(10) is None and run.step == 20
    assert (tmp_path / "switch" / "checkpoints" / "switch.pt").is_file()
    # The whole run: 60 warm-up env steps (2 episodes of 30) of the frozen pre-trained policy, no updates.
    out = tmp_path / "warmup"
    result = run_online(Trainer(config(reach_mixed, out, online_ratio=1.0, warmup_steps=60), progress=False),
                        progress=False)
    assert result["online"]["env_steps"] == 60 and result["online"]["episodes"] == 2
    assert result["online"]["updates"] == 0
    switch, latest = (load_checkpoint(out / "checkpoints" / name) for name in ("switch.pt", "latest.pt"))
    before, after = parameters(switch["algorithm"]), parameters(latest["algorithm"])
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert latest["online"] == {"phase": "online", "env_steps": 60, "episodes": 2}
    assert Dataset.open(out / "online.zarr").n_episodes == 2


# -- a short online run ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def online_run(reach_mixed, tmp_path_factory):
    """IQL from a weak offline checkpoint (30 updates: 0.0 success) fine-tuned for 1,500 env steps, half of each
    batch online (0.0 -> 0.45 at seeds 0 and 1 when measured; the offline phase alone stays at 0)."""
    out = tmp_path_factory.mktemp("runs") / "iql_online"
    torch.set_num_threads(1)
    trainer = Trainer(config(reach_mixed, out, steps=30, batch_size=256, eval_every=0, eval_episodes=20,
                             online_steps=1500, online_ratio=0.5, online_eval_every=750, log_every=250), progress=False)
    return run_online(trainer, progress=False), out


def test_a_short_online_run_raises_the_success_rate_over_a_weak_offline_checkpoint(online_run):
    result, out = online_run
    summary = result["online"]
    assert summary["final_success_rate"] >= summary["offline_success_rate"] + 0.2, summary
    rows = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [(row["phase"], row["env_steps"], row["step"]) for row in rows] == [
        ("offline", 0, 30), ("online", 750, 780), ("online", 1500, 1530)]
    assert summary["env_steps"] == 1500 and summary["updates"] == 1500
    assert (out / "curve.png").stat().st_size > 10_000
    assert json.loads((out / "result.json").read_text())["online"] == summary


def test_online_episodes_are_committed_to_online_zarr_with_source_online(online_run, reach_mixed):
    _, out = online_run
    online = Dataset.open(out / "online.zarr")
    table = online.episode_table()
    assert online.n_episodes == 50 and online.n_frames == 50 * 31
    assert set(table["source"].tolist()) == {"online"}
    assert online.robot == reach_mixed.robot and set(online.features) == set(reach_mixed.features)
    # The recorded reward is the sim's: -distance, and episode success is the task's own report at any frame.
    reward, success = online.frames("sim_reward"), online.frames("sim_success")
    assert (reward <= 0).all()
    np.testing.assert_array_equal(table["success"] == 1, [success[s].any() for s in map(online.episode_slice, range(50))])


# -- kill and resume --------------------------------------------------------------------------------------------------


def train_command(dataset, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "robot_stack.cli.main", "train", "--algo", "iql", "--dataset", str(dataset.path),
            "--steps", "20", "--online", "sim:reach2d", "--online-eval-every", "0", "--eval-every", "-1", "--device",
            "cpu", "--out", str(out), "--no-progress", "--set", "batch_size=64", "--set", "hidden_dims=[64,64]", *extra]


def committed_episodes(path) -> int:
    try:
        return Dataset.open(path).n_episodes
    except DatasetError:  # not there yet, or being created this instant
        return 0


def test_a_killed_online_run_resumes_without_losing_a_committed_episode(reach_mixed, tmp_path):
    out = tmp_path / "killed"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(train_command(reach_mixed, out, "--online-steps", "100000"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wanted = random.Random().randint(2, 4)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if committed_episodes(out / "online.zarr") >= wanted:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read()
        time.sleep(random.Random().uniform(0.0, 0.5))  # anywhere in the next episode, maybe mid-commit
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    before = Dataset.open(out / "online.zarr")
    kept, actions = before.n_episodes, before.frames("action")
    target = (kept + 2) * 30
    done = subprocess.run([sys.executable, "-m", "robot_stack.cli.main", "train", "--resume", str(out), "--online-steps",
                           str(target), "--no-progress"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["online"]
    after = Dataset.open(out / "online.zarr")
    assert after.n_episodes == kept + 2 == result["episodes"] and result["env_steps"] == target
    np.testing.assert_array_equal(after.frames("action", 0, len(actions)), actions)  # nothing committed was lost
    assert after.unfinished_frames == 0


# -- bad input --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "message"), [
    (["--online", "sim:nosuchtask"], "nosuchtask"),
    (["--online", "sim:reach2d:nosuchpreset"], "nosuchpreset"),
    (["--online", "lab"], "sim:TASK"),
    (["--online-steps", "100"], "add --online"),
    (["--online", "sim:reach2d", "--algo", "bc"], "bc only imitates"),
])
def test_bad_online_input_is_one_line(reach_mixed, tmp_path, capsys, extra, message):
    algo = [] if "--algo" in extra else ["--algo", "iql"]
    code = cli(["train", *algo, "--dataset", str(reach_mixed.path), "--steps", "5", "--device", "cpu",
                "--out", str(tmp_path / "bad"), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad" / "checkpoints").exists()  # refused before anything trained


def test_train_help_lists_every_algorithm_and_the_online_examples():
    from robot_stack.learn.algorithms import ALGORITHMS

    done = subprocess.run([sys.executable, "-m", "robot_stack.cli.main", "train", "--help"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0
    assert all(name in done.stdout for name in ALGORITHMS)
    assert "--online sim:reach2d" in done.stdout and "--online-ratio" in done.stdout and "--warmup-steps" in done.stdout


# -- several envs -----------------------------------------------------------------------------------------------------


def test_several_envs_collect_one_episode_each_per_round(reach_mixed, tmp_path):
    out = tmp_path / "two_envs"
    result = run_online(Trainer(config(reach_mixed, out, online_steps=120, num_envs=2), progress=False), progress=False)
    online = Dataset.open(out / "online.zarr")
    assert result["online"]["env_steps"] == 120 and online.n_episodes == 4
    assert result["online"]["updates"] == 120  # utd 1: an update per env step, 2 per vector step
    starts = online.frames("object_pose")[[online.episode_slice(i).start for i in range(4)]]
    assert len({tuple(np.round(target, 6)) for target in starts}) == 4  # each env's episode has its own seed


def test_envs_in_subprocesses_step_as_the_same_envs_here(monkeypatch):
    from robot_stack.learn import online

    commands = np.random.default_rng(0).uniform(-1, 1, (30, 2, 2))
    runs = []
    for threshold in (float("inf"), 0.0):  # here, then in subprocesses (as if the step were costly)
        monkeypatch.setattr(online.SimEnvs, "ASYNC_ABOVE_S", threshold)
        monkeypatch.setattr(online.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
        envs = online.SimEnvs("reach2d", None, [], 2)
        try:
            observation, reward, _ = envs.reset([3, 4])
            steps = [(observation, reward)]
            for command in commands:
                observation, reward, _, done = envs.step(command)
                steps.append((observation, reward))
            runs.append((envs.parallel, steps, done))
        finally:
            envs.close()
    (here, steps_here, done_here), (parallel, steps_parallel, done_parallel) = runs
    assert not here and parallel and done_here.all() and done_parallel.all()
    for (obs_a, reward_a), (obs_b, reward_b) in zip(steps_here, steps_parallel):
        np.testing.assert_allclose(reward_a, reward_b)
        for key in obs_a:
            np.testing.assert_allclose(obs_a[key], obs_b[key])


def test_a_resumed_online_run_refuses_flags_that_change_what_it_learns(online_run, capsys):
    _, out = online_run
    assert cli(["train", "--resume", str(out), "--utd", "4", "--online-ratio", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--utd 4 (the run's: 1)" in err and "--online-ratio 1.0 (the run's: 0.5)" in err
    assert len(err.strip().splitlines()) == 1


# -- a label run's rewards online -------------------------------------------------------------------------------------


def test_a_label_runs_model_rewards_the_online_episodes(reach_pixels, tmp_path):
    from robot_stack.label.apply import label_reward_model
    from robot_stack.label.job import LabelRequest, run_label_job

    run_label_job(LabelRequest(dataset=reach_pixels.path, labeler="progress", task="move the fingertip onto the target",
                               run="online-progress", camera="image.top",
                               config={"input": "pixels", "steps": 30, "hidden": 32}, progress=False,
                               overwrite=True))
    result = run_online(Trainer(config(reach_pixels, tmp_path / "labels", reward="labels/online-progress"),
                                progress=False), progress=False, label_models=label_reward_model)
    online = Dataset.open(tmp_path / "labels" / "online.zarr")
    # The labeler's camera is recorded with the online episodes, though the policy sees only the state.
    assert result["online"]["episodes"] == 2 and "image.top" in online.features
    run = OnlineRun(Trainer(config(reach_pixels, tmp_path / "again", reward="labels/online-progress"), progress=False),
                    label_reward_model)
    assert run.reward_offset < 0  # reward_offset auto: the label run's best frame earns 0, online as offline
    model = label_reward_model(reach_pixels, "online-progress")
    where = online.episode_slice(1)
    episode = run.episodes_from_dataset(online, 1)[0]
    frames = {"image.top": online.frames("image.top", where.start, where.stop)}
    np.testing.assert_allclose(episode.reward, model.rewards(frames), rtol=1e-6)
