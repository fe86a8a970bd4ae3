"""The policy node: its controller step by step on a fake clock (staleness, e-stop latch, hot swap), the refusal
line of a model that does not fit, and the node itself over real DDS through launch/deploy.launch.yaml with this
test standing in for the robot (remapped topics). Real onnxruntime models trained and exported in the test."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid

import gymnasium
import numpy as np
import pytest
import robot_stack.sim  # noqa: F401  (registers the RobotStack/* gymnasium ids)
from conftest import REPO, stop_process
from deploy_models import reach2d_models
from robot_stack.sim.task import command_spec_of

from robot_stack.deploy.card import raw_state, read_card
from robot_stack.deploy.controller import (
    PolicyController,
    check_fits,
    load_policy,
    robot_features,
    safety_limits,
)
from robot_stack.deploy.runtime import OnnxPolicy
from robot_stack.errors import DeployError
from robot_stack.ros import convert
from robot_stack.ros.log import Logger

FEATURES = REPO / "launch" / "params" / "recorder_reach2d.yaml"
PERIOD_NS = 50_000_000  # the models' 20 Hz
JOINTS = ("shoulder", "elbow")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return reach2d_models(tmp_path_factory.mktemp("deploy"))


def observation(seed: int = 3) -> dict[str, np.ndarray]:
    env = gymnasium.make("RobotStack/Reach2D-v0")
    try:
        return env.reset(seed=seed)[0]
    finally:
        env.close()


def messages(obs: dict[str, np.ndarray]) -> dict[str, object]:
    """The sim driver's messages of one observation, by topic."""
    return {"/joint_states": convert.joint_state(JOINTS, obs["joint_position"], obs["joint_velocity"]),
            "/eef_pose": convert.pose_stamped(obs["eef_pose"]),
            "/object_pose": convert.pose_stamped(obs["object_pose"])}


def expected_command(model_path, obs: dict[str, np.ndarray]) -> np.ndarray:
    """What the model commands for `obs` after the default safety filter (the command bounds)."""
    policy = OnnxPolicy(model_path)
    spec = policy.card.spec
    command = policy({"state": raw_state(spec, {name: np.asarray(obs[name])[None] for name in spec.state})})
    return np.clip(command, policy.card.command["low"], policy.card.command["high"])


class Rig:
    """A PolicyController on a fake monotonic clock, its published commands and its log text."""

    def __init__(self, model_path, **safety_params: str) -> None:
        card = read_card(model_path)
        self.now = 1_000_000_000
        self.sent: list[np.ndarray] = []
        self.log_text = io.StringIO()
        config = robot_features(card, FEATURES, command_spec_of=command_spec_of)
        eef = next(feature for feature in config.features if feature.name == "eef_pose")
        self.controller = PolicyController(load_policy(model_path), config, safety_limits(card, safety_params),
                                           publish=self.sent.append, log=Logger("policy", stream=self.log_text),
                                           clock=lambda: self.now, eef_source=eef)

    def observe(self, obs: dict[str, np.ndarray], topics=("/joint_states", "/eef_pose", "/object_pose")) -> None:
        for topic, message in messages(obs).items():
            if topic in topics:
                self.controller.on_message(topic, message)

    def tick(self) -> np.ndarray:
        self.now += PERIOD_NS
        return self.controller.tick()


def is_hold(command: np.ndarray) -> bool:
    return np.array_equal(command, [0.0, 0.0])


# ---- the controller, step by step


def test_stale_observation_holds_within_two_periods_warns_once_and_recovers(models):
    rig, obs = Rig(models["bc"]), observation()
    model_command = expected_command(models["bc"], obs)
    assert not is_hold(model_command)
    for _ in range(10):
        rig.observe(obs)
        np.testing.assert_allclose(rig.tick(), model_command, atol=1e-6)
    last_message_ns = rig.now - PERIOD_NS  # the tick advanced the clock after the message
    max_age_ns = 0.25e9
    held_at = None
    for _ in range(40):  # joint_states stops; the poses keep coming
        rig.observe(obs, topics=("/eef_pose", "/object_pose"))
        command = rig.tick()
        if held_at is None and is_hold(command):
            held_at = rig.now
        assert np.all(np.isfinite(command))
    assert held_at is not None and max_age_ns < held_at - last_message_ns <= max_age_ns + 2 * PERIOD_NS
    assert all(is_hold(command) for command in rig.sent[-30:])
    status = rig.controller.status()
    assert status["state"] == "holding" and status["stale"] >= 30 and status["held"] == status["stale"]
    warnings = [line for line in rig.log_text.getvalue().splitlines() if "[WARN]" in line]
    assert len(warnings) == 1 and "joint_position on /joint_states" in warnings[0]  # rate-limited, names the input
    rig.observe(obs)
    np.testing.assert_allclose(rig.tick(), model_command, atol=1e-6)
    assert rig.controller.status()["state"] == "running"
    assert "observations are fresh again" in rig.log_text.getvalue()


def test_a_missing_observation_holds_from_the_first_tick(models):
    rig = Rig(models["bc"])
    rig.observe(observation(), topics=("/eef_pose", "/object_pose"))
    assert all(is_hold(rig.tick()) for _ in range(3))
    assert "no message yet on /joint_states" in rig.log_text.getvalue()


def test_estop_latches_the_hold_until_reset_after_release(models):
    rig, obs = Rig(models["bc"]), observation()
    model_command = expected_command(models["bc"], obs)
    rig.observe(obs)
    np.testing.assert_allclose(rig.tick(), model_command, atol=1e-6)
    rig.controller.on_estop(True)
    rig.observe(obs)
    assert is_hold(rig.tick())
    assert rig.controller.on_reset() is False  # /estop still true: the latch stays
    rig.observe(obs)
    assert is_hold(rig.tick())
    rig.controller.on_estop(False)
    for _ in range(5):  # released, not reset: still holding
        rig.observe(obs)
        assert is_hold(rig.tick())
    assert rig.controller.status()["state"] == "estop"
    assert rig.controller.on_reset() is True
    rig.observe(obs)
    np.testing.assert_allclose(rig.tick(), model_command, atol=1e-6)


def test_nan_observations_never_reach_the_command(models):
    rig, obs = Rig(models["bc"]), observation()
    broken = dict(obs, joint_position=np.array([np.nan, np.inf]))
    for _ in range(5):
        rig.observe(broken)
        command = rig.tick()
        assert np.all(np.isfinite(command)) and np.all(np.abs(command) <= 1.0)


def test_workspace_and_change_limits_from_the_node_parameters_shape_the_command(models):
    obs = observation()
    model_command = expected_command(models["bc"], obs)
    x, y = (float(v) for v in obs["eef_pose"][:2])
    # A box whose edge is the end effector itself on the side the model wants to go: that element is cut to 0.
    axis = int(np.argmax(np.abs(model_command)))
    low, high = [x - 0.1, y - 0.1], [x + 0.1, y + 0.1]
    (high if model_command[axis] > 0 else low)[axis] = float(obs["eef_pose"][axis])
    rig = Rig(models["bc"], workspace_low=str(low), workspace_high=str(high), max_step="0.05")
    rig.observe(obs)
    command = rig.tick()
    assert command[axis] == pytest.approx(0.0, abs=1e-9)
    # The other element moves, inside the box, by at most max_step from the hold command the filter starts at
    # (without the end effector's position the filter would hold both).
    other = 1 - axis
    assert abs(model_command[other]) > 1e-3
    assert command[other] == pytest.approx(np.clip(model_command[other], -0.05, 0.05), abs=1e-9)
    assert rig.controller.status()["workspace"] == 1


def test_a_mismatched_model_is_refused_and_the_running_one_keeps_control(models):
    rig, obs = Rig(models["bc"]), observation()
    model_command = expected_command(models["bc"], obs)
    for bad in (models["poses"].read_bytes(), b"not a model"):
        with pytest.raises(DeployError) as refused:
            rig.controller.prepare(bad)
        rig.controller.refuse(str(refused.value))
        rig.observe(obs)
        np.testing.assert_allclose(rig.tick(), model_command, atol=1e-6)
    status = rig.controller.status()
    assert status["model"] == read_card(models["bc"]).name and status["refused_models"] == 2 and status["swaps"] == 0
    assert status["last_load"]["result"] == "refused"
    poses_refusal = next(line for line in rig.log_text.getvalue().splitlines() if "refused the model" in line)
    assert "cannot replace the running" in poses_refusal and "inputs" in poses_refusal


def test_a_fitting_model_is_swapped_in_between_two_ticks(models):
    rig, obs = Rig(models["bc"]), observation()
    old, new = expected_command(models["bc"], obs), expected_command(models["other"], obs)
    assert not np.allclose(old, new, atol=1e-4)
    prepared = rig.controller.prepare(models["other"].read_bytes())
    rig.observe(obs)
    np.testing.assert_allclose(rig.tick(), old, atol=1e-6)
    rig.controller.install(prepared)
    rig.observe(obs)
    np.testing.assert_allclose(rig.tick(), new, atol=1e-6)
    status = rig.controller.status()
    assert status["swaps"] == 1 and status["model"] == read_card(models["other"]).name
    assert status["onnx_sha256"] == prepared.sha256 and status["last_load"]["result"] == "loaded"


def test_a_model_that_does_not_fit_the_robot_is_named_in_one_error(models):
    card = read_card(models["bc"])
    check_fits(card, robot_features(card, FEATURES, command_spec_of=command_spec_of), 20.0)
    lift = robot_features(card, REPO / "launch" / "params" / "recorder_lift.yaml", command_spec_of=command_spec_of)
    with pytest.raises(DeployError, match="does not fit this robot: command meaning .* action size is 2 for the model "
                                          "but 7 on the robot"):
        check_fits(card, lift)
    with pytest.raises(DeployError, match="rate is 20 Hz for the model but 10 Hz on the robot"):
        check_fits(card, robot_features(card, FEATURES, command_spec_of=command_spec_of), 10.0)


def test_a_model_slower_than_half_a_control_period_after_warm_up_is_refused(models):
    with pytest.raises(DeployError, match="after warm-up is over the budget"):
        load_policy(models["bc"], rate_hz=1e7)  # a budget of 50 ns
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():  # asked for CUDA it lacks: a line
        with pytest.raises(DeployError, match="cuda"):
            load_policy(models["bc"], device="cuda")


# ---- the node as a process: refusals


def run_policy(*params: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "robot_stack.launch.entry_point", "policy", "--ros-args"]
    for param in params:
        args += ["-p", param]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


_HELP_PROBE = """\
import sys
from robot_stack.launch.entry_point import main
code = main(["policy", "--help"])
loaded = [name for name in ("cyclonedds", "mujoco", "onnxruntime") if name in sys.modules]
print(f"PROBE exit={code} loaded={loaded}", file=sys.stderr)
"""


def test_policy_help_lists_every_parameter_and_topic_without_starting_anything():
    from robot_stack.nodes.policy import INTERFACE

    result = subprocess.run([sys.executable, "-c", _HELP_PROBE], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=False)
    assert "PROBE exit=0 loaded=[]" in result.stderr, result.stderr
    assert result.stdout.startswith("usage: policy [--ros-args")
    for spec in INTERFACE.parameters:
        assert f"{spec.default_text}: {spec.meaning}" in result.stdout
    for topic in INTERFACE.subscribes + INTERFACE.publishes:
        assert f"  {topic.name}  [{topic.type}]" in result.stdout


def test_node_refuses_a_model_that_does_not_fit_the_robot_in_one_line(models):
    result = run_policy(f"model:={models['bc']}", f"features:={REPO / 'launch/params/recorder_lift.yaml'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "[FATAL]" in lines[0] and "does not fit this robot" in lines[0], result.stderr
    assert "task:=reach2d" in lines[0] and "Traceback" not in result.stderr


def test_node_refuses_a_model_file_that_does_not_match_its_card(models, tmp_path):
    shutil.copy(models["bc"], tmp_path / "bc.onnx")
    card = json.loads(models["bc"].with_suffix(".json").read_text())
    card["onnx_sha256"] = "0" * 64  # the card beside it belongs to another file
    (tmp_path / "bc.json").write_text(json.dumps(card))
    result = run_policy(f"model:={tmp_path / 'bc.onnx'}", f"features:={FEATURES}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "[FATAL]" in lines[0] and "does not match" in lines[0], result.stderr


# ---- the node over DDS, started by the deploy launch, this test being the robot


class Robot:
    """The test's node: publishes a frozen observation like a driver (joint_states on /arm/joint_states, as a
    real robot might name it), sends /estop, /policy/reset, /policy/load; keeps commands and the last status."""

    def __init__(self, ros) -> None:
        self.ros = ros
        self.node = ros.create_node("test_robot")
        sensor = ros.qos.SENSOR_DATA
        pose = "geometry_msgs/msg/PoseStamped"
        self.publishers = {
            "/joint_states": self.node.create_publisher("sensor_msgs/msg/JointState", "/arm/joint_states", sensor),
            "/eef_pose": self.node.create_publisher(pose, "/eef_pose", sensor),
            "/object_pose": self.node.create_publisher(pose, "/object_pose", sensor),
        }
        self.estop = self.node.create_publisher("std_msgs/msg/Bool", "/estop", ros.qos.TRANSIENT_LOCAL)
        # what `robot-stack topic pub /estop ...` offers by default: volatile
        self.estop_volatile = self.node.create_publisher("std_msgs/msg/Bool", "/estop", ros.qos.DEFAULT)
        self.reset = self.node.create_publisher("std_msgs/msg/Bool", "/policy/reset", ros.qos.DEFAULT)
        self.load = self.node.create_publisher("std_msgs/msg/UInt8MultiArray", "/policy/load",
                                               ros.qos.DEFAULT.with_depth(1))
        self.commands: list[np.ndarray] = []
        self.status: dict = {}
        self.node.create_subscription("std_msgs/msg/Float64MultiArray", "/robot/command",
                                      lambda m: self.commands.append(np.asarray(m.data)),
                                      ros.qos.DEFAULT.with_depth(100))
        self.node.create_subscription("std_msgs/msg/String", "/policy/status",
                                      lambda m: self.status.update(json.loads(m.data)), ros.qos.TRANSIENT_LOCAL)
        self.obs = observation()
        self.live = {"/joint_states", "/eef_pose", "/object_pose"}
        self.next_publish = 0.0

    def spin_until(self, predicate, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}; status {self.status}"
            if time.monotonic() >= self.next_publish:  # the driver's 20 Hz
                for topic, message in messages(self.obs).items():
                    if topic in self.live:
                        self.publishers[topic].publish(message)
                self.next_publish = time.monotonic() + 0.05
            self.ros.spin_once(self.node, 0.01)

    def send(self, publisher, **fields) -> None:
        publisher.publish(publisher.msg_type(**fields))

    def last_command_is(self, command) -> bool:
        return bool(self.commands) and np.allclose(self.commands[-1], command, atol=1e-6)


@pytest.fixture(scope="module")
def deployment(models, tmp_path_factory):
    """launch/deploy.launch.yaml with sim:=false and joint_states remapped, and the test's robot node."""
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(random.randint(1, 200)),
           "ROBOT_STACK_DDS_TAG": f"pytest-{uuid.uuid4().hex[:12]}", "ROBOT_STACK_ROS_BACKEND": "dds"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    from robot_stack import ros

    ros.init([])
    command = [sys.executable, "-m", "robot_stack.cli.main", "launch", str(REPO / "launch" / "deploy.launch.yaml"),
               f"model:={models['bc']}", "task:=reach2d", "sim:=false", "joint_states:=/arm/joint_states"]
    output = (tmp_path_factory.mktemp("launch") / "launch.log").open("w")
    launch = subprocess.Popen(command, cwd=REPO, env=dict(os.environ), stdout=output, stderr=subprocess.STDOUT)
    robot = Robot(ros)
    try:
        yield robot
    finally:
        stop_process(launch)
        output.close()
        ros.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_node_commands_the_model_output_for_observations_on_remapped_topics(deployment, models):
    robot = deployment
    model_command = expected_command(models["bc"], robot.obs)
    robot.spin_until(lambda: robot.status.get("state") == "running" and robot.last_command_is(model_command),
                     "the model's command for the published observation")
    assert robot.status["model"] == read_card(models["bc"]).name


def test_node_holds_on_a_stale_observation_and_recovers_over_dds(deployment, models):
    robot = deployment
    model_command = expected_command(models["bc"], robot.obs)
    robot.live.discard("/joint_states")
    robot.spin_until(lambda: robot.status.get("state") == "holding" and robot.last_command_is([0.0, 0.0]),
                     "the hold command after joint_states stopped")
    assert robot.status["stale"] > 0
    robot.live.add("/joint_states")
    robot.spin_until(lambda: robot.status.get("state") == "running" and robot.last_command_is(model_command),
                     "the model's command once joint_states came back")


def test_node_estop_latches_until_policy_reset_over_dds(deployment, models):
    robot = deployment
    model_command = expected_command(models["bc"], robot.obs)
    # a volatile publisher's e-stop is heard too (once matched: a volatile message sent before is lost to anyone)
    robot.spin_until(lambda: robot.estop_volatile.get_subscription_count() > 0, "the volatile e-stop's match")
    robot.send(robot.estop_volatile, data=True)
    robot.spin_until(lambda: robot.status.get("state") == "estop" and robot.last_command_is([0.0, 0.0]), "e-stop")
    robot.send(robot.estop, data=False)
    robot.spin_until(lambda: robot.status.get("estop_engaged") is False, "the e-stop release")
    robot.commands.clear()
    robot.spin_until(lambda: len(robot.commands) >= 5, "commands after the release")
    assert robot.status["state"] == "estop" and all(np.array_equal(c, [0.0, 0.0]) for c in robot.commands)
    robot.send(robot.reset, data=True)
    robot.spin_until(lambda: robot.status.get("state") == "running" and robot.last_command_is(model_command),
                     "the model's command after /policy/reset")


def test_node_refuses_a_mismatched_hot_swap_and_takes_a_fitting_one_over_dds(deployment, models):
    robot = deployment
    model_command = expected_command(models["bc"], robot.obs)
    robot.send(robot.load, data=np.frombuffer(models["poses"].read_bytes(), np.uint8))
    robot.spin_until(lambda: (robot.status.get("last_load") or {}).get("result") == "refused", "the refusal")
    assert "cannot replace the running" in robot.status["last_load"]["reason"]
    robot.commands.clear()
    robot.spin_until(lambda: len(robot.commands) >= 3, "commands after the refusal")
    assert robot.status["model"] == read_card(models["bc"]).name and robot.last_command_is(model_command)
    other = read_card(models["other"]).name
    robot.send(robot.load, data=np.frombuffer(models["other"].read_bytes(), np.uint8))
    robot.spin_until(lambda: robot.status.get("model") == other
                     and robot.last_command_is(expected_command(models["other"], robot.obs)), "the swapped-in model")
    assert robot.status["swaps"] == 1 and robot.status["last_load"]["result"] == "loaded"
