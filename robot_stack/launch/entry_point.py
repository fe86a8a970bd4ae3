"""``python -m robot_stack.launch.entry_point NAME [ARGS...]``: run robot_stack's console script NAME.

The launch runner starts node processes this way, so a node never depends on the venv's
``bin/`` being on PATH. The node sees ``sys.argv == [NAME, *ARGS]``, as if started by its script.
"""

from __future__ import annotations

import signal
import sys


def main(argv: list[str] | None = None) -> int | str | None:
    """Run the entry point; returns what it returns (a console script's exit status)."""
    try:
        # Looking up and loading the node are inside: a launch that stops while a node still starts up
        # (another node failed at once) must not print that node's traceback.
        return _run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        # A node without its own SIGINT handling still stops quietly, with the shell's status.
        return 128 + signal.SIGINT


def _run(argv: list[str]) -> int | str | None:
    # Imported here, not at the top: a SIGINT while they load is the KeyboardInterrupt main() catches.
    from robot_stack.errors import LaunchError
    from robot_stack.launch.package import node_executables

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
    return entry_point.load()()


if __name__ == "__main__":
    sys.exit(main())
