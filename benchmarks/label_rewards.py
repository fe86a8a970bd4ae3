"""Labeled rewards where they matter: sim success of IQL trained on each download-free labeler's reward, side by
side with IQL on the sim ground-truth reward and with BC, and each label run's `robot-stack label eval` row.

    python benchmarks/label_rewards.py --task reach2d                    # 200 episodes, 5,000 updates, 3 seeds
    python benchmarks/label_rewards.py --task lift --episodes 100 --steps 20000 --eval-episodes 20
    python benchmarks/label_rewards.py --task reach2d --seeds 0 --labels progress-px --eval-episodes 10   # a quick look

The dataset (collected once with sim_collect into data/results/, reused when present):
  <task>_mixed_<N>ep_img   20% expert + 80% medium episodes of the scripted experts, with the task's camera
                           (reach2d top:64x64, lift agentview:84x84) recorded beside the state
Label runs (`robot-stack label run`, made once and reused; none needs a download, all read pixels only):
  progress-px        progress model on pixels (ReWiND-style rewinds and failed episodes as negatives)
  success-px         success classifier on pixels, reward = P(success)
  pref-time-px       preference reward model (Bradley-Terry on pixels) from time-order pairs (Rank2Reward)
  pref-oracle0-px    the same from the recorded sim reward, no error      (ground truth: measures the chain)
  pref-oracle25-px   the same, 25% of the answers flipped                 (ground truth: measures the chain)
Each label run trains IQL with --reward labels/<run>; IQL with --reward sim and BC (no reward) are the references.
Policies see the state features only (the labels come from pixels; the policy's observation is the same for
every reward), the algorithm's paper defaults, batch 256, CPU; evaluated at the end on --eval-episodes seeded
sim episodes never in the data (seeds 1,000,000 + i). Runs go to runs/results/<dataset>/. Prints a table
(mean ± std of the success rate over seeds, beside each run's label eval row) and writes
benchmarks/results/label_rewards_<task>.json and the label eval plot label_rewards_<task>_eval.png.
Label jobs and trainings execute --workers at a time, one torch thread each.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _machine import machine, write_result  # a script's own folder is sys.path[0]
from offline_rl import REPO, RESULTS, random_policy, train

CAMERAS = {"reach2d": "top:64x64", "lift": "agentview:84x84"}
LABEL_RUNS = {
    "progress-px": ["--labeler", "progress", "--set", "input=pixels"],
    "success-px": ["--labeler", "success", "--set", "input=pixels"],
    "pref-time-px": ["--labeler", "preference", "--set", "judge=time", "--set", "pixels=true"],
    "pref-oracle0-px": ["--labeler", "preference", "--set", "judge=oracle", "--set", "error_rate=0",
                        "--set", "pixels=true"],
    "pref-oracle25-px": ["--labeler", "preference", "--set", "judge=oracle", "--set", "error_rate=0.25",
                         "--set", "pixels=true"],
}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def collect(task: str, episodes: int) -> Path:
    """data/results/<task>_mixed_<N>ep_img.zarr, collected once (20% expert, 80% medium, seed 0, the task's camera)."""
    path = REPO / "data" / "results" / f"{task}_mixed_{episodes}ep_img.zarr"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial.zarr")
        shutil.rmtree(partial, ignore_errors=True)  # a collection killed before: start it again
        print(f"collecting {path.name} ...", flush=True)
        subprocess.run([sys.executable, "-m", "robot_stack.sim.collect", "--task", task, "--episodes", str(episodes),
                        "--mix", "expert=0.2,medium=0.8", "--seed", "0", "--cameras", CAMERAS[task],
                        "-o", str(partial), "-q"], check=True)
        partial.rename(path)
    return path


def existing_runs(dataset: Path) -> set[str]:
    done = subprocess.run([sys.executable, "-m", "robot_stack.cli.main", "label", "list", str(dataset), "--json"],
                          capture_output=True, text=True, check=True)
    return {run["run"] for run in json.loads(done.stdout) if run.get("complete")}


def label(dataset: Path, run: str, sentence: str, seed: int) -> float:
    """Make label run ``run`` with the task sentence the dataset was recorded with; returns its seconds."""
    command = [sys.executable, "-m", "robot_stack.cli.main", "label", "run", str(dataset), *LABEL_RUNS[run],
               "--task", sentence, "--run", run, "--seed", str(seed), "--no-progress", "--overwrite"]
    started = time.perf_counter()
    done = subprocess.run(command, env=os.environ | ONE_THREAD, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    seconds = time.perf_counter() - started
    print(f"  label {run:17s} {seconds:6.0f} s", flush=True)
    return seconds


def label_eval(dataset: Path, runs: list[str], task: str) -> dict:
    out = RESULTS / f"label_rewards_{task}_eval.json"
    command = [sys.executable, "-m", "robot_stack.cli.main", "label", "eval", str(dataset),
               *[arg for run in runs for arg in ("--run", run)], "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    report = json.loads(out.read_text())
    out.unlink()  # its rows go into this benchmark's result; the PNG stays beside it
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reach2d", choices=sorted(CAMERAS))
    parser.add_argument("--episodes", type=int, default=200, help="episodes in the dataset")
    parser.add_argument("--labels", default=",".join(LABEL_RUNS),
                        help=f"label runs to make and train on, comma-separated (default: all of {', '.join(LABEL_RUNS)})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--label-seed", type=int, default=0, help="seed of the label runs")
    parser.add_argument("--steps", type=int, default=5000, help="updates per training run")
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="label jobs and trainings at a time")
    parser.add_argument("--relabel", action="store_true", help="make the label runs again even when they exist")
    parser.add_argument("--rerun", action="store_true", help="train again even when a run's result exists")
    args = parser.parse_args()
    args.overrides = {}
    labels = [run for run in args.labels.split(",") if run]
    unknown = sorted(set(labels) - set(LABEL_RUNS))
    if unknown:
        raise SystemExit(f"--labels: unknown {', '.join(unknown)}; choose from {', '.join(LABEL_RUNS)}")
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from robot_stack.data import Dataset

    machine_info = machine(["robot_stack", "torch", "numpy", "mujoco"])
    started = time.perf_counter()
    dataset = collect(args.task, args.episodes)
    ds = Dataset.open(dataset)
    sentence = ds.tasks[0]
    have = set() if args.relabel else existing_runs(dataset)
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        label_seconds = {run: pool.submit(label, dataset, run, sentence, args.label_seed)
                         for run in labels if run not in have}
        label_seconds = {run: future.result() for run, future in label_seconds.items()}
    report = label_eval(dataset, labels, args.task)
    eval_rows = {row["name"]: row for row in report["rows"]}

    sources = {"bc": ("bc", "none", ""), "iql@sim": ("iql", "sim", "")}
    sources |= {f"iql@{run}": ("iql", f"labels/{run}", run) for run in labels}
    jobs = [(source, seed) for source in sources for seed in args.seeds]
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        futures = {(source, seed): pool.submit(train, dataset, sources[source][0], seed, args, sources[source][1],
                                               sources[source][2]) for source, seed in jobs}
        results = {job: future.result() for job, future in futures.items()}

    rows = []
    for source, (algo, reward, run) in sources.items():
        rates = [results[(source, seed)]["evaluation"]["success_rate"] for seed in args.seeds]
        returns = [results[(source, seed)]["evaluation"]["mean_return"] for seed in args.seeds]
        row = {"policy": source, "algo": algo, "reward": reward, "success_mean": float(np.mean(rates)),
               "success_std": float(np.std(rates)), "per_seed": rates, "return_mean": float(np.mean(returns))}
        if run:
            row["label_run"] = run
            row["oracle"] = bool(eval_rows[run].get("oracle"))
            row["label_eval"] = eval_rows[run]["metrics"]
            row["label_seconds"] = label_seconds.get(run)
        rows.append(row)
    by_policy = {row["policy"]: row for row in rows}
    free = [row for row in rows if row.get("label_run") and not row["oracle"]]
    best = max(free, key=lambda row: row["success_mean"]) if free else None
    gt, bc = by_policy["iql@sim"]["success_mean"], by_policy["bc"]["success_mean"]
    goal = None
    if best is not None:
        goal = {"best_download_free": best["policy"], "success": best["success_mean"], "iql_sim": gt, "bc": bc,
                "within_5_points_of_iql_sim": best["success_mean"] >= gt - 0.05,
                "above_bc": best["success_mean"] > bc + max(0.05, best["success_std"] + by_policy["bc"]["success_std"])}
    random_rate = random_policy(args.task, args.eval_episodes)

    print(f"\n{args.task}: {dataset.name} ({ds.n_episodes} episodes, data's own success {ds.success_rate:.2f}, "
          f"random policy {random_rate:.2f}); sim success over {args.eval_episodes} evaluation episodes, "
          f"mean ± std over seeds {args.seeds}, {args.steps} updates")
    print("| policy (reward) | success | per seed | VOC | Kendall | PairAcc | Pearson (all) | AUC |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        metrics = row.get("label_eval", {})
        cells = [f"{metrics[key]:.2f}" if metrics.get(key) is not None else ""
                 for key in ("voc", "kendall", "pair_accuracy", "pearson_all", "auc")]
        mark = " (ground truth)" if row.get("oracle") or row["reward"] == "sim" else ""
        print(f"| {row['policy']}{mark} | {row['success_mean']:.2f} ± {row['success_std']:.2f} | "
              f"{' / '.join(f'{r:.2f}' for r in row['per_seed'])} | " + " | ".join(cells) + " |")
    if goal:
        print(f"goal: best download-free labeler {goal['best_download_free']} {goal['success']:.2f} vs IQL on sim "
              f"reward {gt:.2f} (within 5 points: {'yes' if goal['within_5_points_of_iql_sim'] else 'NO'}) and "
              f"BC {bc:.2f} (clearly above: {'yes' if goal['above_bc'] else 'NO'})")
    output = {
        "benchmark": "label_rewards", "task": args.task, "dataset": dataset.name, "episodes": ds.n_episodes,
        "frames": ds.n_frames, "data_success_rate": ds.success_rate, "camera": CAMERAS[args.task],
        "task_sentence": sentence, "steps": args.steps, "seeds": args.seeds,
        "label_seed": args.label_seed, "eval_episodes": args.eval_episodes,
        "random_policy_success_rate": random_rate, "rows": rows, "goal": goal,
        "label_eval_baselines": {name: row["metrics"] for name, row in eval_rows.items() if row["kind"] != "run"},
        "label_eval_conventions": report.get("conventions"),
        "command": " ".join(["python", "benchmarks/label_rewards.py", *sys.argv[1:]]),
        "seconds": round(time.perf_counter() - started, 1),
        **machine_info,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_result(RESULTS / f"label_rewards_{args.task}.json", output)


if __name__ == "__main__":
    main()
