"""The provenance chain of an exported model, checked link by link (``robot-stack model verify``).

ONNX file ↔ its card (NAME.json's onnx_sha256, and the same card inside and beside) ↔ the run folder (its
config and dataset fingerprint as exported, the checkpoint's sha256) ↔ the dataset (Dataset.fingerprint()
now equal to the one trained on) ↔ the reward (a label run's attributes unchanged; success marks unchanged).
Each link holds, is missing (something is not on this machine: a model shipped without its run or dataset),
or is BROKEN (something changed after the model was made): the model is fit for a robot only when all hold.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from robot_stack.data import Dataset
from robot_stack.deploy.card import (
    ModelCard,
    card_path,
    load_model,
    sha256_bytes,
    sha256_file,
)
from robot_stack.errors import DatasetError

HOLDS, MISSING, BROKEN = "holds", "missing", "BROKEN"


@dataclass
class Link:
    """One link of the chain: what it joins, its status (HOLDS, MISSING or BROKEN), what was found, what to do."""

    link: str
    status: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def verify(model: str | Path, run_dir: str | Path | None = None,
           dataset: str | Path | None = None) -> tuple[ModelCard, list[Link]]:
    """The card of `model` and its chain's links, in order. run_dir / dataset: where the run folder or the
    dataset lies on this machine when not where the card says (a copy). DeployError when `model` is not a
    model with a card (nothing to verify)."""
    model_bytes, card = load_model(model)
    run = Path(run_dir) if run_dir is not None else Path(card.data["training"]["run_dir"])
    data_path = Path(dataset) if dataset is not None else Path(card.data["dataset"]["path"])
    links = [_model_link(Path(model), model_bytes, card), *_run_links(card, run)]
    opened, dataset_link = _dataset_link(card, data_path)
    links += [dataset_link, _reward_link(card, opened, data_path, dataset_link)]
    if card.data.get("reproduce"):  # a shipped model: what is not here can be made again
        again = "or make it again with the card's reproduce commands (robot-stack model info)"
        links = [replace(link, fix=f"{link.fix}; {again}" if link.fix else again) if link.status == MISSING else link
                 for link in links]
    return card, links


def _model_link(model: Path, model_bytes: bytes, card: ModelCard) -> Link:
    name = "model file ↔ card"
    beside = card_path(model)
    if not beside.is_file():
        return Link(name, MISSING, f"{beside} is not beside the model: the file's hash cannot be checked",
                    f"ship {beside.name} with {model.name} (robot-stack export writes both)")
    try:
        written = json.loads(beside.read_text())
    except (OSError, ValueError) as error:
        return Link(name, BROKEN, f"{beside} cannot be read ({error})", "re-export the model from its run")
    digest = sha256_bytes(model_bytes)
    if written.get("onnx_sha256") != digest:
        return Link(name, BROKEN, f"{model.name} has sha256 {digest[:12]}, its card says "
                    f"{str(written.get('onnx_sha256'))[:12]}: the model file changed after export",
                    "re-export the model from its run (robot-stack export RUN); never edit an exported model")
    written.pop("onnx_sha256")
    if written != card.data:
        keys = sorted(k for k in written.keys() | card.data.keys() if written.get(k) != card.data.get(k))
        return Link(name, BROKEN, f"{beside.name} differs from the card inside the model in {', '.join(keys)}",
                    f"re-export the model; never edit {beside.name}")
    return Link(name, HOLDS, f"sha256 {digest[:12]} as {beside.name} says; the card inside and beside are the same")


def _run_links(card: ModelCard, run: Path) -> list[Link]:
    training = card.data["training"]
    config_name, checkpoint_name = "card ↔ run config", "card ↔ checkpoint"
    if not run.is_dir():
        fix = f"copy the run folder to {run}, or give --run DIR where it is"
        return [Link(config_name, MISSING, f"run folder {run} is not on this machine", fix),
                Link(checkpoint_name, MISSING, f"run folder {run} is not on this machine", fix)]
    return [_config_link(config_name, card, run), _checkpoint_link(checkpoint_name, training, run)]


def _config_link(name: str, card: ModelCard, run: Path) -> Link:
    try:
        info = json.loads((run / "run.json").read_text())
        saved = yaml.safe_load((run / "config.yaml").read_text())
    except FileNotFoundError as error:
        return Link(name, MISSING, f"{run} lacks {Path(str(error.filename)).name}",
                    "copy the whole run folder, not only its checkpoints")
    except (OSError, ValueError, yaml.YAMLError) as error:
        return Link(name, BROKEN, f"{run}'s run files cannot be read ({error})", "restore the run folder from a copy")
    expected = card.data["config"]
    for source, config in (("run.json", info.get("config")), ("config.yaml", saved)):
        if config != expected:
            keys = _differing(expected, config or {})
            return Link(name, BROKEN, f"{run}/{source} has another config than the model's ({', '.join(keys)}): "
                        "the run was resumed or changed after export",
                        "re-export the run as it is now, or deploy the model only with the run it came from")
    fingerprint = (info.get("dataset") or {}).get("fingerprint")
    if fingerprint != card.data["dataset"]["fingerprint"]:
        return Link(name, BROKEN, f"{run}/run.json names dataset fingerprint {str(fingerprint)[:12]}, the card "
                    f"{card.data['dataset']['fingerprint'][:12]}: the model is not from this run",
                    "give --run the folder the model was exported from")
    return Link(name, HOLDS, f"{run}: config and dataset fingerprint as exported ({card.data['algorithm']}, "
                f"{card.data['training']['steps']} steps)")


def _checkpoint_link(name: str, training: dict[str, Any], run: Path) -> Link:
    checkpoint = run / training["checkpoint"]
    if not checkpoint.is_file():
        return Link(name, MISSING, f"checkpoint {checkpoint} is not there", "copy the run's checkpoints folder too")
    digest = sha256_file(checkpoint)
    if digest != training["checkpoint_sha256"]:
        return Link(name, BROKEN, f"{checkpoint} has sha256 {digest[:12]}, the card {training['checkpoint_sha256'][:12]}: "
                    "the checkpoint changed after export", "re-export the run, or restore the checkpoint the model came from")
    return Link(name, HOLDS, f"{training['checkpoint']} sha256 {digest[:12]} as exported")


def _dataset_link(card: ModelCard, path: Path) -> tuple[Dataset | None, Link]:
    name = "run ↔ dataset"
    trained = card.data["dataset"]
    if not path.exists():
        return None, Link(name, MISSING, f"dataset {path} is not on this machine",
                          f"copy the dataset to {path}, or give --dataset PATH where it is")
    try:
        dataset = Dataset.open(path)
        fingerprint = dataset.fingerprint()
    except DatasetError as error:
        return None, Link(name, BROKEN, f"the dataset cannot be read: {error}", "restore the dataset from a copy")
    if fingerprint != trained["fingerprint"]:
        return dataset, Link(name, BROKEN, f"{path} changed after training: fingerprint {fingerprint[:12]} now, "
                             f"{trained['fingerprint'][:12]} when trained ({dataset.n_episodes} episodes now, "
                             f"{trained['episodes']} then)",
                             "the model was trained on other data: retrain on the dataset as it is, or restore "
                             "the data it was trained on")
    return dataset, Link(name, HOLDS, f"{path}: fingerprint {fingerprint[:12]} as trained "
                         f"({trained['episodes']} episodes, {trained['frames']} frames)")


def _reward_link(card: ModelCard, dataset: Dataset | None, path: Path, dataset_link: Link) -> Link:
    reward = card.data["reward"]
    source = str(reward.get("source"))
    name = "reward ↔ label run" if source.startswith("labels/") else "reward"
    if source == "none":
        return Link(name, HOLDS, "no reward: the policy imitates the data (bc)")
    if dataset is None:
        return Link(name, MISSING, f"reward {source}: cannot be checked without a readable dataset at {path}",
                    "make the dataset link hold first")
    if source.startswith("labels/"):
        label_run = source[len("labels/"):]
        if label_run not in dataset.label_runs():
            return Link(name, MISSING, f"label run {label_run!r} is not in {path} any more",
                        f"restore labels/{label_run} in the dataset, or retrain on a label run that exists")
        attrs = json.loads(json.dumps(dataset.read_labels(label_run).attrs, default=str))
        if attrs != reward.get("label_run"):
            keys = _differing(reward.get("label_run") or {}, attrs)
            return Link(name, BROKEN, f"label run {label_run!r} changed after training ({', '.join(keys)})",
                        "retrain on the label run as it is now, or restore the one the model was trained on")
        return Link(name, HOLDS, f"label run {label_run!r}: labeler {attrs.get('labeler', '?')}, "
                    f"model {attrs.get('model', '?')}, attributes as trained")
    if "episode_outcomes" in reward:
        now = dataset.success.tolist()
        if now != reward["episode_outcomes"]:
            changed = [i for i, (a, b) in enumerate(zip(now, reward["episode_outcomes"])) if a != b]
            return Link(name, BROKEN, f"reward {source}: episodes' success marks changed after training "
                        f"(episodes {changed[:10]})", "retrain with the current marks (robot-stack data mark changed them)")
        return Link(name, HOLDS, f"reward {source}: the episodes' success marks are as trained")
    if dataset_link.status != HOLDS:  # a reward recorded with the data changed with it
        return Link(name, dataset_link.status, f"reward {source} is recorded with the data: see the dataset link",
                    dataset_link.fix)
    return Link(name, HOLDS, f"reward {source}: recorded with the data, which the dataset link covers")


def _differing(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    keys = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
    return [f"{k}: {expected.get(k)!r} in the card, {found.get(k)!r} now" for k in keys[:3]] + (
        [f"{len(keys) - 3} more"] if len(keys) > 3 else [])


def summary(links: list[Link]) -> str:
    """One line: how many links hold, are missing and are broken, and whether the model may go on a robot."""
    counts = {status: sum(link.status == status for link in links) for status in (HOLDS, MISSING, BROKEN)}
    line = f"{counts[HOLDS]} of {len(links)} links hold"
    if counts[HOLDS] == len(links):
        return line + ": the model's provenance is complete"
    parts = [f"{counts[MISSING]} missing"] if counts[MISSING] else []
    parts += [f"{counts[BROKEN]} BROKEN"] if counts[BROKEN] else []
    return f"{line}, {', '.join(parts)}: do not deploy this model until every link holds"
