"""Scripted expert success rates per task and skill level over N seeded episodes.

    python benchmarks/expert_success.py            # 50 episodes per task and skill
    python benchmarks/expert_success.py --episodes 10 --tasks reach2d

An episode succeeds when the task reports success at any step before its horizon.
Writes benchmarks/results/expert_success.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "expert_success.json"


def run(task_name: str, skill: str, episodes: int) -> dict:
    from robot_stack.sim.experts import make_expert
    from robot_stack.sim.task import make_task

    task = make_task(task_name, seed=0)
    successes, returns, lengths = [], [], []
    start = time.perf_counter()
    for seed in range(episodes):
        task.reset(seed)
        expert = make_expert(task_name, task.command_spec, skill, seed=seed)
        expert.reset()
        total, succeeded = 0.0, False
        while not task.done:
            task.step(task.command_spec.validate(expert.act(task.observe())))
            total += task.reward()
            if task.success():
                succeeded = True
                break
        successes.append(succeeded)
        returns.append(total)
        lengths.append(task.steps)
    task.close()
    return {"task": task_name, "skill": skill, "episodes": episodes, "success_rate": float(np.mean(successes)),
            "mean_return": round(float(np.mean(returns)), 3), "mean_length": round(float(np.mean(lengths)), 1),
            "horizon": task.config.horizon, "seconds": round(time.perf_counter() - start, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every task with an expert")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from robot_stack.sim.experts import EXPERTS, SKILLS

    rows = []
    for task_name in args.tasks or list(EXPERTS):
        for skill in SKILLS:
            row = run(task_name, skill, args.episodes)
            rows.append(row)
            print(f"{task_name:8s} {skill:7s} success {row['success_rate']:6.1%}  return {row['mean_return']:9.2f}  "
                  f"length {row['mean_length']:6.1f}/{row['horizon']}  ({row['seconds']:.0f} s)", flush=True)
    import mujoco

    result = {"benchmark": "expert_success", "episodes_per_row": args.episodes,
              "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "mujoco": mujoco.__version__},
              "rows": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
