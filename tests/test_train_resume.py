"""`robot-stack train --resume RUN` with other flags: the ones that change how long, where and how the run is
evaluated apply; the ones that change what it learns are refused in one line. A real reach2d dataset from the
scripted expert in MuJoCo, real BC runs on the CPU."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from robot_stack.sim.collect import collect

from robot_stack.cli.main import main as cli
from robot_stack.learn.trainer import load_checkpoint

os.environ.setdefault("MUJOCO_GL", "osmesa")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 10-update BC run on 3 reach2d expert episodes, never evaluated (--eval-every -1), device auto."""
    folder = tmp_path_factory.mktemp("resume")
    dataset = collect("reach2d", folder / "reach.zarr", 3, mix={"expert": 1.0}, seed=0, progress=False)
    run_dir = folder / "bc_run"
    assert cli(["train", "--algo", "bc", "--dataset", str(dataset.path), "--steps", "10", "--batch-size", "16",
                "--eval-every", "-1", "--out", str(run_dir), "--no-progress", "--set", "hidden_dims=[16]"]) == 0
    return dataset, run_dir


def test_resume_applies_steps_device_and_evaluation_flags(run, capsys, tmp_path):
    dataset, run_dir = run
    capsys.readouterr()
    # The same --algo/--dataset as the run's are accepted (a user repeating the command line), not conflicts.
    assert cli(["train", "--resume", str(run_dir), "--algo", "bc", "--dataset", str(dataset.path), "--steps", "20",
                "--device", "cpu", "--eval-every", "0", "--eval-episodes", "2", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 20 and result["evaluation"]["episodes"] == 2  # evaluated at the end, 2 episodes
    saved = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert saved["step"] == 20
    assert (saved["config"]["device"], saved["config"]["eval_every"], saved["config"]["eval_episodes"]) == ("cpu", 0, 2)
    assert saved["config"]["batch_size"] == 16  # the rest is the run's


def test_resume_print_config_shows_the_config_the_resumed_run_uses(run, capsys):
    _, run_dir = run
    capsys.readouterr()
    assert cli(["train", "--resume", str(run_dir), "--steps", "500", "--eval-episodes", "7", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["algo"], printed["steps"], printed["eval_episodes"], printed["batch_size"]) == ("bc", 500, 7, 16)


@pytest.mark.parametrize("flags, named", [
    (["--algo", "iql"], ["--algo iql (the run's: bc)"]),
    (["--batch-size", "64", "--seed", "3"], ["--batch-size 64 (the run's: 16)", "--seed 3 (the run's: 0)"]),
    (["--reward", "success", "--obs", "joint_position"], ["--reward success (the run's: none)",
                                                         "--obs joint_position (the run's: default)"]),
    (["--set", "algorithm.actor_lr=1e-3", "--config", "x.yaml"], ["--config", "--set"]),
    (["--out", "elsewhere"], ["--out"]),
])
def test_resume_refuses_flags_that_change_what_the_run_learns_in_one_line(run, capsys, flags, named):
    _, run_dir = run
    before = load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"]
    capsys.readouterr()
    assert cli(["train", "--resume", str(run_dir), "--steps", str(before + 10), *flags, "--no-progress"]) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert all(name in line for name in named), line
    assert "leave them out" in line and "--eval-every" in line and out == ""
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"] == before  # nothing trained
