"""Packaging: the ROS 2 manifest, the wheel (data files, console scripts, package layout), the README's commands.

ROS 2 is not installable here, so the ament side is checked structurally: what `colcon build` and
`ros2 run/launch` rely on is what a built wheel installs under share/ and as entry points.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "robot_stack"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]

ROS_EXEC_DEPENDS = {
    "rclpy",
    "std_msgs",
    "sensor_msgs",
    "geometry_msgs",
    "builtin_interfaces",
    "ros2launch",
    "launch_ros",
    "python3-numpy",
    "python3-yaml",
}
# Source folder -> import package it installs as (pyproject's package-dir).
SOURCE_PACKAGES = {"robot_stack": "robot_stack", "nodes": "robot_stack.nodes", "sim": "robot_stack.sim"}
README_COMMANDS = ["bash scripts/run_demo.sh", "bash scripts/run_tests.sh"]
# Build outputs and local state that are not build inputs: kept out of the copy the wheel is built from.
NOT_BUILD_INPUTS = {".git", ".venv", "build", "dist", "runs", "data", ".pytest_cache"}


def launch_tree_files() -> list[Path]:
    """Every file under launch/ that must install (as setup.py selects them: no dotfiles, no bytecode)."""
    return sorted(
        path.relative_to(REPO)
        for path in (REPO / "launch").rglob("*")
        if path.is_file()
        and not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(REPO).parts)
    )


def launch_node_executables(document: object) -> list[tuple[str | None, str | None]]:
    """(pkg, exec) of every `node` in a ROS 2 YAML launch document, including those inside `group`s.

    A group's body is either a list of entities or a mapping with a `children` list (launch_yaml accepts both).
    """
    found: list[tuple[str | None, str | None]] = []

    def walk(entities: object) -> None:
        for entity in entities if isinstance(entities, list) else []:
            if not isinstance(entity, dict):
                continue
            for kind, body in entity.items():
                if kind == "node" and isinstance(body, dict):
                    found.append((body.get("pkg"), body.get("exec")))
                elif kind == "group":
                    walk(body.get("children") if isinstance(body, dict) else body)

    walk(document.get("launch") if isinstance(document, dict) else None)
    return found


def console_scripts(entry_points_txt: str) -> dict[str, str]:
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # entry point names are case-sensitive
    parser.read_string(entry_points_txt)
    return dict(parser["console_scripts"]) if parser.has_section("console_scripts") else {}


# ---------------------------------------------------------------------------------------------- package.xml


@pytest.fixture(scope="module")
def manifest() -> ET.Element:
    return ET.parse(REPO / "package.xml").getroot()


def test_package_xml_is_format_3_ament_python_named_and_versioned_like_pyproject(manifest):
    assert manifest.tag == "package" and manifest.get("format") == "3"
    assert manifest.findtext("name") == PYPROJECT["project"]["name"] == PACKAGE
    assert manifest.findtext("version") == VERSION
    assert [element.text for element in manifest.findall("export/build_type")] == ["ament_python"]
    maintainer = manifest.find("maintainer")
    assert maintainer is not None and maintainer.get("email") and manifest.findtext("license")


def test_package_xml_declares_the_ros_and_python_dependencies(manifest):
    exec_depends = [element.text for element in manifest.findall("exec_depend")]
    assert ROS_EXEC_DEPENDS <= set(exec_depends), f"missing: {ROS_EXEC_DEPENDS - set(exec_depends)}"
    assert len(exec_depends) == len(set(exec_depends)), "an exec_depend is listed twice"
    assert "python3-pytest" in [element.text for element in manifest.findall("test_depend")]


def test_ament_resource_marker_is_an_empty_file_named_after_the_package():
    marker = REPO / "resource" / PACKAGE
    assert marker.is_file() and marker.stat().st_size == 0


# -------------------------------------------------------------------------------------------------- wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel` builds from a copy of the checkout (so no stale build/ folder leaks in)."""
    source = tmp_path_factory.mktemp("source") / PACKAGE

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder).resolve() == REPO
        return {
            name
            for name in names
            if name == "__pycache__" or name.endswith(".egg-info") or (top and name in NOT_BUILD_INPUTS)
        }

    shutil.copytree(REPO, source, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, f"pip wheel failed:\n{build.stdout}\n{build.stderr}"
    (built,) = out.glob(f"{PACKAGE}-{VERSION}-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_names(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


@pytest.fixture(scope="module")
def wheel_console_scripts(wheel) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        return console_scripts(archive.read(f"{PACKAGE}-{VERSION}.dist-info/entry_points.txt").decode())


@pytest.fixture(scope="module")
def installed_prefix(wheel, tmp_path_factory) -> Path:
    """A non-editable `pip install --prefix` of the wheel: the layout a user's environment gets."""
    prefix = tmp_path_factory.mktemp("prefix")
    # --ignore-installed: without it pip first uninstalls robot_stack from the running venv.
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile", "--ignore-installed", "-q",
         "--prefix", str(prefix), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, f"pip install failed:\n{install.stdout}\n{install.stderr}"
    return prefix


def site_packages(prefix: Path) -> Path:
    (found,) = prefix.glob("lib/python3*/site-packages")
    return found


def test_wheel_installs_ament_marker_package_xml_every_launch_file_and_the_shipped_models(wheel_names, installed_prefix):
    data = f"{PACKAGE}-{VERSION}.data/data/"
    expected = {
        f"share/ament_index/resource_index/packages/{PACKAGE}": REPO / "resource" / PACKAGE,
        f"share/{PACKAGE}/package.xml": REPO / "package.xml",
    }
    expected.update({f"share/{PACKAGE}/{path.as_posix()}": REPO / path for path in launch_tree_files()})
    # the reference policy deploy.launch.yaml runs by default, with its card ($(find-pkg-share robot_stack)/models/)
    models = [*(REPO / "models").glob("*.onnx"), *(REPO / "models").glob("*.json")]
    assert any(path.suffix == ".onnx" for path in models)
    expected.update({f"share/{PACKAGE}/models/{path.name}": path for path in models})
    missing = sorted(name for name in expected if data + name not in wheel_names)
    assert not missing, f"not in the wheel: {missing}"
    for name, source in expected.items():
        installed = installed_prefix / name
        assert installed.is_file() and installed.read_bytes() == source.read_bytes(), name


def test_pip_install_creates_every_console_script_in_bin_despite_setup_cfg(installed_prefix, wheel_console_scripts):
    assert {"robot-stack", "demo_arm", "demo_monitor"} <= set(wheel_console_scripts)
    # setup.cfg's install_scripts is for colcon; a pip install must still put the scripts in bin/.
    for name in wheel_console_scripts:
        assert (installed_prefix / "bin" / name).is_file(), name
    assert not (installed_prefix / "lib" / PACKAGE).exists()


def test_console_scripts_match_pyproject(wheel_console_scripts):
    assert wheel_console_scripts == PYPROJECT["project"]["scripts"]


def test_every_console_script_target_imports_from_the_wheel_and_is_callable(installed_prefix, wheel_console_scripts):
    target = site_packages(installed_prefix)
    # A fresh interpreter with the installed wheel first on sys.path (the venv still gives the dependencies).
    probe = r"""
import importlib, json, sys
target, scripts = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, target)
problems = []
for name, value in scripts.items():
    module_name, _, attribute = value.partition(":")
    try:
        obj = importlib.import_module(module_name.strip())
    except Exception as error:
        problems.append(f"{name} = {value}: import failed: {error!r}")
        continue
    if not obj.__file__.startswith(target):
        problems.append(f"{name} = {value}: {module_name} came from {obj.__file__}, not from the wheel")
    for part in attribute.strip().split("."):
        obj = getattr(obj, part, None)
    if not callable(obj):
        problems.append(f"{name} = {value}: {attribute} is not a callable")
print(json.dumps(problems))
"""
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(target), json.dumps(wheel_console_scripts)],
        capture_output=True,
        text=True,
        cwd=installed_prefix,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_every_launch_node_of_robot_stack_runs_a_console_script(wheel_console_scripts):
    launch_files = sorted((REPO / "launch").glob("*.yaml"))
    unknown = []
    for path in launch_files:
        document = yaml.safe_load(path.read_text())
        assert isinstance(document, dict) and isinstance(document.get("launch"), list), (
            f"{path.name}: not a ROS 2 YAML launch file (top-level `launch:` list); parameter files go in launch/params/"
        )
        for package, executable in launch_node_executables(document):
            if package == PACKAGE and "$(" not in str(executable):
                if executable not in wheel_console_scripts:
                    unknown.append(f"{path.name}: exec {executable!r}")
    assert not unknown, f"not a [project.scripts] entry: {unknown}"


def test_launch_node_executables_finds_nodes_inside_both_group_forms():
    document = yaml.safe_load(
        """
launch:
- arg: {name: duration, default: "10"}
- node: {pkg: robot_stack, exec: top}
- group:
  - push-ros-namespace: {namespace: a}
  - node: {pkg: robot_stack, exec: in_list_group}
- group:
    scoped: true
    children:
    - group:
      - node: {pkg: demo_nodes_py, exec: talker}
"""
    )
    assert launch_node_executables(document) == [
        ("robot_stack", "top"),
        ("robot_stack", "in_list_group"),
        ("demo_nodes_py", "talker"),
    ]


def test_every_source_module_ships_in_the_wheel(wheel_names):
    expected = set()
    for folder, package in SOURCE_PACKAGES.items():
        for path in (REPO / folder).rglob("*.py"):
            relative = path.relative_to(REPO / folder)
            if "__pycache__" not in relative.parts:
                expected.add("/".join([*package.split("."), *relative.parts]))
    missing = sorted(expected - wheel_names)
    assert not missing, f"add their packages to [tool.setuptools].packages in pyproject.toml: {missing}"


def test_nodes_and_sim_install_only_inside_robot_stack(wheel_names, installed_prefix):
    top_level = {name.split("/")[0] for name in wheel_names if not name.startswith(f"{PACKAGE}-{VERSION}.")}
    assert top_level == {PACKAGE}
    target = site_packages(installed_prefix)
    # -I -S: nothing but the standard library and the installed wheel, not the checkout or the venv.
    probe = r"""
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
result = {}
# find_spec locates a package without running it (robot_stack.sim imports gymnasium, absent under -S).
for name in ("robot_stack.nodes", "robot_stack.sim", "nodes", "sim"):
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        spec = None
    result[name] = spec.origin if spec else None
print(json.dumps(result))
"""
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(target)], capture_output=True, text=True, cwd=installed_prefix
    )
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    assert files["robot_stack.nodes"] == str(target / PACKAGE / "nodes" / "__init__.py")
    assert files["robot_stack.sim"] == str(target / PACKAGE / "sim" / "__init__.py")
    assert files["nodes"] is None and files["sim"] is None


# ----------------------------------------------------------------------------------- README and CI commands


def test_readme_gives_exactly_the_demo_and_test_commands_and_they_exist():
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    assert [command for command in commands if command] == README_COMMANDS
    for command in README_COMMANDS:
        script = REPO / command.split()[1]
        assert script.is_file(), command
        assert re.search(r"^source scripts/bootstrap\.sh$", script.read_text(), flags=re.MULTILINE), command


def test_ci_runs_exactly_the_readme_test_command():
    ci = REPO / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    lines = [line.strip() for line in ci.read_text().splitlines()]
    assert lines[0].startswith("#!") and "bash" in lines[0]
    assert [line for line in lines[1:] if line and not line.startswith("#")] == ["exec bash scripts/run_tests.sh"]


def test_scripts_are_valid_bash():
    for script in ["scripts/bootstrap.sh", "scripts/run_tests.sh", "scripts/run_demo.sh", ".ci/run"]:
        check = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
        assert check.returncode == 0, f"{script}: {check.stderr}"


# Running the README's commands for real re-enters bootstrap: only do it inside the .venv bootstrap made
# (its install stamp is there), where bootstrap finds everything installed and starts at once.
needs_bootstrapped_venv = pytest.mark.skipif(
    not (Path(sys.prefix).resolve() == (REPO / ".venv").resolve() and (REPO / ".venv" / ".robot_stack-install").is_file()),
    reason="needs the project's .venv made by scripts/bootstrap.sh (run through scripts/run_tests.sh)",
)


def run_readme_script(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # A fresh domain and discovery tag, as a separate run would get.
    env.pop("ROS_DOMAIN_ID", None)
    env.pop("ROBOT_STACK_DDS_TAG", None)
    return subprocess.run(
        ["bash", script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@needs_bootstrapped_venv
def test_run_tests_exits_with_pytest_status_and_fails_when_nothing_is_collected(tmp_path):
    (tmp_path / "passing").mkdir()
    (tmp_path / "passing" / "test_ok.py").write_text("def test_ok():\n    assert True\n")
    (tmp_path / "failing").mkdir()
    (tmp_path / "failing" / "test_bad.py").write_text("def test_bad():\n    assert False\n")
    (tmp_path / "empty").mkdir()
    common = ["-p", "no:cacheprovider", "--rootdir", str(tmp_path)]
    passing = run_readme_script("scripts/run_tests.sh", *common, str(tmp_path / "passing"), timeout=120)
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "1 passed" in passing.stdout
    failing = run_readme_script("scripts/run_tests.sh", *common, str(tmp_path / "failing"), timeout=120)
    assert failing.returncode == 1 and "1 failed" in failing.stdout
    empty = run_readme_script("scripts/run_tests.sh", *common, str(tmp_path / "empty"), timeout=120)
    assert empty.returncode == 1 and "collected no tests" in empty.stderr


@needs_bootstrapped_venv
def test_bootstrap_exports_the_loopback_only_environment():
    report = "for v in ROS_AUTOMATIC_DISCOVERY_RANGE ROS_DOMAIN_ID ROBOT_STACK_DDS_TAG ROBOT_STACK_ROS_BACKEND " \
             "MUJOCO_GL PYTHONUNBUFFERED VIRTUAL_ENV ROS_STATIC_PEERS; do echo \"$v=${!v-<unset>}\"; done"
    env = {key: value for key, value in os.environ.items() if key not in ("ROS_DOMAIN_ID", "ROBOT_STACK_DDS_TAG")}
    env["ROS_STATIC_PEERS"] = "192.0.2.1"

    def run() -> dict[str, str]:
        result = subprocess.run(
            ["bash", "-c", f"set -euo pipefail; source scripts/bootstrap.sh; {report}"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stderr
        return dict(line.split("=", 1) for line in result.stdout.splitlines())

    first, second = run(), run()
    assert first["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert first["ROS_STATIC_PEERS"] == "<unset>"
    assert 1 <= int(first["ROS_DOMAIN_ID"]) <= 101
    assert first["ROBOT_STACK_DDS_TAG"] and first["ROBOT_STACK_DDS_TAG"] != second["ROBOT_STACK_DDS_TAG"]
    assert first["ROBOT_STACK_ROS_BACKEND"] == os.environ.get("ROBOT_STACK_ROS_BACKEND", "dds")
    assert first["MUJOCO_GL"] in {"osmesa", "egl", os.environ.get("MUJOCO_GL")}
    assert first["PYTHONUNBUFFERED"] == "1"
    assert Path(first["VIRTUAL_ENV"]).resolve() == (REPO / ".venv").resolve()


@needs_bootstrapped_venv
def test_run_demo_bootstraps_then_runs_the_main_job_with_its_arguments(tmp_path):
    # The main job itself runs end to end in tests/test_main_job.py; here, that the script hands its arguments on.
    demo = run_readme_script("scripts/run_demo.sh", "--dry-run", "--out", str(tmp_path / "demo"), timeout=300)
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    assert "bootstrap: ready" in demo.stderr
    assert "[1/9] collect: " in demo.stdout and f"dataset:={tmp_path / 'demo' / 'dataset.zarr'}" in demo.stdout
    assert "[9/9] report: " in demo.stdout
