"""Offline-to-online fine-tuning: Cal-QL, RLPD, WSRL and IQL from a medium dataset, the same online budget, seeds.

    python benchmarks/online_finetune.py --task reach2d                        # 4 algorithms x 3 seeds, local Ray
    python benchmarks/online_finetune.py --task lift --episodes 100 --offline-steps 10000 --online-steps 10000
    python benchmarks/online_finetune.py --task reach2d --engine ray --address 10.0.0.5:6379   # on a cluster
    python benchmarks/online_finetune.py --task reach2d --seeds 0 --algos iql --online-steps 1000   # a quick look

Each (algorithm, seed) is one `robot-stack train --online sim:TASK` run (robot_stack.learn.sweep, --engine ray by
default: a local Ray on 127.0.0.1 with --workers processes, one torch thread each): the offline phase on the medium
dataset (--offline-steps updates; RLPD's paper does no pre-training, so its offline phase is its own --rlpd-steps,
0 by default), the switch, then --online-steps environment steps with the algorithm's update-to-data ratio (the
paper's, or --utd ALGO=K), evaluated every --eval-every environment steps on --eval-episodes seeded episodes
(seeds 1,000,000 + i, never in the data). Reported per algorithm over seeds: success of the offline policy (at
the switch), final success (mean ± std), the largest drop right after the switch (does it collapse?), and the
environment steps to reach 90% success (per seed; "not reached" counts as not reached). Curves (success over
environment steps, mean and spread over seeds, the switch at 0) go to benchmarks/results/online_finetune_<task>.png;
figures to benchmarks/results/online_finetune_<task>.json. Datasets: data/results/<task>_medium_<N>ep.zarr
(collected once, reused); runs: runs/results/online/<task>/<algo>_seed<k>_<budget>.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _datasets import medium_dataset  # a script's own folder is sys.path[0]
from _machine import machine, write_result

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
ALGOS = ("calql", "rlpd", "wsrl", "iql")
THRESHOLD = 0.9


def pairs(text: str) -> dict[str, str]:
    """ALGO=VALUE,... -> {algo: value}."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        algo, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{item!r}: use ALGO=VALUE, e.g. rlpd=4")
        out[algo] = value
    return out


def run_folder(args: argparse.Namespace, algo: str, seed: int) -> Path:
    budget = f"off{args.rlpd_steps if algo == 'rlpd' else args.offline_steps}_on{args.online_steps}"
    return REPO / "runs" / "results" / "online" / args.task / f"{algo}_seed{seed}_{budget}"


def make_config(args: argparse.Namespace, dataset: Path, algo: str, seed: int) -> Any:
    from robot_stack.learn.config import load_config

    overrides = {"online_eval_every": str(args.eval_every), "eval_every": "0", "eval_episodes": str(args.eval_episodes),
                 "log_every": "250", "checkpoint_every": str(10**9), "compile": "off"}
    if algo in args.utd:
        overrides["utd"] = args.utd[algo]
    if algo == "wsrl" and args.warmup is not None:
        overrides["warmup_steps"] = str(args.warmup)
    for setting in args.overrides.get(algo, []):
        key, _, value = setting.partition("=")
        overrides[key] = value
    steps = args.rlpd_steps if algo == "rlpd" else args.offline_steps
    return load_config(algo, overrides=overrides, dataset=str(dataset), online=f"sim:{args.task}", steps=steps,
                       online_steps=args.online_steps, seed=seed, device=args.device,
                       out=str(run_folder(args, algo, seed)))


def read_curve(run: Path) -> list[dict[str, Any]]:
    """The run's evaluations in order: {phase, env_steps, step, success_rate, mean_return}."""
    path = run / "eval.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def seed_figures(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """One seed's figures from its evaluations: offline (the last offline evaluation, the policy at the switch),
    final, the largest drop below the offline policy in the first online evaluations, env steps to 90%."""
    offline = [row for row in curve if row.get("phase") == "offline"]
    online = [row for row in curve if row.get("phase") == "online"]
    start = offline[-1]["success_rate"] if offline else None
    early = [row["success_rate"] for row in online[:3]]
    reached = next((row["env_steps"] for row in online if row["success_rate"] >= THRESHOLD), None)
    if reached is None and start is not None and start >= THRESHOLD:
        reached = 0
    return {"offline_success": start, "final_success": online[-1]["success_rate"] if online else None,
            "final_return": online[-1]["mean_return"] if online else None,
            "drop_after_switch": (round(start - min(early), 4) if early and start is not None else None),
            "env_steps_to_90": reached}


def summarize(algo: str, seeds: list[int], runs: dict[int, Path]) -> dict[str, Any]:
    per_seed = {seed: seed_figures(read_curve(runs[seed])) for seed in seeds}
    finals = [f["final_success"] for f in per_seed.values() if f["final_success"] is not None]
    offline = [f["offline_success"] for f in per_seed.values() if f["offline_success"] is not None]
    drops = [f["drop_after_switch"] for f in per_seed.values() if f["drop_after_switch"] is not None]
    reached = [f["env_steps_to_90"] for f in per_seed.values()]
    return {
        "algo": algo, "seeds": seeds,
        "offline_success_mean": float(np.mean(offline)) if offline else None,
        "final_success_mean": float(np.mean(finals)) if finals else None,
        "final_success_std": float(np.std(finals)) if finals else None,
        "max_drop_after_switch": float(max(drops)) if drops else None,
        "env_steps_to_90": reached,
        "env_steps_to_90_median": (float(np.median([r for r in reached if r is not None]))
                                   if reached and all(r is not None for r in reached) else None),
        "seeds_reaching_90": sum(r is not None for r in reached),
        "per_seed": per_seed,
    }


def plot(path: Path, task: str, curves: dict[str, dict[int, list[dict[str, Any]]]], extra: dict[str, list] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for algo, by_seed in curves.items():
        online = [[row for row in curve if row.get("phase") == "online"] for curve in by_seed.values()]
        online = [rows for rows in online if rows]
        if not online:
            continue
        length = min(len(rows) for rows in online)
        x = [row["env_steps"] for row in online[0][:length]]
        values = np.array([[row["success_rate"] for row in rows[:length]] for rows in online])
        offline = [next((row["success_rate"] for row in reversed(curve) if row.get("phase") == "offline"), None)
                   for curve in by_seed.values()]
        if all(value is not None for value in offline):
            x, values = [0, *x], np.column_stack([offline, values])
        mean = values.mean(0)
        (line,) = axis.plot(x, mean, label=f"{algo} ({len(online)} seeds)")
        axis.fill_between(x, values.min(0), values.max(0), color=line.get_color(), alpha=0.15)
    for name, points in (extra or {}).items():
        axis.plot([p[0] for p in points], [p[1] for p in points], "--", label=name)
    axis.axvline(0, color="grey", linestyle=":", label="switch (offline -> online)")
    axis.set_xlabel("environment steps (online)")
    axis.set_ylabel("success rate")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(f"offline-to-online fine-tuning on {task} (mean, band = min..max over seeds)")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reach2d", choices=["reach2d", "lift"])
    parser.add_argument("--episodes", type=int, default=None, help="medium episodes (default reach2d 10, lift 100)")
    parser.add_argument("--algos", default=",".join(ALGOS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--offline-steps", type=int, default=None, help="offline updates (default reach2d 2000, lift 10000)")
    parser.add_argument("--rlpd-steps", type=int, default=0, help="RLPD's offline updates (the paper: 0)")
    parser.add_argument("--online-steps", type=int, default=None, help="environment steps (default reach2d 3000, lift 10000)")
    parser.add_argument("--eval-every", type=int, default=None, help="environment steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation (default 20)")
    parser.add_argument("--utd", type=pairs, default={}, metavar="ALGO=K,...",
                        help="update-to-data ratios other than the papers' (e.g. rlpd=4,wsrl=4 on a CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="WSRL's warm-up env steps (default: its config's)")
    parser.add_argument("--set", action="append", default=[], metavar="ALGO:KEY=VALUE", help="config overrides")
    parser.add_argument("--engine", default="ray", choices=["local", "ray"])
    parser.add_argument("--address", default="", help="with --engine ray: a running cluster's head HOST:PORT")
    parser.add_argument("--workers", type=int, default=None, help="runs at once (default: the cluster's CPUs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rerun", action="store_true", help="train again even where a run's result exists")
    parser.add_argument("--output", default=None, help="result file name (default online_finetune_<task>.json)")
    args = parser.parse_args()
    lift = args.task == "lift"
    args.episodes = args.episodes or (100 if lift else 10)
    args.offline_steps = args.offline_steps if args.offline_steps is not None else (10000 if lift else 2000)
    args.online_steps = args.online_steps or (10000 if lift else 3000)
    args.eval_every = args.eval_every or max(1, args.online_steps // 10)
    args.eval_episodes = args.eval_episodes or 20
    args.overrides = {}
    for item in args.set:
        algo, sep, setting = item.partition(":")
        if not sep or "=" not in setting:
            raise SystemExit(f"--set {item!r}: use ALGO:KEY=VALUE")
        args.overrides.setdefault(algo, []).append(setting)
    algos = [a for a in args.algos.split(",") if a]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Ray starts its workers at niceness 15; on a machine shared with other work the runs would starve.
    os.environ.setdefault("RAY_worker_niceness", "0")
    host = machine(["torch", "numpy", "mujoco", "ray"], engine=args.engine, device=args.device)
    dataset = medium_dataset(args.task, args.episodes)
    from robot_stack.learn.sweep import run_sweep

    plan = [(algo, seed) for algo in algos for seed in seeds]
    todo = [(algo, seed) for algo, seed in plan
            if args.rerun or not (run_folder(args, algo, seed) / "result.json").exists()]
    for algo, seed in todo:
        folder = run_folder(args, algo, seed)
        if folder.exists():  # an unfinished earlier run: start it again from nothing
            import shutil

            shutil.rmtree(folder)
    configs = [make_config(args, dataset, algo, seed) for algo, seed in todo]
    started = time.time()
    failures: list[str] = []

    def report(index: int, row: dict[str, Any]) -> None:
        algo, seed = todo[index]
        if "error" in row:
            failures.append(f"{algo} seed {seed}: {row['error']}")
            print(f"  {algo} seed {seed}: FAILED {row['error']}", flush=True)
        else:
            final = seed_figures(read_curve(run_folder(args, algo, seed)))
            print(f"  {algo} seed {seed}: offline {final['offline_success']} -> final {final['final_success']} "
                  f"({row.get('seconds', '?')} s)", flush=True)

    if configs:
        run_sweep(configs, engine=args.engine, address=args.address, workers=args.workers, on_result=report)
    seconds = time.time() - started
    rows = [summarize(algo, seeds, {seed: run_folder(args, algo, seed) for seed in seeds}) for algo in algos]
    curves = {algo: {seed: read_curve(run_folder(args, algo, seed)) for seed in seeds} for algo in algos}
    name = args.output or f"online_finetune_{args.task}.json"
    plot(RESULTS / name.replace(".json", ".png"), args.task, curves)
    print(f"\n{args.task}: medium dataset {args.episodes} episodes, offline {args.offline_steps} updates "
          f"(rlpd {args.rlpd_steps}), online {args.online_steps} env steps, {len(seeds)} seeds")
    print(f"{'algo':8} {'offline':>8} {'final':>13} {'drop@switch':>12} {'steps to 90%':>22}")
    for row in rows:
        final = "-" if row["final_success_mean"] is None else f"{row['final_success_mean']:.2f} ± {row['final_success_std']:.2f}"
        offline = "-" if row["offline_success_mean"] is None else f"{row['offline_success_mean']:.2f}"
        drop = "-" if row["max_drop_after_switch"] is None else f"{row['max_drop_after_switch']:.2f}"
        reached = ",".join("-" if r is None else str(r) for r in row["env_steps_to_90"])
        print(f"{row['algo']:8} {offline:>8} {final:>13} {drop:>12} {reached:>22}")
    result = {
        "benchmark": "online_finetune", "task": args.task, "dataset": {"path": str(dataset), "episodes": args.episodes,
                                                                          "mix": "medium"},
        "offline_steps": args.offline_steps, "rlpd_offline_steps": args.rlpd_steps, "online_steps": args.online_steps,
        "eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "utd_overrides": args.utd,
        "overrides": args.overrides, "engine": args.engine, "address": args.address or "local",
        "rows": rows, "curves": {algo: {str(seed): curve for seed, curve in by_seed.items()} for algo, by_seed in curves.items()},
        "failures": failures, "command": "python benchmarks/online_finetune.py " + " ".join(sys.argv[1:]),
        "seconds": round(seconds, 1), **host, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_result(RESULTS / name, result)
    if failures:
        print(f"{len(failures)} of {len(plan)} runs failed: {failures[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
