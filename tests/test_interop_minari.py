"""`robot-stack data import minari`: Minari datasets the tests write with Minari's own writer (episode buffers of a
small gymnasium env stepped here, `minari.create_dataset_from_buffers`, in a temporary MINARI_DATASETS_PATH), read
back through the importer by id and by folder; no download.

Minari's DataCollector needs jax (its `create` extra) to gather steps; the interop extra does not install it, so the
tests step the env themselves and hand Minari the same episode buffers the collector would build.
"""

from __future__ import annotations

import json
import warnings
from typing import ClassVar

import numpy as np
import pytest

from robot_stack.cli.main import main as cli
from robot_stack.data import Dataset

minari = pytest.importorskip("minari", reason="the interop extra (minari) is not installed")
gymnasium = pytest.importorskip("gymnasium")

GOAL_ENV = "robot_stack_test/Goal-v0"
STEPS = 8  # the goal env's time limit


class GoalEnv(gymnasium.Env):
    """A point pushed towards the origin: Dict observation {position: float64 [2], camera: uint8 [32, 32, 3]},
    action float32 [2] in [-0.5, 0.5], reward -|position|, terminated (and info success) within 0.3 of the origin."""

    metadata: ClassVar[dict] = {"render_modes": [], "render_fps": 10}

    def __init__(self, report_success: bool = True) -> None:
        self.report_success = report_success
        self.observation_space = gymnasium.spaces.Dict({
            "position": gymnasium.spaces.Box(-3.0, 3.0, (2,), np.float64),
            "camera": gymnasium.spaces.Box(0, 255, (32, 32, 3), np.uint8)})
        self.action_space = gymnasium.spaces.Box(-0.5, 0.5, (2,), np.float32)

    def _observation(self) -> dict[str, np.ndarray]:
        camera = np.zeros((32, 32, 3), np.uint8)
        row, col = np.clip(((self.position + 3.0) / 6.0 * 31).astype(int), 0, 31)
        camera[row, col] = 255
        camera[..., 2] = self.steps * 20
        return {"position": self.position.copy(), "camera": camera}

    def _info(self) -> dict:
        return {"success": bool(np.linalg.norm(self.position) < 0.3)} if self.report_success else {}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position, self.steps = self.np_random.uniform(-1.5, 1.5, 2), 0
        return self._observation(), self._info()

    def step(self, action):
        self.position = np.clip(self.position + np.asarray(action, np.float64), -3.0, 3.0)
        self.steps += 1
        distance = float(np.linalg.norm(self.position))
        return self._observation(), -distance, distance < 0.3, False, self._info()


if GOAL_ENV not in gymnasium.registry:
    gymnasium.register(GOAL_ENV, entry_point=f"{__name__}:GoalEnv", max_episode_steps=STEPS)


def record(env, episodes: int, seed: int = 0) -> list:
    """Step `env` with a noisy go-to-origin policy; Minari EpisodeBuffers of what it returned."""
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(seed)
    buffers = []
    for index in range(episodes):
        observation, info = env.reset(seed=seed + index)
        observations, infos, steps = [observation], [info], []
        done = False
        while not done:
            if isinstance(observation, dict):
                push = -0.2 * observation["position"] + rng.normal(0, 0.1, 2)
                action = np.clip(push, -0.5, 0.5).astype(np.float32)
            else:
                action = env.action_space.sample()
            observation, reward, terminated, truncated, info = env.step(action)
            observations.append(observation)
            infos.append(info)
            steps.append((action, reward, terminated, truncated))
            done = terminated or truncated
        stacked = ({key: [o[key] for o in observations] for key in observations[0]}
                   if isinstance(observations[0], dict) else observations)
        info_lists = {key: [i[key] for i in infos] for key in infos[0]}
        buffers.append(EpisodeBuffer(id=index, seed=seed + index, observations=stacked,
                                     actions=[s[0] for s in steps], rewards=[s[1] for s in steps],
                                     terminations=[s[2] for s in steps], truncations=[s[3] for s in steps],
                                     infos=info_lists))
    return buffers


def create(dataset_id: str, env, episodes: int, seed: int = 0):
    """A Minari dataset in the local store (MINARI_DATASETS_PATH) written by Minari from `episodes` of `env`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari asks for an author email, a code link, a description
        return minari.create_dataset_from_buffers(dataset_id, record(env, episodes, seed), env=env,
                                                  algorithm_name="go-to-origin", author="robot_stack tests",
                                                  jpeg_encoding=False)


@pytest.fixture
def store(tmp_path, monkeypatch):
    root = tmp_path / "minari_store"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture
def goal(store):
    """Minari's goal dataset: 6 episodes, some reaching the goal (terminated, success), some timing out."""
    dataset = create("robot_stack_test/goal-v0", gymnasium.make(GOAL_ENV), 6)
    outcomes = {bool(dataset[i].terminations[-1]) for i in range(6)}
    assert outcomes == {True, False}, "the fixture needs episodes that end both ways"
    return dataset


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli(["data", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_import_by_id_and_by_folder_keeps_every_value_minari_recorded(capsys, goal, store, tmp_path):
    code, out, err = run(capsys, "import", "minari", "robot_stack_test/goal-v0", tmp_path / "by_id.zarr", "-q")
    assert code == 0, err
    assert "wrote" in out and "6 episodes" in out
    folder = store / "robot_stack_test" / "goal-v0"
    code, _, err = run(capsys, "import", "minari", folder, tmp_path / "by_path.zarr", "-q")
    assert code == 0, err
    by_id, by_path = Dataset.open(tmp_path / "by_id.zarr"), Dataset.open(tmp_path / "by_path.zarr")
    assert by_id.n_episodes == by_path.n_episodes == 6
    assert by_id.record_hz == 10.0  # GoalEnv's render_fps
    assert by_id.robot["name"] == GOAL_ENV
    assert by_id.robot["command_spec"]["low"] == [-0.5, -0.5]
    assert set(by_id.features) == {"observation.position", "image.camera", "action", "stale.action", "reward",
                                   "terminated", "truncated", "success", "timestamp"}
    for ds in (by_id, by_path):
        for index in range(6):
            episode, frames = goal[index], ds.episode(index)
            steps = len(episode.rewards)
            assert len(frames["action"]) == steps + 1
            np.testing.assert_array_equal(frames["observation.position"], episode.observations["position"])
            np.testing.assert_array_equal(np.asarray(frames["image.camera"]), episode.observations["camera"])
            np.testing.assert_array_equal(frames["action"][:steps], episode.actions)
            np.testing.assert_array_equal(frames["action"][steps], episode.actions[-1])
            assert frames["stale.action"].tolist() == [False] * steps + [True]
            np.testing.assert_array_equal(frames["reward"], np.r_[0.0, episode.rewards])
            assert frames["terminated"].tolist() == [False, *episode.terminations.tolist()]
            assert frames["truncated"].tolist() == [False, *episode.truncations.tolist()]
            assert frames["success"].tolist() == episode.infos["success"].tolist()
            assert ds.success[index] == int(episode.infos["success"][-1])
            np.testing.assert_allclose(np.diff(frames["timestamp"]), 0.1)
    record = by_id.provenance["import"]
    assert record["source"] == by_path.provenance["import"]["source"] == str(folder.resolve())
    assert (record["format"], record["version"], record["dataset_id"], record["total_steps"]) == (
        "minari", goal.minari_version, "robot_stack_test/goal-v0", int(goal.total_steps))
    assert record["author"] == ["robot_stack tests"] and record["env_spec"]["id"] == GOAL_ENV
    assert "render_fps" in record["record_hz_from"] and "success" in record["success_from"]


def test_replay_transitions_are_minaris_steps(goal, tmp_path):
    """Every (s, a, r, s', terminal) of the trainers' replay is Minari's step, in order, and nothing else is."""
    import torch

    from robot_stack.interop.minari import import_dataset
    from robot_stack.learn.observations import build_spec
    from robot_stack.learn.replay import build_replay

    ds = import_dataset("robot_stack_test/goal-v0", tmp_path / "goal.zarr", progress=False)
    spec = build_spec(ds, [], [])
    replay = build_replay(ds, spec, "sim")
    expected = {key: [] for key in ("state", "action", "reward", "next_state", "terminal")}
    for index in range(goal.total_episodes):
        episode = goal[index]
        position = episode.observations["position"]
        expected["state"].append(position[:-1])
        expected["next_state"].append(position[1:])
        expected["action"].append(episode.actions)
        expected["reward"].append(episode.rewards)
        expected["terminal"].append(episode.terminations)
    expected = {key: np.concatenate(values) for key, values in expected.items()}
    assert len(replay) == int(goal.total_steps)
    batch = replay.gather(torch.arange(len(replay)))
    np.testing.assert_allclose(batch.obs["state"].numpy(), spec.state_from({"observation.position": expected["state"]}),
                               rtol=1e-6)
    np.testing.assert_allclose(batch.next_obs["state"].numpy(),
                               spec.state_from({"observation.position": expected["next_state"]}), rtol=1e-6)
    np.testing.assert_allclose(batch.action.numpy(), spec.scale(expected["action"]), atol=1e-6)
    np.testing.assert_allclose(batch.reward.numpy(), expected["reward"].astype(np.float32))
    assert batch.terminal.numpy().astype(bool).tolist() == expected["terminal"].tolist()
    assert expected["terminal"].any() and not expected["terminal"].all()


def test_a_termination_without_success_info_is_kept_as_a_flag_and_success_stays_unknown(store, tmp_path):
    dataset = create("robot_stack_test/goal_quiet-v0", gymnasium.make(GOAL_ENV, report_success=False), 4)
    from robot_stack.interop.minari import import_dataset

    ds = import_dataset("robot_stack_test/goal_quiet-v0", tmp_path / "quiet.zarr", progress=False)
    assert "success" not in ds.features
    assert ds.success.tolist() == [-1] * 4
    last = ds.episode_ends - 1
    assert ds.frames("terminated")[last].tolist() == [bool(dataset[i].terminations[-1]) for i in range(4)]
    assert "unknown" in ds.provenance["import"]["success_from"]


def test_a_box_observation_env_without_render_fps_option_and_task(store, tmp_path):
    create("robot_stack_test/pendulum-v0", gymnasium.make("Pendulum-v1", max_episode_steps=5), 3)
    from robot_stack.interop.minari import import_dataset

    ds = import_dataset("robot_stack_test/pendulum-v0", tmp_path / "pendulum.zarr", progress=False, record_hz=50,
                        task="swing up")
    assert ds.record_hz == 50 and ds.provenance["import"]["record_hz_from"] == "the --record-hz option"
    assert ds.features["observation"].shape == (3,) and ds.features["action"].dtype == "float32"
    assert [ds.episode_info(i).task_text for i in range(3)] == ["swing up"] * 3
    assert ds.robot["name"] == "Pendulum-v1" and ds.robot["command_spec"]["high"] == [2.0]


@pytest.mark.parametrize("algo", ["td3bc", "iql"])
def test_a_trainer_runs_on_the_import_with_minaris_rewards(capsys, goal, tmp_path, algo):
    assert run(capsys, "import", "minari", "robot_stack_test/goal-v0", tmp_path / "goal.zarr", "-q")[0] == 0
    code = cli(["train", "--algo", algo, "--dataset", str(tmp_path / "goal.zarr"), "--reward", "sim", "--steps", "20",
                "--batch-size", "16", "--eval-every", "-1", "--device", "cpu", "--out", str(tmp_path / "run"),
                "--no-progress", "--set", "hidden_dims=[16]"])
    assert code == 0, capsys.readouterr().err
    run_record = json.loads((tmp_path / "run" / "run.json").read_text())
    rewards = np.concatenate([goal[i].rewards for i in range(goal.total_episodes)])
    trained_on = run_record["reward"]["transition_reward"]
    assert trained_on["mean"] == pytest.approx(rewards.mean(), rel=1e-5)  # every step's reward, Minari's own
    assert (trained_on["min"], trained_on["max"]) == pytest.approx((rewards.min(), rewards.max()), rel=1e-5)
    assert run_record["observation_spec"]["action_low"] == [-0.5, -0.5]


def test_an_interrupted_import_resumes_after_its_last_committed_episode(goal, tmp_path, monkeypatch):
    from robot_stack.interop import minari as importer

    read = importer._episode

    def interrupted(episode, index, *args):
        if index == 3:
            raise KeyboardInterrupt
        return read(episode, index, *args)

    monkeypatch.setattr(importer, "_episode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        importer.import_dataset("robot_stack_test/goal-v0", tmp_path / "goal.zarr", progress=False)
    assert Dataset.open(tmp_path / "goal.zarr").n_episodes == 3
    monkeypatch.setattr(importer, "_episode", read)
    resumed = importer.import_dataset("robot_stack_test/goal-v0", tmp_path / "goal.zarr", progress=False)
    whole = importer.import_dataset("robot_stack_test/goal-v0", tmp_path / "whole.zarr", progress=False)
    assert resumed.n_episodes == 6 and resumed.episode_ends.tolist() == whole.episode_ends.tolist()
    for name in resumed.features:
        np.testing.assert_array_equal(resumed.frames(name), whole.frames(name))
    assert resumed.success.tolist() == whole.success.tolist()


def test_bad_input_is_one_line(capsys, goal, store, tmp_path):
    from robot_stack.sim.collect import collect

    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("not a dataset")
    damaged = store / "robot_stack_test" / "goal-v0" / "data" / "main_data.hdf5"
    other = collect("reach2d", tmp_path / "reach.zarr", 1, mix={"medium": 1.0}, seed=0, progress=False).path
    cases = [
        (("robot_stack_test/nowhere-v0", tmp_path / "a.zarr"), ["not a path, nor a dataset in the local Minari store",
                                                               "nothing is downloaded"]),
        ((tmp_path / "folder", tmp_path / "b.zarr"), ["is not a Minari dataset"]),
        (("robot_stack_test/goal-v0", other), ["exists and is not an import of"]),
        (("robot_stack_test/goal-v0", tmp_path / "folder"), ["exists and is not a robot_stack dataset"]),
    ]
    for (src, out), words in cases:
        code, _, err = run(capsys, "import", "minari", src, out, "-q")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert all(word in err for word in words), err
    damaged.write_bytes(damaged.read_bytes()[:200])
    code, _, err = run(capsys, "import", "minari", "robot_stack_test/goal-v0", tmp_path / "c.zarr", "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Minari cannot read" in err, err
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


def test_jpeg_encoded_images_come_as_minaris_loader_decodes_them(store, tmp_path):
    """Minari stores image observations as JPEG by default: the import holds what its loader decodes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffers = record(gymnasium.make(GOAL_ENV), 2)
        dataset = minari.create_dataset_from_buffers("robot_stack_test/goal_jpeg-v0", buffers,
                                                     env=gymnasium.make(GOAL_ENV), algorithm_name="go-to-origin")
    from robot_stack.interop.minari import import_dataset

    ds = import_dataset("robot_stack_test/goal_jpeg-v0", tmp_path / "jpeg.zarr", progress=False)
    for index in range(2):
        decoded = dataset[index].observations["camera"]
        imported = np.asarray(ds.episode(index)["image.camera"])
        np.testing.assert_array_equal(imported, decoded)
        recorded = np.asarray(buffers[index].observations["camera"])
        assert not np.array_equal(imported, recorded)  # JPEG is lossy: the import is Minari's decoding, not the env's


def test_discrete_actions_come_as_integers(store, tmp_path):
    dataset = create("robot_stack_test/cartpole-v0", gymnasium.make("CartPole-v1", max_episode_steps=30), 3)
    from robot_stack.interop.minari import import_dataset

    ds = import_dataset("robot_stack_test/cartpole-v0", tmp_path / "cartpole.zarr", progress=False)
    assert ds.features["action"].dtype == "int64" and ds.features["action"].shape == ()
    assert "command_spec" not in ds.robot and ds.record_hz == 50  # CartPole's render_fps
    for index in range(3):
        steps = len(dataset[index].rewards)
        np.testing.assert_array_equal(ds.episode(index)["action"][:steps], dataset[index].actions)
        assert ds.episode(index)["terminated"][-1] == dataset[index].terminations[-1]
    assert ds.success.tolist() == [-1] * 3
