"""Entry point of ``robot-stack``: dispatches to the subcommand modules listed in SUBCOMMANDS.

Exit status: 0 done, 2 a user error (one line on stderr), 130 Ctrl-C, and BROKEN_PIPE_STATUS when the
reader of stdout went away (``robot-stack ... | head``): quietly, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from robot_stack import __version__
from robot_stack.errors import RobotStackError
from robot_stack.streams import drop_further_writes

# Subcommand name -> module with `register(subparsers)`; registered here explicitly, never by import side effect.
SUBCOMMANDS: dict[str, str] = {
    "topic": "robot_stack.cli.topic",
    "launch": "robot_stack.cli.launch",
    "data": "robot_stack.cli.data",
    "train": "robot_stack.cli.train",
    "label": "robot_stack.cli.label",
    "export": "robot_stack.cli.export",
    "model": "robot_stack.cli.model",
    "eval": "robot_stack.cli.eval",
    "demo": "robot_stack.cli.demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robot-stack",
        description="Collect, label, train, export and deploy robot skills over ROS 2 topics.",
    )
    parser.add_argument("--version", action="version", version=f"robot-stack {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).register(subparsers)
    return parser


BROKEN_PIPE_STATUS = 141
"""128 + SIGPIPE: what a shell reports for a coreutils command whose reader closed the pipe (`yes | head`)."""


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _dispatch(argv)
        finally:
            # Flush here, where a closed pipe can be caught, rather than at interpreter exit where it cannot.
            sys.stdout.flush()
    except BrokenPipeError:
        drop_further_writes(sys.stdout)  # the exit-time flush of what is still buffered now goes to /dev/null
        return BROKEN_PIPE_STATUS


def _dispatch(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RobotStackError as error:
        print(f"robot-stack {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
