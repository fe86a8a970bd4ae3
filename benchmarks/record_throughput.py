"""Recording throughput: the recorder node over DDS, against writing the same frames straight to Zarr and to MCAP.

Live case: a publisher process (this script, ``--role publisher``) publishes 2 cameras (640x480 rgb8,
30 Hz, camera-like synthetic frames whose content changes every frame: gradients, a moving square,
sensor noise) and ``/joint_states`` (7 joints, 500 Hz); the ``recorder`` node, in its own process,
records them at 30 Hz on the wall clock for ``--duration`` seconds (one episode). The publisher process
also drives the recorder (/recorder/control) and reads its status.

Dropped, measured two ways, both must be zero:
- ticks: record ticks the recorder could not sample and write in time (its status counts a tick that
  came more than 1.5 periods after the last one; the stored timestamps are checked for the same gaps);
- camera messages lost: messages published on each camera topic minus messages the recorder received
  (its status counts them). Publishing starts only after every subscription is matched, and the count
  is read after publishing stopped.
Stale frames (a camera or joint sample older than its max_age: 0.1 s / 0.05 s) are reported beside them.

Compared, on the same frames (the same synthetic sequence, as many frames as the recorder stored):
- Zarr direct: DatasetWriter in one process, the recorded dataset's features, appending as fast as it
  can (flushes and the commit included): the writer's capacity. ratio = its MB/s / the recorder's.
- MCAP: rosbags' rosbag2 Writer (storage MCAP, no compression, the rosbag2 default) writing every
  message the publisher sent during the recording (CDR bytes, serialized beforehand, as a rosbag
  recorder gets them from DDS), as fast as it can.
MB/s = bytes stored / seconds taken; for the live recorder the seconds are the recording's wall time
(it can only go as fast as the data comes). Files land in the page cache: this measures CPU, codecs and
Zarr/MCAP overhead, not the disk.

    python benchmarks/record_throughput.py            # 60 s of recording
    python benchmarks/record_throughput.py --quick    # 10 s

Prints a table and writes benchmarks/results/record_throughput.json. Loopback only: the script sets
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, its own ROS_DOMAIN_ID and a discovery tag itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from _machine import machine, write_result  # a script's own folder is sys.path[0]

RESULTS = Path(__file__).resolve().parent / "results" / "record_throughput.json"
REPO = Path(__file__).resolve().parents[1]
H, W = 480, 640
DISTINCT_FRAMES = 90  # per camera, cycled: 3 s of different content
JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
SETTLE_S = 1.0  # after every subscription matched, before the first message
WARMUP_S = 2.0  # publishing before the recording starts
TAIL_S = 0.5  # publishing after it stopped
CAMERA_MAX_AGE_S, JOINT_MAX_AGE_S = 0.1, 0.05
CATCH_UP_S = 0.02  # a publish this late (an image publish held the loop) is caught up, as a driver's queue would


def camera_frames(count: int, seed: int) -> np.ndarray:
    """`count` distinct camera-like rgb8 frames [count, H, W, 3] (as benchmarks/dataset_io.py makes them)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    frames = np.empty((count, H, W, 3), np.uint8)
    for i in range(count):
        image = np.stack([xx * 255 / W, yy * 255 / H, (xx + yy + 8 * i + 40 * seed) % 256], -1)
        x0, y0 = 40 + 13 * i % 400, 60 + 7 * i % 300
        image[y0 : y0 + 120, x0 : x0 + 160] = (200, 40, 40)
        frames[i] = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    return frames


def joint_positions(n: int) -> np.ndarray:
    """A smooth joint trajectory [n, 7] (rad)."""
    t = np.arange(n)[:, None] / 500.0
    return np.sin(t * np.linspace(0.3, 1.0, 7) + np.arange(7)).astype(np.float64)


def features_document(cameras: int, record_hz: float) -> dict:
    features = {
        "joint_position": {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "field": "position",
                           "units": "rad", "max_age": JOINT_MAX_AGE_S},
        "joint_velocity": {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "field": "velocity",
                           "units": "rad/s", "max_age": JOINT_MAX_AGE_S},
    }
    for i in range(cameras):
        features[f"image.cam{i}"] = {"topic": f"/camera/cam{i}/image_raw", "type": "sensor_msgs/msg/Image",
                                     "shape": [H, W, 3], "max_age": CAMERA_MAX_AGE_S}
    return {"robot": {"name": "bench_arm", "command": {"meaning": "none (benchmark)", "names": [], "low": [], "high": []}},
            "task": "benchmark", "features": features}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loopback_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(random.randint(150, 200)),
               ROBOT_STACK_DDS_TAG=f"record-throughput-{uuid.uuid4().hex[:12]}", ROBOT_STACK_ROS_BACKEND="dds",
               PYTHONUNBUFFERED="1")
    return env


# --------------------------------------------------------------------------------------------------
# The publisher process: publishes, drives the recorder, reports counts as one JSON line.


def run_publisher(args: argparse.Namespace) -> None:
    from robot_stack import ros
    from robot_stack.ros import convert

    ros.init([])
    node = ros.create_node("bench_publisher")
    String = ros.message_class("std_msgs/msg/String")
    joint_pub = node.create_publisher("sensor_msgs/msg/JointState", "/joint_states", ros.qos.SENSOR_DATA)
    camera_pubs = [node.create_publisher("sensor_msgs/msg/Image", f"/camera/cam{i}/image_raw", ros.qos.SENSOR_DATA)
                   for i in range(args.cameras)]
    control = node.create_publisher("std_msgs/msg/String", "recorder/control", ros.qos.DEFAULT)
    statuses: list[dict] = []
    node.create_subscription("std_msgs/msg/String", "recorder/status", lambda m: statuses.append(json.loads(m.data)),
                             ros.qos.TRANSIENT_LOCAL)
    frames = [camera_frames(DISTINCT_FRAMES, seed=i) for i in range(args.cameras)]
    trajectory = joint_positions(5000)

    def spin_until(predicate, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise SystemExit(f"publisher: timed out waiting for {what}")
            ros.spin_once(node, 0.05)

    everyone = [joint_pub, *camera_pubs, control]
    spin_until(lambda: statuses and all(p.get_subscription_count() > 0 for p in everyone), 60, "the recorder")
    end = time.monotonic() + SETTLE_S
    while time.monotonic() < end:
        ros.spin_once(node, 0.05)

    published = {"joint_states": 0, **{f"cam{i}": 0 for i in range(args.cameras)}}
    late = {name: 0 for name in published}
    joint_period, camera_period = 1.0 / args.joint_hz, 1.0 / args.camera_hz
    t0 = time.monotonic()
    due = {"joint_states": t0, **{f"cam{i}": t0 + (i + 0.5) * camera_period / args.cameras for i in range(args.cameras)}}
    periods = {"joint_states": joint_period, **{f"cam{i}": camera_period for i in range(args.cameras)}}
    phases = [("start", WARMUP_S), ("stop", WARMUP_S + args.duration), ("end", WARMUP_S + args.duration + TAIL_S)]
    marks: dict[str, dict] = {}
    recorder_pid = statuses[-1]["pid"]
    while phases:
        now = time.monotonic()
        if now - t0 >= phases[0][1]:
            word = phases.pop(0)[0]
            marks[word] = {"time": now, "published": dict(published), "recorder_cpu_s": cpu_seconds(recorder_pid),
                           "publisher_cpu_s": time.process_time()}
            if word != "end":
                control.publish(String(data=word))
            continue
        for name, when in due.items():
            if now < when:
                continue
            stamp = time.time_ns()
            if name == "joint_states":
                n = published[name]
                joint_pub.publish(convert.joint_state(JOINTS, trajectory[n % len(trajectory)],
                                                      trajectory[(n + 1) % len(trajectory)] - trajectory[n % len(trajectory)],
                                                      stamp_ns=stamp))
            else:
                i = int(name[3:])
                camera_pubs[i].publish(convert.image(frames[i][published[name] % DISTINCT_FRAMES], stamp_ns=stamp,
                                                     frame_id=name))
            published[name] += 1
            due[name] = when + periods[name]
            if due[name] < now - CATCH_UP_S:  # far behind: skip ahead rather than burst
                late[name] += 1
                due[name] = now + periods[name]
        ros.spin_once(node, max(0.0, min(due.values()) - time.monotonic()))
    # Counts are read once nothing is in flight: the first status a second after publishing ended.
    end_time = time.time()
    spin_until(lambda: statuses and statuses[-1]["time"] > end_time + 1.0 and not statuses[-1]["recording"], 30,
               "the recorder's final status")
    recording = marks["stop"]["time"] - marks["start"]["time"]
    report = {
        "published": published,
        "published_while_recording": {k: marks["stop"]["published"][k] - marks["start"]["published"][k] for k in published},
        "late_publishes": late,
        "achieved_hz": {k: round((marks["stop"]["published"][k] - marks["start"]["published"][k]) / recording, 2)
                        for k in published},
        "recording_s": recording,
        "recorder_cpu_s": marks["stop"]["recorder_cpu_s"] - marks["start"]["recorder_cpu_s"],
        "publisher_cpu_s": marks["stop"]["publisher_cpu_s"] - marks["start"]["publisher_cpu_s"],
        "final_status": statuses[-1],
        "statuses_while_recording": [s for s in statuses if s["recording"]][-1:],
    }
    print(json.dumps(report), flush=True)
    node.destroy_node()
    ros.shutdown()


# --------------------------------------------------------------------------------------------------
# The comparisons, in this process.


def folder_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def zarr_direct(path: Path, recorded: Path, n_frames: int, cameras: int, record_hz: float, joint_hz: float) -> dict:
    """The recorded frames written straight to a new dataset with the same features, as fast as possible."""
    from robot_stack.data import Dataset, DatasetWriter

    source = Dataset.open(recorded)
    frames = [camera_frames(DISTINCT_FRAMES, seed=i) for i in range(cameras)]
    trajectory = joint_positions(5000).astype(np.float32)
    features = [spec for name, spec in source.features.items() if name != "timestamp"]
    start = time.perf_counter()
    writer = DatasetWriter.create(path, robot=source.robot, record_hz=record_hz, features=features, tasks=["benchmark"])
    frame = {name: np.zeros(spec.shape, spec.dtype) for name, spec in source.features.items()}
    step = round(joint_hz / record_hz)  # the joint message a record tick sees of the joint stream
    for n in range(n_frames):
        frame["joint_position"] = trajectory[(n * step) % len(trajectory)]
        frame["joint_velocity"] = trajectory[(n * step + 1) % len(trajectory)] - trajectory[(n * step) % len(trajectory)]
        for i in range(cameras):
            frame[f"image.cam{i}"] = frames[i][n % DISTINCT_FRAMES]
        frame["timestamp"] = n / record_hz
        writer.append_frame(frame)
    writer.commit_episode("benchmark", True)
    writer.close()
    seconds = time.perf_counter() - start
    size = folder_bytes(path)
    return {"frames": n_frames, "seconds": round(seconds, 3), "bytes": size, "MB_per_s": round(size / seconds / 1e6, 2),
            "frames_per_s": round(n_frames / seconds, 1), "bytes_per_frame": round(size / n_frames)}


def mcap_direct(path: Path, counts: dict[str, int], cameras: int, joint_hz: float, camera_hz: float) -> dict:
    """Every message the publisher sent while recording, CDR-serialized, into a rosbag2 MCAP bag."""
    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.writer import StoragePlugin
    from rosbags.typesys import Stores, get_typestore

    from robot_stack.ros import convert, messages

    os.environ.setdefault("ROBOT_STACK_ROS_BACKEND", "dds")
    typestore = get_typestore(Stores.ROS2_JAZZY)
    trajectory = joint_positions(5000)
    joint_cdr = [bytes(messages.serialize(convert.joint_state(JOINTS, trajectory[n], trajectory[n + 1] - trajectory[n],
                                                             stamp_ns=n * 2_000_000))) for n in range(500)]
    camera_cdr = [[bytes(messages.serialize(convert.image(frame, stamp_ns=n, frame_id=f"cam{i}")))
                   for n, frame in enumerate(camera_frames(DISTINCT_FRAMES, seed=i))] for i in range(cameras)]
    # The stream in time order: joints every 1/joint_hz, each camera every 1/camera_hz (offset as published).
    events = [(n / joint_hz, -1, n) for n in range(counts["joint_states"])]
    for i in range(cameras):
        offset = (i + 0.5) / camera_hz / cameras
        events += [(offset + n / camera_hz, i, n) for n in range(counts[f"cam{i}"])]
    events.sort()
    start = time.perf_counter()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        joints = writer.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=typestore)
        images = [writer.add_connection(f"/camera/cam{i}/image_raw", "sensor_msgs/msg/Image", typestore=typestore)
                  for i in range(cameras)]
        for when, camera, n in events:
            stamp = int(when * 1e9)
            if camera < 0:
                writer.write(joints, stamp, joint_cdr[n % len(joint_cdr)])
            else:
                writer.write(images[camera], stamp, camera_cdr[camera][n % DISTINCT_FRAMES])
    seconds = time.perf_counter() - start
    size = folder_bytes(path)
    return {"messages": len(events), "seconds": round(seconds, 3), "bytes": size, "MB_per_s": round(size / seconds / 1e6, 2),
            "camera_frames": sum(counts[f"cam{i}"] for i in range(cameras))}


def recorded_summary(path: Path, record_hz: float, recording_s: float) -> dict:
    from robot_stack.data import Dataset

    ds = Dataset.open(path)
    times = ds.frames("timestamp")
    gaps = np.diff(times) * record_hz
    stale = {name[len("stale."):]: int(ds.frames(name).sum()) for name in ds.features if name.startswith("stale.")}
    size = folder_bytes(path)
    raw = sum(spec.frame_bytes for spec in ds.features.values()) * ds.n_frames
    return {
        "episodes": ds.n_episodes, "frames": ds.n_frames, "bytes": size, "raw_bytes": raw,
        "MB_per_s": round(size / recording_s / 1e6, 2), "raw_MB_per_s": round(raw / recording_s / 1e6, 2),
        "bytes_per_frame": round(size / max(1, ds.n_frames)),
        "dropped_ticks_from_timestamps": int(np.sum(np.maximum(0, np.round(gaps[gaps > 1.5]) - 1))),
        "tick_interval_ms": {"p50": round(float(np.median(np.diff(times))) * 1e3, 2),
                             "max": round(float(np.max(np.diff(times))) * 1e3, 2)},
        "stale_frames": stale,
    }


def filesystem(path: Path) -> str:
    """The file system type under ``path`` (ext4, tmpfs, ...): the recorder writes there."""
    types = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True, check=False).stdout.split()
    return types[-1] if types else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of recording (default 60)")
    parser.add_argument("--quick", action="store_true", help="10 s of recording")
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--joint-hz", type=float, default=500.0)
    parser.add_argument("--record-hz", type=float, default=30.0)
    parser.add_argument("--workdir", type=Path, help="where the datasets and the bag go (default: a new temp folder, removed)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--role", choices=("main", "publisher"), default="main", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.duration = 10.0
    if args.role == "publisher":
        run_publisher(args)
        return

    os.environ.update(loopback_env())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="record_throughput_"))
    machine_info = machine(["robot_stack", "numpy", "cyclonedds", "zarr", "numcodecs", "rosbags"],
                           workdir_filesystem=filesystem(workdir))
    workdir.mkdir(parents=True, exist_ok=True)
    recorded, direct, bag = workdir / "recorded.zarr", workdir / "direct.zarr", workdir / "bag"
    for path in (recorded, direct, bag):
        shutil.rmtree(path, ignore_errors=True)
    features = workdir / "features.yaml"
    features.write_text(json.dumps(features_document(args.cameras, args.record_hz)))
    log = (workdir / "recorder.log").open("w")
    recorder = subprocess.Popen(
        [sys.executable, "-m", "robot_stack.launch.entry_point", "recorder", "--ros-args", "-p", f"features_file:={features}",
         "-p", f"dataset:={recorded}", "-p", f"record_hz:={args.record_hz}", "-p", "min_free_mb:=0", "-p", "operator:=bench"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        print(f"live: {args.cameras} cameras {W}x{H} rgb8 at {args.camera_hz:g} Hz + joint_states at {args.joint_hz:g} Hz, "
              f"recorded at {args.record_hz:g} Hz for {args.duration:g} s ...", flush=True)
        publisher = subprocess.run(
            [sys.executable, __file__, "--role", "publisher", "--duration", str(args.duration), "--cameras", str(args.cameras),
             "--camera-hz", str(args.camera_hz), "--joint-hz", str(args.joint_hz), "--record-hz", str(args.record_hz)],
            capture_output=True, text=True, cwd=REPO, timeout=args.duration + 180, check=False)
        if publisher.returncode != 0:
            raise SystemExit(f"publisher failed:\n{publisher.stderr[-3000:]}")
        live = json.loads(publisher.stdout.strip().splitlines()[-1])
    finally:
        recorder.send_signal(2)
        recorder.wait(timeout=60)
        log.close()
    status = live["final_status"]
    summary = recorded_summary(recorded, args.record_hz, live["recording_s"])
    camera_lost = {f"cam{i}": live["published"][f"cam{i}"] - status["received"][f"image.cam{i}"] for i in range(args.cameras)}
    joint_lost = live["published"]["joint_states"] - status["received"]["joint_position"]
    print("zarr direct ...", flush=True)
    direct_result = zarr_direct(direct, recorded, summary["frames"], args.cameras, args.record_hz, args.joint_hz)
    print("mcap ...", flush=True)
    mcap_result = mcap_direct(bag, live["published_while_recording"], args.cameras, args.joint_hz, args.camera_hz)
    recorder_result = {
        **summary,
        "seconds": round(live["recording_s"], 3),
        "dropped_ticks_status": status["dropped_total"],
        "camera_messages_lost": camera_lost,
        "joint_state_messages_lost": joint_lost,
        "recorder_cpu_percent_of_one_core": round(100 * live["recorder_cpu_s"] / live["recording_s"], 1),
        "publisher_cpu_percent_of_one_core": round(100 * live["publisher_cpu_s"] / live["recording_s"], 1),
        "published_hz": live["achieved_hz"],
        "publishes_skipped_late": live["late_publishes"],
    }
    zero_dropped = (recorder_result["dropped_ticks_status"] == 0 and summary["dropped_ticks_from_timestamps"] == 0
                    and all(v == 0 for v in camera_lost.values()))
    result = {
        "benchmark": "record_throughput",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **machine_info,
        "settings": {"duration_s": args.duration, "quick": args.quick, "cameras": args.cameras, "width": W, "height": H,
                     "camera_hz": args.camera_hz, "joint_hz": args.joint_hz, "record_hz": args.record_hz,
                     "camera_max_age_s": CAMERA_MAX_AGE_S, "joint_max_age_s": JOINT_MAX_AGE_S,
                     "qos": "publishers: sensor data (best effort, keep last 5), as a camera driver offers; "
                            "recorder subscriptions: best effort, keep last 10 (images) / 100 (joint_states)",
                     "storage": "files in the page cache of the machine's disk"},
        "recorder": recorder_result,
        "zarr_direct": direct_result,
        "mcap": mcap_result,
        "ratios": {
            "zarr_direct_MBps_over_recorder_MBps": round(direct_result["MB_per_s"] / summary["MB_per_s"], 2),
            "zarr_direct_frames_per_s_over_record_hz": round(direct_result["frames_per_s"] / args.record_hz, 2),
            "mcap_MBps_over_recorder_MBps": round(mcap_result["MB_per_s"] / summary["MB_per_s"], 2),
            "mcap_bytes_over_recorder_bytes": round(mcap_result["bytes"] / summary["bytes"], 2),
        },
        "zero_dropped": "pass" if zero_dropped else "fail",
    }
    print_table(result)
    write_result(args.out, result)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def print_table(result: dict) -> None:
    rec, direct, mcap, ratios = result["recorder"], result["zarr_direct"], result["mcap"], result["ratios"]
    print()
    print(f"{'writer':34s} {'seconds':>8s} {'stored MB':>10s} {'MB/s':>8s}  notes")
    print(f"{'recorder node over DDS (live)':34s} {rec['seconds']:8.1f} {rec['bytes'] / 1e6:10.1f} {rec['MB_per_s']:8.1f}  "
          f"{rec['frames']} frames, raw {rec['raw_MB_per_s']:.1f} MB/s, recorder CPU {rec['recorder_cpu_percent_of_one_core']:.0f}% of a core")
    print(f"{'DatasetWriter straight (1 process)':34s} {direct['seconds']:8.1f} {direct['bytes'] / 1e6:10.1f} {direct['MB_per_s']:8.1f}  "
          f"{direct['frames_per_s']:.0f} frames/s = {ratios['zarr_direct_frames_per_s_over_record_hz']:.1f}x the record rate")
    print(f"{'rosbags MCAP writer (1 process)':34s} {mcap['seconds']:8.1f} {mcap['bytes'] / 1e6:10.1f} {mcap['MB_per_s']:8.1f}  "
          f"{mcap['messages']} messages, uncompressed: {ratios['mcap_bytes_over_recorder_bytes']:.1f}x the recorder's bytes")
    print()
    print(f"dropped ticks: {rec['dropped_ticks_status']} (status), {rec['dropped_ticks_from_timestamps']} (timestamps); "
          f"camera messages lost: {rec['camera_messages_lost']}; joint_states lost: {rec['joint_state_messages_lost']}; "
          f"stale frames: {rec['stale_frames']}")
    print(f"ratios: {ratios}; zero dropped: {result['zero_dropped']}")


if __name__ == "__main__":
    main()
