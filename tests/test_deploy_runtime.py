"""OnnxPolicy (robot_stack.deploy.runtime): exported-style graphs (robot_stack.deploy.export.ExportedPolicy around a
real actor, written with its card by export.write_model) run in real onnxruntime."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from robot_stack.deploy.card import CARD_FORMAT, CARD_VERSION, ModelCard, card_path
from robot_stack.deploy.export import ExportedPolicy, write_model
from robot_stack.deploy.runtime import OnnxPolicy
from robot_stack.errors import DeployError
from robot_stack.learn.algorithms import algorithm_class
from robot_stack.learn.config import load_config
from robot_stack.learn.observations import ObservationSpec

STATE = {"joint_position": [2], "eef_pose": [7]}
EMPTY_PROVENANCE = {  # no run behind the test models: the card's provenance fields are there, empty
    "dataset": {"path": None, "fingerprint": None, "episodes": 0, "frames": 0},
    "reward": {"source": "none", "label_run": None},
    "training": {"steps": 0, "run_dir": None, "checkpoint": None, "checkpoint_sha256": None},
    "parity": {"max_abs_error": None, "cosine": None, "observations": 0},
}
COMMAND = {"names": ["dx", "dy"], "low": [-1.0, -1.0], "high": [1.0, 1.0], "hold": [0.0, 0.0],
           "meaning": "eef_delta_xy: fingertip dx, dy per control step, 1.0 = 0.02 m", "rate_hz": 20.0, "sticky": []}


def make_spec(images: dict[str, list[int]] | None = None) -> ObservationSpec:
    rng = np.random.default_rng(0)
    return ObservationSpec(state=dict(STATE), mean=rng.normal(size=9).tolist(), std=rng.uniform(0.5, 2, 9).tolist(),
                           images=images or {}, action_low=[-1.0, -1.0], action_high=[1.0, 1.0], action_names=["dx", "dy"])


def make_card(name: str, spec: ObservationSpec, inputs: dict[str, list[int]]) -> ModelCard:
    """The card export writes, with the fields the runtime reads filled in and the provenance left empty."""
    return ModelCard({
        "format": f"{CARD_FORMAT}/{CARD_VERSION}", "name": name, "robot": {"name": "test", "command": COMMAND["meaning"]},
        "observation": {"spec": spec.to_json(), "features": {}, "inputs": inputs, "max_age_s": 0.25,
                        "alignment": "latest message per topic at each control tick; older than max_age_s is stale"},
        "command": dict(COMMAND), "algorithm": "bc", "config": {}, **EMPTY_PROVENANCE,
        "runtime": {"intra_op_threads": 1, "providers": ["CPUExecutionProvider"], "inputs": list(inputs),
                    "output": "command"},
    })


def export_policy(path: Path, images: dict[str, list[int]] | None = None,
                  card_inputs: dict[str, list[int]] | None = None) -> torch.nn.Module:
    """A bc actor (2x32 MLP, CNN encoder for images) exported as export.py exports it; returns the torch graph."""
    spec = make_spec(images)
    config = load_config("bc", steps=1, device="cpu", hidden_dims=[32, 32])
    torch.manual_seed(0)
    graph = ExportedPolicy(algorithm_class("bc")(spec, config, torch.device("cpu")), spec).eval()
    names = ["state", *spec.images]
    example = (torch.zeros(2, 9), *[torch.zeros(2, *shape, dtype=torch.uint8) for shape in spec.images.values()])
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, example, buffer, input_names=names, output_names=["command"], opset_version=18,
                          dynamic_axes={name: {0: "batch"} for name in [*names, "command"]}, dynamo=False)
    inputs = card_inputs or {"state": [9], **spec.images}
    write_model(path, buffer.getvalue(), make_card(path.stem, spec, inputs))
    return graph


@pytest.fixture(scope="module")
def state_model(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    path = tmp_path_factory.mktemp("models") / "reach_state.onnx"
    return path, export_policy(path)


@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    path = tmp_path_factory.mktemp("models") / "reach_image.onnx"
    return path, export_policy(path, images={"image.front": [84, 84, 3]})


def test_state_policy_gives_the_graphs_command_as_float64(state_model) -> None:
    path, graph = state_model
    policy = OnnxPolicy(path)
    policy.warmup(n=3)
    state = np.random.default_rng(1).normal(size=9).astype(np.float32)
    with torch.no_grad():
        expected = graph(torch.from_numpy(state[None])).numpy()[0]
    for given in (state, state[None], state.astype(np.float64)):
        command = policy({"state": given})
        assert command.dtype == np.float64 and command.shape == (2,)
        np.testing.assert_allclose(command, expected, atol=1e-5)


def test_image_policy_takes_state_and_camera(image_model) -> None:
    path, graph = image_model
    policy = OnnxPolicy(path.read_bytes())  # as a model sent on /policy/load arrives
    policy.warmup(n=2)
    rng = np.random.default_rng(2)
    state = rng.normal(size=9).astype(np.float32)
    image = rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = graph(torch.from_numpy(state[None]), torch.from_numpy(image[None])).numpy()[0]
    np.testing.assert_allclose(policy({"state": state, "image.front": image}), expected, atol=1e-5)
    with pytest.raises(DeployError, match=r"input image.front is float32; model reach_image takes uint8 RGB"):
        policy({"state": state, "image.front": image.astype(np.float32) / 255})


@pytest.mark.parametrize(("inputs", "message"), [
    ({"state": np.zeros(8, np.float32)}, r"input state has shape \[8\]; model reach_state takes \[9\] \(or \[1, 9\]\)"),
    ({"state": np.zeros((2, 9), np.float32)}, r"input state has shape \[2, 9\]"),
    ({"observation": np.zeros(9, np.float32)}, r"takes inputs state; missing state; not its input observation"),
    ({"state": np.zeros(9), "image.front": np.zeros((84, 84, 3), np.uint8)}, r"not its input image.front"),
])
def test_wrong_input_name_or_shape_is_one_line(state_model, inputs, message) -> None:
    policy = OnnxPolicy(state_model[0])
    policy.warmup(n=1)
    with pytest.raises(DeployError, match=message) as error:
        policy(inputs)
    assert "\n" not in str(error.value)


def test_cpu_with_one_thread_sequential_by_default(state_model) -> None:
    policy = OnnxPolicy(state_model[0])
    options = policy.session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    assert policy.session.get_providers() == ["CPUExecutionProvider"]
    assert OnnxPolicy(state_model[0], threads=2).session.get_session_options().intra_op_num_threads == 2


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(), reason="this onnxruntime has CUDA")
def test_cuda_asked_without_cuda_is_one_line_and_no_fallback(state_model) -> None:
    with pytest.raises(DeployError, match=r"device cuda asked for model reach_state, but this onnxruntime .* has no "
                                          r"CUDA execution provider .*gpu extra.*device:=cpu") as error:
        OnnxPolicy(state_model[0], device="cuda")
    assert "\n" not in str(error.value)


def test_io_binding_with_a_batch_of_one_gives_the_same_commands(image_model) -> None:
    """The CUDA path's I/O binding, run here on the CPU buffers: same commands as session.run, call after call."""
    path, _ = image_model
    plain, bound = OnnxPolicy(path), OnnxPolicy(path, io_binding=True)
    plain.warmup(n=1)
    bound.warmup(n=1)
    rng = np.random.default_rng(3)
    for _ in range(3):
        inputs = {"state": rng.normal(size=9), "image.front": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)}
        np.testing.assert_array_equal(bound(inputs), plain(inputs))


def test_warmup_gives_its_figures_and_latency_counts_the_calls_after(state_model) -> None:
    policy = OnnxPolicy(state_model[0])
    assert policy.warmup_figures is None
    figures = policy.warmup(n=5)
    assert policy.warmup_figures == figures
    assert figures["warmup_runs"] == 5 and figures["check_runs"] > 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"] and figures["first_ms"] > 0
    assert policy.latency() == {"p50_ms": None, "p99_ms": None, "n": 0}  # warm-up is not counted
    for _ in range(7):
        policy({"state": np.zeros(9)})
    stats = policy.latency()
    assert stats["n"] == 7 and 0 < stats["p50_ms"] <= stats["p99_ms"]


def test_a_model_over_the_latency_budget_is_refused(state_model) -> None:
    policy = OnnxPolicy(state_model[0])
    with pytest.raises(DeployError, match=r"model reach_state: inference p99 .* ms after warm-up is over the budget "
                                          r"of 0.000 ms on the cpu with 1 thread\(s\)"):
        policy.warmup(n=2, budget_ms=1e-9)
    assert policy.warmup_figures is None  # not a policy that may take control


def test_a_model_file_changed_after_export_is_refused(tmp_path, state_model) -> None:
    path = tmp_path / "changed.onnx"
    model = onnx.load_model_from_string(state_model[0].read_bytes())
    model.graph.initializer[0].raw_data = bytes(len(model.graph.initializer[0].raw_data))  # zeroed weights
    path.write_bytes(model.SerializeToString())
    card = json.loads(card_path(state_model[0]).read_text())
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(DeployError, match=r"model .*changed.onnx does not match its card .*changed.json: the file's "
                                          r"sha256 is .* the model was changed after export"):
        OnnxPolicy(path)
    card_path(path).unlink()  # without the JSON copy (a model sent as bytes) only the embedded card is checked
    OnnxPolicy(path)


def test_a_graph_that_does_not_match_its_card_is_refused(tmp_path) -> None:
    path = tmp_path / "lying.onnx"
    export_policy(path, card_inputs={"state": [10]})
    with pytest.raises(DeployError, match=r"model lying does not match its card: input state is tensor\(float\) "
                                          r"\[9\] in the graph, \[10\] on the card; re-export it"):
        OnnxPolicy(path)
