"""``robot-stack train``: offline RL (IQL, CQL, TD3+BC) and BC on a dataset; thin over robot_stack.learn."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robot_stack.cli import arguments

DESCRIPTION = """\
Train a policy offline on a robot_stack dataset. The algorithm's defaults are its paper's
(robot_stack/learn/configs/<algo>.yaml); --config FILE and --set key=value change them. Every run
folder keeps the full config, the dataset fingerprint, the reward source, checkpoints, TensorBoard
logs (tensorboard --logdir RUN/tb) and, when the dataset's robot is a sim task, sim evaluations."""

EPILOG = """\
reward sources:
  sim            the sim ground truth recorded with the data (feature of kind 'reward')
  success        1 at the last frame of each successful episode, else 0 (sparse)
  labels/<run>   a reward-labeling run stored in the dataset (robot-stack label ...)
  none           no reward (bc only)

examples (paths are relative to the folder you run in):
  robot-stack train --algo iql --dataset data/reach2d.zarr --reward sim --steps 20000
  robot-stack train --algo bc --dataset data/lift.zarr --obs eef_pose,object_pose
  robot-stack train --algo cql --dataset data/lift.zarr --images image.agentview --set algorithm.alpha=10
  robot-stack train --algo td3bc --dataset data/lift.zarr --images image.agentview --image-encoder clip:ViT-B-32/openai
  robot-stack train --resume runs/iql-reach2d-20261121-101500 --steps 50000 --device cuda --eval-every 5000
  robot-stack train --algo iql --dataset d.zarr --print-config

Bad input (no dataset, unknown feature, missing label run, bad config key) is a one-line error, exit 2."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a policy offline (iql, cql, td3bc, bc)",
                                   description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=["iql", "cql", "td3bc", "bc"], help="the algorithm (required unless --resume)")
    parser.add_argument("--dataset", help="the dataset folder (NAME.zarr)")
    parser.add_argument("--reward", help="reward source: sim, success, labels/<run> or none (default: the algorithm's config)")
    parser.add_argument("--obs", type=_names, help="state features, comma-separated (default: every feature of kind 'state')")
    parser.add_argument("--images", type=_names, help="image features the policy sees, e.g. image.agentview")
    parser.add_argument("--image-encoder", help="cnn (trained, random shift) or clip:<model> (frozen, cached embeddings)")
    parser.add_argument("--steps", type=arguments.positive_int, help="gradient updates")
    parser.add_argument("--batch-size", type=arguments.positive_int)
    parser.add_argument("--seed", type=arguments.non_negative_int)
    parser.add_argument("--device", help="auto (default: cuda if present), cpu, cuda, cuda:N")
    parser.add_argument("--eval-every", type=int, help="steps between sim evaluations (0: at the end only, -1: never)")
    parser.add_argument("--eval-episodes", type=arguments.positive_int)
    parser.add_argument("--config", help="a YAML config file (TrainConfig keys; algorithm: {...})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set algorithm.expectile=0.9 (repeatable)")
    parser.add_argument("--out", help="run folder (default runs/<algo>-<dataset>-<time> in the working folder)")
    parser.add_argument("--resume", metavar="RUN",
                        help="continue the run in this folder from its latest checkpoint, with its saved config; "
                             f"{', '.join(RESUME_APPLIES)} apply, flags that change what it learns are refused")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


# With --resume: flags that change how long, where and how the run is evaluated apply (flag -> TrainConfig field,
# config.RESUME_SETTINGS); flags that say what it learns must match its saved config or be left out.
RESUME_APPLIES = {"--steps": "steps", "--device": "device", "--eval-every": "eval_every",
                  "--eval-episodes": "eval_episodes"}
RESUME_MUST_MATCH = {"--algo": "algo", "--dataset": "dataset", "--reward": "reward", "--obs": "observations",
                     "--images": "images", "--image-encoder": "image_encoder", "--batch-size": "batch_size",
                     "--seed": "seed"}


def _dest(flag: str) -> str:
    return {"--obs": "obs"}.get(flag, flag[2:].replace("-", "_"))


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _overrides(pairs: list[str]) -> dict[str, str]:
    from robot_stack.errors import LearnError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LearnError(f"--set {pair!r}: expected KEY=VALUE, e.g. algorithm.expectile=0.9")
        out[key.strip()] = value.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from robot_stack.errors import LearnError
    from robot_stack.learn.config import load_config
    from robot_stack.learn.trainer import Trainer

    if args.resume:
        changes = _resume_changes(args)
        if args.print_config:
            from robot_stack.learn.config import resumed_config

            print(resumed_config(_saved_config(args.resume), changes).to_yaml(), end="")
            return 0
        trainer = Trainer(resume=args.resume, changes=changes, progress=not args.no_progress)
    else:
        if not args.algo and not args.config:
            raise LearnError("give --algo (iql, cql, td3bc, bc), or --resume RUN")
        fields = {"dataset": args.dataset, "reward": args.reward, "observations": args.obs, "images": args.images,
                  "image_encoder": args.image_encoder, "steps": args.steps, "batch_size": args.batch_size,
                  "seed": args.seed, "device": args.device, "eval_every": args.eval_every,
                  "eval_episodes": args.eval_episodes, "out": args.out}
        config = load_config(args.algo, args.config, _overrides(args.set), **fields)
        if args.print_config:
            print(config.to_yaml(), end="")
            return 0
        trainer = Trainer(config, progress=not args.no_progress)
    result = trainer.run()
    print(json.dumps(result, indent=2))
    return 0


def _saved_config(run: str):
    from robot_stack.learn.config import config_from_dict
    from robot_stack.learn.trainer import latest_checkpoint, load_checkpoint

    return config_from_dict(load_checkpoint(latest_checkpoint(Path(run)), "cpu")["config"])


def _resume_changes(args: argparse.Namespace) -> dict:
    """The saved-config changes --resume applies; LearnError naming every flag that would change what the run learns."""
    from robot_stack.errors import LearnError

    saved = _saved_config(args.resume)
    conflicts = []
    for flag, field in RESUME_MUST_MATCH.items():
        given, kept = getattr(args, _dest(flag)), getattr(saved, field)
        same = given == kept or (field == "dataset" and given is not None
                                 and Path(given).resolve() == Path(kept).resolve())
        if given is not None and not same:
            conflicts.append(f"{flag} {_shown(given)} (the run's: {_shown(kept)})")
    out_elsewhere = args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve()
    conflicts += [flag for flag, given in (("--config", args.config), ("--set", args.set), ("--out", out_elsewhere))
                  if given]
    if conflicts:
        raise LearnError(f"--resume {args.resume} continues that run with its saved config, so "
                         f"{', '.join(conflicts)} cannot apply: leave them out ({', '.join(RESUME_APPLIES)} do apply), "
                         "or train a new run with them")
    return {field: getattr(args, _dest(flag)) for flag, field in RESUME_APPLIES.items()
            if getattr(args, _dest(flag)) is not None}


def _shown(value) -> str:
    return (",".join(map(str, value)) or "default") if isinstance(value, list) else str(value)
