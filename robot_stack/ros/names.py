"""ROS 2 name rules: validation, expansion of relative and private names, and remapping."""

from __future__ import annotations

import re

from robot_stack.errors import RosError

_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_node_name(name: str) -> str:
    if not isinstance(name, str) or not _TOKEN.match(name):
        raise RosError(f"invalid node name {name!r}: use letters, digits and '_', not starting with a digit")
    return name


def normalize_namespace(namespace: str | None) -> str:
    """'' or None -> '/'; 'ns' -> '/ns'; '/a/b/' -> '/a/b'."""
    if not namespace:
        return "/"
    namespace = "/" + namespace.strip("/")
    if namespace != "/":
        _validate_absolute(namespace, "namespace")
    return namespace


def _validate_absolute(name: str, what: str) -> None:
    tokens = name.split("/")[1:]
    if not tokens or any(not _TOKEN.match(t) for t in tokens):
        raise RosError(
            f"invalid {what} {name!r}: tokens separated by '/' must be letters, digits and '_', "
            "not starting with a digit, with no empty token"
        )


def expand_topic_name(name: str, node_name: str, namespace: str) -> str:
    """Fully qualified name: absolute kept, '~' -> node's private namespace, relative -> under namespace."""
    if not isinstance(name, str) or not name:
        raise RosError(f"invalid topic name {name!r}: it must be a non-empty string")
    if name.startswith("~"):
        base = namespace.rstrip("/") + "/" + node_name
        name = base + name[1:] if name == "~" or name.startswith("~/") else None
        if name is None:
            raise RosError("invalid topic name: '~' may only be followed by '/'")
    elif not name.startswith("/"):
        name = namespace.rstrip("/") + "/" + name
    if name.endswith("/") and name != "/":
        raise RosError(f"invalid topic name {name!r}: it must not end with '/'")
    _validate_absolute(name, "topic name")
    return name


def apply_remaps(fqn: str, remaps: list[tuple[str, str]], node_name: str, namespace: str) -> str:
    """The first matching remap rule (both sides expanded like topic names) replaces the name."""
    for source, target in remaps:
        if expand_topic_name(source, node_name, namespace) == fqn:
            return expand_topic_name(target, node_name, namespace)
    return fqn


def dds_topic_name(fqn: str) -> str:
    """ROS topic '/a/b' -> DDS topic 'rt/a/b' (the rmw_cyclonedds convention)."""
    return "rt" + fqn


def ros_topic_name(dds_name: str) -> str | None:
    """DDS topic 'rt/a/b' -> '/a/b'; None for non-ROS topics (services, discovery)."""
    return dds_name[2:] if dds_name.startswith("rt/") else None


def dds_type_name(type_name: str) -> str:
    """'sensor_msgs/msg/Image' -> 'sensor_msgs::msg::dds_::Image_'."""
    package, interface, name = type_name.split("/")
    return f"{package}::{interface}::dds_::{name}_"


def ros_type_name(dds_type: str) -> str:
    """'sensor_msgs::msg::dds_::Image_' -> 'sensor_msgs/msg/Image'."""
    parts = dds_type.split("::")
    if len(parts) == 4 and parts[2] == "dds_" and parts[3].endswith("_"):
        return f"{parts[0]}/{parts[1]}/{parts[3][:-1]}"
    return dds_type
