"""`robot-stack topic` against real processes over Cyclone DDS on loopback (each test its own domain and tag)."""

from __future__ import annotations

import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, fresh_dds_env

BIN = Path(sys.executable).parent


def _command(script: str, module_fallback: list[str]) -> list[str]:
    """The installed entry point next to this interpreter, else the same code through ``python -c/-m``."""
    found = shutil.which(script, path=str(BIN))
    return [found] if found else [sys.executable, *module_fallback]


ROBOT_STACK = _command("robot-stack", ["-m", "robot_stack.cli.main"])
DEMO_ARM = _command("demo_arm", ["-c", "import sys; from robot_stack.nodes.demo import demo_arm_main; "
                                       "sys.exit(demo_arm_main())"])


def loopback_env() -> dict[str, str]:
    """LOCALHOST discovery, a domain of our own (150..200) and a fresh discovery tag."""
    return fresh_dds_env(ROS_DOMAIN_ID=str(random.randint(150, 200)))


def topic(args: list[str], env: dict[str, str], timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run([*ROBOT_STACK, "topic", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def start_topic(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([*ROBOT_STACK, "topic", *args], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def documents(stdout: str) -> list:
    """The YAML documents echo printed, each followed by '---'."""
    parts = stdout.split("---\n")
    assert parts[-1] == "", f"output does not end with '---':\n{stdout}"
    return [yaml.safe_load(part) for part in parts[:-1]]


def stop(process: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 10) -> tuple[str, str]:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


@pytest.fixture(scope="module")
def arm():
    """demo_arm publishing 7-joint /joint_states at 50 Hz (best effort) in a domain of its own."""
    env = loopback_env()
    process = subprocess.Popen([*DEMO_ARM, "--ros-args", "-p", "rate_hz:=50.0"], env=env, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    yield env
    _, err = stop(process)
    assert process.returncode == 0, err


def test_list_shows_a_topic_of_another_process_with_its_type(arm):
    result = topic(["list", "--show-types", "--wait", "1.5"], arm)
    assert result.returncode == 0, result.stderr
    assert "/joint_states [sensor_msgs/msg/JointState]" in result.stdout.splitlines()
    assert "/robot/command [std_msgs/msg/Float64MultiArray]" in result.stdout.splitlines()  # subscriptions count too


def test_echo_once_prints_one_joint_state_with_seven_positions(arm):
    # No TYPE: echo learns it from the publisher, and subscribes best effort as the publisher offers.
    result = topic(["echo", "/joint_states", "--once", "--timeout", "8"], arm)
    assert result.returncode == 0, result.stderr
    (message,) = documents(result.stdout)
    assert message["name"] == [f"panda_joint{i}" for i in range(1, 8)]
    assert len(message["position"]) == 7 and all(abs(p) <= 0.1 + 1e-9 for p in message["position"])
    assert message["header"]["stamp"]["sec"] > 1_600_000_000


def test_echo_field_prints_only_that_field(arm):
    result = topic(["echo", "joint_states", "sensor_msgs/msg/JointState", "--field", "position", "--count", "2",
                    "--timeout", "8"], arm)
    assert result.returncode == 0, result.stderr
    values = documents(result.stdout)
    assert len(values) == 2 and all(isinstance(v, list) and len(v) == 7 for v in values)


def test_hz_reports_about_the_published_rate(arm):
    result = topic(["hz", "/joint_states", "--duration", "3"], arm)
    assert result.returncode == 0, result.stderr
    rates = [float(r) for r in re.findall(r"^average rate: ([0-9.]+)$", result.stdout, re.MULTILINE)]
    assert rates, result.stdout
    assert 25 <= rates[-1] <= 100  # 50 Hz published; loose: this checks the measurement, not the machine
    assert re.search(r"min: [0-9.]+s max: [0-9.]+s std dev: [0-9.]+s window: \d+", result.stdout)


def test_pub_times_delivers_every_message_to_an_echo_in_another_process():
    env = loopback_env()
    echo = start_topic(["echo", "/chatter", "std_msgs/msg/String", "--count", "3", "--timeout", "8"], env)
    result = topic(["pub", "/chatter", "std_msgs/msg/String", "{data: hello}", "--times", "3", "--rate", "20"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("publishing #") == 3
    out, err = echo.communicate(timeout=10)
    assert echo.returncode == 0, err
    assert documents(out) == [{"data": "hello"}] * 3


def test_pub_once_builds_the_message_from_yaml_for_a_node_subscriber(monkeypatch):
    from robot_stack import ros

    env = loopback_env()
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROBOT_STACK_DDS_TAG", "ROBOT_STACK_ROS_BACKEND"):
        monkeypatch.setenv(key, env[key])
    ros.init([])
    try:
        node = ros.create_node("command_listener")
        received = []
        node.create_subscription("std_msgs/msg/Float64MultiArray", "/robot/command", received.append, 10)
        publisher = subprocess.Popen([*ROBOT_STACK, "topic", "pub", "--once", "/robot/command",
                                      "std_msgs/msg/Float64MultiArray", "{data: [0.1, 0, 0, 0, 0, 0, 1]}"],
                                     env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 8
        while not received and time.monotonic() < deadline:
            ros.spin_once(node, timeout_sec=0.05)
        _, err = publisher.communicate(timeout=10)
    finally:
        ros.shutdown()
    assert publisher.returncode == 0, err
    assert len(received) == 1
    np.testing.assert_array_equal(received[0].data, [0.1, 0, 0, 0, 0, 0, 1])


def test_echo_prints_a_latched_message_published_before_it_started():
    env = loopback_env()
    latched = start_topic(["pub", "/status", "std_msgs/msg/String", "{data: ready}", "--qos-durability",
                           "transient_local", "--times", "1", "-w", "0", "--keep-alive", "10"], env)
    try:
        assert latched.stdout.readline() == "publisher: beginning loop\n"
        result = topic(["echo", "/status", "--once", "--timeout", "8"], env)
    finally:
        stop(latched)
    assert result.returncode == 0, result.stderr
    assert documents(result.stdout) == [{"data": "ready"}]


@pytest.mark.parametrize("args, expected", [
    (["pub", "/x", "std_msgs/msg/Float64", "{data: abc}"], r"field 'data' expects float64, got str 'abc'"),
    (["pub", "/x", "std_msgs/msg/Float64", "{dat: 1.0}"], r"has no field 'dat'; its fields are: data"),
    (["pub", "/x", "std_msgs/msg/Float64", "{data: [1,}"], r"not valid YAML"),
    (["pub", "/x", "std_msgs/msg/Float64", "[1, 2]"], r"must be a YAML mapping"),
    (["pub", "/x", "std_msgs/msg/Float64MultiArray", "{layout: {dim: 5}}"], r"field 'layout.dim' is a list of"),
    (["pub", "/x", "std_msgs/msg/NoSuchType", "{}"], r"unknown message type 'std_msgs/msg/NoSuchType'"),
    (["echo", "/x", "nonsense_msgs/msg/Thing"], r"unknown message type 'nonsense_msgs/msg/Thing'"),
    (["echo", "/x", "std_msgs/msg/Float64", "--field", "dta"], r"std_msgs/msg/Float64 has no field 'dta'"),
])
def test_bad_input_is_a_one_line_error_with_exit_status_2(args, expected):
    result = topic(args, loopback_env())
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.search(expected, result.stderr), result.stderr


def test_echo_of_a_topic_without_publisher_names_it_and_the_topics_that_exist(arm):
    result = topic(["echo", "/no_such_topic", "--timeout", "1.5"], arm)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "'/no_such_topic'" in line and "/joint_states" in line and "Traceback" not in line


def first_stderr_line(process: subprocess.Popen, within_s: float = 30) -> str:
    """The first line of robot-stack's own that the process writes to stderr (not the DDS layer's log lines);
    "" if it wrote none within ``within_s`` (then it is stopped)."""
    timer = threading.Timer(within_s, process.send_signal, (signal.SIGINT,))
    timer.start()
    try:
        while line := process.stderr.readline():
            if line.startswith("robot-stack topic:"):
                return line
        return ""
    finally:
        timer.cancel()


def test_typed_echo_without_a_publisher_says_it_is_waiting_for_one_in_its_domain():
    env = loopback_env()
    echo = start_topic(["echo", "/nobody_here", "std_msgs/msg/String"], env)
    line = first_stderr_line(echo)
    assert echo.poll() is None, line  # still waiting: this is a notice, not the end
    assert "warning: no publisher on '/nobody_here'" in line and f"ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']}" in line
    assert "waiting for one that publishes std_msgs/msg/String" in line
    out, err = stop(echo)
    assert echo.returncode == 0 and out == "" and "Traceback" not in err


def test_typed_echo_names_the_other_type_a_late_publisher_sends(monkeypatch):
    from robot_stack import ros
    from robot_stack.ros.context import default_context

    env = loopback_env()
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROBOT_STACK_DDS_TAG", "ROBOT_STACK_ROS_BACKEND"):
        monkeypatch.setenv(key, env[key])
    # Both QoS given: echo subscribes without waiting for a publisher.
    echo = start_topic(["echo", "/chatter", "std_msgs/msg/String", "--qos-reliability", "best_effort",
                        "--qos-durability", "volatile"], env)
    ros.init([])
    try:
        ros.create_node("graph_watcher")
        deadline = time.monotonic() + 20
        def subscribed() -> bool:
            endpoints = default_context.transport("dds").endpoints()
            return any(e["kind"] == "subscription" and e["topic"] == "/chatter" for e in endpoints)

        while time.monotonic() < deadline and not subscribed():
            time.sleep(0.05)
    finally:
        ros.shutdown()
    # Only now, with echo subscribed, a publisher turns up: it sends another type.
    publisher = start_topic(["pub", "/chatter", "std_msgs/msg/Int32", "{data: 7}", "--rate", "5"], env)
    try:
        line = first_stderr_line(echo)
    finally:
        stop(publisher)
    assert "'/chatter' is published as std_msgs/msg/Int32, not std_msgs/msg/String" in line, line
    out, _ = stop(echo)
    assert echo.returncode == 0 and out == ""


def test_ctrl_c_ends_echo_hz_and_pub_cleanly(arm):
    runs = [start_topic(["echo", "/joint_states"], arm), start_topic(["hz", "/joint_states"], arm),
            start_topic(["pub", "/chatter", "std_msgs/msg/String", "{data: hi}", "--rate", "10"], arm)]
    for process in runs:
        assert process.stdout.readline(), process.stderr.read()  # running: it printed something
    for process in runs:
        out, err = stop(process)
        assert process.returncode == 0, err
        assert "Traceback" not in err


def test_documented_topic_commands_are_valid_command_lines():
    from robot_stack.cli import topic as topic_cli
    from robot_stack.cli.main import build_parser

    text = (REPO / "docs" / "ros.md").read_text() + "\n" + topic_cli.EPILOG
    lines = [line.split(" #")[0].split(" | ")[0].strip() for line in text.splitlines() if line.strip().startswith("robot-stack topic")]
    assert len(lines) >= 10
    parser = build_parser()
    for line in lines:
        args = parser.parse_args(shlex.split(line)[1:])
        assert args.command == "topic" and callable(args.func), line
