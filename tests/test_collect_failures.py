"""A collection that fails says so, stops and exits non-zero; a recorder stopped by signals commits its episode.

Real processes over loopback DDS (`robot-stack launch` of collect.launch.yaml on the MuJoCo reach2d task in
lockstep), real Zarr on disk. The recorder-only tests reuse test_recorder's driver (its own publishers).
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
import test_recorder
from test_recorder import Driver, features_file, fill, start_recorder

from robot_stack import ros
from robot_stack.data import Dataset, DatasetWriter, FeatureSpec, validate
from robot_stack.record import Recorder, parse_config
from robot_stack.ros import convert

small_disk = test_recorder.small_disk  # the fixture: a 6 MB tmpfs to fill (needs root, else skipped)
COLLECT = ["robot_stack", "collect.launch.yaml", "task:=reach2d", "teleop:=scripted", "realtime:=false"]


def collect_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "robot_stack.cli.main", "launch", *COLLECT, *args]


def run_collect(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(collect_command(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False)


def last_line(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr).strip().splitlines()[-1]


def foreign_dataset(path: Path) -> None:
    """A dataset recorded with another setup (another robot and features) than the reach2d recorder's."""
    features = [FeatureSpec("timestamp", "float64", (), "time", units="s"),
                FeatureSpec("gripper_width", "float32", (), "state", units="m")]
    writer = DatasetWriter.create(path, robot={"name": "other_arm", "command": "joint positions"}, record_hz=10.0,
                                  features=features)
    writer.close()


# ---- the scripted collect launch counts committed episodes and fails when the recorder records less


@pytest.mark.parametrize("case", ["disk_nearly_full", "foreign_dataset"])
def test_a_collect_launch_whose_recorder_refuses_every_episode_exits_non_zero_with_one_summary_line(case, dds_env, tmp_path):
    dataset = tmp_path / "refused.zarr"
    args = [f"dataset:={dataset}", "episodes:=2"]
    if case == "disk_nearly_full":
        args.append("min_free_mb:=1e12")  # more than any disk has: every start is refused
        reason = "cannot start recording: the disk holding"
    else:
        foreign_dataset(dataset)
        reason = f"cannot append to {dataset}: it was recorded with a different setup"
    result = run_collect(*args)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    summary = last_line(result)  # the launch's report ends with the teleop's last line: the summary
    assert "committed 0 of 2 episodes: the recorder did not record episode 1: " in summary, output[-3000:]
    assert reason in summary
    assert "episode 1/2 committed" not in output  # nothing was counted
    assert "node 'teleop' (teleop-3) failed: exit code 1" in output
    if case == "foreign_dataset":
        assert Dataset.open(dataset).n_episodes == 0


def test_a_disk_that_fills_during_collection_stops_it_with_the_count_of_what_was_committed(small_disk, dds_env):
    dataset = small_disk / "filled.zarr"
    fill(small_disk, "ballast", leave_bytes=600_000)  # room for a few episodes of camera frames, not for 50
    result = run_collect(f"dataset:={dataset}", "episodes:=50", "min_free_mb:=0", "cameras:=top:96x96")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    summary = last_line(result)
    assert "committed " in summary and " of 50 episodes: the recorder did not record episode " in summary, output[-3000:]
    assert f"recording stopped: the disk holding {dataset} is full" in summary and "free space" in summary
    assert "Traceback" not in output and "()" not in summary
    committed = int(summary.split("committed ", 1)[1].split(" of ", 1)[0])
    (small_disk / "ballast").unlink()
    ds = Dataset.open(dataset)
    assert ds.n_episodes == committed < 50  # what the operator is told is what is in the dataset
    assert validate(dataset, progress=False) == []


@pytest.mark.parametrize("argument, message", [
    ("episodes:=-2", "parameter 'episodes' of node '/teleop' is -2: it must be at least 1"),
    ("cameras:=top:64by64", "camera 'top:64by64': give name or name:HxW (e.g. agentview:84x84)"),
])
def test_bad_collect_arguments_are_one_line_errors(argument, message, dds_env, tmp_path):
    result = run_collect(f"dataset:={tmp_path / 'never.zarr'}", argument)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert message in output and "Traceback" not in output
    assert not (tmp_path / "never.zarr").exists()


# ---- where the dataset cannot go: named as such, never as a full disk


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write into: permission bits, or for root a read-only tmpfs."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs as root: {result.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fed_recorder(dataset: Path, tmp_path: Path, **options) -> Recorder:
    """A Recorder (no ROS) that has a fresh message for every feature, so only the dataset's place can stop it."""
    config = parse_config(json.loads(features_file(tmp_path).read_text()), "features")
    recorder = Recorder(config, dataset, record_hz=20.0, **options)
    Float64, Array = ros.message_class("std_msgs/msg/Float64"), ros.message_class("std_msgs/msg/Float64MultiArray")
    recorder.on_message("/test/position", Float64(data=1.0))
    recorder.on_message("/test/image", convert.image(np.zeros((24, 32, 3), np.uint8)))
    recorder.on_message("/test/command", Array(data=[0.5]))
    return recorder


@pytest.mark.parametrize("where", ["folder", "missing_folder_inside"])
def test_a_dataset_under_a_folder_that_cannot_be_written_is_named_as_such_not_as_a_full_disk(where, read_only_folder,
                                                                                           tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOT_STACK_ROS_BACKEND", "inproc")
    dataset = read_only_folder / "d.zarr" if where == "folder" else read_only_folder / "missing" / "d.zarr"
    recorder = fed_recorder(dataset, tmp_path, min_free_mb=1e12)  # a "full" disk too: the place is said first
    assert recorder.start() is False
    error = recorder.status()["error"]
    assert "nearly full" not in error and recorder.status()["failed_this_run"] == 1
    if where == "folder":
        assert error.startswith(f"cannot start recording: the folder {read_only_folder} cannot be written (")
    else:
        assert error.startswith(f"cannot start recording: the folder {dataset.parent} does not exist and cannot be "
                                f"created ({read_only_folder} cannot be written")
    assert "dataset:=PATH" in error


def test_a_missing_folder_that_can_be_created_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOT_STACK_ROS_BACKEND", "inproc")
    dataset = tmp_path / "new" / "folders" / "d.zarr"
    recorder = fed_recorder(dataset, tmp_path, min_free_mb=0)
    assert recorder.start() is True, recorder.status()["error"]
    recorder.on_tick()
    recorder.finish(True)
    recorder.close()
    assert Dataset.open(dataset).n_episodes == 1


# ---- signals: repeated SIGTERM, and a launch killed while the recorder's output goes to it


@pytest.fixture
def driver(ros_session, dds_env):
    return Driver(ros_session("dds"))


def test_repeated_sigterm_during_an_episode_commits_it_and_exits_0(driver, tmp_path):
    features, dataset, log = features_file(tmp_path), tmp_path / "sigterm.zarr", tmp_path / "recorder.log"
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    for cycle in range(3):
        recorder = start_recorder(features, dataset, log, min_free_mb=0)
        driver.ready(recorder, log)
        driver.send("start")
        driver.wait(lambda s: s["recording"], what="recording")
        driver.spin(rng.uniform(0.2, 0.6))
        for _ in range(rng.randint(2, 4)):  # e.g. a launch's SIGINT, then its parent-death SIGTERM
            recorder.send_signal(rng.choice([signal.SIGTERM, signal.SIGTERM, signal.SIGINT]))
            driver.spin(rng.uniform(0.0, 0.2))
        try:
            code = recorder.wait(timeout=30)
        finally:
            if recorder.poll() is None:
                recorder.kill()
        assert code == 0, f"seed {seed} cycle {cycle}: {log.read_text()[-3000:]}"
        ds = Dataset.open(dataset)
        assert (ds.n_episodes, ds.unfinished_frames) == (cycle + 1, 0), f"seed {seed}"
        assert ds.episode_info(cycle).notes.endswith("recorder shut down while recording")
    assert "Traceback" not in log.read_text()
    assert validate(dataset, progress=False) == []


def test_a_recorder_whose_output_reader_went_away_still_records_commits_and_exits_0(driver, tmp_path):
    features, dataset = features_file(tmp_path), tmp_path / "no_reader.zarr"
    args = [sys.executable, "-m", "robot_stack.launch.entry_point", "recorder", "--ros-args", "-p",
            f"features_file:={features}", "-p", f"dataset:={dataset}", "-p", "min_free_mb:=0"]
    recorder = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        driver.wait(lambda s: s.get("pid") == recorder.pid, what="the recorder's first status")
        recorder.stdout.close()  # as a killed launch's end of the node's output pipe: every log line now fails
        driver.spin(0.5)  # every feature has arrived
        driver.send("start")
        driver.wait(lambda s: s["recording"], what="recording")
        driver.spin(random.uniform(0.2, 0.5))
        driver.send("success")
        driver.wait(lambda s: s["committed_this_run"] == 1, what="the commit")
        driver.send("start")
        driver.wait(lambda s: s["recording"], what="recording again")
        driver.spin(random.uniform(0.1, 0.4))
        recorder.send_signal(signal.SIGTERM)
        assert recorder.wait(timeout=30) == 0
    finally:
        if recorder.poll() is None:
            recorder.kill()
    ds = Dataset.open(dataset)
    assert (ds.n_episodes, ds.unfinished_frames) == (2, 0)
    assert ds.episode_info(1).notes.endswith("recorder shut down while recording")


_PR_SET_CHILD_SUBREAPER = 36


@contextmanager
def adopting_orphans():
    """Make this process the subreaper of its descendants: a killed launch's nodes become our children, so
    their exit status can be read (os.waitpid)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    if prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("cannot become a child subreaper (Linux prctl)")
    try:
        yield
    finally:
        prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def reap(pid: int, timeout: float) -> int | None:
    """The exit code of an adopted orphan (negative: killed by that signal), or None if it outlived the timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    return None


def test_a_killed_launch_leaves_the_recorder_to_commit_its_episode_and_exit_0_with_its_output_gone(
        ros_session, dds_env, tmp_path):
    ros = ros_session("dds")
    listener = ros.create_node("listener")
    statuses: list[dict] = []
    listener.create_subscription("std_msgs/msg/String", "recorder/status", lambda m: statuses.append(json.loads(m.data)),
                                 ros.qos.TRANSIENT_LOCAL)
    dataset, log = tmp_path / "killed.zarr", tmp_path / "launch.log"
    delay = random.uniform(0.05, 0.35)  # a random moment of an episode (the expert's take 0.5 s or more)
    with adopting_orphans():
        with log.open("w") as handle:  # the launch's output to a file; each node's output is a pipe to the launch
            launch = subprocess.Popen(collect_command(f"dataset:={dataset}", "episodes:=50", "min_free_mb:=0"),
                                      cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
        nodes: list[int] = []
        try:
            end = time.monotonic() + 90
            while not (statuses and statuses[-1]["recording"]):
                assert time.monotonic() < end and launch.poll() is None, log.read_text()[-3000:]
                ros.spin_once(listener, 0.01)
            recorder_pid, committed = statuses[-1]["pid"], statuses[-1]["episode"]
            time.sleep(delay)
            nodes = [int(p) for p in Path(f"/proc/{launch.pid}/task/{launch.pid}/children").read_text().split()]
            assert recorder_pid in nodes
            launch.kill()
            launch.wait(timeout=10)
            codes = {pid: reap(pid, 30) for pid in nodes}
        finally:
            for pid in nodes:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
    assert codes[recorder_pid] == 0, f"recorder exit {codes[recorder_pid]}; launch log: {log.read_text()[-2000:]}"
    ds = Dataset.open(dataset)
    assert (ds.n_episodes, ds.unfinished_frames) == (committed + 1, 0)  # the episode in progress is committed
    assert validate(dataset, progress=False) == []
