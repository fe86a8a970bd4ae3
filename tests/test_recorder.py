"""The recorder node over real DDS into real Zarr: the collect launch on the MuJoCo sim, kill -9 at random
moments, a disk that fills, stale and missing topics, discard, per-episode task text, SIGINT."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO

from robot_stack.data import Dataset, recover, validate
from robot_stack.errors import DatasetError
from robot_stack.record import RecorderError, load_config, parse_config
from robot_stack.ros import convert

RECORD_HZ = 25.0
PUBLISH_HZ = 50.0
IMAGE = (24, 32, 3)
KEY_UNIT = 100_000  # the driver's position code (Driver): exact in float32 up to key 167


def features_file(tmp_path: Path, image: tuple[int, int, int] = IMAGE, name: str = "features.yaml", **extra) -> Path:
    """A features file for the test's own publishers (no sim): a counter, an image and a command."""
    document = {
        "robot": {"name": "test_arm", "command": {"meaning": "test command", "names": ["x"], "low": [-1.0], "high": [1.0],
                                                 "hold": [0.0]}},
        "task": "the default task",
        "default_max_age": 0.2,
        "features": {
            "position": {"topic": "/test/position", "type": "std_msgs/msg/Float64", "field": "data", "units": "m"},
            "image.cam": {"topic": "/test/image", "type": "sensor_msgs/msg/Image", "shape": list(image)},
            "action": {"topic": "/test/command", "type": "std_msgs/msg/Float64MultiArray", "field": "data"},
            **extra,
        },
    }
    path = tmp_path / name
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


def start_recorder(features: Path, dataset: Path, log: Path, **params) -> subprocess.Popen:
    args = [sys.executable, "-m", "robot_stack.launch.entry_point", "recorder", "--ros-args",
            "-p", f"features_file:={features}", "-p", f"dataset:={dataset}", "-p", f"record_hz:={RECORD_HZ}"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    with log.open("a") as handle:
        return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)


def stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


class Driver:
    """The test's side of a recorder: publishes the features at 50 Hz, sends control words, reads the status.

    position = key * KEY_UNIT + n, n counting the messages (n < KEY_UNIT: 2,000 s at 50 Hz): every frame says
    which episode (key) it was recorded for, and a repeated value means a repeated (stale) message. (With
    KEY_UNIT 1000 a test slowed past 20 s by a loaded machine read message 1080 of key 9 as key 10.)
    """

    def __init__(self, ros, image: tuple[int, int, int] = IMAGE) -> None:
        self.ros = ros
        self.node = ros.create_node("driver")
        qos = ros.qos
        self.position_pub = self.node.create_publisher("std_msgs/msg/Float64", "/test/position", qos.DEFAULT)
        self.image_pub = self.node.create_publisher("sensor_msgs/msg/Image", "/test/image", qos.SENSOR_DATA)
        self.command_pub = self.node.create_publisher("std_msgs/msg/Float64MultiArray", "/test/command", qos.DEFAULT)
        self.control = self.node.create_publisher("std_msgs/msg/String", "recorder/control", qos.DEFAULT)
        self.node.create_subscription("std_msgs/msg/String", "recorder/status", self.on_status, qos.TRANSIENT_LOCAL)
        self.status: dict | None = None
        self.paused: set[str] = set()
        self.key, self.count = 0, 0
        self.published: list[float] = []
        self.image = image
        self.noise = np.random.default_rng(0)
        self.next_publish = time.monotonic()

    def on_status(self, message) -> None:
        self.status = json.loads(message.data)

    def publish(self) -> None:
        self.count += 1
        assert self.count < KEY_UNIT, "the position code ran out of counts: raise KEY_UNIT"
        value = self.key * float(KEY_UNIT) + self.count
        Float64 = self.ros.message_class("std_msgs/msg/Float64")
        if "position" not in self.paused:
            self.position_pub.publish(Float64(data=value))
            self.published.append(value)
        if "image" not in self.paused:
            frame = self.noise.integers(0, 256, self.image, dtype=np.uint8)
            self.image_pub.publish(convert.image(frame, stamp_ns=time.time_ns()))
        if "command" not in self.paused:
            self.command_pub.publish(convert.float_array([np.sin(self.count / 10)]))

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            if now >= self.next_publish:
                self.publish()
                self.next_publish = max(self.next_publish + 1 / PUBLISH_HZ, now)
            self.ros.spin_once(self.node, max(0.0, min(end, self.next_publish) - time.monotonic()))

    def wait(self, predicate, timeout: float = 20.0, what: str = "a status") -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.status is not None and predicate(self.status):
                return self.status
            self.spin(0.02)
        raise AssertionError(f"timed out waiting for {what}; last status: {self.status}")

    def send(self, word: str) -> None:
        self.wait(lambda _: self.control.get_subscription_count() > 0, what="the recorder's control subscription")
        self.control.publish(self.ros.message_class("std_msgs/msg/String")(data=word))

    def ready(self, process: subprocess.Popen, log: Path) -> dict:
        """Wait for a freshly started recorder's first status."""
        self.status = None
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.status is not None and self.status.get("pid") == process.pid:
                self.spin(0.3)  # its control subscription may be matched a little after its status writer
                return self.status
            assert process.poll() is None, f"the recorder exited: {log.read_text()[-3000:]}"
            self.spin(0.02)
        raise AssertionError(f"no status from the recorder: {log.read_text()[-3000:]}")


@pytest.fixture
def driver(ros_session, dds_env):
    return Driver(ros_session("dds"))


# ---- the collect launch on the sim


def test_collect_launch_records_scripted_episodes_with_the_commanded_actions(ros_session, dds_env, tmp_path):
    ros = ros_session("dds")
    listener = ros.create_node("listener")
    commands: list[np.ndarray] = []
    listener.create_subscription("std_msgs/msg/Float64MultiArray", "robot/command",
                                 lambda m: commands.append(np.asarray(m.data, np.float32)), ros.qos.DEFAULT.with_depth(1000))
    dataset = tmp_path / "reach.zarr"
    log = tmp_path / "launch.log"
    with log.open("w") as handle:
        launch = subprocess.Popen(
            [str(Path(sys.executable).parent / "robot-stack"), "launch", "launch/collect.launch.yaml", "teleop:=scripted",
             "task:=reach2d", "episodes:=3", f"dataset:={dataset}", "cameras:=top:48x64", "realtime:=false", "seed:=5",
             "operator:=ada"],
            cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    end = time.monotonic() + 90
    while launch.poll() is None and time.monotonic() < end:
        ros.spin_once(listener, 0.05)
    stop(launch)
    output = log.read_text()
    assert launch.returncode == 0, output[-4000:]
    assert "teleop-3 exited and has on_exit: shutdown" in output
    # The teleop counts what the recorder's status confirmed as committed, not what it sent.
    assert [f"episode {n}/3 committed: success" in output for n in (1, 2, 3)] == [True] * 3

    ds = Dataset.open(dataset)
    assert (ds.n_episodes, ds.unfinished_frames) == (3, 0), output[-3000:]
    assert validate(dataset, progress=False) == []
    shapes = {name: spec.shape for name, spec in ds.features.items()}
    assert shapes == {
        "timestamp": (), "joint_position": (2,), "joint_velocity": (2,), "eef_pose": (7,), "object_pose": (7,),
        "action": (2,), "sim_reward": (), "sim_success": (), "image.top": (48, 64, 3),
        **{f"stale.{name}": () for name in ("joint_position", "joint_velocity", "eef_pose", "object_pose", "action",
                                             "sim_reward", "sim_success", "image.top")},
    }
    assert ds.robot["sim_task"] == "reach2d" and ds.robot["command_spec"]["names"] == ["dx", "dy"]
    assert ds.success.tolist() == [1, 1, 1]  # the expert reaches every target
    sent = np.array(commands)
    for index in range(ds.n_episodes):
        episode, info = ds.episode(index), ds.episode_info(index)
        assert info.task_text == "move the fingertip onto the target" and info.operator == "ada"
        assert episode["sim_success"][-1] and not episode["sim_success"][0]
        assert not any(episode[name].any() for name in episode if name.startswith("stale."))  # lockstep: all fresh
        np.testing.assert_allclose(np.diff(episode["timestamp"]), 0.05, atol=1e-9)  # one frame per sim step
        assert episode["image.top"][0].std() > 0
        # Each frame's action is the command sent after its observation: the recorded sequence is a run of
        # the commanded one. Roughly: a recorder that falls a step behind (creating the dataset at the first
        # start, a loaded machine) pairs a few frames with a neighbouring command.
        actions = episode["action"]
        matches = [np.sum(np.all(np.isclose(sent[offset:offset + len(actions)], actions, atol=1e-6), axis=1))
                   for offset in range(len(sent) - len(actions) + 1)]
        assert max(matches) >= 0.75 * len(actions), f"episode {index}: {max(matches)} of {len(actions)} actions match"
        assert all(np.isclose(sent, action, atol=1e-6).all(axis=1).any() for action in actions)  # none made up


# ---- kill -9


def test_a_recorder_killed_at_random_moments_loses_no_committed_episode(driver, tmp_path):
    features, dataset, log = features_file(tmp_path), tmp_path / "killed.zarr", tmp_path / "recorder.log"
    rng = random.Random(7)
    outcome: dict[int, bool] = {}  # key -> success sent for it
    key, expected_episodes, unfinished, recorded_keys, unfinished_key = 0, 0, 0, [], None
    for cycle in range(10):
        policy = ("keep", "drop")[cycle % 2]
        recorder = start_recorder(features, dataset, log, recover_on_start=policy, min_free_mb=0)
        status = driver.ready(recorder, log)
        if cycle:  # it recovered what the last kill left: kept as an episode (task unknown) or dropped
            kept = policy == "keep" and unfinished > 0
            assert status["error"] is None and status["episode"] == expected_episodes + kept, (cycle, status)
            ds = Dataset.open(dataset)
            assert ds.unfinished_frames == 0
            if kept:
                info = ds.episode_info(-1)
                keys = np.unique(ds.episode(-1)["position"] // KEY_UNIT)
                assert keys.tolist() == [unfinished_key]  # (a prefix of) the attempt that was being recorded
                if info.notes == "recovered":
                    assert (info.success, info.task_text) == (None, None)
                else:  # the kill cut a commit between its last two writes: recover completed it
                    assert (info.task_text, info.success) == (f"key {keys[0]}", outcome[keys[0]])
                expected_episodes += 1
        kill_at = time.monotonic() + rng.uniform(0.3, 2.0)
        while time.monotonic() < kill_at:
            key += 1
            driver.key = key
            driver.send(f"task:key {key}")
            driver.spin(0.25)  # ticks past the key change (with room for a loaded machine): the first frame carries it
            recorded_keys.append(key)
            driver.send("start")
            driver.spin(min(rng.uniform(0.1, 1.3), max(0.0, kill_at - time.monotonic())))
            if time.monotonic() >= kill_at:
                break
            outcome[key] = rng.random() < 0.7
            driver.send("success" if outcome[key] else "fail")
            driver.spin(0.05)
        recorder.send_signal(signal.SIGKILL)
        assert recorder.wait(timeout=10) == -signal.SIGKILL

        try:
            ds = Dataset.open(dataset)
        except DatasetError:
            assert cycle == 0 and expected_episodes == 0  # killed while creating it: nothing was recorded yet
            shutil.rmtree(dataset, ignore_errors=True)
            recorded_keys.clear()
            continue
        assert validate(dataset, progress=False) == [], f"cycle {cycle}"
        assert ds.n_episodes >= expected_episodes
        for index in range(expected_episodes, ds.n_episodes):  # committed in this cycle: intact, in order
            episode, info = ds.episode(index), ds.episode_info(index)
            episode_key = int(info.task_text.split()[-1])
            assert (np.unique(episode["position"] // KEY_UNIT) == [episode_key]).all(), f"cycle {cycle} episode {index}"
            assert info.success == outcome[episode_key]
            assert episode["image.cam"].shape[1:] == IMAGE and len(episode["image.cam"][:]) == info.length
        expected_episodes, unfinished = ds.n_episodes, ds.unfinished_frames
        if unfinished:
            keys = np.unique(ds.array("position")[ds.n_frames:ds.n_frames + unfinished] // KEY_UNIT)
            # One attempt, not committed: the last one started, or, when a loaded machine kept the recorder a
            # control word behind the driver, the one before it (its success/fail word not yet handled).
            assert len(keys) == 1 and int(keys[0]) in recorded_keys[-2:], (cycle, keys, recorded_keys[-2:])
            unfinished_key = int(keys[0])

    # A recorder that must not guess says what to do and records again once the dataset is recovered.
    recorder = start_recorder(features, dataset, log, min_free_mb=0)
    driver.ready(recorder, log)
    driver.send("start")
    driver.spin(1.3)  # past a flush: frames on disk
    recorder.send_signal(signal.SIGKILL)
    recorder.wait(timeout=10)
    recorder = start_recorder(features, dataset, log, min_free_mb=0)
    try:
        status = driver.ready(recorder, log)
        assert "has an unfinished episode" in status["error"] and f"robot-stack data recover {dataset}" in status["error"]
        driver.send("start")
        driver.spin(0.3)
        assert not driver.status["recording"]
        recover(dataset, keep=False)
        driver.send("start")
        driver.wait(lambda s: s["recording"], what="recording after recover")
        driver.spin(0.3)
        driver.send("success")
        driver.wait(lambda s: not s["recording"] and s["committed_this_run"] == 1, what="the commit")
    finally:
        assert stop(recorder) == 0
    assert Dataset.open(dataset).n_episodes == expected_episodes + 1
    assert validate(dataset, progress=False) == []


# ---- a full disk


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount_point)], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {result.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, name: str, leave_bytes: int = 0) -> Path:
    """Write a ballast file until the disk has about `leave_bytes` free (0: until it is full)."""
    path = disk / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while shutil.disk_usage(disk).free > leave_bytes + 65536:
            os.write(descriptor, b"\xff" * 65536)
        while not leave_bytes:
            os.write(descriptor, b"\xff" * 4096)
    except OSError:
        pass  # full
    finally:
        os.close(descriptor)
    return path


def test_a_full_disk_stops_the_episode_with_a_clear_error_and_keeps_committed_ones(driver, small_disk, tmp_path):
    image = (64, 64, 3)  # noise: about 12 kB a frame whatever the codec does
    features, dataset, log = features_file(tmp_path, image), small_disk / "d.zarr", tmp_path / "recorder.log"
    driver.image = image
    recorder = start_recorder(features, dataset, log, min_free_mb=1)
    try:
        driver.ready(recorder, log)
        driver.send("start")
        driver.spin(0.6)
        driver.send("success")
        driver.wait(lambda s: s["committed_this_run"] == 1, what="episode 0")

        ballast = fill(small_disk, "ballast")  # nearly full: refused before anything is written
        driver.send("start")
        status = driver.wait(lambda s: s["error"] and "nearly full" in s["error"], what="the refusal")
        assert not status["recording"] and "min_free_mb is 1" in status["error"]

        ballast.unlink()
        fill(small_disk, "ballast", leave_bytes=2_000_000)
        driver.send("start")
        driver.wait(lambda s: s["recording"], what="recording with 2 MB free")
        fill(small_disk, "ballast2")  # the disk fills while recording
        status = driver.wait(lambda s: not s["recording"], timeout=10, what="the write error")
        # In the operator's terms with one thing to do, whatever the store's own message says.
        assert status["error"].startswith(f"recording stopped: the disk holding {dataset} is full (")
        assert status["error"].endswith("committed episodes are intact: free space, then start a new episode")
        assert "()" not in status["error"] and status["failed_this_run"] == 2  # the refused start, this one
        assert recorder.poll() is None  # the node keeps running

        for path in small_disk.glob("ballast*"):
            path.unlink()
        driver.send("task:after the disk filled")
        driver.send("start")
        driver.wait(lambda s: s["recording"], what="recording again once space is free")
        driver.spin(0.5)
        driver.send("fail")
        driver.wait(lambda s: s["committed_this_run"] == 2, what="episode 1")
    finally:
        assert stop(recorder) == 0
    assert f"the disk holding {dataset} is full" in log.read_text() and "discard_episode()" not in log.read_text()
    ds = Dataset.open(dataset)
    assert (ds.n_episodes, ds.unfinished_frames) == (2, 0)
    assert ds.success.tolist() == [1, 0] and ds.episode_info(1).task_text == "after the disk filled"
    assert validate(dataset, progress=False) == []


# ---- stale and missing topics, discard, task text, SIGINT


def test_stale_and_missing_topics_are_flagged_and_counted_never_silently_filled(driver, tmp_path):
    features, dataset, log = features_file(tmp_path), tmp_path / "stale.zarr", tmp_path / "recorder.log"
    driver.paused = {"image"}  # a camera that never published
    recorder = start_recorder(features, dataset, log, min_free_mb=0, operator="ada")
    try:
        driver.ready(recorder, log)
        driver.send("start")
        status = driver.wait(lambda s: s["error"] is not None, what="the start refusal")
        assert status["error"] == ("cannot start recording: no message yet on /test/image (feature image.cam): "
                                   "is the camera running? (or mark the feature optional)")
        assert not status["recording"] and not dataset.exists()

        driver.paused = set()
        driver.send("task:pick the red cube")
        driver.spin(0.3)
        driver.send("start")
        driver.wait(lambda s: s["recording"], what="recording")
        driver.spin(0.6)
        gap_from = driver.published[-1]
        driver.paused = {"position"}  # the position topic stops publishing mid-episode
        driver.spin(0.8)
        driver.paused = set()
        driver.spin(0.5)
        driver.send("success")
        status = driver.wait(lambda s: not s["recording"] and s["committed_this_run"] == 1, what="episode 0")
        stale_count = status["stale"]["position"]

        driver.send("task:stack the blocks")
        driver.send("start")
        driver.wait(lambda s: s["recording"], what="the attempt to discard")
        driver.spin(0.3)
        driver.send("discard")
        driver.wait(lambda s: not s["recording"] and "discarded" in s["event"], what="the discard")
        driver.send("start")
        driver.wait(lambda s: s["recording"], what="episode 1")
        driver.spin(0.3)
        driver.send("fail")
        driver.wait(lambda s: s["committed_this_run"] == 2, what="episode 1's commit")
        driver.send("start")
        driver.wait(lambda s: s["recording"], what="episode 2")
        driver.spin(0.3)
    finally:
        assert stop(recorder) == 0  # SIGINT while recording: committed, success unknown

    ds = Dataset.open(dataset)
    assert (ds.n_episodes, ds.unfinished_frames) == (3, 0)
    assert [ds.episode_info(i).task_text for i in range(3)] == ["pick the red cube", "stack the blocks", "stack the blocks"]
    assert ds.success.tolist() == [1, 0, -1]
    assert ds.episode_info(2).notes.endswith("recorder shut down while recording")  # after any stale counts
    assert ds.tasks == ["pick the red cube", "stack the blocks"]
    assert ds.episode_info(0).operator == "ada"

    episode = ds.episode(0)
    position, stale = episode["position"], episode["stale.position"]
    assert 0.5 * 0.6 * RECORD_HZ <= stale.sum() <= 0.8 * RECORD_HZ + 2  # the gap, less max_age (0.2 s)
    assert stale.sum() == stale_count and f"stale frames: position {stale_count}" in ds.episode_info(0).notes
    run = np.flatnonzero(stale)
    assert (np.diff(run) == 1).all()  # one run: the gap
    assert (position[run] == gap_from).all()  # the last value, kept and flagged
    held = np.flatnonzero(position == gap_from)  # the gap: the last value held, first fresh, then too old
    assert held[-1] == run[-1] and len(held) - len(run) <= 0.2 * RECORD_HZ + 1
    assert not episode["stale.image.cam"].any() and not episode["stale.action"].any()
    assert validate(dataset, progress=False) == []

    # Another setup cannot append to this dataset: the status says why, at start-up.
    other = features_file(tmp_path, image=(48, 64, 3), name="other.yaml")
    recorder = start_recorder(other, dataset, log, min_free_mb=0)
    try:
        status = driver.ready(recorder, log)
        assert status["error"].startswith(f"cannot append to {dataset}: it was recorded with a different setup "
                                          "(feature 'image.cam' has shape (24, 32, 3) in one and (48, 64, 3) in the other)")
    finally:
        stop(recorder)


def test_a_bad_features_file_is_a_clear_error():
    def error(document: dict) -> str:
        with pytest.raises(RecorderError) as raised:
            parse_config(document, "f.yaml")
        return str(raised.value)

    robot = {"name": "arm", "command": {"meaning": "m", "names": ["x"], "low": [-1.0], "high": [1.0], "hold": [0.0]}}
    joints = {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "field": "position"}
    assert "unknown key(s) ['rate']" in error({"robot": robot, "features": {"q": {**joints, "rate": 3}}})
    assert "has no field 'positions'" in error({"robot": robot, "features": {"q": {**joints, "field": "positions"}}})
    assert "unknown message type 'sensor_msgs/msg/Joints'" in error(
        {"robot": robot, "features": {"q": {**joints, "type": "sensor_msgs/msg/Joints"}}})
    assert "use '.' where ROS uses '/' (image.agentview)" in error({"robot": robot, "features": {"image/x": joints}})
    assert "says nothing about the command" in error({"robot": {"name": "arm"}, "features": {"q": joints}})
    no_hold = {"name": "arm", "command": {"meaning": "m", "names": ["x"], "low": [-1.0], "high": [1.0]}}
    assert "low, high and hold each as long as names" in error({"robot": no_hold, "features": {"q": joints}})
    config = parse_config({"robot": robot, "features": {"q": joints}}, cameras="agentview:84x96")
    assert [(f.name, f.topic, f.shape) for f in config.features] == [
        ("q", "/joint_states", None), ("image.agentview", "/camera/agentview/image_raw", (84, 96, 3))]


def test_the_features_file_in_docs_dataset_md_and_launch_params_are_valid():
    from robot_stack.sim.task import command_spec_of

    text = (REPO / "docs" / "dataset.md").read_text().split("## Recording from ROS topics", 1)[1]
    example = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    config = parse_config(example, "docs/dataset.md", command_spec_of=command_spec_of)
    assert config.robot["command_spec"]["names"] == ["dx", "dy"]
    assert {f.name: f.shape for f in config.features}["image.wrist"] == (84, 84, 3)
    for path in (REPO / "launch" / "params").glob("recorder_*.yaml"):  # lift's scene may be absent: its spec is not the point
        config = load_config(path, cameras="top:48x64", command_spec_of=lambda _: command_spec_of("reach2d"))
        assert {"joint_position", "action", "sim_reward", "image.top"} <= {f.name for f in config.features}, path

