"""Process-wide state of the node layer: arguments, backend choice, shutdown, and the executor's wake-up."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from robot_stack.errors import RosError
from robot_stack.ros.arguments import RosArguments, parse_arguments

BACKENDS = ("rclpy", "dds", "inproc")


def choose_backend() -> str:
    """``ROBOT_STACK_ROS_BACKEND`` if set, else rclpy when it imports, else dds."""
    requested = os.environ.get("ROBOT_STACK_ROS_BACKEND", "").strip().lower()
    if requested:
        if requested not in BACKENDS:
            raise RosError(f"ROBOT_STACK_ROS_BACKEND={requested!r}: use one of {', '.join(BACKENDS)}")
        return requested
    try:
        import rclpy  # noqa: F401  (probe only: is real ROS 2 here?)
    except ImportError:
        return "dds"
    return "rclpy"


class Context:
    """One per process, like rclpy's default context."""

    def __init__(self) -> None:
        self.arguments = RosArguments()
        self.initialized = False
        self.shutdown_requested = False
        # Subscriptions with data and shutdown requests wake the executor through this condition.
        self.wakeup = threading.Condition(threading.RLock())
        self._transports: dict[str, Any] = {}
        self._previous_handlers: dict[int, Any] = {}
        self.nodes: list[Any] = []

    def init(self, args: list[str] | None = None, *, install_signal_handlers: bool = True) -> None:
        self.arguments = parse_arguments(list(sys.argv[1:] if args is None else args))
        self.initialized = True
        self.shutdown_requested = False
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame) -> None:
        # A second signal gets the default behaviour, so a hung callback can still be interrupted.
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)
        self.request_shutdown()

    def request_shutdown(self) -> None:
        with self.wakeup:
            self.shutdown_requested = True
            self.wakeup.notify_all()

    def ok(self) -> bool:
        return self.initialized and not self.shutdown_requested

    def transport(self, backend: str):
        """The shared transport of a backend (one DDS participant per process, as rclpy has)."""
        if backend not in self._transports:
            if backend == "dds":
                from robot_stack.ros.dds import DdsTransport

                self._transports[backend] = DdsTransport()
            elif backend == "inproc":
                from robot_stack.ros.inproc import InprocTransport

                self._transports[backend] = InprocTransport()
            else:
                raise RosError(f"backend {backend!r} has no robot_stack transport")
        return self._transports[backend]

    def shutdown(self) -> None:
        self.request_shutdown()
        for node in list(self.nodes):
            node.destroy_node()
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
        for signum, handler in self._previous_handlers.items():
            if threading.current_thread() is threading.main_thread():
                signal.signal(signum, handler)
        self._previous_handlers.clear()
        self.initialized = False


default_context = Context()
