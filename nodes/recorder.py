"""``recorder``: samples the robot's topics at ``record_hz`` into a dataset, one episode per start ... commit.

Parameters and topics: INTERFACE below (``recorder --help`` prints them). The status (``recorder/status``,
JSON, reliable, transient local) is published on every change and once a second; docs/dataset.md lists
its fields. A teleop counts an episode only when the status confirms its commit (``committed_this_run``)
and stops when it reports a failure (``failed_this_run``, with the reason in ``error``).

SIGINT/SIGTERM (any number of them, e.g. a launch's SIGINT then the parent-death SIGTERM of the launch
being killed): no new frame is taken; the node still handles what was already sent (a teleop's last
success/fail just before the launch stopped it), then commits or discards the episode in progress
(``on_shutdown``), flushes and exits 0. A closed stdout/stderr (the launch reading them was killed)
costs log lines, never the commit.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import time

from robot_stack import ros
from robot_stack.errors import RobotStackError
from robot_stack.record import (
    CONTROL_WORDS,
    RECOVER_POLICIES,
    SHUTDOWN_POLICIES,
    Recorder,
    RecorderError,
    example_features_files,
    load_config,
    with_intervention,
)
from robot_stack.ros.parameters import NodeInterface, ParameterSpec, TopicSpec, answer_help

DRAIN_S = 0.3  # after SIGINT: how long messages already on their way are still handled
HOUSEKEEPING_HZ = 10.0
RECEIVE_BUFFER = ('<CycloneDDS><Domain Id="any"><Internal><SocketReceiveBufferSize min="default" max="16MB"/>'
                  "</Internal></Domain></CycloneDDS>")


INTERFACE = NodeInterface(
    executable="recorder",
    summary="Samples the robot's topics at record_hz into a Zarr dataset, one episode per start ... "
            "success/fail/stop (committed) or discard.",
    parameters=(
        ParameterSpec("features_file", "", "YAML file naming each feature's topic, type and field "
                      "($(find-pkg-share robot_stack)/launch/params/recorder_<task>.yaml; docs/dataset.md)"),
        ParameterSpec("dataset", "dataset.zarr", "the dataset folder to create or append to"),
        ParameterSpec("record_hz", 20.0, "frames per second [Hz] (on sim time: at most the sim's rate)", positive=True),
        ParameterSpec("use_sim_time", False, "tick on /clock (sim time) instead of the wall clock"),
        ParameterSpec("cameras", "", "cameras to record as name:HxW,... (adds image.<name> from "
                      "/camera/<name>/image_raw)"),
        ParameterSpec("task", "", "task text stored with each episode (empty: the features file's)"),
        ParameterSpec("operator", "", "who records, stored with each episode (empty: the login name)"),
        ParameterSpec("source", "teleop", "what produces the episodes, stored with each (meta/episodes/source): "
                      "teleop, scripted, policy or online (an online learner's actor)",
                      choices=("teleop", "scripted", "policy", "online")),
        ParameterSpec("record_intervention", False, "also record the feature intervention (a flag per frame): true "
                      "where the policy node sent the operator's command (/policy/intervention), false where it "
                      "sent the model's or said nothing"),
        ParameterSpec("min_free_mb", 500.0, "refuse to start an episode with less free disk space than this [MB]",
                      minimum=0.0),
        ParameterSpec("recover_on_start", "refuse", "a dataset with an unfinished episode (a crash): refuse "
                      "to record, keep it as an episode, or drop it", choices=RECOVER_POLICIES),
        ParameterSpec("on_shutdown", "commit", "the episode being recorded when the node is stopped",
                      choices=SHUTDOWN_POLICIES),
    ),
    subscribes=(
        TopicSpec("(each feature's topic)", "(its type)", "the features file's topics, e.g. /joint_states"),
        TopicSpec("/clock", "rosgraph_msgs/msg/Clock", "sim time (use_sim_time true)"),
        TopicSpec("/policy/intervention", "std_msgs/msg/Bool", "the policy node's per-step intervention flag "
                  "(record_intervention true)"),
        TopicSpec("recorder/control", "std_msgs/msg/String", f"{', '.join(CONTROL_WORDS)}, task:<text>"),
    ),
    publishes=(
        TopicSpec("recorder/status", "std_msgs/msg/String", "JSON status (transient local): recording, "
                  "committed_this_run, failed_this_run, error, ... (docs/dataset.md)"),
    ),
    notes="SIGINT/SIGTERM: the episode in progress is committed (on_shutdown:=commit) or discarded, then exit 0.",
)


def _ask_for_a_large_receive_buffer() -> None:
    """A camera frame arrives as hundreds of UDP fragments: a burst that overflows the socket's receive
    buffer while this process is busy loses whole frames. Ask Cyclone DDS (the dds backend, and
    rmw_cyclonedds on ROS 2) for up to 16 MB, taking what the kernel grants (net.core.rmem_max), unless
    the user's CYCLONEDDS_URI already says."""
    user = os.environ.get("CYCLONEDDS_URI", "").strip()
    if "SocketReceiveBufferSize" not in user:
        os.environ["CYCLONEDDS_URI"] = f"{user},{RECEIVE_BUFFER}" if user else RECEIVE_BUFFER


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no USER variable and no passwd entry (some containers)
        return ""


def _sim_command_spec(task_name: str):
    """The CommandSpec of a sim task, for a features file whose robot: names a sim_task (imported only then)."""
    from robot_stack.sim.task import command_spec_of

    return command_spec_of(task_name)


class RecorderNode:
    def __init__(self, node) -> None:
        self.node = node

        param = INTERFACE.declare(node)
        features_file = param["features_file"]
        if not features_file:
            raise RecorderError("features_file is not set: give -p features_file:=PATH "
                                f"({example_features_files()} are examples)")
        sim_time = param["use_sim_time"]
        config = load_config(features_file, cameras=param["cameras"], command_spec_of=_sim_command_spec)
        if param["record_intervention"]:
            config = with_intervention(config)
        self.on_shutdown = param["on_shutdown"]
        self.status_pub = node.create_publisher("std_msgs/msg/String", "recorder/status", ros.qos.TRANSIENT_LOCAL)
        self.recorder = Recorder(
            config, param["dataset"],
            record_hz=float(param["record_hz"]), sim_time=bool(sim_time),
            task=param["task"], operator=param["operator"] or _login_name(), source=param["source"],
            min_free_mb=float(param["min_free_mb"]), recover_on_start=param["recover_on_start"],
            log=node.get_logger(), on_change=self.publish_status,
        )
        for topic, features in self.recorder.by_topic.items():
            qos = ros.qos.SENSOR_DATA if any(f.qos == "sensor_data" for f in features) else ros.qos.DEFAULT
            qos = qos.with_depth(max(f.depth for f in features))
            node.create_subscription(features[0].type, topic, self.on_message(topic), qos)
        if sim_time:
            node.create_subscription("rosgraph_msgs/msg/Clock", "/clock", self.on_clock, ros.qos.DEFAULT.with_depth(100))
        node.create_subscription("std_msgs/msg/String", "recorder/control", self.on_control, ros.qos.DEFAULT)
        self.tick_timer = node.create_timer(1.0 / self.recorder.record_hz, self.recorder.on_tick)
        node.create_timer(1.0 / HOUSEKEEPING_HZ, self.recorder.housekeeping)
        node.create_timer(1.0, self.publish_status)
        self.recorder.open_existing()
        node.get_logger().info(
            f"recorder up: {len(config.features)} features from {features_file} -> {self.recorder.path} at "
            f"{self.recorder.record_hz:g} Hz on the {'sim (/clock)' if sim_time else 'wall'} clock")
        self.publish_status()

    def on_message(self, topic: str):
        return lambda message: self.recorder.on_message(topic, message)

    def on_clock(self, message) -> None:
        self.recorder.on_clock(message.clock.sec * 1_000_000_000 + message.clock.nanosec)

    def on_control(self, message) -> None:
        self.recorder.on_control(message.data)
        if message.data.strip() == "start" and self.recorder.recording:
            self.tick_timer.reset()  # ticks every 1/record_hz from the first frame on

    def publish_status(self) -> None:
        status = {"node": self.node.get_fully_qualified_name(), "pid": os.getpid(), "time": time.time(),
                  **self.recorder.status()}
        self.status_pub.publish(ros.message_class("std_msgs/msg/String")(data=json.dumps(status)))


class _StopSignals:
    """SIGINT/SIGTERM end the loop in main() rather than spin at once, so the last events still get handled.

    Only a flag is set, however many arrive: a later one must not interrupt the commit of the episode in
    progress (a launch that sends SIGINT and is then killed adds its parent-death SIGTERM). SIGKILL is
    what stops a recorder at once."""

    def __init__(self) -> None:
        self.received = False
        self.install()

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame) -> None:
        self.received = True


def main(args: list[str] | None = None) -> int:
    if answer_help(INTERFACE, args):
        return 0
    _ask_for_a_large_receive_buffer()
    # Installed before ros.init too, so that ros.shutdown() restores these handlers, not the default ones
    # (a late SIGTERM must not kill a recorder that has committed and is closing), and again after it.
    stop = _StopSignals()
    ros.init(args)
    stop.install()
    node = ros.create_node("recorder")
    try:
        recorder_node = RecorderNode(node)
    except RobotStackError as error:
        node.get_logger().fatal(str(error))
        node.destroy_node()
        ros.shutdown()
        return 2
    recorder = recorder_node.recorder
    while not stop.received and ros.ok():
        ros.spin_once(node, 0.1)
        recorder.end_pass()
    recorder.freeze()  # the episode ends where the signal came; what was already sent is still handled
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline and ros.ok():
        ros.spin_once(node, 0.02)
        recorder.end_pass()
    recorder.close(recorder_node.on_shutdown)
    recorder_node.publish_status()
    node.destroy_node()
    ros.shutdown()
    return 0
