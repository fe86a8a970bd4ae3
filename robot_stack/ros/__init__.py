"""The ROS 2 interface layer: one rclpy-shaped node API over three backends (rclpy, dds, inproc).

Node programs call ``init``, ``create_node``, ``message_class``, ``spin`` and ``shutdown`` from here
and never learn which backend runs them (ARCHITECTURE.md, "The ROS 2 interface layer").
"""

from __future__ import annotations

from typing import Any

from robot_stack.ros import qos
from robot_stack.ros.context import choose_backend, default_context
from robot_stack.ros.qos import QoSProfile

__all__ = [
    "QoSProfile", "backend", "create_node", "init", "message_class", "ok", "qos", "remaining_args",
    "request_shutdown", "shutdown", "spin", "spin_once",
]

_backend: str | None = None


def backend() -> str:
    """The backend in use: set by ``ROBOT_STACK_ROS_BACKEND``, else rclpy if it imports, else dds."""
    global _backend
    if _backend is None:
        _backend = choose_backend()
    return _backend


def init(args: list[str] | None = None) -> None:
    """Start the node layer; ``args`` default to ``sys.argv[1:]`` and may hold ``--ros-args ...``."""
    global _backend
    _backend = choose_backend()
    if _backend == "rclpy":
        from robot_stack.ros import rclpy_backend

        rclpy_backend.init(args)
    default_context.init(args)


def remaining_args() -> list[str]:
    """The program's own arguments: the command line without its ``--ros-args`` sections."""
    return list(default_context.arguments.remaining)


def create_node(name: str, namespace: str | None = None, cli_args: list[str] | None = None) -> Any:
    """A node named ``name`` (``-r __node:=`` / ``__ns:=`` on the command line override name and namespace)."""
    if backend() == "rclpy":
        from robot_stack.ros import rclpy_backend

        return rclpy_backend.RclpyNode(name, namespace=namespace, cli_args=cli_args)
    from robot_stack.ros.node import Node

    return Node(name, namespace=namespace, backend=backend(), cli_args=cli_args)


def message_class(type_name: str) -> type:
    """The message class of a ROS 2 type name ('sensor_msgs/msg/JointState') for this backend."""
    if backend() == "rclpy":
        from robot_stack.ros import rclpy_backend

        return rclpy_backend.message_class(type_name)
    from robot_stack.ros.messages import message_class as generated

    return generated(type_name)


def ok() -> bool:
    if backend() == "rclpy":
        from robot_stack.ros import rclpy_backend

        return rclpy_backend.ok()
    return default_context.ok()


def spin_once(node: Any, timeout_sec: float | None = None) -> None:
    if backend() == "rclpy":
        from robot_stack.ros import rclpy_backend

        return rclpy_backend.spin_once(node, timeout_sec)
    from robot_stack.ros.node import spin_once as spin_nodes

    spin_nodes([node], timeout_sec)


def spin(node: Any) -> None:
    """Run callbacks until shutdown (SIGINT, SIGTERM or ``shutdown()``); returns instead of raising."""
    if backend() == "rclpy":
        from robot_stack.ros import rclpy_backend

        return rclpy_backend.spin(node)
    from robot_stack.ros.node import spin_once as spin_nodes

    while default_context.ok():
        spin_nodes([node], None)


def request_shutdown() -> None:
    """Make ``spin`` return soon, from a callback or another thread (a node that has finished its job)."""
    if backend() == "rclpy":
        from robot_stack.ros import rclpy_backend

        return rclpy_backend.shutdown()
    default_context.request_shutdown()


def shutdown() -> None:
    if backend() == "rclpy":
        from robot_stack.ros import rclpy_backend

        rclpy_backend.shutdown()
    if default_context.initialized:
        default_context.shutdown()
