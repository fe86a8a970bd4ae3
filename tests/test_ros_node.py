"""The node API on the inproc backend: parameters, remaps, names, QoS rules, timers, shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from robot_stack.errors import RosError
from robot_stack.ros.arguments import load_params_file, parse_arguments


def spin_for(ros, node, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ros.spin_once(node, 0.01)


def test_params_file_then_command_line_override_defaults(ros_session, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(textwrap.dedent("""
        /**:
          ros__parameters:
            rate_hz: 50.0
            frame: base
        /robot/recorder:
          ros__parameters:
            rate_hz: 30
            cameras: [wrist, front]
            limits: {max_speed: 0.5}
        other_node:
          ros__parameters:
            rate_hz: 1.0
    """))
    ros = ros_session("inproc", ["--ros-args", "--params-file", str(params), "-p", "frame:=tool0",
                                 "-r", "__ns:=/robot"])
    node = ros.create_node("recorder")
    assert node.get_fully_qualified_name() == "/robot/recorder"
    assert node.declare_parameter("rate_hz", 10.0).value == 30.0  # node key beats /**, int widened to float
    assert isinstance(node.get_parameter("rate_hz").value, float)
    assert node.declare_parameter("frame", "world").value == "tool0"  # -p beats the file
    assert node.declare_parameter("cameras", ["front"]).value == ["wrist", "front"]
    assert node.declare_parameter("limits.max_speed", 1.0).value == 0.5
    assert node.declare_parameter("unset", 7).value == 7


def test_parameter_of_the_wrong_type_is_a_clear_error(ros_session):
    ros = ros_session("inproc", ["--ros-args", "-p", "rate_hz:=fast"])
    node = ros.create_node("recorder")
    with pytest.raises(RosError, match="parameter 'rate_hz' of node '/recorder' is DOUBLE.*STRING 'fast'"):
        node.declare_parameter("rate_hz", 10.0)
    with pytest.raises(RosError, match="parameter 'missing' .* is not declared"):
        node.get_parameter("missing")


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(RosError, match=r"params file '.*nope.yaml' not found"):
        parse_arguments(["--ros-args", "--params-file", str(tmp_path / "nope.yaml")])


def test_malformed_ros_arguments_are_clear_errors():
    with pytest.raises(RosError, match="-p expects name:=value"):
        parse_arguments(["--ros-args", "-p", "rate"])
    with pytest.raises(RosError, match="unknown argument '--bogus'"):
        parse_arguments(["--ros-args", "--bogus"])
    parsed = parse_arguments(["input.zarr", "--ros-args", "-p", "a:=[1, 2]", "--", "--verbose"])
    assert parsed.remaining == ["input.zarr", "--verbose"] and parsed.params == {"a": [1, 2]}


def test_params_file_wildcards_and_nesting(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("robot:\n  arm:\n    ros__parameters: {a: 1}\n/**/arm:\n  ros__parameters: {b: 2}\n")
    assert load_params_file(params, "/robot/arm") == {"a": 1, "b": 2}
    assert load_params_file(params, "/other/hand") == {}


def test_remaps_and_name_expansion(ros_session):
    ros = ros_session("inproc", ["--ros-args", "-r", "chatter:=/talk", "-r", "__node:=speaker", "-r", "__ns:=/arm"])
    node = ros.create_node("talker")
    assert node.get_name() == "speaker" and node.get_namespace() == "/arm"
    assert node.resolve_topic_name("chatter") == "/talk"
    assert node.resolve_topic_name("joint_states") == "/arm/joint_states"
    assert node.resolve_topic_name("~/status") == "/arm/speaker/status"
    assert node.resolve_topic_name("/abs") == "/abs"
    String = ros.message_class("std_msgs/msg/String")
    got = []
    node.create_subscription(String, "/talk", lambda m: got.append(m.data), 10)
    node.create_publisher(String, "chatter", 10).publish(String(data="hi"))
    spin_for(ros, node, 0.05)
    assert got == ["hi"]
    with pytest.raises(RosError, match="invalid topic name"):
        node.create_publisher(String, "bad name!", 10)


def test_publish_checks_the_message_type(ros_session):
    ros = ros_session("inproc")
    node = ros.create_node("n")
    publisher = node.create_publisher(ros.message_class("std_msgs/msg/String"), "x", 10)
    with pytest.raises(RosError, match="sends std_msgs/msg/String, got std_msgs/msg/Bool"):
        publisher.publish(ros.message_class("std_msgs/msg/Bool")(data=True))
    with pytest.raises(RosError, match="field 'data' expects string"):
        publisher.publish(ros.message_class("std_msgs/msg/String")(data=3))


def test_incompatible_qos_is_reported_like_ros(ros_session, capsys):
    ros = ros_session("inproc")
    node = ros.create_node("n")
    Float64 = ros.message_class("std_msgs/msg/Float64")
    got = []
    node.create_subscription(Float64, "x", got.append, ros.qos.DEFAULT)  # reliable request
    publisher = node.create_publisher(Float64, "x", ros.qos.SENSOR_DATA)  # best-effort offer
    publisher.publish(Float64(data=1.0))
    spin_for(ros, node, 0.05)
    assert got == []
    err = capsys.readouterr().err
    assert ("New publisher discovered on topic '/x', offering incompatible QoS. No messages will be received "
            "from it. Last incompatible policy: RELIABILITY") in err
    assert "requesting incompatible QoS" in err


def test_transient_local_reaches_a_late_subscription_and_depth_is_kept(ros_session):
    ros = ros_session("inproc")
    node = ros.create_node("n")
    String = ros.message_class("std_msgs/msg/String")
    latched = node.create_publisher(String, "status", ros.qos.TRANSIENT_LOCAL)
    latched.publish(String(data="old"))
    latched.publish(String(data="latest"))
    got = []
    node.create_subscription(String, "status", lambda m: got.append(m.data), ros.qos.TRANSIENT_LOCAL)
    spin_for(ros, node, 0.05)
    assert got == ["latest"]  # depth 1: only the last one is kept for late joiners
    volatile_got = []
    node.create_subscription(String, "status", lambda m: volatile_got.append(m.data), ros.qos.DEFAULT)
    spin_for(ros, node, 0.05)
    assert volatile_got == []


def test_keep_last_depth_drops_the_oldest(ros_session):
    ros = ros_session("inproc")
    node = ros.create_node("n")
    Float64 = ros.message_class("std_msgs/msg/Float64")
    got = []
    node.create_subscription(Float64, "x", lambda m: got.append(m.data), 3)
    publisher = node.create_publisher(Float64, "x", 3)
    for i in range(10):
        publisher.publish(Float64(data=float(i)))
    spin_for(ros, node, 0.05)
    assert got == [7.0, 8.0, 9.0]


def test_timers_call_back_and_can_be_cancelled(ros_session):
    ros = ros_session("inproc")
    node = ros.create_node("n")
    calls = []
    timer = node.create_timer(0.01, lambda: calls.append(time.monotonic()))
    spin_for(ros, node, 0.2)
    assert len(calls) >= 5
    assert all(b > a for a, b in zip(calls, calls[1:]))
    timer.cancel()
    count = len(calls)
    spin_for(ros, node, 0.05)
    assert len(calls) == count


def test_node_requires_init():
    from robot_stack.ros.context import Context
    from robot_stack.ros.node import Node

    with pytest.raises(RosError, match="call robot_stack.ros.init"):
        Node("n", backend="inproc", context=Context())


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_end_spin_cleanly(signum):
    program = textwrap.dedent("""
        import sys
        from robot_stack import ros
        ros.init([])
        node = ros.create_node("sleeper")
        node.create_timer(0.05, lambda: None)
        print("spinning", flush=True)
        ros.spin(node)
        node.destroy_node()
        ros.shutdown()
        print("clean exit", flush=True)
    """)
    process = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**__import__("os").environ, "ROBOT_STACK_ROS_BACKEND": "inproc"})
    assert process.stdout.readline().strip() == "spinning"
    process.send_signal(signum)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "clean exit" in out and "Traceback" not in err


def test_backend_choice_is_validated(monkeypatch):
    from robot_stack.ros.context import choose_backend

    monkeypatch.setenv("ROBOT_STACK_ROS_BACKEND", "zmq")
    with pytest.raises(RosError, match="ROBOT_STACK_ROS_BACKEND='zmq': use one of rclpy, dds, inproc"):
        choose_backend()
    monkeypatch.delenv("ROBOT_STACK_ROS_BACKEND")
    assert choose_backend() == "dds"  # no rclpy on this machine


def test_numpy_arrays_travel_between_nodes(ros_session):
    ros = ros_session("inproc")
    node = ros.create_node("n")
    JointState = ros.message_class("sensor_msgs/msg/JointState")
    got = []
    node.create_subscription(JointState, "joint_states", got.append, ros.qos.SENSOR_DATA)
    node.create_publisher(JointState, "joint_states", ros.qos.SENSOR_DATA).publish(JointState(position=np.arange(7.0)))
    spin_for(ros, node, 0.05)
    assert isinstance(got[0].position, np.ndarray) and got[0].position.tolist() == list(range(7))
