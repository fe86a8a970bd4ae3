"""A training run's deterministic actor as one ONNX file with its model card (``robot-stack export RUN``).

The graph takes what the robot gives: the raw state vector float32 [B, S] (the spec's state features in
order, not normalised) and each camera as uint8 [B, H, W, 3]; it normalises ((x - mean) / std), encodes the
images, runs the actor (its mean action in [-1, 1]) and maps it onto the command bounds, so its output
``command`` float32 [B, A] is in the robot's own units. Before anything is written, the graph runs in
onnxruntime on real dataset frames next to the run's torch actor on the trainer's evaluation path
(spec.state_from -> Algorithm.act -> spec.unscale, as PolicyRunner does); an export that differs by more than
PARITY_TOLERANCE is refused and leaves no file.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robot_stack import __version__
from robot_stack.data import Dataset
from robot_stack.deploy.card import (
    CARD_FORMAT,
    CARD_KEY,
    CARD_VERSION,
    ModelCard,
    card_path,
    raw_state,
    sha256_bytes,
    sha256_file,
)
from robot_stack.errors import DatasetError, DeployError, LearnError
from robot_stack.learn.observations import ObservationSpec, env_key
from robot_stack.learn.trainer import load_checkpoint, load_policy

OPSET = 20  # the newest the TorchScript exporter writes (torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
PARITY_TOLERANCE = 1e-4
"""Largest |torch - onnxruntime| command difference an export may have, in the command's units."""
PARITY_FRAMES = 256
DEFAULT_MAX_AGE_S = 0.25
"""The recorder's default_max_age [s]: a dataset does not store each feature's max_age (its stale.* flags
are what the max age decided), so the card uses a feature's max_age_s attribute in zarr.json where one is
written, else this."""
STICKY_WORDS = ("gripper", "grip", "finger", "hand")
"""Command elements named like this hold their value while the robot holds (a gripper keeps its grasp)."""
ALIGNMENT = "latest message per topic at each control tick; older than max_age_s is stale"


def default_model_path(run_dir: str | Path) -> Path:
    """models/<run folder name>.onnx in the working folder."""
    return Path("models") / f"{Path(run_dir).resolve().name}.onnx"


def export_run(run_dir: str | Path, out: str | Path | None = None, checkpoint: str | Path | None = None,
               frames: int = PARITY_FRAMES, tolerance: float = PARITY_TOLERANCE,
               reproduce: list[str] | None = None) -> ModelCard:
    """Export a run's actor to `out` (default models/<run>.onnx) and its card beside it; returns the card.

    checkpoint: a file of the run (default its latest); frames: dataset frames the parity check runs on;
    reproduce: the commands that make the model again from nothing (the card's `reproduce`, for a model shipped
    without its dataset and run folder).
    DeployError (and no file written) when the run cannot be exported or parity exceeds `tolerance`.
    """
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else default_model_path(run_dir)
    if out.suffix != ".onnx":
        raise DeployError(f"--out {out}: a model file ends in .onnx (its card goes beside it as {out.stem}.json)")
    checkpoint_file = _checkpoint_file(run_dir, checkpoint)
    info = _run_info(run_dir)
    try:
        state = load_checkpoint(checkpoint_file, "cpu")
        algorithm, spec, _ = load_policy(checkpoint_file, "cpu")
    except LearnError as error:
        raise DeployError(f"cannot export {run_dir}: {error}") from None
    if spec.embeddings:
        raise DeployError(f"run {run_dir} sees frozen CLIP embeddings ({', '.join(spec.embeddings)}): exporting the "
                          "CLIP image model into the graph is not supported yet; train with --image-encoder cnn to deploy")
    dataset = _open_dataset(info, run_dir)
    graph = ExportedPolicy(algorithm, spec).eval()
    model_bytes = _to_onnx(graph, spec)
    observations = parity_observations(dataset, spec, frames)
    parity = measure_parity(model_bytes, algorithm, spec, observations)
    if not parity["max_abs_error"] <= tolerance:
        raise DeployError(f"export of {run_dir} refused: onnxruntime's commands differ from torch's by up to "
                          f"{parity['max_abs_error']:.3g} on {parity['observations']} dataset frames (more than "
                          f"{tolerance:g}); nothing was written")
    card = ModelCard(build_card(out.stem, run_dir, checkpoint_file, int(state["step"]), info, info["config"],
                                spec, dataset, parity) | ({"reproduce": list(reproduce)} if reproduce else {}))
    write_model(out, model_bytes, card)
    return card


def _checkpoint_file(run_dir: Path, checkpoint: str | Path | None) -> Path:
    """The checkpoint to export: `checkpoint` (a path, or a file name in RUN/checkpoints), else the run's
    latest, named by its step file (step_N.pt) where that exists, since latest.pt moves on when a run resumes."""
    if not run_dir.is_dir():
        raise DeployError(f"no run folder at {run_dir}: give a folder made by robot-stack train (runs/<name>)")
    if checkpoint is not None:
        for candidate in (Path(checkpoint), run_dir / "checkpoints" / str(checkpoint)):
            if candidate.is_file():
                return candidate
        raise DeployError(f"no checkpoint {checkpoint} (nor {run_dir / 'checkpoints' / str(checkpoint)}): "
                          f"list {run_dir / 'checkpoints'} for the run's checkpoints")
    latest = run_dir / "checkpoints" / "latest.pt"
    if not latest.is_file():
        raise DeployError(f"run {run_dir} has no checkpoint ({latest} is missing): train it first, or give --checkpoint")
    try:
        step = int(load_checkpoint(latest, "cpu")["step"])
    except LearnError as error:
        raise DeployError(f"cannot export {run_dir}: {error}") from None
    step_file = latest.with_name(f"step_{step:08d}.pt")
    return step_file if step_file.is_file() else latest


def _run_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DeployError(f"run {run_dir} has no run.json: it is not a complete robot-stack train run folder") from None
    except ValueError as error:
        raise DeployError(f"{path} is damaged ({error}): the run's provenance cannot be read") from None


def _open_dataset(info: dict[str, Any], run_dir: Path) -> Dataset:
    path = info["dataset"]["path"]
    try:
        dataset = Dataset.open(path)
    except DatasetError as error:
        raise DeployError(f"cannot export {run_dir}: its dataset is needed for the parity check on real frames: "
                          f"{error}") from None
    if dataset.n_frames == 0:
        raise DeployError(f"cannot export {run_dir}: its dataset {path} has no committed frames to check parity on")
    return dataset


class ExportedPolicy(nn.Module):
    """raw state float32 [B, S] + images uint8 [B, H, W, 3] -> command float32 [B, A] in the robot's units."""

    def __init__(self, algorithm: Any, spec: ObservationSpec) -> None:
        super().__init__()
        self.encoder, self.actor = algorithm.encoder, algorithm.actor
        self.image_names = list(spec.images)
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32))
        self.register_buffer("low", torch.tensor(spec.action_low, dtype=torch.float32))
        self.register_buffer("high", torch.tensor(spec.action_high, dtype=torch.float32))

    def forward(self, state: torch.Tensor, *images: torch.Tensor) -> torch.Tensor:
        obs = {"state": (state - self.mean) / self.std, **dict(zip(self.image_names, images))}
        action = self.actor(self.encoder(obs, augment=False)).clamp(-1.0, 1.0)
        # ObservationSpec.unscale, then the bounds again: rounding never takes a command past them.
        command = self.low + (action + 1.0) * (self.high - self.low) / 2.0
        return torch.minimum(torch.maximum(command, self.low), self.high)


def input_names(spec: ObservationSpec) -> list[str]:
    return ["state", *spec.images]


def _to_onnx(graph: Any, spec: ObservationSpec) -> bytes:
    names = input_names(spec)
    example = [torch.zeros(2, spec.state_dim, dtype=torch.float32)]
    example += [torch.zeros(2, *shape, dtype=torch.uint8) for shape in spec.images.values()]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter: the torch.export one needs onnxscript, which the deploy extra does not install.
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, tuple(example), buffer, input_names=names, output_names=["command"],
                          dynamic_axes={name: {0: "batch"} for name in [*names, "command"]},
                          opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def parity_observations(dataset: Dataset, spec: ObservationSpec, frames: int = PARITY_FRAMES) -> dict[str, np.ndarray]:
    """Up to `frames` committed frames spread over every episode (evenly spaced indices), as the sim env's
    observation keys name them: {env_key(feature): [N, *shape]} for the spec's state features and images."""
    count = min(frames, dataset.n_frames)
    index = np.unique(np.linspace(0, dataset.n_frames - 1, count).round().astype(np.int64))
    out = {}
    for name in spec.state:
        out[env_key(name)] = dataset.frames(name)[index]
    for name in spec.images:
        out[env_key(name)] = np.stack([dataset.frames(name, int(i), int(i) + 1)[0] for i in index])
    return out


def measure_parity(model_bytes: bytes, algorithm: Any, spec: ObservationSpec,
                   observations: dict[str, np.ndarray]) -> dict[str, Any]:
    """torch (the trainer's evaluation path: spec.state_from -> Algorithm.act -> spec.unscale, as PolicyRunner
    runs it, here on the whole batch) vs onnxruntime on the same observations: max absolute command difference
    and cosine similarity of the flattened commands."""
    import onnxruntime

    values = {name: observations[env_key(name)] for name in spec.state}
    tensors = {"state": torch.as_tensor(spec.state_from(values))}
    tensors |= {name: torch.as_tensor(np.ascontiguousarray(observations[env_key(name)])) for name in spec.images}
    reference = spec.unscale(algorithm.act(tensors).float().cpu().numpy())
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    feeds = {"state": raw_state_of(spec, observations)}
    feeds |= {name: np.ascontiguousarray(observations[env_key(name)], np.uint8) for name in spec.images}
    exported = session.run(["command"], feeds)[0].astype(np.float64)
    a, b = reference.reshape(-1), exported.reshape(-1)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b / norms) if norms > 0 else float(np.array_equal(a, b))
    return {"max_abs_error": float(np.max(np.abs(reference - exported))), "cosine": cosine,
            "observations": len(a) // spec.action_dim, "source": "dataset frames"}


def raw_state_of(spec: ObservationSpec, observations: dict[str, np.ndarray]) -> np.ndarray:
    """The graph's "state" input from observations keyed as the sim env names them."""
    return raw_state(spec, {name: observations[env_key(name)] for name in spec.state})


def build_card(name: str, run_dir: Path, checkpoint: Path, step: int, info: dict[str, Any], config: dict[str, Any],
               spec: ObservationSpec, dataset: Dataset, parity: dict[str, Any]) -> dict[str, Any]:
    """The card's JSON object (docs/deploy.md, "The card") for a run exported from `checkpoint`."""
    stored = _stored_features(dataset)
    features = {}
    for feature in [*spec.state, *spec.images]:
        max_age = stored.get(feature, {}).get("max_age_s", DEFAULT_MAX_AGE_S)
        features[feature] = {**dataset.features[feature].to_json(), "max_age_s": float(max_age)}
    inputs = {"state": [spec.state_dim]}
    inputs |= {image: list(shape) for image, shape in spec.images.items()}
    robot = dataset.robot
    command_spec = robot.get("command_spec") or {}
    names = spec.action_names or [f"command[{i}]" for i in range(spec.action_dim)]
    hold = command_spec.get("hold")
    reward = dict(info.get("reward") or {})
    reward_card = {"source": reward.get("source", config.get("reward")), "label_run": reward.get("label_run")}
    if "episode_outcomes" in reward:  # --reward success: the marks it came from (data mark changes them)
        reward_card["episode_outcomes"] = reward["episode_outcomes"]
    result = _result(run_dir)
    run_root = run_dir.resolve()
    return {
        "format": f"{CARD_FORMAT}/{CARD_VERSION}",
        "name": name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "robot_stack_version": __version__,
        "robot": robot,
        "observation": {"spec": spec.to_json(), "features": features, "inputs": inputs, "alignment": ALIGNMENT,
                        "max_age_s": max(entry["max_age_s"] for entry in features.values())},
        "command": {"names": names, "low": spec.action_low, "high": spec.action_high,
                    "hold": list(hold) if hold is not None and len(hold) == spec.action_dim else None,
                    "meaning": robot.get("command", ""), "rate_hz": dataset.record_hz,
                    "sticky": sticky_elements(names, command_spec, config)},
        "algorithm": config["algo"],
        "config": config,
        "dataset": {"path": str(Path(info["dataset"]["path"]).resolve()), "fingerprint": info["dataset"]["fingerprint"],
                    "episodes": info["dataset"]["episodes"], "frames": info["dataset"]["frames"]},
        "reward": reward_card,
        "training": {"steps": step, "run_dir": str(run_root),
                     "checkpoint": str(_relative(checkpoint.resolve(), run_root)),
                     "checkpoint_sha256": sha256_file(checkpoint)},
        "evaluation": result.get("evaluation") if result.get("steps") == step else None,
        "runtime": {"intra_op_threads": 1, "providers": ["CPUExecutionProvider"], "inputs": list(inputs),
                    "output": "command"},
        "parity": parity,
    }


def _stored_features(dataset: Dataset) -> dict[str, dict[str, Any]]:
    """The features entry of the dataset's zarr.json attributes as written, keys FeatureSpec does not keep included."""
    try:
        return json.loads((dataset.path / "zarr.json").read_text())["attributes"]["features"]
    except (OSError, ValueError, KeyError):  # Dataset.open read it a moment ago: then no extra keys
        return {}


def sticky_elements(names: list[str], command_spec: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Command elements that keep their value while the robot holds: the robot's command_spec sticky (indices or
    names) where it says, else gripper-like elements (STICKY_WORDS in the name, or CQL's binary_actions)."""
    if "sticky" in command_spec:
        return [names[e] if isinstance(e, int) else str(e) for e in command_spec["sticky"]]
    binary = [names[e] if isinstance(e, int) else str(e) for e in (config.get("algorithm") or {}).get("binary_actions") or []]
    return [n for n in names if n in binary or any(word in n.lower() for word in STICKY_WORDS)]


def _result(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "result.json").read_text())
    except (FileNotFoundError, ValueError):  # an interrupted run has no result: the card says evaluation null
        return {}


def _relative(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path


def write_model(out: Path, model_bytes: bytes, card: ModelCard) -> None:
    """The model with its card in the metadata, and the card's JSON beside it (onnx_sha256 added); both
    written to temporary files first, so a failure leaves neither."""
    import onnx

    model = onnx.load_model_from_string(model_bytes)
    entry = model.metadata_props.add()
    entry.key, entry.value = CARD_KEY, json.dumps(card.data)
    final = model.SerializeToString()
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = card_path(out)
    temporary = [out.with_name(f".{out.name}.tmp"), json_path.with_name(f".{json_path.name}.tmp")]
    try:
        temporary[0].write_bytes(final)
        temporary[1].write_text(json.dumps(card.data | {"onnx_sha256": sha256_bytes(final)}, indent=2) + "\n")
        os.replace(temporary[0], out)
        os.replace(temporary[1], json_path)
    finally:
        for path in temporary:
            path.unlink(missing_ok=True)
