"""Crash soak: scripted collection killed at random moments, again and again, into one dataset.

    python benchmarks/crash_soak.py                  # 60 kills (about 10 minutes on 2 cores)
    python benchmarks/crash_soak.py --kills 5 --seed 3

Each cycle starts `robot-stack launch robot_stack collect.launch.yaml task:=reach2d teleop:=scripted
realtime:=false` on the same dataset (recover_on_start alternating keep and drop, so the unfinished
episode a kill leaves is recovered both ways), waits a random time once the recorder is up, then sends
SIGKILL either to the recorder (the launch then fails and stops the rest) or to the whole launch (its
nodes get the kernel's parent-death SIGTERM, with their output pipes gone; this process adopts them as
child subreaper to read their exit status). After every kill it checks:

- no committed episode was lost: the dataset holds at least as many episodes as the recorder's status
  ever said were committed (its ``episode`` field: the committed episodes in the dataset);
- none is corrupt: ``robot_stack.data.validate`` finds nothing (a store killed while being created,
  before any commit, is counted and removed, as an operator would);
- after a launch kill: the recorder exited 0 and committed the episode it was recording (on_shutdown
  commit), so the dataset grew past the status seen just before the kill.

Loopback only: its own ROS_DOMAIN_ID and discovery tag. Prints a summary and writes
benchmarks/results/crash_soak.json.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _machine import machine, write_result  # a script's own folder is sys.path[0]

RESULTS = Path(__file__).resolve().parent / "results" / "crash_soak.json"
REPO = Path(__file__).resolve().parents[1]
COLLECT = ["robot_stack", "collect.launch.yaml", "task:=reach2d", "teleop:=scripted", "realtime:=false",
           "episodes:=100000", "min_free_mb:=0"]
_PR_SET_CHILD_SUBREAPER = 36


def loopback_env() -> None:
    """Before robot_stack.ros is imported: this process and every launch it starts meet only each other."""
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(random.randint(150, 200)),
                      ROBOT_STACK_DDS_TAG=f"crash-soak-{uuid.uuid4().hex[:12]}", ROBOT_STACK_ROS_BACKEND="dds",
                      PYTHONUNBUFFERED="1")
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ.setdefault("MUJOCO_GL", "osmesa")


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def reap(pid: int, timeout_s: float) -> int | None:
    """Exit code of an adopted orphan (negative: the signal that killed it); None if it is still running."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    return None


class StatusWatch:
    """The recorder's /recorder/status, as the operator's tools see it."""

    def __init__(self, ros) -> None:
        self.ros = ros
        self.node = ros.create_node("crash_soak")
        self.statuses: list[dict] = []
        self.node.create_subscription("std_msgs/msg/String", "recorder/status",
                                      lambda m: self.statuses.append(json.loads(m.data)), ros.qos.TRANSIENT_LOCAL)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ros.spin_once(self.node, min(0.02, max(0.0, end - time.monotonic())))


def cycle(index: int, kind: str, delay_s: float, dataset: Path, watch: StatusWatch, logs: Path, facts: dict) -> dict:
    """One launch, one kill; returns what was seen and checked."""
    from robot_stack.data import Dataset, validate
    from robot_stack.errors import DatasetError

    policy = ("keep", "drop")[index % 2]
    log = logs / f"cycle_{index:03d}.log"
    with log.open("w") as handle:
        launch = subprocess.Popen(
            [sys.executable, "-m", "robot_stack.cli.main", "launch", *COLLECT, f"dataset:={dataset}",
             f"recover_on_start:={policy}"], cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    watch.statuses.clear()
    row: dict = {"cycle": index, "kill": kind, "delay_s": round(delay_s, 2), "recover_on_start": policy}
    end = time.monotonic() + 60
    recorder_pid = None
    while recorder_pid is None:  # the recorder is up and talking
        watch.spin(0.05)
        mine = [s for s in watch.statuses if s.get("pid") in children(launch.pid)]
        if mine:
            recorder_pid = mine[-1]["pid"]
        if time.monotonic() > end or launch.poll() is not None:
            raise RuntimeError(f"cycle {index}: the recorder did not come up; see {log}")
    watch.spin(delay_s)
    nodes = children(launch.pid)
    last = [s for s in watch.statuses if s.get("pid") == recorder_pid][-1]
    if launch.poll() is not None:
        raise RuntimeError(f"cycle {index}: the launch ended before the kill (exit {launch.returncode}); see {log}")
    codes: dict[int, int | None] = {}
    if kind == "recorder":
        os.kill(recorder_pid, signal.SIGKILL)
        try:
            launch.wait(timeout=60)  # it reports the recorder's death and stops (and reaps) the other nodes
        except subprocess.TimeoutExpired:
            launch.kill()
            launch.wait()
            codes = {pid: reap(pid, 10.0) for pid in nodes if pid != recorder_pid}  # now ours
        row["launch_exit"] = launch.returncode
    else:
        launch.kill()
        launch.wait()
        codes = {pid: reap(pid, 60.0) for pid in nodes}
        row["recorder_exit"] = codes.get(recorder_pid)
    for pid, code in codes.items():
        if code is None:  # a node that outlived the kill (still our child, so its pid is not reused)
            os.kill(pid, signal.SIGKILL)
            reap(pid, 5.0)
    watch.spin(0.2)
    seen = max([s["episode"] for s in watch.statuses if s.get("episode") is not None] + [facts["seen"]])
    facts["seen"] = seen
    row.update(status_episodes=seen, recording_at_kill=last["recording"], committed_this_run=last["committed_this_run"])
    try:
        ds = Dataset.open(dataset)
    except DatasetError as error:
        if seen == 0:  # killed while the store was being created: nothing was committed, start over
            row.update(killed_while_creating=True, error=str(error))
            shutil.rmtree(dataset, ignore_errors=True)
            return row
        row.update(corrupt=[str(error)])
        return row
    row.update(episodes=ds.n_episodes, unfinished_frames=ds.unfinished_frames,
               lost=max(0, seen - ds.n_episodes), corrupt=[str(issue) for issue in validate(dataset, progress=False)])
    if kind == "launch" and last["recording"]:
        # Recording when last seen: committed at shutdown unless the episode ended by itself first, which
        # the teleop's own commit covers (the count grows either way).
        row["in_progress_committed"] = ds.n_episodes >= last["episode"] + 1
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=60, help="launches to kill (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    parser.add_argument("--max-delay", type=float, default=4.0, help="longest wait before a kill [s]")
    args = parser.parse_args()
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    seed = random.randrange(1 << 30) if args.seed is None else args.seed
    rng = random.Random(seed)
    loopback_env()
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    if prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("crash_soak needs Linux (prctl PR_SET_CHILD_SUBREAPER)", file=sys.stderr)
        return 2
    from robot_stack import ros

    machine_info = machine(["numpy", "zarr", "cyclonedds", "mujoco", "robot_stack"],
                           mujoco_gl=os.environ.get("MUJOCO_GL"))
    ros.init([])
    watch = StatusWatch(ros)
    work = Path(tempfile.mkdtemp(prefix="crash_soak_"))
    dataset, logs = work / "soak.zarr", work / "logs"
    logs.mkdir()
    facts = {"seen": 0}
    rows = []
    start = time.monotonic()
    print(f"seed {seed}; launch logs in {logs}")
    print("seen: committed episodes the status reported; in ds: episodes in the dataset after the kill; exit: the "
          "launch's (recorder killed) or the orphaned recorder's (launch killed)")
    print(f"{'cycle':>5s} {'kill':8s} {'delay':>5s} {'seen':>5s} {'in ds':>5s} {'lost':>4s} {'corrupt':>7s} {'exit':>5s}")
    try:
        for index in range(args.kills):
            kind = rng.choice(["recorder", "launch"])
            row = cycle(index, kind, rng.uniform(0.2, args.max_delay), dataset, watch, logs, facts)
            rows.append(row)
            code = row.get("recorder_exit", row.get("launch_exit"))
            print(f"{index:5d} {kind:8s} {row['delay_s']:5.1f} {row['status_episodes']:5d} "
                  f"{row.get('episodes', '-')!s:>5s} {row.get('lost', 0):4d} {len(row.get('corrupt', [])):7d} "
                  f"{code!s:>5s}", flush=True)
    finally:
        watch.node.destroy_node()
        ros.shutdown()
    seconds = time.monotonic() - start
    launch_kills = [r for r in rows if r["kill"] == "launch"]
    in_progress = [r for r in launch_kills if "in_progress_committed" in r]
    summary = {
        "kills": len(rows),
        "recorder_kills": len(rows) - len(launch_kills),
        "launch_kills": len(launch_kills),
        "episodes_in_dataset": rows[-1].get("episodes"),
        "committed_episodes_seen_in_status": facts["seen"],
        "committed_episodes_lost": sum(r.get("lost", 0) for r in rows),
        "checks_with_corruption": sum(bool(r.get("corrupt")) for r in rows),
        "killed_while_creating": sum(bool(r.get("killed_while_creating")) for r in rows),
        "recorder_exit_codes_after_launch_kill": {str(code): sum(r.get("recorder_exit") == code for r in launch_kills)
                                                  for code in sorted({r.get("recorder_exit") for r in launch_kills},
                                                                     key=str)},
        "launch_kills_while_recording": len(in_progress),
        "in_progress_episodes_committed_at_launch_kill": sum(r["in_progress_committed"] for r in in_progress),
        "seconds": round(seconds, 1),
    }
    ok = (summary["committed_episodes_lost"] == 0 and summary["checks_with_corruption"] == 0
          and set(summary["recorder_exit_codes_after_launch_kill"]) <= {"0"}
          and summary["in_progress_episodes_committed_at_launch_kill"] == summary["launch_kills_while_recording"])
    print(json.dumps(summary, indent=2))
    print("OK: no committed episode lost, none corrupt, every recorder of a killed launch committed and exited 0"
          if ok else "FAILED: see the rows above")
    command = "python benchmarks/crash_soak.py " + " ".join(sys.argv[1:])
    result = {"benchmark": "crash_soak", "date": datetime.datetime.now(datetime.UTC).isoformat(),
              "command": command.strip(), "seed": seed, "max_delay_s": args.max_delay, **machine_info,
              "summary": summary, "ok": ok, "rows": rows}
    write_result(RESULTS, result)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
