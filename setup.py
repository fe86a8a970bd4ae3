"""Build shim: colcon's ament_python build runs setup.py; the metadata lives in pyproject.toml.

Only the ROS 2 data files are computed here, so every file under launch/ (and each model in models/) installs
with no list to keep.
"""

from pathlib import Path

from setuptools import setup

PACKAGE = "robot_stack"
ROOT = Path(__file__).resolve().parent


def ros_data_files() -> list[tuple[str, list[str]]]:
    """(install dir under the prefix, [source paths relative to this file]) for the ament index,
    package.xml, launch/ (sub-folders kept: launch/params/x.yaml -> share/robot_stack/launch/params/) and the
    models/ shipped (*.onnx + card .json: deploy.launch.yaml runs $(find-pkg-share robot_stack)/models/... by default)."""
    files: dict[str, list[str]] = {
        "share/ament_index/resource_index/packages": [f"resource/{PACKAGE}"],
        f"share/{PACKAGE}": ["package.xml"],
    }
    models = [*(ROOT / "models").glob("*.onnx"), *(ROOT / "models").glob("*.json")]
    for path in sorted([*(ROOT / "launch").rglob("*"), *models]):
        relative = path.relative_to(ROOT)
        # Skip editor/OS droppings (.swp, .DS_Store) and bytecode: only real launch and parameter files ship.
        if path.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            files.setdefault(f"share/{PACKAGE}/{relative.parent.as_posix()}", []).append(relative.as_posix())
    return list(files.items())


setup(data_files=ros_data_files())
