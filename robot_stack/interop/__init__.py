"""Data in and out of other projects' formats: LeRobot v3, robomimic HDF5, Minari, diffusion_policy's Zarr.

Each format is a module with `import_dataset(src, out, *, progress=True, **options) -> Dataset` where it imports
and `export_dataset(dataset, out, *, progress=True, **options) -> Path` where it exports (the common machinery is
robot_stack.interop.common). The formats' own packages are optional (the `interop` extra); a module imports them
only when it runs, and a missing one is a one-line DatasetError naming the extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from robot_stack.errors import DatasetError

FORMATS: dict[str, str] = {
    "lerobot": "robot_stack.interop.lerobot",
    "robomimic": "robot_stack.interop.robomimic",
    "minari": "robot_stack.interop.minari",
    "diffusion-policy": "robot_stack.interop.diffusion_policy",
}
IMPORTS = ("lerobot", "robomimic", "minari")
EXPORTS = ("lerobot", "robomimic", "diffusion-policy")


def format_module(name: str, direction: str) -> ModuleType:
    """The module of format `name` for direction "import" or "export"; DatasetError naming the choices."""
    choices = IMPORTS if direction == "import" else EXPORTS
    if name not in choices:
        raise DatasetError(f"cannot {direction} {name!r}: {direction} formats are {', '.join(choices)}")
    return importlib.import_module(FORMATS[name])


def require(package: str, purpose: str) -> ModuleType:
    """Import an optional package of the interop extra, or a one-line DatasetError saying how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise DatasetError(f"{purpose} needs the {package.split('.')[0]} package ({error}): pip install "
                           "'robot_stack[interop]'") from None
