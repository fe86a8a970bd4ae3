"""`robot-stack export RUN`: the run's actor in ONNX with normalisation and command scaling inside the graph,
checked against the torch actor on real dataset frames. Real runs (robot-stack train, 20 updates on a
reach2d dataset collected in MuJoCo), real onnx and onnxruntime."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime
import pytest

from robot_stack.cli.main import main as cli
from robot_stack.deploy.card import raw_state, read_card
from robot_stack.deploy.export import PARITY_FRAMES, export_run
from robot_stack.errors import DeployError
from robot_stack.learn.evaluate import PolicyRunner
from robot_stack.learn.observations import env_key
from robot_stack.learn.trainer import load_policy


def _session(path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _frames(dataset, names, index):
    return {name: np.stack([dataset.frames(name, int(i), int(i) + 1)[0] for i in index]) for name in names}


def _torch_commands(run_dir, values):
    """The run's actor on the trainer's evaluation path, one observation at a time, float64 [N, A]."""
    algorithm, spec, _ = load_policy(run_dir)
    runner = PolicyRunner(algorithm.act, spec, "cpu")
    count = len(next(iter(values.values())))
    return np.stack([runner({env_key(n): v[i] for n, v in values.items()}) for i in range(count)])


@pytest.mark.parametrize("algo", ["bc", "td3bc", "iql", "cql"])
def test_every_algorithm_exports_its_actor_with_normalisation_and_scaling_in_the_graph(reach2d_runs, tmp_path, algo):
    run_dir = reach2d_runs(algo)
    dataset = reach2d_runs.dataset
    out = tmp_path / f"{algo}.onnx"
    assert cli(["export", str(run_dir), "--out", str(out)]) == 0
    card = read_card(out)
    parity = card.data["parity"]
    assert parity["observations"] == min(PARITY_FRAMES, dataset.n_frames) and parity["source"] == "dataset frames"
    assert parity["max_abs_error"] <= 1e-4 and parity["cosine"] > 0.9999

    model = onnx.load(out)
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    session = _session(out)
    assert [i.name for i in session.get_inputs()] == ["state"] and session.get_outputs()[0].name == "command"
    assert isinstance(session.get_inputs()[0].shape[0], str)  # the dynamic batch axis
    # Raw recorded frames in (no normalisation outside the graph), robot commands out, any batch size.
    index = np.arange(5, dataset.n_frames, 7)
    values = _frames(dataset, card.spec.state, index)
    command = session.run(["command"], {"state": raw_state(card.spec, values)})[0]
    assert command.shape == (len(index), 2) and command.dtype == np.float32
    assert np.abs(command - _torch_commands(run_dir, values)).max() <= 1e-4
    low, high = np.asarray(card.command["low"]), np.asarray(card.command["high"])
    assert np.all(command >= low) and np.all(command <= high)
    single = session.run(["command"], {"state": raw_state(card.spec, {n: v[:1] for n, v in values.items()})})[0]
    assert np.allclose(single, command[:1], atol=1e-6)


@pytest.mark.parametrize("algo", ["bc", "td3bc", "iql", "cql"])
def test_an_image_policy_carries_its_encoder_and_takes_camera_frames_as_uint8(reach2d_runs, tmp_path, algo):
    steps = "4" if algo == "bc" else "2"  # a CNN update is slow on the CPU; bc's run is shared with test_deploy_card
    run_dir = reach2d_runs(algo, "--images", "image.top", "--steps", steps)
    dataset = reach2d_runs.dataset
    out = tmp_path / "image.onnx"
    card = export_run(run_dir, out)
    assert card.inputs == {"state": [18], "image.top": [32, 32, 3]}
    assert card.data["parity"]["max_abs_error"] <= 1e-4
    session = _session(out)
    inputs = {i.name: i for i in session.get_inputs()}
    assert inputs["image.top"].type == "tensor(uint8)" and inputs["image.top"].shape[1:] == [32, 32, 3]
    index = np.arange(0, dataset.n_frames, 9)
    values = _frames(dataset, [*card.spec.state, "image.top"], index)
    feeds = {"state": raw_state(card.spec, values), "image.top": values["image.top"]}
    command = session.run(["command"], feeds)[0]
    assert np.abs(command - _torch_commands(run_dir, values)).max() <= 1e-4
    # The camera goes through the encoder in the graph: other pixels, another command.
    dark = session.run(["command"], feeds | {"image.top": np.zeros_like(values["image.top"])})[0]
    assert np.abs(dark - command).max() > 1e-3


def test_export_goes_to_models_named_after_the_run_with_its_card_beside(reach2d_runs, tmp_path, monkeypatch, capsys):
    run_dir = reach2d_runs("bc")
    monkeypatch.chdir(tmp_path)
    steps = ["sim_collect --task reach2d --episodes 8 -o d.zarr", "robot-stack train --algo bc --dataset d.zarr"]
    assert cli(["export", str(run_dir), "--reproduce", steps[0], "--reproduce", steps[1]]) == 0
    model, beside = tmp_path / "models" / f"{run_dir.name}.onnx", tmp_path / "models" / f"{run_dir.name}.json"
    assert model.is_file() and beside.is_file()
    assert json.loads(beside.read_text())["name"] == run_dir.name
    assert read_card(model).data["reproduce"] == steps  # in the model itself, in order
    assert f"models/{run_dir.name}.onnx" in capsys.readouterr().out
    assert cli(["model", "info", str(model)]) == 0
    info = capsys.readouterr().out
    assert f"1. {steps[0]}" in info and f"2. {steps[1]}" in info


def test_an_export_above_the_parity_tolerance_is_refused_and_writes_nothing(reach2d_runs, tmp_path):
    run_dir = reach2d_runs("td3bc")
    error = export_run(run_dir, tmp_path / "first.onnx").data["parity"]["max_abs_error"]
    assert error > 0  # float32 normalisation in the graph vs float64 in torch's path: a real difference to refuse
    out = tmp_path / "refused" / "model.onnx"
    with pytest.raises(DeployError, match=r"refused: onnxruntime's commands differ .* nothing was written"):
        export_run(run_dir, out, tolerance=error / 2)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_a_checkpoint_of_the_run_can_be_exported_and_the_card_names_it(reach2d_runs, tmp_path):
    run_dir = reach2d_runs("bc")
    card = export_run(run_dir, tmp_path / "named.onnx", checkpoint="step_00000020.pt")
    assert card.data["training"]["checkpoint"] == "checkpoints/step_00000020.pt"
    assert card.data["training"]["steps"] == 20
    # The default names the step file too (latest.pt moves on when the run resumes).
    assert export_run(run_dir, tmp_path / "latest.onnx").data["training"]["checkpoint"] == "checkpoints/step_00000020.pt"


@pytest.mark.parametrize("case, message", [
    ("missing", "no run folder at"),
    ("empty", "has no checkpoint"),
    ("bad_out", "a model file ends in .onnx"),
    ("bad_checkpoint", "no checkpoint nope.pt"),
    ("no_dataset", "its dataset is needed for the parity check on real frames: no dataset at"),
])
def test_runs_that_cannot_be_exported_are_one_line_errors(reach2d_runs, tmp_path, capsys, case, message):
    run_dir = {"missing": tmp_path / "nope", "empty": tmp_path / "empty"}.get(case, reach2d_runs("bc"))
    (tmp_path / "empty").mkdir()
    if case == "no_dataset":  # the run of a dataset that is not on this machine
        run_dir = shutil.copytree(run_dir, tmp_path / "copy")
        info = json.loads((run_dir / "run.json").read_text())
        info["dataset"]["path"] = str(tmp_path / "elsewhere.zarr")
        (run_dir / "run.json").write_text(json.dumps(info))
    flags = {"bad_out": ["--out", str(tmp_path / "model.pt")], "bad_checkpoint": ["--checkpoint", "nope.pt"]}
    assert cli(["export", str(run_dir), "--out", str(tmp_path / "m.onnx"), *flags.get(case, [])]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_the_graph_runs_on_a_batch_of_one_like_the_policy_node_feeds_it(reach2d_runs, tmp_path):
    out = tmp_path / "iql.onnx"
    card = export_run(reach2d_runs("iql"), out)
    state = raw_state(card.spec, {n: np.zeros(s, np.float32) for n, s in card.spec.state.items()})
    assert state.shape == (1, 18)
    command = _session(out).run(["command"], {"state": state})[0]
    assert command.shape == (1, 2) and np.all(np.isfinite(command))


def test_a_policy_on_frozen_clip_embeddings_is_refused_for_now(reach2d_runs, tiny_clip, tmp_path, capsys):
    run_dir = reach2d_runs("bc", "--images", "image.top", "--image-encoder", f"clip:{tiny_clip['folder0']}",
                           "--steps", "2")
    assert cli(["export", str(run_dir), "--out", str(tmp_path / "clip.onnx")]) == 2
    err = capsys.readouterr().err
    assert "sees frozen CLIP embeddings (image.top)" in err and "--image-encoder cnn" in err
    assert not (tmp_path / "clip.onnx").exists()
