"""``robot-stack topic``: list, info, echo, pub, hz and types of ROS 2 topics, like ``ros2 topic``.

For machines without ROS 2: it speaks DDS directly through the dds backend of
``robot_stack.ros`` (the same wire protocol as rmw_cyclonedds_cpp), so it sees
robot_stack nodes and ROS 2 nodes alike. The graph (which topics, types and
QoS exist) comes from DDS discovery, which needs a moment after start-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import yaml

from robot_stack import ros
from robot_stack.cli import arguments
from robot_stack.errors import RosError
from robot_stack.ros import messages
from robot_stack.ros.context import default_context
from robot_stack.ros.qos import Durability, QoSProfile, Reliability

DISCOVERY_WAIT_S = 1.0  # loopback discovery takes ~0.2 s; ros2 topic list without a daemon waits about as long
TYPE_WAIT_S = 5.0  # how long echo/hz wait for a publisher to learn a topic's type
NOTICE_S = 5.0  # a typed echo that got nothing says after this long what it is waiting for
SETTLE_S = 0.2  # after the first publisher appears, the others of the graph usually arrive within this
TRUNCATE_LENGTH = 128  # ros2 topic echo's default: longer arrays and strings are cut, with '...'
POLL_S = 0.02
MATCH_SETTLE_S = 0.1  # discovery is two-way: the subscriber matches our writer a little after we match it

DESCRIPTION = """\
Inspect and use ROS 2 topics over DDS without a ROS 2 installation (the counterpart of `ros2 topic`).
It sees robot_stack nodes and ROS 2 nodes on rmw_cyclonedds_cpp in the same ROS_DOMAIN_ID.
Discovery follows ROS_AUTOMATIC_DISCOVERY_RANGE (LOCALHOST unless set otherwise)."""

EPILOG = """\
examples:
  robot-stack topic list -t
  robot-stack topic echo /joint_states --once
  robot-stack topic echo /joint_states --field position --count 3
  robot-stack topic pub --once /robot/command std_msgs/msg/Float64MultiArray "{data: [0.1, 0, 0, 0, 0, 0, 1]}"
  robot-stack topic hz /joint_states
  robot-stack topic types | grep sensor_msgs

Bad input (unknown type or field, bad YAML, a value of the wrong type) is a one-line error, exit status 2."""

QOS_RELIABILITY = {"reliable": Reliability.RELIABLE, "best_effort": Reliability.BEST_EFFORT}
QOS_DURABILITY = {"volatile": Durability.VOLATILE, "transient_local": Durability.TRANSIENT_LOCAL}


def register(subparsers: argparse._SubParsersAction) -> None:
    topic = subparsers.add_parser(
        "topic", help="list, echo, publish and measure ROS 2 topics (like `ros2 topic`)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = topic.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, help_: str, description: str, examples: str) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=help_, description=description, epilog="examples:\n" + examples,
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    p = verb("list", "topics that have a publisher or a subscription",
             "Print the topics discovered in the domain, one a line, sorted.",
             "  robot-stack topic list\n  robot-stack topic list -t          with their types\n"
             "  robot-stack topic list -v --wait 3 wait longer on a slow network, show endpoint counts")
    p.add_argument("-t", "--show-types", action="store_true", help="append each topic's type in brackets")
    p.add_argument("-c", "--count-topics", action="store_true", help="print only the number of topics")
    p.add_argument("-v", "--verbose", action="store_true", help="published and subscribed topics, with counts")
    _add_wait(p)
    p.set_defaults(func=list_topics)

    p = verb("info", "a topic's type and its publishers and subscriptions",
             "Print a topic's type and how many publishers and subscriptions it has (-v: with their QoS).",
             "  robot-stack topic info /joint_states\n  robot-stack topic info /joint_states -v")
    p.add_argument("topic", metavar="TOPIC", help="topic name, e.g. /joint_states")
    p.add_argument("-v", "--verbose", action="store_true", help="list every endpoint with its QoS")
    _add_wait(p)
    p.set_defaults(func=info)

    p = verb("echo", "print the messages of a topic as YAML",
             "Print each message as a YAML document followed by '---' (as ros2 topic echo does). The type is "
             "taken from the topic's publishers unless given. QoS adapts to the publishers: best effort "
             "unless all of them are reliable, transient local (so latched messages print) when all of "
             "them are; so echo waits for a publisher before it subscribes (until --timeout or Ctrl-C) "
             "unless --qos-reliability and --qos-durability are both given. With TYPE, echo that has received "
             "nothing after 5 s says on stderr what it waits for (no publisher in the domain, a publisher of "
             "another type, or no message yet) and keeps waiting. Arrays and strings longer than 128 are cut "
             "unless --full.",
             "  robot-stack topic echo /joint_states\n"
             "  robot-stack topic echo /joint_states --once\n"
             "  robot-stack topic echo /joint_states sensor_msgs/msg/JointState --count 10 --field position\n"
             "  robot-stack topic echo /camera/front/image_raw --no-arr --timeout 5")
    p.add_argument("topic", metavar="TOPIC", help="topic name, e.g. /joint_states")
    p.add_argument("type", metavar="TYPE", nargs="?", help="message type, e.g. sensor_msgs/msg/JointState "
                   "(default: the type its publishers use)")
    count = p.add_mutually_exclusive_group()
    count.add_argument("--once", action="store_true", help="print one message and exit")
    count.add_argument("--count", type=_positive_int, metavar="N", help="print N messages and exit")
    p.add_argument("--field", metavar="A.B", help="print only this field of each message, e.g. header.stamp")
    p.add_argument("--no-arr", action="store_true", help="show numeric arrays as their type and length only")
    p.add_argument("--no-str", action="store_true", help="show strings as their length only")
    p.add_argument("-f", "--full", "--full-length", dest="full", action="store_true",
                   help="print arrays and strings whole (default: cut after 128 elements)")
    p.add_argument("-l", "--truncate-length", type=_positive_int, default=TRUNCATE_LENGTH, metavar="N",
                   help="cut arrays and strings after N elements (default: %(default)s)")
    p.add_argument("--flow-style", action="store_true", help="print arrays on one line, [a, b, c]")
    p.add_argument("--timeout", type=_positive_float, metavar="S",
                   help="give up (exit 2) when no publisher appears within S seconds and TYPE is not given "
                        f"(default {TYPE_WAIT_S:g} s), or when --once/--count did not get its messages "
                        "within S seconds (default: wait until Ctrl-C)")
    _add_qos(p, defaults_text="adapted to the publishers")
    p.set_defaults(func=echo)

    p = verb("pub", "publish a message built from YAML",
             "Publish a message built from a YAML mapping of field: value (missing fields keep their defaults) "
             "at --rate until Ctrl-C, or --once / --times N. With --once or --times it first waits for a "
             "matching subscription (--wait-matching-subscriptions, at most --max-wait-time-secs), as "
             "ros2 topic pub does. 'now' as a builtin_interfaces/Time value and 'auto' as a "
             "std_msgs/Header value are filled with the time of each publish.",
             "  robot-stack topic pub /chatter std_msgs/msg/String \"{data: hello}\" --rate 2\n"
             "  robot-stack topic pub --once /robot/command std_msgs/msg/Float64MultiArray "
             "\"{data: [0.1, 0, 0, 0, 0, 0, 1]}\"\n"
             "  robot-stack topic pub --times 3 /estop std_msgs/msg/Bool \"{data: true}\" "
             "--qos-durability transient_local\n"
             "  robot-stack topic pub /joint_states sensor_msgs/msg/JointState "
             "\"{header: auto, position: [0, 0.5, 0, 0, 0, 0, 0]}\" -r 50")
    p.add_argument("topic", metavar="TOPIC", help="topic name, e.g. /robot/command")
    p.add_argument("type", metavar="TYPE", help="message type, e.g. std_msgs/msg/Float64MultiArray")
    p.add_argument("values", metavar="YAML", nargs="?", default="",
                   help="the message as a YAML mapping, e.g. \"{data: 1.5}\" (default: every field at its default)")
    p.add_argument("-r", "--rate", type=_positive_float, default=1.0, metavar="HZ",
                   help="messages a second (default: %(default)s)")
    count = p.add_mutually_exclusive_group()
    count.add_argument("-1", "--once", action="store_true", help="publish one message and exit")
    count.add_argument("-t", "--times", type=_positive_int, metavar="N", help="publish N messages and exit")
    p.add_argument("-w", "--wait-matching-subscriptions", type=_non_negative_int, metavar="N",
                   help="wait for N matching subscriptions before the first message "
                        "(default: 1 with --once/--times, else 0)")
    p.add_argument("--max-wait-time-secs", type=_positive_float, default=5.0, metavar="S",
                   help="stop waiting for subscriptions after S seconds and publish anyway, with a warning "
                        "(default: %(default)s)")
    p.add_argument("--keep-alive", type=_non_negative_float, default=0.1, metavar="S",
                   help="after the last message stay S seconds, so a late or lossy subscriber still gets it "
                        "(default: %(default)s)")
    p.add_argument("-p", "--print", dest="print_nth", type=_non_negative_int, default=1, metavar="N",
                   help="print every N-th published message, 0 for none (default: %(default)s)")
    _add_qos(p, defaults_text="reliable, volatile, depth 10")
    p.set_defaults(func=pub)

    p = verb("hz", "the rate a topic is published at",
             "Print the average rate and the min, max and standard deviation of the period between "
             "received messages, once a second (as ros2 topic hz does). Subscribes best effort, which "
             "matches reliable and best-effort publishers alike.",
             "  robot-stack topic hz /joint_states\n  robot-stack topic hz /joint_states --window 100 --duration 5")
    p.add_argument("topic", metavar="TOPIC", help="topic name, e.g. /joint_states")
    p.add_argument("type", metavar="TYPE", nargs="?", help="message type (default: the type its publishers use)")
    p.add_argument("-w", "--window", type=_positive_int, default=10000, metavar="N",
                   help="compute over the last N messages (default: %(default)s)")
    p.add_argument("--duration", type=_positive_float, metavar="S", help="exit after S seconds (default: Ctrl-C)")
    p.add_argument("--timeout", type=_positive_float, default=TYPE_WAIT_S, metavar="S",
                   help="give up (exit 2) when no publisher appears in S seconds and TYPE is not given "
                        "(default: %(default)s)")
    p.set_defaults(func=hz)

    p = verb("types", "every message type this installation knows",
             "Print every message type (ROS 2 Jazzy definitions) that echo and pub can use, one a line.",
             "  robot-stack topic types\n  robot-stack topic types | grep geometry_msgs")
    p.set_defaults(func=types)


# ----------------------------------------------------------------------------- argument helpers


_positive_int = arguments.positive_int
_non_negative_int = arguments.non_negative_int
_positive_float = arguments.positive_float
_non_negative_float = arguments.non_negative_float


def _add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", type=_non_negative_float, default=DISCOVERY_WAIT_S, metavar="S",
                        help="seconds to let discovery find the graph (default: %(default)s)")


def _add_qos(parser: argparse.ArgumentParser, defaults_text: str) -> None:
    group = parser.add_argument_group("QoS", f"default: {defaults_text}")
    group.add_argument("--qos-profile", choices=sorted(ros.qos.PROFILES),
                       help="start from this profile (the other --qos-* options override parts of it)")
    group.add_argument("--qos-reliability", choices=sorted(QOS_RELIABILITY))
    group.add_argument("--qos-durability", choices=sorted(QOS_DURABILITY))
    group.add_argument("--qos-depth", type=_positive_int, metavar="N", help="history depth (messages kept)")


def _qos_overrides(args: argparse.Namespace, base: QoSProfile) -> QoSProfile:
    from dataclasses import replace

    profile = ros.qos.PROFILES[args.qos_profile] if args.qos_profile else base
    if args.qos_reliability:
        profile = replace(profile, reliability=QOS_RELIABILITY[args.qos_reliability])
    if args.qos_durability:
        profile = replace(profile, durability=QOS_DURABILITY[args.qos_durability])
    if args.qos_depth:
        profile = profile.with_depth(args.qos_depth)
    return profile


# ----------------------------------------------------------------------------- session and graph


@contextmanager
def _session() -> Iterator[Any]:
    """A node on the dds backend; Ctrl-C makes ``ros.ok()`` false instead of raising."""
    requested = os.environ.get("ROBOT_STACK_ROS_BACKEND", "").strip().lower()
    if requested and requested != "dds":
        raise RosError(f"robot-stack topic speaks DDS directly and cannot use ROBOT_STACK_ROS_BACKEND={requested}; "
                       "unset it (on a ROS 2 machine `ros2 topic` does the same job)")
    # Even where rclpy imports, this tool talks DDS itself: it reads the DDS discovery topics.
    os.environ["ROBOT_STACK_ROS_BACKEND"] = "dds"
    try:
        ros.init([])  # our own argv, not sys.argv: the CLI's options are not --ros-args
        try:
            yield ros.create_node(f"_robot_stack_topic_{os.getpid()}")
        finally:
            ros.shutdown()
    finally:
        if requested:
            os.environ["ROBOT_STACK_ROS_BACKEND"] = requested
        else:
            del os.environ["ROBOT_STACK_ROS_BACKEND"]


def _endpoints() -> list[dict[str, Any]]:
    return default_context.transport("dds").endpoints()


def _sleep(seconds: float) -> None:
    """Sleep, returning early on Ctrl-C (which only sets a flag once ``ros.init`` ran)."""
    end = time.monotonic() + seconds
    while ros.ok() and (left := end - time.monotonic()) > 0:
        time.sleep(min(POLL_S, left))


def _offered(qos) -> QoSProfile:
    """A discovered endpoint's cyclonedds Qos as a QoSProfile (reliability, durability, depth)."""
    from cyclonedds.core import Policy

    reliability = Reliability.RELIABLE
    if Policy.Reliability in qos and qos[Policy.Reliability] == Policy.Reliability.BestEffort:
        reliability = Reliability.BEST_EFFORT
    durability = Durability.VOLATILE
    if Policy.Durability in qos and qos[Policy.Durability] == Policy.Durability.TransientLocal:
        durability = Durability.TRANSIENT_LOCAL
    depth = getattr(qos[Policy.History], "depth", 0) if Policy.History in qos else 0
    return QoSProfile(depth=depth or 1, reliability=reliability, durability=durability)


def _publishers(topic: str, wait_s: float | None, waiting_for: str | None = None) -> list[dict[str, Any]]:
    """The publishers on ``topic``, waiting up to ``wait_s`` (None: until Ctrl-C) for the first, a moment for the rest.

    waiting_for: the message type the caller waits for; after NOTICE_S without a publisher, say so once.
    """
    now = time.monotonic()
    deadline = None if wait_s is None else now + wait_s
    notice_at = now + NOTICE_S if waiting_for and (deadline is None or deadline > now + NOTICE_S) else None
    while True:
        found = [e for e in _endpoints() if e["kind"] == "publisher" and e["topic"] == topic]
        if found or not ros.ok() or (deadline is not None and time.monotonic() >= deadline):
            break
        if notice_at is not None and time.monotonic() >= notice_at:
            _warn(_waiting_notice(topic, waiting_for, NOTICE_S))
            notice_at = None
        time.sleep(POLL_S)
    if found:
        _sleep(SETTLE_S if deadline is None else min(SETTLE_S, max(0.0, deadline - time.monotonic())))
        found = [e for e in _endpoints() if e["kind"] == "publisher" and e["topic"] == topic]
    return found


def _waiting_notice(topic: str, type_name: str, waited_s: float) -> str:
    """What a typed echo is still waiting for on ``topic``: a publisher at all, one of ``type_name``, or a message."""
    publishers = [e for e in _endpoints() if e["kind"] == "publisher" and e["topic"] == topic]
    published = sorted({e["type"] for e in publishers})
    if not publishers:
        domain = os.environ.get("ROS_DOMAIN_ID", "").strip() or "0"
        return (f"no publisher on '{topic}' in ROS_DOMAIN_ID {domain} after {waited_s:g} s (topics: "
                f"{_existing_topics()}); waiting for one that publishes {type_name} (Ctrl-C to stop)")
    if type_name not in published:
        return (f"'{topic}' is published as {', '.join(published)}, not {type_name}; waiting for a {type_name} "
                "publisher (Ctrl-C to stop; give that type or leave TYPE out to echo what is published)")
    return (f"{len(publishers)} publisher(s) of {type_name} on '{topic}' but no message in {waited_s:g} s; "
            "still waiting (Ctrl-C to stop; is the publisher sending, and does its QoS match? see topic info -v)")


def _existing_topics() -> str:
    topics = sorted({e["topic"] for e in _endpoints()})
    return ", ".join(topics) if topics else "none"


def _topic_type(topic: str, given: str | None, publishers: list[dict[str, Any]], waited_s: float) -> str:
    """The message type to subscribe with: the given one, else the one the publishers use."""
    published = sorted({e["type"] for e in publishers})
    if given:
        type_name = messages.message_class(given).__msgtype__
        if published and type_name not in published:
            raise RosError(f"'{topic}' is published as {', '.join(published)}, not {type_name}: "
                           "give that type or leave TYPE out")
        return type_name
    if not published:
        raise RosError(f"no publisher on '{topic}' after {waited_s:g} s, so its type is unknown "
                       f"(topics: {_existing_topics()}); give TYPE or start the publisher")
    if len(published) > 1:
        raise RosError(f"'{topic}' is published with several types ({', '.join(published)}): give TYPE")
    messages.message_class(published[0])  # a ROS 2 type outside the Jazzy definitions: say so clearly
    return published[0]


# ----------------------------------------------------------------------------- list, info, types


def list_topics(args: argparse.Namespace) -> int:
    with _session():
        _sleep(args.wait)
        endpoints = _endpoints()
    topics: dict[str, set[str]] = {}
    for endpoint in endpoints:
        topics.setdefault(endpoint["topic"], set()).add(endpoint["type"])
    if args.count_topics:
        print(len(topics))
        return 0
    if args.verbose:
        for title, kind in (("Published topics:", "publisher"), ("Subscribed topics:", "subscription")):
            print(title)
            for topic in sorted(topics):
                same = [e for e in endpoints if e["topic"] == topic and e["kind"] == kind]
                if same:
                    noun = kind if len(same) == 1 else kind + "s"
                    types_ = ", ".join(sorted({e["type"] for e in same}))
                    print(f" * {topic} [{types_}] {len(same)} {noun}")
            print()
        return 0
    for topic in sorted(topics):
        print(f"{topic} [{', '.join(sorted(topics[topic]))}]" if args.show_types else topic)
    return 0


def info(args: argparse.Namespace) -> int:
    with _session() as node:
        topic = node.resolve_topic_name(args.topic)
        _sleep(args.wait)
        everything = _endpoints()
    endpoints = [e for e in everything if e["topic"] == topic]
    if not endpoints:
        topics = ", ".join(sorted({e["topic"] for e in everything})) or "none"
        raise RosError(f"no publisher or subscription on '{topic}' after {args.wait:g} s of discovery "
                       f"(topics: {topics})")
    print(f"Type: {', '.join(sorted({e['type'] for e in endpoints}))}")
    for kind, title in (("publisher", "Publisher count"), ("subscription", "Subscription count")):
        same = [e for e in endpoints if e["kind"] == kind]
        print(f"{title}: {len(same)}")
        if args.verbose:
            for endpoint in same:
                qos = _offered(endpoint["qos"])
                print(f"  {kind} of participant {endpoint['participant']}: {endpoint['type']}, "
                      f"{qos.reliability.value}, {qos.durability.value}, depth {qos.depth}")
    return 0


def types(_args: argparse.Namespace) -> int:
    print("\n".join(messages.known_types()))
    return 0


# ----------------------------------------------------------------------------- echo


def echo(args: argparse.Namespace) -> int:
    wanted = 1 if args.once else args.count
    with _session() as node:
        topic = node.resolve_topic_name(args.topic)
        if args.type:
            _field_path(args.type, args.field)  # an unknown type or field fails before any waiting
        start = time.monotonic()
        if args.timeout is not None:
            wait_s = args.timeout
        elif args.type:
            # The QoS to request depends on the publishers: wait for one (Ctrl-C ends) unless both are given.
            wait_s = DISCOVERY_WAIT_S if args.qos_reliability and args.qos_durability else None
        else:
            wait_s = TYPE_WAIT_S
        publishers = _publishers(topic, wait_s, waiting_for=args.type and messages.message_class(args.type).__msgtype__)
        if not ros.ok():
            return 0
        type_name = _topic_type(topic, args.type, publishers, wait_s)
        field_path, field_type = _field_path(type_name, args.field)
        profile = _qos_overrides(args, _echo_profile(publishers))
        if profile.reliability is Reliability.RELIABLE and any(
                _offered(e["qos"]).reliability is Reliability.BEST_EFFORT for e in publishers):
            _warn(f"a publisher on '{topic}' is best effort and will not be heard by a reliable subscription")
        render = _Renderer(None if args.full else args.truncate_length, args.no_arr, args.no_str, args.flow_style)
        printed = 0

        def on_message(message) -> None:
            nonlocal printed
            if wanted is not None and printed >= wanted:
                return  # the rest of a batch taken together with the last wanted message
            value = message
            for name in field_path:
                value = getattr(value, name)
            sys.stdout.write(render.document(value, field_type) + "---\n")
            sys.stdout.flush()
            printed += 1
            if wanted is not None and printed >= wanted:
                ros.request_shutdown()

        node.create_subscription(type_name, topic, on_message, profile)
        deadline = start + args.timeout if args.timeout is not None and wanted is not None else None
        notice_at = time.monotonic() + NOTICE_S if args.type else None  # untyped: its publisher is known
        # `echo ... | head` closing the pipe ends echo through BrokenPipeError, handled at the entry point.
        while ros.ok():
            now = time.monotonic()
            left = None if deadline is None else deadline - now
            if left is not None and left <= 0:
                raise RosError(f"{printed} of {wanted} message(s) on '{topic}' within {args.timeout:g} s "
                               f"({len(publishers)} publisher(s) known)")
            if notice_at is not None and printed == 0 and now >= notice_at:
                _warn(_waiting_notice(topic, type_name, NOTICE_S))
                notice_at = None
            wake = None if notice_at is None or printed else max(0.0, notice_at - now)
            ros.spin_once(node, timeout_sec=left if wake is None else wake if left is None else min(left, wake))
    return 0


def _echo_profile(publishers: list[dict[str, Any]]) -> QoSProfile:
    """What ros2 topic echo requests: the strongest QoS that every publisher offers."""
    if not publishers:
        # Best effort, volatile matches any publisher that may come later (latched values are missed).
        return QoSProfile(depth=10, reliability=Reliability.BEST_EFFORT)
    offered = [_offered(e["qos"]) for e in publishers]
    reliable = all(q.reliability is Reliability.RELIABLE for q in offered)
    latched = all(q.durability is Durability.TRANSIENT_LOCAL for q in offered)
    return QoSProfile(
        depth=max(10, *(q.depth for q in offered)) if latched else 10,
        reliability=Reliability.RELIABLE if reliable else Reliability.BEST_EFFORT,
        durability=Durability.TRANSIENT_LOCAL if latched else Durability.VOLATILE,
    )


def _field_path(type_name: str, field: str | None) -> tuple[list[str], str]:
    """``a.b`` checked against the type, so a typo fails before anything is received; returns the
    attribute names and the ROS type of the selected value."""
    current = messages.message_class(type_name).__msgtype__
    if not field:
        return [], current
    path = [name for name in field.split(".") if name]
    for depth, name in enumerate(path):
        if not _is_message_type(current):
            raise RosError(f"--field {field}: '{'.'.join(path[:depth])}' is not a message, it has no field '{name}'")
        field_types = messages.message_class(current).get_fields_and_field_types()
        if name not in field_types:
            raise RosError(f"--field {field}: {current} has no field '{name}'; "
                           f"its fields are: {', '.join(field_types)}")
        current = field_types[name]
    return path, current


class _Renderer:
    """Message -> YAML text as ros2 topic echo prints it (long arrays cut, optionally abbreviated)."""

    def __init__(self, truncate: int | None, no_arr: bool, no_str: bool, flow_style: bool) -> None:
        self.truncate = truncate
        self.no_arr = no_arr
        self.no_str = no_str
        self.flow_style = flow_style

    def document(self, value: Any, ros_type: str) -> str:
        plain = self.plain(value, ros_type)
        text = yaml.safe_dump(plain, default_flow_style=None if self.flow_style else False, sort_keys=False,
                              allow_unicode=True, width=1 << 30)
        return text[:-4] if text.endswith("\n...\n") else text  # a bare scalar gets an end marker

    def plain(self, value: Any, ros_type: str) -> Any:
        # Like messages.to_dict, but arrays are cut before conversion: a 640x480 image stays cheap.
        if isinstance(value, messages.Message):
            field_types = value._field_types
            return {name: self.plain(getattr(value, name), field_types[name]) for name in value._fields}
        if isinstance(value, np.ndarray):
            if self.no_arr:
                return _array_summary(ros_type, len(value))
            if self.truncate is not None and len(value) > self.truncate:
                return value[:self.truncate].tolist() + ["..."]
            return value.tolist()
        if isinstance(value, list):
            inner = ros_type[:ros_type.rfind("[")] if ros_type.endswith("]") else ""
            if self.truncate is not None and len(value) > self.truncate:
                return [self.plain(v, inner) for v in value[:self.truncate]] + ["..."]
            return [self.plain(v, inner) for v in value]
        if isinstance(value, str):
            if self.no_str:
                return f"<string length: <{len(value)}>>"
            if self.truncate is not None and len(value) > self.truncate:
                return value[:self.truncate] + "..."
            return value
        if isinstance(value, np.generic):
            return value.item()
        return value


def _array_summary(ros_type: str, length: int) -> str:
    """ros2's abbreviations: '<sequence type: float64, length: 7>', '<array type: float64[9]>'."""
    element, _, bracket = ros_type.partition("[")
    size = bracket.rstrip("]")
    if size and not size.startswith("<="):
        return f"<array type: {element}[{size}]>"
    return f"<sequence type: {element}, length: {length}>"


# ----------------------------------------------------------------------------- pub


def pub(args: argparse.Namespace) -> int:
    type_name = messages.message_class(args.type).__msgtype__
    values = _parse_values(args.values)
    _check_shapes(type_name, values)
    message = _build(type_name, values)  # once before publishing: bad values fail here, not mid-loop
    messages.serialize(message)
    stamped = _has_stamp_keywords(type_name, values)
    times = 1 if args.once else args.times
    wait_for = args.wait_matching_subscriptions
    if wait_for is None:
        wait_for = 1 if times is not None else 0
    with _session() as node:
        publisher = node.create_publisher(type_name, args.topic, _qos_overrides(args, ros.qos.DEFAULT))
        topic = publisher.topic_name
        if wait_for:
            deadline = time.monotonic() + args.max_wait_time_secs
            while ros.ok() and publisher.get_subscription_count() < wait_for and time.monotonic() < deadline:
                time.sleep(POLL_S)
            if not ros.ok():
                return 0
            if publisher.get_subscription_count() < wait_for:
                _warn(f"{publisher.get_subscription_count()} of {wait_for} matching subscription(s) on '{topic}' "
                      f"after {args.max_wait_time_secs:g} s; publishing anyway")
            else:
                # We see the subscription; it may need a moment more to see us, or a best-effort first message is lost.
                _sleep(MATCH_SETTLE_S)
        if args.print_nth:
            print("publisher: beginning loop", flush=True)
        period_s = 1.0 / args.rate
        next_time = time.monotonic()
        sent = 0
        while ros.ok() and (times is None or sent < times):
            if stamped:
                message = _build(type_name, values)
            publisher.publish(message)
            sent += 1
            if args.print_nth and sent % args.print_nth == 0:
                print(f"publishing #{sent}: {message!r}", flush=True)
            if times is not None and sent >= times:
                break
            next_time += period_s
            ros.spin_once(node, timeout_sec=max(0.0, next_time - time.monotonic()))  # wakes on Ctrl-C
        if ros.ok():
            _sleep(args.keep_alive)  # reliable retransmissions need the writer alive a little longer
    return 0


def _parse_values(text: str) -> Any:
    try:
        values = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "invalid syntax"
        raise RosError(f"the message values are not valid YAML ({problem}{where}): {text!r}; "
                       "write a mapping such as \"{data: [0.1, 0, 1]}\"") from None
    if values is not None and not isinstance(values, dict):
        raise RosError(f"the message values must be a YAML mapping of field: value, got {text!r}; "
                       "write e.g. \"{data: 1.5}\"")
    return values


def _build(type_name: str, values: dict[str, Any] | None) -> messages.Message:
    if values is not None:
        values = _fill_stamps(type_name, values, time.time_ns())
    try:
        return messages.from_dict(type_name, values)
    except RosError:
        raise
    except (TypeError, ValueError, AttributeError) as error:  # e.g. a scalar where a list of messages belongs
        raise RosError(f"cannot build {type_name} from {values!r}: {error}") from None


def _is_message_type(ros_type: str) -> bool:
    return ros_type.count("/") == 2 and not ros_type.endswith("]")


def _check_shapes(type_name: str, values: Any, path: str = "") -> None:
    """Nested messages must be mappings and sequences of messages lists, named by field path in the error."""
    if not isinstance(values, dict):
        return
    field_types = _nested_types(type_name)
    for name, value in values.items():
        field_type, where = field_types.get(name, ""), f"{path}{name}"
        if _is_message_type(field_type):
            if value is None or (value == "now" and field_type == "builtin_interfaces/msg/Time") or \
                    (value == "auto" and field_type == "std_msgs/msg/Header"):
                continue
            if not isinstance(value, dict):
                raise RosError(f"field '{where}' is a {field_type}: give a mapping of its fields, got {value!r}")
            _check_shapes(field_type, value, where + ".")
        elif field_type.endswith("]") and _is_message_type(field_type[:field_type.rfind("[")]):
            element = field_type[:field_type.rfind("[")]
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise RosError(f"field '{where}' is a list of {element}: give a list of mappings, got {value!r}")
            for index, item in enumerate(value):
                _check_shapes(element, item, f"{where}[{index}].")


def _nested_types(type_name: str) -> dict[str, str]:
    return messages.message_class(type_name).get_fields_and_field_types()


def _fill_stamps(type_name: str, values: dict[str, Any], now_ns: int) -> dict[str, Any]:
    """ros2 topic pub's keywords: 'now' for a Time field, 'auto' for a Header field (stamp now, no frame)."""
    field_types = _nested_types(type_name)
    out = dict(values)
    stamp = {"sec": now_ns // 1_000_000_000, "nanosec": now_ns % 1_000_000_000}
    for name, value in values.items():
        field_type = field_types.get(name)
        if field_type == "builtin_interfaces/msg/Time" and value == "now":
            out[name] = stamp
        elif field_type == "std_msgs/msg/Header" and value == "auto":
            out[name] = {"stamp": stamp, "frame_id": ""}
        elif isinstance(value, dict) and field_type and _is_message_type(field_type):
            out[name] = _fill_stamps(field_type, value, now_ns)
    return out


def _has_stamp_keywords(type_name: str, values: Any) -> bool:
    if not isinstance(values, dict):
        return False
    return _fill_stamps(type_name, values, 0) != _fill_stamps(type_name, values, 1)


# ----------------------------------------------------------------------------- hz


def hz(args: argparse.Namespace) -> int:
    with _session() as node:
        topic = node.resolve_topic_name(args.topic)
        if args.type:
            messages.message_class(args.type)
        publishers = _publishers(topic, DISCOVERY_WAIT_S if args.type else args.timeout)
        if not ros.ok():
            return 0
        type_name = _topic_type(topic, args.type, publishers, args.timeout)
        if not publishers:
            _warn(f"topic [{topic}] does not appear to be published yet")
        arrivals: deque[int] = deque(maxlen=args.window)
        state = {"received": 0, "reported": 0}

        def on_message(_message) -> None:
            arrivals.append(time.monotonic_ns())
            state["received"] += 1

        # Best effort matches every publisher; the period is measured on arrival, as ros2 topic hz does.
        node.create_subscription(type_name, topic, on_message, ros.qos.SENSOR_DATA.with_depth(100))
        start = time.monotonic()
        next_report = start + 1.0
        end = None if args.duration is None else start + args.duration
        while ros.ok():
            now = time.monotonic()
            if now >= next_report:
                next_report += 1.0
                if state["received"] == state["reported"]:
                    print("no new messages", flush=True)
                elif len(arrivals) >= 2:
                    print(_rate_report(arrivals), flush=True)
                state["reported"] = state["received"]
            if end is not None and now >= end:
                break
            wake = next_report if end is None else min(next_report, end)
            ros.spin_once(node, timeout_sec=max(0.0, wake - time.monotonic()))
        if args.duration is not None and ros.ok() and state["received"] == 0:
            raise RosError(f"no message on '{topic}' in {args.duration:g} s")
    return 0


def _rate_report(arrivals: deque) -> str:
    """ros2 topic hz's two lines: average rate, then min/max/std dev of the period (s) and the window."""
    periods = np.diff(np.fromiter(arrivals, dtype=np.int64, count=len(arrivals))) / 1e9
    mean = float(periods.mean())
    rate = 1.0 / mean if mean > 0 else 0.0
    return (f"average rate: {rate:.3f}\n\tmin: {periods.min():.3f}s max: {periods.max():.3f}s "
            f"std dev: {periods.std():.5f}s window: {len(arrivals)}")


# ----------------------------------------------------------------------------- output


def _warn(text: str) -> None:
    print(f"robot-stack topic: warning: {text}", file=sys.stderr, flush=True)
