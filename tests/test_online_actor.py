"""The actor side of online fine-tuning on a robot: the policy node lets an operator's command on /teleop/command
override the model while it is fresh and says so on /policy/intervention; the recorder stores that flag per
frame (`intervention`) and the episodes' source. The controller and the recorder step by step on given clocks,
then the sim robot, the policy node and the recorder as processes over real DDS on loopback into real Zarr, with
this test as the operator. Real onnxruntime model trained and exported in the test, real MuJoCo."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, fresh_dds_env, stop_process
from robot_stack.sim.task import command_spec_of

from robot_stack.data import Dataset, validate
from robot_stack.deploy.card import raw_state, read_card
from robot_stack.deploy.controller import (
    PolicyController,
    load_policy,
    robot_features,
    safety_limits,
)
from robot_stack.deploy.runtime import OnnxPolicy
from robot_stack.errors import DeployError
from robot_stack.record import Recorder, RecorderError, parse_config, with_intervention
from robot_stack.ros import convert
from robot_stack.ros.log import Logger

FEATURES = REPO / "launch" / "params" / "recorder_reach2d.yaml"
PERIOD_NS = 50_000_000  # the model's 20 Hz
OPERATOR = np.array([0.61, -0.43])  # the operator's command: inside the bounds, nothing a model outputs by chance


@pytest.fixture(scope="module")
def model(reach2d_runs, tmp_path_factory) -> Path:
    """A reach2d BC policy on the state (the session's tiny run: only its being the model's output matters)."""
    from robot_stack.deploy.export import export_run

    path = tmp_path_factory.mktemp("actor_model") / "bc.onnx"
    export_run(reach2d_runs("bc"), path)
    return path


def model_command(policy: OnnxPolicy, values: dict[str, np.ndarray]) -> np.ndarray:
    """The model's command for one observation {feature: value}, through the default safety filter (the bounds)."""
    spec = policy.card.spec
    command = policy({"state": raw_state(spec, {name: np.asarray(values[name])[None] for name in spec.state})})
    return np.clip(np.asarray(command).reshape(-1), policy.card.command["low"], policy.card.command["high"])


# ---- the controller on a fake clock


class Rig:
    """A PolicyController on a fake clock fed one fixed reach2d observation; what it sent and flagged, its log."""

    def __init__(self, model_path: Path, **options) -> None:
        import gymnasium
        import robot_stack.sim  # noqa: F401  (registers the RobotStack/* gymnasium ids)

        env = gymnasium.make("RobotStack/Reach2D-v0")
        self.obs = env.reset(seed=3)[0]
        env.close()
        card = read_card(model_path)
        self.now, self.sent, self.flags, self.log = 1_000_000_000, [], [], io.StringIO()
        self.controller = PolicyController(
            load_policy(model_path), robot_features(card, FEATURES, command_spec_of=command_spec_of),
            safety_limits(card, {}), publish=self.sent.append, publish_intervention=self.flags.append,
            log=Logger("policy", stream=self.log), clock=lambda: self.now, **options)
        self.model = model_command(OnnxPolicy(model_path), self.obs)

    def tick(self, observe: bool = True) -> np.ndarray:
        if observe:
            messages = {"/joint_states": convert.joint_state(("shoulder", "elbow"), self.obs["joint_position"],
                                                             self.obs["joint_velocity"]),
                        "/eef_pose": convert.pose_stamped(self.obs["eef_pose"]),
                        "/object_pose": convert.pose_stamped(self.obs["object_pose"])}
            for topic, message in messages.items():
                self.controller.on_message(topic, message)
        self.now += PERIOD_NS
        return self.controller.tick()


def test_a_fresh_operator_command_replaces_the_models_for_two_periods_and_each_tick_says_whose(model):
    rig = Rig(model)
    assert not np.allclose(rig.model, OPERATOR)
    np.testing.assert_allclose(rig.tick(), rig.model, atol=1e-6)
    rig.controller.on_teleop(OPERATOR.tolist())  # arrives now; ticks 50 and 100 ms later take it, 150 ms not
    commands = [rig.tick() for _ in range(4)]
    np.testing.assert_allclose(commands[:2], [OPERATOR, OPERATOR])
    np.testing.assert_allclose(commands[2:], [rig.model, rig.model], atol=1e-6)
    assert rig.flags == [False, True, True, False, False]
    status = rig.controller.status()
    assert status["interventions"] == 2 and status["intervening"] is False and status["state"] == "running"
    assert "the operator's commands override the model" in rig.log.getvalue()
    assert "the model has control again" in rig.log.getvalue()


def test_the_operators_command_goes_through_the_safety_filter_and_never_past_a_hold(model):
    rig = Rig(model, intervention_timeout_s=1.0)
    rig.controller.on_teleop([5.0, -0.2])  # out of bounds: clipped as a model's command would be
    np.testing.assert_allclose(rig.tick(), [1.0, -0.2])
    assert rig.controller.status()["clipped"] == 1
    rig.controller.on_estop(True)
    rig.controller.on_teleop(OPERATOR)
    np.testing.assert_allclose(rig.tick(), [0.0, 0.0])  # the e-stop holds whoever commands
    assert rig.flags == [True, False]
    rig.controller.on_estop(False)
    rig.controller.on_reset()
    rig.controller.on_teleop(OPERATOR)
    np.testing.assert_allclose(rig.tick(observe=False), OPERATOR)
    for _ in range(10):  # no observation any more: stale, held, and the hold is nobody's intervention
        rig.controller.on_teleop(OPERATOR)
        command = rig.tick(observe=False)
    np.testing.assert_allclose(command, [0.0, 0.0])
    assert rig.flags[-1] is False and rig.controller.status()["state"] == "holding"
    assert rig.controller.status()["interventions"] == rig.flags.count(True)


def test_a_teleop_command_of_the_wrong_length_is_ignored_with_one_logged_error(model):
    rig = Rig(model)
    rig.controller.on_teleop([0.1, 0.2, 0.3])
    np.testing.assert_allclose(rig.tick(), rig.model, atol=1e-6)
    assert rig.flags == [False] and rig.controller.status()["bad_teleop"] == 1
    errors = [line for line in rig.log.getvalue().splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "/teleop/command: it has 3 values, this robot's command has 2 (dx, dy)" in errors[0]
    assert "command_dim:=2" in errors[0]
    with pytest.raises(DeployError, match="intervention_timeout_s must be a positive number of seconds"):
        Rig(model, intervention_timeout_s=-1.0)


# ---- the recorder on given times (wall clock)


FLAG_FEATURES = {
    "robot": {"name": "test_arm", "command": {"meaning": "test", "names": ["x"], "low": [-1.0], "high": [1.0],
                                              "hold": [0.0]}},
    "default_max_age": 0.2,
    "features": {"position": {"topic": "/test/position", "type": "std_msgs/msg/Float64", "field": "data"},
                 "action": {"topic": "/robot/command", "type": "std_msgs/msg/Float64MultiArray", "field": "data",
                            "max_age": 0.1}},
}


def message(type_name: str, value):
    from robot_stack.ros import message_class

    return message_class(type_name)(data=value)


def test_the_recorder_flags_frames_from_fresh_intervention_messages_and_false_without_one(tmp_path):
    config = with_intervention(parse_config(FLAG_FEATURES))
    feature = config.features[-1]
    assert (feature.name, feature.topic, feature.kind, feature.dtype, feature.max_age_s) == (
        "intervention", "/policy/intervention", "flag", "bool", 0.1)  # the action's max age
    recorder = Recorder(config, tmp_path / "d.zarr", record_hz=20, source="online", log=Logger("recorder", stream=io.StringIO()))
    t0 = time.monotonic_ns()
    ms = 1_000_000

    def frame(at_ms: int, intervention: bool | None = None, message_ms: int | None = None) -> None:
        recorder.on_message("/test/position", message("std_msgs/msg/Float64", float(at_ms)), mono_ns=t0 + at_ms * ms)
        recorder.on_message("/robot/command", convert.float_array([0.0]), mono_ns=t0 + at_ms * ms)
        if intervention is not None:
            at = at_ms if message_ms is None else message_ms
            recorder.on_message("/policy/intervention", message("std_msgs/msg/Bool", intervention), mono_ns=t0 + at * ms)
        recorder.on_tick(mono_ns=t0 + at_ms * ms + ms)

    frame(0)
    assert recorder.start()  # no intervention message yet: not needed to start
    frame(50)  # none has come: false, flagged stale
    frame(100, True)
    frame(150, True, message_ms=30)  # an old true (120 ms > 100 ms): not this frame's, false and stale
    frame(200, True)
    frame(250, False)
    assert recorder.status()["interventions"] == 2 and recorder.status()["source"] == "online"
    assert recorder.finish(True) == 0
    recorder.close()
    ds = Dataset.open(tmp_path / "d.zarr")
    assert ds.features["intervention"].kind == "flag" and ds.features["intervention"].dtype == "bool"
    assert ds.frames("intervention").tolist() == [False, True, False, True, False]
    assert ds.frames("stale.intervention").tolist() == [True, False, True, False, False]
    assert ds.episode_table()["source"].tolist() == ["online"]
    assert "stale frames: intervention 2" in ds.episode_info(0).notes
    assert validate(ds.path, progress=False) == []


def test_recorder_refuses_an_unknown_source_a_second_intervention_feature_and_a_dataset_without_the_flag(tmp_path):
    config = parse_config(FLAG_FEATURES)
    with pytest.raises(RecorderError, match="source 'robot' is not one of teleop, scripted, policy, online, import"):
        Recorder(config, tmp_path / "x.zarr", record_hz=20, source="robot")
    with pytest.raises(RecorderError, match="already has a feature named 'intervention'"):
        with_intervention(with_intervention(config))
    log = Logger("recorder", stream=io.StringIO())
    plain = Recorder(config, tmp_path / "plain.zarr", record_hz=20, log=log)
    now = time.monotonic_ns()
    plain.on_message("/test/position", message("std_msgs/msg/Float64", 1.0), mono_ns=now)
    plain.on_message("/robot/command", convert.float_array([0.0]), mono_ns=now)
    assert plain.start()
    plain.on_tick(mono_ns=now + 1)
    plain.finish(None)
    plain.close()
    assert Dataset.open(tmp_path / "plain.zarr").episode_table()["source"].tolist() == ["teleop"]  # the default
    flagged = Recorder(with_intervention(config), tmp_path / "plain.zarr", record_hz=20, log=log)
    flagged.open_existing()
    assert "intervention' is in only one of them" in flagged.status()["error"]  # it or its stale flag
    assert "record_intervention" in flagged.status()["error"]


# ---- over DDS: the sim robot and the policy node (deploy launch), the recorder, this test as the operator


class Operator:
    """The test's node: sends /teleop/command and /recorder/control; keeps the robot's commands, the intervention
    flags, both statuses, and the model's command for every observation the sim published."""

    def __init__(self, ros, model_path: Path) -> None:
        self.ros = ros
        self.node = ros.create_node("operator")
        keep = ros.qos.DEFAULT.with_depth(1000)
        self.teleop = self.node.create_publisher("std_msgs/msg/Float64MultiArray", "/teleop/command", ros.qos.DEFAULT)
        self.control = self.node.create_publisher("std_msgs/msg/String", "/recorder/control", ros.qos.DEFAULT)
        self.commands: list[np.ndarray] = []
        self.flags: list[bool] = []
        self.policy_status: dict = {}
        self.recorder_status: dict = {}
        self.node.create_subscription("std_msgs/msg/Float64MultiArray", "/robot/command",
                                      lambda m: self.commands.append(np.asarray(m.data, float)), keep)
        self.node.create_subscription("std_msgs/msg/Bool", "/policy/intervention",
                                      lambda m: self.flags.append(bool(m.data)), keep)
        self.node.create_subscription("std_msgs/msg/String", "/policy/status",
                                      lambda m: self.policy_status.update(json.loads(m.data)), ros.qos.TRANSIENT_LOCAL)
        self.node.create_subscription("std_msgs/msg/String", "/recorder/status",
                                      lambda m: self.recorder_status.update(json.loads(m.data)), ros.qos.TRANSIENT_LOCAL)
        # The model's command for each sim step's observation (its messages share the step's header stamp).
        self.policy = OnnxPolicy(model_path)
        inputs = set(self.policy.card.spec.state)
        self.inputs = [f for f in robot_features(self.policy.card, FEATURES, command_spec_of=command_spec_of).features
                       if f.name in inputs]
        self.steps: dict[int, dict[str, np.ndarray]] = {}
        self.model_commands: list[np.ndarray] = []
        for topic in {feature.topic for feature in self.inputs}:
            features = [feature for feature in self.inputs if feature.topic == topic]
            self.node.create_subscription(features[0].type, topic, self._observe(features), ros.qos.SENSOR_DATA)
        self.sending: np.ndarray | None = None
        self.next_send = 0.0

    def _observe(self, features):
        def on_message(message) -> None:
            stamp = message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec
            values = self.steps.setdefault(stamp, {})
            values.update({feature.name: feature.value(message) for feature in features})
            if len(values) == len(self.inputs):
                self.model_commands.append(model_command(self.policy, self.steps.pop(stamp)))
        return on_message

    def spin_until(self, predicate, what: str, processes: list[tuple[subprocess.Popen, Path]], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for process, log in processes:
                assert process.poll() is None, f"{log.name} exited while waiting for {what}: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (f"timed out waiting for {what}; policy {self.policy_status}; recorder "
                                                 f"{self.recorder_status}")
            if self.sending is not None and time.monotonic() >= self.next_send:  # an operator's 20 Hz
                self.teleop.publish(convert.float_array(self.sending))
                self.next_send = time.monotonic() + 0.05
            self.ros.spin_once(self.node, 0.01)

    def send(self, word: str) -> None:
        self.control.publish(self.control.msg_type(data=word))

    def is_model_command(self, command: np.ndarray) -> bool:
        return any(np.allclose(command, expected, atol=1e-5) for expected in self.model_commands)


def test_over_dds_the_operator_overrides_the_policy_and_the_recorder_flags_those_frames(model, tmp_path, monkeypatch):
    env = fresh_dds_env()
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROBOT_STACK_DDS_TAG", "ROBOT_STACK_ROS_BACKEND"):
        monkeypatch.setenv(key, env[key])
    dataset = tmp_path / "online.zarr"
    logs = {name: tmp_path / f"{name}.log" for name in ("deploy", "recorder")}
    commands = {
        # lockstep sim: one step per command, so each control tick is one sim step and one recorded frame;
        # a 1 s timeout keeps the operator in control across a loaded machine's pauses between its messages
        "deploy": [sys.executable, "-m", "robot_stack.cli.main", "launch", str(REPO / "launch" / "deploy.launch.yaml"),
                   f"model:={model}", "task:=reach2d", "realtime:=false", "intervention_timeout_s:=1.0"],
        "recorder": [sys.executable, "-m", "robot_stack.launch.entry_point", "recorder", "--ros-args",
                     "-p", f"features_file:={FEATURES}", "-p", f"dataset:={dataset}", "-p", "record_hz:=20.0",
                     "-p", "use_sim_time:=true", "-p", "source:=online", "-p", "record_intervention:=true"],
    }
    processes = []
    from robot_stack import ros

    ros.init([])
    try:
        for name, command in commands.items():
            with logs[name].open("w") as handle:
                processes.append((subprocess.Popen(command, cwd=REPO, env=env, stdout=handle,
                                                   stderr=subprocess.STDOUT), logs[name]))
        operator = Operator(ros, model)

        def wait(predicate, what: str) -> None:
            operator.spin_until(predicate, what, processes)

        wait(lambda: operator.policy_status.get("state") == "running" and len(operator.model_commands) >= 5
             and "recording" in operator.recorder_status, "the policy running on the sim and the recorder up")
        operator.send("start")
        wait(lambda: operator.recorder_status.get("recording") and operator.recorder_status.get("frames", 0) >= 15,
             "15 recorded frames of the model in control")
        operator.teleop.publish(convert.float_array([0.1, 0.2, 0.3]))  # a teleop for another robot: ignored
        wait(lambda: operator.policy_status.get("bad_teleop") == 1, "the wrong-length command counted")

        before = len(operator.commands)
        operator.sending = OPERATOR
        wait(lambda: sum(np.allclose(c, OPERATOR) for c in operator.commands) >= 20, "20 of the operator's commands")
        operator.sending = None
        wait(lambda: operator.policy_status.get("intervening") is False and operator.policy_status["interventions"] > 0,
             "the model back in control")
        after = len(operator.commands)
        wait(lambda: len(operator.commands) >= after + 20 and operator.flags.count(True) == operator.policy_status[
             "interventions"], "20 commands of the model again and every flag")
        operator.send("stop")
        wait(lambda: operator.recorder_status.get("committed_this_run") == 1, "the episode's commit")

        # The robot got the operator's command exactly on the ticks flagged, the model's on the others.
        sent = np.array(operator.commands)
        from_operator = np.all(np.isclose(sent, OPERATOR, atol=1e-9), axis=1)
        assert from_operator.sum() == operator.flags.count(True) == operator.policy_status["interventions"]
        assert not from_operator[:before].any()
        assert operator.policy_status["bad_teleop"] == 1 and operator.policy_status["state"] == "running"
        model_ticks = [c for c in sent[~from_operator] if not np.allclose(c, 0.0)]  # (holds at start-up aside)
        assert sum(map(operator.is_model_command, model_ticks)) >= 0.8 * len(model_ticks) and len(model_ticks) >= 30
    finally:
        for process, _ in reversed(processes):
            stop_process(process)
        ros.shutdown()

    ds = Dataset.open(dataset)
    assert ds.n_episodes == 1 and ds.episode_table()["source"].tolist() == ["online"]
    assert validate(dataset, progress=False) == []
    episode = ds.episode(0)
    flags, actions = episode["intervention"], episode["action"]
    operated = np.flatnonzero(np.all(np.isclose(actions, OPERATOR, atol=1e-6), axis=1))
    assert len(operated) >= 15 and operated[0] >= 10, operated  # the operator took over after the model's frames
    # The frames the operator commanded are flagged (perhaps not the one at each edge of the take-over), and
    # frames away from it are not.
    assert flags[operated[1:-1]].all() and not episode["stale.intervention"][operated[1:-1]].any()
    away = np.ones(len(flags), bool)
    away[max(0, operated[0] - 2): operated[-1] + 3] = False
    assert not flags[away].any() and away.sum() >= 20
