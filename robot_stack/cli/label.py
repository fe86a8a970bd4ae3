"""``robot-stack label``: turn a dataset and a task sentence into per-step rewards (labels/<run>/reward), and
list the runs a dataset holds. `label eval` is registered from robot_stack.cli.label_eval when it is installed.

Thin: argument parsing and printing; the work is in robot_stack.label (job, labelers). Bad input (an unknown
labeler or camera, a dataset without images, an empty task, a model that cannot be used, a run that exists)
is a one-line error, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from robot_stack.cli import arguments

DESCRIPTION = """\
Reward labeling: a labeler turns the committed frames of a dataset and a task sentence into one reward per
step, written beside the raw data as labels/<run>/reward (calibrated) and labels/<run>/raw (the labeler's
scores), with provenance. The recorded data never changes; several runs coexist (docs/label.md)."""

RUN_EPILOG = """\
examples:
  robot-stack label run demo.zarr --labeler clip --task "lift the red cube" --model ViT-B-32 --pretrained openai
  robot-stack label run demo.zarr --labeler clip --task "lift the red cube" --model ./my_clip_folder \\
      --camera agentview --set alpha=0.5 --set baseline="a robot arm" --run clip-lift
  robot-stack label run demo.zarr --labeler clip --task "lift the red cube" --model ./my_clip_folder \\
      --engine ray --address 10.0.0.5:6379
  robot-stack train --algo iql --dataset demo.zarr --reward labels/clip-lift

Bad input is a one-line error, exit status 2."""


def register(subparsers: argparse._SubParsersAction) -> None:
    label = subparsers.add_parser("label", help="label rewards with vision-language and learned models",
                                  description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = label.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("run", help="label every step of a dataset with a labeler",
                         description="Run a labeler over every committed frame and write labels/<run>/reward. Scores "
                         "are calibrated with one affine map fitted over the whole dataset (5th..95th percentile of "
                         "the raw scores -> 0..1), never per episode; the map and the raw scores are kept. CLIP "
                         "embeddings are cached in the dataset's labels area and reused by later runs.",
                         epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="DATASET", help="the dataset folder (NAME.zarr)")
    p.add_argument("--labeler", required=True, metavar="NAME", help="clip, preference, progress or success")
    p.add_argument("--task", required=True, help='the task sentence, e.g. "lift the red cube"')
    p.add_argument("--run", default="", metavar="NAME", help="the label run's name (default: LABELER-<hash of the "
                   "request>, printed)")
    p.add_argument("--camera", metavar="NAME", help="the camera: agentview or image.agentview (default: the only one)")
    p.add_argument("--model", default="", metavar="MODEL", help="open_clip model: an architecture with --pretrained "
                   "(ViT-B-32), ARCH:/path/checkpoint.pt, or a local model folder (open_clip_config.json + weights)")
    p.add_argument("--pretrained", metavar="TAG", help="open_clip pretrained tag for --model ARCH (downloaded once)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="a labeler option (repeatable), e.g. --set alpha=0.5 --set baseline='a robot arm'")
    p.add_argument("--calibration", default="percentile-5-95", choices=("percentile-5-95", "none"),
                   help="how raw scores become rewards (default: %(default)s, one map for the whole dataset)")
    p.add_argument("--seed", type=arguments.non_negative_int, default=0, help="seed of every random choice")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default: %(default)s)")
    p.add_argument("--batch-size", type=arguments.positive_int, default=64, metavar="N",
                   help="frames per embedding batch (default: %(default)s)")
    p.add_argument("--save-every", type=arguments.positive_int, default=1024, metavar="FRAMES",
                   help="save embeddings every FRAMES frames, so a killed job rerun with the same command resumes "
                   "there (default: %(default)s)")
    p.add_argument("--engine", default="local", choices=("local", "ray"), help="where frames are embedded: local (this "
                   "process) or ray (shards over a Ray cluster, the same labels; default: %(default)s)")
    p.add_argument("--address", default="", metavar="ADDR", help="with --engine ray: the running Ray cluster's head "
                   "HOST:PORT (or ray://HOST:PORT, auto); its workers must see DATASET at the same path (default: a "
                   "Ray started on 127.0.0.1 for this job)")
    p.add_argument("--workers", type=arguments.positive_int, metavar="N", help="with --engine ray: Ray workers (one "
                   "CPU each; default: every CPU of this machine, or of the cluster)")
    p.add_argument("--overwrite", action="store_true", help="replace a label run of the same name")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)

    p = verbs.add_parser("list", help="every reward label run of a dataset, with its provenance",
                         description="List the dataset's reward label runs: labeler, judge, model, task and "
                         "prompts, created, calibration, and GROUND TRUTH where a run used the recorded sim reward "
                         "or success (only for measuring the rest of the chain).")
    p.add_argument("path", metavar="DATASET", help="the dataset folder (NAME.zarr)")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p.set_defaults(func=list_runs)

    try:
        label_eval = importlib.import_module("robot_stack.cli.label_eval")
    except ModuleNotFoundError as error:
        if error.name != "robot_stack.cli.label_eval":
            raise
    else:
        label_eval.register_eval(verbs)


def parse_options(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE items -> {KEY: VALUE}; a VALUE that reads as JSON (0.5, true, [1, 2]) is that value."""
    from robot_stack.errors import LabelError

    options: dict[str, Any] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise LabelError(f"--set {item!r}: write it as KEY=VALUE, e.g. --set alpha=0.5")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def run(args: argparse.Namespace) -> int:
    from robot_stack.label.job import LabelRequest, model_string, run_label_job

    request = LabelRequest(dataset=args.path, labeler=args.labeler, task=args.task, run=args.run, camera=args.camera,
                           model=model_string(args.model, args.pretrained), config=parse_options(args.options),
                           seed=args.seed, device=args.device, calibration=args.calibration,
                           overwrite=args.overwrite, progress=not args.no_progress, batch_size=args.batch_size,
                           save_every=args.save_every, engine=args.engine, address=args.address,
                           workers=args.workers)
    summary = run_label_job(request)
    marker = "  (GROUND TRUTH used: for measuring the chain only)" if summary.attrs.get("ground_truth_used") else ""
    print(f"labeled {summary.frames} frames in {summary.seconds:.1f} s: {args.path} labels/{summary.run}{marker}")
    print(f"train on it: robot-stack train --algo iql --dataset {args.path} --reward labels/{summary.run}")
    return 0


def run_rows(path: str) -> list[dict[str, Any]]:
    """One dict per reward label run of the dataset at `path`: its name, completeness and provenance."""
    from robot_stack.data import Dataset
    from robot_stack.errors import DatasetError
    from robot_stack.label.apply import has_reward_model

    ds = Dataset.open(path)
    rows = []
    for name in ds.label_runs():
        try:
            attrs = ds.read_labels(name).attrs
        except DatasetError:
            rows.append({"run": name, "complete": False})
            continue
        rows.append({"run": name, "complete": True, "current": attrs.get("dataset_fingerprint") == ds.fingerprint(),
                     **{key: attrs.get(key) for key in ("labeler", "judge", "model", "camera", "task", "prompts",
                                                        "config", "created", "calibration", "cost")},
                     "ground_truth_used": bool(attrs.get("ground_truth_used", False)),
                     "scores_new_episodes": has_reward_model(ds, name)})
    return rows


def list_runs(args: argparse.Namespace) -> int:
    rows = run_rows(args.path)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"{args.path}: no label runs (make one with robot-stack label run {args.path} --labeler ...)")
        return 0
    for row in rows:
        if not row["complete"]:
            print(f"{row['run']}: incomplete (its writing was interrupted): label again with --overwrite")
            continue
        calibration = row["calibration"] or {}
        mapping = (f"{calibration.get('method')} (reward = {calibration['scale']:.4g} * raw "
                   f"{'-' if calibration['offset'] < 0 else '+'} {abs(calibration['offset']):.4g})"
                   if "scale" in calibration else "none recorded")
        lines = [f"{row['run']}{'  GROUND TRUTH used' if row['ground_truth_used'] else ''}"
                 f"{'' if row['current'] else '  (stale: the dataset changed since; label again)'}",
                 f"  labeler {row['labeler']}" + (f", judge {row['judge']}" if row["judge"] else ""),
                 f"  model {row['model'] or '-'}" + (f", camera {row['camera']}" if row["camera"] else ""),
                 f"  task {row['task']!r}" + (f", prompts {json.dumps(row['prompts'])}" if row["prompts"] else ""),
                 f"  created {row['created']}, calibration {mapping}"]
        if row["scores_new_episodes"]:
            lines.append("  model kept: rewards episodes recorded later (online fine-tuning) as it labeled these")
        print("\n".join(lines))
    return 0
