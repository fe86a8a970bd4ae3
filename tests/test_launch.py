"""`robot-stack launch`: ROS 2 YAML launch files run as real processes, stopped by real signals.

Most tests run a throwaway "fake node" script through `exec: /path/to/script` with no `pkg`,
which is how launch_ros runs an executable outside any package; the demo tests run the real
robot_stack nodes over loopback DDS.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import fresh_dds_env
from robot_stack.errors import LaunchError
from robot_stack.launch.launch_file import declared_arguments, load_launch
from robot_stack.launch.package import package_share_directory
from robot_stack.launch.substitution import SubstitutionContext, split_command_line, substitute

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "launch" / "demo.launch.yaml"
FIXTURES = Path(__file__).resolve().parent / "launch_files"

# The real dispatcher, limited to `launch` while another subcommand module is still missing.
_LAUNCH_ONLY_MAIN = (
    "import sys; from robot_stack.cli import main; "
    "main.SUBCOMMANDS = {'launch': main.SUBCOMMANDS['launch']}; sys.exit(main.main())"
)

FAKE_NODE = '''\
#!{python}
"""Stands in for a node: records its command line and parameter files, then does what its args say.

args (before --ros-args): record=FILE events=FILE name=N lines=K wait_for=F1,F2 exit_after=S code=C
ignore=SIGINT,SIGTERM
"""
import json, os, signal, sys, time

argv = sys.argv[1:]
own = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
opts = dict(a.split("=", 1) for a in own if "=" in a)
name = opts.get("name", "node")

def on_signal(signum, frame):
    if "events" in opts:
        with open(opts["events"], "a") as f:
            f.write(f"{{name}} {{signal.Signals(signum).name}}\\n")
    if signal.Signals(signum).name not in opts.get("ignore", "").split(","):
        sys.exit(0)

signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)
params = {{argv[i + 1]: open(argv[i + 1]).read() for i, a in enumerate(argv) if a == "--params-file"}}
record = {{"argv": argv, "pid": os.getpid(), "env": os.environ.get("FAKE_NODE_ENV"), "params": params}}
if "record" in opts:
    with open(opts["record"] + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(opts["record"] + ".tmp", opts["record"])
for i in range(int(opts.get("lines", 0))):
    print(f"line {{i}}", flush=True)
for path in filter(None, opts.get("wait_for", "").split(",")):
    while not os.path.exists(path):
        time.sleep(0.01)
if "exit_after" in opts:
    time.sleep(float(opts["exit_after"]))
    sys.exit(int(opts.get("code", 0)))
while True:
    time.sleep(0.02)
'''


# ---- helpers ------------------------------------------------------------------------------------


def launch_command(*args: str) -> list[str]:
    """`robot-stack launch ARGS` through the CLI dispatcher, independent of PATH."""
    if importlib.util.find_spec("robot_stack.cli.topic") is not None:
        return [sys.executable, "-m", "robot_stack.cli.main", "launch", *args]
    return [sys.executable, "-c", _LAUNCH_ONLY_MAIN, "launch", *args]


def run_launch(*args: str, cwd: Path = REPO, timeout: float = 30, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        launch_command(*args), cwd=cwd, env=fresh_dds_env(**env), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def start_launch(tmp_path: Path):
    """Start a launch in the background, stdout and stderr to files; killed at teardown if a test failed."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> tuple[subprocess.Popen, Path, Path]:
        out, err = tmp_path / "launch.out", tmp_path / "launch.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            process = subprocess.Popen(launch_command(*args), cwd=REPO, env=fresh_dds_env(), stdout=stdout, stderr=stderr)
        started.append(process)
        return process, out, err

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()  # its nodes get SIGTERM from the kernel (parent-death signal)
            process.wait()


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


@pytest.fixture
def fake_node(tmp_path: Path) -> Path:
    script = tmp_path / "fake_node.py"
    script.write_text(FAKE_NODE.format(python=sys.executable))
    script.chmod(0o755)
    return script


def write_launch(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def records(tmp_path: Path, *names: str) -> list[dict]:
    return [json.loads((tmp_path / f"{name}.json").read_text()) for name in names]


# ---- substitutions ------------------------------------------------------------------------------


def test_substitutions_follow_the_ros_frontend_grammar(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LAUNCH_TEST_VALUE", "from-env")
    monkeypatch.delenv("LAUNCH_TEST_UNSET", raising=False)
    context = SubstitutionContext({"which": "robot", "robot": "panda"}, tmp_path / "x.launch.yaml")
    assert substitute("$(var $(var which))_arm", context) == "panda_arm"
    assert substitute("$(env LAUNCH_TEST_VALUE)", context) == "from-env"
    assert substitute("$(env LAUNCH_TEST_UNSET 'a default')", context) == "a default"
    assert substitute("$(var missing fallback)", context) == "fallback"
    assert substitute("$(dirname)/params.yaml", context) == f"{tmp_path}/params.yaml"
    assert substitute(r"price: \$(var which)", context) == "price: $(var which)"
    assert substitute("$(find-pkg-share robot_stack)", context) == str(REPO)
    # A substitution's value stays one argument, literal text splits like a shell.
    assert split_command_line("--name $(env LAUNCH_TEST_UNSET 'two words') 'a b' c$(var which)d", context) == [
        "--name", "two words", "a b", "crobotd",
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("$(nope x)", "unknown substitution '$(nope ...)'"),
        ("$(var)", "takes 1 or 2 argument(s), got 0"),
        ("$(var x", "is not closed"),
        ("$(var  x)", "exactly one space"),
        ("$(var not_set)", "launch configuration 'not_set' is not set"),
        ("$(env LAUNCH_TEST_UNSET)", "environment variable 'LAUNCH_TEST_UNSET' is not set"),
    ],
)
def test_bad_substitutions_raise_launch_error(source: str, message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LAUNCH_TEST_UNSET", raising=False)
    with pytest.raises(LaunchError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        substitute(source, SubstitutionContext({}, tmp_path / "x.launch.yaml"))


def test_find_pkg_share_is_the_checkout_holding_the_launch_files() -> None:
    share = package_share_directory("robot_stack")
    assert share == REPO
    assert (share / "launch" / "demo.launch.yaml").is_file()
    with pytest.raises(LaunchError, match="package 'no_such_pkg' not found"):
        package_share_directory("no_such_pkg")


# ---- evaluating launch files (in process, real files) -------------------------------------------


def test_groups_includes_and_conditions_resolve_like_ros2_launch(tmp_path: Path, fake_node: Path) -> None:
    write_launch(tmp_path / "inner.launch.yaml", f"""\
        launch:
        - arg: {{name: robot, description: 'which robot'}}
        - arg: {{name: inner_only, default: 'x'}}
        - node: {{exec: {fake_node}, name: $(var robot)_driver}}
        """)
    outer = write_launch(tmp_path / "outer.launch.yaml", f"""\
        launch:
        - arg: {{name: use_extra, default: 'false'}}
        - let: {{name: scoped_value, value: outside}}
        - group:
            children:
            - push-ros-namespace: {{namespace: arm}}
            - let: {{name: scoped_value, value: inside}}
            - node: {{exec: {fake_node}, name: in_group, namespace: sub}}
            - node: {{exec: {fake_node}, name: absolute, namespace: /top}}
        - node: {{exec: {fake_node}, name: after_group_$(var scoped_value)}}
        - include:
            file: $(dirname)/inner.launch.yaml
            arg: [{{name: robot, value: panda}}]
        - node: {{exec: {fake_node}, name: extra, if: $(var use_extra)}}
        - node: {{exec: {fake_node}, name: no_extra, unless: $(var use_extra)}}
        """)
    plan = load_launch(outer)
    assert [(node.name, node.namespace) for node in plan.nodes] == [
        ("in_group", "/arm/sub"),
        ("absolute", "/top"),
        ("after_group_outside", None),  # the scoped group's let and namespace did not leak
        ("panda_driver", None),
        ("no_extra", None),
    ]
    assert [node.name for node in load_launch(outer, {"use_extra": "true"}).nodes][-1] == "extra"
    # --show-args walks includes and conditional entries too.
    assert [(a.name, a.default) for a in declared_arguments(outer)] == [
        ("use_extra", "false"), ("robot", None), ("inner_only", "x"),
    ]


def test_inline_parameters_keep_launch_ros_types(tmp_path: Path, fake_node: Path) -> None:
    path = write_launch(tmp_path / "params.launch.yaml", f"""\
        launch:
        - arg: {{name: rate, default: '50'}}
        - node:
            exec: {fake_node}
            param:
            - {{name: as_yaml_int, value: 3}}
            - {{name: as_yaml_float, value: 2.5}}
            - {{name: quoted_text, value: '10'}}
            - {{name: substituted, value: $(var rate)}}
            - {{name: substituted_float, value: $(var rate), type: float}}
            - {{name: substituted_str, value: $(var rate), type: str}}
            - {{name: substituted_list, value: '[1, 2]'}}
            - {{name: names, value: [a, b]}}
            - name: gains
              param: [{{name: p, value: 1.5}}, {{name: i, value: 0.0}}]
        """)
    (node,) = load_launch(path).nodes
    assert node.parameters == [{
        "as_yaml_int": 3, "as_yaml_float": 2.5, "quoted_text": "10", "substituted": 50,
        "substituted_float": 50.0, "substituted_str": "50", "substituted_list": "[1, 2]", "names": ["a", "b"],
        "gains.p": 1.5, "gains.i": 0.0,
    }]
    assert type(node.parameters[0]["substituted_float"]) is float


# ---- the command line -----------------------------------------------------------------------------


def test_node_gets_ros_args_params_files_and_remaps_the_ros_way(tmp_path: Path, fake_node: Path) -> None:
    params_file = tmp_path / "extra.yaml"
    params_file.write_text("/**:\n  ros__parameters:\n    from_file: 1\n")
    launch_file = write_launch(tmp_path / "cmd.launch.yaml", f"""\
        launch:
        - arg: {{name: count, default: '3'}}
        - let: {{name: topic, value: /arm/joint_states}}
        - node:
            exec: {fake_node}
            exec_name: talk
            name: talker
            namespace: robot
            output: screen
            args: "record={tmp_path}/talker.json lines=1 exit_after=0 'greeting=hello world' n=$(var count)"
            param:
            - {{name: rate_hz, value: 100.5}}
            - {{name: count, value: $(var count)}}
            - {{name: flags, value: [true, false]}}
            - from: $(dirname)/extra.yaml
            - {{name: late, value: plain text}}
            remap:
            - {{from: joint_states, to: $(var topic)}}
            env:
            - {{name: FAKE_NODE_ENV, value: from-launch}}
        - node:
            exec: {fake_node}
            args: record={tmp_path}/anonymous.json exit_after=0
            param: [{{name: x, value: 1}}]
        """)
    result = run_launch(str(launch_file), "count:=7")
    assert result.returncode == 0, result.stderr
    assert "[talk-1] line 0" in result.stdout
    assert "all nodes have finished" in result.stdout
    talker, anonymous = records(tmp_path, "talker", "anonymous")
    argv = talker["argv"]
    first_params, second_params = argv[argv.index("--params-file") + 1], argv[-3]
    assert argv == [
        f"record={tmp_path}/talker.json", "lines=1", "exit_after=0", "greeting=hello world", "n=7",
        "--ros-args", "-r", "__node:=talker", "-r", "__ns:=/robot",
        "--params-file", first_params, "--params-file", str(params_file), "--params-file", second_params,
        "-r", "joint_states:=/arm/joint_states",
    ]
    assert yaml.safe_load(talker["params"][first_params]) == {
        "/robot/talker": {"ros__parameters": {"rate_hz": 100.5, "count": 7, "flags": [True, False]}}
    }
    assert yaml.safe_load(talker["params"][second_params]) == {
        "/robot/talker": {"ros__parameters": {"late": "plain text"}}
    }
    assert talker["env"] == "from-launch"
    # No name or namespace: no __node/__ns and parameters for any node, as ros2 launch writes them.
    (anonymous_params,) = anonymous["params"]
    assert anonymous["argv"][2:] == ["--ros-args", "--params-file", anonymous_params]
    assert yaml.safe_load(anonymous["params"][anonymous_params]) == {"/**": {"ros__parameters": {"x": 1}}}
    assert not Path(first_params).exists(), "temporary parameter files are removed after the launch"


# ---- bad input: one line, exit status 2, no traceback ---------------------------------------------


BAD_FILES = {
    "malformed_yaml": ("launch:\n- node: {exec: x\n", "not valid YAML at line"),
    "no_launch_key": ("nodes: []\n", "one top-level key `launch:`"),
    "unknown_entry": ("launch:\n- nod: {exec: x}\n", "launch[0]: unknown entry 'nod'; allowed: arg, let, node"),
    "unknown_key": (
        "launch:\n- node: {pkg: robot_stack, exec: demo_arm, parms: []}\n",
        "launch[0] (node): unknown key 'parms'; allowed: pkg, exec, name",
    ),
    "ros_only_key": (
        "launch:\n- node: {pkg: robot_stack, exec: demo_arm, respawn: 'true'}\n",
        "'respawn' is not supported by robot-stack launch (use ros2 launch)",
    ),
    "unquoted_default": ("launch:\n- arg: {name: n, default: 10}\n", "'default' must be a string, got 10 (quote it"),
    "required_arg": (
        "launch:\n- arg: {name: robot}\n", "launch argument 'robot' is required (it has no default): pass robot:=VALUE"
    ),
    "unknown_substitution": (
        "launch:\n- let: {name: a, value: $(command ls)}\n",
        "unknown substitution '$(command ...)'",
    ),
    "missing_params_file": (
        "launch:\n- node: {pkg: robot_stack, exec: demo_arm, param: [{from: $(dirname)/nope.yaml}]}\n",
        "parameters file not found:",
    ),
    "unknown_executable": (
        "launch:\n- node: {pkg: robot_stack, exec: no_such_node}\n",
        "unknown executable 'no_such_node' in package robot_stack; available: demo_arm, demo_monitor",
    ),
    "other_package": (
        "launch:\n- node: {pkg: turtlesim, exec: turtlesim_node}\n",
        "package 'turtlesim': only robot_stack executables can run without ROS 2",
    ),
    "bad_condition": ("launch:\n- let: {name: a, value: b, if: maybe}\n", "condition 'if' is 'maybe'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_launch_files_fail_with_one_clear_line(case: str, tmp_path: Path) -> None:
    text, message = BAD_FILES[case]
    path = tmp_path / f"{case}.launch.yaml"
    path.write_text(text)
    result = run_launch(str(path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("robot-stack launch: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert path.name in result.stderr or case in ("other_package", "unknown_executable", "missing_params_file")


def test_missing_launch_file_and_unknown_argument_fail_with_one_clear_line(tmp_path: Path) -> None:
    missing = run_launch(str(tmp_path / "nope.launch.yaml"))
    assert missing.returncode == 2
    assert missing.stderr == f"robot-stack launch: error: launch file not found: {tmp_path}/nope.launch.yaml\n"

    unknown = run_launch(str(DEMO), "duraton:=3")
    assert unknown.returncode == 2
    assert "Traceback" not in unknown.stderr
    assert "unknown launch argument(s) 'duraton'" in unknown.stderr
    assert "declared: duration, rate_hz" in unknown.stderr

    malformed = run_launch(str(DEMO), "duration=3")
    assert malformed.returncode == 2
    assert "launch arguments are NAME:=VALUE, got 'duration=3'" in malformed.stderr


def test_show_args_lists_defaults_and_descriptions_like_ros2_launch() -> None:
    result = run_launch("robot_stack", "demo.launch.yaml", "--show-args")  # ros2 launch's PACKAGE FILE form
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:5] == [
        "Arguments (pass arguments as '<name>:=<value>'):",
        "",
        "    'duration':",
        "        how long the monitor listens before it ends the launch [s]",
        "        (default: '10')",
    ]
    assert "    'rate_hz':" in result.stdout


# ---- process management ---------------------------------------------------------------------------


def test_failing_node_stops_the_others_in_reverse_order_and_names_itself(tmp_path: Path, fake_node: Path) -> None:
    events = tmp_path / "events.txt"
    launch_file = write_launch(tmp_path / "fail.launch.yaml", f"""\
        launch:
        - node: {{exec: {fake_node}, name: first, args: record={tmp_path}/first.json events={events} name=first}}
        - node: {{exec: {fake_node}, name: second, args: record={tmp_path}/second.json events={events} name=second}}
        - node:
            exec: {fake_node}
            name: broken
            output: screen
            args: >-
              record={tmp_path}/broken.json lines=25 exit_after=0 code=3
              wait_for={tmp_path}/first.json,{tmp_path}/second.json
        """)
    result = run_launch(str(launch_file))
    assert result.returncode == 1, result.stderr
    assert events.read_text().splitlines() == ["second SIGINT", "first SIGINT"]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("[ERROR] [launch]")]
    assert error_lines == [
        "[ERROR] [launch]: node 'broken' (fake_node.py-3) failed: exit code 3; its last 20 output lines:"
    ]
    tail = result.stderr.split(error_lines[0], 1)[1].split("\n")[1:-1]
    assert tail == [f"    [fake_node.py-3] line {i}" for i in range(5, 25)]
    assert not any(alive(record["pid"]) for record in records(tmp_path, "first", "second", "broken"))


def test_sigint_stops_nodes_in_reverse_start_order_and_exits_0(tmp_path: Path, fake_node: Path, start_launch) -> None:
    events = tmp_path / "events.txt"
    launch_file = write_launch(tmp_path / "long.launch.yaml", f"""\
        launch:
        - node: {{exec: {fake_node}, name: first, args: record={tmp_path}/first.json events={events} name=first}}
        - node: {{exec: {fake_node}, name: second, args: record={tmp_path}/second.json events={events} name=second}}
        """)
    process, out, _ = start_launch(str(launch_file))
    wait_until(lambda: (tmp_path / "second.json").exists() and (tmp_path / "first.json").exists(), 10, "both nodes")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=15) == 0
    assert events.read_text().splitlines() == ["second SIGINT", "first SIGINT"]
    assert "user interrupted with SIGINT" in out.read_text()
    assert not any(alive(record["pid"]) for record in records(tmp_path, "first", "second"))


def test_node_ignoring_sigint_gets_sigterm_then_sigkill(tmp_path: Path, fake_node: Path) -> None:
    events = tmp_path / "events.txt"
    launch_file = write_launch(tmp_path / "stubborn.launch.yaml", f"""\
        launch:
        - node:
            exec: {fake_node}
            name: stubborn
            sigterm_timeout: 0.3
            sigkill_timeout: 0.3
            args: record={tmp_path}/stubborn.json events={events} name=stubborn ignore=SIGINT,SIGTERM
        - node:
            exec: {fake_node}
            args: exit_after=0 code=0 wait_for={tmp_path}/stubborn.json
            on_exit: shutdown
        """)
    result = run_launch(str(launch_file))
    assert result.returncode == 0, result.stderr
    assert events.read_text().splitlines() == ["stubborn SIGINT", "stubborn SIGTERM"]
    assert "still running 0.3 s after SIGINT; sending SIGTERM" in result.stderr
    assert "still running 0.3 s after SIGTERM; sending SIGKILL" in result.stderr
    assert "killed by signal SIGKILL" in result.stderr
    (stubborn,) = records(tmp_path, "stubborn")
    assert not alive(stubborn["pid"])


def test_killed_launch_leaves_no_orphan_nodes(tmp_path: Path, fake_node: Path, start_launch) -> None:
    launch_file = write_launch(tmp_path / "orphan.launch.yaml", f"""\
        launch:
        - node: {{exec: {fake_node}, args: record={tmp_path}/node.json}}
        """)
    process, _, _ = start_launch(str(launch_file))
    wait_until(lambda: (tmp_path / "node.json").exists(), 10, "the node")
    (node,) = records(tmp_path, "node")
    process.kill()  # SIGKILL: the launch cannot stop its nodes itself
    process.wait(timeout=5)
    try:
        wait_until(lambda: not alive(node["pid"]), 5, "the orphaned node to exit")
    finally:
        if alive(node["pid"]):
            os.kill(node["pid"], signal.SIGKILL)


# ---- the demo over real DDS -----------------------------------------------------------------------


def test_demo_launch_runs_two_nodes_over_dds_and_exits_0() -> None:
    result = run_launch(str(DEMO), "duration:=3", "rate_hz:=50", timeout=40)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "[demo_arm-1]" in output and "publishing 7 joint states at 50 Hz" in output
    received = [line for line in output.splitlines() if line.startswith("[demo_monitor-2]") and "received" in line]
    assert received, output
    count = int(received[-1].split("received ", 1)[1].split()[0])
    assert count > 0
    assert "demo_monitor-2 exited and has on_exit: shutdown" in output


def test_sigint_stops_the_demo_cleanly(start_launch) -> None:
    process, out, err = start_launch(str(DEMO), "duration:=60")
    wait_until(lambda: "joint_states: " in err.read_text(), 20, "the monitor's first rate report")
    nodes = child_pids(process.pid)
    assert len(nodes) == 2
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 0, err.read_text()
    assert not any(alive(pid) for pid in nodes)
    stopped = [line for line in out.read_text().splitlines() if "process has stopped" in line]
    assert [line.split("]")[1] for line in stopped] == [" [demo_monitor-2", " [demo_arm-1"]


def test_monitor_without_messages_fails_the_launch_with_its_last_lines() -> None:
    result = run_launch(str(FIXTURES / "monitor_without_publisher.launch.yaml"), timeout=40)
    assert result.returncode == 1, result.stdout + result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("[ERROR] [launch]")]
    assert error.startswith("[ERROR] [launch]: node 'demo_monitor' (demo_monitor-2) failed: exit code 1")
    tail = result.stderr.split(error, 1)[1]
    assert "no joint_states received" in tail and "/nobody_publishes_here" in tail
    assert "[INFO] [demo_arm-1]: process has stopped" in result.stdout


def test_a_node_stopped_while_it_starts_up_exits_quietly_without_a_traceback() -> None:
    # A launch stops every node at once when one fails on start (a bad parameter): the others may still be
    # importing, and a SIGINT there used to print a KeyboardInterrupt traceback into the operator's launch.
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    for _ in range(8):
        node = subprocess.Popen([sys.executable, "-m", "robot_stack.launch.entry_point", "recorder"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(0.1, 0.5)  # from after the interpreter's own start-up, which no program can guard
        time.sleep(delay)
        node.send_signal(signal.SIGINT)
        _, err = node.communicate(timeout=60)
        assert "Traceback" not in err, f"seed {seed}, SIGINT {delay:.2f} s after the start:\n{err[-2000:]}"
