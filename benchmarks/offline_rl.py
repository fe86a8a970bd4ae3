"""Offline RL correctness: sim success of BC, TD3+BC, IQL and CQL trained on scripted-expert datasets.

    python benchmarks/offline_rl.py --task reach2d                      # mixed + medium datasets, 3 seeds, 4 algorithms
    python benchmarks/offline_rl.py --task lift --episodes 100 --steps 20000 --algos bc,td3bc,iql
    python benchmarks/offline_rl.py --task reach2d --seeds 0 --steps 2000 --eval-episodes 20   # a quick look
    python benchmarks/offline_rl.py --task lift --algos cql --set cql:algorithm.lagrange_gap=5 --output offline_rl_lift_cql.json

Datasets (collected once with sim_collect into data/results/, reused when present):
  <task>_mixed_<N>ep   20% expert + 80% medium episodes (the scripted experts of robot_stack.sim.experts)
  <task>_medium_<N>ep  medium only
Each (dataset, algorithm, seed) is one `robot-stack train` run with the sim ground-truth reward
(--reward sim), state observations, the algorithm's paper defaults (or --set ALGO:KEY=VALUE), evaluated at the end on
--eval-episodes seeded sim episodes (seeds 1,000,000 + i, never seen in the data). Runs go to
runs/results/. Reference rows: the dataset's own success rate, and a uniform random policy on the
evaluation seeds. Prints a table (mean ± std over seeds) and writes benchmarks/results/offline_rl_<task>.json
(or --output NAME).
Runs execute --workers at a time, one torch thread each.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _machine import machine, write_result  # a script's own folder is sys.path[0]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
MIXES = {"mixed": "expert=0.2,medium=0.8", "medium": "medium=1.0"}


def collect(task: str, name: str, episodes: int, seed: int) -> Path:
    """The dataset <task>_<name>_<episodes>ep.zarr, collected once (its size is in its name: another --episodes
    is another dataset, never a silently reused one)."""
    path = REPO / "data" / "results" / f"{task}_{name}_{episodes}ep.zarr"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "robot_stack.sim.collect", "--task", task, "--episodes", str(episodes),
                        "--mix", MIXES[name], "--seed", str(seed), "-o", str(path), "-q"], check=True)
    return path


def algorithm_overrides(items: list[str]) -> dict[str, list[str]]:
    """--set ALGO:KEY=VALUE -> {algo: ["KEY=VALUE", ...]}."""
    overrides: dict[str, list[str]] = {}
    for item in items:
        algo, sep, setting = item.partition(":")
        if not sep or "=" not in setting:
            raise SystemExit(f"--set {item!r}: use ALGO:KEY=VALUE, e.g. cql:algorithm.lagrange_gap=5")
        overrides.setdefault(algo, []).append(setting)
    return overrides


def run_name(algo: str, settings: list[str]) -> str:
    """The algorithm's name, plus a short hash of its overrides (runs with other settings never collide)."""
    if not settings:
        return algo
    return f"{algo}-{hashlib.sha1(' '.join(sorted(settings)).encode()).hexdigest()[:6]}"


def train(dataset: Path, algo: str, seed: int, args: argparse.Namespace, reward: str | None = None,
          tag: str = "") -> dict:
    """One `robot-stack train` run (reward: sim, none for BC, or labels/<run>), reused when its result exists.
    tag names a reward other than the default in the run folder's name."""
    settings = args.overrides.get(algo, [])
    reward = reward or ("none" if algo == "bc" else "sim")
    name = run_name(algo, settings) + (f"@{tag}" if tag else "")
    out = REPO / "runs" / "results" / dataset.stem / f"{name}_seed{seed}_{args.steps}"
    result_file = out / "result.json"
    if result_file.exists() and not args.rerun:
        return json.loads(result_file.read_text())
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "robot_stack.cli.main", "train", "--algo", algo, "--dataset", str(dataset),
               "--reward", reward, "--steps", str(args.steps), "--seed", str(seed),
               "--eval-every", "0", "--eval-episodes", str(args.eval_episodes), "--device", "cpu",
               "--out", str(out), "--no-progress", *[arg for setting in settings for arg in ("--set", setting)]]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    print(f"  {dataset.stem:16s} {name:6s} seed {seed}: {time.perf_counter() - started:6.0f} s", flush=True)
    return json.loads(result_file.read_text())


def random_policy(task: str, episodes: int) -> float:
    import gymnasium

    from robot_stack.learn.evaluate import SIM_ENV, evaluate

    env = gymnasium.make(SIM_ENV, task=task)
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high
    result = evaluate(lambda observation: rng.uniform(low, high), env, episodes, 1_000_000)
    env.close()
    return result["success_rate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reach2d")
    parser.add_argument("--datasets", default="mixed,medium")
    parser.add_argument("--episodes", type=int, default=200, help="episodes per dataset")
    parser.add_argument("--algos", default="bc,td3bc,iql,cql")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="ALGO:KEY=VALUE",
                        help="override one algorithm's config, e.g. cql:algorithm.lagrange_gap=5 (repeatable)")
    parser.add_argument("--output", default=None, help="result file name (default offline_rl_<task>.json)")
    parser.add_argument("--rerun", action="store_true", help="train again even when a run's result exists")
    args = parser.parse_args()
    args.overrides = algorithm_overrides(args.set)
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from robot_stack.data import Dataset

    machine_info = machine(["robot_stack", "torch", "numpy", "mujoco"])
    algos = args.algos.split(",")
    datasets = {name: collect(args.task, name, args.episodes, seed=0) for name in args.datasets.split(",")}
    jobs = [(name, algo, seed) for name in datasets for algo in algos for seed in args.seeds]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        futures = {job: pool.submit(train, datasets[job[0]], job[1], job[2], args) for job in jobs}
        results = {job: future.result() for job, future in futures.items()}
    rows = []
    for name, path in datasets.items():
        ds = Dataset.open(path)
        row = {"dataset": name, "episodes": ds.n_episodes, "frames": ds.n_frames, "data_success_rate": ds.success_rate}
        for algo in algos:
            rates = [results[(name, algo, seed)]["evaluation"]["success_rate"] for seed in args.seeds]
            returns = [results[(name, algo, seed)]["evaluation"]["mean_return"] for seed in args.seeds]
            row[algo] = {"success_mean": float(np.mean(rates)), "success_std": float(np.std(rates)),
                         "per_seed": rates, "return_mean": float(np.mean(returns)),
                         "overrides": args.overrides.get(algo, [])}
        rows.append(row)
    random_rate = random_policy(args.task, args.eval_episodes)
    print(f"\n{args.task}: sim success rate over {args.eval_episodes} evaluation episodes, mean ± std over seeds "
          f"{args.seeds}, {args.steps} updates")
    print("| dataset | data | random | " + " | ".join(algos) + " |")
    print("|---|---|---|" + "---|" * len(algos))
    for row in rows:
        cells = [f"{row[a]['success_mean']:.2f} ± {row[a]['success_std']:.2f}" for a in algos]
        print(f"| {row['dataset']} ({row['episodes']} ep) | {row['data_success_rate']:.2f} | {random_rate:.2f} | "
              + " | ".join(cells) + " |")
    output = {
        "benchmark": "offline_rl", "task": args.task, "steps": args.steps, "seeds": args.seeds,
        "eval_episodes": args.eval_episodes, "random_policy_success_rate": random_rate, "rows": rows,
        "command": " ".join(["python", "benchmarks/offline_rl.py", *sys.argv[1:]]),
        "seconds": round(time.perf_counter() - started, 1),
        **machine_info,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_result(RESULTS / (args.output or f"offline_rl_{args.task}.json"), output)


if __name__ == "__main__":
    main()
