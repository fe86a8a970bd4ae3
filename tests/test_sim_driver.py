"""The sim robot driver node over real DDS: commands, watchdog, e-stop, reset, cameras, env parity."""

from __future__ import annotations

import subprocess
import sys
import time

import gymnasium
import numpy as np
import pytest

import robot_stack.sim  # noqa: F401  (registers the RobotStack/* gymnasium ids)
from conftest import REPO
from robot_stack.ros import convert


def start_driver(task: str, **params) -> subprocess.Popen:
    args = [sys.executable, "-m", "robot_stack.launch.entry_point", "sim_robot", "--ros-args", "-p", f"task:={task}"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def stop(process: subprocess.Popen) -> str:
    process.send_signal(subprocess.signal.SIGINT)
    try:
        _, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    return err


class Probe:
    """A test-side node: latest observation of every driver topic, publishers for its inputs."""

    def __init__(self, ros, cameras=()):
        self.ros = ros
        self.node = ros.create_node("probe")
        self.latest: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        topics = {"joint_states": "sensor_msgs/msg/JointState", "eef_pose": "geometry_msgs/msg/PoseStamped",
                  "object_pose": "geometry_msgs/msg/PoseStamped", "sim/reward": "std_msgs/msg/Float64",
                  "sim/success": "std_msgs/msg/Bool"}
        topics.update({f"camera/{c}/image_raw": "sensor_msgs/msg/Image" for c in cameras})
        for topic, type_name in topics.items():
            qos = ros.qos.DEFAULT if topic.startswith("sim/") else ros.qos.SENSOR_DATA
            self.node.create_subscription(type_name, topic, self._store(topic), qos.with_depth(100))
        self.command = self.node.create_publisher("std_msgs/msg/Float64MultiArray", "robot/command", ros.qos.DEFAULT)
        self.estop = self.node.create_publisher("std_msgs/msg/Bool", "estop", ros.qos.TRANSIENT_LOCAL)
        # what `robot-stack topic pub /estop ...` offers by default: volatile
        self.estop_volatile = self.node.create_publisher("std_msgs/msg/Bool", "estop", ros.qos.DEFAULT)
        self.reset = self.node.create_publisher("std_msgs/msg/Int64", "sim/reset", ros.qos.DEFAULT)

    def _store(self, topic):
        def store(message):
            self.latest[topic] = message
            self.counts[topic] = self.counts.get(topic, 0) + 1
        return store

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ros.spin_once(self.node, 0.01)

    def wait_for(self, predicate, timeout: float = 20.0, what: str = "condition") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            self.ros.spin_once(self.node, 0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def eef(self) -> np.ndarray:
        return convert.pose_array(self.latest["eef_pose"])

    def send(self, values, seconds: float, hz: float = 20.0) -> None:
        """Publish a command at `hz` for `seconds`, spinning in between."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.command.publish(convert.float_array(values))
            self.spin(1.0 / hz)

    def motion(self, values, seconds: float) -> np.ndarray:
        start = self.eef()
        self.send(values, seconds)
        return self.eef() - start


@pytest.fixture
def probe(ros_session, dds_env):
    ros = ros_session("dds")
    processes = []

    def make(task: str, subscribe_cameras=(), **params):
        processes.append(start_driver(task, **params))
        probe = Probe(ros, subscribe_cameras)
        probe.wait_for(lambda: {"joint_states", "eef_pose", "object_pose"} <= probe.latest.keys(),
                       what="the driver's first observation")
        return probe

    yield make
    for process in processes:
        stop(process)


def test_command_moves_the_eef_in_the_commanded_direction(probe):
    robot = probe("reach2d", command_timeout=0.5)
    moved = robot.motion([1.0, 0.0], 1.0)
    assert moved[0] > 0.02 and abs(moved[1]) < moved[0] / 2
    moved = robot.motion([0.0, -1.0], 1.0)
    assert moved[1] < -0.02 and abs(moved[0]) < -moved[1] / 2


def test_a_stale_command_makes_the_robot_hold_still(probe):
    robot = probe("reach2d", command_timeout=0.3)
    commanded = robot.motion([1.0, 0.0], 0.6)
    robot.command.publish(convert.float_array([1.0, 0.0]))  # one last command, then silence
    robot.spin(0.6)
    start = robot.eef()
    robot.spin(0.6)
    drift = np.linalg.norm(robot.eef()[:2] - start[:2])
    assert drift < 0.1 * np.linalg.norm(commanded[:2])


@pytest.mark.parametrize("publisher", ["estop", "estop_volatile"])
def test_estop_holds_the_robot_until_cleared(probe, publisher):
    """An e-stop is heard from a latched (transient-local) publisher and from a volatile one alike."""
    robot = probe("reach2d", command_timeout=0.5)
    getattr(robot, publisher).publish(robot.ros.message_class("std_msgs/msg/Bool")(data=True))
    robot.spin(0.3)
    frozen = robot.motion([0.0, -1.0], 0.8)
    robot.estop.publish(robot.ros.message_class("std_msgs/msg/Bool")(data=False))
    robot.spin(0.3)
    resumed = robot.motion([0.0, -1.0], 0.8)
    assert -resumed[1] > 0.02 and np.linalg.norm(frozen[:2]) < 0.1 * -resumed[1]


def test_reset_gives_a_new_seeded_object_placement(probe):
    robot = probe("reach2d", seed=5)
    first = convert.pose_array(robot.latest["object_pose"])
    Int64 = robot.ros.message_class("std_msgs/msg/Int64")
    robot.wait_for(lambda: robot.reset.get_subscription_count() > 0, what="reset subscription")
    robot.reset.publish(Int64(data=-1))  # the next seed of the sequence
    robot.wait_for(lambda: not np.allclose(convert.pose_array(robot.latest["object_pose"]), first),
                   what="a new object placement")
    robot.reset.publish(Int64(data=5))  # the first seed again: the first placement again
    robot.wait_for(lambda: np.allclose(convert.pose_array(robot.latest["object_pose"]), first),
                   what="the seed-5 placement again")


def test_camera_topics_carry_images_of_the_configured_size(probe):
    robot = probe("reach2d", subscribe_cameras=["top"], cameras="top:48x64")
    robot.wait_for(lambda: "camera/top/image_raw" in robot.latest, what="an image")
    image = robot.latest["camera/top/image_raw"]
    assert (image.height, image.width, image.encoding, image.step) == (48, 64, "rgb8", 192)
    frame = convert.image_array(image)
    assert frame.shape == (48, 64, 3) and frame.std() > 0  # a rendered scene, not a blank buffer


def test_a_command_of_the_wrong_length_is_rejected_and_the_robot_holds(dds_env, ros_session):
    ros = ros_session("dds")
    process = start_driver("reach2d", command_timeout=5.0)
    robot = Probe(ros)
    try:
        robot.wait_for(lambda: "eef_pose" in robot.latest, what="the driver's first eef_pose")
        moved = robot.motion([1.0, 0.0, 0.0, 0.0, 0.0], 0.8)
        assert np.linalg.norm(moved[:2]) < 1e-3
    finally:
        err = stop(process)
    assert "rejected robot/command: command has 5 values, this robot takes 2" in err


@pytest.mark.parametrize(("task", "steps"), [("reach2d", 30), ("lift", 8)])
def test_env_and_node_give_the_same_observation_for_the_same_commands(probe, task, steps):
    env_id = {"reach2d": "RobotStack/Reach2D-v0", "lift": "RobotStack/Lift-v0"}[task]
    env = gymnasium.make(env_id)
    observation, _ = env.reset(seed=11)
    rng = np.random.default_rng(0)
    commands = rng.uniform(-1, 1, (steps, env.action_space.shape[0]))
    expected = [observation]
    for command in commands:
        observation, *_ = env.step(command)
        expected.append(observation)
    env.close()

    robot = probe(task, realtime="false")
    Int64 = robot.ros.message_class("std_msgs/msg/Int64")
    robot.wait_for(lambda: robot.reset.get_subscription_count() > 0, what="reset subscription")
    robot.spin(0.3)  # let the start-up observation arrive before listening for the reset's
    robot.latest.clear()
    robot.reset.publish(Int64(data=11))
    for index, command in enumerate([None, *commands]):
        if command is not None:
            robot.latest.clear()
            robot.command.publish(convert.float_array(command))
        robot.wait_for(lambda: {"joint_states", "eef_pose", "object_pose"} <= robot.latest.keys(),
                       what=f"observation after step {index}")
        joints = robot.latest["joint_states"]
        np.testing.assert_array_equal(joints.position, expected[index]["joint_position"])
        np.testing.assert_array_equal(joints.velocity, expected[index]["joint_velocity"])
        np.testing.assert_array_equal(convert.pose_array(robot.latest["eef_pose"]), expected[index]["eef_pose"])
        np.testing.assert_array_equal(convert.pose_array(robot.latest["object_pose"]), expected[index]["object_pose"])


@pytest.mark.parametrize(("params", "message"), [
    ({"task": "fly"}, "unknown sim task 'fly'; tasks: lift, reach2d"),
    ({"task": "reach2d", "dynamics": "mars"}, "unknown dynamics preset 'mars'"),
    ({"task": "reach2d", "dynamics_overrides": "'{wind: 3}'"}, "unknown dynamics override(s) wind"),
])
def test_bad_task_preset_or_override_is_a_clear_error(dds_env, params, message):
    task = params.pop("task")
    process = start_driver(task, **params)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert message in err and "Traceback" not in err
