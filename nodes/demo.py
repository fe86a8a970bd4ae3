"""Demo nodes that exercise the ROS 2 layer until the sim robot exists.

``demo_arm`` publishes a 7-joint arm's ``joint_states`` (sinusoids) at ``rate_hz``
and follows ``robot/command`` joint targets; ``demo_monitor`` reports the rate it
receives and exits after ``duration_s`` (1 if nothing arrived).
"""

from __future__ import annotations

import math
import time

import numpy as np

from robot_stack import ros
from robot_stack.errors import RobotStackError
from robot_stack.ros.parameters import NodeInterface, ParameterSpec, TopicSpec, answer_help

ARM = NodeInterface(
    executable="demo_arm",
    summary="A stand-in 7-joint arm: publishes sinusoidal joint states around the last joint target.",
    parameters=(
        ParameterSpec("rate_hz", 100.0, "publishing rate [Hz]", positive=True),
        ParameterSpec("joint_names", [f"panda_joint{i}" for i in range(1, 8)], "the joints' names"),
    ),
    subscribes=(TopicSpec("robot/command", "std_msgs/msg/Float64MultiArray", "joint targets [rad], one per joint"),),
    publishes=(TopicSpec("joint_states", "sensor_msgs/msg/JointState", "positions [rad] at rate_hz"),),
)
MONITOR = NodeInterface(
    executable="demo_monitor",
    summary="Reports the rate of joint_states it receives once a second; exit status 1 if none came.",
    parameters=(
        ParameterSpec("duration_s", 0.0, "exit after this long [s] (0: run until stopped)", minimum=0.0),
        ParameterSpec("expect_hz", 0.0, "the rate to mention next to the measured one [Hz] (0: none)", minimum=0.0),
    ),
    subscribes=(TopicSpec("joint_states", "sensor_msgs/msg/JointState", "counted"),),
)


def _declare(interface: NodeInterface, node) -> dict | None:
    """The node's parameters, or None after logging the one-line reason they cannot be used."""
    try:
        return interface.declare(node)
    except RobotStackError as error:
        node.get_logger().fatal(str(error))
        node.destroy_node()
        ros.shutdown()
        return None


def demo_arm_main(args: list[str] | None = None) -> int:
    if answer_help(ARM, args):
        return 0
    ros.init(args)
    node = ros.create_node("demo_arm")
    param = _declare(ARM, node)
    if param is None:
        return 2
    rate_hz, joints = param["rate_hz"], param["joint_names"]
    JointState = ros.message_class("sensor_msgs/msg/JointState")
    Float64MultiArray = ros.message_class("std_msgs/msg/Float64MultiArray")
    publisher = node.create_publisher(JointState, "joint_states", ros.qos.SENSOR_DATA)
    target = np.zeros(len(joints))

    def on_command(message) -> None:
        command = np.asarray(message.data, dtype=float)
        if command.shape != target.shape:
            node.get_logger().error(
                f"robot/command has {command.size} values, expected {target.size}: ignored", throttle_duration_sec=1.0
            )
            return
        target[:] = command

    node.create_subscription(Float64MultiArray, "robot/command", on_command, ros.qos.DEFAULT)
    start = time.monotonic()
    phases = np.linspace(0.0, math.pi, len(joints))

    def publish() -> None:
        t = time.monotonic() - start
        message = JointState(name=list(joints), position=target + 0.1 * np.sin(2 * math.pi * 0.5 * t + phases),
                             velocity=np.zeros(len(joints)), effort=np.zeros(len(joints)))
        message.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(message)

    node.create_timer(1.0 / rate_hz, publish)
    node.get_logger().info(f"publishing {len(joints)} joint states at {rate_hz:g} Hz")
    ros.spin(node)
    node.destroy_node()
    ros.shutdown()
    return 0


def demo_monitor_main(args: list[str] | None = None) -> int:
    if answer_help(MONITOR, args):
        return 0
    ros.init(args)
    node = ros.create_node("demo_monitor")
    param = _declare(MONITOR, node)
    if param is None:
        return 2
    duration_s, expect_hz = float(param["duration_s"]), float(param["expect_hz"])
    JointState = ros.message_class("sensor_msgs/msg/JointState")
    received = {"total": 0, "window": 0}

    def on_joint_states(_message) -> None:
        received["total"] += 1
        received["window"] += 1

    node.create_subscription(JointState, "joint_states", on_joint_states, ros.qos.SENSOR_DATA)
    start = last = time.monotonic()

    def report() -> None:
        nonlocal last
        now = time.monotonic()
        rate = received["window"] / (now - last)
        expectation = f" (expected {expect_hz:g} Hz)" if expect_hz else ""
        node.get_logger().info(f"joint_states: {rate:.1f} Hz{expectation}, {received['total']} messages in total")
        received["window"], last = 0, now
        if duration_s and now - start >= duration_s:
            ros.request_shutdown()

    node.create_timer(1.0, report)
    ros.spin(node)
    total = received["total"]
    elapsed = time.monotonic() - start
    if total == 0:
        node.get_logger().error(f"no joint_states received in {elapsed:.1f} s: is a robot publishing on "
                                f"{node.resolve_topic_name('joint_states')}?")
    else:
        node.get_logger().info(f"received {total} joint_states in {elapsed:.1f} s ({total / elapsed:.1f} Hz)")
    node.destroy_node()
    ros.shutdown()
    return 0 if total else 1
