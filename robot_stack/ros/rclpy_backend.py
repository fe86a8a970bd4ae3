"""The rclpy backend: real ROS 2 on robots and ROS 2 workstations.

A thin adapter: robot_stack's QoS profiles and type names become rclpy's; everything
else is rclpy itself. It is imported only when rclpy is present.
"""

from __future__ import annotations

from typing import Any

import rclpy
from rclpy.node import Node as _RclpyNode
from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy
from rclpy.qos import QoSProfile as _RclpyQoS

from robot_stack.errors import RosError
from robot_stack.ros.qos import Durability, History, QoSProfile, Reliability, as_profile


def init(args: list[str] | None) -> None:
    if not rclpy.ok():
        rclpy.init(args=args)


def ok() -> bool:
    return rclpy.ok()


def shutdown() -> None:
    if rclpy.ok():
        rclpy.shutdown()


def spin(node: Any) -> None:
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass


def spin_once(node: Any, timeout_sec: float | None) -> None:
    rclpy.spin_once(node, timeout_sec=timeout_sec)


def message_class(type_name: str) -> type:
    from rosidl_runtime_py.utilities import get_message

    from robot_stack.ros.messages import normalize_type_name

    try:
        return get_message(normalize_type_name(type_name))
    except (AttributeError, ModuleNotFoundError, ValueError):
        raise RosError(f"unknown message type '{type_name}': is its package installed and sourced?") from None


def to_rclpy_qos(qos: QoSProfile | int | str) -> _RclpyQoS:
    qos = as_profile(qos)
    return _RclpyQoS(
        depth=qos.depth,
        reliability=ReliabilityPolicy.RELIABLE if qos.reliability is Reliability.RELIABLE else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if qos.durability is Durability.TRANSIENT_LOCAL else DurabilityPolicy.VOLATILE,
        history=HistoryPolicy.KEEP_LAST if qos.history is History.KEEP_LAST else HistoryPolicy.KEEP_ALL,
    )


def _resolve_type(msg_type: Any) -> type:
    return message_class(msg_type) if isinstance(msg_type, str) else msg_type


class RclpyNode(_RclpyNode):
    """rclpy's Node accepting robot_stack QoS profiles and type names."""

    def __init__(self, name: str, namespace: str | None = None, cli_args: list[str] | None = None) -> None:
        super().__init__(name, namespace=namespace or "", cli_args=cli_args)

    def create_publisher(self, msg_type, topic, qos_profile=10, **kwargs):
        return super().create_publisher(_resolve_type(msg_type), topic, to_rclpy_qos(qos_profile), **kwargs)

    def create_subscription(self, msg_type, topic, callback, qos_profile=10, **kwargs):
        return super().create_subscription(_resolve_type(msg_type), topic, callback, to_rclpy_qos(qos_profile), **kwargs)
