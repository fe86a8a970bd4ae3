"""The model card: what an exported policy is, what it needs and where it came from (ARCHITECTURE.md,
"Policy artifact"; the schema is docs/deploy.md, "The card").

The card is one JSON object stored in the ONNX file's metadata (key CARD_KEY) and beside it as
``<name>.json`` (the same object plus ``onnx_sha256``). The policy node reads everything it needs from it
(inputs, command bounds and meaning, rate, max age); ``check_robot`` and ``check_swap`` say whether a card
fits a robot or can replace a running model. Nothing here needs torch: a robot's computer reads cards too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.errors import DeployError
from robot_stack.learn.observations import ObservationSpec

CARD_FORMAT = "robot_stack.model_card"
CARD_VERSION = 1
CARD_KEY = "robot_stack.model_card"
"""ONNX metadata_props key holding the card's JSON."""
REQUIRED = {"format": (), "name": (), "robot": (), "observation": ("spec", "features", "inputs", "max_age_s"),
            "command": ("names", "low", "high", "hold", "meaning", "rate_hz", "sticky"), "algorithm": (), "config": (),
            "dataset": ("path", "fingerprint", "episodes", "frames"), "reward": ("source", "label_run"),
            "training": ("steps", "run_dir", "checkpoint", "checkpoint_sha256"), "runtime": (),
            "parity": ("max_abs_error", "cosine", "observations")}
"""The card's keys, and the keys inside each that readers rely on."""


@dataclass
class ModelCard:
    """A model card's JSON object (``data``) with typed views of the parts a runtime needs."""

    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def spec(self) -> ObservationSpec:
        """The run's observation spec: state features in order, normalization, images, action bounds."""
        return ObservationSpec.from_json(self.data["observation"]["spec"])

    @property
    def rate_hz(self) -> float:
        """The control rate the policy was trained at [Hz] (the dataset's record_hz)."""
        return float(self.data["command"]["rate_hz"])

    @property
    def max_age_s(self) -> float:
        """The largest age an observation may have at a control tick before it is stale [s]."""
        return float(self.data["observation"]["max_age_s"])

    @property
    def command(self) -> dict[str, Any]:
        """{names, low, high, hold, meaning, rate_hz, sticky}: the robot command the model outputs."""
        return dict(self.data["command"])

    @property
    def robot(self) -> dict[str, Any]:
        """The training dataset's robot attribute (name, sim_task, command, command_spec)."""
        return dict(self.data["robot"])

    @property
    def inputs(self) -> dict[str, list[int]]:
        """Graph input name -> shape without the batch axis: "state" [S], "image.<cam>" [H, W, 3]."""
        return {name: list(shape) for name, shape in self.data["observation"]["inputs"].items()}

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=False)


def card_from_dict(data: Any, source: str) -> ModelCard:
    """A ModelCard from its JSON object; DeployError naming `source` when it is not a card this version reads."""
    if not isinstance(data, dict):
        raise DeployError(f"{source}: the model card is not a JSON object; re-export the model (robot-stack export RUN)")
    found = str(data.get("format", ""))
    kind, _, version = found.partition("/")
    if kind != CARD_FORMAT or not version.isdigit():
        raise DeployError(f"{source}: unknown model card format {found!r} (this robot_stack reads "
                          f"{CARD_FORMAT}/{CARD_VERSION}); re-export the model with robot-stack export RUN")
    if int(version) > CARD_VERSION:
        raise DeployError(f"{source}: model card format {found} is newer than this robot_stack reads "
                          f"({CARD_FORMAT}/{CARD_VERSION}): upgrade robot_stack on this machine")
    missing = []
    for key, inner in REQUIRED.items():
        if key not in data or (inner and not isinstance(data[key], dict)):
            missing.append(key)
        elif inner:
            missing += [f"{key}.{name}" for name in inner if name not in data[key]]
    if missing:
        raise DeployError(f"{source}: the model card lacks {', '.join(missing)}: it is damaged; re-export the model")
    return ModelCard(data)


def card_from_model(model: Any, source: str) -> ModelCard:
    """The card stored in a loaded onnx.ModelProto's metadata."""
    props = {prop.key: prop.value for prop in model.metadata_props}
    if CARD_KEY not in props:
        raise DeployError(f"{source} has no robot_stack model card in its metadata: export the model with "
                          "robot-stack export RUN (a card says what the model needs and where it came from)")
    try:
        data = json.loads(props[CARD_KEY])
    except ValueError as error:
        raise DeployError(f"{source}: its model card is not valid JSON ({error}): re-export the model") from None
    return card_from_dict(data, source)


def parse_model(model_bytes: bytes, source: str) -> Any:
    """onnx.ModelProto of `model_bytes`; DeployError when they are not an ONNX model."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(model_bytes)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise DeployError(f"{source} is not an ONNX model ({type(error).__name__}): give a .onnx file made by "
                          "robot-stack export") from None
    if not model.graph.node and not model.graph.output:
        raise DeployError(f"{source} is not an ONNX model (it holds no graph): give a .onnx file made by robot-stack export")
    return model


def load_model(path_or_bytes: str | Path | bytes) -> tuple[bytes, ModelCard]:
    """The model's bytes and its card (from the ONNX metadata), checked to be a card this version reads."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        model_bytes, source = bytes(path_or_bytes), "the model sent"
    else:
        path = Path(path_or_bytes)
        source = str(path)
        if not path.is_file():
            what = "is a folder, not a model file" if path.is_dir() else "does not exist"
            raise DeployError(f"model {path} {what}: give the path of a .onnx file made by robot-stack export")
        model_bytes = path.read_bytes()
    return model_bytes, card_from_model(parse_model(model_bytes, source), source)


def read_card(path: str | Path) -> ModelCard:
    """The card in an ONNX model file's metadata; DeployError if the file is missing, not ONNX or has no card."""
    return load_model(path)[1]


def card_path(model_path: str | Path) -> Path:
    """Where the card's JSON copy lies: beside the model, NAME.json for NAME.onnx."""
    return Path(model_path).with_suffix(".json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def raw_state(spec: ObservationSpec, values: dict[str, Any]) -> np.ndarray:
    """The graph's "state" input, float32 [B, S]: the spec's state features {name: [B, *shape]} in spec order,
    flattened and concatenated, not normalised (the graph normalises)."""
    missing = [name for name in spec.state if name not in values]
    if missing:
        raise DeployError(f"observation lacks {', '.join(missing)}: the model needs {', '.join(spec.state)}")
    if not spec.state:
        return np.zeros((1, 0), np.float32)
    parts = [np.asarray(values[name], np.float32) for name in spec.state]
    first, first_shape = next(iter(spec.state.items()))
    batch = parts[0].size // int(np.prod(first_shape, dtype=int))
    for part, (name, shape) in zip(parts, spec.state.items()):
        if part.size != batch * int(np.prod(shape, dtype=int)):
            raise DeployError(f"observation {name!r} has {part.size} values; the model needs {batch} x {shape} "
                              f"(the batch of {first!r})")
    return np.concatenate([part.reshape(batch, -1) for part in parts], axis=1)


def _shape(entry: Any) -> list[int] | None:
    shape = entry.get("shape") if isinstance(entry, dict) else getattr(entry, "shape", None)
    return None if shape is None else [int(n) for n in shape]


def check_robot(card: ModelCard, robot: dict[str, Any], features: dict[str, Any]) -> None:
    """DeployError naming every way the model does not fit this robot, or None when it fits.

    robot: the robot attribute as the recorder writes it (name, command: its meaning, command_spec: {names,
    low, high, hold}), optionally rate_hz (the control rate the robot runs the policy at). features: the robot's
    features, name -> {shape, ...} (a FeatureSpec or FeatureSource works too; a shape of None, learned from the
    first message, is not checked). Topics may differ: they are remapped, as the recorder allows.
    """
    problems = []
    model_meaning, robot_meaning = card.command.get("meaning"), robot.get("command")
    if model_meaning != robot_meaning:
        problems.append(f"command meaning is {model_meaning!r} for the model but {robot_meaning!r} on the robot")
    command = card.command
    spec = robot.get("command_spec") or {}
    size = len(command["low"])
    robot_size = len(spec.get("low") or spec.get("names") or [])
    if robot_size and robot_size != size:
        problems.append(f"action size is {size} for the model but {robot_size} on the robot")
    elif spec.get("names") and list(spec["names"]) != list(command["names"]):
        problems.append(f"command elements are {command['names']} for the model but {list(spec['names'])} on the robot")
    elif robot_size and (not np.allclose(spec.get("low", command["low"]), command["low"])
                         or not np.allclose(spec.get("high", command["high"]), command["high"])):
        problems.append(f"command bounds are {command['low']}..{command['high']} for the model but "
                        f"{spec.get('low')}..{spec.get('high')} on the robot")
    rate = robot.get("rate_hz")
    if rate is not None and not np.isclose(float(rate), card.rate_hz):
        problems.append(f"rate is {card.rate_hz:g} Hz for the model but {float(rate):g} Hz on the robot")
    wanted = {**card.spec.state, **card.spec.images}
    for name, shape in wanted.items():
        if name not in features:
            problems.append(f"observation {name!r} is missing on the robot")
            continue
        have = _shape(features[name])
        if have is not None and have != list(shape):
            problems.append(f"observation {name!r} has shape {have} on the robot but {list(shape)} for the model")
    if problems:
        raise DeployError(f"model {card.name} does not fit this robot: {'; '.join(problems)} (use a model trained "
                          "on this robot's data, or the features file the model was recorded with)")


def check_swap(old: ModelCard, new: ModelCard) -> None:
    """DeployError naming why `new` cannot replace the running `old`: its inputs, command or rate differ."""
    problems = []
    if old.inputs != new.inputs:
        problems.append(f"inputs {new.inputs} instead of {old.inputs}")
    old_spec, new_spec = old.spec, new.spec
    # In order: the state vector is the features concatenated in spec order.
    if list(old_spec.state.items()) != list(new_spec.state.items()) or old_spec.images != new_spec.images:
        problems.append(f"observation features {list(new_spec.state) + list(new_spec.images)} instead of "
                        f"{list(old_spec.state) + list(old_spec.images)}")
    for key in ("meaning", "names", "low", "high"):
        if old.command.get(key) != new.command.get(key):
            problems.append(f"command {key} {new.command.get(key)} instead of {old.command.get(key)}")
    if not np.isclose(old.rate_hz, new.rate_hz):
        problems.append(f"rate {new.rate_hz:g} Hz instead of {old.rate_hz:g} Hz")
    if problems:
        raise DeployError(f"model {new.name} cannot replace the running {old.name}: {'; '.join(problems)}; "
                          "the running model keeps control")
