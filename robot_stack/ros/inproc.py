"""The inproc backend: the same node API within one process, no network (unit tests only).

Messages still travel as CDR bytes, so type checks and copies behave as on DDS;
QoS depth, transient-local history and incompatibility follow the same rules.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable

from robot_stack.errors import RosError
from robot_stack.ros.qos import Durability, History, QoSProfile, incompatible_policy


class InprocWriter:
    def __init__(self, transport: "InprocTransport", topic: str, type_name: str, qos: QoSProfile,
                 on_incompatible: Callable[[str], None]) -> None:
        self.transport, self.topic, self.type_name, self.qos = transport, topic, type_name, qos
        self.on_incompatible = on_incompatible
        # Only a transient-local writer keeps messages for subscriptions that join later.
        depth = qos.depth if qos.durability is Durability.TRANSIENT_LOCAL else 0
        self.history: collections.deque[bytes] = collections.deque(maxlen=depth)
        self.closed = False

    def write(self, data: bytes) -> None:
        with self.transport.lock:
            self.history.append(data)
            readers = [r for r in self.transport.readers if r.topic == self.topic and r.accepts(self)]
        for reader in readers:
            reader.deliver(data)

    def matched_count(self) -> int:
        with self.transport.lock:
            return sum(1 for r in self.transport.readers if r.topic == self.topic and r.accepts(self, report=False))

    def close(self) -> None:
        with self.transport.lock:
            if self in self.transport.writers:
                self.transport.writers.remove(self)
        self.closed = True


class InprocReader:
    def __init__(self, transport: "InprocTransport", topic: str, type_name: str, qos: QoSProfile,
                 on_data: Callable[[], None], on_incompatible: Callable[[str], None]) -> None:
        self.transport, self.topic, self.type_name, self.qos = transport, topic, type_name, qos
        self.on_data, self.on_incompatible = on_data, on_incompatible
        maxlen = qos.depth if qos.history is History.KEEP_LAST else None
        self.queue: collections.deque[bytes] = collections.deque(maxlen=maxlen)
        self.reported: set[int] = set()
        self.closed = False

    def accepts(self, writer: InprocWriter, report: bool = True) -> bool:
        policy = incompatible_policy(writer.qos, self.qos)
        if policy and report and id(writer) not in self.reported:
            self.reported.add(id(writer))
            self.on_incompatible(policy)
            writer.on_incompatible(policy)
        return policy is None

    def deliver(self, data: bytes) -> None:
        with self.transport.lock:
            self.queue.append(data)
        self.on_data()

    def take(self, max_samples: int) -> list[bytes]:
        with self.transport.lock:
            count = min(max_samples, len(self.queue))
            return [self.queue.popleft() for _ in range(count)]

    def matched_count(self) -> int:
        with self.transport.lock:
            return sum(1 for w in self.transport.writers
                       if w.topic == self.topic and incompatible_policy(w.qos, self.qos) is None)

    def close(self) -> None:
        with self.transport.lock:
            if self in self.transport.readers:
                self.transport.readers.remove(self)
        self.closed = True


class InprocTransport:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.writers: list[InprocWriter] = []
        self.readers: list[InprocReader] = []
        self.types: dict[str, str] = {}

    def _check_type(self, topic: str, type_name: str) -> None:
        known = self.types.setdefault(topic, type_name)
        if known != type_name:
            raise RosError(f"topic '{topic}' carries {known}, not {type_name}")

    def create_writer(self, topic, type_name, qos, on_incompatible) -> InprocWriter:
        with self.lock:
            self._check_type(topic, type_name)
            writer = InprocWriter(self, topic, type_name, qos, on_incompatible)
            self.writers.append(writer)
            for reader in self.readers:
                if reader.topic == topic:
                    reader.accepts(writer)
        return writer

    def create_reader(self, topic, type_name, qos, on_data, on_incompatible) -> InprocReader:
        with self.lock:
            self._check_type(topic, type_name)
            reader = InprocReader(self, topic, type_name, qos, on_data, on_incompatible)
            self.readers.append(reader)
            late = qos.durability is Durability.TRANSIENT_LOCAL
            backlog = [data for w in self.writers if w.topic == topic and reader.accepts(w) and late
                       for data in w.history]
        for data in backlog:
            reader.deliver(data)
        return reader

    def count_endpoints(self, topic: str, kind: str) -> int:
        with self.lock:
            endpoints = self.writers if kind == "publisher" else self.readers
            return sum(1 for e in endpoints if e.topic == topic)

    def topic_names_and_types(self) -> list[tuple[str, list[str]]]:
        with self.lock:
            live = {e.topic for e in [*self.writers, *self.readers]}
            return sorted((t, [self.types[t]]) for t in live)

    def close(self) -> None:
        with self.lock:
            self.writers.clear()
            self.readers.clear()
