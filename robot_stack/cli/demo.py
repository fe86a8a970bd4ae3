"""``robot-stack demo``: the main job end to end in the sim, and one HTML report.

Collect over ROS 2 topics (sim robot + scripted teleop + recorder, loopback DDS) -> label rewards with a
download-free labeler and score them against the sim ground truth -> train IQL on the labels and BC as the
baseline -> export ONNX + card and verify it -> evaluate each model through the policy node -> fine-tune the
IQL run online in the sim (--online-steps; on in --full) -> the scripted expert and a random policy on the same
placements -> report. Every stage is the project's own command run as a subprocess (printed before it runs: the
command that does that stage alone), so this module imports nothing from the nodes or the sim. What it writes
under --out (default runs/demo):

  dataset.zarr                 the recorded episodes and labels/<labeler>-px
  label_eval.json, .png        robot-stack label eval of the label run
  runs/iql, runs/bc            the training runs (eval.jsonl, tb/, result.json)
  models/{iql,bc}.onnx, .json  the exported models and their cards
  verify/<model>.txt           robot-stack model verify's output
  eval/<model>.json            robot-stack eval --json through the policy node
  runs/iql_online              the IQL run fine-tuned online (eval.jsonl by env steps, online.zarr, result.json)
  models/iql_online.onnx, .json  its exported model and card (verify/iql_online.txt)
  reference/{expert,random}.zarr   the scripted expert and a random policy on the evaluation's placements
  logs/<step>.log              each command's full output
  summary.json, report.html    the figures of the summary table; the report (robot_stack.demo_report)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robot_stack.cli import arguments
from robot_stack.demo_report import clock
from robot_stack.errors import RobotStackError

DESCRIPTION = """\
The main job end to end in simulation, loopback only: record episodes of mixed skill over ROS 2 topics,
label their rewards from the task sentence, train IQL on the labels and BC as the baseline, export and
verify the models, deploy each through the policy node against the sim robot and measure its success,
fine-tune the IQL policy online in the sim (--online-steps N; on in --full), and write one self-contained HTML
report. The default size (reach2d, no online stage) takes about 8 minutes on 2 CPU cores; --full is the
real-size run for a GPU workstation (Lift, more episodes and updates, 20,000 online env steps)."""

EPILOG = """\
examples:
  robot-stack demo                                  # reach2d, the default size
  robot-stack demo --full --out runs/demo_lift      # Lift, 200 episodes, 20,000 updates, 20,000 online env steps
  robot-stack demo --online-steps 3000              # reach2d with the online fine-tuning stage
  robot-stack demo --episodes 12 --steps 300 --eval-episodes 5 --out /tmp/demo_small
  robot-stack demo --dry-run                        # print the stages' commands only
  robot-stack demo --out runs/demo --report-only    # write the report again from a finished job's files

Each stage prints the command that runs it alone, then one line with its time. A stage that fails, or
makes less than it was asked for, stops the job: exit status 1 and a line naming the stage and why."""

# Per sim task: the camera the recorder records (and the labeler reads), the task's horizon in control steps
# (the scripted teleop marks an episode fail at it, as the task's evaluation does), and the task sentence the
# recorder configs hold (launch/params/recorder_<task>.yaml).
TASKS: dict[str, dict[str, Any]] = {
    "reach2d": {"camera": "top:64x64", "horizon": 30, "sentence": "move the fingertip onto the target"},
    "lift": {"camera": "agentview:84x84", "horizon": 200, "sentence": "lift the cube"},
}
# name -> (task, episodes, updates, evaluation episodes, labeler updates, online env steps)
# --full's online budget: 20,000 env steps (100 Lift episodes, half the recorded data, so online episodes become a
# third of IQL's buffer) and as many updates as the offline phase made (IQL updates once per env step). The default
# size has none: the job must stay under 15 minutes on 2 CPU cores.
SIZES: dict[str, tuple[str, int, int, int, int, int]] = {
    "default": ("reach2d", 100, 10000, 20, 300, 0),
    "full": ("lift", 200, 20000, 50, 2000, 20000),
}
LABELERS = {
    "progress": ["--labeler", "progress", "--set", "input=pixels"],
    "preference": ["--labeler", "preference", "--set", "judge=time", "--set", "pixels=true"],
}
EVAL_SEED = 1000  # eval's default: placements away from the recorded ones (seeds 0..)
CURVE_POINTS = 5  # sim evaluations during each training run (the report's success-vs-updates curve)
REAL_ROBOT_NOTE = ("On a real robot the labels come from a pretrained CLIP (--labeler clip --model ViT-B-32 "
                   "--pretrained openai) or a served VLM as the judge (--labeler preference --set judge=chat "
                   "--set endpoint=http://HOST:PORT/v1 --set model_name=NAME); this demo uses a labeler that "
                   "trains on the dataset itself, so nothing is downloaded.")
FRACTION = arguments.number(float, lambda v: 0.0 < v < 1.0, "a number between 0 and 1 (exclusive)")
MARKER = ".robot_stack_demo"  # a file in --out saying the demo made the folder (so it may replace it)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="the main job end to end in the sim, with an HTML report",
                                   description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="the job's folder (default runs/demo; a folder an earlier "
                        "demo made is replaced)")
    parser.add_argument("--full", action="store_true", help="the real size: Lift, 200 episodes, 20,000 updates, "
                        "50 evaluation episodes, 20,000 online env steps (a GPU workstation)")
    parser.add_argument("--episodes", type=arguments.positive_int, help="episodes to record (default 100; --full 200)")
    parser.add_argument("--expert-fraction", type=FRACTION, default=0.25,
                        help="share of the episodes the expert drives; the medium operator drives the rest "
                             "(default 0.25)")
    parser.add_argument("--steps", type=arguments.positive_int, help="training updates of IQL and of BC "
                        "(default 10000; --full 20000)")
    parser.add_argument("--eval-episodes", type=arguments.positive_int,
                        help="episodes each model runs through the policy node (default 20; --full 50)")
    parser.add_argument("--train-eval-episodes", type=arguments.positive_int, default=10,
                        help=f"episodes of each of the {CURVE_POINTS} sim evaluations during training (default 10)")
    parser.add_argument("--online-steps", type=arguments.non_negative_int,
                        help="env steps of the online fine-tuning stage: the IQL run goes on in the sim with the label "
                             "run's rewards (default 0, no online stage; --full 20000)")
    parser.add_argument("--labeler", choices=sorted(LABELERS), default="progress",
                        help="download-free labeler on the camera frames (default progress)")
    parser.add_argument("--label-steps", type=arguments.positive_int,
                        help="updates of the labeler's model (default 300; --full 2000)")
    parser.add_argument("--seed", type=arguments.non_negative_int, default=0,
                        help="first placement seed of the recording; seeds the labeler and the trainers (default 0)")
    parser.add_argument("--device", default="auto", help="training and labeling: auto (cuda if present), cpu, cuda")
    parser.add_argument("--dry-run", action="store_true", help="print the stages' commands and exit")
    parser.add_argument("--report-only", action="store_true", help="write the report again from --out's files")
    parser.set_defaults(func=run)


# ------------------------------------------------------------------------------------------------ the plan


@dataclass
class Command:
    """One CLI run: ``shown`` is what a user types (the console scripts), ``argv`` what runs here."""

    name: str  # its log is logs/<name>.log
    shown: list[str]
    stdout: Path | None = None  # where its stdout goes (a JSON result), else into the log with stderr
    env: dict[str, str] = field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        program, *rest = self.shown
        module = {"robot-stack": "robot_stack.cli.main", "sim_collect": "robot_stack.sim.collect"}[program]
        return [sys.executable, "-m", module, *rest]

    def text(self) -> str:
        prefix = "".join(f"{key}={value} " for key, value in self.env.items())
        redirect = f" > {self.stdout}" if self.stdout else ""
        return f"{prefix}{shlex.join(self.shown)}{redirect}"


@dataclass
class Stage:
    name: str
    what: str
    commands: list[Command]


@dataclass
class Plan:
    """Everything the job will do, known before it starts (so --dry-run prints it)."""

    out: Path
    task: str
    episodes: int
    expert_episodes: int
    steps: int
    eval_episodes: int
    label_run: str
    stages: list[Stage]
    online_steps: int = 0  # env steps of the online stage; 0: the job has none

    @property
    def dataset(self) -> Path:
        return self.out / "dataset.zarr"


def make_plan(args: argparse.Namespace) -> Plan:
    task, episodes, steps, eval_episodes, label_steps, online_steps = SIZES["full" if args.full else "default"]
    episodes = args.episodes or episodes
    steps = args.steps or steps
    eval_episodes = args.eval_episodes or eval_episodes
    label_steps = args.label_steps or label_steps
    online_steps = online_steps if args.online_steps is None else args.online_steps
    setup = TASKS[task]
    out = Path(args.out)
    dataset = out / "dataset.zarr"
    experts = max(1, round(episodes * args.expert_fraction))
    if experts >= episodes:
        raise RobotStackError(f"--episodes {episodes} leaves no episode for the medium operator: record at least 2")
    label_run = f"{args.labeler}-px"
    rs = "robot-stack"

    def collect(skill: str, count: int, seed: int) -> Command:
        return Command(f"collect_{skill}", [
            rs, "launch", "robot_stack", "collect.launch.yaml", f"task:={task}", "teleop:=scripted", f"skill:={skill}",
            f"episodes:={count}", f"seed:={seed}", f"max_steps:={setup['horizon']}", f"cameras:={setup['camera']}",
            f"task_text:={setup['sentence']}", f"operator:=scripted-{skill}", f"dataset:={dataset}"])

    # Tiny models on a shared CPU train fastest on one thread (measured: 7x faster at load 5 on 2 cores).
    one_thread = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    train_common = ["--dataset", str(dataset), "--steps", str(steps), "--eval-every", str(max(1, steps // CURVE_POINTS)),
                    "--eval-episodes", str(args.train_eval_episodes), "--seed", str(args.seed), "--device", args.device,
                    "--set", f"log_every={max(1, steps // 25)}", "--no-progress"]
    label_device = ["--device", _label_device(args.device)]
    models = {algo: out / "models" / f"{algo}.onnx" for algo in ("iql", "bc")}
    stages = [
        Stage("collect", f"the sim robot, the scripted teleop ({experts} expert, {episodes - experts} medium "
              "episodes) and the recorder over ROS 2 topics (loopback DDS)",
              [collect("expert", experts, args.seed), collect("medium", episodes - experts, args.seed + experts)]),
        Stage("label", f"rewards from the task sentence by the {args.labeler} labeler on the camera frames "
              "(no download)",
              [Command("label", [rs, "label", "run", str(dataset), *LABELERS[args.labeler], "--set",
                                 f"steps={label_steps}", "--task", setup["sentence"], "--run", label_run, "--seed",
                                 str(args.seed), *label_device, "--no-progress"])]),
        Stage("label eval", "the labels scored against the sim's ground truth",
              [Command("label_eval", [rs, "label", "eval", str(dataset), "--run", label_run, "--out",
                                      str(out / "label_eval.json")])]),
        Stage("train", f"IQL on the labels and BC (the baseline), {steps} updates each",
              [Command("train_iql", [rs, "train", "--algo", "iql", "--reward", f"labels/{label_run}", *train_common,
                                     "--out", str(out / "runs" / "iql")], env=one_thread),
               Command("train_bc", [rs, "train", "--algo", "bc", "--reward", "none", *train_common,
                                    "--out", str(out / "runs" / "bc")], env=one_thread)]),
        Stage("export", "each run's policy as ONNX with its model card",
              [Command(f"export_{algo}", [rs, "export", str(out / "runs" / algo), "--out", str(model)])
               for algo, model in models.items()]),
        Stage("verify", "each model's provenance chain (model, card, run, checkpoint, dataset, label run)",
              [Command(f"verify_{algo}", [rs, "model", "verify", str(model)], stdout=out / "verify" / f"{algo}.txt")
               for algo, model in models.items()]),
        Stage("deploy", f"each model in the policy node against the sim robot over DDS, {eval_episodes} episodes",
              [Command(f"eval_{algo}", [rs, "eval", str(model), "--episodes", str(eval_episodes), "--seed",
                                        str(EVAL_SEED), "--json"], stdout=out / "eval" / f"{algo}.json")
               for algo, model in models.items()]),
        *([online_stage(out, task, online_steps, args, one_thread)] if online_steps else []),
        Stage("reference", "the scripted expert and a random policy on the same placements",
              [Command(f"reference_{skill}", ["sim_collect", "--task", task, "--episodes", str(eval_episodes), "--mix",
                                              f"{skill}=1", "--seed", str(EVAL_SEED), "-o",
                                              str(out / "reference" / f"{skill}.zarr"), "-q"])
               for skill in ("expert", "random")]),
        Stage("report", "the summary and the HTML report",
              [Command("report", [rs, "demo", "--out", str(out), "--report-only"])]),
    ]
    return Plan(out, task, episodes, experts, steps, eval_episodes, label_run, stages, online_steps)


def online_stage(out: Path, task: str, online_steps: int, args: argparse.Namespace, env: dict[str, str]) -> Stage:
    """The IQL run fine-tuned online in the sim (a new run from its networks and config, no more offline updates;
    rewards from the label run's model on the new episodes' frames), then its policy exported and verified."""
    run, model = out / "runs" / "iql_online", out / "models" / "iql_online.onnx"
    return Stage("online", f"IQL fine-tuned online in sim:{task} from the offline run, {online_steps} env steps, "
                 "rewards from the label run's model; its policy exported and verified",
                 [Command("train_iql_online", ["robot-stack", "train", "--init-from", str(out / "runs" / "iql"),
                                               "--online", f"sim:{task}", "--online-steps", str(online_steps),
                                               "--online-eval-every", str(max(1, online_steps // CURVE_POINTS)),
                                               "--seed", str(args.seed), "--device", args.device, "--out", str(run),
                                               "--no-progress"], env=env),
                  Command("export_iql_online", ["robot-stack", "export", str(run), "--out", str(model)]),
                  Command("verify_iql_online", ["robot-stack", "model", "verify", str(model)],
                          stdout=out / "verify" / "iql_online.txt")])


def _label_device(device: str) -> str:
    """The labeler's --device for the trainers' one: auto is cuda where torch sees a GPU (label run's default is cpu)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------------ running


class StageFailed(Exception):
    """A stage's command failed, or made less than it was asked for: the message says which and why."""


def run(args: argparse.Namespace) -> int:
    plan = make_plan(args)
    if args.report_only:
        return _report(plan)
    if args.dry_run:
        for number, stage in enumerate(plan.stages, 1):
            print(f"[{number}/{len(plan.stages)}] {stage.name}: {stage.what}")
            for command in stage.commands:
                print(f"  $ {command.text()}")
        return 0
    _prepare(plan.out)
    return Job(plan).run()


def _prepare(out: Path) -> None:
    """Replace a folder an earlier demo made; refuse one it did not."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise RobotStackError(f"{out} holds files this demo did not write: choose another --out, or remove it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by robot-stack demo; the next demo with this --out replaces the folder\n")
    for folder in ("logs", "verify", "eval", "reference"):
        (out / folder).mkdir()


def demo_environment() -> dict[str, str]:
    """This process's environment, loopback-only with a discovery tag of the job's own (ARCHITECTURE.md)."""
    env = dict(os.environ)
    env.pop("ROS_STATIC_PEERS", None)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROBOT_STACK_DDS_TAG=f"robot-stack-demo-{uuid.uuid4().hex[:12]}",
               PYTHONUNBUFFERED="1")
    env.setdefault("MUJOCO_GL", "egl" if os.path.exists("/dev/nvidia0") else "osmesa")
    return env


class Job:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.env = demo_environment()
        self.started = time.monotonic()
        self.timings: list[dict[str, Any]] = []

    def run(self) -> int:
        plan, total = self.plan, len(self.plan.stages)
        online = f", {plan.online_steps} online env steps" if plan.online_steps else ""
        print(f"robot-stack demo: {plan.task}, {plan.episodes} episodes, {plan.steps} updates, {plan.eval_episodes} "
              f"evaluation episodes{online} -> {plan.out} (loopback only, discovery tag "
              f"{self.env['ROBOT_STACK_DDS_TAG']})", flush=True)
        for number, stage in enumerate(plan.stages, 1):
            print(f"[{number}/{total}] {stage.name}: {stage.what}", flush=True)
            if stage.name == "label":
                print(f"  note: {REAL_ROBOT_NOTE}", flush=True)
            for command in stage.commands:
                print(f"  $ {command.text()}", flush=True)
            stage_started = time.monotonic()
            try:
                if stage.name == "report":  # in this process: the job's own summary goes into it
                    self._write_summary(complete=True, seconds=time.monotonic() - self.started)
                    result = str(_write_report(plan))
                else:
                    for command in stage.commands:
                        self._execute(command)
                    result = CHECKS[stage.name](plan)
            except StageFailed as failure:
                seconds = time.monotonic() - stage_started
                self.timings.append({"stage": stage.name, "seconds": round(seconds, 1), "ok": False})
                self._write_summary(complete=False, seconds=time.monotonic() - self.started,
                                    failed={"stage": stage.name, "reason": str(failure)})
                print(f"demo: FAILED at stage {number}/{total} {stage.name} after {clock(seconds)}: {failure}",
                      file=sys.stderr, flush=True)
                return 1
            except KeyboardInterrupt:
                print(f"demo: interrupted at stage {number}/{total} {stage.name}", file=sys.stderr, flush=True)
                return 130
            seconds = time.monotonic() - stage_started
            self.timings.append({"stage": stage.name, "seconds": round(seconds, 1), "ok": True,
                                 "commands": [c.text() for c in stage.commands]})
            print(f"  ok in {clock(seconds)} (elapsed {clock(time.monotonic() - self.started)}): {result}",
                  flush=True)
        self._write_summary(complete=True, seconds=time.monotonic() - self.started)
        from robot_stack.demo_report import gather, summary_table

        print(summary_table(gather(plan.out)))
        print(f"report: {plan.out / 'report.html'}")
        return 0

    def _execute(self, command: Command) -> None:
        log_path = self.plan.out / "logs" / f"{command.name}.log"
        with log_path.open("w") as log:
            log.write(f"$ {command.text()}\n")
            log.flush()
            if command.stdout is None:
                done = subprocess.run(command.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env | command.env,
                                      check=False)
            else:
                with command.stdout.open("w") as stdout:
                    done = subprocess.run(command.argv, stdout=stdout, stderr=log, env=self.env | command.env,
                                          check=False)
        if done.returncode != 0:
            if command.stdout is not None:  # verify's BROKEN lines are on its stdout
                with log_path.open("a") as log:
                    log.write(command.stdout.read_text(errors="replace"))
            raise StageFailed(f"`{shlex.join(command.shown[:3])} ...` exited with status {done.returncode}: "
                              f"{_why(log_path)} (its output: {log_path})")

    def _write_summary(self, complete: bool, seconds: float, failed: dict[str, str] | None = None) -> None:
        summary = {"task": self.plan.task, "episodes": self.plan.episodes,
                   "expert_episodes": self.plan.expert_episodes, "steps": self.plan.steps,
                   "online_steps": self.plan.online_steps,
                   "eval_episodes": self.plan.eval_episodes, "label_run": self.plan.label_run,
                   "eval_seed": EVAL_SEED, "complete": complete and failed is None, "failed": failed,
                   "seconds": round(seconds, 1), "cpus": os.cpu_count(), "load_average": _load_average(),
                   "stages": self.timings, "real_robot_note": REAL_ROBOT_NOTE,
                   "commands": [{"stage": s.name, "what": s.what, "commands": [c.text() for c in s.commands]}
                                for s in self.plan.stages]}
        (self.plan.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _why(log_path: Path) -> str:
    """The line of a failed command's output that says why: its last error line, else its last line."""
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    for marker in ("error:", "[FATAL]", "[ERROR]", "Error", "BROKEN"):
        found = [line for line in lines if marker in line]
        if found:
            return found[-1].split("]: ", 1)[-1]
    return lines[-1] if lines else "no output"


# ------------------------------------------------------------------------------------------------ checks
# Each stage's outputs must exist and hold what was asked for; a check returns the stage's one-line result.


def _check_collect(plan: Plan) -> str:
    from robot_stack.data import Dataset

    try:
        ds = Dataset.open(plan.dataset)
    except RobotStackError as error:
        raise StageFailed(f"the dataset cannot be read: {error}") from None
    if ds.n_episodes != plan.episodes:
        raise StageFailed(f"{plan.dataset} holds {ds.n_episodes} episodes, {plan.episodes} were asked for")
    cameras = [name for name in ds.features if name.startswith("image.")]
    if not cameras:
        raise StageFailed(f"{plan.dataset} has no camera frames: the labeler needs them")
    wins = int((ds.success == 1).sum())
    return (f"{ds.n_episodes} episodes, {ds.n_frames} frames with {cameras[0]}; {wins} successful, "
            f"{ds.n_episodes - wins} failed by the operator's marks")


def _check_label(plan: Plan) -> str:
    from robot_stack.data import Dataset

    ds = Dataset.open(plan.dataset)
    reward = ds.read_labels(plan.label_run).reward
    if len(reward) != ds.n_frames:
        raise StageFailed(f"labels/{plan.label_run} holds {len(reward)} rewards for {ds.n_frames} frames")
    return f"labels/{plan.label_run}: {len(reward)} rewards"


def _check_label_eval(plan: Plan) -> str:
    rows = _label_rows(plan.out)
    if plan.label_run not in rows:
        raise StageFailed(f"{plan.out / 'label_eval.json'} has no row for {plan.label_run}")
    metrics = rows[plan.label_run]
    return ", ".join(f"{name} {metrics.get(key, float('nan')):.2f}" for key, name in LABEL_METRICS.items())


def _check_train(plan: Plan) -> str:
    figures = []
    for algo in ("iql", "bc"):
        result_path = plan.out / "runs" / algo / "result.json"
        if not result_path.exists():
            raise StageFailed(f"{result_path} was not written")
        result = json.loads(result_path.read_text())
        if result.get("steps") != plan.steps:
            raise StageFailed(f"{algo} ran {result.get('steps')} updates, {plan.steps} were asked for")
        success = (result.get("evaluation") or {}).get("success_rate")
        figures.append(f"{algo.upper()} sim success {success:.2f} in training's evaluation" if success is not None
                       else f"{algo.upper()} done")
    return "; ".join(figures)


def _check_export(plan: Plan) -> str:
    for algo in ("iql", "bc"):
        model = plan.out / "models" / f"{algo}.onnx"
        if not model.exists() or not model.with_suffix(".json").exists():
            raise StageFailed(f"{model} or its card {model.with_suffix('.json').name} was not written")
    parity = [json.loads((plan.out / "models" / f"{algo}.json").read_text())["parity"]["max_abs_error"]
              for algo in ("iql", "bc")]
    return f"models/iql.onnx, models/bc.onnx with their cards (parity error {max(parity):.1e})"


def _check_verify(plan: Plan) -> str:
    # model verify exits 0 only when every link holds (checked in _execute); its last line says how many.
    lasts = []
    for algo in ("iql", "bc"):
        lines = (plan.out / "verify" / f"{algo}.txt").read_text().strip().splitlines()
        lasts.append(f"{algo.upper()}: {lines[-1] if lines else 'every link holds'}")
    return "; ".join(lasts)


def _check_deploy(plan: Plan) -> str:
    figures = []
    for algo in ("iql", "bc"):
        result = _read_json(plan.out / "eval" / f"{algo}.json")
        if result.get("episodes") != plan.eval_episodes or len(result.get("rows", [])) != plan.eval_episodes:
            raise StageFailed(f"eval of {algo} ran {result.get('episodes')} episodes, {plan.eval_episodes} asked")
        figures.append(f"{algo.upper()} {result['success_rate']:.2f}")
    return "success through the policy node: " + ", ".join(figures)


def _check_reference(plan: Plan) -> str:
    from robot_stack.demo_report import reference_success

    rates = {}
    for skill in ("expert", "random"):
        rates[skill] = reference_success(plan.out, skill)
        if rates[skill] is None:
            raise StageFailed(f"{plan.out / 'reference' / (skill + '.zarr')} does not hold "
                              f"{plan.eval_episodes} episodes")
    return f"scripted expert {rates['expert']:.2f}, random {rates['random']:.2f}"


def _check_online(plan: Plan) -> str:
    result = _read_json(plan.out / "runs" / "iql_online" / "result.json")
    online = result.get("online") or {}
    if online.get("env_steps", 0) < plan.online_steps:
        raise StageFailed(f"the online run collected {online.get('env_steps', 0)} env steps, {plan.online_steps} "
                          "were asked for")
    if online.get("final_success_rate") is None:
        raise StageFailed(f"{plan.out / 'runs' / 'iql_online' / 'result.json'} has no final success rate: the online "
                          "run made no evaluation")
    model = plan.out / "models" / "iql_online.onnx"
    if not model.exists() or not model.with_suffix(".json").exists():
        raise StageFailed(f"{model} or its card {model.with_suffix('.json').name} was not written")
    switch = online.get("offline_success_rate")
    return (f"IQL sim success {'-' if switch is None else f'{switch:.2f}'} at the switch -> "
            f"{online['final_success_rate']:.2f} after {online['env_steps']} env steps ({online.get('episodes')} "
            f"episodes, {online.get('updates')} updates); models/iql_online.onnx, its provenance verified")


CHECKS = {"collect": _check_collect, "label": _check_label, "label eval": _check_label_eval, "train": _check_train,
          "export": _check_export, "verify": _check_verify, "deploy": _check_deploy, "online": _check_online,
          "reference": _check_reference}
LABEL_METRICS = {"voc": "VOC", "kendall": "Kendall", "pair_accuracy": "pair accuracy", "auc": "AUC"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StageFailed(f"{path} is not a JSON result ({error})") from None


def _label_rows(out: Path) -> dict[str, dict[str, float]]:
    report = _read_json(out / "label_eval.json")
    return {row["name"]: row["metrics"] for row in report["rows"]}


# ------------------------------------------------------------------------------------------------ summary


def _report(plan: Plan) -> int:
    """--report-only: the report again from a finished job's folder, and its summary table."""
    from robot_stack.demo_report import gather, summary_table, write_report

    facts = gather(plan.out)
    path = write_report(facts, plan.out / "report.html")
    print(summary_table(facts))
    print(f"report: {path}")
    return 0


def _write_report(plan: Plan) -> Path:
    from robot_stack.demo_report import ReportError, gather, write_report

    try:
        return write_report(gather(plan.out), plan.out / "report.html")
    except ReportError as error:
        raise StageFailed(str(error)) from None
