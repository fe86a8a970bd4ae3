"""sim_collect: the recorder's dataset for a sim task, made by running the scripted experts without ROS;
mixes of skill, seeds, success flags, cameras, appending, the command line, and the generic gym id.
(conftest.py picks the headless MuJoCo backend before anything imports mujoco.)"""

from __future__ import annotations

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
from conftest import REPO

from robot_stack.data import Dataset, validate
from robot_stack.errors import SimError
from robot_stack.record import Recorder, load_config
from robot_stack.ros import convert, message_class
from robot_stack.sim import collect as sim_collect
from robot_stack.sim.experts import make_expert
from robot_stack.sim.robot_driver import SimRobotDriver
from robot_stack.sim.task import command_spec_of, make_task

OBSERVED = ("joint_position", "joint_velocity", "eef_pose", "object_pose")


class _Quiet:
    def info(self, *_args, **_options) -> None:
        pass

    warning = error = fatal = info


class _Publisher:
    def __init__(self, deliver) -> None:
        self.publish = deliver


class _WiredNode:
    """The node API the sim driver uses, wired straight to a Recorder: what the driver publishes reaches the
    recorder as it would over DDS (topics resolved to absolute names), with no ROS in between."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.callbacks: dict[str, object] = {}
        self.last: dict[str, object] = {}  # topic -> last message: what a teleop would see

    def create_publisher(self, _type_name: str, topic: str, _qos):
        topic = "/" + topic.lstrip("/")
        if topic == "/clock":
            return _Publisher(lambda m: self.recorder.on_clock(m.clock.sec * 1_000_000_000 + m.clock.nanosec))

        def deliver(message) -> None:
            self.last[topic] = message
            self.recorder.on_message(topic, message)
        return _Publisher(deliver)

    def create_subscription(self, _type_name: str, topic: str, callback, _qos) -> None:
        self.callbacks[topic] = callback

    def get_logger(self) -> _Quiet:
        return _Quiet()

    def observation(self) -> dict[str, np.ndarray]:
        """The scripted teleop's observation (nodes/teleop.py): the latest messages as arrays."""
        joints = self.last["/joint_states"]
        return {"joint_position": np.asarray(joints.position, dtype=float),
                "joint_velocity": np.asarray(joints.velocity, dtype=float),
                "eef_pose": convert.pose_array(self.last["/eef_pose"]),
                "object_pose": convert.pose_array(self.last["/object_pose"])}


def record_through_the_recorder(path, plan: list[str], seed: int, horizon: int, cameras: str) -> None:
    """The collect launch in lockstep, minus DDS: the sim driver (realtime false) and the recorder (sim time),
    driven per step as the scripted teleop does; the last frame of an episode goes with the hold command.

    Unlike the teleop, the robot takes no settle steps between reset and start (sim_collect's frame 0 is the
    state right after reset): the hold command the teleop sends before start reaches only the recorder,
    which needs a fresh command to start."""
    config = load_config(sim_collect.features_file("reach2d"), cameras=cameras, command_spec_of=command_spec_of)
    recorder = Recorder(config, path, record_hz=20.0, sim_time=True, min_free_mb=0, log=_Quiet(), operator="test")
    node = _WiredNode(recorder)
    task = make_task("reach2d", cameras=cameras.split(","), horizon=horizon)
    SimRobotDriver(node, task, realtime=False, command_timeout_s=0.5, seed=seed)
    recorder.end_pass()
    hold = np.asarray(task.command_spec.hold)
    try:
        for i, skill in enumerate(plan):
            node.callbacks["sim/reset"](message_class("std_msgs/msg/Int64")(data=seed + i))
            recorder.on_message("/robot/command", convert.float_array(hold))
            recorder.end_pass()
            recorder.on_control("start")
            recorder.end_pass()
            assert recorder.recording, recorder.last_error
            expert = make_expert("reach2d", task.command_spec, skill, seed=seed + i)
            for step in range(horizon + 1):
                command = expert.act(node.observation()) if step < horizon else hold
                if step == horizon:
                    recorder.on_control("success")
                message = convert.float_array(command)
                recorder.on_message("/robot/command", message)
                node.callbacks["robot/command"](message)
                recorder.end_pass()
        assert recorder.writer.n_episodes == len(plan)
    finally:
        recorder.close()
        task.close()


def replay(task, skill: str, seed: int) -> dict[str, list]:
    """The seeded episode run directly on the task: states s_0..s_horizon and the commands between them."""
    task.reset(seed)
    expert = make_expert(task.name, task.command_spec, skill, seed=seed)
    frames: dict[str, list] = {key: [] for key in (*OBSERVED, "action", "reward", "success")}
    for step in range(task.config.horizon + 1):
        observation = task.observe()
        for key in OBSERVED:
            frames[key].append(observation[key])
        frames["reward"].append(task.reward())
        frames["success"].append(task.success())
        command = task.command_spec.validate(expert.act(observation)) if step < task.config.horizon else \
            np.asarray(task.command_spec.hold, dtype=float)
        frames["action"].append(command)
        if step < task.config.horizon:
            task.step(command)
    return frames


def skill_of(ds: Dataset, index: int) -> str:
    operator = ds.episode_info(index).operator
    assert operator.startswith("scripted:")
    return operator.removeprefix("scripted:")


def test_collect_writes_exactly_what_the_recorder_records_from_the_sim_driver(tmp_path):
    seed, horizon, cameras = 11, 12, "top:24x32"
    episodes = {"expert": 1, "medium": 2}
    recorded = tmp_path / "recorded.zarr"
    record_through_the_recorder(recorded, sim_collect.episode_plan(episodes, None, seed), seed, horizon, cameras)
    collected = sim_collect.collect("reach2d", tmp_path / "collected.zarr", episodes, seed=seed, horizon=horizon,
                                    cameras=[cameras], progress=False)

    assert validate(collected.path, progress=False) == []
    reference = Dataset.open(recorded)
    assert collected.schema.to_attrs() == reference.schema.to_attrs()  # robot, rate, features (topics too), tasks
    assert list(collected.features) == list(reference.features)
    np.testing.assert_array_equal(collected.episode_ends, reference.episode_ends)
    assert collected.n_frames == 3 * (horizon + 1)
    for name in reference.features:
        np.testing.assert_array_equal(collected.frames(name), reference.frames(name), err_msg=name)
    assert collected.frames("image.top").std() > 0
    assert not any(collected.frames(name).any() for name in collected.features if name.startswith("stale."))


def test_every_frame_is_the_seeded_task_state_with_the_command_applied_from_it(tmp_path):
    ds = sim_collect.collect("reach2d", tmp_path / "mixed.zarr", 6, mix={"expert": 0.5, "medium": 0.5}, seed=3,
                             progress=False)
    task = make_task("reach2d")
    try:
        for index in range(ds.n_episodes):
            frames, info = ds.episode(index), ds.episode_info(index)
            assert info.notes == f"seed {3 + index}, dynamics nominal"
            expected = replay(task, skill_of(ds, index), seed=3 + index)
            assert len(frames["action"]) == task.config.horizon + 1 == 31
            for key in OBSERVED:
                np.testing.assert_array_equal(frames[key], np.asarray(expected[key], np.float32), err_msg=key)
            np.testing.assert_array_equal(frames["action"], np.asarray(expected["action"], np.float32))
            np.testing.assert_array_equal(frames["sim_reward"], np.asarray(expected["reward"], np.float32))
            np.testing.assert_array_equal(frames["sim_success"], expected["success"])
            # The episode's success flag: the task reported success at some step of it.
            assert info.success == any(expected["success"])
            assert info.task_text == "move the fingertip onto the target"
            np.testing.assert_allclose(np.diff(frames["timestamp"]), 0.05, atol=1e-9)
    finally:
        task.close()
    starts = ds.frames("timestamp")[ds.episode_starts]
    np.testing.assert_allclose(starts, np.arange(ds.n_episodes) * 31 * 0.05, atol=1e-9)  # one sim clock throughout


def test_success_hold_asks_for_that_many_consecutive_successful_frames(tmp_path):
    any_step = sim_collect.collect("reach2d", tmp_path / "any.zarr", 8, mix={"medium": 1.0}, seed=40, progress=False)
    held = sim_collect.collect("reach2d", tmp_path / "held.zarr", 8, mix={"medium": 1.0}, seed=40, success_hold=5,
                               progress=False)
    flags = [any_step.episode(i)["sim_success"] for i in range(any_step.n_episodes)]
    assert any_step.success.tolist() == [int(f.any()) for f in flags]
    runs = [max((len(run) for run in "".join("1" if v else "0" for v in f).split("0")), default=0) for f in flags]
    assert held.success.tolist() == [int(run >= 5) for run in runs]
    assert held.success.sum() < any_step.success.sum()  # this seed has episodes that touch the target and leave
    assert sim_collect.held([True, False, True, True], 2) and not sim_collect.held([True, False, True], 2)


def test_a_mix_gives_its_counts_interleaved_by_the_seed(tmp_path):
    plan = sim_collect.episode_plan(200, {"expert": 0.2, "medium": 0.8}, seed=0)
    assert (plan.count("expert"), plan.count("medium"), len(plan)) == (40, 160, 200)
    assert plan[:40] != ["expert"] * 40  # interleaved, not in blocks
    assert plan == sim_collect.episode_plan(200, {"expert": 0.2, "medium": 0.8}, seed=0)
    assert plan != sim_collect.episode_plan(200, {"expert": 0.2, "medium": 0.8}, seed=1)
    odd = sim_collect.episode_plan(5, {"expert": 0.5, "medium": 0.5})  # round() would give 2 + 2
    assert len(odd) == 5 and {odd.count("expert"), odd.count("medium")} == {2, 3}
    assert sorted(sim_collect.episode_plan({"random": 2, "expert": 1})) == ["expert", "random", "random"]

    ds = sim_collect.collect("reach2d", tmp_path / "a.zarr", 10, mix={"expert": 0.3, "random": 0.7}, seed=5,
                             horizon=6, progress=False)
    assert [skill_of(ds, i) for i in range(10)] == sim_collect.episode_plan(10, {"expert": 0.3, "random": 0.7}, 5)
    rates = sim_collect.success_by_skill(ds)
    assert {skill: n for skill, (n, _) in rates.items()} == {"expert": 3, "random": 7}
    again = sim_collect.collect("reach2d", tmp_path / "b.zarr", 10, mix={"expert": 0.3, "random": 0.7}, seed=5,
                                horizon=6, progress=False)
    other = sim_collect.collect("reach2d", tmp_path / "c.zarr", 10, mix={"expert": 0.3, "random": 0.7}, seed=6,
                                horizon=6, progress=False)
    assert again.fingerprint() == ds.fingerprint() != other.fingerprint()


@pytest.mark.parametrize(("episodes", "mix", "message"), [
    (10, {"expert": 0.5, "medium": 0.4}, "add up to 1"),
    (10, {"expert": 0.5, "novice": 0.5}, "unknown skill(s) 'novice'"),
    (10, {"expert": 1.5, "medium": -0.5}, "must be a number in [0, 1]"),
    (0, None, "no episodes"),
    ({"expert": 3}, {"expert": 1.0}, "not both"),
])
def test_a_bad_plan_is_a_clear_error(episodes, mix, message):
    with pytest.raises(SimError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        sim_collect.episode_plan(episodes, mix)


def test_appending_continues_the_dataset_and_a_different_setup_is_refused(tmp_path):
    path = tmp_path / "grow.zarr"
    sim_collect.collect("reach2d", path, 2, seed=0, horizon=5, progress=False)
    with pytest.raises(SimError, match="exists: append to it"):
        sim_collect.collect("reach2d", path, 2, seed=2, horizon=5, progress=False)
    ds = sim_collect.collect("reach2d", path, {"medium": 2}, seed=2, horizon=5, append=True, progress=False)
    assert ds.n_episodes == 4 and [ds.episode_info(i).notes[:6] for i in range(4)] == ["seed 0", "seed 1", "seed 2", "seed 3"]
    np.testing.assert_allclose(np.diff(ds.frames("timestamp")), 0.05, atol=1e-9)  # the clock runs on
    with pytest.raises(SimError, match=r"feature '(stale\.)?image\.top' is in only one of them"):
        sim_collect.collect("reach2d", path, 1, horizon=5, cameras=["top:16x16"], append=True, progress=False)
    with pytest.raises(SimError, match=r"different setup \(robot\["):
        sim_collect.collect("lift", path, 1, horizon=2, append=True, progress=False)
    assert Dataset.open(path).n_episodes == 4 and Dataset.open(path).unfinished_frames == 0


def test_lift_with_a_camera_records_the_image_feature_the_recorder_would(tmp_path):
    ds = sim_collect.collect("lift", tmp_path / "lift.zarr", 1, horizon=3, cameras=["agentview:32x40"], progress=False)
    spec = ds.features["image.agentview"]
    assert (spec.dtype, spec.shape, spec.kind, spec.topic) == ("uint8", (32, 40, 3), "image", "/camera/agentview/image_raw")
    assert ds.features["stale.image.agentview"].kind == "flag"
    assert ds.features["joint_position"].shape == (9,) and ds.features["action"].shape == (7,)
    assert ds.robot["sim_task"] == "lift" and ds.tasks == ["lift the cube"]
    images = ds.episode(0)["image.agentview"][:]
    assert images.shape == (4, 32, 40, 3) and images.std() > 0
    np.testing.assert_array_equal(ds.frames("action")[-1], np.zeros(7))  # the last frame goes with the hold command


def test_the_command_line_collects_and_reports_clear_errors_without_a_traceback(tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    assert sim_collect.main(["--task", "reach2d", "--episodes", "4", "--mix", "expert=0.5,random=0.5", "--horizon",
                             "5", "-q", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 episodes, 24 frames at 20 Hz" in printed and "success by skill" in printed and "random" in printed
    for argv, message in [
        (["--task", "reach3d", "--episodes", "2", "-o", str(tmp_path / "x.zarr")], "unknown sim task 'reach3d'"),
        (["--task", "reach2d", "--episodes", "2", "--mix", "expert=0.5", "-o", str(tmp_path / "x.zarr")], "add up to 1"),
        (["--task", "reach2d", "--episodes", "2", "--mix", "expert=half", "-o", str(tmp_path / "x.zarr")],
         "not skill=fraction"),
        (["--task", "reach2d", "--episodes", "2", "--mix", "ace", "-o", str(tmp_path / "x.zarr")], "unknown skill"),
        (["--task", "reach2d", "--episodes", "2", "--dynamics", "mars", "-o", str(tmp_path / "x.zarr")],
         "unknown dynamics preset"),
        (["--task", "reach2d", "--episodes", "2", "-o", str(out)], "exists: append to it"),
    ]:
        assert sim_collect.main([*argv, "-q"]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()
    result = subprocess.run([sys.executable, "-m", "robot_stack.sim.collect", "--task", "reach2d", "--episodes", "1",
                             "--mix", "novice", "-o", str(tmp_path / "y.zarr")],
                            capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert result.returncode == 2 and "unknown skill(s) 'novice'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_generic_env_id_takes_the_task_by_keyword():
    env = gymnasium.make("robot_stack.sim:RobotStack/Task-v0", task="reach2d", cameras=["top:16x16"], horizon=3)
    try:
        observation, _info = env.reset(seed=4)
        assert set(observation) == {*OBSERVED, "image/top"} and observation["image/top"].shape == (16, 16, 3)
        steps = 0
        while True:
            observation, reward, _terminated, truncated, _info = env.step(np.array([0.5, 0.0]))
            steps += 1
            if truncated:
                break
        assert steps == 3 and reward < 0 and env.unwrapped.task.name == "reach2d"
    finally:
        env.close()
    with pytest.raises(SimError, match="task=NAME"):
        gymnasium.make("robot_stack.sim:RobotStack/Task-v0")
    named = gymnasium.make("RobotStack/Reach2D-v0")  # the per-task ids still work
    assert named.unwrapped.task.name == "reach2d"
    named.close()
