"""Sim speed: control steps/s of each task without and with cameras, and the driver node's real-time rate.

    python benchmarks/sim_speed.py                 # full run (driver measured for 60 s)
    python benchmarks/sim_speed.py --quick         # a smoke run (fewer steps, 10 s driver)

Steps/s are measured in this process on one core (the driver section runs the node
as its own process and measures the rate a subscriber receives ``joint_states``
at, and the jitter of the period against 1/control_hz). Writes
benchmarks/results/sim_speed.json.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from _machine import machine, write_result  # a script's own folder is sys.path[0]

RESULTS = Path(__file__).resolve().parent / "results" / "sim_speed.json"
CAMERAS = {"lift": ("agentview", "robot0_eye_in_hand"), "reach2d": ("top", "top")}


def steps_per_second(task_name: str, cameras: list[str], steps: int) -> float:
    from robot_stack.sim.experts import make_expert
    from robot_stack.sim.task import make_task

    task = make_task(task_name, cameras=cameras, seed=0)
    expert = make_expert(task_name, task.command_spec, "medium", seed=0)
    task.reset(0)
    observation = task.observe()
    done = 0
    start = time.perf_counter()
    while done < steps:
        task.step(task.command_spec.validate(expert.act(observation)))
        observation = task.observe()
        done += 1
        if task.done:
            task.reset(done)
            expert.reset()
    elapsed = time.perf_counter() - start
    task.close()
    return done / elapsed


def driver_rate(task_name: str, control_hz: float, seconds: float) -> dict:
    """Run sim_robot in real time and measure the joint_states period a subscriber sees."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(random.randint(1, 100)),
               ROBOT_STACK_DDS_TAG=f"bench-{uuid.uuid4().hex[:8]}", ROBOT_STACK_ROS_BACKEND="dds")
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROBOT_STACK_DDS_TAG",
                                            "ROBOT_STACK_ROS_BACKEND")})
    driver = subprocess.Popen(
        [sys.executable, "-m", "robot_stack.launch.entry_point", "sim_robot", "--ros-args", "-p", f"task:={task_name}",
         "-p", f"control_hz:={control_hz}", "-p", "command_timeout:=1000.0"],
        env=env, stderr=subprocess.DEVNULL,
    )
    from robot_stack import ros
    from robot_stack.ros import convert

    ros.init([])
    node = ros.create_node("sim_speed_probe")
    arrivals: list[int] = []
    node.create_subscription("sensor_msgs/msg/JointState", "joint_states",
                             lambda _m: arrivals.append(time.monotonic_ns()), ros.qos.SENSOR_DATA.with_depth(50))
    command = node.create_publisher("std_msgs/msg/Float64MultiArray", "robot/command", ros.qos.DEFAULT)
    deadline = time.monotonic() + 60
    while not arrivals and time.monotonic() < deadline:
        ros.spin_once(node, 0.05)
    arrivals.clear()
    hold = [0.0] * (7 if task_name == "lift" else 2)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        command.publish(convert.float_array(hold))  # keep the watchdog fed, like a teleop node
        ros.spin_once(node, 0.01)
    node.destroy_node()
    ros.shutdown()
    driver.terminate()
    driver.wait(timeout=20)
    periods_ms = np.diff(np.asarray(arrivals)) / 1e6
    target_ms = 1000.0 / control_hz
    jitter = np.abs(periods_ms - target_ms)
    return {
        "task": task_name, "control_hz": control_hz, "seconds": seconds, "messages": len(arrivals),
        "achieved_hz": round(float(1000.0 / periods_ms.mean()), 3) if len(periods_ms) else 0.0,
        "period_ms_p50": round(float(np.percentile(periods_ms, 50)), 3),
        "jitter_ms_p99": round(float(np.percentile(jitter, 99)), 3),
        "jitter_ms_max": round(float(jitter.max()), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and a 10 s driver run")
    parser.add_argument("--driver-seconds", type=float, default=None)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    machine_info = machine(["mujoco", "numpy", "robot_stack"], mujoco_gl=os.environ.get("MUJOCO_GL"))
    steps = {"lift": 200 if args.quick else 1000, "reach2d": 4000 if args.quick else 40000}
    camera_steps = {"lift": 40 if args.quick else 200, "reach2d": 400 if args.quick else 2000}
    rows = []
    for task_name, names in CAMERAS.items():
        for count in (0, 1, 2):
            for size in ((84,) if count == 0 else (84, 224)):
                cameras = [f"{name}:{size}x{size}" for name in names[:count]]
                if count == 2 and names[0] == names[1]:
                    cameras = [cameras[0], cameras[0]]
                n = steps[task_name] if count == 0 else camera_steps[task_name]
                rate = steps_per_second(task_name, cameras, n)
                label = "none" if count == 0 else f"{count} x {size}x{size}"
                rows.append({"task": task_name, "cameras": label, "steps": n, "steps_per_s": round(rate, 1)})
                print(f"{task_name:8s} cameras {label:12s} {rate:10.1f} steps/s", flush=True)
    seconds = args.driver_seconds or (10.0 if args.quick else 60.0)
    drivers = [driver_rate("reach2d", 20.0, seconds), driver_rate("lift", 20.0, seconds)]
    for d in drivers:
        print(f"driver {d['task']:8s} {d['achieved_hz']:.2f} Hz of {d['control_hz']:g} Hz, "
              f"jitter p99 {d['jitter_ms_p99']:.2f} ms over {d['seconds']:g} s", flush=True)
    result = {
        "benchmark": "sim_speed",
        **machine_info,
        "quick": args.quick,
        "steps_per_second": rows,
        "driver": drivers,
        "targets": {"reach2d_no_camera_steps_per_s": 2000},
        "reach2d_meets_2000_steps_per_s": next(r["steps_per_s"] for r in rows
                                               if r["task"] == "reach2d" and r["cameras"] == "none") >= 2000,
    }
    write_result(RESULTS, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
