"""QoS profiles with ROS 2's defaults and its publisher/subscription compatibility rule."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Reliability(enum.Enum):
    RELIABLE = "reliable"
    BEST_EFFORT = "best_effort"


class Durability(enum.Enum):
    VOLATILE = "volatile"
    TRANSIENT_LOCAL = "transient_local"


class History(enum.Enum):
    KEEP_LAST = "keep_last"
    KEEP_ALL = "keep_all"


@dataclass(frozen=True)
class QoSProfile:
    """What a publisher offers or a subscription requests; ``depth`` counts messages kept."""

    depth: int = 10
    reliability: Reliability = Reliability.RELIABLE
    durability: Durability = Durability.VOLATILE
    history: History = History.KEEP_LAST

    def with_depth(self, depth: int) -> "QoSProfile":
        return replace(self, depth=depth)


# The profiles of rclpy.qos with the same meaning.
DEFAULT = QoSProfile()
SENSOR_DATA = QoSProfile(depth=5, reliability=Reliability.BEST_EFFORT)
TRANSIENT_LOCAL = QoSProfile(depth=1, durability=Durability.TRANSIENT_LOCAL)
PROFILES = {"default": DEFAULT, "sensor_data": SENSOR_DATA, "transient_local": TRANSIENT_LOCAL}
EITHER_DURABILITY = (TRANSIENT_LOCAL, DEFAULT)
"""Subscribe once with each to hear a topic whatever durability its publishers offer: the transient-local reader
gets a latched message sent before the subscriber started; the volatile one hears publishers that offer only
volatile, which a transient-local reader alone refuses as incompatible (an e-stop must never be lost that way)."""


def as_profile(qos: "QoSProfile | int | str") -> QoSProfile:
    """Accept a profile, a history depth (rclpy's shorthand) or a profile name."""
    if isinstance(qos, QoSProfile):
        return qos
    if isinstance(qos, int) and not isinstance(qos, bool) and qos > 0:
        return DEFAULT.with_depth(qos)
    if isinstance(qos, str) and qos in PROFILES:
        return PROFILES[qos]
    from robot_stack.errors import RosError

    raise RosError(f"invalid QoS {qos!r}: give a QoSProfile, a depth > 0, or one of {sorted(PROFILES)}")


def incompatible_policy(offered: QoSProfile, requested: QoSProfile) -> str | None:
    """The policy that stops a publisher (offered) from serving a subscription (requested), or None."""
    if offered.reliability is Reliability.BEST_EFFORT and requested.reliability is Reliability.RELIABLE:
        return "RELIABILITY"
    if offered.durability is Durability.VOLATILE and requested.durability is Durability.TRANSIENT_LOCAL:
        return "DURABILITY"
    return None
