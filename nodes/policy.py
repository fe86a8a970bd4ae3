"""``policy``: runs an exported model (ONNX + model card) on the robot, behind the safety filter.

The node reads the card, subscribes to the observation topics it names, and at the card's rate publishes
the model's command on ``robot/command`` through the safety filter, or the hold command while an input is
stale (older than its max age) or the e-stop is latched. An operator's command on ``teleop/command`` (the
teleop's output remapped there) replaces the model's for as long as it is fresh, and every tick says on
``policy/intervention`` whether its command was the operator's (HIL-SERL's interventions). The logic is robot_stack.deploy.controller; this
file is parameters, topics and timers (INTERFACE, ``policy --help``). docs/deploy.md, "Policy node, launch
and eval", is the user's description.

Start-up refuses, with one line and exit status 2, a model file that is missing or does not match its card,
a model that does not fit the robot the features file describes, a device that cannot run it, or a model
slower than its control period after warm-up.
"""

from __future__ import annotations

import json
import os
import threading
import time

from robot_stack import ros
from robot_stack.deploy.card import load_model
from robot_stack.deploy.controller import (
    PolicyController,
    check_fits,
    load_policy,
    robot_features,
    safety_limits,
)
from robot_stack.errors import DeployError, RobotStackError
from robot_stack.ros import convert
from robot_stack.ros.parameters import NodeInterface, ParameterSpec, TopicSpec, answer_help

LIMIT_TEXT = "a number or a list, one per command element, e.g. [0.2, 0.2]; empty: no limit"

INTERFACE = NodeInterface(
    executable="policy",
    summary="Runs an exported model (ONNX + model card) at the card's rate: the card's observation topics in, "
            "robot/command out through the safety filter; holds on stale observations and a latched e-stop.",
    parameters=(
        ParameterSpec("model", "", "the model file (models/NAME.onnx, made by robot-stack export)"),
        ParameterSpec("features", "", "the robot's features file (the recorder's: topic, type and field of each "
                      "observation); empty: the one shipped for the card's sim task"),
        ParameterSpec("device", "cpu", "where onnxruntime runs the model", choices=("cpu", "cuda")),
        ParameterSpec("threads", 1, "onnxruntime intra-op threads on the CPU", minimum=1),
        ParameterSpec("control_hz", 0.0, "the robot's control rate [Hz], refused unless it is the card's "
                      "(0: not checked)", minimum=0.0),
        ParameterSpec("max_step", "", f"largest change of a command element per step [command units]: {LIMIT_TEXT}"),
        ParameterSpec("max_step_change", "", "largest change of that change per step [command units]: "
                      f"{LIMIT_TEXT}"),
        ParameterSpec("workspace_low", "", "end-effector box, lower corner [m] as [x, y(, z)]; empty: no box"),
        ParameterSpec("workspace_high", "", "end-effector box, upper corner [m] as [x, y(, z)]; empty: no box"),
        ParameterSpec("eef_step_m", 0.0, "metres the end effector moves for 1.0 of dx/dy/dz in a step "
                      "(0: as the command meaning says)", minimum=0.0),
        ParameterSpec("eef_feature", "eef_pose", "the feature whose first three values are the end effector's "
                      "position [m] (for the workspace box)"),
        ParameterSpec("intervention_timeout_s", 0.0, "an operator's command on teleop/command replaces the model's "
                      "until it is this old [s] (0: two control periods)", minimum=0.0),
        ParameterSpec("status_hz", 2.0, "policy/status messages per second (and on every change)", positive=True),
    ),
    subscribes=(
        TopicSpec("(each observation topic of the card)", "(its type)", "e.g. /joint_states, /eef_pose"),
        TopicSpec("estop", "std_msgs/msg/Bool", "true latches the hold command until policy/reset (transient local)"),
        TopicSpec("policy/reset", "std_msgs/msg/Bool", "true clears the e-stop latch once estop is false"),
        TopicSpec("policy/load", "std_msgs/msg/UInt8MultiArray", "a new model's .onnx bytes: checked against the "
                  "running card, swapped in between two control steps, or refused"),
        TopicSpec("teleop/command", "std_msgs/msg/Float64MultiArray", "an operator's command (the teleop's output "
                  "remapped): replaces the model's while fresh, through the safety filter"),
    ),
    publishes=(
        TopicSpec("robot/command", "std_msgs/msg/Float64MultiArray", "the filtered command, at the card's rate"),
        TopicSpec("policy/intervention", "std_msgs/msg/Bool", "every control step: true when its command was the "
                  "operator's (teleop/command), for the recorder's intervention flag"),
        TopicSpec("policy/status", "std_msgs/msg/String", "JSON status (transient local): model, state, "
                  "latency p50/p99, steps, held, stale, clipped, interventions counts, the last load's result"),
    ),
    notes="exit status: 0 when stopped (SIGINT/SIGTERM; a last hold command is sent); 2 when the model is refused.",
)


def _sim_command_spec(task_name: str):
    """The CommandSpec of a sim task, for a features file whose robot: names a sim_task (imported only then)."""
    from robot_stack.sim.task import command_spec_of

    return command_spec_of(task_name)


def _default_features(card) -> str:
    task = card.robot.get("sim_task")
    if not task:
        raise DeployError(f"model {card.name} was trained on a real robot ({card.robot.get('name')}): give that "
                          "robot's features file, features:=PATH (the recorder's)")
    from robot_stack.launch.package import package_share_directory

    return str(package_share_directory() / "launch" / "params" / f"recorder_{task}.yaml")


class PolicyNode:
    def __init__(self, node) -> None:
        self.node = node
        self.log = node.get_logger()
        param = INTERFACE.declare(node)
        if not param["model"]:
            raise DeployError("model is not set: give -p model:=models/NAME.onnx (made by robot-stack export)")
        _, card = load_model(param["model"])
        features_file = param["features"] or _default_features(card)
        config = robot_features(card, features_file, command_spec_of=_sim_command_spec)
        try:
            check_fits(card, config, param["control_hz"] or None)
        except DeployError as error:
            task = card.robot.get("sim_task")
            if task and config.robot.get("sim_task") != task:  # the usual slip: the sim runs another task
                raise DeployError(f"{error}; the model is for the sim task {task}: launch with task:={task}") from None
            raise
        limits = safety_limits(card, param)
        eef_source = None
        if limits.has_workspace:
            eef_source = next((f for f in config.features if f.name == param["eef_feature"]), None)
            if eef_source is None:
                raise DeployError(f"the workspace box needs the end effector's position: {features_file} has no "
                                  f"feature {param['eef_feature']!r} (set eef_feature:=NAME)")
        # The file (not its bytes): the runtime also checks the card copy beside it (NAME.json) against it.
        model = load_policy(param["model"], device=param["device"], threads=param["threads"])
        command_pub = node.create_publisher("std_msgs/msg/Float64MultiArray", "robot/command", ros.qos.DEFAULT)
        intervention_pub = node.create_publisher("std_msgs/msg/Bool", "policy/intervention", ros.qos.DEFAULT)
        flag = ros.message_class("std_msgs/msg/Bool")
        self.controller = PolicyController(
            model, config, limits, publish=lambda command: command_pub.publish(convert.float_array(command)),
            log=self.log, device=param["device"], threads=param["threads"], eef_source=eef_source,
            publish_intervention=lambda operator: intervention_pub.publish(flag(data=operator)),
            intervention_timeout_s=param["intervention_timeout_s"] or None)
        self.command_pub = command_pub
        self.status_pub = node.create_publisher("std_msgs/msg/String", "policy/status", ros.qos.TRANSIENT_LOCAL)
        for topic, feature in self.controller.topics().items():
            qos = ros.qos.SENSOR_DATA if feature.qos == "sensor_data" else ros.qos.DEFAULT
            node.create_subscription(feature.type, topic, self._on_message(topic), qos)
        for qos in ros.qos.EITHER_DURABILITY:  # a latched e-stop and a volatile publisher's alike
            node.create_subscription("std_msgs/msg/Bool", "estop", self.on_estop, qos)
        node.create_subscription("std_msgs/msg/Bool", "policy/reset", self.on_reset, ros.qos.DEFAULT)
        node.create_subscription("std_msgs/msg/UInt8MultiArray", "policy/load", self.on_load,
                                 ros.qos.DEFAULT.with_depth(1))
        node.create_subscription("std_msgs/msg/Float64MultiArray", "teleop/command",
                                 lambda message: self.controller.on_teleop(message.data), ros.qos.DEFAULT)
        self.loading: threading.Thread | None = None
        node.create_timer(1.0 / card.rate_hz, self.on_tick)
        node.create_timer(1.0 / param["status_hz"], self.publish_status)
        topics = ", ".join(f"{f.name} <- {f.topic}" for f in self.controller.inputs)
        self.log.info(f"policy up: model {card.name} ({model.sha256[:12]}) on {param['device']}, {card.rate_hz:g} Hz, "
                      f"inference p99 {model.warmup_figures['p99_ms']:.3f} ms after warm-up; observations {topics}")
        self.publish_status()

    def _on_message(self, topic: str):
        return lambda message: self.controller.on_message(topic, message)

    def on_estop(self, message) -> None:
        self.controller.on_estop(bool(message.data))
        self.publish_status()

    def on_reset(self, message) -> None:
        if message.data:
            self.controller.on_reset()
            self.publish_status()

    def on_load(self, message) -> None:
        if self.loading is not None and self.loading.is_alive():
            self.controller.refuse("a model sent before is still being checked: send it again once policy/status "
                                   "reports that one")
            return
        data = message.data
        model_bytes = data.tobytes() if hasattr(data, "tobytes") else bytes(data)
        self.loading = threading.Thread(target=self._load, args=(model_bytes,), name="policy-load", daemon=True)
        self.loading.start()

    def _load(self, model_bytes: bytes) -> None:
        """Off the control thread: a slow load (parse, onnxruntime session, warm-up) must not delay a tick."""
        try:
            self.controller.install(self.controller.prepare(model_bytes))
        except RobotStackError as error:
            self.controller.refuse(str(error))
        except Exception as error:  # noqa: BLE001 (onnxruntime's own errors about a model it cannot run: refused)
            self.controller.refuse(f"onnxruntime cannot run it ({type(error).__name__}: {error})")

    def on_tick(self) -> None:
        self.controller.tick()
        if self.controller.changed:
            self.publish_status()

    def publish_status(self) -> None:
        status = {"node": self.node.get_fully_qualified_name(), "pid": os.getpid(), "time": time.time(),
                  **self.controller.status()}
        self.status_pub.publish(ros.message_class("std_msgs/msg/String")(data=json.dumps(status)))

    def close(self) -> None:
        """Leave the robot holding: the last command this node sends is the hold command."""
        self.command_pub.publish(convert.float_array(self.controller.safety.hold()))
        self.publish_status()


def main(args: list[str] | None = None) -> int:
    if answer_help(INTERFACE, args):
        return 0
    ros.init(args)
    node = ros.create_node("policy")
    try:
        policy_node = PolicyNode(node)
    except RobotStackError as error:
        node.get_logger().fatal(str(error))
        node.destroy_node()
        ros.shutdown()
        return 2
    ros.spin(node)
    policy_node.close()
    node.destroy_node()
    ros.shutdown()
    return 0
