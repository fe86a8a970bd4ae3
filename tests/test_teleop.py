"""The teleop node: keyboard in a real terminal (pty), device axis maps, and the scripted expert over DDS."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from robot_stack.data import Dataset
from robot_stack.teleop import DISCARD, FAIL, START, STOP, SUCCESS, KeyboardTeleop, gamepad_map, spacemouse_map


def node_command(name: str, *params: str) -> list[str]:
    args = [sys.executable, "-m", "robot_stack.launch.entry_point", name, "--ros-args"]
    for param in params:
        args += ["-p", param]
    return args


class Listener:
    """Collects robot/command and recorder/control from the node under test."""

    def __init__(self, ros):
        self.ros = ros
        self.node = ros.create_node("listener")
        self.commands: list[np.ndarray] = []
        self.events: list[str] = []
        self.node.create_subscription("std_msgs/msg/Float64MultiArray", "robot/command",
                                      lambda m: self.commands.append(np.asarray(m.data)), 100)
        self.node.create_subscription("std_msgs/msg/String", "recorder/control", lambda m: self.events.append(m.data), 100)

    def spin_until(self, predicate, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            self.ros.spin_once(self.node, 0.02)
        raise AssertionError(f"timed out waiting for {what}; events so far: {self.events}")


def test_keyboard_keys_map_to_commands_and_events():
    keys = KeyboardTeleop(command_dim=7, gripper_index=6, hold_ticks=2)
    assert keys.press("w") is None
    assert keys.tick().tolist() == [1, 0, 0, 0, 0, 0, -1]
    assert keys.tick()[0] == 1 and keys.tick()[0] == 0  # motion stops once the key stops repeating
    keys.press(" ")
    assert keys.tick()[6] == 1.0  # gripper toggled closed
    assert keys.press("\r") == START and keys.press("\r") == STOP
    assert [keys.press(k) for k in "ynx"] == [SUCCESS, FAIL, DISCARD]
    keys.press("f")
    assert keys.tick()[2] == -1


def test_device_axes_map_with_deadzone_and_buttons():
    pad = gamepad_map(command_dim=7, gripper_index=6)
    pad.axis(0x01, -32768, -32768, 32767)  # left stick pushed fully forward (y = min)
    pad.axis(0x00, 500, -32768, 32767)  # inside the dead zone
    command = pad.command()
    assert command[0] == pytest.approx(1.0, abs=1e-4) and command[1] == 0.0 and command[6] == -1.0
    assert pad.button(0x13B, True) == START and pad.button(0x13B, True) == STOP
    assert pad.button(0x130, True) == SUCCESS and pad.button(0x130, False) is None
    pad.button(0x137, True)
    assert pad.command()[6] == 1.0
    mouse = spacemouse_map(command_dim=7, gripper_index=6)
    mouse.axis(0x05, 350, -350, 350)
    assert mouse.command()[5] == pytest.approx(-1.0)


def test_keyboard_teleop_in_a_terminal_publishes_commands_and_recorder_events(ros_session, dds_env):
    ros = ros_session("dds")
    listener = Listener(ros)
    pid, fd = pty.fork()
    if pid == 0:  # the child: teleop with this pty as its terminal
        os.chdir(REPO)
        os.execv(sys.executable, node_command("teleop", "source:=keyboard", "command_dim:=7", "gripper_index:=6"))
    try:
        listener.spin_until(lambda: len(listener.commands) > 3, 20, "teleop's first commands")
        listener.spin_until(lambda: listener.node.count_subscribers("robot/command") >= 0, 1, "")
        for _ in range(10):
            os.write(fd, b"w")
            listener.ros.spin_once(listener.node, 0.03)
        listener.spin_until(lambda: any(c[0] == 1.0 for c in listener.commands), 5, "a +x command")
        assert all(c.shape == (7,) for c in listener.commands)
        os.write(fd, b"\r")
        listener.spin_until(lambda: START in listener.events, 5, "start")
        os.write(fd, b"y")
        listener.spin_until(lambda: SUCCESS in listener.events, 5, "success")
    finally:
        os.kill(pid, 2)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_idle_operator_sends_nothing_when_only_when_active(ros_session, dds_env):
    """For a teleop remapped to /teleop/command (online fine-tuning), every command it sends overrides the policy:
    with only_when_active it sends commands while keys move the robot and once for a gripper toggle, nothing idle."""
    ros = ros_session("dds")
    listener = Listener(ros)
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(REPO)
        os.execv(sys.executable, node_command("teleop", "source:=keyboard", "command_dim:=7", "gripper_index:=6",
                                              "only_when_active:=true"))
    try:
        listener.spin_until(lambda: listener.node.count_publishers("robot/command") > 0, 20, "teleop's publisher")
        end = time.monotonic() + 10
        while not listener.commands and time.monotonic() < end:  # keys until the listener hears the teleop
            os.write(fd, b"w")
            listener.ros.spin_once(listener.node, 0.05)
        assert listener.commands and all(c[0] == 1.0 for c in listener.commands), "a key sends its motion"
        end = time.monotonic() + 0.5  # the key's hold ticks run out
        while time.monotonic() < end:
            listener.ros.spin_once(listener.node, 0.02)
        idle_from = len(listener.commands)
        end = time.monotonic() + 1.5  # 30 control ticks of an idle operator
        while time.monotonic() < end:
            listener.ros.spin_once(listener.node, 0.02)
        assert len(listener.commands) == idle_from, "an idle operator sent commands"
        os.write(fd, b" ")  # the gripper toggles: one command, then idle again
        listener.spin_until(lambda: len(listener.commands) > idle_from, 5, "the gripper toggle")
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            listener.ros.spin_once(listener.node, 0.02)
        toggled = listener.commands[idle_from:]
        assert len(toggled) == 1 and toggled[0][6] == 1.0 and not np.any(toggled[0][:6])
    finally:
        os.kill(pid, 2)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0


def test_keyboard_teleop_without_a_terminal_is_a_clear_error(dds_env):
    result = subprocess.run(node_command("teleop", "source:=keyboard"), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert "keyboard teleop needs a terminal (stdin is not a tty)" in result.stderr
    assert "Traceback" not in result.stderr


def test_scripted_teleop_drives_episodes_on_the_sim_robot_and_exits(ros_session, dds_env, tmp_path):
    ros = ros_session("dds")
    listener = Listener(ros)
    driver = subprocess.Popen(node_command("sim_robot", "task:=reach2d"), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # The teleop counts an episode once the recorder's status confirms its commit: a real recorder answers.
    recorder = subprocess.Popen(node_command("recorder", f"features_file:={REPO / 'launch/params/recorder_reach2d.yaml'}",
                                             f"dataset:={tmp_path / 'd.zarr'}", "min_free_mb:=0"),
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    teleop = subprocess.Popen(node_command("teleop", "source:=scripted", "task:=reach2d", "episodes:=2",
                                           "max_steps:=60", "skill:=expert", "seed:=3"),
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        listener.spin_until(lambda: teleop.poll() is not None, 60, "the scripted teleop to finish")
        _, err = teleop.communicate(timeout=10)
        listener.ros.spin_once(listener.node, 0.2)
    finally:
        for process in (recorder, driver):
            process.send_signal(2)
            process.communicate(timeout=20)
        if teleop.poll() is None:
            teleop.kill()
    assert teleop.returncode == 0, err
    assert listener.events == [START, SUCCESS, START, SUCCESS], err
    assert "episode 2/2 committed: success" in err
    assert Dataset.open(tmp_path / "d.zarr").n_episodes == 2
