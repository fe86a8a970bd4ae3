"""The `progress` labeler (ReWiND-style progress model trained on the dataset itself) on a recorded reach2d
dataset with a 32x32 camera: pixels with a CNN trained from scratch (no model, no download), embeddings,
rewound clips, raw scores (never min-max per episode), seeding, and the one-line errors.
(conftest.py picks the headless MuJoCo backend before anything imports mujoco.)"""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.data import Dataset, mark_episodes
from robot_stack.errors import LabelError
from robot_stack.label.base import LabelContext
from robot_stack.label.frame_models import clip_windows
from robot_stack.label.progress import ProgressLabeler, rewound_clip
from robot_stack.sim import collect as sim_collect

CAMERA = "image.top"


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=r) / counts)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho; 0 when either side is constant (an unanswerable episode counts 0, as label eval does)."""
    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def voc(ds: Dataset, scores: np.ndarray) -> float:
    """Value-order correlation: mean Spearman of the scores against time over the successful episodes."""
    return float(np.mean([spearman(scores[ds.episode_slice(e)], np.arange(ds.episode_slice(e).stop
                                                                            - ds.episode_slice(e).start))
                          for e in np.flatnonzero(ds.success == 1)]))


def shuffled_frames(ds: Dataset, scores: np.ndarray, seed: int = 0) -> np.ndarray:
    """The baseline: the same scores with the frames of each episode in a random order."""
    rng = np.random.default_rng(seed)
    out = scores.copy()
    for e in range(ds.n_episodes):
        span = ds.episode_slice(e)
        out[span] = rng.permutation(scores[span])
    return out


def context(ds: Dataset, **config) -> LabelContext:
    return LabelContext(ds, "move the fingertip onto the target", camera=CAMERA, config=config, seed=0,
                        progress=False, log=lambda _line: None)


@pytest.fixture(scope="module")
def reach(reach_pixels) -> Dataset:
    """The shared recorded reach2d dataset with a camera (conftest.reach_pixels)."""
    return reach_pixels


@pytest.fixture(scope="module")
def pixel_run(reach):
    return ProgressLabeler().label(context(reach, input="pixels"))


def test_progress_on_pixels_rises_over_successful_episodes_beats_shuffled_frames_follows_sim_reward(reach,
                                                                                                pixel_run):
    scores = pixel_run.scores
    assert scores.shape == (reach.n_frames,) and scores.dtype == np.float32
    assert np.isfinite(scores).all() and scores.min() >= 0 and scores.max() <= 1
    assert not pixel_run.ground_truth_used
    assert pixel_run.info["episodes"]["rewound"] == 2 * (reach.success == 1).sum()
    ours, shuffled = voc(reach, scores), voc(reach, shuffled_frames(reach, scores))
    assert ours > 0.6 and ours - shuffled > 0.5, (ours, shuffled)
    sim_reward = reach.frames("sim_reward")
    ours, shuffled = spearman(scores, sim_reward), spearman(shuffled_frames(reach, scores), sim_reward)
    assert ours > 0.5 and ours - shuffled > 0.3, (ours, shuffled)


def test_progress_stays_low_on_failed_episodes_raw_not_min_max_per_episode(reach, pixel_run):
    scores = pixel_run.scores
    peak = np.array([scores[reach.episode_slice(e)].max() for e in range(reach.n_episodes)])
    success = reach.success == 1
    # Min-max per episode would bring every failed episode's peak to the successful ones' maximum.
    assert peak[~success].max() < 0.5 * peak[success].min(), peak
    finals = np.array([scores[reach.episode_slice(e).stop - 1] for e in range(reach.n_episodes)])
    assert finals[~success].max() < finals[success].min()


def test_progress_on_embeddings_and_what_each_input_needs(reach):
    """Frozen embeddings stand-in: a fixed random projection of the frames, L2-normalised (the job fills
    LabelContext.embeddings from open_clip; here no model is loaded)."""
    images = reach.frames(CAMERA).reshape(reach.n_frames, -1).astype(np.float32) / 255.0
    projection = np.random.default_rng(0).standard_normal((images.shape[1], 64)).astype(np.float32)
    embeddings = (images - images.mean(0)) @ projection
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    ctx = context(reach)
    ctx.embeddings = embeddings
    result = ProgressLabeler().label(ctx)
    assert result.info["config"]["input"] == "embeddings"
    assert voc(reach, result.scores) - voc(reach, shuffled_frames(reach, result.scores)) > 0.4
    assert (ProgressLabeler.needs_images, ProgressLabeler.needs_embeddings) == (True, True)
    assert ProgressLabeler.requirements({}) == (True, True)
    assert ProgressLabeler.requirements({"input": "pixels"}) == (True, False)


def test_progress_is_seeded(reach):
    first = ProgressLabeler().label(context(reach, input="pixels", steps=10)).scores
    again = ProgressLabeler().label(context(reach, input="pixels", steps=10)).scores
    other = context(reach, input="pixels", steps=10)
    other.seed = 1
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, ProgressLabeler().label(other).scores)


def test_rewound_clip_plays_forward_then_back_with_decreasing_targets():
    rng = np.random.default_rng(3)
    for _ in range(50):
        clip, targets = rewound_clip(100, 11, rng)
        p = int(np.argmax(clip))  # the turning point
        back = clip[p + 1:]
        assert np.array_equal(clip[:p + 1], 100 + np.arange(p + 1)) and 1 <= len(back) <= p
        assert np.array_equal(back, clip[p] - 1 - np.arange(len(back)))
        np.testing.assert_allclose(targets, (back - 100) / 10)
        assert np.all(np.diff(np.r_[p / 10, targets]) < 0)
    # Going backwards, a window's older frame is the later one in the episode: the model sees the motion reversed.
    windows = clip_windows(np.array([0, 1, 2, 3, 2, 1]), window=2, stride=1)
    assert windows.tolist() == [[0, 0], [0, 1], [1, 2], [2, 3], [3, 2], [2, 1]]


def test_progress_errors_are_one_line_that_say_what_to_do(reach, tmp_path):
    def error(ds, **config) -> str:
        with pytest.raises(LabelError) as caught:
            ProgressLabeler().label(context(ds, **config))
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
    assert "--model" in error(reach) and "input=pixels" in error(reach)
    assert "no option 'epochs'" in error(reach, input="pixels", epochs=3)
    assert "not a whole number" in error(reach, input="pixels", steps="many")
    assert "input=pixels" in error(reach, input="video")
    assert "fail_cap" in error(reach, input="pixels", fail_cap=2)
