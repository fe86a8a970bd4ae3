"""Hybrid sim-real training: H2O against its comparators on a "real" robot that is a dynamics variant of the sim.

    python benchmarks/hybrid_sim_real.py                                   # reach2d, gaps weak_actuators and laggy
    python benchmarks/hybrid_sim_real.py --gaps low_friction --episodes 50 --online-steps 10000
    python benchmarks/hybrid_sim_real.py --engine ray --address 10.0.0.5:6379        # on a Ray cluster
    python benchmarks/hybrid_sim_real.py --seeds 0 --methods h2o,naive --online-steps 600   # a quick look

For each gap (a preset of sim/dynamics.py standing in for the real robot) a limited medium dataset is recorded in
that variant (--episodes, data/results/<task>_<gap>_medium_<N>ep.zarr); the simulator is the nominal task
(--sim-preset sim). Side by side, --seeds each, every run evaluated in the variant (the "real" robot) on the same
seeded episodes (1,000,000 + i, never in the data):
    h2o      robot-stack train --algo h2o  --sim TASK:sim                 (robot_stack.learn.algorithms.h2o)
    darc     robot-stack train --algo darc --sim TASK:sim                 (DARC's reward correction, same discriminators)
    naive    robot-stack train --algo sac  --sim TASK:sim --online-ratio 0.5      (sim and real in one replay, no correction)
    sac_sim  robot-stack train --algo sac  --sim TASK:sim --online-ratio 1        (sim only; the dataset gives only the
                                                                                   observation normalization)
    iql_real robot-stack train --algo iql  (offline, the real data alone, --offline-steps updates)
The SAC-based runs share one budget (--online-steps sim steps, one update each after --warmup steps of the initial
policy, half of each batch sim where real data is used) and SAC's settings (2 critics, no entropy in the backup:
H2O's). Control: h2o on a dataset recorded in the nominal dynamics (no gap), for the dynamics-ratio weights a gap
should lower.

Reported per gap and method over seeds: success rate and return (mean ± std) of the final policy in the variant, and
the normalised score (J - J_random) / (J_expert - J_random) of its return, J_expert / J_random the scripted expert's
and a uniform random policy's return in the variant on the same episodes; for h2o (gap and control) the mean
dynamics ratio w = P/P^ and gap u of its sim transitions over the second half of training (losses.jsonl). Figures:
benchmarks/results/hybrid_sim_real_<task>.json and .png (success over sim steps per gap; the ratio over training).
Runs: runs/results/hybrid/<task>_<gap>/<method>_seed<k>_on<N> (a finished run is reused; --rerun trains again).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _datasets import medium_dataset  # a script's own folder is sys.path[0]
from _machine import machine, write_result

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
METHODS = ("h2o", "darc", "naive", "sac_sim", "iql_real")
EVAL_SEED = 1_000_000


def run_folder(args: argparse.Namespace, gap: str, method: str, seed: int) -> Path:
    budget = f"off{args.offline_steps}" if method == "iql_real" else f"on{args.online_steps}"
    return REPO / "runs" / "results" / "hybrid" / f"{args.task}_{gap}" / f"{method}_seed{seed}_{budget}"


def make_config(args: argparse.Namespace, dataset: Path, gap: str, method: str, seed: int) -> Any:
    from robot_stack.learn.config import load_config

    common = {"eval_episodes": str(args.eval_episodes), "checkpoint_every": str(10**9), "compile": "off",
              "batch_size": str(args.batch_size), "log_every": str(args.log_every)}
    out = str(run_folder(args, gap, method, seed))
    if method == "iql_real":
        overrides = common | {"eval_every": str(max(1, args.offline_steps // 5))}
        return load_config("iql", overrides=overrides, dataset=str(dataset), steps=args.offline_steps, seed=seed,
                           device=args.device, out=out)
    algo = {"h2o": "h2o", "h2o_nogap": "h2o", "darc": "darc", "naive": "sac", "sac_sim": "sac"}[method]
    overrides = common | {"eval_every": "0", "online_eval_every": str(args.eval_every), "utd": "1",
                          "warmup_steps": str(args.warmup), "eval_dynamics": "dataset",
                          "online_ratio": "1.0" if method == "sac_sim" else "0.5"}
    if algo == "sac":
        overrides["algorithm.backup_entropy"] = "false"  # H2O's setting: the comparison is the correction alone
    for setting in args.overrides.get(method, []):
        key, _, value = setting.partition("=")
        overrides[key] = value
    return load_config(algo, overrides=overrides, dataset=str(dataset), online=f"sim:{args.task}:{args.sim_preset}",
                       steps=0, online_steps=args.online_steps, seed=seed, device=args.device, out=out)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def final_row(run: Path) -> dict[str, Any] | None:
    rows = read_jsonl(run / "eval.jsonl")
    return rows[-1] if rows else None


def references(task: str, gap: str, episodes: int) -> dict[str, float]:
    """Mean return and success of the scripted expert and of a uniform random policy in the variant, on the
    evaluation seeds (the same episodes the runs are evaluated on)."""
    import gymnasium

    from robot_stack.learn.evaluate import SIM_ENV, evaluate
    from robot_stack.sim.experts import make_expert

    env = gymnasium.make(SIM_ENV, task=task, **({} if gap == "nominal" else {"dynamics": gap}))
    spec = env.unwrapped.task.command_spec
    expert = make_expert(task, spec, skill="expert", seed=0)
    rng = np.random.default_rng(0)
    low, high = np.asarray(spec.low), np.asarray(spec.high)
    out = {}
    for name, policy in (("expert", expert.act), ("random", lambda _: rng.uniform(low, high))):
        result = evaluate(policy, env, episodes, EVAL_SEED)
        out[f"{name}_return"], out[f"{name}_success"] = result["mean_return"], result["success_rate"]
    env.close()
    return out


def weights(run: Path) -> dict[str, float] | None:
    """Mean dynamics ratio and gap of an h2o run's sim transitions over the second half of its logged updates."""
    rows = [row for row in read_jsonl(run / "losses.jsonl") if "dynamics_ratio" in row]
    if not rows:
        return None
    late = rows[len(rows) // 2:]
    return {"dynamics_ratio": float(np.mean([r["dynamics_ratio"] for r in late])),
            "dynamics_gap": float(np.mean([r["dynamics_gap"] for r in late])),
            "d_sas_accuracy": float(np.mean([r["d_sas_accuracy"] for r in late]))}


def summarize(runs: dict[int, Path], reference: dict[str, float]) -> dict[str, Any]:
    finals = {seed: final_row(run) for seed, run in runs.items()}
    done = {seed: row for seed, row in finals.items() if row is not None}
    success = [row["success_rate"] for row in done.values()]
    returns = [row["mean_return"] for row in done.values()]
    span = reference["expert_return"] - reference["random_return"]
    scores = [(value - reference["random_return"]) / span for value in returns] if span else []

    def stats(values: list[float]) -> dict[str, float | None]:
        return {"mean": float(np.mean(values)) if values else None, "std": float(np.std(values)) if values else None}

    return {"seeds": sorted(done), "success": stats(success), "return": stats(returns), "normalized": stats(scores),
            "per_seed": {str(seed): {"success": row["success_rate"], "return": row["mean_return"]}
                         for seed, row in done.items()}}


def plot(path: Path, task: str, curves: dict[str, dict[str, dict[int, list]]], ratios: dict[str, list]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gaps = list(curves)
    figure, axes = plt.subplots(1, len(gaps) + 1, figsize=(5 * (len(gaps) + 1), 4))
    for axis, gap in zip(axes, gaps):
        for method, by_seed in curves[gap].items():
            if method == "iql_real":
                finals = [rows[-1]["success_rate"] for rows in by_seed.values() if rows]
                if finals:
                    axis.axhline(np.mean(finals), linestyle="--", color="black", label=f"iql_real (offline, {len(finals)} seeds)")
                continue
            series = [[r for r in rows if r.get("phase") == "online"] for rows in by_seed.values()]
            series = [rows for rows in series if rows]
            if not series:
                continue
            length = min(len(rows) for rows in series)
            x = [row["env_steps"] for row in series[0][:length]]
            values = np.array([[row["success_rate"] for row in rows[:length]] for rows in series])
            (line,) = axis.plot(x, values.mean(0), marker="o", markersize=3, label=f"{method} ({len(series)} seeds)")
            axis.fill_between(x, values.min(0), values.max(0), color=line.get_color(), alpha=0.15)
        axis.set_title(f"{task}: real = {gap}, sim = nominal")
        axis.set_xlabel("sim environment steps")
        axis.set_ylabel("success rate in the real variant")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper left")
    axis = axes[-1]
    for name, rows in ratios.items():
        if rows:
            axis.plot([r["env_steps"] for r in rows], [r["dynamics_ratio"] for r in rows], label=name)
    axis.set_title("h2o: mean dynamics ratio w = P/P^ of sim transitions")
    axis.set_xlabel("sim environment steps")
    axis.set_ylabel("w (clipped to [1e-5, 1])")
    axis.set_ylim(-0.02, 1.05)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reach2d", choices=["reach2d", "lift"])
    parser.add_argument("--gaps", default="weak_actuators,laggy", help="dynamics presets standing in for the real robot")
    parser.add_argument("--sim-preset", default="sim", help="the simulator's dynamics preset (default sim = nominal)")
    parser.add_argument("--episodes", type=int, default=20, help="real episodes recorded per gap (default 20)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--control-seeds", default="0", help="seeds of the no-gap h2o control ('' for none)")
    parser.add_argument("--online-steps", type=int, default=3000, help="sim environment steps (default 3000)")
    parser.add_argument("--offline-steps", type=int, default=3000, help="iql_real's offline updates (default 3000)")
    parser.add_argument("--warmup", type=int, default=300, help="sim steps of the initial policy before updates")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=None, help="sim steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--log-every", type=int, default=100, help="updates between logged loss means (the weights)")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE", help="config overrides")
    parser.add_argument("--engine", default="ray", choices=["local", "ray"])
    parser.add_argument("--address", default="", help="with --engine ray: a running cluster's head HOST:PORT")
    parser.add_argument("--workers", type=int, default=None, help="runs at once (default: the cluster's CPUs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rerun", action="store_true", help="train again even where a run's result exists")
    parser.add_argument("--output", default=None, help="result file name (default hybrid_sim_real_<task>.json)")
    args = parser.parse_args()
    args.eval_every = args.eval_every or max(1, args.online_steps // 6)
    args.overrides = {}
    for item in args.set:
        method, sep, setting = item.partition(":")
        if not sep or "=" not in setting:
            raise SystemExit(f"--set {item!r}: use METHOD:KEY=VALUE")
        args.overrides.setdefault(method, []).append(setting)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}: use {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    control_seeds = [int(s) for s in args.control_seeds.split(",") if s]
    gaps = [g for g in args.gaps.split(",") if g]
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default 15 starves the runs on a shared machine
    host = machine(["torch", "numpy", "mujoco", "ray"], engine=args.engine, device=args.device)
    datasets = {gap: medium_dataset(args.task, args.episodes, dynamics=gap) for gap in gaps}
    plan = [(gap, method, seed) for gap in gaps for method in methods for seed in seeds]
    if control_seeds and "h2o" in methods:
        datasets["nominal"] = medium_dataset(args.task, args.episodes)
        plan += [("nominal", "h2o_nogap", seed) for seed in control_seeds]
    todo = [item for item in plan if args.rerun or not (run_folder(args, *item) / "result.json").exists()]
    for item in todo:
        if run_folder(args, *item).exists():  # an unfinished earlier run: start it again from nothing
            shutil.rmtree(run_folder(args, *item))
    configs = [make_config(args, datasets[gap], gap, method, seed) for gap, method, seed in todo]
    started, failures = time.time(), []

    def report(index: int, row: dict[str, Any]) -> None:
        gap, method, seed = todo[index]
        if "error" in row:
            failures.append(f"{gap} {method} seed {seed}: {row['error']}")
            print(f"  {gap} {method} seed {seed}: FAILED {row['error']}", flush=True)
        else:
            last = final_row(run_folder(args, gap, method, seed)) or {}
            print(f"  {gap} {method} seed {seed}: success {last.get('success_rate')} return {last.get('mean_return')} "
                  f"({row.get('seconds', '?')} s)", flush=True)

    if configs:
        from robot_stack.learn.sweep import run_sweep

        run_sweep(configs, engine=args.engine, address=args.address, workers=args.workers, on_result=report)
    seconds = time.time() - started
    table, curves, ratios = {}, {}, {}
    for gap in gaps:
        reference = references(args.task, gap, args.eval_episodes)
        rows = {method: summarize({seed: run_folder(args, gap, method, seed) for seed in seeds}, reference)
                for method in methods}
        for row in rows.values():
            if row["seeds"] != seeds:
                failures.append(f"{gap}: a method has results for seeds {row['seeds']} of {seeds}")
        if "h2o" in methods:
            per_seed = [weights(run_folder(args, gap, "h2o", seed)) for seed in seeds]
            rows["h2o"]["weights"] = per_seed
            ratios[f"real = {gap}"] = [r for r in read_jsonl(run_folder(args, gap, "h2o", seeds[0]) / "losses.jsonl")
                                        if "dynamics_ratio" in r]
        table[gap] = {"reference": reference, "methods": rows}
        curves[gap] = {method: {seed: read_jsonl(run_folder(args, gap, method, seed) / "eval.jsonl") for seed in seeds}
                       for method in methods}
    control = None
    if control_seeds and "h2o" in methods:
        control = {"weights": [weights(run_folder(args, "nominal", "h2o_nogap", seed)) for seed in control_seeds],
                   "seeds": control_seeds}
        ratios["real = nominal (no gap)"] = [
            r for r in read_jsonl(run_folder(args, "nominal", "h2o_nogap", control_seeds[0]) / "losses.jsonl")
            if "dynamics_ratio" in r]
    name = args.output or f"hybrid_sim_real_{args.task}.json"
    plot(RESULTS / name.replace(".json", ".png"), args.task, curves, ratios)
    print(f"\n{args.task}: {args.episodes} real episodes per gap, {args.online_steps} sim steps "
          f"(iql_real {args.offline_steps} offline updates), {len(seeds)} seeds; in the real variant:")
    for gap, entry in table.items():
        ref = entry["reference"]
        print(f"real = {gap}: expert {ref['expert_success']:.2f} success / return {ref['expert_return']:.2f}, "
              f"random {ref['random_success']:.2f} / {ref['random_return']:.2f}")
        print(f"  {'method':9} {'success':>13} {'return':>15} {'normalized':>13}")
        for method, row in entry["methods"].items():
            cells = [("-" if row[k]["mean"] is None else f"{row[k]['mean']:.2f} ± {row[k]['std']:.2f}")
                     for k in ("success", "return", "normalized")]
            print(f"  {method:9} {cells[0]:>13} {cells[1]:>15} {cells[2]:>13}")
        for w in entry["methods"].get("h2o", {}).get("weights", []) or []:
            if w:
                print(f"  h2o weights: ratio {w['dynamics_ratio']:.3f}, gap {w['dynamics_gap']:.3f}, "
                      f"D(s,a,s') accuracy {w['d_sas_accuracy']:.2f}")
    if control:
        for w in control["weights"]:
            if w:
                print(f"no gap (real = nominal): h2o ratio {w['dynamics_ratio']:.3f}, gap {w['dynamics_gap']:.3f}, "
                      f"D(s,a,s') accuracy {w['d_sas_accuracy']:.2f}")
    result = {"benchmark": "hybrid_sim_real", "task": args.task, "gaps": gaps, "sim_preset": args.sim_preset,
              "episodes": args.episodes, "online_steps": args.online_steps, "offline_steps": args.offline_steps,
              "warmup": args.warmup, "batch_size": args.batch_size, "eval_every": args.eval_every,
              "eval_episodes": args.eval_episodes, "overrides": args.overrides, "engine": args.engine,
              "address": args.address or "local", "results": table, "control_no_gap": control,
              "curves": {gap: {m: {str(s): [{k: v for k, v in row.items() if k != "rows"} for row in c]  # no episodes
                                   for s, c in by_seed.items()} for m, by_seed in by_method.items()}
                         for gap, by_method in curves.items()},
              "failures": failures, "command": "python benchmarks/hybrid_sim_real.py " + " ".join(sys.argv[1:]),
              "seconds": round(seconds, 1), **host,
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    write_result(RESULTS / name, result)
    if failures:
        print(f"{len(failures)} problem(s): {failures[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
