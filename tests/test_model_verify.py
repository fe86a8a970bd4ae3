"""`robot-stack model verify MODEL`: the provenance chain of an exported model, one line per link, holds /
missing / BROKEN, exit 0 only when every link holds. Real datasets collected in MuJoCo, real training runs
(robot-stack train), real exports; what changes after export is changed for real (an appended episode, a
relabelled run, an edited checkpoint, a moved run folder)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from robot_stack.sim.collect import collect

from robot_stack.cli.main import main as cli


def _train(dataset, out, algo, *flags):
    assert cli(["train", "--algo", algo, "--dataset", str(dataset), "--steps", "20", "--batch-size", "16",
                "--eval-every", "-1", "--device", "cpu", "--out", str(out), "--no-progress",
                "--set", "hidden_dims=[16]", *flags]) == 0


LINKS = ("model", "config", "checkpoint", "dataset", "reward")
"""The links in the order verify prints them."""


def _verify(capsys, *args):
    """Exit status, {link: its printed line} (LINKS order) and the summary line."""
    capsys.readouterr()  # what training and export printed before
    code = cli(["model", "verify", *map(str, args)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(LINKS) + 1
    return code, dict(zip(LINKS, lines)), lines[-1]


def _status(links, link):
    return links[link].split()[0]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """IQL trained on a label run of a 3-episode reach2d dataset, exported: (model, run folder, dataset)."""
    folder = tmp_path_factory.mktemp("verify")
    dataset = collect("reach2d", folder / "reach2d.zarr", 3, mix={"expert": 1.0}, seed=1, progress=False)
    reward = np.linspace(0, 1, dataset.n_frames, dtype=np.float32)
    dataset.write_labels("progress_test", reward, {"labeler": "test", "model": "none", "prompt": "reach"})
    _train(dataset.path, folder / "run", "iql", "--reward", "labels/progress_test")
    model = folder / "models" / "iql.onnx"
    assert cli(["export", str(folder / "run"), "--out", str(model)]) == 0
    return model, folder / "run", dataset.path


def test_a_fresh_export_holds_every_link(labelled, capsys):
    model, _, dataset_path = labelled
    from robot_stack.data import Dataset
    from robot_stack.deploy.card import read_card

    label_run = Dataset.open(dataset_path).read_labels("progress_test").attrs
    assert read_card(model).data["reward"] == {"source": "labels/progress_test", "label_run": label_run}
    code, links, summary = _verify(capsys, model)
    assert code == 0 and summary == "5 of 5 links hold: the model's provenance is complete"
    assert [line.split()[0] for line in links.values()] == ["holds"] * 5
    assert "reward ↔ label run" in links["reward"] and "label run 'progress_test': labeler test" in links["reward"]
    assert cli(["model", "verify", str(model), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["holds"] is True and [link["status"] for link in report["links"]] == ["holds"] * 5
    assert [link["link"] for link in report["links"]] == ["model file ↔ card", "card ↔ run config", "card ↔ checkpoint",
                                                          "run ↔ dataset", "reward ↔ label run"]


def test_a_dataset_changed_after_training_is_broken_and_a_missing_run_folder_is_missing(tmp_path, capsys):
    dataset = collect("reach2d", tmp_path / "reach2d.zarr", 2, mix={"expert": 1.0}, seed=2, progress=False)
    _train(dataset.path, tmp_path / "run", "bc", "--reward", "none")
    model = tmp_path / "bc.onnx"
    assert cli(["export", str(tmp_path / "run"), "--out", str(model)]) == 0
    assert _verify(capsys, model)[0] == 0

    collect("reach2d", dataset.path, 1, mix={"expert": 1.0}, seed=9, append=True, progress=False)
    code, links, summary = _verify(capsys, model)
    assert code == 1 and _status(links, "dataset") == "BROKEN"
    assert "changed after training" in links["dataset"] and "3 episodes now, 2 then" in links["dataset"]
    assert "-> the model was trained on other data: retrain" in links["dataset"]
    assert [_status(links, link) for link in ("model", "config", "checkpoint", "reward")] == ["holds"] * 4
    assert summary == "4 of 5 links hold, 1 BROKEN: do not deploy this model until every link holds"

    (tmp_path / "run").rename(tmp_path / "moved")  # a model shipped without its run folder
    code, links, summary = _verify(capsys, model)
    assert code == 1 and _status(links, "config") == _status(links, "checkpoint") == "missing"
    assert "is not on this machine -> copy the run folder" in links["config"] and "give --run DIR" in links["config"]
    assert summary == "2 of 5 links hold, 2 missing, 1 BROKEN: do not deploy this model until every link holds"
    # Found where it was copied to: those links hold again.
    code, report = cli(["model", "verify", str(model), "--run", str(tmp_path / "moved"), "--json"]), \
        json.loads(capsys.readouterr().out)
    assert [link["status"] for link in report["links"]] == ["holds", "holds", "holds", "BROKEN", "holds"]


def test_a_relabelled_reward_run_is_broken(labelled, tmp_path, capsys):
    model, _, dataset_path = labelled
    copy = tmp_path / "copy.zarr"
    shutil.copytree(dataset_path, copy)
    from robot_stack.data import Dataset

    relabelled = Dataset.open(copy)
    relabelled.write_labels("progress_test", np.zeros(relabelled.n_frames, np.float32),
                            {"labeler": "other", "model": "none"}, overwrite=True)
    code, links, _summary = _verify(capsys, model, "--dataset", copy)
    assert code == 1 and _status(links, "dataset") == "holds"  # labels are beside the data, not part of it
    assert _status(links, "reward") == "BROKEN" and "label run 'progress_test' changed after training" in links["reward"]
    assert "labeler: 'test' in the card, 'other' now" in links["reward"]


def test_a_model_file_edited_or_shipped_without_its_card_json(labelled, tmp_path, capsys):
    model, _, _ = labelled
    edited = tmp_path / "iql.onnx"
    loaded = onnx.load(model)
    entry = loaded.metadata_props.add()
    entry.key, entry.value = "note", "edited after export"
    onnx.save(loaded, edited)
    shutil.copy(model.with_suffix(".json"), tmp_path / "iql.json")
    code, links, _ = _verify(capsys, edited)
    assert code == 1 and _status(links, "model") == "BROKEN" and "changed after export" in links["model"]

    alone = tmp_path / "alone" / "iql.onnx"
    alone.parent.mkdir()
    shutil.copy(model, alone)
    code, links, _ = _verify(capsys, alone)
    assert code == 1 and _status(links, "model") == "missing" and "iql.json is not beside the model" in links["model"]


def test_a_run_resumed_or_a_checkpoint_changed_after_export_is_broken(labelled, tmp_path, capsys):
    model, run_dir, _ = labelled
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    checkpoint = next((copy / "checkpoints").glob("step_*.pt"))
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
    code, report = cli(["model", "verify", str(model), "--run", str(copy), "--json"]), json.loads(capsys.readouterr().out)
    statuses = {link["link"]: link for link in report["links"]}
    assert code == 1 and statuses["card ↔ checkpoint"]["status"] == "BROKEN"
    assert statuses["card ↔ run config"]["status"] == "holds"

    (copy / "config.yaml").write_text((copy / "config.yaml").read_text().replace("steps: 20", "steps: 40"))
    code, links, _ = _verify(capsys, model, "--run", copy)
    assert code == 1 and _status(links, "config") == "BROKEN" and "steps: 20 in the card, 40 now" in links["config"]


def test_success_marks_changed_after_training_are_broken(reach2d_runs, tmp_path, capsys):
    from robot_stack.data import mark_episodes

    model = tmp_path / "success.onnx"
    assert cli(["export", str(reach2d_runs("iql", "--reward", "success")), "--out", str(model)]) == 0
    copy = tmp_path / "copy.zarr"
    shutil.copytree(reach2d_runs.dataset.path, copy)
    assert _verify(capsys, model, "--dataset", copy)[0] == 0
    mark_episodes(copy, [1], success=False, by="reviewer")  # the marks change the rewards, not the fingerprint
    code, links, _ = _verify(capsys, model, "--dataset", copy)
    assert code == 1 and _status(links, "dataset") == "holds" and _status(links, "reward") == "BROKEN"
    assert "success marks changed after training (episodes [1])" in links["reward"]
