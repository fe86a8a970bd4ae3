"""The node API of the dds and inproc backends, shaped like rclpy's Node.

Publishers encode messages to CDR and hand bytes to the transport; the
transport wakes the executor when a subscription has data, and the executor
takes, decodes and calls back on the spinning thread, as rclpy does.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from robot_stack.errors import RosError
from robot_stack.ros import messages, names
from robot_stack.ros.arguments import load_params_file
from robot_stack.ros.clock import Clock
from robot_stack.ros.context import Context, default_context
from robot_stack.ros.log import Logger
from robot_stack.ros.parameters import Parameter, coerce
from robot_stack.ros.qos import QoSProfile, as_profile

_TAKE_BATCH = 64  # messages taken per subscription per executor pass, so timers are not starved


def _type_name(msg_type: Any) -> str:
    if isinstance(msg_type, str):
        return messages.message_class(msg_type).__msgtype__
    type_name = getattr(msg_type, "__msgtype__", None)
    if not type_name:
        raise RosError(
            f"{msg_type!r} is not a message class: use robot_stack.ros.message_class('pkg/msg/Type')"
        )
    return type_name


class Publisher:
    def __init__(self, node: "Node", type_name: str, topic: str, qos: QoSProfile) -> None:
        self.msg_type = messages.message_class(type_name)
        self.topic_name = topic
        self.qos_profile = qos
        self._node = node
        self._writer = node._transport.create_writer(
            topic, type_name, qos, on_incompatible=lambda policy: node._report_incompatible("publisher", topic, policy)
        )

    def publish(self, message: messages.Message) -> None:
        if type(message) is not self.msg_type:
            raise RosError(
                f"publisher on '{self.topic_name}' sends {self.msg_type.__msgtype__}, "
                f"got {getattr(message, '__msgtype__', type(message).__name__)}"
            )
        self._writer.write(messages.serialize_to_buffer(message))

    def get_subscription_count(self) -> int:
        return self._writer.matched_count()

    def destroy(self) -> None:
        self._writer.close()


class Subscription:
    def __init__(self, node: "Node", type_name: str, topic: str, callback: Callable, qos: QoSProfile) -> None:
        self.msg_type = messages.message_class(type_name)
        self.topic_name = topic
        self.qos_profile = qos
        self.callback = callback
        self._type_name = type_name
        self._node = node
        self._reader = node._transport.create_reader(
            topic, type_name, qos,
            on_data=lambda: node._mark_ready(self),
            on_incompatible=lambda policy: node._report_incompatible("subscription", topic, policy),
        )

    def _take_and_dispatch(self) -> bool:
        """Run the callback on waiting messages; True if more may be waiting."""
        samples = self._reader.take(_TAKE_BATCH)
        for data in samples:
            try:
                message = messages.deserialize(data, self._type_name)
            except RosError as error:
                self._node.get_logger().error(f"dropped a message on '{self.topic_name}': {error}", throttle_duration_sec=5.0)
                continue
            self.callback(message)
        return len(samples) == _TAKE_BATCH

    def get_publisher_count(self) -> int:
        return self._reader.matched_count()

    def destroy(self) -> None:
        self._reader.close()


class Timer:
    """Calls back every ``period`` seconds; a late call does not cause a burst of catch-up calls."""

    def __init__(self, period_s: float, callback: Callable) -> None:
        if not period_s > 0:
            raise RosError(f"timer period must be > 0 seconds, got {period_s!r}")
        self.timer_period_ns = int(period_s * 1e9)
        self.callback = callback
        self.next_call_ns = time.monotonic_ns() + self.timer_period_ns
        self.canceled = False

    def _advance(self, now_ns: int) -> None:
        self.next_call_ns += self.timer_period_ns
        if self.next_call_ns <= now_ns:
            behind = now_ns - self.next_call_ns
            self.next_call_ns = now_ns + self.timer_period_ns - behind % self.timer_period_ns

    def cancel(self) -> None:
        self.canceled = True

    def reset(self) -> None:
        self.canceled = False
        self.next_call_ns = time.monotonic_ns() + self.timer_period_ns

    def destroy(self) -> None:
        self.canceled = True


class Node:
    """A ROS 2 node on the dds or inproc backend (create with ``robot_stack.ros.create_node``)."""

    def __init__(self, node_name: str, *, namespace: str | None = None, backend: str = "dds",
                 context: Context | None = None, cli_args: list[str] | None = None) -> None:
        self.context = context or default_context
        if not self.context.initialized:
            raise RosError("call robot_stack.ros.init() before creating a node")
        arguments = self.context.arguments
        if cli_args:
            from robot_stack.ros.arguments import parse_arguments

            extra = parse_arguments(["--ros-args", *cli_args] if "--ros-args" not in cli_args else cli_args)
            arguments = _merge(arguments, extra)
        self._name = names.validate_node_name(arguments.node_name(node_name))
        self._namespace = names.normalize_namespace(arguments.namespace(namespace))
        self._remaps = arguments.topic_remaps(self._name)
        self._logger = Logger(self._name, arguments.log_level or "info")
        self._clock = Clock()
        self._backend = backend
        self._transport = self.context.transport(backend)
        self._overrides: dict[str, tuple[Any, str]] = {}
        for path in arguments.params_files:
            for key, value in load_params_file(path, self.get_fully_qualified_name()).items():
                self._overrides[key] = (value, f"params file '{path}'")
        for key, value in arguments.params.items():
            self._overrides[key] = (value, "the command line (-p)")
        self._parameters: dict[str, Parameter] = {}
        self.publishers: list[Publisher] = []
        self.subscriptions: list[Subscription] = []
        self.timers: list[Timer] = []
        self._ready: set[Subscription] = set()
        self._destroyed = False
        self.context.nodes.append(self)

    # -- identity, logging, time
    def get_name(self) -> str:
        return self._name

    def get_namespace(self) -> str:
        return self._namespace

    def get_fully_qualified_name(self) -> str:
        return self._namespace.rstrip("/") + "/" + self._name

    def get_logger(self) -> Logger:
        return self._logger

    def get_clock(self) -> Clock:
        return self._clock

    @property
    def backend(self) -> str:
        return self._backend

    def resolve_topic_name(self, topic: str) -> str:
        """The fully qualified name after namespace expansion and remapping."""
        fqn = names.expand_topic_name(topic, self._name, self._namespace)
        return names.apply_remaps(fqn, self._remaps, self._name, self._namespace)

    # -- parameters
    def declare_parameter(self, name: str, value: Any = None, descriptor: Any = None,
                          ignore_override: bool = False) -> Parameter:
        if name in self._parameters:
            raise RosError(f"parameter '{name}' of node '{self.get_fully_qualified_name()}' is already declared")
        if name in self._overrides and not ignore_override:
            override, source = self._overrides[name]
            value = coerce(name, self.get_fully_qualified_name(), value, override, source)
        parameter = Parameter(name, value)
        self._parameters[name] = parameter
        return parameter

    def declare_parameters(self, namespace: str, parameters: list[tuple]) -> list[Parameter]:
        prefix = f"{namespace}." if namespace else ""
        return [self.declare_parameter(prefix + entry[0], *entry[1:]) for entry in parameters]

    def has_parameter(self, name: str) -> bool:
        return name in self._parameters

    def get_parameter(self, name: str) -> Parameter:
        if name not in self._parameters:
            raise RosError(
                f"parameter '{name}' of node '{self.get_fully_qualified_name()}' is not declared "
                f"(declared: {', '.join(sorted(self._parameters)) or 'none'})"
            )
        return self._parameters[name]

    def get_parameter_or(self, name: str, alternative: Parameter | None = None) -> Parameter | None:
        return self._parameters.get(name, alternative)

    def get_parameters(self, names_: list[str]) -> list[Parameter]:
        return [self.get_parameter(n) for n in names_]

    def set_parameters(self, parameters: list[Parameter]) -> None:
        for parameter in parameters:
            declared = self.get_parameter(parameter.name)
            declared.value = coerce(parameter.name, self.get_fully_qualified_name(), declared.value,
                                    parameter.value, "set_parameters")

    # -- endpoints
    def create_publisher(self, msg_type: Any, topic: str, qos_profile: QoSProfile | int = 10) -> Publisher:
        publisher = Publisher(self, _type_name(msg_type), self.resolve_topic_name(topic), as_profile(qos_profile))
        self.publishers.append(publisher)
        return publisher

    def create_subscription(self, msg_type: Any, topic: str, callback: Callable,
                            qos_profile: QoSProfile | int = 10) -> Subscription:
        if not callable(callback):
            raise RosError(f"subscription callback for '{topic}' is not callable")
        subscription = Subscription(self, _type_name(msg_type), self.resolve_topic_name(topic), callback,
                                    as_profile(qos_profile))
        self.subscriptions.append(subscription)
        return subscription

    def create_timer(self, timer_period_sec: float, callback: Callable) -> Timer:
        timer = Timer(timer_period_sec, callback)
        self.timers.append(timer)
        with self.context.wakeup:
            self.context.wakeup.notify_all()  # the executor recomputes its next deadline
        return timer

    def destroy_publisher(self, publisher: Publisher) -> None:
        publisher.destroy()
        self.publishers.remove(publisher)

    def destroy_subscription(self, subscription: Subscription) -> None:
        subscription.destroy()
        self.subscriptions.remove(subscription)
        self._ready.discard(subscription)

    def destroy_timer(self, timer: Timer) -> None:
        timer.destroy()
        self.timers.remove(timer)

    def count_publishers(self, topic: str) -> int:
        return self._transport.count_endpoints(self.resolve_topic_name(topic), "publisher")

    def count_subscribers(self, topic: str) -> int:
        return self._transport.count_endpoints(self.resolve_topic_name(topic), "subscription")

    def get_topic_names_and_types(self) -> list[tuple[str, list[str]]]:
        return self._transport.topic_names_and_types()

    def destroy_node(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        for endpoint in [*self.publishers, *self.subscriptions, *self.timers]:
            endpoint.destroy()
        self.publishers.clear()
        self.subscriptions.clear()
        self.timers.clear()
        if self in self.context.nodes:
            self.context.nodes.remove(self)

    # -- executor hooks
    def _mark_ready(self, subscription: Subscription) -> None:
        with self.context.wakeup:
            self._ready.add(subscription)
            self.context.wakeup.notify_all()

    def _report_incompatible(self, side: str, topic: str, policy: str) -> None:
        # The same words as rclpy's default QoS event handlers.
        if side == "subscription":
            text = (f"New publisher discovered on topic '{topic}', offering incompatible QoS. "
                    f"No messages will be received from it. Last incompatible policy: {policy}")
        else:
            text = (f"New subscription discovered on topic '{topic}', requesting incompatible QoS. "
                    f"No messages will be sent to it. Last incompatible policy: {policy}")
        self._logger.warning(text)


def _merge(base, extra):
    from robot_stack.ros.arguments import RosArguments

    return RosArguments(
        params={**base.params, **extra.params},
        params_files=[*base.params_files, *extra.params_files],
        remaps=[*extra.remaps, *base.remaps],
        log_level=extra.log_level or base.log_level,
        remaining=base.remaining,
    )


def spin_once(nodes: list[Node], timeout_sec: float | None = None) -> None:
    """Run every callback that is due (data waiting, timers expired), waiting up to ``timeout_sec`` for one."""
    context = nodes[0].context if nodes else default_context
    deadline = None if timeout_sec is None else time.monotonic_ns() + int(timeout_sec * 1e9)
    with context.wakeup:
        while True:
            if context.shutdown_requested or any(node._ready for node in nodes):
                break
            now = time.monotonic_ns()
            next_timer = min((t.next_call_ns for n in nodes for t in n.timers if not t.canceled), default=None)
            wake = min((d for d in (deadline, next_timer) if d is not None), default=None)
            if wake is not None and wake <= now:
                break
            context.wakeup.wait(None if wake is None else (wake - now) / 1e9)
        ready = [(node, node._ready) for node in nodes if node._ready]
        for node, _ in ready:
            node._ready = set()
    if context.shutdown_requested:
        return
    for node, subscriptions in ready:
        for subscription in subscriptions:
            if subscription in node.subscriptions and subscription._take_and_dispatch():
                node._mark_ready(subscription)
    now = time.monotonic_ns()
    for node in nodes:
        for timer in list(node.timers):
            if not timer.canceled and timer.next_call_ns <= now:
                timer._advance(now)
                timer.callback()
