"""Node parameters: typed values with ROS 2's type names, declared once, overridable from files and -p."""

from __future__ import annotations

import enum
from typing import Any

from robot_stack.errors import RosError


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
