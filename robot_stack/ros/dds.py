"""The dds backend: Eclipse Cyclone DDS speaking the ROS 2 wire protocol (as rmw_cyclonedds_cpp does).

Topics are ``rt/<name>``, types ``pkg::msg::dds_::Type_`` (final, keyless),
data XCDR1 written and taken as raw CDR bytes (the codec lives in
``messages``), QoS mapped as ROS maps it. Discovery follows ROS 2's range
variables; LOCALHOST means 127.0.0.1 only, no multicast, unicast peer
localhost, plus an optional per-run discovery tag (``ROBOT_STACK_DDS_TAG``).
"""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import Any, Callable
from xml.sax.saxutils import escape

from robot_stack.errors import RosError
from robot_stack.ros import names
from robot_stack.ros.qos import Durability, History, QoSProfile, Reliability

# DDS QoS policy ids (DDS spec) -> the names rclpy prints for incompatible QoS.
_POLICY_NAMES = {2: "DURABILITY", 4: "DEADLINE", 8: "LIVELINESS", 11: "RELIABILITY", 13: "HISTORY",
                 21: "LIFESPAN", 25: "DATA_REPRESENTATION"}
DISCOVERY_RANGES = ("LOCALHOST", "SUBNET", "OFF", "SYSTEM_DEFAULT")


def discovery_range(env: dict[str, str] | None = None) -> str:
    """ROS_AUTOMATIC_DISCOVERY_RANGE, or LOCALHOST for ROS_LOCALHOST_ONLY=1.

    Unlike ROS 2 (SUBNET by default), the dds backend defaults to LOCALHOST: it
    runs on development and CI machines, where nothing may leave the host.
    A robot network is asked for explicitly with ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET.
    """
    env = os.environ if env is None else env
    value = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").strip().upper()
    if value:
        if value not in DISCOVERY_RANGES:
            raise RosError(f"ROS_AUTOMATIC_DISCOVERY_RANGE={value!r}: use one of {', '.join(DISCOVERY_RANGES)}")
        return value
    if env.get("ROS_LOCALHOST_ONLY", "").strip() == "0":
        return "SUBNET"
    return "LOCALHOST"


def domain_id(env: dict[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    text = env.get("ROS_DOMAIN_ID", "").strip() or "0"
    if not text.isdigit() or not 0 <= int(text) <= 232:
        raise RosError(f"ROS_DOMAIN_ID={text!r}: use an integer from 0 to 232")
    return int(text)


def cyclone_config(env: dict[str, str] | None = None) -> str:
    """The Cyclone DDS XML for the discovery range, tag and static peers in ``env``."""
    env = os.environ if env is None else env
    scope = discovery_range(env)
    general, discovery = [], []
    if scope in ("LOCALHOST", "OFF"):
        general += ['<Interfaces><NetworkInterface address="127.0.0.1"/></Interfaces>',
                    "<AllowMulticast>false</AllowMulticast>"]
        # Unicast discovery reaches the other participants on this host through their per-index ports.
        discovery += ["<ParticipantIndex>auto</ParticipantIndex>",
                      "<MaxAutoParticipantIndex>32</MaxAutoParticipantIndex>"]
        if scope == "LOCALHOST":
            discovery.append('<Peers><Peer address="127.0.0.1"/></Peers>')
    elif scope == "SUBNET":
        peers = [p.strip() for p in env.get("ROS_STATIC_PEERS", "").split(";") if p.strip()]
        if peers:
            discovery.append("<Peers>" + "".join(f'<Peer address="{escape(p)}"/>' for p in peers) + "</Peers>")
    tag = env.get("ROBOT_STACK_DDS_TAG", "").strip()
    if tag:
        discovery.append(f"<Tag>{escape(tag)}</Tag>")
    body = ""
    if general:
        body += "<General>" + "".join(general) + "</General>"
    if discovery:
        body += "<Discovery>" + "".join(discovery) + "</Discovery>"
    ours = f'<CycloneDDS><Domain Id="any">{body}</Domain></CycloneDDS>'
    user = env.get("CYCLONEDDS_URI", "").strip()
    # Cyclone applies a comma-separated list in order: the range settings override a user's file.
    return f"{user},{ours}" if user else ours


@cache
def _idl_type(type_name: str):
    """A cyclonedds IdlStruct with the ROS 2 DDS type name, for topic registration and type matching."""
    from cyclonedds.idl import make_idl_struct, types
    from cyclonedds.idl.annotations import final

    from robot_stack.ros.messages import _typestore

    base = {
        "bool": bool, "byte": types.byte, "char": types.uint8, "int8": types.int8, "uint8": types.uint8,
        "int16": types.int16, "uint16": types.uint16, "int32": types.int32, "uint32": types.uint32,
        "int64": types.int64, "uint64": types.uint64, "float32": types.float32, "float64": types.float64,
    }

    def field_type(node):
        kind, detail = node
        if kind == 1:
            name, bound = detail
            if name == "string":
                return types.bounded_str[bound] if bound else str
            return base[name]
        if kind == 2:
            return _idl_type(detail)
        inner, size = detail
        if kind == 3:
            return types.array[field_type(inner), size]
        return types.sequence[field_type(inner), size] if size else types.sequence[field_type(inner)]

    _, fields = _typestore().fielddefs[type_name]
    struct = make_idl_struct(
        type_name.rsplit("/", 1)[-1] + "_",
        names.dds_type_name(type_name),
        {name: field_type(node) for name, node in fields},
    )
    return final(struct)


def _delete(entity) -> None:
    # cyclonedds-python deletes an entity (and its children) in __del__; call it now, not at GC time.
    entity.__del__()


class _Endpoint:
    def __init__(self, transport: "DdsTransport", entity, listener) -> None:
        self._transport = transport
        self._entity = entity
        self._listener = listener  # kept alive: Cyclone calls it from its own threads
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with self._transport._lock:
                _delete(self._entity)


class DdsWriter(_Endpoint):
    def write(self, data: bytes) -> None:
        from cyclonedds._clayer import ddspy_write

        pad = -len(data) & 3
        if pad:
            data = data + b"\0" * pad
        result = ddspy_write(self._entity._ref, data)
        if result < 0:
            raise RosError(f"DDS write failed on '{self._entity.topic.name}' (code {result})")

    def matched_count(self) -> int:
        return len(self._entity.get_matched_subscriptions())


class DdsReader(_Endpoint):
    def take(self, max_samples: int) -> list[bytes]:
        from cyclonedds._clayer import ddspy_take

        if self.closed:
            return []
        result = ddspy_take(self._entity._ref, self._transport._any_state, max_samples)
        if isinstance(result, int):
            raise RosError(f"DDS take failed (code {result})")
        return [data for data, info in result if info.valid_data]

    def matched_count(self) -> int:
        return len(self._entity.get_matched_publications())


class DdsTransport:
    """One Cyclone DDS participant per process, shared by its nodes."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        from cyclonedds.core import InstanceState, SampleState, ViewState
        from cyclonedds.domain import Domain, DomainParticipant

        self.domain_id = domain_id(env)
        self.config = cyclone_config(env)
        self.discovery_range = discovery_range(env)
        self._lock = threading.RLock()
        try:
            self._domain = Domain(self.domain_id, self.config)
            self.participant = DomainParticipant(self.domain_id)
        except Exception as error:  # cyclonedds raises DDSException with a numeric code only
            raise RosError(
                f"cannot start Cyclone DDS on domain {self.domain_id} ({error}); "
                "check CYCLONEDDS_URI and ROS_AUTOMATIC_DISCOVERY_RANGE"
            ) from None
        self._any_state = SampleState.Any | ViewState.Any | InstanceState.Any
        self._topics: dict[str, tuple[Any, str]] = {}
        self._graph_readers: dict[str, Any] = {}

    def _topic(self, topic: str, type_name: str):
        from cyclonedds.topic import Topic

        with self._lock:
            if topic in self._topics:
                existing, existing_type = self._topics[topic]
                if existing_type != type_name:
                    raise RosError(f"topic '{topic}' is already used with type {existing_type} in this process, not {type_name}")
                return existing
            entity = Topic(self.participant, names.dds_topic_name(topic), _idl_type(type_name))
            self._topics[topic] = (entity, type_name)
            return entity

    def _qos(self, qos: QoSProfile, type_name: str):
        from cyclonedds.core import Policy, Qos
        from cyclonedds.util import duration

        from robot_stack.ros.messages import _typestore

        policies = [
            Policy.Reliability.Reliable(duration(milliseconds=100))
            if qos.reliability is Reliability.RELIABLE else Policy.Reliability.BestEffort,
            Policy.Durability.TransientLocal if qos.durability is Durability.TRANSIENT_LOCAL else Policy.Durability.Volatile,
            Policy.History.KeepLast(qos.depth) if qos.history is History.KEEP_LAST else Policy.History.KeepAll,
            Policy.DataRepresentation(use_cdrv0_representation=True),
            # ROS 2 (Iron and later) puts the type hash here; ros2 topic info -v shows it.
            Policy.Userdata(f"typehash={_typestore().hash_rihs01(type_name)};".encode()),
        ]
        return Qos(*policies)

    def create_writer(self, topic: str, type_name: str, qos: QoSProfile,
                      on_incompatible: Callable[[str], None]) -> DdsWriter:
        from cyclonedds.core import Listener
        from cyclonedds.pub import DataWriter

        def incompatible(_writer, status) -> None:
            on_incompatible(_POLICY_NAMES.get(status.last_policy_id, str(status.last_policy_id)))

        listener = Listener(on_offered_incompatible_qos=incompatible)
        with self._lock:
            entity = DataWriter(self.participant, self._topic(topic, type_name), qos=self._qos(qos, type_name),
                                listener=listener)
        return DdsWriter(self, entity, listener)

    def create_reader(self, topic: str, type_name: str, qos: QoSProfile, on_data: Callable[[], None],
                      on_incompatible: Callable[[str], None]) -> DdsReader:
        from cyclonedds.core import Listener
        from cyclonedds.sub import DataReader

        def incompatible(_reader, status) -> None:
            on_incompatible(_POLICY_NAMES.get(status.last_policy_id, str(status.last_policy_id)))

        listener = Listener(on_data_available=lambda _reader: on_data(), on_requested_incompatible_qos=incompatible)
        with self._lock:
            entity = DataReader(self.participant, self._topic(topic, type_name), qos=self._qos(qos, type_name),
                                listener=listener)
        reader = DdsReader(self, entity, listener)
        on_data()  # transient-local samples may have arrived before the listener could fire
        return reader

    # -- the ROS graph, from DDS built-in discovery topics
    def endpoints(self) -> list[dict[str, Any]]:
        """Every live ROS endpoint this participant knows: kind, topic, type, qos, participant."""
        from cyclonedds.builtin import (BuiltinDataReader, BuiltinTopicDcpsPublication,
                                        BuiltinTopicDcpsSubscription)
        from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState

        found = []
        with self._lock:
            for kind, builtin in (("publisher", BuiltinTopicDcpsPublication),
                                  ("subscription", BuiltinTopicDcpsSubscription)):
                if kind not in self._graph_readers:
                    reader = BuiltinDataReader(self.participant, builtin)
                    condition = ReadCondition(reader, SampleState.Any | ViewState.Any | InstanceState.Alive)
                    self._graph_readers[kind] = (reader, condition)
                reader, condition = self._graph_readers[kind]
                for sample in reader.read(N=100_000, condition=condition):
                    topic = names.ros_topic_name(sample.topic_name)
                    if topic is None:
                        continue
                    found.append({
                        "kind": kind, "topic": topic, "type": names.ros_type_name(sample.type_name),
                        "qos": sample.qos, "participant": str(sample.participant_key),
                    })
        return found

    def count_endpoints(self, topic: str, kind: str) -> int:
        return sum(1 for e in self.endpoints() if e["topic"] == topic and e["kind"] == kind)

    def topic_names_and_types(self) -> list[tuple[str, list[str]]]:
        topics: dict[str, set[str]] = {}
        for endpoint in self.endpoints():
            topics.setdefault(endpoint["topic"], set()).add(endpoint["type"])
        return sorted((topic, sorted(types_)) for topic, types_ in topics.items())

    def close(self) -> None:
        with self._lock:
            for reader, condition in self._graph_readers.values():
                _delete(condition)
                _delete(reader)
            self._graph_readers.clear()
            _delete(self.participant)
            # The domain goes too, so a later init in this process may create it again (with a new config).
            _delete(self._domain)
            self._topics.clear()
