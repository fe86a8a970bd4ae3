"""A robot_stack node run as its own process by the DDS tests: publishes or subscribes, then reports JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from robot_stack import ros


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["pub", "sub"])
    parser.add_argument("--type", default="std_msgs/msg/String")
    parser.add_argument("--topic", default="/chatter")
    parser.add_argument("--qos", default="default", help="default | sensor_data | transient_local")
    parser.add_argument("--depth", type=int, default=0, help="override the profile's history depth")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--wait-subscribers", type=int, default=1)
    parser.add_argument("--linger", type=float, default=1.0, help="seconds to stay up after publishing")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    ros.init([])
    node = ros.create_node(f"peer_{args.role}")
    qos = ros.qos.PROFILES[args.qos]
    if args.depth:
        qos = qos.with_depth(args.depth)
    cls = ros.message_class(args.type)

    if args.role == "pub":
        publisher = node.create_publisher(cls, args.topic, qos)
        deadline = time.monotonic() + args.timeout
        while publisher.get_subscription_count() < args.wait_subscribers and time.monotonic() < deadline:
            time.sleep(0.01)
        matched = publisher.get_subscription_count()
        if matched:
            # Matching is asymmetric: the subscriber may not know this writer yet; give it a moment,
            # as a volatile reader drops data from writers it has not discovered.
            time.sleep(0.3)
        period = 1.0 / args.rate
        next_time = time.monotonic()
        for i in range(args.count):
            publisher.publish(make(cls, i))
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
        print(json.dumps({"published": args.count, "matched": matched}), flush=True)
        end = time.monotonic() + args.linger
        while time.monotonic() < end:
            ros.spin_once(node, 0.05)
        node.destroy_node()
        ros.shutdown()
        return 0

    received: list[int] = []
    node.create_subscription(cls, args.topic, lambda m: received.append(index_of(m)), qos)
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + args.timeout
    while len(received) < args.count and time.monotonic() < deadline and ros.ok():
        ros.spin_once(node, 0.05)
    print(json.dumps({"received": len(received), "indices": received}), flush=True)
    node.destroy_node()
    ros.shutdown()
    return 0


def make(cls, i: int):
    kind = cls.__msgtype__
    if kind == "std_msgs/msg/String":
        return cls(data=f"message {i}")
    if kind == "sensor_msgs/msg/JointState":
        return cls(name=[f"j{k}" for k in range(7)], position=np.full(7, float(i)))
    if kind == "sensor_msgs/msg/Image":
        frame = np.full((480, 640, 3), i % 256, np.uint8)
        return cls(height=480, width=640, encoding="rgb8", step=1920, data=frame)
    raise SystemExit(f"ros_peer: no test message for {kind}")


def index_of(message) -> int:
    kind = message.__msgtype__
    if kind == "std_msgs/msg/String":
        return int(message.data.split()[-1])
    if kind == "sensor_msgs/msg/JointState":
        return int(message.position[0])
    return int(message.data[0])


if __name__ == "__main__":
    sys.exit(main())
