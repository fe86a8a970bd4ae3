"""Scripted expert success rates per task and skill level over N seeded episodes.

    python benchmarks/expert_success.py                        # every task with an expert, 50 episodes each
    python benchmarks/expert_success.py --episodes 10 --tasks reach2d

Episode i of a row is ``task.reset(i)`` with an expert seeded ``i``, run for the task's whole
horizon (as the gym envs do). Per task and skill it reports:

- success: the task reported success at some step; at end: it still does at the horizon
  (lift: the cube is still held up);
- return: the sum of the task's dense reward over the horizon;
- steps to success: mean over the successful episodes of the first successful step.

A task whose module is missing or fails to build is reported as skipped, not as a crash.
Prints a table and writes benchmarks/results/expert_success.json. Sets MUJOCO_GL=osmesa if unset.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np
from _machine import machine, write_result  # a script's own folder is sys.path[0]

RESULTS = Path(__file__).resolve().parent / "results" / "expert_success.json"


def run(task_name: str, skill: str, episodes: int) -> dict:
    from robot_stack.sim.experts import make_expert
    from robot_stack.sim.task import make_task

    task = make_task(task_name, seed=0)
    successes, final, returns, steps_to_success = [], [], [], []
    start = time.perf_counter()
    try:
        for seed in range(episodes):
            task.reset(seed)
            expert = make_expert(task_name, task.command_spec, skill, seed=seed)
            total, first_success = 0.0, None
            while not task.done:
                task.step(task.command_spec.validate(expert.act(task.observe())))
                total += task.reward()
                if first_success is None and task.success():
                    first_success = task.steps
            successes.append(first_success is not None)
            final.append(task.success())
            returns.append(total)
            if first_success is not None:
                steps_to_success.append(first_success)
        horizon = task.config.horizon
    finally:
        task.close()
    seconds = time.perf_counter() - start
    return {
        "task": task_name, "skill": skill, "episodes": episodes, "horizon": horizon,
        "success_rate": float(np.mean(successes)), "success_at_end_rate": float(np.mean(final)),
        "mean_return": round(float(np.mean(returns)), 3),
        "mean_steps_to_success": round(float(np.mean(steps_to_success)), 1) if steps_to_success else None,
        "seconds": round(seconds, 1), "steps_per_second": round(episodes * horizon / seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=50, help="episodes per task and skill (seeds 0..N-1)")
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every task with an expert")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from robot_stack.errors import RobotStackError
    from robot_stack.sim.experts import EXPERTS, SKILLS

    machine_info = machine(["numpy", "mujoco", "robosuite", "robot_stack"], mujoco_gl=os.environ.get("MUJOCO_GL"))

    rows, skipped = [], {}
    header = (f"{'task':8s} {'skill':7s} {'success':>8s} {'at end':>7s} {'return':>9s} "
              f"{'steps to success':>16s} {'horizon':>7s} {'steps/s':>8s}")
    print(header)
    print("-" * len(header))
    for task_name in args.tasks or list(EXPERTS):
        for skill in SKILLS:
            try:
                row = run(task_name, skill, args.episodes)
            except (ImportError, RobotStackError) as error:  # a task not written yet, or one that cannot build here
                skipped[task_name] = f"{type(error).__name__}: {error}"
                print(f"{task_name:8s} skipped: {skipped[task_name]}", flush=True)
                break
            rows.append(row)
            to_success = "-" if row["mean_steps_to_success"] is None else f"{row['mean_steps_to_success']:.1f}"
            print(f"{task_name:8s} {skill:7s} {row['success_rate']:8.0%} {row['success_at_end_rate']:7.0%} "
                  f"{row['mean_return']:9.2f} {to_success:>16s} {row['horizon']:7d} {row['steps_per_second']:8.0f}",
                  flush=True)

    result = {"benchmark": "expert_success", "date": datetime.datetime.now(datetime.UTC).isoformat(),
              "episodes_per_row": args.episodes, **machine_info, "rows": rows, "skipped": skipped}
    write_result(RESULTS, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
