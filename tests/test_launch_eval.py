"""`$(equals a b)` and `$(eval 'expression')` in robot-stack launch, as ROS 2 Jazzy's launch has them, and the one
collect launch file they make possible (every teleop choice from one file), run from any folder in package form."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, fresh_dds_env
from robot_stack.data import Dataset
from robot_stack.errors import LaunchError
from robot_stack.launch.launch_file import load_launch
from robot_stack.launch.substitution import SubstitutionContext, substitute

ROBOT_STACK = str(Path(sys.executable).parent / "robot-stack")
COLLECT = REPO / "launch" / "collect.launch.yaml"


def value(source: str, **configurations: str) -> str:
    return substitute(source, SubstitutionContext(configurations, REPO / "launch" / "x.launch.yaml"))


@pytest.mark.parametrize("left, right, expected", [
    ("scripted", "scripted", "true"), ("scripted", "none", "false"), ("abc", "ABC", "false"),
    ("1", "true", "true"), ("False", "0", "true"), ("true", "0", "false"),  # booleans compare as booleans
    ("1.0", "1", "true"), ("0.1", "1e-1", "true"), ("2", "2.5", "false"),  # numbers as floats
    ("'a b'", "'a b'", "true"), ("''", "x", "false"),
])
def test_equals_compares_booleans_numbers_and_text_as_ros2_launch_does(left, right, expected):
    assert value(f"$(equals {left} {right})") == expected
    assert value(f"$(equals $(var x) {right})", x=left.strip("'")) == expected


def test_eval_expands_substitutions_then_gives_str_of_the_python_value():
    assert value("$(eval '$(var n) * 2 + 1')", n="3") == "7"
    assert value("$(eval \"'$(var teleop)' in ('gamepad', 'spacemouse')\")", teleop="gamepad") == "True"
    assert value("$(eval 'not $(var sim)')", sim="True") == "False"
    assert value("$(eval 'round(sqrt(2), 3) + math.floor(pi)')") == "4.414"  # math bare and as math.x
    assert value("$(eval 'max(int(\"$(var a)\"), 5)' math)", a="9") == "9"


@pytest.mark.parametrize("expression, words", [
    ("__import__('os').getcwd()", ["'_'", "__import__"]),
    ("open('{marker}', 'w')", ["NameError", "open"]),
    ("exec('x = 1')", ["NameError", "exec"]),
    ("().__class__.__bases__[0].__subclasses__()", ["'_'", "__class__"]),
    ("getattr(1, 'real')", ["NameError", "getattr"]),
    ("1 +", ["cannot read", "Python expression"]),
])
def test_eval_cannot_reach_builtins_beyond_values_nor_the_system(tmp_path, expression, words):
    marker = tmp_path / "written"
    with pytest.raises(LaunchError) as error:
        value(f"$(eval \"{expression.format(marker=marker)}\")")
    assert all(word in str(error.value) for word in words), error.value
    assert not marker.exists()


def test_eval_names_only_the_math_module_and_says_to_quote_spaces():
    with pytest.raises(LaunchError, match="math module only, not os"):
        value("$(eval '1' 'math, os')")
    with pytest.raises(LaunchError, match="quote an argument that holds spaces"):
        value("$(eval 1 + 2)")


def test_if_unless_and_values_take_equals_and_eval(tmp_path):
    launch = tmp_path / "pick.launch.yaml"
    launch.write_text(textwrap.dedent("""\
        launch:
        - arg: {name: mode, default: 'a'}
        - arg: {name: n, default: '3'}
        - node: {pkg: robot_stack, exec: demo_arm, name: arm_a, if: $(equals $(var mode) a)}
        - node: {pkg: robot_stack, exec: demo_arm, name: arm_other, unless: $(equals $(var mode) a)}
        - node:
            pkg: robot_stack
            exec: demo_monitor
            name: monitor
            if: $(eval "'$(var mode)' in ('a', 'b') and $(var n) > 2")
            param:
            - {name: rate_hz, value: $(eval '$(var n) * 2.5'), type: float}
            - {name: big, value: $(equals $(var n) 3.0)}
        """))
    plan = load_launch(launch, {})
    assert [node.name for node in plan.nodes] == ["arm_a", "monitor"]
    assert plan.nodes[1].parameters == [{"rate_hz": 7.5, "big": True}]
    plan = load_launch(launch, {"mode": "b", "n": "2"})
    assert [node.name for node in plan.nodes] == ["arm_other"]
    plan = load_launch(launch, {"mode": "c", "n": "4"})
    assert [node.name for node in plan.nodes] == ["arm_other"]


@pytest.mark.parametrize("teleop", ["scripted", "gamepad", "spacemouse", "keyboard", "none"])
def test_one_collect_file_serves_every_teleop_choice(teleop):
    plan = load_launch(COLLECT, {"teleop": teleop, "task": "reach2d"})
    nodes = {node.executable: node for node in plan.nodes}
    assert sorted(nodes) == sorted(["sim_robot", "recorder"] + ([] if teleop == "none" else ["teleop"]))
    if teleop != "none":
        teleop_node = nodes["teleop"]
        assert Path(teleop_node.origin.split(": ")[0]).name == "collect.launch.yaml"  # no per-choice file
        inline = {k: v for part in teleop_node.parameters if isinstance(part, dict) for k, v in part.items()}
        assert inline["source"] == teleop and inline["task"] == "reach2d" and inline["episodes"] == 10
        assert teleop_node.parameters[0] == REPO / "launch" / "params" / "teleop_reach2d.yaml"
        assert teleop_node.shutdown_on_exit
    assert not (REPO / "launch" / "collect").exists()


def test_a_bad_eval_in_a_launch_file_is_one_line_naming_the_file_and_entry(tmp_path):
    launch = tmp_path / "bad.launch.yaml"
    launch.write_text("launch:\n- node: {pkg: robot_stack, exec: demo_arm, if: $(eval 'sim == 1')}\n")
    result = subprocess.run([ROBOT_STACK, "launch", str(launch)], cwd=tmp_path, env=fresh_dds_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "bad.launch.yaml" in line and "launch[0] (node)" in line and "NameError" in line and "sim" in line


def test_the_package_form_collects_from_any_folder(tmp_path):
    # `robot-stack launch robot_stack collect.launch.yaml` as the docs show it, from a folder that is not the
    # repository: the launch file, parameter files and executables come from the package, the dataset lands
    # under the working directory (its default is data/<task>.zarr).
    result = subprocess.run(
        [ROBOT_STACK, "launch", "robot_stack", "collect.launch.yaml", "task:=reach2d", "teleop:=scripted",
         "episodes:=1", "realtime:=false", "operator:=ada"],
        cwd=tmp_path, env=fresh_dds_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    dataset = Dataset.open(tmp_path / "data" / "reach2d.zarr")
    assert dataset.n_episodes == 1 and dataset.episode_info(0).operator == "ada"


def documented_launch_commands() -> list[str]:
    """Command lines `robot-stack launch ...` in the README, docs/*.md and the demo launch file's comment."""
    sources = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "launch" / "demo.launch.yaml"]
    lines = []
    for path in sources:
        for line in path.read_text().splitlines():
            line = line.lstrip("#").strip()
            if line.startswith("robot-stack launch ") and "FILE" not in line and "ARG:=VALUE" not in line:
                lines.append(line)
    return lines


def test_documented_launch_commands_work_from_any_folder(tmp_path):
    commands = documented_launch_commands()
    assert len(commands) >= 5
    for line in commands:
        command, _, comment = line.partition("#")
        words = command.split()
        if words[2] != "robot_stack":  # a path: the docs must say what it is relative to
            assert "relative" in comment, line
            continue
        # The package form resolves (file, included files, parameter files) from a folder that is not the repo.
        arguments = [word for word in words[4:] if ":=" in word]
        result = subprocess.run([ROBOT_STACK, "launch", "robot_stack", words[3], *arguments, "--show-args"],
                                cwd=tmp_path, env=fresh_dds_env(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "Arguments" in result.stdout, line + "\n" + result.stderr
