"""One run of the `robot` target of online fine-tuning on reach2d in sim over DDS, its curve beside the gymnasium run's.

    python benchmarks/online_robot.py                      # IQL seed 0: offline 2000 updates, online 3000 env steps
    python benchmarks/online_robot.py --offline-steps 200 --online-steps 150   # a quick look (its own run folder)
    python benchmarks/online_robot.py --offline-steps 1000 --online-steps 2000 --eval-every 250 --set batch_size=128
        # beside an online_finetune.py run made with the same flags (its --set iql:batch_size=128)

The dataset and the settings are benchmarks/online_finetune.py's IQL seed 0 (its make_config: the medium dataset
data/results/reach2d_medium_10ep.zarr, --offline-steps updates, --online-steps environment steps at utd 1, an
evaluation of --eval-episodes seeded episodes every --eval-every environment steps), checked against it before
anything runs; only the target differs: `--online robot`. As docs/online.md runs it:

1. the offline run (`robot-stack train`, the same settings without the online phase) and its export: the model
   the policy node starts with;
2. launch/online.launch.yaml (the MuJoCo sim robot in real time, placements from seed 100,000 on, the policy node
   with that model, the recorder with source online) on loopback DDS with a discovery tag of its own;
3. the learner, `robot-stack train ... --online robot`: its own offline phase (the same as step 1's), then it runs
   the episodes over /sim/reset and /recorder/control, reads each committed episode from the recorder's dataset,
   trains, and pushes an exported model on /policy/load every --push-every updates. Its evaluations run in the
   gymnasium env between two episodes, as the gymnasium run's do, so the two curves measure the same thing.

Everything is stopped at the end, on an error and on Ctrl-C (SIGINT, then SIGKILL for whatever is left). The figure
(benchmarks/results/online_robot_<task>.png) shows the robot run's success over environment steps beside the
gymnasium IQL runs of online_finetune.py found in runs/results/online/<task>/iql_seed*_off<N>_on<M> (said so when
there are none yet); the figures go to benchmarks/results/online_robot_<task>.json. A run folder that holds a
finished run (runs/results/online_robot/<task>/...) is only re-read: run the script again once the gymnasium runs
have landed to redraw the figure; --rerun trains again.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine, write_result  # a script's own folder is sys.path[0]
from online_finetune import collect, make_config, read_curve, run_folder, seed_figures

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
ALGO, SEED = "iql", 0
# The sim robot's first placement seed (each reset takes the next): away from the medium dataset's placements (0, 1,
# ...: the robot would start on the episodes it learned from) and from the evaluations' (1,000,000 + i).
PLACEMENT_SEED = 100_000
STOP_TIMEOUT_S = 60.0  # the learner saves a checkpoint and the launch stops its nodes in turn on SIGINT
# TrainConfig fields the robot run sets apart from the gymnasium run's: its target and where its files go.
TARGET_FIELDS = {"online", "online_dataset", "out", "push_every"}


def folders(args: argparse.Namespace) -> dict[str, Path]:
    """The run's files: root/{offline (step 1's run), initial.onnx (its export), learner (the robot run),
    online.zarr (the recorder's dataset), launch.log, learner.log, benchmark.json (timings and commands)}."""
    root = REPO / "runs" / "results" / "online_robot" / args.task / (
        f"{ALGO}_seed{SEED}_off{args.offline_steps}_on{args.online_steps}_push{args.push_every}"
        + "".join(f"_{setting.replace('=', '')}" for setting in args.set))
    return {"root": root, "offline": root / "offline", "model": root / "initial.onnx", "learner": root / "learner",
            "dataset": root / "online.zarr", "launch_log": root / "launch.log", "learner_log": root / "learner.log",
            "record": root / "benchmark.json"}


def train_command(args: argparse.Namespace, dataset: Path, paths: dict[str, Path], robot: bool) -> list[str]:
    """`robot-stack train` with online_finetune.py's IQL seed 0 settings; robot=False: the offline run alone."""
    command = ["robot-stack", "train", "--algo", ALGO, "--dataset", str(dataset), "--steps", str(args.offline_steps),
               "--seed", str(SEED), "--device", args.device, "--eval-every", "0",
               "--eval-episodes", str(args.eval_episodes), "--set", "log_every=250",
               "--set", f"checkpoint_every={10**9}", "--set", "compile=off"]
    for setting in args.set:
        command += ["--set", setting]
    if not robot:
        return [*command, "--out", str(paths["offline"]), "--no-progress"]
    return [*command, "--online", "robot", "--online-steps", str(args.online_steps),
            "--online-eval-every", str(args.eval_every), "--online-dataset", str(paths["dataset"]),
            "--set", f"push_every={args.push_every}", "--actor-timeout", str(args.actor_timeout),
            "--out", str(paths["learner"])]


def check_settings(args: argparse.Namespace, dataset: Path, command: list[str], env: dict[str, str]) -> None:
    """SystemExit naming the fields where the learner's config (`--print-config`) differs from online_finetune.py's
    IQL seed 0 run, other than the target and where the run's files go."""
    import yaml

    finetune = argparse.Namespace(task=args.task, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                                  utd={}, warmup=None, overrides={ALGO: args.set}, rlpd_steps=0,
                                  offline_steps=args.offline_steps, online_steps=args.online_steps, device=args.device)
    wanted = yaml.safe_load(make_config(finetune, dataset, ALGO, SEED).to_yaml())
    printed = subprocess.run([*command, "--print-config"], check=False, env=env, cwd=REPO, capture_output=True,
                             text=True)
    if printed.returncode != 0:
        raise SystemExit(f"the learner's command does not parse: {printed.stderr.strip()}")
    given = yaml.safe_load(printed.stdout)
    differ = sorted(key for key in wanted.keys() | given.keys()
                    if key not in TARGET_FIELDS and wanted.get(key) != given.get(key))
    if differ:
        raise SystemExit(f"the robot run's settings differ from online_finetune.py's {ALGO} seed {SEED} in "
                         f"{', '.join(differ)}: fix train_command()")


def dds_environment() -> dict[str, str]:
    """This process's environment on loopback DDS with a discovery tag of its own (the launch and the learner must
    hear each other and nothing else on the machine)."""
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROBOT_STACK_ROS_BACKEND="dds",
               ROBOT_STACK_DDS_TAG=f"online-robot-bench-{uuid.uuid4().hex[:12]}",
               ROS_DOMAIN_ID=env.get("ROS_DOMAIN_ID") or str(np.random.default_rng().integers(1, 102)),
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    env.pop("ROS_STATIC_PEERS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def children(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended while listed
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        below = parents.get(todo.pop(), [])
        out += below
        todo += below
    return out


def stop(process: subprocess.Popen, name: str) -> None:
    """SIGINT (the launch stops its nodes, the learner saves a checkpoint), then SIGKILL to it and anything it
    started that is still there."""
    below = children(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop within {STOP_TIMEOUT_S:g} s of SIGINT: killing it", flush=True)
            process.kill()
            process.wait()
    for pid in below:
        try:
            os.kill(pid, signal.SIGKILL)
            print(f"killed process {pid} that {name} left behind", flush=True)
        except ProcessLookupError:
            pass


def last_line(path: Path, word: str = "") -> str:
    """The last non-empty line of a log that holds `word` ("" when none); a progress bar's \\r splits lines."""
    if not path.exists():
        return ""
    lines = [line.strip() for line in path.read_text(errors="replace").replace("\r", "\n").splitlines()]
    lines = [line for line in lines if line and word in line]
    return lines[-1] if lines else ""


def run_robot(args: argparse.Namespace, dataset: Path, paths: dict[str, Path], env: dict[str, str],
              host: dict[str, Any]) -> dict[str, Any]:
    """Steps 1-3 of the module's docstring; the timings, commands and `host` (machine() as the run began: its load
    average) in benchmark.json."""
    if paths["root"].exists():  # an unfinished earlier run, or --rerun: start from nothing
        shutil.rmtree(paths["root"])
    paths["root"].mkdir(parents=True)
    offline_command = train_command(args, dataset, paths, robot=False)
    learner_command = train_command(args, dataset, paths, robot=True)
    export_command = ["robot-stack", "export", str(paths["offline"]), "--out", str(paths["model"])]
    launch_command = ["robot-stack", "launch", str(REPO / "launch" / "online.launch.yaml"), f"model:={paths['model']}",
                      f"task:={args.task}", f"dataset:={paths['dataset']}", f"seed:={PLACEMENT_SEED}"]
    started = time.time()
    print(f"1. offline run ({args.offline_steps} updates) and its export: {paths['offline']}", flush=True)
    offline_log = paths["root"] / "offline.log"
    with offline_log.open("w") as log:
        for command in (offline_command, export_command):
            if subprocess.run(command, check=False, env=env, cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT).returncode != 0:
                raise SystemExit(f"{' '.join(command[:2])} failed: {last_line(offline_log)} ({offline_log})")
    offline_s = time.time() - started
    processes: dict[str, subprocess.Popen] = {}
    try:
        print(f"2. the actor side: {' '.join(launch_command[2:])} (ROBOT_STACK_DDS_TAG={env['ROBOT_STACK_DDS_TAG']})",
              flush=True)
        with paths["launch_log"].open("w") as log:
            processes["the launch"] = subprocess.Popen(launch_command, env=env, cwd=REPO, stdout=log,
                                                       stderr=subprocess.STDOUT, start_new_session=True)
        print(f"3. the learner: {paths['learner']} (its output: {paths['learner_log']})", flush=True)
        learner_started = time.time()
        with paths["learner_log"].open("w") as log:
            processes["the learner"] = subprocess.Popen(learner_command, env=env, cwd=REPO, stdout=log,
                                                        stderr=subprocess.STDOUT, start_new_session=True)
        learner, launch = processes["the learner"], processes["the launch"]
        shown = ""
        while learner.poll() is None:
            if launch.poll() is not None:
                raise SystemExit(f"the launch ended ({launch.returncode}) while the learner ran: {paths['launch_log']}")
            time.sleep(5.0)
            line = last_line(paths["learner_log"], "env steps")
            if line and line != shown:
                print(f"   {time.time() - learner_started:6.0f} s  {line}", flush=True)
                shown = line
        learner_s = time.time() - learner_started
        if learner.returncode != 0:
            raise SystemExit(f"the learner exited with status {learner.returncode}: "
                             f"{last_line(paths['learner_log']) or 'no output'} ({paths['learner_log']})")
    finally:
        for name in ("the learner", "the launch"):
            if name in processes:
                stop(processes[name], name)
    record = {**host, "offline_and_export_s": round(offline_s, 1), "learner_s": round(learner_s, 1),
              "wall_s": round(time.time() - started, 1), "tag": env["ROBOT_STACK_DDS_TAG"],
              "commands": {"offline": " ".join(offline_command), "export": " ".join(export_command),
                           "launch": " ".join(launch_command), "learner": " ".join(learner_command)}}
    paths["record"].write_text(json.dumps(record, indent=2) + "\n")
    return record


def gymnasium_runs(args: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """online_finetune.py's IQL runs with these budgets that have evaluations: {seed: {"curve": eval.jsonl rows,
    "collected": collected()'s windows}}."""
    finetune = argparse.Namespace(task=args.task, rlpd_steps=0, offline_steps=args.offline_steps,
                                  online_steps=args.online_steps)
    pattern = run_folder(finetune, ALGO, SEED).name.replace(f"seed{SEED}", "seed*")
    runs = {}
    for folder in sorted(run_folder(finetune, ALGO, SEED).parent.glob(pattern)):
        curve = read_curve(folder)
        if any(row.get("phase") == "online" for row in curve):
            runs[int(folder.name.split("_")[1].removeprefix("seed"))] = {
                "curve": curve, "collected": collected(folder / "online.zarr", args.eval_every)}
    return dict(sorted(runs.items()))


def collected(dataset: Path, every: int) -> list[dict[str, Any]]:
    """Success of the online episodes a run collected (the policy that acted, not an evaluation): per window of
    `every` environment steps, the episodes that ended in it: {env_steps (the window's end), episodes,
    success_rate}; [] when the run has no online dataset."""
    from robot_stack.data import Dataset

    if not (dataset / "zarr.json").exists():
        return []
    table = Dataset.open(dataset).episode_table()
    ends = np.cumsum(np.asarray(table["length"]) - 1)  # an episode of T frames is T - 1 environment steps
    # The last episode overshoots the budget by a few steps: it counts in the last whole window.
    window = np.minimum((ends - 1) // every, max(1, round(ends[-1] / every)) - 1)
    success = np.asarray(table["success"], bool)
    return [{"env_steps": int(min((w + 1) * every, ends[-1])), "episodes": int((window == w).sum()),
             "success_rate": round(float(success[window == w].mean()), 4)} for w in np.unique(window)]


def stale_frames(dataset: Path) -> dict[str, int]:
    """{frames, stale}: the robot run's recorded frames, and those where some feature was older than its max age
    (the recorder's stale.* flags: a loaded machine that misses the control rate shows here)."""
    from robot_stack.data import Dataset

    recorded = Dataset.open(dataset)
    stale = np.zeros(recorded.n_frames, bool)
    for name in recorded.features:
        if name.startswith("stale."):
            stale |= np.asarray(recorded.array(name)[:], bool)
    return {"frames": int(recorded.n_frames), "stale": int(stale.sum())}


def slim(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluations without their per-episode rows (the run's eval.jsonl has them)."""
    return [{key: value for key, value in row.items() if key != "rows"} for row in curve]


def points(curve: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(env steps, success rate): the last offline evaluation at 0, then the online ones."""
    offline = [row for row in curve if row.get("phase") == "offline"][-1:]
    return [(0 if row.get("phase") == "offline" else int(row["env_steps"]), float(row["success_rate"]))
            for row in offline + [row for row in curve if row.get("phase") == "online"]]


def plot(path: Path, task: str, robot: dict[str, Any], gym: dict[int, dict[str, Any]], episodes: int,
         subtitle: str) -> None:
    """Left: the evaluations (deterministic policy, gymnasium env); right: the episodes each run collected.
    robot and gym[seed]: {"curve": eval.jsonl rows, "collected": collected()'s windows}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (evaluated, acted) = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    others = [seed for seed in gym if seed != SEED]
    for seed, run in gym.items():
        label = (f"gymnasium target, seed {seed}" if seed == SEED else
                 f"gymnasium target, seeds {', '.join(map(str, others))}" if seed == others[0] else None)
        style = {"color": "tab:blue", "label": label, "alpha": 1.0 if seed == SEED else 0.4,
                 "linewidth": 1.8 if seed == SEED else 1.0, "marker": "."}
        xy = points(run["curve"])
        evaluated.plot([p[0] for p in xy], [p[1] for p in xy], **style)
        acted.plot([w["env_steps"] for w in run["collected"]], [w["success_rate"] for w in run["collected"]], **style)
    style = {"color": "tab:red", "linewidth": 2.0, "marker": "o", "label": f"robot target over DDS, seed {SEED}"}
    xy = points(robot["curve"])
    evaluated.plot([p[0] for p in xy], [p[1] for p in xy], **style)
    acted.plot([w["env_steps"] for w in robot["collected"]], [w["success_rate"] for w in robot["collected"]], **style)
    evaluated.set_title(f"evaluation: deterministic policy, gymnasium env, {episodes} seeded episodes", fontsize=9)
    acted.set_title("episodes collected (robot: deterministic actor of the last push; gymnasium: sampled)",
                    fontsize=9)
    for axis in (evaluated, acted):
        axis.axvline(0, color="grey", linestyle=":", label="switch (offline -> online)")
        axis.set_xlabel("environment steps (online)")
        axis.set_ylim(-0.02, 1.02)
        axis.legend(loc="best", fontsize=8)
        if not gym:
            axis.text(0.5, 0.5, "no gymnasium IQL run with these budgets yet\n(benchmarks/online_finetune.py)",
                      transform=axis.transAxes, ha="center", color="grey")
    evaluated.set_ylabel("success rate")
    figure.suptitle(f"{ALGO.upper()} online fine-tuning on {task}: robot target vs gymnasium target ({subtitle})",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="reach2d", choices=["reach2d"], help="the sim task (the medium dataset's)")
    parser.add_argument("--episodes", type=int, default=10, help="medium episodes of the dataset (default 10)")
    parser.add_argument("--offline-steps", type=int, default=2000, help="offline updates (default 2000)")
    parser.add_argument("--online-steps", type=int, default=3000, help="environment steps (default 3000)")
    parser.add_argument("--eval-every", type=int, default=None, help="env steps between evaluations (default 1/10)")
    parser.add_argument("--eval-episodes", type=int, default=20, help="episodes per evaluation (default 20)")
    parser.add_argument("--push-every", type=int, default=100,
                        help="gradient updates between models pushed to the policy node (default 100)")
    parser.add_argument("--actor-timeout", type=float, default=300.0,
                        help="seconds the learner waits to hear the launch's nodes (default 300: a loaded machine)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="IQL config overrides, as online_finetune.py's --set iql:KEY=VALUE (e.g. batch_size=128)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rerun", action="store_true", help="train again even where the run folder holds a result")
    parser.add_argument("--output", type=Path, default=None,
                        help="result file (default benchmarks/results/online_robot_<task>.json; the figure beside it)")
    args = parser.parse_args()
    # Stop the processes on Ctrl-C and SIGTERM, also when started where SIGINT is ignored (a shell's background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    args.eval_every = args.eval_every or max(1, args.online_steps // 10)
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    host = machine(["torch", "numpy", "mujoco", "onnxruntime", "cyclonedds"], device=args.device)
    dataset = collect(args.task, args.episodes, seed=0)
    paths, env = folders(args), dds_environment()
    check_settings(args, dataset, train_command(args, dataset, paths, robot=True), env)
    result_file = paths["learner"] / "robot_result.json"
    if args.rerun or not (result_file.exists() and paths["record"].exists()):
        try:
            run_robot(args, dataset, paths, env, host)
        except KeyboardInterrupt:
            print("interrupted: the launch and the learner are stopped", file=sys.stderr)
            return 130
    else:
        print(f"{paths['root']} holds a finished run: only re-reading it (--rerun trains again)")
    record = json.loads(paths["record"].read_text())
    learned = json.loads(result_file.read_text())
    robot = learned["robot"]
    curve = read_curve(paths["learner"])
    figures = seed_figures(curve)
    acted = collected(paths["dataset"], args.eval_every)
    gym = gymnasium_runs(args)
    gym_figures = {str(seed): seed_figures(run["curve"]) for seed, run in gym.items()}
    finals = [f["final_success"] for f in gym_figures.values() if f["final_success"] is not None]
    if gym:
        beside = f"gymnasium IQL seeds {', '.join(map(str, gym))} from runs/results/online/{args.task}"
    else:
        beside = (f"no gymnasium IQL run with these budgets in runs/results/online/{args.task} yet: run "
                  "benchmarks/online_finetune.py, then this script again to redraw")
    print(f"\n{args.task}, {ALGO} seed {SEED}: offline {args.offline_steps} updates, online {args.online_steps} env "
          f"steps, push every {args.push_every} updates")
    print(f"{'target':28} {'offline':>8} {'final':>6} {'steps to 90%':>13}")
    print(f"{'robot (DDS, policy node)':28} {figures['offline_success']!s:>8} {figures['final_success']!s:>6} "
          f"{figures['env_steps_to_90']!s:>13}")
    for seed, row in gym_figures.items():
        print(f"{f'gymnasium, seed {seed}':28} {row['offline_success']!s:>8} {row['final_success']!s:>6} "
              f"{row['env_steps_to_90']!s:>13}")
    if not gym:
        print(beside)
    print(f"robot run: {robot['committed']} episodes, {robot['env_steps']} env steps, {robot['updates']} online "
          f"updates, models pushed {robot['pushed']}, accepted {robot['accepted']}, interventions "
          f"{robot['interventions']}; learner {record['learner_s']:.0f} s, all {record['wall_s']:.0f} s")
    output = args.output or RESULTS / f"online_robot_{args.task}.json"
    plot(output.with_suffix(".png"), args.task, {"curve": curve, "collected": acted}, gym, args.eval_episodes,
         f"same dataset and settings; a model pushed every {args.push_every} updates")
    result = {
        "benchmark": "online_robot", "task": args.task, "algo": ALGO, "seed": SEED,
        "dataset": {"path": str(dataset.relative_to(REPO)), "episodes": args.episodes, "mix": "medium"},
        "offline_steps": args.offline_steps, "online_steps": args.online_steps, "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes, "push_every": args.push_every,
        "robot": {"curve": slim(curve), "collected": acted, **figures, "env_steps": robot["env_steps"],
                  "episodes": robot["committed"],
                  "online_updates": robot["updates"], "models_pushed": robot["pushed"],
                  "models_accepted": robot["accepted"], "models_refused": robot["refused"],
                  "models_unanswered": robot["unanswered"], "interventions": robot["interventions"],
                  **stale_frames(paths["dataset"]),
                  "complete": learned.get("complete"), "run": str(paths["learner"].relative_to(REPO)),
                  "offline_and_export_s": record["offline_and_export_s"], "learner_s": record["learner_s"],
                  "wall_s": record["wall_s"]},
        "gymnasium": {"runs": f"runs/results/online/{args.task}/{ALGO}_seed*_off{args.offline_steps}_on"
                              f"{args.online_steps}", "seeds": list(gym), "note": beside, "per_seed": gym_figures,
                      "final_success_mean": float(np.mean(finals)) if finals else None,
                      "final_success_std": float(np.std(finals)) if finals else None,
                      "curves": {str(seed): slim(run["curve"]) for seed, run in gym.items()},
                      "collected": {str(seed): run["collected"] for seed, run in gym.items()}},
        "command": "python benchmarks/online_robot.py " + " ".join(sys.argv[1:]),
        "commands": {step: line.replace(f"{REPO}/", "") for step, line in record["commands"].items()},
        # The machine as the run began; a run recorded without it: as now, when only this JSON was written.
        "machine": record.get("machine", host["machine"]), "versions": record.get("versions", host["versions"]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_result(output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
