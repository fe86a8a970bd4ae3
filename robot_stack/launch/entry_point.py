"""``python -m robot_stack.launch.entry_point NAME [ARGS...]``: run robot_stack's console script NAME.

The launch runner starts node processes this way, so a node never depends on the venv's
``bin/`` being on PATH. The node sees ``sys.argv == [NAME, *ARGS]``, as if started by its script.
"""

from __future__ import annotations

import signal
import sys

from robot_stack.errors import LaunchError
from robot_stack.launch.package import node_executables


def main(argv: list[str] | None = None) -> int | str | None:
    """Run the entry point; returns what it returns (a console script's exit status)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        return "usage: python -m robot_stack.launch.entry_point NAME [ARGS...]"
    name, node_args = argv[0], argv[1:]
    try:
        entry_point = node_executables().get(name)
    except LaunchError as error:
        return f"{name}: {error}"
    if entry_point is None:
        return f"{name}: no such robot_stack executable (console_scripts entry point)"
    sys.argv = [name, *node_args]
    node_main = entry_point.load()
    try:
        return node_main()
    except KeyboardInterrupt:
        # A node without its own SIGINT handling still stops quietly, with the shell's status.
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
