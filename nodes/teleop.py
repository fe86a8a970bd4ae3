"""``teleop``: publishes ``robot/command`` at the control rate and recorder events.

Sources (parameter ``source``):
- ``keyboard``: keys in this terminal (works over SSH; run it in its own terminal,
  ``ros2 run robot_stack teleop`` / ``robot-stack``'s venv ``teleop``), see KEYBOARD_HELP;
- ``gamepad`` / ``spacemouse``: an evdev device (``device`` path, or the first that fits);
- ``scripted``: the sim's scripted expert drives ``episodes`` episodes with no human:
  reset the scene (``sim/reset``), ``start`` the recorder, act until success
  (held ``success_hold`` ticks) or ``max_steps``, send ``success``/``fail``, repeat, exit 0.
"""

from __future__ import annotations

import os
import select
import sys

import numpy as np

from robot_stack import ros
from robot_stack.errors import RobotStackError
from robot_stack.ros import convert
from robot_stack.teleop import FAIL, KEYBOARD_HELP, START, SUCCESS, KeyboardTeleop, gamepad_map, spacemouse_map

SOURCES = ("keyboard", "gamepad", "spacemouse", "scripted")


class Teleop:
    def __init__(self, node) -> None:
        self.node = node
        self.log = node.get_logger()
        self.source = node.declare_parameter("source", "keyboard").value
        if self.source not in SOURCES:
            raise RobotStackError(f"unknown teleop source {self.source!r}; use one of {', '.join(SOURCES)}")
        self.control_hz = float(node.declare_parameter("control_hz", 20.0).value)
        self.command_pub = node.create_publisher("std_msgs/msg/Float64MultiArray", "robot/command", ros.qos.DEFAULT)
        self.control_pub = node.create_publisher("std_msgs/msg/String", "recorder/control", ros.qos.DEFAULT)
        self.observation: dict[str, np.ndarray] = {}
        self.success = False
        sensor = ros.qos.SENSOR_DATA
        node.create_subscription("sensor_msgs/msg/JointState", "joint_states", self.on_joints, sensor)
        node.create_subscription("geometry_msgs/msg/PoseStamped", "eef_pose", self.on_pose("eef_pose"), sensor)
        node.create_subscription("geometry_msgs/msg/PoseStamped", "object_pose", self.on_pose("object_pose"), sensor)
        node.create_subscription("std_msgs/msg/Bool", "sim/success", self.on_success, ros.qos.DEFAULT)
        if self.source == "scripted":
            self.setup_scripted()
        else:
            self.setup_operator()
        node.create_timer(1.0 / self.control_hz, self.on_tick)

    # -- observations (what the scripted expert sees; a human sees the robot)
    def on_joints(self, message) -> None:
        self.observation["joint_position"] = np.asarray(message.position, dtype=float)
        self.observation["joint_velocity"] = np.asarray(message.velocity, dtype=float)

    def on_pose(self, key: str):
        def store(message) -> None:
            self.observation[key] = convert.pose_array(message)
        return store

    def on_success(self, message) -> None:
        self.success = bool(message.data)

    def event(self, word: str) -> None:
        self.control_pub.publish(ros.message_class("std_msgs/msg/String")(data=word))
        self.log.info(f"recorder: {word}")

    # -- a human at the keyboard or a device
    def setup_operator(self) -> None:
        command_dim = int(self.node.declare_parameter("command_dim", 7).value)
        gripper = int(self.node.declare_parameter("gripper_index", 6).value)
        gripper_index = gripper if 0 <= gripper < command_dim else None
        speed = float(self.node.declare_parameter("speed", 1.0).value)
        if self.source == "keyboard":
            if not sys.stdin.isatty():
                raise RobotStackError("keyboard teleop needs a terminal (stdin is not a tty): run it in its own "
                                      "terminal, or use source:=scripted / gamepad / spacemouse")
            import termios
            import tty

            self.keyboard = KeyboardTeleop(command_dim, gripper_index, speed=speed)
            self._terminal = termios.tcgetattr(sys.stdin)
            tty.setcbreak(sys.stdin.fileno())
            print(KEYBOARD_HELP, file=sys.stderr, flush=True)
            return
        from robot_stack.teleop import open_device

        maker = gamepad_map if self.source == "gamepad" else spacemouse_map
        self.axis_map = maker(command_dim, gripper_index)
        self.device = open_device(self.node.declare_parameter("device", "").value, self.source)

    def read_operator(self) -> np.ndarray:
        if self.source == "keyboard":
            while select.select([sys.stdin], [], [], 0)[0]:
                key = os.read(sys.stdin.fileno(), 1).decode(errors="ignore")
                if key == "h":
                    print(KEYBOARD_HELP, file=sys.stderr, flush=True)
                word = self.keyboard.press(key)
                if word:
                    self.event(word)
            return self.keyboard.tick()
        for word in self.device.poll(self.axis_map):
            self.event(word)
        return self.axis_map.command()

    # -- the scripted expert
    def setup_scripted(self) -> None:
        from robot_stack.sim.experts import make_expert
        from robot_stack.sim.task import command_spec_of

        task_name = self.node.declare_parameter("task", "lift").value
        self.episodes = int(self.node.declare_parameter("episodes", 10).value)
        self.seed = int(self.node.declare_parameter("seed", 0).value)
        skill = self.node.declare_parameter("skill", "expert").value
        self.max_steps = int(self.node.declare_parameter("max_steps", 200).value)
        self.success_hold = int(self.node.declare_parameter("success_hold", 5).value)
        self.settle_ticks = int(self.node.declare_parameter("settle_ticks", 5).value)
        self.command_spec = command_spec_of(task_name)  # the robot itself runs elsewhere
        self.expert = make_expert(task_name, self.command_spec, skill=skill, seed=self.seed)
        self.reset_pub = self.node.create_publisher("std_msgs/msg/Int64", "sim/reset", ros.qos.DEFAULT)
        self.episode, self.phase, self.ticks, self.success_ticks = 0, "waiting", 0, 0
        self.log.info(f"scripted teleop: {self.episodes} episodes of '{task_name}' by the {skill} expert")

    def scripted_tick(self) -> np.ndarray:
        hold = np.asarray(self.command_spec.hold, dtype=float)
        keys = ("joint_position", "eef_pose", "object_pose")
        if self.phase == "waiting":  # for the robot and the recorder to be there
            if all(k in self.observation for k in keys) and self.control_pub.get_subscription_count() > 0:
                self.phase = "reset"
            return hold
        if self.phase == "reset":
            self.reset_pub.publish(ros.message_class("std_msgs/msg/Int64")(data=self.seed + self.episode))
            self.expert.reset()
            self.phase, self.ticks, self.success_ticks, self.success = "settle", 0, 0, False
            return hold
        if self.phase == "settle":  # the reset's first observations arrive
            self.ticks += 1
            if self.ticks >= self.settle_ticks:
                self.event(START)
                self.phase, self.ticks = "run", 0
            return hold
        self.ticks += 1
        self.success_ticks = self.success_ticks + 1 if self.success else 0
        if self.success_ticks >= self.success_hold or self.ticks >= self.max_steps:
            outcome = SUCCESS if self.success_ticks >= self.success_hold else FAIL
            self.event(outcome)
            self.episode += 1
            self.log.info(f"episode {self.episode}/{self.episodes}: {outcome} after {self.ticks} steps")
            if self.episode >= self.episodes:
                ros.request_shutdown()
            self.phase = "reset"
            return hold
        return self.expert.act(self.observation)

    def on_tick(self) -> None:
        command = self.scripted_tick() if self.source == "scripted" else self.read_operator()
        self.command_pub.publish(convert.float_array(command))

    def close(self) -> None:
        if getattr(self, "_terminal", None) is not None:
            import termios

            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, self._terminal)


def main(args: list[str] | None = None) -> int:
    ros.init(args)
    node = ros.create_node("teleop")
    try:
        teleop = Teleop(node)
    except RobotStackError as error:
        node.get_logger().fatal(str(error))
        node.destroy_node()
        ros.shutdown()
        return 2
    try:
        ros.spin(node)
    finally:
        teleop.close()
    node.destroy_node()
    ros.shutdown()
    return 0
