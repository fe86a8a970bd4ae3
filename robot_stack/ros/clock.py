"""Wall-clock time as rclpy's ``Clock``/``Time`` give it (system time, nanoseconds)."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Time:
    nanoseconds: int

    def seconds_nanoseconds(self) -> tuple[int, int]:
        return divmod(self.nanoseconds, 1_000_000_000)

    def to_msg(self):
        """A builtin_interfaces/msg/Time message (for ``header.stamp``)."""
        from robot_stack.ros.messages import message_class

        sec, nanosec = self.seconds_nanoseconds()
        return message_class("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)

    @classmethod
    def from_msg(cls, stamp) -> "Time":
        return cls(stamp.sec * 1_000_000_000 + stamp.nanosec)

    def __sub__(self, other: "Time") -> float:
        """Seconds between two times."""
        return (self.nanoseconds - other.nanoseconds) / 1e9


class Clock:
    def now(self) -> Time:
        return Time(time.time_ns())
