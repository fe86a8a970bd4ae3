"""``robot-stack train``: offline RL and BC on a dataset, and offline-to-online fine-tuning (--online); thin over
robot_stack.learn (and robot_stack.online for the robot target)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robot_stack.cli import arguments
from robot_stack.learn.algorithms import ALGORITHMS
from robot_stack.online import options as robot_options

DESCRIPTION = """\
Train a policy offline on a robot_stack dataset, and with --online fine-tune it by interacting: in a sim
env (sim:TASK[:PRESET]) or on a robot over ROS 2 (robot). The algorithm's defaults are its paper's
(robot_stack/learn/configs/<algo>.yaml); --config FILE and --set key=value change them. Every run
folder keeps the full config, the dataset fingerprint, the reward source, checkpoints, TensorBoard
logs (tensorboard --logdir RUN/tb) and, when the dataset's robot is a sim task, sim evaluations.
An online run's folder also holds switch.pt (the pre-trained policy), online.zarr (every online
episode, source online) and curve.png (success rate and return over env steps)."""

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

offline-to-online (offline phase of --steps updates, the switch, then --online-steps env steps):
  robot-stack train --algo iql --dataset data/reach2d.zarr --steps 5000 --online sim:reach2d --online-steps 5000
  robot-stack train --algo rlpd --dataset data/lift.zarr --online sim:lift --online-steps 50000 --utd 20
  robot-stack train --algo wsrl --dataset data/lift.zarr --online sim:lift:real --warmup-steps 5000 --num-envs 2
  robot-stack train --algo calql --dataset data/reach2d.zarr --online robot --online-dataset data/online.zarr
  robot-stack train --resume runs/iql-reach2d-20261207-190000 --online-steps 20000

hybrid sim-real (the dataset is the real robot's, --sim the simulator; evaluations in the dataset's dynamics):
  robot-stack train --algo h2o --dataset data/reach2d_weak.zarr --sim reach2d:sim --online-steps 20000
  robot-stack train --algo darc --dataset data/reach2d_weak.zarr --sim reach2d --online-steps 20000
  robot-stack train --algo sac --dataset data/reach2d_weak.zarr --sim reach2d --steps 0 --online-ratio 0.5 \
      --warmup-steps 1000 --online-steps 20000        # naive mixing: no correction

Bad input (no dataset, unknown feature, missing label run, bad config key) is a one-line error, exit 2."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a policy offline, and fine-tune it online (--online)",
                                   description=DESCRIPTION, epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=list(ALGORITHMS), help="the algorithm (required unless --resume)")
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
    online = parser.add_argument_group("online fine-tuning (after the --steps offline updates)")
    online.add_argument("--online", metavar="TARGET",
                        help="sim:TASK[:PRESET] (a sim gymnasium env, e.g. sim:reach2d, sim:lift:real) or robot (the ROS 2 "
                             "actor/learner loop)")
    online.add_argument("--sim", metavar="TASK[:PRESET]",
                        help="hybrid sim-real training (h2o, darc; sac for naive mixing): the dataset is the real data, "
                             "this sim env (e.g. reach2d:sim) gives online data, and evaluations run in the dataset's "
                             "own dynamics (--online sim:TASK[:PRESET] with eval_dynamics dataset)")
    online.add_argument("--online-steps", type=arguments.positive_int, help="environment steps of the online phase")
    online.add_argument("--utd", type=arguments.positive_int, help="gradient updates per environment step")
    online.add_argument("--online-ratio", type=_ratio,
                        help="share of each batch from online data: a number in [0, 1] (1 drops the offline data) or "
                             "proportional (uniform over offline + online)")
    online.add_argument("--warmup-steps", type=arguments.non_negative_int,
                        help="env steps of the frozen pre-trained policy opening the online phase, no updates (WSRL)")
    online.add_argument("--num-envs", type=arguments.positive_int, help="sim envs stepped side by side")
    online.add_argument("--online-eval-every", type=arguments.non_negative_int,
                        help="env steps between sim evaluations in the online phase (0: at the end only)")
    online.add_argument("--online-dataset", help="where online episodes are written (sim; default RUN/online.zarr) or "
                                                 "land (robot)")
    robot_options.add_arguments(parser)
    parser.add_argument("--config", help="a YAML config file (TrainConfig keys; algorithm: {...})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set algorithm.expectile=0.9 (repeatable)")
    parser.add_argument("--out", help="run folder (default runs/<algo>-<dataset>-<time> in the working folder)")
    parser.add_argument("--resume", metavar="RUN",
                        help="continue the run in this folder from its latest checkpoint, with its saved config; "
                             f"{', '.join(RESUME_APPLIES)} apply, flags that change what it learns are refused")
    parser.add_argument("--init-from", metavar="RUN",
                        help="start a new run from RUN's latest checkpoint (its networks and optimizers) with RUN's "
                             "config and the flags given here, e.g. an offline run fine-tuned online: --init-from "
                             "runs/iql --online sim:reach2d (no offline updates unless --steps)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


# With --resume: flags that change how long, where and how the run is evaluated apply (flag -> TrainConfig field,
# config.RESUME_SETTINGS); flags that say what it learns must match its saved config or be left out.
RESUME_APPLIES = {"--steps": "steps", "--device": "device", "--eval-every": "eval_every",
                  "--eval-episodes": "eval_episodes", "--online-steps": "online_steps",
                  "--online-eval-every": "online_eval_every"}
RESUME_MUST_MATCH = {"--algo": "algo", "--dataset": "dataset", "--reward": "reward", "--obs": "observations",
                     "--images": "images", "--image-encoder": "image_encoder", "--batch-size": "batch_size",
                     "--seed": "seed", "--online": "online", "--utd": "utd", "--online-ratio": "online_ratio",
                     "--warmup-steps": "warmup_steps", "--num-envs": "num_envs", "--online-dataset": "online_dataset"}


def _dest(flag: str) -> str:
    return {"--obs": "obs"}.get(flag, flag[2:].replace("-", "_"))


def _ratio(text: str) -> float | str:
    if text == "proportional":
        return text
    return arguments.number(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1] or proportional")(text)


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

    if args.sim:
        if args.online:
            raise LearnError("give --sim TASK[:PRESET] (hybrid sim-real training) or --online TARGET, not both")
        if not args.sim.strip(":") or args.sim.startswith("sim:"):
            raise LearnError(f"--sim {args.sim!r}: use TASK or TASK:PRESET, e.g. --sim reach2d:sim")
        args.online = f"sim:{args.sim}"
    if args.resume:
        changes = _resume_changes(args)
        if args.print_config:
            from robot_stack.learn.config import resumed_config

            print(resumed_config(_saved_config(args.resume), changes).to_yaml(), end="")
            return 0
        trainer = Trainer(resume=args.resume, changes=changes, progress=not args.no_progress)
    else:
        if not args.algo and not args.config and not args.init_from:
            raise LearnError(f"give --algo ({', '.join(ALGORITHMS)}), or --resume RUN")
        fields = {"dataset": args.dataset, "reward": args.reward, "observations": args.obs, "images": args.images,
                  "image_encoder": args.image_encoder, "steps": args.steps, "batch_size": args.batch_size,
                  "seed": args.seed, "device": args.device, "eval_every": args.eval_every,
                  "eval_episodes": args.eval_episodes, "out": args.out,
                  "eval_dynamics": "dataset" if args.sim else None} | {
                  field: getattr(args, _dest(flag)) for flag, field in ONLINE_FLAGS.items()}
        if args.init_from:
            config = _config_from_run(args, fields)
        else:
            config = load_config(args.algo, args.config, _overrides(args.set), **fields)
        if args.print_config:
            print(config.to_yaml(), end="")
            return 0
        if not config.online:
            given = [flag for flag in ONLINE_FLAGS if flag != "--online" and getattr(args, _dest(flag)) is not None]
            if given:
                raise LearnError(f"{', '.join(given)} apply to the online phase: add --online sim:TASK or --online robot")
        if config.online and config.algo == "bc":
            raise LearnError("--online needs an algorithm that learns from rewards (bc only imitates): use iql, "
                             "calql, rlpd or wsrl")
        if config.online == "robot":  # a new run, or the one in --out carried on: the same command resumes a learner
            # ROS 2 comes in only for the robot target.
            from robot_stack.online.robot import train_on_robot

            result = train_on_robot(config, _robot_options(args), progress=not args.no_progress)
            print(json.dumps(result, indent=2, default=str))
            return 0
        trainer = Trainer(config, progress=not args.no_progress)
    result = _train(trainer, args)
    print(json.dumps(result, indent=2, default=str))
    return 0


ONLINE_FLAGS = {"--online": "online", "--online-steps": "online_steps", "--utd": "utd", "--online-ratio": "online_ratio",
                "--warmup-steps": "warmup_steps", "--num-envs": "num_envs", "--online-eval-every": "online_eval_every",
                "--online-dataset": "online_dataset"}


def _train(trainer, args: argparse.Namespace) -> dict:
    """Offline only, the sim online target, or the robot learner (robot_stack.online) of a resumed robot run."""
    online, progress = trainer.config.online, not args.no_progress
    if not online:
        return trainer.run()
    from robot_stack.label.apply import label_reward_model
    from robot_stack.learn.online import OnlineRun, run_online

    if online != "robot":
        return run_online(trainer, progress=progress, label_models=label_reward_model)
    from robot_stack.online.robot import run_robot_learner

    return run_robot_learner(OnlineRun(trainer, label_reward_model), _robot_options(args), progress=progress)


def _robot_options(args: argparse.Namespace):
    return robot_options.RobotOptions.from_args(args)


def _config_from_run(args: argparse.Namespace, fields: dict):
    """--init-from RUN: RUN's saved config (its algorithm, dataset, reward, observations, networks) with the flags given
    here on top, no offline updates unless --steps asks for more, and a run folder of its own."""
    from robot_stack.errors import LearnError
    from robot_stack.learn.config import derived_config

    if args.config:
        raise LearnError("--init-from takes its config from that run: use --set KEY=VALUE for changes, not --config")
    base = _saved_config(args.init_from)
    if args.algo and args.algo != base.algo:
        raise LearnError(f"--init-from {args.init_from} was trained with {base.algo}: leave --algo out or give "
                         f"--algo {base.algo}")
    # Not RUN's folder (out ""): a new one named after the algorithm and dataset unless --out names one.
    fields = fields | {"steps": args.steps if args.steps is not None else 0, "init_from": str(args.init_from),
                       "out": args.out or ""}
    return derived_config(base, fields, _overrides(args.set))


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
    conflicts += [flag for flag, given in (("--config", args.config), ("--set", args.set), ("--out", out_elsewhere),
                                           ("--init-from", args.init_from))
                  if given]
    if conflicts:
        raise LearnError(f"--resume {args.resume} continues that run with its saved config, so "
                         f"{', '.join(conflicts)} cannot apply: leave them out ({', '.join(RESUME_APPLIES)} do apply), "
                         "or train a new run with them")
    return {field: getattr(args, _dest(flag)) for flag, field in RESUME_APPLIES.items()
            if getattr(args, _dest(flag)) is not None}


def _shown(value) -> str:
    return (",".join(map(str, value)) or "default") if isinstance(value, list) else str(value)
