"""`robot-stack label run|list`, the labeling job (calibration, provenance, raw scores) and the `clip` labeler.

Models are the tiny open_clip CLIPs of conftest's tiny_clip fixture (random weights, nothing downloaded): they
prove the plumbing (embeddings, text tower, VLM-RM formula, calibration, storage), not zero-shot ability.
Datasets are real Zarr stores on disk written by DatasetWriter.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import REPO
from torch.nn import functional as F

from robot_stack.cli.main import main
from robot_stack.data import Dataset, DatasetWriter, FeatureSpec
from robot_stack.label import job, labelers
from robot_stack.label.base import LabelContext, LabelResult
from robot_stack.label.clip import vlm_rm_scores
from robot_stack.learn.clip_embed import METHOD, cache_run, clip_embeddings, parse_model, weights_identity

CAMERAS = [FeatureSpec("image.agentview", "uint8", (32, 32, 3), "image"),
           FeatureSpec("image.wrist", "uint8", (32, 32, 3), "image")]
LOW_DIM = [FeatureSpec("joint_position", "float32", (2,), "state", units="rad"),
           FeatureSpec("action", "float32", (2,), "action")]


def make_dataset(path: Path, lengths: list[int], cameras: bool | list[FeatureSpec] = True,
                 states: list[np.ndarray] | None = None) -> Path:
    """Episodes of smooth random images; joint_position[:, 0] = states[i] when given (the test labeler's score)."""
    cameras = CAMERAS if cameras is True else cameras or []
    writer = DatasetWriter.create(path, robot={"name": "arm"}, record_hz=10, features=cameras + LOW_DIM)
    for index, n in enumerate(lengths):
        rng = np.random.default_rng(index)
        frames = {"joint_position": np.zeros((n, 2), np.float32), "action": np.zeros((n, 2), np.float32),
                  "timestamp": index * 100 + np.arange(n) / 10}
        if states is not None:
            frames["joint_position"][:, 0] = states[index]
        if cameras:
            for spec in cameras:
                fields = np.cumsum(np.cumsum(rng.normal(size=(n, 32, 32, 3)), axis=1), axis=2)
                frames[spec.name] = np.clip(fields * 4 + 128, 0, 255).astype(np.uint8)
        writer.append_frames(frames)
        writer.commit_episode("lift the red cube", index == 0)
    writer.close()
    return path


class JointLabeler:
    """Test labeler: raw score = joint_position[:, 0], claimed to come from ground truth (for the marker)."""

    name = "joint"
    needs_images = False
    needs_embeddings = False

    def label(self, context: LabelContext) -> LabelResult:
        return LabelResult(context.dataset.frames("joint_position")[:, 0].copy(), {"judge": "none"},
                           ground_truth_used=True)


class BrightnessLabeler:
    """Test labeler: raw score = mean pixel of the camera; with input=pixels it needs no CLIP model."""

    name = "brightness"
    needs_images = True
    needs_embeddings = True

    @classmethod
    def requirements(cls, config: dict) -> tuple[bool, bool]:
        return True, config.get("input") != "pixels"

    def label(self, context: LabelContext) -> LabelResult:
        return LabelResult(context.dataset.frames(context.camera).mean(axis=(1, 2, 3)), {"config": context.config})


@pytest.fixture
def joint_labeler(monkeypatch) -> str:
    monkeypatch.setitem(labelers.LABELERS, "joint", f"{__name__}:JointLabeler")
    return "joint"


def label(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["label", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def text_embedding(model: str, text: str) -> np.ndarray:
    """The task text's unit embedding, straight from open_clip (independent of robot_stack.label.clip)."""
    arch, _, checkpoint = model.partition(":")
    clip = open_clip.create_model(arch, pretrained=checkpoint).eval()
    with torch.no_grad():
        return F.normalize(clip.encode_text(open_clip.get_tokenizer(arch)([text])), dim=-1)[0].numpy()


# ---- the clip labeler (VLM-RM)


def test_clip_run_writes_calibrated_reward_raw_scores_and_provenance(tmp_path, tiny_clip, capsys):
    path = make_dataset(tmp_path / "d.zarr", [6, 5])
    model = tiny_clip["checkpoint0"]
    code, out, _ = label(capsys, "run", path, "--labeler", "clip", "--task", "lift the red cube", "--model", model,
                         "--camera", "agentview", "--set", "alpha=0", "--run", "c0", "--no-progress")
    assert code == 0
    assert "labeled 11 frames" in out and "--reward labels/c0" in out
    labels = Dataset.open(path).read_labels("c0")
    attrs = labels.attrs
    assert attrs["labeler"] == "clip" and attrs["model"] == model and attrs["camera"] == "image.agentview"
    assert attrs["task"] == "lift the red cube" and attrs["prompts"] == {"goal": "lift the red cube",
                                                                        "baseline": "a robot arm"}
    assert attrs["config"]["alpha"] == 0 and attrs["ground_truth_used"] is False
    assert attrs["cost"]["frames"] == 11 and attrs["dataset_fingerprint"] == Dataset.open(path).fingerprint()
    # alpha = 0 is the plain cosine of frame and task embeddings; the stored reward is one affine map of it
    cosine = clip_embeddings(Dataset.open(path), "image.agentview", model, progress=False) @ text_embedding(
        model, "lift the red cube")
    np.testing.assert_allclose(labels.raw, cosine, atol=1e-5)
    calibration = attrs["calibration"]
    assert calibration["method"] == "percentile-5-95"
    np.testing.assert_allclose(labels.reward, calibration["scale"] * cosine + calibration["offset"], atol=1e-4)
    np.testing.assert_allclose(np.percentile(labels.reward, [5, 95]), [0, 1], atol=1e-4)
    # a second run with the same model and camera reuses the cached embeddings
    assert attrs["cost"]["frames_embedded"] == 11
    assert label(capsys, "run", path, "--labeler", "clip", "--task", "open the drawer", "--model", model,
                 "--camera", "agentview", "--run", "c1", "--no-progress")[0] == 0
    assert Dataset.open(path).read_labels("c1").attrs["cost"]["frames_embedded"] == 0


def test_vlm_rm_projection_convention():
    rng = np.random.default_rng(0)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    goal, baseline, frames = unit(rng.normal(size=16)), unit(rng.normal(size=16)), unit(rng.normal(size=(9, 16)))
    np.testing.assert_allclose(vlm_rm_scores(frames, goal, baseline, 0.0), frames @ goal, atol=1e-12)
    direction = unit(goal - baseline)
    for alpha in (0.3, 1.0):
        projection = alpha * np.outer(direction, direction) + (1 - alpha) * np.eye(16)
        expected = 1 - 0.5 * np.sum(((frames - goal) @ projection.T) ** 2, axis=1)
        np.testing.assert_allclose(vlm_rm_scores(frames, goal, baseline, alpha), expected, atol=1e-12)
        # the goal itself scores highest (1), the baseline lower: reversing the sign would fail this
        at_goal, at_baseline = vlm_rm_scores(np.stack([goal, baseline]), goal, baseline, alpha)
        assert at_goal == pytest.approx(1) and at_baseline < at_goal


def test_clip_options_are_checked_and_recorded(tmp_path, tiny_clip, capsys):
    path = make_dataset(tmp_path / "d.zarr", [4])
    common = ["run", path, "--labeler", "clip", "--task", "lift the red cube", "--model", tiny_clip["folder0"],
              "--camera", "wrist", "--no-progress"]
    code, out, _ = label(capsys, *common, "--set", "alpha=0.7", "--set", "baseline=a table",
                         "--set", "template=a photo of a robot that did: {task}")
    assert code == 0
    run = out.split("labels/")[1].split()[0]
    assert run.startswith("clip-")
    attrs = Dataset.open(path).read_labels(run).attrs
    assert attrs["config"] == {"alpha": 0.7, "baseline": "a table", "template": "a photo of a robot that did: {task}"}
    assert attrs["prompts"]["goal"] == "a photo of a robot that did: lift the red cube"
    for bad, message in (("alpha=2", "alpha must be a number from 0 to 1"), ("colour=red", "has no option 'colour'")):
        code, _, err = label(capsys, *common, "--set", bad)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


# ---- calibration and listing


def test_calibration_is_one_map_for_the_whole_dataset(tmp_path, joint_labeler, capsys):
    # episode 0 succeeds (scores rise 0 -> 1); episode 1 fails with scores that stay low
    states = [np.linspace(0, 1, 20), np.linspace(0, 0.1, 20)]
    path = make_dataset(tmp_path / "d.zarr", [20, 20], cameras=False, states=states)
    code, _, _ = label(capsys, "run", path, "--labeler", "joint", "--task", "lift", "--run", "j", "--no-progress")
    assert code == 0
    labels = Dataset.open(path).read_labels("j")
    failed = labels.reward[20:]
    assert failed.max() < 0.2, "a failed episode's rewards were stretched as if it had completed the task"
    assert labels.reward[19] > 0.9
    np.testing.assert_allclose(labels.raw, np.concatenate(states), atol=1e-6)
    code, _, _ = label(capsys, "run", path, "--labeler", "joint", "--task", "lift", "--run", "j2", "--no-progress",
                       "--calibration", "none")
    np.testing.assert_allclose(Dataset.open(path).read_labels("j2").reward, np.concatenate(states), atol=1e-6)


def test_label_list_shows_provenance_and_ground_truth_marker(tmp_path, tiny_clip, joint_labeler, capsys):
    path = make_dataset(tmp_path / "d.zarr", [5], states=[np.linspace(0, 1, 5)])
    assert label(capsys, "run", path, "--labeler", "clip", "--task", "lift the red cube", "--run", "vlm",
                 "--model", tiny_clip["checkpoint0"], "--camera", "agentview", "--no-progress")[0] == 0
    assert label(capsys, "run", path, "--labeler", "joint", "--task", "lift", "--run", "oracle", "--no-progress")[0] == 0
    code, out, _ = label(capsys, "list", path)
    assert code == 0
    oracle, vlm = out.split("\nvlm")  # runs are listed by name
    assert "labeler clip" in vlm and tiny_clip["checkpoint0"] in vlm and "lift the red cube" in vlm
    assert "percentile-5-95" in vlm and "GROUND TRUTH" not in vlm
    assert "GROUND TRUTH" in oracle.splitlines()[0] and "judge none" in oracle
    # the embedding cache lives in labels/ but is no reward run
    rows = json.loads(label(capsys, "list", path, "--json")[1])
    assert [row["run"] for row in rows] == ["oracle", "vlm"]
    assert [row["ground_truth_used"] for row in rows] == [True, False]
    assert rows[1]["calibration"]["method"] == "percentile-5-95" and rows[1]["created"]


# ---- bad input: one line, exit 2, before any work


def test_bad_requests_are_one_line_errors(tmp_path, tiny_clip, capsys):
    path = make_dataset(tmp_path / "d.zarr", [4])
    blind = make_dataset(tmp_path / "blind.zarr", [4], cameras=False)
    (tmp_path / "no_config").mkdir()
    model = tiny_clip["checkpoint0"]
    base = ["run", path, "--task", "lift the red cube", "--model", model, "--no-progress"]
    assert label(capsys, *base, "--labeler", "clip", "--camera", "agentview", "--run", "taken")[0] == 0
    cases = [
        (["run", path, "--labeler", "vlm", "--task", "lift"], "unknown labeler 'vlm': use one of clip, preference"),
        ([*base, "--labeler", "clip", "--camera", "front"], "no camera 'front': its cameras are agentview (image.agentview), wrist (image.wrist)"),
        ([*base, "--labeler", "clip"], "has 2 cameras: choose one with --camera (agentview (image.agentview), wrist (image.wrist))"),
        (["run", blind, "--labeler", "clip", "--task", "lift", "--model", model], "has no camera images"),
        (["run", path, "--labeler", "clip", "--task", "  ", "--model", model, "--camera", "wrist"], "the task is empty"),
        (["run", path, "--labeler", "clip", "--task", "lift", "--camera", "wrist", "--model", str(tmp_path / "no_config")],
         "has no open_clip_config.json"),
        (["run", path, "--labeler", "clip", "--task", "lift", "--camera", "wrist", "--model", "ViT-B-32",
          "--pretrained", "no-such-tag"], "open_clip has no pretrained tag 'no-such-tag' for ViT-B-32"),
        (["run", path, "--labeler", "clip", "--task", "lift", "--camera", "wrist", "--pretrained", "openai"],
         "--pretrained openai needs --model ARCH"),
        ([*base, "--labeler", "clip", "--camera", "agentview", "--run", "taken"],
         "already has label run 'taken': choose another --run name, or pass --overwrite"),
    ]
    for argv, message in cases:
        code, _, err = label(capsys, *argv)
        assert code == 2, argv
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert Dataset.open(path).label_runs() == ["taken"]
    assert label(capsys, *base, "--labeler", "clip", "--camera", "agentview", "--run", "taken", "--overwrite")[0] == 0


def test_a_labeler_on_pixels_needs_no_model(tmp_path, capsys, monkeypatch):
    path = make_dataset(tmp_path / "d.zarr", [4, 3], cameras=CAMERAS[:1])
    monkeypatch.setitem(labelers.LABELERS, "brightness", f"{__name__}:BrightnessLabeler")
    code, _, err = label(capsys, "run", path, "--labeler", "brightness", "--task", "lift")
    assert code == 2 and "embeds frames with CLIP: give --model" in err
    assert label(capsys, "run", path, "--labeler", "brightness", "--task", "lift", "--set", "input=pixels",
                 "--run", "b")[0] == 0
    labels = Dataset.open(path).read_labels("b")
    assert labels.attrs["camera"] == "image.agentview" and labels.attrs["model"] is None
    np.testing.assert_allclose(labels.raw, Dataset.open(path).frames("image.agentview").mean(axis=(1, 2, 3)), rtol=1e-6)


def test_a_labeler_not_in_this_install_is_one_line(tmp_path, capsys, monkeypatch):
    path = make_dataset(tmp_path / "d.zarr", [3], cameras=False)
    monkeypatch.setitem(labelers.LABELERS, "future", "robot_stack.label.not_written_yet:Future")
    code, _, err = label(capsys, "run", path, "--labeler", "future", "--task", "lift")
    assert code == 2 and "labeler 'future' is not available" in err and "clip" in err


# ---- resumability


def test_a_killed_job_rerun_embeds_only_what_was_not_saved_and_gives_the_same_labels(tmp_path, tiny_clip, capsys):
    lengths, save_every = [200, 250, 150], 64
    path = make_dataset(tmp_path / "d.zarr", lengths, cameras=CAMERAS[1:])
    shutil.copytree(path, tmp_path / "reference.zarr")
    command = [sys.executable, "-m", "robot_stack.cli.main", "label", "run", str(path), "--labeler", "clip",
               "--task", "lift the red cube", "--model", tiny_clip["folder0"], "--camera", "image.wrist",
               "--run", "r", "--no-progress", "--batch-size", "16", "--save-every", str(save_every)]
    saves = random.Random().randint(1, 3)  # killed after one of the first saved blocks of frames, long before the end
    job = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = 0
    for line in job.stderr:
        seen += "(saved)" in line
        if seen == saves:
            job.kill()
            break
    job.wait(timeout=60)
    job.stderr.close()
    assert job.returncode == -signal.SIGKILL and Dataset.open(path).label_runs() == []
    code, _, err = label(capsys, *command[4:])  # the same command again (in this process)
    assert code == 0
    assert f"{saves * save_every} of {sum(lengths)} frames were embedded by an earlier" in err
    resumed = Dataset.open(path).read_labels("r")
    assert resumed.attrs["cost"]["frames_embedded"] == sum(lengths) - saves * save_every
    assert resumed.attrs["model"] == tiny_clip["folder0"]
    assert Dataset.open(path).label_runs() == ["r"]
    assert list(Dataset.open(path).label_arrays()) == [cache_run("image.wrist", tiny_clip["folder0"])]  # partial saves gone
    assert label(capsys, *command[4:5], tmp_path / "reference.zarr", *command[6:])[0] == 0
    reference = Dataset.open(tmp_path / "reference.zarr").read_labels("r")
    assert reference.attrs["cost"]["frames_embedded"] == sum(lengths)
    np.testing.assert_allclose(resumed.raw, reference.raw, atol=1e-6)
    np.testing.assert_allclose(resumed.reward, reference.reward, atol=1e-5)


def test_saved_embeddings_of_other_data_are_not_resumed(tmp_path, tiny_clip, capsys):
    path = make_dataset(tmp_path / "d.zarr", [6, 5], cameras=CAMERAS[:1])
    model = tiny_clip["checkpoint0"]
    ds = Dataset.open(path)
    cache = cache_run("image.agentview", model)
    key = {"model": model, "feature": "image.agentview", "weights": weights_identity(parse_model(model)),
           "method": METHOD, "dataset_fingerprint": "recorded-before-an-episode-was-added", "n_frames": 11}
    job._save_segment(ds, cache, key, 0, np.zeros((8, 16), np.float32))  # what a killed job left, on other data
    code, _, err = label(capsys, "run", path, "--labeler", "clip", "--task", "lift", "--model", model,
                         "--set", "alpha=0", "--run", "r", "--no-progress")
    assert code == 0 and "resuming" not in err
    labels = Dataset.open(path).read_labels("r")
    assert labels.attrs["cost"]["frames_embedded"] == 11
    np.testing.assert_allclose(labels.raw, clip_embeddings(Dataset.open(path), "image.agentview", model,
                                                           progress=False) @ text_embedding(model, "lift"), atol=1e-5)
