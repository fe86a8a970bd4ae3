"""The `success` labeler (RoboFuME-style success classifier trained on the dataset itself) on a recorded
reach2d dataset with a 32x32 camera: pixels (a CNN from scratch, no download), given per-frame labels,
the threshold chosen on held-out episodes, raw scores, and the one-line errors.
(conftest.py picks the headless MuJoCo backend before anything imports mujoco.)"""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.data import Dataset, mark_episodes
from robot_stack.errors import LabelError
from robot_stack.label.base import LabelContext
from robot_stack.label.success import SuccessLabeler, choose_threshold
from robot_stack.sim import collect as sim_collect

CAMERA = "image.top"


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive frame scores above a negative one (ties count half)."""
    pos, neg = scores[positive][:, None], scores[~positive][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def shuffled_frames(ds: Dataset, scores: np.ndarray, seed: int = 0) -> np.ndarray:
    """The baseline: the same scores with the frames of each episode in a random order."""
    rng = np.random.default_rng(seed)
    out = scores.copy()
    for e in range(ds.n_episodes):
        span = ds.episode_slice(e)
        out[span] = rng.permutation(scores[span])
    return out


def context(ds: Dataset, embeddings: np.ndarray | None = None, **config) -> LabelContext:
    return LabelContext(ds, "move the fingertip onto the target", camera=CAMERA, embeddings=embeddings,
                        config=config, seed=0, progress=False, log=lambda _line: None)


def projected(ds: Dataset) -> np.ndarray:
    """Frozen embeddings stand-in: a fixed random projection of the frames, L2-normalised [n_frames, 64]."""
    images = ds.frames(CAMERA).reshape(ds.n_frames, -1).astype(np.float32) / 255.0
    embeddings = (images - images.mean(0)) @ np.random.default_rng(0).standard_normal((images.shape[1], 64))
    return (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def reach(reach_pixels) -> Dataset:
    """The shared recorded reach2d dataset with a camera (conftest.reach_pixels)."""
    return reach_pixels


def test_success_on_pixels_detects_sim_success_with_a_held_out_threshold(reach):
    result = SuccessLabeler().label(context(reach, input="pixels"))
    scores, info = result.scores, result.info
    assert scores.shape == (reach.n_frames,) and scores.dtype == np.float32
    assert np.isfinite(scores).all() and not result.ground_truth_used
    sim_success = reach.frames("sim_success").astype(bool)
    shuffled = shuffled_frames(reach, scores)
    assert auc(scores, sim_success) > 0.8 and auc(scores, sim_success) - auc(shuffled, sim_success) > 0.15
    # Within successful episodes the baseline keeps no episode-level cue: which frames are the success ones.
    success = reach.success == 1
    within = np.isin(reach.episode_of(np.arange(reach.n_frames)), np.flatnonzero(success))
    ours, baseline = auc(scores[within], sim_success[within]), auc(shuffled[within], sim_success[within])
    assert ours - baseline > 0.2, (ours, baseline)
    assert 0 < info["threshold"] < 1 and info["threshold_on"] == "held-out episodes"
    held = info["heldout_episodes"]
    assert held and (reach.success[held] == 1).any() and (reach.success[held] == 0).any()
    assert all(0 <= value <= 1 for value in info["at_threshold"].values())
    # Raw P(success), never min-max per episode: failed episodes stay below where successful ones end.
    peak = np.array([scores[reach.episode_slice(e)].max() for e in range(reach.n_episodes)])
    assert peak[~success].max() < peak[success].max(), peak
    finals = np.concatenate([scores[reach.episode_slice(e)][-5:] for e in np.flatnonzero(success)])
    assert scores[~within].mean() < 0.25 * finals.mean()

def test_success_from_given_frame_labels_says_it_used_ground_truth(reach):
    result = SuccessLabeler().label(context(reach, projected(reach), labels="sim_success"))
    assert result.ground_truth_used and result.info["config"]["labels"] == "sim_success"
    sim_success = reach.frames("sim_success").astype(bool)
    assert auc(result.scores, sim_success) > 0.9
    assert 0 < result.info["threshold"] < 1
    assert (SuccessLabeler.requirements({}), SuccessLabeler.requirements({"input": "pixels"})) == ((True, True),
                                                                                                   (True, False))


def test_choose_threshold_maximises_f1_or_balanced_accuracy_between_scores():
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.1])
    positive = np.array([True, True, True, False, False, False, False])
    threshold, stats = choose_threshold(scores, positive)
    assert threshold == pytest.approx(0.55) and stats["f1"] == 1 and stats["precision"] == 1
    # A rare positive sits below three negatives: F1 stops above them, balanced accuracy reaches down to it.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    positive = np.isin(np.arange(10), [0, 4])
    by_f1, stats = choose_threshold(scores, positive, "f1")
    assert by_f1 == pytest.approx(0.85) and stats["f1"] == pytest.approx(2 / 3)
    by_balanced, stats = choose_threshold(scores, positive, "balanced_accuracy")
    assert by_balanced == pytest.approx(0.45) and stats["balanced_accuracy"] == pytest.approx(0.5 * (1 + 5 / 8))
    # Equal scores are one cut: never called a success on one frame and not on its twin.
    threshold, _ = choose_threshold(np.array([0.6, 0.6, 0.2]), np.array([True, False, False]))
    assert threshold == pytest.approx(0.4)


def test_one_successful_episode_chooses_the_threshold_on_the_training_episodes(reach, tmp_path):
    failures = [int(e) for e in np.flatnonzero(reach.success == 1)[1:]]
    path = tmp_path / "one.zarr"
    sim_collect.collect("reach2d", path, 12, mix={"expert": 0.5, "medium": 0.25, "random": 0.25}, seed=0,
                        cameras=["top:32x32"], progress=False)
    mark_episodes(path, failures, success=False, by="test")
    ds = Dataset.open(path)
    result = SuccessLabeler().label(context(ds, projected(ds), steps=100))
    assert result.info["threshold_on"].startswith("training episodes")
    assert 0 < result.info["threshold"] < 1


def test_success_errors_are_one_line_that_say_what_to_do(reach, tmp_path):
    def error(ds, embeddings=None, **config) -> str:
        with pytest.raises(LabelError) as caught:
            SuccessLabeler().label(context(ds, embeddings, **config))
        assert "\n" not in str(caught.value)
        return str(caught.value)

    # Expert episodes succeed; an operator marks them failed, and the marks are what counts.
    path = tmp_path / "failed.zarr"
    ds = sim_collect.collect("reach2d", path, 2, seed=0, cameras=["top:16x16"], progress=False)
    assert (ds.success == 1).all()
    mark_episodes(path, [0, 1], success=False, by="test")
    assert f"robot-stack data mark {path} EPISODES success" in error(Dataset.open(path), input="pixels")
    blind = sim_collect.collect("reach2d", tmp_path / "blind.zarr", 2, seed=0, horizon=5, progress=False)
    assert "has none" in error(blind, input="pixels") and "--cameras" in error(blind, input="pixels")
    assert "--model" in error(reach)
    listed = error(reach, input="pixels", labels="gripper_closed")
    assert "labels=final" in listed and "sim_success" in listed and "stale." not in listed
    assert "threshold_by" in error(reach, input="pixels", threshold_by="accuracy")
    assert "holdout" in error(reach, input="pixels", holdout=1.5)
