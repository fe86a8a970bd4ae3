"""``teleop``: publishes ``robot/command`` at the control rate and recorder events.

Sources (parameter ``source``):
- ``keyboard``: keys in this terminal (works over SSH; run it in its own terminal,
  ``ros2 run robot_stack teleop`` / ``robot-stack``'s venv ``teleop``), see KEYBOARD_HELP;
- ``gamepad`` / ``spacemouse``: an evdev device (``device`` path, or the first that fits);
- ``scripted``: the sim's scripted expert drives ``episodes`` episodes with no human:
  reset the scene (``sim/reset``), ``start`` the recorder, act until success
  (held ``success_hold`` ticks) or ``max_steps``, send ``success``/``fail``, wait for the recorder's
  status to confirm the commit, repeat. An episode counts only once the recorder has committed it: the
  first one it does not commit (a refused start, a full disk, a write error) stops the teleop with
  "committed N of M episodes: <the recorder's reason>" and exit status 1, so a collect launch fails.

An operator's source (keyboard, gamepad, SpaceMouse) logs what the recorder reports (commits,
refusals, write errors) as it happens, so the terminal shows whether a word took effect. ``teleop --help``
lists the parameters and topics (INTERFACE).
"""

from __future__ import annotations

import json
import os
import select
import sys
import time

import numpy as np

from robot_stack import ros
from robot_stack.errors import RobotStackError
from robot_stack.ros import convert
from robot_stack.ros.parameters import NodeInterface, ParameterSpec, TopicSpec, answer_help
from robot_stack.teleop import FAIL, KEYBOARD_HELP, START, SUCCESS, KeyboardTeleop, gamepad_map, spacemouse_map

SOURCES = ("keyboard", "gamepad", "spacemouse", "scripted")
CONFIRM_TIMEOUT_S = 30.0  # a recorder that says nothing about an episode this long after its end is not there

INTERFACE = NodeInterface(
    executable="teleop",
    summary="Publishes robot/command at control_hz from a keyboard, a gamepad, a SpaceMouse or the sim's "
            "scripted expert, and the recorder's start/success/fail/discard words.",
    parameters=(
        ParameterSpec("source", "keyboard", "who drives", choices=SOURCES),
        ParameterSpec("control_hz", 20.0, "command rate [Hz]", positive=True),
        ParameterSpec("command_dim", 7, "operator sources: elements of the robot's command", minimum=1),
        ParameterSpec("gripper_index", 6, "operator sources: the command element the gripper button toggles "
                      "(-1: none)"),
        ParameterSpec("speed", 1.0, "operator sources: a key's or a full stick's command value"),
        ParameterSpec("device", "", "gamepad/spacemouse: the evdev device path (empty: the first that fits)"),
        ParameterSpec("only_when_active", False, "operator sources: publish a command only on ticks the operator "
                      "moves (a motion element not 0) or changes it (the gripper toggled); for a teleop whose output "
                      "is remapped to /teleop/command, where every command it sends overrides the policy"),
        ParameterSpec("task", "lift", "scripted: the sim task whose expert drives"),
        ParameterSpec("episodes", 10, "scripted: episodes to have committed by the recorder before exiting",
                      minimum=1),
        ParameterSpec("seed", 0, "scripted: placement seed of the first episode (then +1 each) and the expert's"),
        ParameterSpec("skill", "expert", "scripted: skill of the expert (robot_stack.sim.experts)"),
        ParameterSpec("max_steps", 200, "scripted: an episode that has not succeeded by then is sent as fail",
                      minimum=1),
        ParameterSpec("success_hold", 5, "scripted: ticks /sim/success must hold before success is sent", minimum=1),
        ParameterSpec("settle_ticks", 5, "scripted: ticks after a reset before start is sent", minimum=1),
    ),
    subscribes=(
        TopicSpec("joint_states", "sensor_msgs/msg/JointState", "the robot's joints (what the expert sees)"),
        TopicSpec("eef_pose", "geometry_msgs/msg/PoseStamped", "the end effector"),
        TopicSpec("object_pose", "geometry_msgs/msg/PoseStamped", "the object"),
        TopicSpec("sim/success", "std_msgs/msg/Bool", "scripted: the sim's ground truth"),
        TopicSpec("recorder/status", "std_msgs/msg/String", "the recorder's JSON status: commits and refusals"),
    ),
    publishes=(
        TopicSpec("robot/command", "std_msgs/msg/Float64MultiArray", "the command, at control_hz"),
        TopicSpec("recorder/control", "std_msgs/msg/String", "start, stop, success, fail, discard"),
        TopicSpec("sim/reset", "std_msgs/msg/Int64", "scripted: new placement before each episode"),
    ),
    notes="exit status: 0; scripted: 1 when the recorder committed fewer episodes than asked; 2 for a bad parameter.",
)


class Teleop:
    def __init__(self, node) -> None:
        self.node = node
        self.log = node.get_logger()
        self.param = INTERFACE.declare(node)
        self.source = self.param["source"]
        self.control_hz = float(self.param["control_hz"])
        self.command_pub = node.create_publisher("std_msgs/msg/Float64MultiArray", "robot/command", ros.qos.DEFAULT)
        self.control_pub = node.create_publisher("std_msgs/msg/String", "recorder/control", ros.qos.DEFAULT)
        self.observation: dict[str, np.ndarray] = {}
        self.success = False
        self.recorder: dict | None = None  # the recorder's latest status
        self.exit_code = 0
        node.create_subscription("std_msgs/msg/String", "recorder/status", self.on_recorder_status,
                                 ros.qos.TRANSIENT_LOCAL)
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

    def on_recorder_status(self, message) -> None:
        try:
            status = json.loads(message.data)
        except ValueError:
            return
        previous = self.recorder or {}
        self.recorder = status
        # An operator sees what became of each word (the scripted source reports per episode instead).
        if self.source != "scripted" and status.get("event") and status.get("event") != previous.get("event"):
            if status.get("error") and status.get("error") == status.get("event"):
                self.log.error(f"recorder: {status['error']}")
            else:
                self.log.info(f"recorder: {status['event']}")

    def event(self, word: str) -> None:
        self.control_pub.publish(ros.message_class("std_msgs/msg/String")(data=word))
        self.log.info(f"recorder: {word}")

    # -- a human at the keyboard or a device
    def setup_operator(self) -> None:
        command_dim = int(self.param["command_dim"])
        gripper = int(self.param["gripper_index"])
        gripper_index = gripper if 0 <= gripper < command_dim else None
        speed = float(self.param["speed"])
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
        self.device = open_device(self.param["device"], self.source)

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

        task_name = self.param["task"]
        self.episodes = int(self.param["episodes"])
        self.seed = int(self.param["seed"])
        skill = self.param["skill"]
        self.max_steps = int(self.param["max_steps"])
        self.success_hold = int(self.param["success_hold"])
        self.settle_ticks = int(self.param["settle_ticks"])
        self.command_spec = command_spec_of(task_name)  # the robot itself runs elsewhere
        self.expert = make_expert(task_name, self.command_spec, skill=skill, seed=self.seed)
        self.reset_pub = self.node.create_publisher("std_msgs/msg/Int64", "sim/reset", ros.qos.DEFAULT)
        self.episode, self.phase, self.ticks, self.success_ticks = 0, "waiting", 0, 0
        self.committed = 0
        self.baseline: dict = {}  # the recorder's status when this episode's start was sent
        self.outcome, self.sent_at = FAIL, 0.0
        self.log.info(f"scripted teleop: {self.episodes} episodes of '{task_name}' by the {skill} expert")

    def recorder_failed(self) -> bool:
        """The recorder reported a failure since this episode's start (or is another recorder process now)."""
        status = self.recorder or {}
        return (status.get("pid") != self.baseline.get("pid")
                or status.get("failed_this_run", 0) > self.baseline.get("failed_this_run", 0))

    def stop_collecting(self, reason: str) -> None:
        """The recorder did not commit this episode: say how many were, and end with exit status 1."""
        self.log.error(f"committed {self.committed} of {self.episodes} episodes: the recorder did not record "
                       f"episode {self.episode + 1}: {reason}")
        self.exit_code = 1
        self.phase = "done"
        ros.request_shutdown()

    def scripted_tick(self) -> np.ndarray:
        hold = np.asarray(self.command_spec.hold, dtype=float)
        keys = ("joint_position", "eef_pose", "object_pose")
        if self.phase == "done":
            return hold
        if self.phase == "waiting":  # for the robot and the recorder to be there
            if (all(k in self.observation for k in keys) and self.recorder is not None
                    and self.control_pub.get_subscription_count() > 0):
                self.phase = "reset"
            return hold
        if self.phase == "confirm":  # the episode counts once the recorder's status says it is committed
            status = self.recorder or {}
            if self.recorder_failed():
                self.stop_collecting(status.get("error") or "it stopped (another recorder process answers now)")
            elif status.get("committed_this_run", 0) > self.baseline.get("committed_this_run", 0):
                self.committed += 1
                self.log.info(f"episode {self.committed}/{self.episodes} committed: {self.outcome} after "
                              f"{self.ticks} steps")
                if self.committed >= self.episodes:
                    self.phase = "done"
                    ros.request_shutdown()
                else:
                    self.episode += 1
                    self.phase = "reset"
            elif time.monotonic() - self.sent_at > CONFIRM_TIMEOUT_S:
                self.stop_collecting(f"no status from the recorder confirming the commit {CONFIRM_TIMEOUT_S:g} s "
                                     "after the episode ended: is the recorder running?")
            return hold
        if self.phase == "reset":
            self.reset_pub.publish(ros.message_class("std_msgs/msg/Int64")(data=self.seed + self.episode))
            self.expert.reset()
            self.phase, self.ticks, self.success_ticks, self.success = "settle", 0, 0, False
            return hold
        if self.phase == "settle":  # the reset's first observations arrive
            self.ticks += 1
            if self.ticks >= self.settle_ticks:
                self.baseline = dict(self.recorder or {})
                self.event(START)
                self.phase, self.ticks = "run", 0
            return hold
        if self.recorder_failed():  # a refused start, or a write error while recording: stop now, not at the end
            self.stop_collecting((self.recorder or {}).get("error") or "it stopped")
            return hold
        self.ticks += 1
        self.success_ticks = self.success_ticks + 1 if self.success else 0
        if self.success_ticks >= self.success_hold or self.ticks >= self.max_steps:
            self.outcome = SUCCESS if self.success_ticks >= self.success_hold else FAIL
            self.event(self.outcome)
            self.phase, self.sent_at = "confirm", time.monotonic()
            return hold
        return self.expert.act(self.observation)

    def on_tick(self) -> None:
        command = self.scripted_tick() if self.source == "scripted" else self.read_operator()
        if self.source != "scripted" and self.param["only_when_active"] and not self.operator_active(command):
            return
        self.command_pub.publish(convert.float_array(command))

    def operator_active(self, command: np.ndarray) -> bool:
        """Whether the operator commands this tick: a motion element is not 0, or the command changed since the last
        tick (a gripper toggle). A policy node treats every command on /teleop/command as a takeover (HIL-SERL's
        interventions), so an idle operator must send nothing rather than a stream of zeros."""
        command = np.asarray(command, dtype=float)
        gripper = int(self.param["gripper_index"])
        motion = np.delete(command, gripper) if 0 <= gripper < command.size else command
        previous, self.previous_command = getattr(self, "previous_command", None), command.copy()
        changed = previous is not None and not np.array_equal(previous, command)
        return bool(np.any(motion != 0.0) or changed)

    def close(self) -> None:
        if self.source == "scripted" and self.phase != "done":  # stopped from outside (Ctrl-C, the launch)
            in_progress = (" and one in progress (the recorder commits or discards it: its on_shutdown)"
                           if self.phase in ("run", "confirm") else "")
            self.log.warning(f"stopped with {self.committed} of {self.episodes} episodes committed{in_progress}")
        if getattr(self, "_terminal", None) is not None:
            import termios

            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, self._terminal)


def main(args: list[str] | None = None) -> int:
    if answer_help(INTERFACE, args):
        return 0
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
    return teleop.exit_code
