"""Where a package's shared files and node executables are: the stand-in for ament's index.

On a ROS 2 machine ``$(find-pkg-share robot_stack)`` and ``pkg: robot_stack`` resolve through
the ament index; here the same names resolve to the source checkout or the installed
distribution, so one launch file works in both places.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

from robot_stack.errors import LaunchError

PACKAGE = "robot_stack"
# `python -m` this module with an executable name to run that console_scripts entry point.
ENTRY_POINT_RUNNER = "robot_stack.launch.entry_point"


def package_share_directory(package: str = PACKAGE) -> Path:
    """The folder ``$(find-pkg-share PACKAGE)`` names: it holds ``launch/`` and ``launch/params/``.

    robot_stack: the repository root when running from a source checkout (the folder above the
    ``robot_stack`` package holds ``package.xml`` or ``pyproject.toml`` and ``launch/``), else
    ``<sys.prefix>/share/robot_stack``. Any package, robot_stack included as a last resort:
    ``<prefix>/share/<package>`` for each prefix in ``AMENT_PREFIX_PATH``.
    """
    if package == PACKAGE:
        import robot_stack

        root = Path(robot_stack.__file__).resolve().parents[1]
        has_manifest = (root / "package.xml").is_file() or (root / "pyproject.toml").is_file()
        if has_manifest and (root / "launch").is_dir():
            return root
        installed = Path(sys.prefix) / "share" / PACKAGE
        if installed.is_dir():
            return installed
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and (Path(prefix) / "share" / package).is_dir():
            return Path(prefix) / "share" / package
    raise LaunchError(
        f"package '{package}' not found: without ROS 2 only robot_stack's share folder and "
        "AMENT_PREFIX_PATH are searched (source the package's workspace or use `ros2 launch`)"
    )


def node_executables() -> dict[str, metadata.EntryPoint]:
    """robot_stack's console_scripts entry points by name: the executables ``pkg: robot_stack`` offers."""
    try:
        distribution = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise LaunchError(
            "robot_stack is not installed, so its node executables cannot be found: "
            "run `pip install -e .` in the repository"
        ) from None
    return {ep.name: ep for ep in distribution.entry_points if ep.group == "console_scripts"}


def executable_command(package: str | None, executable: str) -> list[str]:
    """The argv prefix that starts ``executable`` of ``package``, independent of PATH.

    ``package`` None follows ``launch_ros.actions.Node`` without a package: ``executable`` is a
    path to an executable file (relative to the working directory) or a name found on PATH.
    """
    if package is None:
        if os.sep in executable:
            path = Path(executable).resolve()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise LaunchError(f"executable '{executable}' is not an executable file")
            return [str(path)]
        found = shutil.which(executable)
        if found is None:
            raise LaunchError(
                f"executable '{executable}' not found on PATH (give `pkg: robot_stack` for a robot_stack node)"
            )
        return [found]
    if package != PACKAGE:
        raise LaunchError(
            f"package '{package}': only robot_stack executables can run without ROS 2; "
            "run this launch file with `ros2 launch` on a ROS 2 machine"
        )
    available = node_executables()
    if executable not in available:
        raise LaunchError(
            f"unknown executable '{executable}' in package robot_stack; "
            f"available: {', '.join(sorted(available))}"
        )
    # The entry point runs through this interpreter, so an editable install or a venv that is
    # not on PATH works the same as an installed one.
    return [sys.executable, "-m", ENTRY_POINT_RUNNER, executable]
