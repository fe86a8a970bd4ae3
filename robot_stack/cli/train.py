"""``robot-stack train``: offline RL (IQL, CQL, TD3+BC) and BC on a dataset; thin over robot_stack.learn."""

from __future__ import annotations

import argparse
import json

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

examples:
  robot-stack train --algo iql --dataset data/reach2d.zarr --reward sim --steps 20000
  robot-stack train --algo bc --dataset data/lift.zarr --obs eef_pose,object_pose
  robot-stack train --algo cql --dataset data/lift.zarr --images image.agentview --set algorithm.alpha=10
  robot-stack train --algo td3bc --dataset data/lift.zarr --images image.agentview --image-encoder clip:ViT-B-32/openai
  robot-stack train --resume runs/iql-reach2d-20261121-101500 --steps 50000
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
    parser.add_argument("--out", help="run folder (default runs/<algo>-<dataset>-<time>)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this folder from its latest checkpoint")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


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
        trainer = Trainer(resume=args.resume, steps=args.steps, progress=not args.no_progress)
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
