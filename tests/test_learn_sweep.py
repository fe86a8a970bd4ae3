"""Training sweeps (robot_stack.learn.sweep): seeds and configs, in this process or over a local Ray on 127.0.0.1.

Real runs (tiny reach2d IQL and BC), a real local Ray cluster; a failing run is a row, not the sweep's end."""

from __future__ import annotations

import json
import os

import pytest

from robot_stack.errors import LearnError
from robot_stack.learn.config import load_config
from robot_stack.learn.sweep import run_sweep
from robot_stack.sim.collect import collect

os.environ.setdefault("MUJOCO_GL", "osmesa")


@pytest.fixture(scope="module")
def reach(tmp_path_factory):
    return collect("reach2d", tmp_path_factory.mktemp("data") / "reach.zarr", 4, mix={"expert": 1.0}, seed=0,
                   progress=False)


def _config(dataset, out, algo="iql", **fields):
    fields = {"steps": 30, "batch_size": 16, "hidden_dims": [16], "eval_every": -1, "log_every": 10,
              "checkpoint_every": 1000, "device": "cpu", "compile": "off", "out": str(out),
              "reward": "none" if algo == "bc" else "sim"} | fields
    return load_config(algo, dataset=str(dataset), **fields)


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_every_run_of_a_sweep_trains_in_its_folder_and_a_failed_one_is_a_row(reach, tmp_path, engine):
    configs = [_config(reach.path, tmp_path / "iql_0", seed=0), _config(reach.path, tmp_path / "bc_1", "bc", seed=1),
               _config(tmp_path / "missing.zarr", tmp_path / "broken"), _config(reach.path, tmp_path / "iql_2", seed=2)]
    seen = []
    rows = run_sweep(configs, engine=engine, workers=2, progress=False, on_result=lambda i, row: seen.append(i))
    assert sorted(seen) == [0, 1, 2, 3]
    assert "error" in rows[2] and "missing.zarr" in rows[2]["error"]
    for index in (0, 1, 3):
        assert "error" not in rows[index], rows[index]
        result = json.loads((tmp_path / configs[index].out / "result.json").read_text())
        assert result["steps"] == 30 and result["seed"] == configs[index].seed
        assert rows[index]["run_dir"] == configs[index].out and rows[index]["algo"] == configs[index].algo
    # Seeds differ, so do the trained weights: the runs are not one run copied.
    assert (tmp_path / "iql_0" / "checkpoints" / "latest.pt").read_bytes() != (
        tmp_path / "iql_2" / "checkpoints" / "latest.pt").read_bytes()


def test_a_sweep_needs_one_folder_per_run_and_a_known_engine(reach, tmp_path):
    same = [_config(reach.path, tmp_path / "a"), _config(reach.path, tmp_path / "a", seed=1)]
    with pytest.raises(LearnError, match="its own run folder"):
        run_sweep(same, progress=False)
    with pytest.raises(LearnError, match="unknown engine"):
        run_sweep([_config(reach.path, tmp_path / "b")], engine="spark", progress=False)
    with pytest.raises(LearnError, match="goes with --engine ray"):
        run_sweep([_config(reach.path, tmp_path / "c")], address="127.0.0.1:6379", progress=False)


def test_a_sweep_runs_the_online_phase_of_a_sim_target_and_refuses_a_robot_one(reach, tmp_path):
    online = _config(reach.path, tmp_path / "online", online="sim:reach2d", steps=10, online_steps=40,
                     eval_every=-1, online_eval_every=0)
    robot = _config(reach.path, tmp_path / "robot", online="robot", steps=10)
    rows = run_sweep([online, robot], progress=False)
    assert rows[0]["online"]["env_steps"] >= 40 and rows[0]["online"]["episodes"] == 2, rows[0]  # whole episodes
    assert "robot-stack train --online robot" in rows[1]["error"]
