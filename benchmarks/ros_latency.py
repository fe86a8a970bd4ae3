"""Publish -> receive latency across two processes: robot_stack's dds backend against raw cyclonedds.

Cases: sensor_msgs/JointState (7 joints) at 500 Hz and sensor_msgs/Image 640x480 rgb8 at 30 Hz.
For each case a publisher process and a subscriber process are run twice: once as robot_stack
nodes (``robot_stack.ros``, dds backend), once written directly against cyclonedds with IdlStructs
named the ROS 2 way (what a ROS 2 node on rmw_cyclonedds_cpp puts on the wire).

Latency = receive time - send time, both ``time.time_ns()`` on this host: the publisher writes the
send time into ``header.stamp`` just before publishing (encoding is included), the subscriber reads
the clock in its callback after decoding (robot_stack: the node callback; raw: after take and
deserialize). The sequence number travels in ``header.frame_id`` to count lost messages.
QoS, both: reliable, keep last 10, volatile. Each case runs in ``--rounds`` parts per
implementation, in alternating order, and the first ``--warmup`` seconds of every part are
discarded. The time spent inside publish()/write() is reported beside the latency: it is the
sending side's share (encode, copy, and Cyclone sending the fragments synchronously).

    python benchmarks/ros_latency.py            # 20 s a case and implementation
    python benchmarks/ros_latency.py --quick    # 5 s, for a smoke run

Prints a table and writes benchmarks/results/ros_latency.json. Loopback only: the script sets
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, its own ROS_DOMAIN_ID and a discovery tag itself.
"""

# No `from __future__ import annotations`: cyclonedds resolves IdlStruct annotations at runtime.
import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _machine import machine, write_result  # a script's own folder is sys.path[0]
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.annotations import final
from cyclonedds.idl.types import float64, int32, sequence, uint8, uint32

RESULTS = Path(__file__).resolve().parent / "results" / "ros_latency.json"
IMPLEMENTATIONS = ("robot_stack", "raw")
QOS_TEXT = "reliable, keep last 10, volatile (publisher and subscriber, both implementations)"
DEPTH = 10
MATCH_TIMEOUT_S = 15.0
SETTLE_S = 0.5  # after matching: let both sides finish discovery before the clock starts


@dataclass(frozen=True)
class Case:
    name: str
    type_name: str
    rate_hz: float
    p99_target_ms: float
    label: str


CASES = {
    "joint_state": Case("joint_state", "sensor_msgs/msg/JointState", 500.0, 1.0, "JointState 7 joints"),
    "image": Case("image", "sensor_msgs/msg/Image", 30.0, 10.0, "Image 640x480 rgb8"),
}
OVERHEAD_TARGET = 1.3  # robot_stack / raw, at p50 and p99 (p99.9 of a few thousand samples is too noisy to gate)
HEIGHT, WIDTH = 480, 640


# ----------------------------------------------------------------------------- the raw cyclonedds side
# IdlStructs with the ROS 2 DDS type names: @final, keyless, XCDR1 on the wire.


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
    data: bytes  # uint8[]: same wire format as sequence<uint8>, without a Python int per byte


@final
@dataclass
class ImageTypeTwin_(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    """Image_ spelled with sequence<uint8>, the way ROS 2 announces it: only its XTypes type object is used."""

    header: Header_
    height: uint32
    width: uint32
    encoding: str
    is_bigendian: uint8
    step: uint32
    data: sequence[uint8]


RAW_TYPES = {"sensor_msgs/msg/JointState": JointState_, "sensor_msgs/msg/Image": Image_}


def raw_type(type_name: str):
    if type_name == "sensor_msgs/msg/Image" and Image_.__idl__._xt_data[0] is None:
        # cyclonedds 11 cannot build the XTypes type object of a `bytes` member (needed to create the
        # topic); borrow the one of the identical struct spelled sequence<uint8>.
        ImageTypeTwin_.__idl__.fill_type_data()
        Image_.__idl__.populate()
        Image_.__idl__._xt_data = ImageTypeTwin_.__idl__._xt_data
        Image_.__idl__._xt_bytedata = ImageTypeTwin_.__idl__._xt_bytedata
    return RAW_TYPES[type_name]


def raw_qos():
    from cyclonedds.core import Policy, Qos
    from cyclonedds.util import duration

    return Qos(Policy.Reliability.Reliable(duration(milliseconds=100)), Policy.Durability.Volatile,
               Policy.History.KeepLast(DEPTH), Policy.DataRepresentation(use_cdrv0_representation=True))


def raw_endpoint(case: Case, topic: str):
    from cyclonedds.domain import Domain, DomainParticipant
    from cyclonedds.topic import Topic

    from robot_stack.ros.dds import cyclone_config, domain_id

    domain = Domain(domain_id(), cyclone_config())  # the same loopback-only settings as robot_stack
    participant = DomainParticipant(domain_id())
    cls = raw_type(case.type_name)
    return domain, participant, Topic(participant, "rt" + topic, cls, qos=raw_qos()), cls


def raw_publish(case: Case, topic: str, count: int) -> dict:
    from cyclonedds.pub import DataWriter

    domain, participant, dds_topic, cls = raw_endpoint(case, topic)
    writer = DataWriter(participant, dds_topic, qos=raw_qos())
    matched = wait_until(lambda: len(writer.get_matched_subscriptions()) > 0)
    header = Header_(Time_(0, 0), "")
    if case.type_name == "sensor_msgs/msg/JointState":
        message = cls(header, [f"panda_joint{i}" for i in range(1, 8)], [0.1 * i for i in range(7)], [0.0] * 7,
                      [0.0] * 7)
    else:
        message = cls(header, HEIGHT, WIDTH, "rgb8", 0, WIDTH * 3, image_frame().tobytes())

    def send(seq: int) -> None:
        now = time.time_ns()
        header.stamp.sec, header.stamp.nanosec = divmod(now, 1_000_000_000)
        header.frame_id = str(seq)
        writer.write(message)

    sent = paced(send, count, case.rate_hz)
    time.sleep(0.5)  # the last samples may still be in flight or being repaired
    del domain
    return {"matched": matched, **sent}


def raw_subscribe(case: Case, topic: str, count: int, out: Path, timeout_s: float) -> None:
    from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
    from cyclonedds.sub import DataReader
    from cyclonedds.util import duration

    domain, participant, dds_topic, _ = raw_endpoint(case, topic)
    reader = DataReader(participant, dds_topic, qos=raw_qos())
    condition = ReadCondition(reader, SampleState.Any | ViewState.Any | InstanceState.Any)
    waitset = WaitSet(participant)
    waitset.attach(condition)
    records = Records(count)
    ready()
    deadline = time.monotonic() + timeout_s
    while not records.done and time.monotonic() < deadline:
        waitset.wait(duration(milliseconds=100))
        for sample in reader.take(N=64):
            now = time.time_ns()  # after take and deserialize, as in a raw callback
            stamp = sample.header.stamp
            records.add(int(sample.header.frame_id), now - (stamp.sec * 1_000_000_000 + stamp.nanosec))
    records.save(out)
    del domain


# ----------------------------------------------------------------------------- the robot_stack side


def robot_stack_publish(case: Case, topic: str, count: int) -> dict:
    from robot_stack import ros

    ros.init([])
    node = ros.create_node("latency_publisher")
    cls = ros.message_class(case.type_name)
    publisher = node.create_publisher(cls, topic, ros.qos.QoSProfile(depth=DEPTH))
    matched = wait_until(lambda: publisher.get_subscription_count() > 0)
    if case.type_name == "sensor_msgs/msg/JointState":
        message = cls(name=[f"panda_joint{i}" for i in range(1, 8)], position=np.arange(7) * 0.1,
                      velocity=np.zeros(7), effort=np.zeros(7))
    else:
        message = cls(height=HEIGHT, width=WIDTH, encoding="rgb8", step=WIDTH * 3, data=image_frame())
    stamp = message.header.stamp

    def send(seq: int) -> None:
        now = time.time_ns()
        stamp.sec, stamp.nanosec = divmod(now, 1_000_000_000)
        message.header.frame_id = str(seq)
        publisher.publish(message)

    sent = paced(send, count, case.rate_hz)
    time.sleep(0.5)
    ros.shutdown()
    return {"matched": matched, **sent}


def robot_stack_subscribe(case: Case, topic: str, count: int, out: Path, timeout_s: float) -> None:
    from robot_stack import ros

    ros.init([])
    node = ros.create_node("latency_subscriber")
    records = Records(count)

    def on_message(message) -> None:
        now = time.time_ns()  # in the node callback, after decode
        stamp = message.header.stamp
        records.add(int(message.header.frame_id), now - (stamp.sec * 1_000_000_000 + stamp.nanosec))

    node.create_subscription(case.type_name, topic, on_message, ros.qos.QoSProfile(depth=DEPTH))
    ready()
    deadline = time.monotonic() + timeout_s
    while not records.done and time.monotonic() < deadline and ros.ok():
        ros.spin_once(node, timeout_sec=0.1)
    records.save(out)
    ros.shutdown()


# ----------------------------------------------------------------------------- shared by both sides


def image_frame() -> np.ndarray:
    """A 480x640x3 uint8 frame that is not all zeros (so nothing can compress or skip it)."""
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


class Records:
    """Latency (ns) by sequence number; done when the last message arrived (reliable delivery is in order)."""

    def __init__(self, count: int) -> None:
        self.latency_ns = np.full(count, -1, dtype=np.int64)
        self.count = count
        self.done = False

    def add(self, seq: int, latency_ns: int) -> None:
        self.latency_ns[seq] = latency_ns
        if seq == self.count - 1:
            self.done = True

    def save(self, out: Path) -> None:
        np.save(out, self.latency_ns)


def wait_until(test, timeout_s: float = MATCH_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not test():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    time.sleep(SETTLE_S)
    return True


def paced(send, count: int, rate_hz: float) -> dict:
    """Call ``send(seq)`` ``count`` times on a fixed schedule (late calls do not shift later ones)."""
    period_ns = int(1e9 / rate_hz)
    start = next_ns = time.monotonic_ns()
    call_ns = np.zeros(count, dtype=np.int64)
    for seq in range(count):
        before = time.perf_counter_ns()
        send(seq)
        call_ns[seq] = time.perf_counter_ns() - before
        next_ns += period_ns
        left = next_ns - time.monotonic_ns()
        if left > 0:
            time.sleep(left / 1e9)
    elapsed = (time.monotonic_ns() - start) / 1e9
    p50, p99 = np.percentile(call_ns, [50, 99]) / 1e6
    return {"sent": count, "achieved_hz": count / elapsed, "publish_call_p50_ms": p50, "publish_call_p99_ms": p99}


def ready() -> None:
    print(json.dumps({"ready": True}), flush=True)


# ----------------------------------------------------------------------------- the orchestrator


def loopback_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(random.randint(150, 200)),
               ROBOT_STACK_DDS_TAG=f"ros-latency-{uuid.uuid4().hex[:12]}", ROBOT_STACK_ROS_BACKEND="dds",
               PYTHONUNBUFFERED="1")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def run_pair(case: Case, implementation: str, count: int, warmup: int, workdir: Path) -> tuple[np.ndarray, dict]:
    """One subscriber and one publisher process: latency (ns, -1 if lost) of each message after warm-up,
    and the publisher's report (rate achieved, time spent in the publish call)."""
    env = loopback_env()
    topic = f"/latency_{case.name}_{implementation}"
    out = workdir / f"{case.name}_{implementation}.npy"
    timeout_s = MATCH_TIMEOUT_S + count / case.rate_hz + 30
    common = ["--case", case.name, "--impl", implementation, "--topic", topic, "--count", str(count)]
    subscriber = subprocess.Popen([sys.executable, __file__, "--role", "sub", *common, "--out", str(out),
                                   "--timeout", str(timeout_s)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = subscriber.stdout.readline()
        if '"ready"' not in line:
            raise SystemExit(f"{implementation} subscriber for {case.name} did not start: {line!r}")
        publisher = subprocess.run([sys.executable, __file__, "--role", "pub", *common], env=env, text=True,
                                   capture_output=True, timeout=timeout_s)
        if publisher.returncode != 0:
            raise SystemExit(f"{implementation} publisher for {case.name} failed:\n{publisher.stderr}")
        sent = json.loads(publisher.stdout.strip().splitlines()[-1])
        subscriber.wait(timeout=timeout_s)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
    if not sent["matched"]:
        raise SystemExit(f"{implementation} publisher for {case.name} never matched its subscriber")
    return np.load(out)[warmup:], sent


def figures(latency_ns: np.ndarray, publishers: list[dict]) -> dict:
    received = latency_ns[latency_ns >= 0] / 1e6
    p50, p99, p999 = np.percentile(received, [50, 99, 99.9]) if received.size else (float("nan"),) * 3
    return {
        "samples": int(received.size), "lost": int((latency_ns < 0).sum()),
        "p50_ms": round(float(p50), 4), "p99_ms": round(float(p99), 4), "p99_9_ms": round(float(p999), 4),
        "mean_ms": round(float(received.mean()), 4) if received.size else None,
        "max_ms": round(float(received.max()), 4) if received.size else None,
        "achieved_rate_hz": round(float(np.mean([p["achieved_hz"] for p in publishers])), 2),
        # Time inside publish()/write() (encode + hand-over to DDS): part of the latency, on the sending side.
        "publish_call_p50_ms": round(float(np.mean([p["publish_call_p50_ms"] for p in publishers])), 4),
        "publish_call_p99_ms": round(float(np.max([p["publish_call_p99_ms"] for p in publishers])), 4),
    }


def evaluate(case: Case, measured: dict) -> dict:
    ours, raw = measured["robot_stack"], measured["raw"]
    ratio = {key: round(ours[f"{key}_ms"] / raw[f"{key}_ms"], 3) if raw[f"{key}_ms"] else None
             for key in ("p50", "p99", "p99_9")}
    targets = {
        f"robot_stack p99 < {case.p99_target_ms:g} ms": ours["p99_ms"] < case.p99_target_ms,
        f"overhead p50 <= {OVERHEAD_TARGET}x raw": ratio["p50"] is not None and ratio["p50"] <= OVERHEAD_TARGET,
        f"overhead p99 <= {OVERHEAD_TARGET}x raw": ratio["p99"] is not None and ratio["p99"] <= OVERHEAD_TARGET,
    }
    return {"ratio_robot_stack_over_raw": ratio, "targets": {k: ("pass" if v else "fail") for k, v in targets.items()}}


def print_table(results: dict) -> None:
    header = (f"{'case':<22}{'impl':<13}{'rate Hz':>8}{'samples':>9}{'lost':>6}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'p99.9 ms':>10}{'publish() p50 ms':>18}")
    print(header)
    print("-" * len(header))
    for case in results["cases"].values():
        for implementation in IMPLEMENTATIONS:
            row = case[implementation]
            print(f"{case['label']:<22}{implementation:<13}{case['rate_hz']:>8g}{row['samples']:>9}{row['lost']:>6}"
                  f"{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{row['p99_9_ms']:>10.3f}{row['publish_call_p50_ms']:>18.3f}")
        ratio = case["ratio_robot_stack_over_raw"]
        print(f"{'':<22}{'ratio':<13}{'':>8}{'':>9}{'':>6}{ratio['p50']:>8.2f}x{ratio['p99']:>8.2f}x{ratio['p99_9']:>9.2f}x")
        for target, verdict in case["targets"].items():
            print(f"{'':<22}target {target}: {verdict}")
        print()


def orchestrate(args: argparse.Namespace) -> int:
    duration_s = args.duration if args.duration is not None else (5.0 if args.quick else 20.0)
    warmup_s = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    results = {
        "benchmark": "ros_latency",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **machine(["cyclonedds", "robot_stack", "numpy"]),
        "qos": QOS_TEXT,
        "method": "latency = subscriber time.time_ns() in the callback after decode - header.stamp written just "
                  "before publish; two processes on one host; each case runs `rounds` times per implementation in "
                  "alternating order, the first warmup_s of every run discarded",
        "settings": {"duration_s": duration_s, "warmup_s": warmup_s, "rounds": args.rounds, "quick": args.quick},
        "targets": {"joint_state_p99_ms": CASES["joint_state"].p99_target_ms,
                    "image_p99_ms": CASES["image"].p99_target_ms, "overhead_max_ratio": OVERHEAD_TARGET},
        "cases": {},
    }
    with tempfile.TemporaryDirectory(prefix="ros_latency_") as tmp:
        for name in args.cases:
            case = CASES[name]
            warmup = int(warmup_s * case.rate_hz)
            count = warmup + int(duration_s / args.rounds * case.rate_hz)
            latency = {implementation: [] for implementation in IMPLEMENTATIONS}
            reports = {implementation: [] for implementation in IMPLEMENTATIONS}
            for round_ in range(args.rounds):
                # Alternate the order (ABBA...) so a slow drift of the machine favours neither side.
                for implementation in IMPLEMENTATIONS[::1 if round_ % 2 == 0 else -1]:
                    print(f"running {case.label} at {case.rate_hz:g} Hz, {implementation}, round {round_ + 1} "
                          f"of {args.rounds}, {duration_s / args.rounds:g} s ...", file=sys.stderr, flush=True)
                    values, report = run_pair(case, implementation, count, warmup, Path(tmp))
                    latency[implementation].append(values)
                    reports[implementation].append(report)
            measured = {implementation: figures(np.concatenate(latency[implementation]), reports[implementation])
                        for implementation in IMPLEMENTATIONS}
            results["cases"][name] = {"label": case.label, "type": case.type_name, "rate_hz": case.rate_hz,
                                      **measured, **evaluate(case, measured)}
    print_table(results)
    out = Path(args.output)
    write_result(out, results)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 s a case and implementation (smoke run)")
    parser.add_argument("--duration", type=float, help="measured seconds per case and implementation (default 20)")
    parser.add_argument("--warmup", type=float, help="seconds discarded at the start (default 2, quick 1)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="split each case into this many runs per implementation, alternating the order "
                             "(default: %(default)s)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--output", default=str(RESULTS), help="result JSON (default: %(default)s)")
    # Internal: the publisher and subscriber processes run this same file.
    parser.add_argument("--role", choices=["pub", "sub"], help=argparse.SUPPRESS)
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role is None:
        # Set here, before any child starts, and again per pair with a fresh tag and domain.
        os.environ.update(loopback_env())
        return orchestrate(args)
    case = CASES[args.case]
    if args.role == "pub":
        publish = robot_stack_publish if args.impl == "robot_stack" else raw_publish
        print(json.dumps(publish(case, args.topic, args.count)), flush=True)
    else:
        subscribe = robot_stack_subscribe if args.impl == "robot_stack" else raw_subscribe
        subscribe(case, args.topic, args.count, Path(args.out), args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
