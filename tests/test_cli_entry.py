"""The `robot-stack` entry point: a reader that closes stdout (`| head`) ends a command quietly.

Real processes and real pipes: a shell pipeline into `head -1`, and a pipe whose read end is closed before
the command starts (so the break is certain, whether it shows mid-run or in the flush at exit).
"""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from conftest import fresh_dds_env
from robot_stack.cli.main import BROKEN_PIPE_STATUS
from test_topic_cli import ROBOT_STACK


def assert_quiet(stderr: str) -> None:
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr and "Exception ignored" not in stderr, stderr


def test_a_long_output_piped_into_head_ends_quietly_with_the_broken_pipe_status(tmp_path):
    # 300 lines of ~3 kB each (far more than a pipe buffer holds), printed and flushed one by one.
    command = [*ROBOT_STACK, "topic", "pub", "/chatter", "std_msgs/msg/String", "{data: " + "x" * 3000 + "}",
               "--times", "300", "--rate", "1000", "-w", "0", "--keep-alive", "0"]
    err = tmp_path / "stderr.txt"
    script = f"{shlex.join(command)} 2>{shlex.quote(str(err))} | head -1; echo ${{PIPESTATUS[0]}}"
    result = subprocess.run(["bash", "-c", script], env=fresh_dds_env(), capture_output=True, text=True, timeout=60)
    first, status = result.stdout.splitlines()
    assert first == "publisher: beginning loop"
    assert_quiet(err.read_text())
    assert int(status) == BROKEN_PIPE_STATUS


@pytest.mark.parametrize("args", [["topic", "types"], ["--help"], ["data", "import-bag", "--help"]])
def test_output_still_buffered_at_exit_to_a_closed_pipe_ends_quietly(args):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command prints anything
    env = {key: value for key, value in fresh_dds_env().items() if key != "PYTHONUNBUFFERED"}
    try:
        # Block-buffered stdout (as in a user's shell): these few kB are only written by the flush at exit.
        result = subprocess.run(ROBOT_STACK + args, stdout=write_end, stderr=subprocess.PIPE, env=env, text=True,
                                timeout=60)
    finally:
        os.close(write_end)
    assert_quiet(result.stderr)
    assert result.stderr == ""
    assert result.returncode == BROKEN_PIPE_STATUS


def test_in_process_main_still_returns_the_command_status(capsys):
    from robot_stack.cli.main import main

    assert main(["topic", "types"]) == 0
    assert "sensor_msgs/msg/JointState" in capsys.readouterr().out.splitlines()
