"""``robot-stack data``: look at, check, picture, export, import, repair, merge and split datasets.

Thin: argument parsing and printing; the work is in robot_stack.data (dataset, check, recover, marks,
merge, stats, report, view, video, bag_import). Bad input (no dataset at the path, an episode or camera that is not there,
a features file that does not fit a bag) is a one-line error, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from robot_stack.cli import arguments

DESCRIPTION = """\
Work with robot_stack datasets (Zarr v3 folders, NAME.zarr; docs/dataset.md is the schema).
Nothing here changes recorded data, except `recover`, which settles an unfinished episode
(`mark` adds episodes' outcomes beside the recorded data)."""

EPILOG = """\
examples:
  robot-stack data info demo.zarr
  robot-stack data validate demo.zarr
  robot-stack data view demo.zarr 0
  robot-stack data export-video demo.zarr 0 --camera wrist_rgb
  robot-stack data mark demo.zarr 0,2,5 success
  robot-stack data import-bag my_bag/ out.zarr --features features.yaml --record-hz 10 --task "pick the cube"
  robot-stack data recover demo.zarr --keep
  robot-stack data merge all.zarr day1.zarr day2.zarr
  robot-stack data split all.zarr --train train.zarr --val val.zarr --val-fraction 0.1
  robot-stack data stats demo.zarr

Bad input is a one-line error, exit status 2."""


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect, check, view, export, import, merge and split datasets",
                                 description=DESCRIPTION, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = data.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, help_: str, description: str, examples: str) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=help_, description=description, epilog="examples:\n" + examples,
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    p = verb("info", "what a dataset holds: episodes, features, tasks, success, labels",
             "Print a dataset's summary: robot, record_hz, episodes and frames, durations, success (and how "
             "many outcomes an operator marked), size on disk, unfinished frames (with what to do), every feature "
             "(name, kind, dtype, shape, units, topic), the tasks and the label runs. It reads the metadata only, "
             "not the recorded chunks: `validate` reads those.",
             "  robot-stack data info demo.zarr\n"
             "  robot-stack data info demo.zarr --episodes     one line per episode too\n"
             "  robot-stack data info demo.zarr --json | jq .success_rate")
    _path(p)
    p.add_argument("--episodes", action="store_true", help="also list every episode (frames, duration, success, task)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=info)

    p = verb("validate", "read every chunk and check the index",
             "Read every committed chunk of every array and check the schema, episode index, episode rows, "
             "timestamps and label runs. Prints each problem: a missing, truncated or corrupted chunk file, or "
             "NaN/Inf values, names its array, frames and episodes; frames past the last commit (an unfinished "
             "episode) are reported with the recover command. Exit status: 0 all good, 1 problems found, 2 not a "
             "dataset.",
             "  robot-stack data validate demo.zarr\n"
             "  robot-stack data validate demo.zarr || echo damaged")
    _path(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=validate)

    p = verb("view", "a PNG of an episode: camera frames and plots over time",
             "Write a PNG with evenly spaced frames of every camera, and plots of the actions, each state "
             "feature, the rewards (recorded and labeled) and the per-frame flags over the episode. "
             "Default output: DATASET_epN.png next to the dataset (or in the working folder).",
             "  robot-stack data view demo.zarr 0\n"
             "  robot-stack data view demo.zarr -1 -o last_episode.png --frames 12")
    _path(p)
    _episode(p)
    p.add_argument("-o", "--output", metavar="PNG", help="where to write the picture")
    p.add_argument("--frames", type=_positive_int, default=8, metavar="N", help="frames per camera (default: %(default)s)")
    p.add_argument("--camera", metavar="NAME", help="show this camera only: its name as the launch took it "
                   "(cameras:=agentview:84x84 -> agentview) or its feature (image.agentview); default every camera")
    p.set_defaults(func=view)

    p = verb("export-video", "an MP4 of one camera of an episode",
             "Encode every frame of a camera feature of an episode as an MP4 (H.264 through PyAV; MPEG-4 "
             "if this FFmpeg lacks H.264, and it says so). Default output: DATASET_epN_CAMERA.mp4 next to "
             "the dataset.",
             "  robot-stack data export-video demo.zarr 0\n"
             "  robot-stack data export-video demo.zarr 3 --camera wrist_rgb -o wrist.mp4 --fps 15")
    _path(p)
    _episode(p)
    p.add_argument("--camera", metavar="NAME", help="the camera: its name as the launch took it (cameras:=agentview:84x84 "
                   "-> agentview) or its feature (image.agentview); default the only one")
    p.add_argument("-o", "--output", metavar="MP4", help="where to write the video")
    p.add_argument("--fps", type=_positive_float, metavar="FPS", help="frame rate of the video (default: record_hz)")
    p.set_defaults(func=export_video)

    p = verb("import", "another project's dataset (LeRobot v3, robomimic, Minari) -> a robot_stack dataset",
             "Read a dataset in another project's format and write a robot_stack dataset, one committed episode at "
             "a time (source import), recording the format, source path and version in its provenance. Run the "
             "same command again after an interruption: it carries on after the last committed episode.\n\n"
             "  lerobot    a LeRobot v3 dataset folder (meta/info.json, parquet frames, MP4 videos)\n"
             "  robomimic  a robomimic HDF5 file (data/demo_i/{obs/*, actions, rewards, dones}, mask/ filter keys)\n"
             "  minari     a Minari dataset: its id in the local Minari store, or its folder\n\n"
             "The formats' packages come with the interop extra: pip install 'robot_stack[interop]'.",
             "  robot-stack data import lerobot ~/lerobot_data/pusht pusht.zarr\n"
             "  robot-stack data import robomimic demo.hdf5 demo.zarr --record-hz 20 --task \"lift the cube\"\n"
             "  robot-stack data import minari D4RL/door/human-v2 door.zarr")
    p.add_argument("format", metavar="FORMAT", help="lerobot, robomimic or minari")
    p.add_argument("src", metavar="SRC", help="the dataset to read (path, or a Minari dataset id)")
    p.add_argument("out", metavar="OUT", help="the new robot_stack dataset, e.g. pusht.zarr")
    p.add_argument("--record-hz", type=_positive_float, metavar="HZ",
                   help="frames a second, for formats that do not store a rate (robomimic: default 20)")
    p.add_argument("--task", metavar="TEXT", help="task text of the episodes where the format has none")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=import_format)

    p = verb("export", "a robot_stack dataset -> another project's format (LeRobot v3, robomimic, diffusion_policy)",
             "Write a robot_stack dataset's committed episodes in another project's format, for its loaders:\n\n"
             "  lerobot           a LeRobot v3 dataset folder (meta/, parquet frames, MP4 per camera)\n"
             "  robomimic         one HDF5 file (data/demo_i/..., env_args, mask/ from the dataset's splits)\n"
             "  diffusion-policy  the Zarr v2 layout diffusion_policy's ReplayBuffer opens (data/, meta/episode_ends)\n\n"
             "OUT must not exist; a failed export leaves nothing behind.",
             "  robot-stack data export lerobot lift.zarr lift_lerobot/\n"
             "  robot-stack data export robomimic lift.zarr lift.hdf5\n"
             "  robot-stack data export diffusion-policy lift.zarr lift_dp.zarr")
    p.add_argument("format", metavar="FORMAT", help="lerobot, robomimic or diffusion-policy")
    _path(p)
    p.add_argument("out", metavar="OUT", help="where to write it (must not exist)")
    p.add_argument("--valid-fraction", type=float, metavar="F",
                   help="robomimic only: filter keys mask/train and mask/valid with F of the episodes (at random, "
                        "seed 0) in valid, instead of the splits of a robomimic import")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=export_format)

    p = verb("import-bag", "rosbag2 (sqlite3 or MCAP) -> a new dataset, one episode per bag",
             "Read rosbag2 bags (folders with metadata.yaml, or .db3/.mcap files) and write a new dataset as "
             "the recorder would have from the same topics: each frame at --record-hz holds the latest message "
             "of every feature's topic (sample-and-hold by receive time) and a stale.FEATURE flag (true where "
             "that message was older than the feature's max_age, or never came). An episode starts once every "
             "non-optional feature has had a message.\n\n"
             "The features file is the recorder's (robot, task, features; docs/dataset.md):\n"
             "  robot: {name: panda, command: joint_positions}\n"
             "  features:\n"
             "    joint_pos: {topic: /joint_states, type: sensor_msgs/msg/JointState, field: position, units: rad}\n"
             "    wrist_rgb: {topic: /camera/wrist/image_raw, type: sensor_msgs/msg/Image}\n"
             "    action: {topic: /robot/command, type: std_msgs/msg/Float64MultiArray, field: data}",
             "  robot-stack data import-bag run1/ run1.zarr --features features.yaml\n"
             "  robot-stack data import-bag a.mcap b.mcap both.zarr --features features.yaml --record-hz 30 "
             "--task \"open the drawer\"")
    p.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 folder or .db3/.mcap file (several: one episode each)")
    p.add_argument("out", metavar="OUT", help="the new dataset, e.g. run1.zarr (must not exist)")
    p.add_argument("--features", "--mapping", dest="features_file", required=True, metavar="FILE",
                   help="the recorder's features file: robot, task, feature -> topic, type, field")
    p.add_argument("--record-hz", type=_positive_float, metavar="HZ",
                   help="frames a second (default: 20, the recorder's default)")
    p.add_argument("--task", metavar="TEXT", help="task text of the episodes (default: the features file's task)")
    p.add_argument("--stamp", choices=["receive", "header"], default="receive",
                   help="what times each message: its receive time in the bag (what the recorder sees live), or "
                        "its header stamp, so a camera frame that arrived late still pairs with the joint states "
                        "of the moment it was taken; messages without a header keep their receive time "
                        "(default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=import_bag)

    p = verb("recover", "keep or drop the unfinished episode of a stopped recording",
             "Settle the frames a recording left past the last committed episode (it stopped without "
             "commit or discard): --keep commits them as an episode (success unknown, notes 'recovered'), "
             "--drop removes them. Committed episodes are never touched.",
             "  robot-stack data recover demo.zarr --keep\n"
             "  robot-stack data recover demo.zarr --keep --task \"pick the cube\"\n"
             "  robot-stack data recover demo.zarr --drop")
    _path(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--keep", action="store_true", help="commit the unfinished frames as an episode")
    which.add_argument("--drop", action="store_true", help="delete the unfinished frames")
    p.add_argument("--task", metavar="TEXT", help="with --keep: the kept episode's task text")
    p.set_defaults(func=recover)

    p = verb("mark", "record episodes' outcome (success or fail) beside the data",
             "Mark episodes as succeeded or failed, e.g. to train with --reward success on data recorded "
             "without outcomes. The marks are kept beside the recorded data (meta/marks) with who marked, when "
             "and the outcome before; the recording itself is not changed. The last mark of an episode counts.",
             "  robot-stack data mark demo.zarr 3 success\n"
             "  robot-stack data mark demo.zarr 0,2,5 fail\n"
             "  robot-stack data mark demo.zarr 4-9 success --by ada\n"
             "  robot-stack data mark demo.zarr all fail")
    _path(p)
    p.add_argument("episodes", metavar="EPISODES", help="an index (3, -1 = last), a list (0,2,5), a range (4-9) or all")
    p.add_argument("outcome", choices=("success", "fail"), help="what happened in those episodes")
    p.add_argument("--by", metavar="NAME", help="who marks them (default: the login name)")
    p.set_defaults(func=mark)

    p = verb("merge", "several datasets -> one new dataset",
             "Copy the committed episodes of every PATH, in order, into the new dataset OUT. They must share "
             "robot, record_hz and features (the first mismatch is named). Labels and statistics are not "
             "copied (compute them again on OUT).",
             "  robot-stack data merge all.zarr day1.zarr day2.zarr\n"
             "  robot-stack data merge fast.zarr all.zarr --image-shard-frames 1   a file per image frame")
    p.add_argument("out", metavar="OUT", help="the new dataset (must not exist)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="datasets to merge")
    _shards(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=merge)

    p = verb("split", "one dataset -> train and validation datasets, by episode",
             "Write two new datasets: round(val_fraction x episodes) randomly chosen episodes go to --val, "
             "the rest to --train, each in the source's order. The choice depends only on the number of "
             "episodes, --val-fraction and --seed.",
             "  robot-stack data split all.zarr --train train.zarr --val val.zarr\n"
             "  robot-stack data split all.zarr --train t.zarr --val v.zarr --val-fraction 0.2 --seed 1")
    _path(p)
    p.add_argument("--train", required=True, metavar="OUT", help="the new training dataset")
    p.add_argument("--val", required=True, metavar="OUT", help="the new validation dataset")
    p.add_argument("--val-fraction", type=_positive_float, default=0.1, metavar="F",
                   help="fraction of episodes for validation, 0 < F < 1 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the choice (default: %(default)s)")
    _shards(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=split)

    p = verb("stats", "normalization statistics of the low-dim features",
             "Print mean, std, min, max and the 1%%/99%% quantiles of every component of every feature "
             "except images and timestamps. They are stored in the dataset (meta/stats) and reused while "
             "the data is unchanged.",
             "  robot-stack data stats demo.zarr\n  robot-stack data stats demo.zarr --recompute --json")
    _path(p)
    p.add_argument("--recompute", action="store_true", help="compute again even if stored statistics are current")
    p.add_argument("--json", action="store_true", help="print as JSON {feature: {count, mean, std, ...}}")
    p.set_defaults(func=stats)


# ----------------------------------------------------------------------------- argument helpers


_positive_int = arguments.positive_int
_positive_float = arguments.positive_float


def _path(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the dataset folder, e.g. demo.zarr")


def _episode(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("episode", metavar="EPISODE", type=int, help="episode index (0 = first, -1 = last)")


def _shards(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-shard-frames", type=_positive_int, metavar="N",
                        help="image frames per shard file in the output (default: as the source; 1: a file per "
                             "frame, faster random reads)")


# ----------------------------------------------------------------------------- verbs


def info(args: argparse.Namespace) -> int:
    from robot_stack.data import Dataset
    from robot_stack.data.report import dataset_info, episode_rows, format_episodes, format_info

    ds = Dataset.open(args.path)
    summary = dataset_info(ds)
    if args.json:
        if args.episodes:
            summary["episodes"] = episode_rows(ds)
        print(json.dumps(summary, indent=2))
        return 0
    print(format_info(summary))
    if args.episodes:
        print(format_episodes(episode_rows(ds)))
    return 0


def validate(args: argparse.Namespace) -> int:
    from robot_stack.data.report import check

    from robot_stack.data import Dataset
    from robot_stack.errors import DatasetError

    problems = check(args.path, progress=not args.quiet)
    try:
        ds = Dataset.open(args.path)
    except DatasetError:
        ds = None  # check() said why
    if ds is not None and ds.unfinished_frames:
        problems.append(f"{ds.unfinished_frames} frames past the last committed episode (a recording that stopped "
                        f"without commit or discard): run `robot-stack data recover {args.path} --keep` or `--drop`")
    if not problems:
        print(f"{args.path}: OK ({ds.n_episodes} episodes, {ds.n_frames} frames, every chunk read)")
        return 0
    for problem in problems:
        print(f"problem: {problem}")
    print(f"{args.path}: {len(problems)} problem{'s' if len(problems) != 1 else ''} found")
    return 1


def view(args: argparse.Namespace) -> int:
    from robot_stack.data import Dataset
    from robot_stack.data.view import episode_sheet

    ds = Dataset.open(args.path)
    out = episode_sheet(ds, args.episode, args.output, frames_per_camera=args.frames, camera=args.camera)
    print(f"wrote {out}")
    return 0


def export_video(args: argparse.Namespace) -> int:
    from robot_stack.data import Dataset
    from robot_stack.data.video import FALLBACK, export_video as export

    ds = Dataset.open(args.path)
    result = export(ds, args.episode, args.camera, args.output, args.fps)
    if result.codec == FALLBACK:
        print(f"note: this FFmpeg has no H.264 encoder; wrote MPEG-4 part 2 ({FALLBACK}) instead", file=sys.stderr)
    print(f"wrote {result.path}: {result.camera}, {result.frames} frames, {result.size[0]}x{result.size[1]}, "
          f"{result.fps:g} fps, {result.codec}")
    return 0


def import_format(args: argparse.Namespace) -> int:
    from robot_stack.interop import format_module

    options = {key: value for key, value in (("record_hz", args.record_hz), ("task", args.task)) if value is not None}
    ds = format_module(args.format, "import").import_dataset(args.src, args.out, progress=not args.quiet, **options)
    success = ds.success
    known = success[success >= 0]
    rate = f", success {known.mean():.0%} of {len(known)} known" if len(known) else ""
    print(f"wrote {ds.path}: {ds.n_episodes} episode{'s' if ds.n_episodes != 1 else ''}, {ds.n_frames} frames at "
          f"{ds.record_hz:g} Hz{rate}, features {', '.join(ds.features)}")
    return 0


def export_format(args: argparse.Namespace) -> int:
    from robot_stack.interop import format_module

    from robot_stack.data import Dataset

    module = format_module(args.format, "export")
    options = {} if args.valid_fraction is None else {"valid_fraction": args.valid_fraction}
    if options and args.format != "robomimic":
        from robot_stack.errors import DatasetError

        raise DatasetError(f"--valid-fraction applies to robomimic exports (their mask/ filter keys), not {args.format}")
    ds = Dataset.open(args.path)
    out = module.export_dataset(ds, args.out, progress=not args.quiet, **options)
    print(f"wrote {out}: {ds.n_episodes} episode{'s' if ds.n_episodes != 1 else ''}, {ds.n_frames} frames "
          f"({args.format})")
    return 0


def import_bag(args: argparse.Namespace) -> int:
    from robot_stack.data.bag_import import import_bags
    from robot_stack.record import STALE_PREFIX

    ds = import_bags(args.bags, args.out, args.features_file, record_hz=args.record_hz, task=args.task,
                     progress=not args.quiet, stamp=args.stamp)
    print(f"wrote {ds.path}: {ds.n_episodes} episode{'s' if ds.n_episodes != 1 else ''}, {ds.n_frames} frames "
          f"at {ds.record_hz:g} Hz")
    for index in range(ds.n_episodes):
        info = ds.episode_info(index)
        print(f"  episode {index}: {info.length} frames, {info.duration:.2f} s, task {info.task_text!r} ({info.notes})")
    stale = {name.removeprefix(STALE_PREFIX): int(ds.frames(name).sum()) for name in ds.features if name.startswith(STALE_PREFIX)}
    flagged = {name: count for name, count in stale.items() if count}
    if flagged:
        print("  stale frames (value older than max_age): " +
              ", ".join(f"{name} {count} ({count / ds.n_frames:.0%})" for name, count in flagged.items()))
    else:
        print("  no stale frames")
    return 0


def recover(args: argparse.Namespace) -> int:
    from robot_stack.data import Dataset, recover as recover_dataset

    unfinished = Dataset.open(args.path).unfinished_frames
    if not unfinished:
        print(f"{args.path}: no unfinished episode, nothing to recover")
        return 0
    result = recover_dataset(args.path, keep=args.keep, task=args.task)
    if result.kept_episode is not None:
        print(f"{args.path}: kept {result.kept_frames} unfinished frames as episode {result.kept_episode}")
    else:
        print(f"{args.path}: dropped {result.dropped_frames} unfinished frames")
    return 0


def mark(args: argparse.Namespace) -> int:
    from robot_stack.data import mark_episodes

    marks = mark_episodes(args.path, args.episodes, args.outcome == "success", by=args.by)
    changed = [m["episode"] for m in marks if m["previous"] != int(m["success"])]
    print(f"{args.path}: marked episode{'s' if len(marks) != 1 else ''} {_ranges([m['episode'] for m in marks])} "
          f"{args.outcome} ({len(changed)} changed; by {marks[0]['by']})")
    return 0


def merge(args: argparse.Namespace) -> int:
    from robot_stack.data import merge as merge_datasets

    ds = merge_datasets(args.out, args.paths, progress=not args.quiet, image_shard_frames=args.image_shard_frames)
    print(f"wrote {ds.path}: {ds.n_episodes} episodes, {ds.n_frames} frames from {len(args.paths)} datasets")
    return 0


def split(args: argparse.Namespace) -> int:
    from robot_stack.data import split as split_dataset
    from robot_stack.data.report import provenance

    train, val = split_dataset(args.path, args.train, args.val, args.val_fraction, seed=args.seed,
                               progress=not args.quiet, image_shard_frames=args.image_shard_frames)
    for name, ds in (("train", train), ("val", val)):
        episodes = provenance(ds)["split_of"]["episodes"]
        print(f"wrote {ds.path} ({name}): {ds.n_episodes} episodes, {ds.n_frames} frames (source episodes {_ranges(episodes)})")
    return 0


def stats(args: argparse.Namespace) -> int:
    from robot_stack.data import Dataset
    from robot_stack.data.stats import dataset_stats

    ds = Dataset.open(args.path)
    table = dataset_stats(ds, recompute=args.recompute)
    if args.json:
        print(json.dumps({name: entry.to_json() for name, entry in table.items()}, indent=2))
        return 0
    columns = ("mean", "std", "min", "max", "q01", "q99")
    width = max([len("feature")] + [len(f"{name}[{i}]") for name, e in table.items() for i in range(e.mean.size)])
    print(f"{ds.path}: statistics over {ds.n_frames} frames")
    print(f"{'feature':<{width}}  " + "  ".join(f"{c:>10}" for c in columns))
    for name, entry in table.items():
        values = {c: np.asarray(getattr(entry, c)).reshape(-1) for c in columns}
        for i in range(values["mean"].size):
            label = name if values["mean"].size == 1 and entry.mean.ndim == 0 else f"{name}[{i}]"
            print(f"{label:<{width}}  " + "  ".join(f"{values[c][i]:>10.4g}" for c in columns))
    return 0


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts) or "none"

