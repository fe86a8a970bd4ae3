"""``sim_collect``: datasets of mixed skill, the scripted experts run straight in the sim task (no ROS).

    sim_collect --task reach2d --episodes 200 --mix expert=0.2,medium=0.8 -o data/reach2d_mixed.zarr
    sim_collect --task lift --episodes 20 --mix medium --cameras agentview:84x84 -o data/lift_medium.zarr

The dataset is the one the recorder node would write for the same task (launch/collect.launch.yaml with
teleop:=scripted, realtime:=false, use_sim_time): its features file launch/params/recorder_<task>.yaml
(read with robot_stack.record.load_config) gives the robot attribute, the task text and every feature's
name, dtype, kind, topic and units; shapes come from the task's observation as the recorder takes them
from the first message; then ``timestamp`` and ``stale.<feature>`` as the recorder adds them; record_hz
is the task's control_hz. So trainers, labelers and ``robot-stack data`` tools cannot tell the two apart,
and episodes of both can share one dataset.

Frames, in lockstep as the recorder takes them on sim time: an episode is ``task.reset(seed)`` then
``horizon`` control steps, written as horizon + 1 frames. Frame f holds the observation of state s_f,
``action`` = the command applied from s_f, ``sim_reward`` = task.reward() and ``sim_success`` =
task.success() of s_f, ``timestamp`` = its sim time [s] (the clock runs on across episodes, one control
period apart, as the driver's /clock does) and every ``stale.*`` False. The last frame (s_horizon) holds
the hold command, which the scripted teleop sends with its success/fail word and the recorder pairs
with the episode's last frame. Unlike the teleop, an episode does not end early on success (trainers
get fixed-horizon episodes; sim_success says when the task is solved), and frame 0 is the state right
after reset (the teleop's settle ticks of hold commands are not run).

Episode success (meta/episodes/success): the task reported success on ``success_hold`` consecutive
frames. The default 1 is "at any step", the success rate of benchmarks/expert_success.py; 5 is the
scripted teleop's rule (it commits success once success has held 5 ticks). Each episode's operator is
``scripted:<skill>`` and its notes ``seed <s>, dynamics <preset>``: episode i of a call runs
``task.reset(seed + i)`` with an expert seeded ``seed + i``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robot_stack.data import Dataset, DatasetSchema, DatasetWriter, FeatureSpec
from robot_stack.data import TIMESTAMP
from robot_stack.errors import RobotStackError, SimError
from robot_stack.record import IMAGE_TYPE, STALE_PREFIX, FeatureSource, load_config
from robot_stack.sim.experts import EXPERTS, SKILLS, make_expert
from robot_stack.sim.task import SimTask, command_spec_of, make_task

OPERATOR_PREFIX = "scripted:"
"""Episodes are committed with operator ``scripted:<skill>``."""
COMMAND, REWARD, SUCCESS = "command", "reward", "success"
# What the sim driver (sim/robot_driver.py) publishes where: a recorder feature's (topic, fields) -> the
# value of a step the collector writes for it (an observation key, or the command, reward or success).
DRIVER_OUTPUTS: dict[tuple[str, tuple[str, ...]], str] = {
    ("/joint_states", ("position",)): "joint_position",
    ("/joint_states", ("velocity",)): "joint_velocity",
    ("/eef_pose", ("pose",)): "eef_pose",
    ("/object_pose", ("pose",)): "object_pose",
    ("/robot/command", ("data",)): COMMAND,
    ("/sim/reward", ("data",)): REWARD,
    ("/sim/success", ("data",)): SUCCESS,
}
_WRITE_BUFFER_BYTES = 64 << 20  # the writer's buffer: a whole episode when it fits, so one write per episode


def features_file(task: str) -> Path:
    """The recorder's features file for a sim task: launch/params/recorder_<task>.yaml."""
    from robot_stack.launch.package import package_share_directory

    return package_share_directory() / "launch" / "params" / f"recorder_{task}.yaml"


def episode_plan(episodes: int | Mapping[str, int], mix: Mapping[str, float] | None = None,
                 seed: int = 0) -> list[str]:
    """The skill of each episode: counts per skill, interleaved in an order drawn from ``seed``.

    episodes: a total N, split by ``mix`` ({skill: fraction}, fractions summing to 1; default all
    expert) into round(N * fraction) episodes per skill (largest remainder, so the counts add up to N),
    or {skill: count}. SimError says what is wrong.
    """
    if isinstance(episodes, Mapping):
        if mix is not None:
            raise SimError("give episodes as a total with a mix, or as {skill: count} without one, not both")
        counts = {skill: _count(n, f"episodes[{skill!r}]") for skill, n in episodes.items()}
    else:
        total = _count(episodes, "episodes")
        fractions = dict(mix) if mix is not None else {"expert": 1.0}
        for skill, fraction in fractions.items():
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
                raise SimError(f"mix: the fraction of {skill!r} must be a number in [0, 1], got {fraction!r}")
        if abs(sum(fractions.values()) - 1.0) > 1e-6:
            raise SimError(f"mix: the fractions must add up to 1, they add up to {sum(fractions.values()):g} "
                           f"({', '.join(f'{s}={p:g}' for s, p in fractions.items())})")
        exact = {skill: total * fraction for skill, fraction in fractions.items()}
        counts = {skill: int(np.floor(value)) for skill, value in exact.items()}
        by_remainder = sorted(exact, key=lambda s: (-(exact[s] - counts[s]), list(exact).index(s)))
        for skill in by_remainder[: total - sum(counts.values())]:
            counts[skill] += 1
    unknown = [skill for skill in counts if skill not in SKILLS]
    if unknown:
        raise SimError(f"unknown skill(s) {', '.join(map(repr, unknown))}: use {', '.join(SKILLS)}")
    if sum(counts.values()) == 0:
        raise SimError("no episodes to collect: ask for at least one")
    skills = [skill for skill in SKILLS for _ in range(counts.get(skill, 0))]
    order = np.random.default_rng(seed).permutation(len(skills))
    return [skills[i] for i in order]


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise SimError(f"{what} must be a whole number of episodes >= 0, got {value!r}")
    return int(value)


def parse_mix(text: str) -> dict[str, float]:
    """``expert=0.2,medium=0.8`` (or a lone skill, ``medium``, for all of it) -> {skill: fraction}."""
    mix: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        skill, equals, fraction = item.partition("=")
        try:
            mix[skill.strip()] = float(fraction) if equals else 1.0
        except ValueError:
            raise SimError(f"mix {text!r}: {item!r} is not skill=fraction (e.g. expert=0.2,medium=0.8)") from None
    if not mix:
        raise SimError("mix is empty: give skill=fraction pairs, e.g. expert=0.2,medium=0.8")
    return mix


def success_by_skill(ds: Dataset) -> dict[str, tuple[int, float]]:
    """{skill: (episodes, success rate)} over a dataset's episodes whose operator is ``scripted:<skill>``."""
    table = ds.episode_table()
    operators = np.array([str(o) for o in table["operator"]])
    rates = {}
    for skill in sorted({o[len(OPERATOR_PREFIX):] for o in operators if o.startswith(OPERATOR_PREFIX)},
                        key=lambda s: (SKILLS.index(s) if s in SKILLS else len(SKILLS), s)):
        success = table["success"][operators == OPERATOR_PREFIX + skill]
        rates[skill] = (len(success), float(np.mean(success == 1)))
    return rates


def collect(task: str, path: str | os.PathLike, episodes: int | Mapping[str, int], *,
            mix: Mapping[str, float] | None = None, seed: int = 0, cameras: Sequence[str] = (),
            dynamics: str = "nominal", horizon: int | None = None, success_hold: int = 1,
            append: bool = False, progress: bool = True) -> Dataset:
    """Run the scripted experts in ``task`` and write their episodes to the dataset at ``path``.

    episodes, mix: how many episodes of which skill (``episode_plan``), e.g. 200 with
    {"expert": 0.2, "medium": 0.8}, or {"expert": 40, "medium": 160}; episode i of this call uses
    task.reset(seed + i) and an expert seeded seed + i, skills interleaved in an order drawn from seed.
    cameras: "name" or "name:HxW" (the recorder's cameras parameter) -> image.<name> uint8 [H, W, 3].
    dynamics: a sim/dynamics.py preset. horizon: control steps per episode (default: the task's);
    each episode is horizon + 1 frames. success_hold: consecutive successful frames that make an
    episode a success (1: at any step). append: add to an existing dataset (its robot, rate and
    features must be the ones this would write); without it an existing path is an error. The module
    docstring gives the frame semantics. Returns the dataset, reopened. SimError (or DatasetError for a
    dataset that cannot be opened) says what is wrong, before the first episode runs; on an error or
    Ctrl-C during the run the episodes committed so far stay.
    """
    if task not in EXPERTS:
        raise SimError(f"unknown sim task {task!r} (or one without a scripted expert); tasks: {', '.join(EXPERTS)}")
    plan = episode_plan(episodes, mix, seed)
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1):
        raise SimError(f"horizon must be a whole number of control steps >= 1, got {horizon!r}")
    if isinstance(success_hold, bool) or not isinstance(success_hold, (int, np.integer)) or success_hold < 1:
        raise SimError(f"success_hold must be a whole number of frames >= 1, got {success_hold!r}")
    if isinstance(cameras, str):
        cameras = [c for c in cameras.split(",") if c.strip()]
    cameras = [c.strip() for c in cameras]
    path = Path(path)
    if path.exists() and not append:
        raise SimError(f"{path} exists: append to it (append=True, --append) or give a new path")
    config = load_config(features_file(task), cameras=",".join(cameras), command_spec_of=command_spec_of)
    outputs = {feature.name: _output_of(feature) for feature in config.features}
    sim = make_task(task, cameras=cameras, dynamics=dynamics, horizon=horizon, seed=seed)
    writer = None
    try:
        sim.reset(seed)
        step_values = _step_values(sim.observe(), sim.command_spec.hold, sim.reward(), sim.success())
        shapes = {f.name: f.shape or np.shape(step_values[outputs[f.name]]) for f in config.features}
        schema = recorder_schema(config.features, shapes, config.robot, sim.config.control_hz, [config.task])
        frames = sim.config.horizon + 1
        frame_bytes = sum(spec.frame_bytes for spec in schema.features.values())
        flush_frames = max(1, min(frames, _WRITE_BUFFER_BYTES // frame_bytes))
        writer = _open_writer(path, schema, flush_frames / schema.record_hz, dynamics, sim)
        period_ns = int(1e9 / sim.config.control_hz)  # the driver's sim step [ns]
        clock_ns = _next_clock_ns(path, writer, period_ns)
        rates: dict[str, list[bool]] = {skill: [] for skill in SKILLS if skill in plan}
        bar = tqdm(plan, desc=f"{task} episodes", unit="episode", disable=not progress, dynamic_ncols=True)
        for i, skill in enumerate(bar):
            episode_seed = seed + i
            sim.reset(episode_seed)
            expert = make_expert(task, sim.command_spec, skill, seed=episode_seed)
            steps = run_episode(sim, expert)
            data = {TIMESTAMP: (clock_ns + period_ns * np.arange(frames)) / 1e9}
            for feature in config.features:
                data[feature.name] = np.asarray(steps[outputs[feature.name]], dtype=feature.dtype)
                data[STALE_PREFIX + feature.name] = np.zeros(frames, bool)
            succeeded = held(steps[SUCCESS], success_hold)
            writer.append_frames(data)
            writer.commit_episode(config.task, succeeded, operator=OPERATOR_PREFIX + skill,
                                  notes=f"seed {episode_seed}, dynamics {dynamics}", source="scripted")
            clock_ns += period_ns * frames
            rates[skill].append(succeeded)
            bar.set_postfix_str(" ".join(f"{s} {np.mean(r):.0%}" for s, r in rates.items() if r))
    finally:
        sim.close()
        if writer is not None:
            if writer.episode_frames:
                writer.discard_episode()  # an episode cut short (Ctrl-C mid-write) never becomes part of it
            writer.close()
    return Dataset.open(path)


def run_episode(sim: SimTask, expert) -> dict[str, list]:
    """One episode from the current state: {observation key, COMMAND, REWARD, SUCCESS: [horizon + 1 values]}.

    Step f: observe s_f, reward and success of s_f, the expert's command (validated, as the driver
    applies it; the hold command at the last state), then step with it."""
    hold = np.asarray(sim.command_spec.hold, dtype=float)
    steps: dict[str, list] = {}
    for f in range(sim.config.horizon + 1):
        observation = sim.observe()
        last = f == sim.config.horizon
        command = hold if last else sim.command_spec.validate(expert.act(observation))
        for key, value in _step_values(observation, command, sim.reward(), sim.success()).items():
            steps.setdefault(key, []).append(value)
        if not last:
            sim.step(command)
    return steps


def held(success: Sequence[bool], frames: int) -> bool:
    """Whether ``success`` is True on ``frames`` consecutive entries."""
    run = 0
    for value in success:
        run = run + 1 if value else 0
        if run >= frames:
            return True
    return False


def recorder_schema(features: Sequence[FeatureSource], shapes: Mapping[str, tuple[int, ...]], robot: dict[str, Any],
                    record_hz: float, tasks: list[str]) -> DatasetSchema:
    """The schema the recorder creates a dataset with (robot_stack.record.Recorder._schema): timestamp,
    the features in the file's order, then a stale.<name> flag per feature."""
    specs = {TIMESTAMP: FeatureSpec(TIMESTAMP, "float64", (), "time", units="s")}
    for feature in features:
        specs[feature.name] = feature.spec(tuple(shapes[feature.name]))
    for feature in features:
        specs[STALE_PREFIX + feature.name] = FeatureSpec(STALE_PREFIX + feature.name, "bool", (), "flag", topic=feature.topic)
    return DatasetSchema(robot, float(record_hz), specs, list(tasks))


def _step_values(observation: Mapping[str, np.ndarray], command: np.ndarray, reward: float,
                 success: bool) -> dict[str, Any]:
    return {**observation, COMMAND: command, REWARD: reward, SUCCESS: success}


def _output_of(feature: FeatureSource) -> str:
    """The step value behind a recorder feature, by the topic and field the sim driver publishes it on."""
    if feature.type == IMAGE_TYPE and feature.topic.startswith("/camera/") and feature.topic.endswith("/image_raw"):
        return "image/" + feature.topic[len("/camera/"):-len("/image_raw")]
    output = DRIVER_OUTPUTS.get((feature.topic, feature.fields)) if not feature.joints else None
    if output is None:
        raise SimError(f"feature {feature.name!r} ({feature.topic}, field {', '.join(feature.fields)}) is not "
                       "something the sim driver publishes, so it cannot be collected without ROS")
    return output


def _open_writer(path: Path, schema: DatasetSchema, flush_interval_s: float, dynamics: str,
                 sim: SimTask) -> DatasetWriter:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        provenance = {"sim_collect": {"task": sim.name, "dynamics": dynamics, "horizon": sim.config.horizon,
                                      "control_hz": sim.config.control_hz}}
        return DatasetWriter.create(path, robot=schema.robot, record_hz=schema.record_hz,
                                    features=list(schema.features.values()), tasks=schema.tasks,
                                    flush_interval_s=flush_interval_s,
                                    image_shard_frames=_recorder_image_shard(schema), provenance=provenance)
    stored = Dataset.open(path)
    if stored.unfinished_frames:
        raise SimError(f"{path} has an unfinished episode ({stored.unfinished_frames} frames): run `robot-stack "
                       f"data recover {path} --keep` (or --drop) before appending")
    problem = stored.schema.first_mismatch(schema)
    if problem:
        raise SimError(f"cannot append to {path}: it holds a different setup ({problem}); collect with the task "
                       "and cameras it was made with, or into a new path")
    return DatasetWriter.open(path, flush_interval_s=flush_interval_s)


def _recorder_image_shard(schema: DatasetSchema) -> int | None:
    """Frames per image shard as the recorder's writer makes them (one second of frames, its flush)."""
    return max(1, round(schema.record_hz)) if any(spec.is_image for spec in schema.features.values()) else None


def _next_clock_ns(path: Path, writer: DatasetWriter, period_ns: int) -> int:
    """Sim time of the first new frame: 0 in a new dataset, one period after the last frame when appending."""
    if not writer.committed_frames:
        return 0
    last = Dataset.open(path).frames(TIMESTAMP, writer.committed_frames - 1)[0]
    return round(float(last) * 1e9) + period_ns


# --------------------------------------------------------------------------------------------------
# The command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sim_collect",
        description="Run the sim's scripted experts (no ROS) and write a robot_stack dataset with exactly the "
                    "features the recorder node writes for the task: datasets of mixed skill for trainers.",
        epilog="examples:\n"
               "  sim_collect --task reach2d --episodes 200 --mix expert=0.2,medium=0.8 -o data/reach2d_mixed.zarr\n"
               "  sim_collect --task lift --episodes 20 --mix medium --cameras agentview:84x84 -o data/lift.zarr\n"
               "  sim_collect --task reach2d --episodes 50 --seed 200 --append -o data/reach2d_mixed.zarr\n"
               "Episode i runs task.reset(seed + i) with an expert seeded seed + i; operator scripted:<skill>.\n"
               "docs/sim.md (\"Datasets from the scripted experts\") describes frames and success.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", required=True, help=f"sim task: {', '.join(EXPERTS)}")
    parser.add_argument("--episodes", type=int, required=True, help="episodes to collect (all skills together)")
    parser.add_argument("--mix", default="expert",
                        help=f"skill fractions, summing to 1: skill=fraction,... (skills: {', '.join(SKILLS)}); "
                             "a lone skill means all episodes (default: expert)")
    parser.add_argument("--seed", type=int, default=0, help="seed of episode 0 (episode i: seed + i) and of the order")
    parser.add_argument("--cameras", default="", help="cameras to record, name:HxW,... (e.g. agentview:84x84): "
                                                      "image.<name> features, as the recorder's cameras parameter")
    parser.add_argument("--dynamics", default="nominal", help="dynamics preset of sim/dynamics.py (default nominal)")
    parser.add_argument("--horizon", type=int, default=None, help="control steps per episode (default: the task's)")
    parser.add_argument("--success-hold", type=int, default=1,
                        help="consecutive successful frames that make an episode a success (default 1: at any "
                             "step; the scripted teleop uses 5)")
    parser.add_argument("-o", "--output", required=True, help="the dataset to create (a .zarr folder)")
    parser.add_argument("--append", action="store_true", help="add episodes to an existing dataset at --output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Headless rendering for cameras, set before MuJoCo is imported (a user's choice wins).
    os.environ.setdefault("MUJOCO_GL", "egl" if os.path.exists("/dev/nvidia0") else "osmesa")
    try:
        ds = collect(args.task, args.output, args.episodes, mix=parse_mix(args.mix), seed=args.seed,
                     cameras=[c for c in args.cameras.split(",") if c.strip()], dynamics=args.dynamics,
                     horizon=args.horizon, success_hold=args.success_hold, append=args.append,
                     progress=not args.quiet)
    except RobotStackError as error:
        print(f"sim_collect: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sim_collect: interrupted; the episodes committed so far are in {args.output}", file=sys.stderr)
        return 130
    print(ds.describe())
    print("success by skill:")
    for skill, (n, rate) in success_by_skill(ds).items():
        print(f"  {skill:8s} {rate:6.1%} of {n} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
