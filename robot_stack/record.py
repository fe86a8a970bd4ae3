"""The recorder: ROS topics sampled at record_hz into a dataset, one episode at a time.

nodes/recorder.py is the ROS glue (parameters, subscriptions, timers, the status topic); this module
is what the recorder does, readable and testable without ROS: the features file (which topic and
field each feature comes from), messages -> arrays, sampling the latest value of every feature per
tick with staleness flags, and the episode life cycle on a DatasetWriter. docs/dataset.md
("Recording from ROS topics") is the user's description.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import re
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robot_stack.data import EPISODE_SOURCES, TIMESTAMP, Dataset, DatasetSchema, DatasetWriter, FeatureSpec, recover
from robot_stack.errors import DatasetError, RobotStackError, RosError

IMAGE_TYPE = "sensor_msgs/msg/Image"
STALE_PREFIX = "stale."
"""Each recorded feature X gets a bool feature stale.X: True where X was older than its max_age (or never came)."""
INTERVENTION = "intervention"
INTERVENTION_TOPIC = "/policy/intervention"
"""The feature record_intervention adds: per frame, whether the policy node sent the operator's command."""
CONTROL_WORDS = ("start", "stop", "success", "fail", "discard")
TASK_PREFIX = "task:"
"""`task:<text>` on /recorder/control sets the task text of the episode being recorded and the next ones."""
RECOVER_POLICIES = ("refuse", "keep", "drop")
SHUTDOWN_POLICIES = ("commit", "discard")
_FEATURE_KEYS = ("topic", "type", "field", "fields", "joints", "kind", "dtype", "shape", "units", "max_age",
                 "optional", "qos", "depth")
# Subscription history: messages that wait while the recorder is busy (creating the dataset, a commit)
# are taken late instead of being overwritten, so none is lost and the first frame after is fresh.
DEFAULT_DEPTH = {"image": 10, "other": 100}
_QOS = ("sensor_data", "default")
_SIM_HISTORY = 8  # messages kept per feature on sim time: a sample is taken one clock step late
_JOINT_INDEX: dict[tuple, np.ndarray] = {}  # (names in the message, joints asked for) -> indices: names rarely change


class RecorderError(RobotStackError):
    """A features file that cannot be used, or a recording that cannot start; the message says what to do."""


# --------------------------------------------------------------------------------------------------
# The features file


@dataclass(frozen=True)
class FeatureSource:
    """Where one dataset feature comes from: a topic, a message type and the field(s) to read.

    fields are attribute paths ("position", "pose", "pose.position") whose values are concatenated;
    images (sensor_msgs/msg/Image, rgb8 or bgr8) take the whole message. joints picks JointState
    entries by name, in that order. shape is None when it is inferred from the first message.
    max_age_s: a sample older than this is flagged stale [s, on the recorder's clock]. qos: sensor_data
    (best effort, matches any publisher) or default (reliable); depth: the subscription's history.
    with_command: a fact about the command sent at the same time (the policy node's intervention flag):
    timed as the command is on sim time, not needed to start an episode, and a frame without a fresh
    message records zeros (false: no evidence the operator commanded it), flagged stale.
    """

    name: str
    topic: str
    type: str
    fields: tuple[str, ...]
    kind: str
    dtype: str
    shape: tuple[int, ...] | None
    units: str
    max_age_s: float
    optional: bool
    qos: str
    joints: tuple[str, ...] = ()
    depth: int = DEFAULT_DEPTH["other"]
    with_command: bool = False

    @property
    def is_image(self) -> bool:
        return self.type == IMAGE_TYPE

    def spec(self, shape: tuple[int, ...]) -> FeatureSpec:
        return FeatureSpec(self.name, self.dtype, shape, self.kind, topic=self.topic, units=self.units)

    def value(self, message: Any) -> np.ndarray:
        """This feature's value in `message`: uint8 [H, W, 3] for images, else an array of the fields."""
        from robot_stack.ros import convert

        if self.is_image:
            return convert.image_array(message)
        if self.joints:
            names = tuple(message.name)
            key = (names, self.joints)
            index = _JOINT_INDEX.get(key)
            if index is None:
                missing = [joint for joint in self.joints if joint not in names]
                if missing:
                    raise RecorderError(f"joint(s) {missing} are not in this JointState (it names {list(names)})")
                index = _JOINT_INDEX[key] = np.array([names.index(joint) for joint in self.joints])
        parts = []
        for path in self.fields:
            value = message
            for attribute in path.split("."):
                value = getattr(value, attribute)
            part = _as_array(value)
            if self.joints:
                part = np.asarray(part)[index]
            parts.append(part)
        return parts[0] if len(parts) == 1 else np.concatenate([np.ravel(part) for part in parts])


def _as_array(value: Any) -> np.ndarray:
    """A message field as numbers: geometry messages in their ROS order, sequences as arrays."""
    def has(*names: str) -> bool:
        return all(hasattr(value, name) for name in names)

    if has("position", "orientation"):  # Pose: x y z qx qy qz qw
        p, q = value.position, value.orientation
        return np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w])
    if has("translation", "rotation"):  # Transform
        t, q = value.translation, value.rotation
        return np.array([t.x, t.y, t.z, q.x, q.y, q.z, q.w])
    if has("linear", "angular"):  # Twist, Accel
        return np.array([value.linear.x, value.linear.y, value.linear.z,
                         value.angular.x, value.angular.y, value.angular.z])
    if has("force", "torque"):  # Wrench
        return np.array([value.force.x, value.force.y, value.force.z, value.torque.x, value.torque.y, value.torque.z])
    if has("x", "y", "z", "w"):  # Quaternion
        return np.array([value.x, value.y, value.z, value.w])
    if has("x", "y", "z"):  # Point, Vector3
        return np.array([value.x, value.y, value.z])
    if has("sec", "nanosec"):  # builtin_interfaces/Time, Duration: seconds
        return np.array(value.sec + value.nanosec * 1e-9)
    if isinstance(value, (bool, np.bool_, int, float, np.number)):
        return np.array(value)
    if isinstance(value, (np.ndarray, list, tuple)):
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            return array
    raise RecorderError(f"a field of type {type(value).__name__} cannot be recorded: pick a numeric field")


@dataclass
class RecorderConfig:
    """A features file: the robot description written into the dataset, a default task text, the features."""

    robot: dict[str, Any]
    task: str
    features: list[FeatureSource]
    source: str = ""


def with_intervention(config: RecorderConfig) -> RecorderConfig:
    """The config plus the feature `intervention` (kind flag, bool per frame) from /policy/intervention
    (std_msgs/Bool), whose max age is the action's (the policy node sends both every control step)."""
    if any(feature.name == INTERVENTION for feature in config.features):
        raise RecorderError(f"{config.source}: already has a feature named {INTERVENTION!r}: remove it from the "
                            "features file, or record without record_intervention")
    action = next((feature for feature in config.features if feature.kind == "action"), None)
    max_age = action.max_age_s if action is not None else min(feature.max_age_s for feature in config.features)
    feature = FeatureSource(name=INTERVENTION, topic=INTERVENTION_TOPIC, type="std_msgs/msg/Bool", fields=("data",),
                            kind="flag", dtype="bool", shape=(), units="", max_age_s=max_age, optional=False,
                            qos="default", with_command=True)
    return dataclasses.replace(config, features=[*config.features, feature])


def example_features_files() -> str:
    """Where the features files that ship with robot_stack are, as a path that works from any folder."""
    from robot_stack.launch.package import package_share_directory

    return str(package_share_directory() / "launch" / "params" / "recorder_<task>.yaml")


def load_config(path: str | Path, *, cameras: str = "", command_spec_of: Callable[[str], Any] | None = None) -> RecorderConfig:
    """Read a features file (docs/dataset.md, "Recording from ROS topics"); RecorderError says what is wrong.

    cameras: "name:HxW,name" adds image.<name> from /camera/<name>/image_raw for each camera (the sim
    driver's cameras parameter); command_spec_of: sim task name -> its CommandSpec, for a robot: section
    that names a sim_task (the caller passes robot_stack.sim.task.command_spec_of: this library does not
    import the sim).
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecorderError(f"features file {path.resolve()} not found: give features_file:=PATH "
                            f"({example_features_files()} are examples)") from None
    except (OSError, yaml.YAMLError) as error:
        raise RecorderError(f"features file {path} cannot be read: {error}") from None
    return parse_config(document, str(path), cameras=cameras, command_spec_of=command_spec_of)


def parse_config(document: Any, source: str = "features file", *, cameras: str = "",
                 command_spec_of: Callable[[str], Any] | None = None) -> RecorderConfig:
    if not isinstance(document, dict) or not isinstance(document.get("features", {}), dict):
        raise RecorderError(f"{source}: expected a mapping with robot:, task: and features: {{name: {{topic, type, ...}}}}")
    unknown = sorted(set(document) - {"robot", "task", "default_max_age", "features"})
    if unknown:
        raise RecorderError(f"{source}: unknown key(s) {unknown}; allowed: robot, task, default_max_age, features")
    default_max_age = _positive(document.get("default_max_age", 0.25), f"{source}: default_max_age")
    features = [_feature(name, entry, default_max_age, source) for name, entry in (document.get("features") or {}).items()]
    features += camera_features(cameras, default_max_age, existing={f.name for f in features})
    if not features:
        raise RecorderError(f"{source}: no features to record: list them under features:")
    names = [feature.name for feature in features]
    for feature in features:
        if feature.name == TIMESTAMP or feature.name.startswith(STALE_PREFIX):
            raise RecorderError(f"{source}: feature name {feature.name!r} is reserved (the recorder writes timestamp and stale.*)")
    if len(set(names)) != len(names):
        raise RecorderError(f"{source}: feature names repeat: {names}")
    types: dict[str, str] = {}
    for feature in features:
        if types.setdefault(feature.topic, feature.type) != feature.type:
            raise RecorderError(f"{source}: topic {feature.topic} is given two types, {types[feature.topic]} and {feature.type}")
    robot = robot_info(document.get("robot"), source, command_spec_of)
    task = document.get("task", "")
    if not isinstance(task, str):
        raise RecorderError(f"{source}: task must be a text (the instruction stored with each episode), got {task!r}")
    return RecorderConfig(robot, task, features, source)


def robot_info(section: Any, source: str, command_spec_of: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """The dataset's robot attribute: name, command (its meaning) and command_spec (names, low, high, hold).

    With sim_task: the command comes from that task's CommandSpec; else from command: {meaning, names, low, high}.
    """
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        raise RecorderError(f"{source}: robot: needs at least a name (and command: its meaning and bounds, or sim_task:)")
    robot = dict(section)
    command_spec = None
    if robot.get("sim_task") and command_spec_of is not None:
        try:
            command_spec = command_spec_of(str(robot["sim_task"]))
        except RobotStackError as error:
            raise RecorderError(f"{source}: robot: sim_task: {error}") from None
    if command_spec is not None:
        robot["command"] = command_spec.meaning
        robot["command_spec"] = {"names": list(command_spec.names), "low": list(command_spec.low),
                                 "high": list(command_spec.high), "hold": list(command_spec.hold)}
    elif isinstance(robot.get("command"), dict):
        spec = dict(robot["command"])
        robot["command"] = spec.pop("meaning", "")
        names = spec.get("names")
        lists = [spec.get(key) for key in ("low", "high", "hold")]
        if not (isinstance(names, list) and names and all(isinstance(v, list) and len(v) == len(names) for v in lists)):
            # a dataset's robot never changes: a command without its hold could never be deployed (the policy node
            # sends hold on stale data and e-stop), so it is refused before anything is recorded
            raise RecorderError(f"{source}: robot: command: needs names, and low, high and hold each as long as names "
                                "(hold: the command that keeps the robot still, sent on stale data and e-stop)")
        robot["command_spec"] = spec
    if not robot.get("command"):
        raise RecorderError(f"{source}: robot: says nothing about the command: give command: {{meaning, names, low, "
                            "high, hold}} or sim_task: lift|reach2d")
    try:
        return json.loads(json.dumps(robot))  # as the dataset will store it, so a reopened one compares equal
    except (TypeError, ValueError) as error:
        raise RecorderError(f"{source}: robot: must hold plain values (text, numbers, lists, mappings): {error}") from None


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise RecorderError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def _feature(name: Any, entry: Any, default_max_age: float, source: str) -> FeatureSource:
    from robot_stack.ros import message_class

    where = f"{source}: feature {name!r}"
    if not isinstance(entry, dict):
        raise RecorderError(f"{where}: expected {{topic: ..., type: ..., field: ...}}, got {entry!r}")
    unknown = sorted(set(entry) - set(_FEATURE_KEYS))
    if unknown:
        raise RecorderError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(_FEATURE_KEYS)}")
    if not isinstance(name, str) or "/" in name:
        raise RecorderError(f"{where}: feature names are folder names: use '.' where ROS uses '/' (image.agentview)")
    topic, type_name = entry.get("topic"), entry.get("type")
    if not isinstance(topic, str) or not topic or not isinstance(type_name, str):
        raise RecorderError(f"{where}: needs topic: and type: (e.g. sensor_msgs/msg/JointState)")
    try:
        prototype = message_class(type_name)()
    except (RosError, ImportError, AttributeError, KeyError) as error:
        raise RecorderError(f"{where}: unknown message type {type_name!r} ({error})") from None
    image = type_name == IMAGE_TYPE
    fields = entry.get("fields", entry.get("field", ()))
    fields = (fields,) if isinstance(fields, str) else tuple(fields or ())
    if not image and not fields:
        raise RecorderError(f"{where}: name the field(s) to record (field: position, field: pose, field: data)")
    joints = tuple(entry.get("joints") or ())
    kind = entry.get("kind") or ("image" if image else "action" if name == "action" else "state")
    if image != (kind == "image"):
        raise RecorderError(f"{where}: kind image goes with type {IMAGE_TYPE} and only with it")
    shape = entry.get("shape")
    shape = tuple(int(n) for n in shape) if isinstance(shape, (list, tuple)) else None if shape is None else (int(shape),)
    feature = FeatureSource(  # dtype and shape are settled below, from what the type's fields hold
        name=name, topic=topic, type=type_name, fields=fields, kind=kind, dtype="float32", shape=shape,
        units=str(entry.get("units", "")), max_age_s=_positive(entry.get("max_age", default_max_age), f"{where}: max_age"),
        optional=bool(entry.get("optional", False)), qos=str(entry.get("qos", "sensor_data" if hasattr(prototype, "header") else "default")),
        joints=joints, depth=int(entry.get("depth", DEFAULT_DEPTH["image" if image else "other"])),
    )
    if feature.depth < 1:
        raise RecorderError(f"{where}: depth (messages the subscription keeps) must be at least 1")
    if feature.qos not in _QOS:
        raise RecorderError(f"{where}: qos {feature.qos!r}: use sensor_data (best effort) or default (reliable)")
    try:
        example = None if image or joints else feature.value(prototype)
    except AttributeError as error:
        fields_of = getattr(prototype, "__slots__", None) or list(getattr(prototype, "get_fields_and_field_types", dict)())
        raise RecorderError(f"{where}: {type_name} has no field {error.name!r} (its fields: {', '.join(fields_of)})") from None
    default_dtype = "uint8" if image else "bool" if example is not None and example.dtype == bool else "float32"
    dtype = str(entry.get("dtype", default_dtype))
    if kind == "flag" and "dtype" not in entry:
        dtype = "bool"
    if shape is None and example is not None and example.size and all(n > 0 for n in example.shape):
        shape = example.shape  # fixed by the type: a pose is (7,), a Float64 is ()
    feature = dataclasses.replace(feature, dtype=dtype, shape=shape)
    try:
        feature.spec(shape or ((1, 1, 3) if image else ()))  # checks the name, dtype and kind now
    except DatasetError as error:
        raise RecorderError(f"{where}: {error}") from None
    return feature


def camera_features(cameras: str, max_age_s: float, existing: set[str] = frozenset()) -> list[FeatureSource]:
    """image.<name> features for "name:HxW,name" (the sim driver's cameras parameter; HxW fixes the shape)."""
    features = []
    for item in (c.strip() for c in (cameras or "").split(",")):
        if not item:
            continue
        name, _, size = item.partition(":")
        shape = None
        if size:
            height, _, width = size.partition("x")
            try:
                shape = (int(height), int(width or height), 3)
            except ValueError:
                raise RecorderError(f"camera {item!r}: give name or name:HxW (e.g. agentview:84x84)") from None
        if f"image.{name}" in existing:
            continue
        features.append(FeatureSource(
            name=f"image.{name}", topic=f"/camera/{name}/image_raw", type=IMAGE_TYPE, fields=(), kind="image",
            dtype="uint8", shape=shape, units="", max_age_s=max_age_s, optional=False, qos="sensor_data",
            depth=DEFAULT_DEPTH["image"],
        ))
    return features


# --------------------------------------------------------------------------------------------------
# The recorder


class FeatureBuffer:
    """The last messages' values of one feature, with their times on the recorder's clock [ns]."""

    def __init__(self, history: int) -> None:
        self.entries: deque[tuple[int, np.ndarray]] = deque(maxlen=history)
        self.received = 0

    def add(self, time_ns: int, value: np.ndarray) -> None:
        self.entries.append((time_ns, value))
        self.received += 1

    def as_of(self, time_ns: int) -> tuple[int, np.ndarray] | None:
        """The newest value whose time is not after `time_ns`."""
        for entry in reversed(self.entries):
            if entry[0] <= time_ns:
                return entry
        return None


@dataclass
class EpisodeCounts:
    frames: int = 0
    dropped: int = 0  # record ticks that passed without a sample (the recorder was late, or sim time jumped)
    stale: dict[str, int] = field(default_factory=dict)  # frames flagged stale, per feature
    interventions: int = 0  # frames whose command was the operator's (record_intervention)

    def notes(self) -> str:
        """The counts as the episode's notes: empty when every frame was fresh and on time."""
        parts = []
        stale = {name: n for name, n in self.stale.items() if n}
        if stale:
            parts.append("stale frames: " + ", ".join(f"{name} {n}" for name, n in stale.items()))
        if self.dropped:
            parts.append(f"dropped ticks: {self.dropped}")
        return "; ".join(parts)


class Recorder:
    """Samples features into episodes of a dataset; driven by on_message/on_clock/on_tick/on_control.

    Two clocks (docs/dataset.md): wall (use_sim_time false) - the caller calls on_tick at record_hz,
    a feature's age is the time since its message arrived (monotonic); sim (use_sim_time true) - a
    sample is due when /clock crosses the next 1/record_hz boundary T and is taken at the next /clock
    (so every message of step T has arrived), from each feature's newest message at or before T
    (header stamp, or for messages without one the sim time they belong to), and the caller calls
    end_pass after every executor pass. Times are ns.

    log: an object with info/warning/error(str); on_change(): called when the status changed.
    """

    def __init__(self, config: RecorderConfig, dataset: str | Path, *, record_hz: float, sim_time: bool = False,
                 task: str = "", operator: str = "", source: str = "teleop", min_free_mb: float = 500.0,
                 recover_on_start: str = "refuse", log: Any = None, on_change: Callable[[], None] = lambda: None,
                 flush_interval_s: float = 1.0) -> None:
        if not record_hz > 0:
            raise RecorderError(f"record_hz must be positive, got {record_hz}")
        if source and source not in EPISODE_SOURCES:
            raise RecorderError(f"source {source!r} is not one of {', '.join(EPISODE_SOURCES)} (what produces the "
                                "episodes: an operator, a scripted expert, a policy, an online learner's actor)")
        if recover_on_start not in RECOVER_POLICIES:
            raise RecorderError(f"recover_on_start {recover_on_start!r}: use one of {', '.join(RECOVER_POLICIES)}")
        self.config = config
        self.path = Path(dataset)
        self.record_hz = float(record_hz)
        self.period_ns = 1e9 / self.record_hz
        self.sim_time = sim_time
        self.task = task or config.task
        self.operator = operator
        self.source = source
        self.min_free_mb = float(min_free_mb)
        self.recover_on_start = recover_on_start
        self.flush_interval_s = flush_interval_s
        self.log = log or _PrintLog()
        self.on_change = on_change
        self.features = {feature.name: feature for feature in config.features}
        self.by_topic: dict[str, list[FeatureSource]] = {}
        for feature in config.features:
            self.by_topic.setdefault(feature.topic, []).append(feature)
        self.buffers = {name: FeatureBuffer(_SIM_HISTORY if sim_time else 1) for name in self.features}
        self.writer: DatasetWriter | None = None
        self.recorded: list[FeatureSource] = []  # the features this dataset holds, in its order
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.recording = False
        self.frozen = False
        self.episode = EpisodeCounts()
        self.committed_this_run = 0
        self.failed_this_run = 0  # episodes asked for but not committed: a refused start, a write error, no frames
        self.dropped_total = 0
        self.stale_total: dict[str, int] = {name: 0 for name in self.features}
        self.bad_messages: dict[str, int] = {}
        self.last_error: str | None = None
        self.last_event = ""
        self.drop_unfinished = False  # our own failed episode is on disk: drop it at the next start
        self.clock_ns: int | None = None  # sim time: the latest /clock
        self._pass_controls: list[str] = []  # sim time: what this executor pass brought, for end_pass
        self._pass_clocks: list[int] = []
        self._pass_after: list[tuple[str, np.ndarray]] = []
        self.pending_ns: int | None = None  # sim time: a sample due at this time, taken at the next /clock
        self.pending_since: float = 0.0
        self.finishing: tuple[bool | None, str] | None = None  # sim time: a commit waiting for the last frame
        self.boundary = 0  # sim time: index of the next record boundary since the episode began
        self.episode_start_ns = 0
        self.last_tick_ns: int | None = None  # wall clock: monotonic time of the last sample

    # ---- inputs

    def on_message(self, topic: str, message: Any, mono_ns: int | None = None) -> None:
        """A message on one of the features' topics; mono_ns: its arrival (time.monotonic_ns())."""
        stamp = _header_ns(message) if self.sim_time else 0
        for feature in self.by_topic.get(topic, ()):
            value = self._value(feature, message)
            if value is None:
                continue
            if not self.sim_time:
                self.buffers[feature.name].add(time.monotonic_ns() if mono_ns is None else mono_ns, value)
            elif stamp:
                self.buffers[feature.name].add(stamp, value)
            elif feature.kind == "action" or feature.with_command:
                # A command is sent after the robot's last step and causes its next one: the clock before
                # this pass's /clock messages (end_pass applies them) is the step it goes with.
                if self.clock_ns is not None:
                    self.buffers[feature.name].add(self.clock_ns, value)
            else:
                self._pass_after.append((feature.name, value))  # a result of the step: the clock after this pass

    def on_clock(self, clock_ns: int) -> None:
        """A /clock message (sim time); it takes effect at end_pass."""
        self._pass_clocks.append(clock_ns)

    def on_control(self, word: str) -> None:
        """A /recorder/control word: start, stop, success, fail, discard, or task:<text>.

        On sim time it takes effect at end_pass, before the pass's /clock messages: a teleop sends it
        after seeing the robot's last step, and the command it sends with it may already have caused
        the next step."""
        if self.sim_time:
            self._pass_controls.append(word)
        else:
            self._apply_control(word)

    def end_pass(self) -> None:
        """Call after each executor pass (spin_once): applies the pass's control words, then its /clock
        messages (taking the samples due), then stamps its header-less results with the new sim time.

        Within one pass callbacks run in no particular order, so on sim time the recorder orders them by
        what causes what, as docs/dataset.md explains; on the wall clock there is nothing to do."""
        if not self.sim_time:
            return
        controls, self._pass_controls = self._pass_controls, []
        for word in controls:
            self._apply_control(word)
        clocks, self._pass_clocks = self._pass_clocks, []
        for clock_ns in clocks:
            self._advance_clock(clock_ns)
        after, self._pass_after = self._pass_after, []
        if self.clock_ns is not None:
            for name, value in after:
                self.buffers[name].add(self.clock_ns, value)

    def _value(self, feature: FeatureSource, message: Any) -> np.ndarray | None:
        try:
            value = feature.value(message)
            expected = self.shapes.get(feature.name, feature.shape)
            if expected is not None and value.shape != expected:
                raise RecorderError(f"shape {value.shape}, but the feature is {expected}")
        except (RecorderError, RosError, AttributeError, ValueError) as error:
            self.bad_messages[feature.name] = self.bad_messages.get(feature.name, 0) + 1
            self.log.error(f"dropped a message on {feature.topic} for feature {feature.name}: {error}",
                           throttle_duration_sec=5.0)
            return None
        return value

    def _advance_clock(self, clock_ns: int) -> None:
        if self.clock_ns is not None and clock_ns < self.clock_ns:
            self.log.warning(f"/clock went back from {self.clock_ns / 1e9:.3f} s to {clock_ns / 1e9:.3f} s (sim restarted?)")
            self.pending_ns = None
            self._align_boundaries(clock_ns)
        self.clock_ns = clock_ns
        if not self.recording:
            return
        if self.pending_ns is not None and clock_ns > self.pending_ns:
            self._sample_pending()  # every message of step pending_ns has arrived by now
            if self.finishing is not None:
                self._commit(*self.finishing)
                return
        crossed = 0
        while clock_ns >= self._boundary_ns(self.boundary):
            self.boundary += 1
            crossed += 1
        if crossed and not self.frozen:
            self._count_dropped(crossed - 1)
            self.pending_ns, self.pending_since = clock_ns, time.monotonic()

    def on_tick(self, mono_ns: int | None = None, wall_ns: int | None = None) -> None:
        """A record tick on the wall clock (called at record_hz)."""
        if not self.recording or self.sim_time or self.frozen:
            return
        mono_ns = time.monotonic_ns() if mono_ns is None else mono_ns
        if self.last_tick_ns is not None:
            late = round((mono_ns - self.last_tick_ns) / self.period_ns) - 1
            self._count_dropped(late)
        self.last_tick_ns = mono_ns
        self._sample(mono_ns, (time.time_ns() if wall_ns is None else wall_ns) / 1e9)

    def _apply_control(self, word: str) -> None:
        word = word.strip()
        if word.startswith(TASK_PREFIX):
            self.task = word[len(TASK_PREFIX):].strip()
            self._event(f"task is now {self.task!r}")
        elif word == "start":
            self.start()
        elif word in ("stop", "success", "fail"):
            self.finish({"stop": None, "success": True, "fail": False}[word])
        elif word == "discard":
            self.discard()
        else:
            self.log.warning(f"unknown recorder control word {word!r}: use {', '.join(CONTROL_WORDS)} or task:<text>")

    def housekeeping(self) -> None:
        """Called about 10 times a second: takes a sim-time sample whose next /clock is late (sim paused)."""
        if self.pending_ns is not None and time.monotonic() - self.pending_since > max(0.5, 3 * self.period_ns / 1e9):
            self._sample_pending()
            if self.finishing is not None:
                self._commit(*self.finishing)

    # ---- episodes

    def freeze(self) -> None:
        """Take no new frames (shutting down): control words are still handled, then close()."""
        self.frozen = True

    def start(self) -> bool:
        """Begin an episode; False (and last_error, status, log say why) when it cannot."""
        if self.finishing is not None:
            self._commit(*self.finishing)
        if self.recording or self.frozen:
            self.log.warning("start: already recording (send stop, success, fail or discard first)" if self.recording
                             else "start: the recorder is shutting down")
            return False
        try:
            problem = location_problem(self.path)
            if problem:
                raise RecorderError(f"cannot start recording: {problem}")
            free = disk_free_mb(self.path)
            if free < self.min_free_mb:
                raise RecorderError(f"cannot start recording: the disk holding {self.path} is nearly full ({free:.0f} MB "
                                    f"free, min_free_mb is {self.min_free_mb:g}): free space or record elsewhere")
            if self.sim_time and self.clock_ns is None:
                raise RecorderError("cannot start recording on sim time: no message yet on /clock: is the simulator "
                                    "running? (use use_sim_time:=false on a real robot)")
            self._check_fresh()
            self._ensure_writer()
        except (RecorderError, DatasetError, OSError) as error:
            self.failed_this_run += 1
            self._fail(self._operator_text(error))
            return False
        absent = [f.name for f in self.recorded if f.optional and not self.buffers[f.name].entries]
        if absent:
            self.log.warning(f"optional feature(s) {', '.join(absent)} have no message: their frames are flagged stale")
        self.recording = True
        self.episode = EpisodeCounts(stale={feature.name: 0 for feature in self.recorded})
        self.last_tick_ns = None
        if self.sim_time:
            self._align_boundaries(self.clock_ns)
            self.boundary = 1
            self.pending_ns, self.pending_since = self.clock_ns, time.monotonic()  # the state at start is frame 0
        # On the wall clock the first frame is the first tick, a period on: messages that waited while the
        # dataset was created are taken first, so it is fresh.
        self.last_error = None
        self._event(f"recording episode {self.writer.n_episodes} (task {self.task!r})")
        return True

    def finish(self, success: bool | None, notes: str = "") -> int | None:
        """Commit the episode being recorded (success None: unknown); returns its index, or None.

        On sim time the commit waits for the next /clock (at most about half a second): the episode's last
        frame is then taken with the command sent together with this word, as every other frame is."""
        word = {None: "stop", True: "success", False: "fail"}[success]
        if not self.recording:
            self.log.warning(f"{word}: not recording, nothing to commit")
            return None
        if self.sim_time and self.pending_ns is not None:
            self.finishing = (success, notes)
            return None
        return self._commit(success, notes)

    def _commit(self, success: bool | None, notes: str = "") -> int | None:
        self.finishing = None
        if self.pending_ns is not None:
            self._sample_pending()
        if not self.recording:  # the last sample failed to write
            return None
        self.recording = False
        word = {None: "stop", True: "success", False: "fail"}[success]
        if self.episode.frames == 0:
            self.failed_this_run += 1
            self._fail(f"{word}: the episode has no frames, nothing committed: record for at least one frame "
                       f"period ({1 / self.record_hz:g} s) before {word}")
            return None
        text = "; ".join(part for part in (self.episode.notes(), notes) if part)
        try:
            index = self.writer.commit_episode(self.task or None, success, operator=self.operator, notes=text,
                                               source=self.source)
        except DatasetError as error:
            self._write_failed(error)
            return None
        self.committed_this_run += 1
        outcome = {None: "success unknown", True: "success", False: "failed"}[success]
        self._event(f"committed episode {index}: {self.episode.frames} frames, {outcome}"
                    + (f" ({text})" if text else ""))
        return index

    def discard(self) -> None:
        if not self.recording:
            self.log.warning("discard: not recording, nothing to discard")
            return
        self.recording = False
        self.pending_ns = self.finishing = None
        try:
            self.writer.discard_episode()
        except DatasetError as error:
            self._write_failed(error)
            return
        self._event(f"discarded the episode ({self.episode.frames} frames)")

    def close(self, on_shutdown: str = "commit") -> None:
        """End the session: the episode being recorded is committed (success unknown) or discarded; flush."""
        if self.finishing is not None:
            self._commit(*self.finishing)
        if self.recording:
            if on_shutdown == "commit":
                self._commit(None, notes="recorder shut down while recording")
            else:
                self.discard()
        if self.writer is not None:
            try:
                self.writer.close()
            except DatasetError as error:
                self.log.error(f"closing {self.path}: {error}")
            self.writer = None

    # ---- status

    def status(self) -> dict[str, Any]:
        """What /recorder/status says (JSON)."""
        try:
            free = round(disk_free_mb(self.path), 1)
        except OSError:
            free = None
        return {
            "recording": self.recording,
            "dataset": str(self.path),
            # The index of the episode being recorded (or the next one): the committed episodes in the dataset.
            "episode": self.writer.n_episodes if self.writer is not None else None,
            "committed_this_run": self.committed_this_run,
            "failed_this_run": self.failed_this_run,
            "frames": self.episode.frames,
            "dropped": self.episode.dropped,
            "stale": dict(self.episode.stale),
            "dropped_total": self.dropped_total,
            "stale_total": dict(self.stale_total),
            "received": {name: buffer.received for name, buffer in self.buffers.items()},
            "bad_messages": dict(self.bad_messages),
            "task": self.task,
            "source": self.source,
            "interventions": self.episode.interventions,
            "clock": "sim" if self.sim_time else "wall",
            "record_hz": self.record_hz,
            "disk_free_mb": free,
            "error": self.last_error,
            "event": self.last_event,
        }

    # ---- internals

    def _event(self, text: str) -> None:
        self.last_event = text
        self.log.info(text)
        self.on_change()

    def _fail(self, text: str) -> None:
        self.last_error = text
        self.last_event = text
        self.log.error(text)
        self.on_change()

    def _boundary_ns(self, index: int) -> float:
        return self.episode_start_ns + index * self.period_ns

    def _align_boundaries(self, clock_ns: int | None) -> None:
        self.episode_start_ns, self.boundary = clock_ns or 0, 1

    def _count_dropped(self, n: int) -> None:
        if n > 0:
            self.episode.dropped += n
            self.dropped_total += n

    def _sample_pending(self) -> None:
        at, self.pending_ns = self.pending_ns, None
        if at is not None and self.recording:
            self._sample(at, at / 1e9)

    def _sample(self, at_ns: int, stamp_s: float) -> None:
        """Append one frame: each recorded feature's newest value at `at_ns`, flagged stale if too old."""
        frame: dict[str, Any] = {TIMESTAMP: stamp_s}
        for feature in self.recorded:
            entry = self.buffers[feature.name].as_of(at_ns)
            stale = entry is None or at_ns - entry[0] > feature.max_age_s * 1e9
            # A stale value is kept (flagged); one never received is zeros (flagged): never silently filled.
            # A fact about the command holds only for its own step: without a fresh one it is zeros (flagged).
            known = entry is not None and not (stale and feature.with_command)
            frame[feature.name] = entry[1] if known else np.zeros(self.shapes[feature.name], feature.dtype)
            frame[STALE_PREFIX + feature.name] = stale
            if stale:
                self.episode.stale[feature.name] += 1
                self.stale_total[feature.name] += 1
        if INTERVENTION in self.shapes:
            self.episode.interventions += bool(frame[INTERVENTION])
        try:
            self.writer.append_frame(frame)
        except DatasetError as error:
            self._write_failed(error)
            return
        self.episode.frames += 1

    def _operator_text(self, error: Exception) -> str:
        """An error as the operator reads it: the recorder's own words, the store's without Python API advice."""
        if isinstance(error, RecorderError):
            return str(error)
        cause = _os_error(error)
        if cause is not None and not isinstance(error, DatasetError):
            return f"cannot record into {self.path}: {cause.strerror or cause}: check the path and its permissions"
        return _without_api_advice(str(error))

    def _write_failed(self, error: DatasetError) -> None:
        """A write failed (full disk...): stop this episode, drop what of it is on disk, keep the node alive."""
        self.failed_this_run += 1
        self.recording = False
        self.pending_ns = None
        try:
            self.writer.discard_episode()
        except DatasetError:
            self.drop_unfinished = True  # the disk may not even take the discard: drop it at the next start
            try:
                self.writer.close()
            except DatasetError:
                pass
            self.writer = None
        cause = _os_error(error)
        try:
            free = disk_free_mb(self.path)
        except OSError:
            free = None
        # The store may not pass the OSError on (a background write's): then the free space tells.
        full = cause.errno == errno.ENOSPC if cause is not None else free is not None and free < max(1.0, self.min_free_mb)
        if full:
            what = f"the disk holding {self.path} is full" + (f" ({free:.0f} MB free)" if free is not None else "")
            todo = "free space, then start a new episode"
        elif cause is not None:
            what = f"writing to {self.path} failed: {cause.strerror or cause}"
            todo = "check the disk and the folder's permissions, then start a new episode"
        else:
            what = f"writing to {self.path} failed: {_without_api_advice(str(error))}"
            todo = "start a new episode"
        self._fail(f"recording stopped: {what}; the episode is dropped, committed episodes are intact: {todo}")

    def _check_fresh(self) -> None:
        now = self.clock_ns if self.sim_time else time.monotonic_ns()
        for feature in self.config.features:
            if feature.optional or feature.with_command:
                continue
            buffer = self.buffers[feature.name]
            entry = buffer.as_of(now) if buffer.entries else None
            what = "the camera" if feature.is_image else "its publisher"
            if entry is None:
                raise RecorderError(f"cannot start recording: no message yet on {feature.topic} (feature {feature.name}): "
                                    f"is {what} running? (or mark the feature optional)")
            age = (now - entry[0]) / 1e9
            if age > feature.max_age_s:
                raise RecorderError(f"cannot start recording: the last message on {feature.topic} (feature {feature.name}) "
                                    f"is {age:.2f} s old, max_age is {feature.max_age_s:g} s: has {what} stopped? "
                                    "(or mark the feature optional)")

    def open_existing(self) -> None:
        """Open the dataset if it exists (at node start, so problems show before the first start)."""
        if self.writer is None and self.path.exists():
            try:
                self._ensure_writer()
            except (RecorderError, DatasetError, OSError) as error:
                self._fail(self._operator_text(error))

    def _ensure_writer(self) -> None:
        if self.writer is not None:
            return
        if self.path.exists():
            self._open()
        else:
            self._create()

    def _open(self) -> None:
        ds = Dataset.open(self.path)
        if ds.unfinished_frames:
            policy = "drop" if self.drop_unfinished else self.recover_on_start
            if policy == "refuse":
                raise RecorderError(
                    f"{self.path} has an unfinished episode ({ds.unfinished_frames} frames from a recording that "
                    f"stopped without commit or discard, e.g. a crash): run `robot-stack data recover {self.path} "
                    "--keep` (or --drop), or start the recorder with recover_on_start:=keep|drop")
            result = recover(self.path, keep=policy == "keep")  # its task is unknown: the crash lost it
            self.log.warning(f"{self.path}: unfinished episode: " + (
                f"kept {result.kept_frames} frames as episode {result.kept_episode} (success unknown)"
                if result.kept_episode is not None else f"dropped {result.dropped_frames} frames"))
            ds = Dataset.open(self.path)
        self.drop_unfinished = False
        stored = ds.schema
        recorded = [f for f in self.config.features if f.name in stored.features or not f.optional]
        for feature in self.config.features:
            if feature.optional and feature.name not in stored.features:
                self.log.info(f"optional feature {feature.name} is not in {self.path}: not recorded")
        shapes = {f.name: (f.shape if f.shape is not None else
                           stored.features[f.name].shape if f.name in stored.features else self._inferred(f))
                  for f in recorded}
        mine = self._schema(recorded, shapes, stored.tasks)
        problem = stored.first_mismatch(mine)
        if problem:
            raise RecorderError(f"cannot append to {self.path}: it was recorded with a different setup ({problem}); "
                                "record into a new dataset (dataset:=NEW.zarr) or use the features file, cameras, "
                                "record_intervention and record_hz it was recorded with")
        self.writer = DatasetWriter.open(self.path, flush_interval_s=self.flush_interval_s)
        self.recorded, self.shapes = recorded, shapes
        self.log.info(f"appending to {self.path}: {ds.n_episodes} episodes, {ds.n_frames} frames")

    def _create(self) -> None:
        recorded = []
        for feature in self.config.features:
            if feature.optional and not self.buffers[feature.name].received:
                self.log.info(f"optional feature {feature.name}: no message on {feature.topic}, not recorded in this dataset")
                continue
            recorded.append(feature)
        shapes = {f.name: f.shape if f.shape is not None else self._inferred(f) for f in recorded}
        schema = self._schema(recorded, shapes, [self.task] if self.task else [])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = DatasetWriter.create(self.path, robot=schema.robot, record_hz=schema.record_hz,
                                           features=list(schema.features.values()), tasks=schema.tasks,
                                           flush_interval_s=self.flush_interval_s)
        self.recorded, self.shapes = recorded, shapes
        described = ", ".join(f"{f.name} {shapes[f.name]}" for f in recorded)
        self.log.info(f"created {self.path} at {self.record_hz:g} Hz: {described}")

    def _inferred(self, feature: FeatureSource) -> tuple[int, ...]:
        entry = self.buffers[feature.name].entries[-1] if self.buffers[feature.name].entries else None
        if entry is None:
            raise RecorderError(f"cannot start recording: no message yet on {feature.topic} (feature {feature.name}) to "
                                "take its shape from: is its publisher running? (or declare shape: in the features file)")
        return tuple(entry[1].shape)

    def _schema(self, recorded: list[FeatureSource], shapes: Mapping[str, tuple[int, ...]], tasks: list[str]) -> DatasetSchema:
        specs = {TIMESTAMP: FeatureSpec(TIMESTAMP, "float64", (), "time", units="s")}
        for feature in recorded:
            specs[feature.name] = feature.spec(shapes[feature.name])
        for feature in recorded:
            name = STALE_PREFIX + feature.name
            specs[name] = FeatureSpec(name, "bool", (), "flag", topic=feature.topic)
        return DatasetSchema(self.config.robot, self.record_hz, specs, list(tasks))


def _header_ns(message: Any) -> int:
    header = getattr(message, "header", None)
    if header is None:
        return 0
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def location_problem(path: Path) -> str | None:
    """Why a dataset cannot be created or appended to at `path` (None: it can), in the operator's terms.

    Tells a missing folder that cannot be created, a folder that cannot be written and a file in the way
    apart, so none of them is reported as a full disk. Probes by creating (and removing) a folder, which
    also holds for root on a read-only file system, where permission bits say nothing."""
    path = Path(path).absolute()
    if path.exists():
        return None if path.is_dir() else f"{path} is a file, not a dataset folder: choose another dataset path"
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, so {path.parent} cannot be a folder: choose another dataset path"
    try:
        probe = Path(tempfile.mkdtemp(prefix=".robot_stack_probe_", dir=existing))
        probe.rmdir()
    except OSError as error:
        reason = error.strerror or str(error)
        if existing == path.parent:
            return (f"the folder {existing} cannot be written ({reason}): record into a folder you can write to "
                    "(dataset:=PATH) or fix its permissions")
        return (f"the folder {path.parent} does not exist and cannot be created ({existing} cannot be written: "
                f"{reason}): create it, or record into a folder you can write to (dataset:=PATH)")
    return None


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind an error (through `raise ... from` and the exceptions being handled), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _without_api_advice(text: str) -> str:
    """The store's message with its advice to Python callers (`(discard_episode() to go on)`) taken out: an
    operator can act on the rest, not on that."""
    return re.sub(r"\s*\([^()]*\w\(\)[^()]*\)", "", text)


def disk_free_mb(path: Path) -> float:
    """Free space [MB, 10^6 bytes] of the file system that holds (or will hold) `path`."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 1e6


class _PrintLog:
    def info(self, text: str, **_options: Any) -> None:
        print(f"[recorder] {text}", flush=True)

    warning = error = info
