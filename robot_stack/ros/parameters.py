"""Node parameters: typed values with ROS 2's type names, declared once, overridable from files and -p."""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from typing import Any

from robot_stack.errors import RosError
from robot_stack.streams import drop_further_writes


class ParameterType(enum.IntEnum):
    NOT_SET = 0
    BOOL = 1
    INTEGER = 2
    DOUBLE = 3
    STRING = 4
    BYTE_ARRAY = 5
    BOOL_ARRAY = 6
    INTEGER_ARRAY = 7
    DOUBLE_ARRAY = 8
    STRING_ARRAY = 9


def parameter_type(value: Any) -> ParameterType:
    if value is None:
        return ParameterType.NOT_SET
    if isinstance(value, bool):
        return ParameterType.BOOL
    if isinstance(value, int):
        return ParameterType.INTEGER
    if isinstance(value, float):
        return ParameterType.DOUBLE
    if isinstance(value, str):
        return ParameterType.STRING
    if isinstance(value, (bytes, bytearray)):
        return ParameterType.BYTE_ARRAY
    if isinstance(value, (list, tuple)):
        kinds = {parameter_type(v) for v in value}
        if not kinds or kinds <= {ParameterType.STRING}:
            return ParameterType.STRING_ARRAY
        if kinds <= {ParameterType.BOOL}:
            return ParameterType.BOOL_ARRAY
        if kinds <= {ParameterType.INTEGER}:
            return ParameterType.INTEGER_ARRAY
        if kinds <= {ParameterType.INTEGER, ParameterType.DOUBLE}:
            return ParameterType.DOUBLE_ARRAY
    raise RosError(f"parameter value {value!r} has no ROS 2 parameter type (use bool, int, float, str or a list of one of them)")


class Parameter:
    """A named value, as ``rclpy.parameter.Parameter``: ``.name``, ``.value``, ``.type_``."""

    Type = ParameterType

    def __init__(self, name: str, value: Any = None) -> None:
        self.name = name
        self.value = value
        self.type_ = parameter_type(value)

    def get_parameter_value(self) -> Any:
        return self.value

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, {self.value!r})"


def coerce(name: str, node: str, default: Any, value: Any, source: str) -> Any:
    """An override for a declared parameter, checked against its default's type (int widens to float)."""
    expected, given = parameter_type(default), parameter_type(value)
    if expected is ParameterType.NOT_SET or expected == given:
        return list(value) if isinstance(value, tuple) else value
    if expected is ParameterType.DOUBLE and given is ParameterType.INTEGER:
        return float(value)
    if expected is ParameterType.DOUBLE_ARRAY and given is ParameterType.INTEGER_ARRAY:
        return [float(v) for v in value]
    if expected in (ParameterType.INTEGER_ARRAY, ParameterType.DOUBLE_ARRAY, ParameterType.STRING_ARRAY,
                    ParameterType.BOOL_ARRAY) and value == []:
        return []
    raise RosError(
        f"parameter '{name}' of node '{node}' is {expected.name} (default {default!r}), "
        f"but {source} gives {given.name} {value!r}: fix the value's type"
    )


# --------------------------------------------------------------------------------------------------
# A node's declared interface: its parameters and topics, for --help and for checked declaration

_TYPE_WORDS = {
    ParameterType.BOOL: "bool", ParameterType.INTEGER: "int", ParameterType.DOUBLE: "double",
    ParameterType.STRING: "string", ParameterType.BYTE_ARRAY: "byte[]", ParameterType.BOOL_ARRAY: "bool[]",
    ParameterType.INTEGER_ARRAY: "int[]", ParameterType.DOUBLE_ARRAY: "double[]", ParameterType.STRING_ARRAY: "string[]",
}


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter of a node: its default fixes its ROS 2 type; choices / minimum are checked at declaration."""

    name: str
    default: Any
    meaning: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive
    positive: bool = False  # must be > 0 (rates, periods)

    @property
    def type_word(self) -> str:
        return _TYPE_WORDS[parameter_type(self.default)]

    @property
    def default_text(self) -> str:
        """The default as it is written after -p NAME:= (true, 20.0, 'text', [a, b])."""
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, (list, tuple)):
            return "[" + ", ".join(str(v) for v in self.default) + "]"
        return repr(self.default)

    def check(self, value: Any, node: str) -> None:
        where = f"parameter '{self.name}' of node '{node}'"
        if self.choices and value not in self.choices:
            raise RosError(f"{where} is {value!r}: use one of {', '.join(self.choices)}")
        if self.minimum is not None and value < self.minimum:
            raise RosError(f"{where} is {value!r}: it must be at least {self.minimum:g}")
        if self.positive and not value > 0:
            raise RosError(f"{where} is {value!r}: it must be greater than 0")


@dataclass(frozen=True)
class TopicSpec:
    """A topic a node subscribes to or publishes (relative names resolve in the node's namespace, remappable)."""

    name: str
    type: str
    meaning: str


@dataclass(frozen=True)
class NodeInterface:
    """What a node executable takes and gives: printed by ``--help``, declared by ``declare``."""

    executable: str
    summary: str
    parameters: tuple[ParameterSpec, ...]
    subscribes: tuple[TopicSpec, ...] = ()
    publishes: tuple[TopicSpec, ...] = ()
    notes: str = ""

    def declare(self, node: Any) -> dict[str, Any]:
        """Declare every parameter on ``node`` (any backend) and check it; returns {name: value}.

        A value of the wrong type or out of range raises RosError (one line: the parameter, what it takes,
        what was given)."""
        values = {}
        for spec in self.parameters:
            if node.has_parameter(spec.name):  # rclpy declares use_sim_time itself
                value = node.get_parameter(spec.name).value
            else:
                try:
                    value = node.declare_parameter(spec.name, spec.default).value
                except Exception as error:
                    # rclpy's InvalidParameterTypeException, by name: robot_stack never imports rclpy.
                    if type(error).__name__ != "InvalidParameterTypeException":
                        raise
                    raise RosError(f"parameter '{spec.name}' takes a {spec.type_word} (default {spec.default!r}): "
                                   f"{error}") from None
            spec.check(value, node.get_fully_qualified_name())
            values[spec.name] = value
        return values

    def help_text(self) -> str:
        lines = [f"usage: {self.executable} [--ros-args -p NAME:=VALUE ... --params-file FILE -r FROM:=TO ...]",
                 "", self.summary, "", "parameters (name, type, default: meaning):"]
        width = max(len(spec.name) for spec in self.parameters) if self.parameters else 0
        for spec in self.parameters:
            extra = f" (one of: {', '.join(spec.choices)})" if spec.choices else ""
            lines.append(f"  {spec.name:<{width}}  {spec.type_word:<8} {spec.default_text}: {spec.meaning}{extra}")
        for title, topics in (("subscribes to (in)", self.subscribes), ("publishes (out)", self.publishes)):
            if topics:
                lines += ["", f"{title}:"]
                lines += [f"  {topic.name}  [{topic.type}]: {topic.meaning}" for topic in topics]
        if self.notes:
            lines += ["", self.notes]
        return "\n".join(lines)


def answer_help(interface: NodeInterface, args: list[str] | None = None) -> bool:
    """If the program's own arguments (outside --ros-args) ask for -h/--help, print the help and return True.

    Called before ros.init: the help starts no DDS participant and loads no simulator."""
    args = sys.argv[1:] if args is None else args
    own = args[:args.index("--ros-args")] if "--ros-args" in args else args
    if not {"-h", "--help"} & set(own):
        return False
    try:
        print(interface.help_text(), flush=True)
    except BrokenPipeError:  # `recorder --help | head`
        drop_further_writes(sys.stdout)
    return True
