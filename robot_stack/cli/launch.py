"""``robot-stack launch FILE [name:=value ...]``: run a ROS 2 YAML launch file without ROS 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robot_stack.errors import LaunchError
from robot_stack.launch.launch_file import LaunchArgument, declared_arguments, load_launch
from robot_stack.launch.package import package_share_directory
from robot_stack.launch.supervisor import DEFAULT_STOP_TIMEOUT_S, run_plan
from robot_stack.streams import drop_further_writes

DESCRIPTION = """\
Run a ROS 2 YAML launch file (the launch_ros YAML format that `ros2 launch` reads) on a machine
without ROS 2: one process per node, parameters and remaps passed the ROS way (--ros-args),
output prefixed with [executable-N]. Ctrl-C stops the nodes in reverse start order; a node that fails
stops the launch with an error naming it. Only `pkg: robot_stack` executables can run here; use
`ros2 launch` on a ROS 2 machine for other packages."""

EPILOG = """\
examples (the package form works from any folder, as `ros2 launch PACKAGE FILE` does):
  run the demo with its defaults (10 s at 100 Hz), then with shorter, slower settings:
    robot-stack launch robot_stack demo.launch.yaml
    robot-stack launch robot_stack demo.launch.yaml duration:=3 rate_hz:=50
  collect 3 episodes with the scripted expert (dataset: relative to the folder you run in):
    robot-stack launch robot_stack collect.launch.yaml task:=reach2d episodes:=3 dataset:=data/reach.zarr
  list the file's arguments with their defaults:
    robot-stack launch robot_stack collect.launch.yaml --show-args
  a file by its path (relative to the folder you run in; launch/ is the repository's):
    robot-stack launch launch/demo.launch.yaml

exit status: 0 when stopped by Ctrl-C/SIGTERM, when a node with `on_exit: shutdown` exits 0 or
when every node exited 0; 1 when a node failed, `on_exit: shutdown` or not (a scripted collect whose
recorder committed fewer episodes than asked); 2 for a bad launch file or argument."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "launch",
        help="run a ROS 2 YAML launch file (one process per node)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "launch_file", metavar="FILE", help="launch file path, or a package name followed by a file name in its share"
    )
    parser.add_argument(
        "launch_arguments", nargs="*", metavar="NAME:=VALUE", help="values for the file's declared `arg` entries"
    )
    parser.add_argument(
        "-s", "--show-args", action="store_true", help="list the declared arguments with defaults and descriptions"
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT_S,
        metavar="SECONDS",
        help="when stopping a node: wait this long after SIGINT before SIGTERM, and after SIGTERM before "
        "SIGKILL, unless the node sets sigterm_timeout/sigkill_timeout (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def resolve_launch_file(first: str, rest: list[str]) -> tuple[Path, list[str]]:
    """FILE, or PACKAGE FILE_NAME as in ``ros2 launch``; returns the path and the remaining arguments."""
    if rest and ":=" not in rest[0] and not Path(first).is_file():
        share = package_share_directory(first)
        candidates = [share / "launch" / rest[0], *sorted(share.rglob(rest[0]))]
        for candidate in candidates:
            if candidate.is_file():
                return candidate, rest[1:]
        raise LaunchError(f"no launch file '{rest[0]}' in package {first} (searched {share})")
    return Path(first), rest


def parse_launch_arguments(items: list[str]) -> dict[str, str]:
    """``name:=value`` items to a dict; a later value for the same name wins."""
    arguments: dict[str, str] = {}
    for item in items:
        name, separator, value = item.partition(":=")
        if not separator or not name:
            raise LaunchError(f"launch arguments are NAME:=VALUE, got {item!r}")
        arguments[name] = value
    return arguments


def format_arguments(arguments: list[LaunchArgument]) -> str:
    """The ``--show-args`` listing, laid out like ``ros2 launch --show-args``."""
    if not arguments:
        return "No arguments."
    lines = ["Arguments (pass arguments as '<name>:=<value>'):", ""]
    for argument in arguments:
        lines.append(f"    '{argument.name}':")
        lines.append(f"        {argument.description or 'no description given'}")
        if argument.choices:
            lines.append(f"        Valid choices are: {list(argument.choices)}")
        lines.append("        (required)" if argument.default is None else f"        (default: '{argument.default}')")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def run(args: argparse.Namespace) -> int:
    if args.stop_timeout < 0:
        raise LaunchError(f"--stop-timeout must not be negative, got {args.stop_timeout}")
    path, rest = resolve_launch_file(args.launch_file, list(args.launch_arguments))
    launch_arguments = parse_launch_arguments(rest)
    if not path.is_file():
        raise LaunchError(f"launch file not found: {path}")
    if args.show_args:
        listing = format_arguments(declared_arguments(path, launch_arguments))
        try:
            print(listing, flush=True)
        except BrokenPipeError:  # `... --show-args | head`
            drop_further_writes(sys.stdout)
        return 0
    plan = load_launch(path, launch_arguments)
    return run_plan(plan, stop_timeout_s=args.stop_timeout)
