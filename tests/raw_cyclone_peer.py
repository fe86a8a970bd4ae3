"""A peer written directly against cyclonedds with IdlStructs named the ROS 2 way.

This is what a ROS 2 node on rmw_cyclonedds_cpp puts on the wire: topic 'rt/<name>',
type 'pkg::msg::dds_::Type_', final keyless structs, XCDR1. It shares no code with
robot_stack's message layer (only the loopback discovery settings). No
`from __future__ import annotations` here: cyclonedds resolves the real annotation objects.
"""


import json
import sys
import time
from dataclasses import dataclass

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.annotations import final
from cyclonedds.idl.types import float64, int32, sequence, uint8, uint32
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from robot_stack.ros.dds import cyclone_config, domain_id


@final
@dataclass
class Time_(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32
    nanosec: uint32


@final
@dataclass
class Header_(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time_
    frame_id: str


@final
@dataclass
class String_(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    data: str


@final
@dataclass
class JointState_(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    header: Header_
    name: sequence[str]
    position: sequence[float64]
    velocity: sequence[float64]
    effort: sequence[float64]


@final
@dataclass
class Image_(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header_
    height: uint32
    width: uint32
    encoding: str
    is_bigendian: uint8
    step: uint32
    data: sequence[uint8]  # cyclonedds 11 cannot build an XTypes type object for `bytes`


TYPES = {"std_msgs/msg/String": String_, "sensor_msgs/msg/JointState": JointState_, "sensor_msgs/msg/Image": Image_}


def make(kind: str, i: int):
    header = Header_(Time_(sec=i, nanosec=7), frame_id="raw")
    if kind == "std_msgs/msg/String":
        return String_(data=f"message {i}")
    if kind == "sensor_msgs/msg/JointState":
        return JointState_(header, [f"j{k}" for k in range(7)], [float(i)] * 7, [], [])
    return Image_(header, 2, 3, "rgb8", 0, 9, [i % 256] * 18)


def main() -> int:
    role, kind, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    domain = Domain(domain_id(), cyclone_config())
    participant = DomainParticipant(domain_id())
    qos = Qos(Policy.Reliability.Reliable(duration(milliseconds=100)), Policy.Durability.Volatile,
              Policy.History.KeepLast(100), Policy.DataRepresentation(use_cdrv0_representation=True))
    dds_topic = Topic(participant, "rt" + topic, TYPES[kind], qos=qos)
    if role == "pub":
        writer = DataWriter(participant, dds_topic, qos=qos)
        deadline = time.monotonic() + 10
        while not writer.get_matched_subscriptions() and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(count):
            writer.write(make(kind, i))
            time.sleep(0.005)
        time.sleep(1.0)
        print(json.dumps({"published": count}), flush=True)
        del domain
        return 0
    reader = DataReader(participant, dds_topic, qos=qos)
    print(json.dumps({"ready": True}), flush=True)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        for sample in reader.take(N=100):
            if kind == "std_msgs/msg/String":
                got.append(sample.data)
            elif kind == "sensor_msgs/msg/JointState":
                got.append([sample.name, list(sample.position), sample.header.frame_id])
            else:
                got.append([sample.height, sample.width, sample.encoding, list(sample.data[:3]), len(sample.data)])
        time.sleep(0.005)
    print(json.dumps({"received": got}), flush=True)
    del domain
    return 0


if __name__ == "__main__":
    sys.exit(main())
