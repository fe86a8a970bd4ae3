"""``sim_robot``: a MuJoCo task behind the ROS 2 topics a real robot driver uses.

Publishes ``joint_states``, ``eef_pose``, ``object_pose`` (a tracker's job on a real
robot), ``camera/<name>/image_raw``, the ground truth ``sim/reward`` and
``sim/success``, and ``/clock`` (sim time); takes ``robot/command``.

Safety behaviour of a real driver: a command older than ``command_timeout``
makes the robot hold still; ``estop`` true holds it until cleared; a command of
the wrong length is rejected with an error and the robot holds.

``realtime: true`` steps at ``control_hz`` on the wall clock with the latest
command. ``realtime: false`` steps once per command received, as fast as the
sender goes (lockstep: data generation and tests). ``sim/reset`` (std_msgs/Int64)
starts a new episode: data >= 0 is the placement seed, < 0 takes the next seed
of the sequence that starts at the ``seed`` parameter.
"""

from __future__ import annotations

import os
import re
import time

import numpy as np
import yaml

from robot_stack import ros
from robot_stack.errors import RobotStackError, SimError
from robot_stack.ros import convert
from robot_stack.ros.parameters import NodeInterface, ParameterSpec, TopicSpec, answer_help
from robot_stack.sim.task import SimTask, make_task

_CAMERA = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(:[1-9][0-9]*(x[1-9][0-9]*)?)?")

INTERFACE = NodeInterface(
    executable="sim_robot",
    summary="A MuJoCo task behind the topics a real robot driver uses (the stand-in for the hardware).",
    parameters=(
        ParameterSpec("task", "lift", "sim task: lift (Panda, 7-D eef delta + gripper) or reach2d (planar arm)"),
        ParameterSpec("cameras", "", "cameras to render as name:HxW,... (e.g. agentview:84x84)"),
        ParameterSpec("control_hz", 20.0, "control rate [Hz]", positive=True),
        ParameterSpec("realtime", True, "true: step at control_hz on the wall clock; false: one step per command"),
        ParameterSpec("dynamics", "nominal", "dynamics preset (nominal, sim, real, low_friction, ...)"),
        ParameterSpec("dynamics_overrides", "{}", "YAML mapping of overrides on the preset, e.g. '{friction_scale: 0.5}'"),
        ParameterSpec("seed", 0, "placement seed of the first episode; each reset takes the next one"),
        ParameterSpec("command_timeout", 0.5, "a command older than this makes the robot hold still [s]", positive=True),
        ParameterSpec("frame_id", "world", "frame of the published poses"),
    ),
    subscribes=(
        TopicSpec("robot/command", "std_msgs/msg/Float64MultiArray", "the command (the task's command spec)"),
        TopicSpec("estop", "std_msgs/msg/Bool", "true holds the robot until cleared (transient local)"),
        TopicSpec("sim/reset", "std_msgs/msg/Int64", "new episode: placement seed, < 0 the next one"),
    ),
    publishes=(
        TopicSpec("joint_states", "sensor_msgs/msg/JointState", "joint positions [rad] and velocities"),
        TopicSpec("eef_pose", "geometry_msgs/msg/PoseStamped", "end effector pose [m]"),
        TopicSpec("object_pose", "geometry_msgs/msg/PoseStamped", "object pose [m]"),
        TopicSpec("camera/<name>/image_raw", "sensor_msgs/msg/Image", "rgb8 frames of each camera"),
        TopicSpec("sim/reward, sim/success", "std_msgs/msg/Float64, Bool", "ground truth (sim only)"),
        TopicSpec("/clock", "rosgraph_msgs/msg/Clock", "sim time"),
    ),
)


def parse_cameras(text: str) -> list[str]:
    """The cameras parameter ("name:HxW,name") as its items; SimError names an item that is not one."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if not _CAMERA.fullmatch(item):
            raise SimError(f"camera {item!r}: give name or name:HxW (e.g. agentview:84x84)")
    return items


class SimRobotDriver:
    """The driver's logic, separate from parameter parsing so tests and tools can build it directly."""

    def __init__(self, node, task: SimTask, *, realtime: bool, command_timeout_s: float, seed: int,
                 frame_id: str = "world") -> None:
        self.node = node
        self.task = task
        self.realtime = realtime
        self.command_timeout_ns = int(command_timeout_s * 1e9)
        self.frame_id = frame_id
        self.log = node.get_logger()
        self.spec = task.command_spec
        self.hold = self.spec.hold_after(None)
        self.command = self.hold.copy()
        self.command_time_ns = -(1 << 62)
        self.estopped = False
        self.holding = False
        self.next_seed = seed
        self.sim_time_ns = 0
        self.control_period_ns = int(1e9 / task.config.control_hz)

        sensor, reliable = ros.qos.SENSOR_DATA, ros.qos.DEFAULT
        self.joint_pub = node.create_publisher("sensor_msgs/msg/JointState", "joint_states", sensor)
        self.eef_pub = node.create_publisher("geometry_msgs/msg/PoseStamped", "eef_pose", sensor)
        self.object_pub = node.create_publisher("geometry_msgs/msg/PoseStamped", "object_pose", sensor)
        self.image_pubs = {
            camera.name: node.create_publisher("sensor_msgs/msg/Image", f"camera/{camera.name}/image_raw", sensor)
            for camera in task.config.cameras
        }
        self.reward_pub = node.create_publisher("std_msgs/msg/Float64", "sim/reward", reliable)
        self.success_pub = node.create_publisher("std_msgs/msg/Bool", "sim/success", reliable)
        self.clock_pub = node.create_publisher("rosgraph_msgs/msg/Clock", "/clock", reliable)
        node.create_subscription("std_msgs/msg/Float64MultiArray", "robot/command", self.on_command, reliable)
        for qos in ros.qos.EITHER_DURABILITY:  # a latched e-stop and a volatile publisher's alike
            node.create_subscription("std_msgs/msg/Bool", "estop", self.on_estop, qos)
        node.create_subscription("std_msgs/msg/Int64", "sim/reset", self.on_reset, reliable)
        self.reset(self.next_seed)
        if realtime:
            node.create_timer(1.0 / task.config.control_hz, self.on_tick)

    # -- inputs
    def on_command(self, message) -> None:
        try:
            command = self.task.command_spec.validate(message.data)
        except SimError as error:
            self.log.error(f"rejected robot/command: {error}; holding still", throttle_duration_sec=1.0)
            self.command, self.command_time_ns = self.hold.copy(), -(1 << 62)
            return
        self.command, self.command_time_ns = command, time.monotonic_ns()
        self.hold = self.spec.hold_after(command)
        if not self.realtime:
            self.step(self.hold if self.estopped else command)

    def on_estop(self, message) -> None:
        if bool(message.data) != self.estopped:
            self.estopped = bool(message.data)
            if self.estopped:
                self.log.warning("e-stop engaged: holding still until estop is cleared")
            else:
                self.log.info("e-stop cleared")

    def on_reset(self, message) -> None:
        seed = int(message.data) if message.data >= 0 else self.next_seed
        self.reset(seed)

    def on_tick(self) -> None:
        stale = time.monotonic_ns() - self.command_time_ns > self.command_timeout_ns
        if stale and not self.holding and not self.estopped:
            self.log.warning("no fresh robot/command: holding still", throttle_duration_sec=5.0)
        self.holding = stale
        self.step(self.hold if stale or self.estopped else self.command)

    # -- the sim
    def reset(self, seed: int) -> None:
        self.task.reset(seed)
        self.next_seed = seed + 1
        self.hold = self.spec.hold_after(None)
        self.command, self.command_time_ns = self.hold.copy(), -(1 << 62)
        self.log.info(f"new episode (seed {seed})")
        self.publish()

    def step(self, command: np.ndarray) -> None:
        self.task.step(command)
        self.sim_time_ns += self.control_period_ns
        self.publish()

    def publish(self) -> None:
        observation = self.task.observe()
        stamp = self.sim_time_ns
        self.clock_pub.publish(ros.message_class("rosgraph_msgs/msg/Clock")(clock=convert.stamp(stamp)))
        self.joint_pub.publish(convert.joint_state(self.task.joint_names, observation["joint_position"],
                                                   observation["joint_velocity"], stamp_ns=stamp))
        self.eef_pub.publish(convert.pose_stamped(observation["eef_pose"], stamp_ns=stamp, frame_id=self.frame_id))
        self.object_pub.publish(convert.pose_stamped(observation["object_pose"], stamp_ns=stamp,
                                                     frame_id=self.frame_id))
        for name, publisher in self.image_pubs.items():
            publisher.publish(convert.image(observation[f"image/{name}"], stamp_ns=stamp, frame_id=name))
        self.reward_pub.publish(ros.message_class("std_msgs/msg/Float64")(data=float(self.task.reward())))
        self.success_pub.publish(ros.message_class("std_msgs/msg/Bool")(data=bool(self.task.success())))


def main(args: list[str] | None = None) -> int:
    if answer_help(INTERFACE, args):
        return 0
    # A robot driver runs headless: MuJoCo's default (GLFW windows) cannot render without a display.
    os.environ.setdefault("MUJOCO_GL", "egl" if os.path.exists("/dev/nvidia0") else "osmesa")
    ros.init(args)
    node = ros.create_node("sim_robot")
    try:
        param = INTERFACE.declare(node)
        # "name:HxW,name:HxW" (a string, so an empty list needs no special form in launch files).
        cameras = parse_cameras(param["cameras"])
        try:
            overrides = yaml.safe_load(param["dynamics_overrides"]) or {}
        except yaml.YAMLError:
            overrides = None
        if not isinstance(overrides, dict):
            raise SimError("dynamics_overrides must be a YAML mapping, e.g. '{friction_scale: 0.5}'")
        task = make_task(
            param["task"], cameras=cameras, control_hz=param["control_hz"], dynamics=param["dynamics"],
            seed=param["seed"], **overrides,
        )
        driver = SimRobotDriver(
            node, task, realtime=param["realtime"], command_timeout_s=param["command_timeout"],
            seed=task.config.seed, frame_id=param["frame_id"],
        )
    except RobotStackError as error:
        node.get_logger().fatal(str(error))
        node.destroy_node()
        ros.shutdown()
        return 2
    spec = task.command_spec
    node.get_logger().info(
        f"sim robot '{task.name}' up: {spec.dim}-D command ({spec.meaning}), "
        f"{task.config.control_hz:g} Hz {'real time' if driver.realtime else 'lockstep'}, "
        f"cameras: {', '.join(c.name for c in task.config.cameras) or 'none'}, dynamics {task.config.dynamics}"
    )
    ros.spin(node)
    task.close()
    node.destroy_node()
    ros.shutdown()
    return 0
