"""--init-from RUN: a new run starts from another run's networks and optimizers (an offline run fine-tuned online),
with that run's config; what does not fit is a one-line error."""

from __future__ import annotations

import json
import os

import pytest
import torch

from robot_stack.cli.main import main as cli
from robot_stack.learn.trainer import load_checkpoint
from robot_stack.sim.collect import collect

os.environ.setdefault("MUJOCO_GL", "osmesa")


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("init_from")
    dataset = collect("reach2d", folder / "reach.zarr", 4, mix={"medium": 1.0}, seed=0, progress=False)
    run = folder / "offline"
    assert cli(["train", "--algo", "iql", "--dataset", str(dataset.path), "--steps", "40", "--batch-size", "16",
                "--eval-every", "-1", "--device", "cpu", "--out", str(run), "--no-progress",
                "--set", "hidden_dims=[16]"]) == 0
    return dataset, run


def test_an_online_run_starts_from_the_offline_runs_networks_and_config(offline, tmp_path, capsys):
    dataset, run = offline
    out = tmp_path / "online"
    assert cli(["train", "--init-from", str(run), "--online", "sim:reach2d", "--online-steps", "30", "--out", str(out),
                "--no-progress", "--set", "online_eval_every=0", "--set", "eval_every=-1"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["initialized_from"]["step"] == 40 and info["initialized_from"]["path"].startswith(str(run))
    config = info["config"]
    assert (config["algo"], config["hidden_dims"], config["steps"], config["batch_size"]) == ("iql", [16], 0, 16)
    # The switch checkpoint holds the policy the online phase started from: the offline run's, weight for weight.
    source = load_checkpoint(run / "checkpoints" / "latest.pt")["algorithm"]["modules"]
    started = load_checkpoint(out / "checkpoints" / "switch.pt")["algorithm"]["modules"]
    for module in ("actor", "critic", "value"):
        for name, value in source[module].items():
            assert torch.equal(value, started[module][name]), f"{module}.{name}"
    result = json.loads((out / "result.json").read_text())
    assert result["online"]["env_steps"] >= 30


@pytest.mark.parametrize(("flags", "message"), [
    (["--algo", "calql"], "was trained with iql"),
    (["--set", "hidden_dims=[32]"], "actor.net.net.0.weight is [16, 18] there, [32, 18] here"),
    (["--obs", "eef_pose"], "sees other observations"),
])
def test_what_does_not_fit_the_run_it_starts_from_is_one_line(offline, tmp_path, capsys, flags, message):
    _, run = offline
    code = cli(["train", "--init-from", str(run), "--online", "sim:reach2d", "--out", str(tmp_path / "x"),
                "--no-progress", *flags])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and len(error.splitlines()) == 1, error
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_a_resumed_run_cannot_start_from_another(offline, capsys):
    _, run = offline
    assert cli(["train", "--resume", str(run), "--init-from", str(run)]) == 2
    assert "--init-from cannot apply" in capsys.readouterr().err
