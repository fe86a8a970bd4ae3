"""Node executables answer --help from their declared parameter table, and a wrong-typed parameter is one line."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from conftest import REPO

from robot_stack.errors import RosError
from robot_stack.launch.package import node_executables
from robot_stack.ros.parameters import NodeInterface, ParameterSpec

NODES = ["sim_robot", "teleop", "recorder", "demo_arm"]

# Run the node's console script in a fresh interpreter and report what --help loaded besides printing.
_HELP_PROBE = """\
import sys
from robot_stack.launch.entry_point import main
code = main(sys.argv[1:])
loaded = [name for name in ("cyclonedds", "mujoco") if name in sys.modules]
print(f"PROBE exit={code} loaded={loaded}", file=sys.stderr)
"""


def node(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_stack.launch.entry_point", name, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("name", NODES)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_node_help_lists_parameters_with_types_and_defaults_and_topics_without_starting(name, flag):
    result = subprocess.run([sys.executable, "-c", _HELP_PROBE, name, flag], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "PROBE exit=0 loaded=[]" in result.stderr  # no DDS participant, no MuJoCo
    interface = node_interface(name)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"usage: {name} [--ros-args")
    for spec in interface.parameters:
        (line,) = [line for line in lines if line.split()[:1] == [spec.name]]
        assert f" {spec.type_word} " in line and f"{spec.default_text}: {spec.meaning}" in line
    assert "publishes (out):" in result.stdout
    for topic in interface.publishes + interface.subscribes:
        assert f"  {topic.name}  [{topic.type}]" in result.stdout


def node_interface(name: str) -> NodeInterface:
    module = importlib.import_module(node_executables()[name].module)
    return module.ARM if name == "demo_arm" else module.INTERFACE


def test_the_help_of_each_node_names_what_launch_files_pass_it():
    recorder = node_interface("recorder")
    names = {spec.name for spec in recorder.parameters}
    assert {"features_file", "dataset", "record_hz", "use_sim_time", "cameras", "min_free_mb", "recover_on_start",
            "on_shutdown"} <= names
    assert {"episodes", "source", "control_hz", "seed", "skill", "device"} <= {s.name for s in node_interface("teleop").parameters}


@pytest.mark.parametrize("name, param, expected", [
    ("recorder", "record_hz:=fast", ("parameter 'record_hz' of node '/recorder' is DOUBLE (default 20.0), but the "
                                     "command line (-p) gives STRING 'fast'")),
    ("sim_robot", "seed:=first", ("parameter 'seed' of node '/sim_robot' is INTEGER (default 0), but the command "
                                  "line (-p) gives STRING 'first'")),
    ("demo_arm", "rate_hz:=[1, 2]", ("parameter 'rate_hz' of node '/demo_arm' is DOUBLE (default 100.0), but the "
                                     "command line (-p) gives INTEGER_ARRAY [1, 2]")),
    ("teleop", "episodes:=0", "parameter 'episodes' of node '/teleop' is 0: it must be at least 1"),
    ("teleop", "source:=joystick", ("parameter 'source' of node '/teleop' is 'joystick': use one of keyboard, "
                                    "gamepad, spacemouse, scripted")),
])
def test_a_wrong_parameter_is_one_line_naming_it_and_exits_2(name, param, expected, dds_env):
    result = node(name, "--ros-args", "-p", param)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (fatal,) = [line for line in result.stderr.splitlines() if line.startswith("[FATAL]")]
    assert fatal.endswith(expected + ": fix the value's type" if "gives" in expected else expected)


def test_declared_ranges_and_choices_are_checked_on_any_node(ros_session):
    ros = ros_session("inproc", ["--ros-args", "-p", "rate:=-1.0"])
    interface = NodeInterface("n", "a node", (ParameterSpec("rate", 1.0, "rate [Hz]", positive=True),
                                              ParameterSpec("mode", "a", "mode", choices=("a", "b"))))
    with pytest.raises(RosError, match=r"parameter 'rate' of node '/n' is -1.0: it must be greater than 0"):
        interface.declare(ros.create_node("n"))
