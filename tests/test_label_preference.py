"""The `preference` labeler (RL-VLM-F): frame pairs asked of a judge, a Bradley-Terry reward-model ensemble
fitted to the answers, every committed frame labelled with the ensemble mean.

Datasets are real Zarr stores written by DatasetWriter; the embeddings are built by the test so that the
task progress is learnable from them (the CLIP path is robot_stack.learn.clip_embed's, tested there).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from robot_stack.data import Dataset, DatasetWriter, FeatureSpec
from robot_stack.errors import LabelError
from robot_stack.label.base import ABSTAIN, PREFER_FIRST, PREFER_SECOND, LabelContext
from robot_stack.label.bradley_terry import fit_bradley_terry
from robot_stack.label.preference import PreferenceLabeler

LENGTH = 20
SUCCESS = [True, False, True, False, True, False]
FEATURES = [
    FeatureSpec("image.front", "uint8", (16, 16, 3), "image", topic="/camera/front/image_raw"),
    FeatureSpec("sim_reward", "float32", (), "reward"),
    FeatureSpec("action", "float32", (2,), "action"),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: the networks are tiny


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    """6 episodes of 20 frames; sim_reward rises to 1 in successful ones and stalls at 0.4 in failed ones; the
    camera frame's brightness is the reward (plus noise), so a CNN can learn it too."""
    path = tmp_path_factory.mktemp("preference") / "d.zarr"
    writer = DatasetWriter.create(path, robot={"name": "arm"}, record_hz=10, features=FEATURES)
    rng = np.random.default_rng(0)
    for index, success in enumerate(SUCCESS):
        reward = np.linspace(0, 1 if success else 0.4, LENGTH).astype(np.float32)
        images = np.clip(reward[:, None, None, None] * 200 + 20 + rng.normal(0, 8, (LENGTH, 16, 16, 3)), 0, 255)
        writer.append_frames({"image.front": images.astype(np.uint8), "sim_reward": reward,
                              "action": np.zeros((LENGTH, 2), np.float32),
                              "timestamp": index * 10 + np.arange(LENGTH) / 10})
        writer.commit_episode("push", success)
    writer.close()
    return Dataset.open(path)


def progress_embeddings(reward: np.ndarray, seed: int = 0) -> np.ndarray:
    """float32 [n, 8] unit vectors: a curved code of the reward in two dimensions plus six of noise."""
    rng = np.random.default_rng(seed)
    curve = np.stack([np.cos(2 * reward), np.sin(2 * reward)], 1)
    code = np.concatenate([curve, rng.normal(0, 0.1, (len(reward), 6))], 1)
    return (code / np.linalg.norm(code, axis=1, keepdims=True)).astype(np.float32)


def label(ds: Dataset, embeddings: np.ndarray | None = None, **config):
    context = LabelContext(ds, "push the block to the goal", camera="image.front", embeddings=embeddings,
                           config=config, seed=5, log=lambda line: None)
    return PreferenceLabeler().label(context)


def test_bradley_terry_ranks_the_preferred_first_frames_higher():
    """Sign convention: answer 0 (PREFER_FIRST) means the pair's first frame gets the higher reward."""
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    pairs = np.stack(np.meshgrid(np.arange(10), np.arange(10, 20)), -1).reshape(-1, 2)  # first from 0-9, second 10-19
    for answer, sign in ((PREFER_FIRST, 1), (PREFER_SECOND, -1)):
        reward = fit_bradley_terry(x, pairs, np.full(len(pairs), answer, np.int8), ensemble=2, steps=150)
        assert reward.shape == (20,) and reward.dtype == np.float32
        assert sign * (reward[:10].mean() - reward[10:].mean()) > 1, (answer, reward)  # standardised: 2 if apart


def test_bradley_terry_leaves_abstentions_out_and_needs_one_answer():
    x = np.eye(4, dtype=np.float32)
    pairs = np.array([[0, 1], [2, 3]] * 20)
    answers = np.array([PREFER_FIRST, ABSTAIN] * 20, np.int8)
    reward = fit_bradley_terry(x, pairs, answers, ensemble=1, steps=100)
    assert reward[0] > reward[1]
    with pytest.raises(LabelError, match="abstained on every pair"):
        fit_bradley_terry(x, pairs, np.full(len(pairs), ABSTAIN, np.int8))


def test_oracle_preferences_recover_the_sim_reward(dataset):
    truth = dataset.frames("sim_reward")
    result = label(dataset, progress_embeddings(truth), judge="oracle", error_rate=0, pairs=600)
    assert result.scores.shape == (dataset.n_frames,) and np.isfinite(result.scores).all()
    assert np.corrcoef(result.scores, truth)[0, 1] > 0.95 and spearmanr(result.scores, truth)[0] > 0.95
    assert result.ground_truth_used
    info = result.info
    assert (info["judge"], info["pairs_asked"], info["ensemble"], info["calls"]) == ("oracle", 600, 3, 600)
    assert info["answered"] + info["abstained"] == 600 and info["judges"]["oracle"]["error_rate"] == 0


def test_noisy_oracle_preferences_still_rank_frames(dataset):
    truth = dataset.frames("sim_reward")
    result = label(dataset, progress_embeddings(truth), judge="oracle", error_rate=0.25, pairs=600)
    assert spearmanr(result.scores, truth)[0] > 0.85 and result.ground_truth_used


def test_time_order_preferences_rank_successful_episodes_by_progress(dataset):
    truth = dataset.frames("sim_reward")
    result = label(dataset, progress_embeddings(truth), judge="time", pairs=600)
    assert not result.ground_truth_used and result.info["abstained"] == 0  # its pairs are ones it can answer
    for episode in np.flatnonzero(dataset.success == 1):
        frames = dataset.episode_slice(episode)
        assert spearmanr(result.scores[frames], np.arange(LENGTH))[0] > 0.9
    assert spearmanr(result.scores, truth)[0] > 0.9


def test_mixed_judges_share_the_pairs_and_report_each(dataset):
    truth = dataset.frames("sim_reward")
    result = label(dataset, progress_embeddings(truth), mix="time+oracle", pairs=301, ensemble=1, steps=100)
    judges = result.info["judges"]
    assert result.info["judge"] == "time+oracle" and result.ground_truth_used
    assert (judges["time"]["calls"], judges["oracle"]["calls"]) == (151, 150)


def test_pixels_train_a_cnn_on_the_camera_frames(dataset):
    truth = dataset.frames("sim_reward")
    result = label(dataset, None, judge="oracle", pixels="true", pairs=300, ensemble=1, steps=150)
    assert result.info["input"] == "pixels" and spearmanr(result.scores, truth)[0] > 0.85


def test_the_same_seed_gives_the_same_labels(dataset):
    embeddings = progress_embeddings(dataset.frames("sim_reward"))
    first = label(dataset, embeddings, judge="oracle", error_rate=0.1, pairs=100, ensemble=1, steps=30)
    np.testing.assert_array_equal(first.scores, label(dataset, embeddings, judge="oracle", error_rate=0.1, pairs=100,
                                                      ensemble=1, steps=30).scores)


def test_bad_options_are_one_line(dataset):
    embeddings = progress_embeddings(dataset.frames("sim_reward"))
    for config, words in (({"judges": "time"}, "has no option judges"), ({"judge": "gpt"}, "unknown judge 'gpt'"),
                          ({"pairs": "many"}, "pairs='many' must be int"), ({"ensemble": 0}, "must be at least 1")):
        with pytest.raises(LabelError, match=words) as error:
            label(dataset, embeddings, **config)
        assert "\n" not in str(error.value)
    with pytest.raises(LabelError, match="give --model .* or set pixels=true"):
        label(dataset, None, judge="time")


def test_requirements_ask_for_embeddings_unless_on_pixels():
    assert PreferenceLabeler.requirements({"judge": "oracle"}) == (True, True)
    assert PreferenceLabeler.requirements({"judge": "oracle", "pixels": "true"}) == (True, False)
    assert PreferenceLabeler.requirements({"mix": "time+clip", "pixels": True}) == (True, True)


def test_a_label_job_writes_the_preference_run_with_its_judge_and_ground_truth_flag(dataset):
    from robot_stack.label.job import LabelRequest, run_label_job

    config = {"judge": "oracle", "error_rate": 0.25, "pixels": True, "pairs": 200, "ensemble": 1, "steps": 50}
    summary = run_label_job(LabelRequest(dataset.path, "preference", "push the block to the goal", run="pref-oracle",
                                         camera="image.front", config=config, progress=False))
    labels = Dataset.open(dataset.path).read_labels("pref-oracle")
    assert summary.frames == dataset.n_frames and labels.attrs["judge"] == "oracle"
    assert labels.attrs["ground_truth_used"] is True and labels.attrs["labeler"] == "preference"


def test_reward_models_fit_on_the_threads_option_and_give_the_threads_back(dataset, monkeypatch):
    """Fitting runs on `threads` torch threads (default 1: these models are small, a thread team costs more than it
    gives on a loaded machine); the caller's thread count is restored after."""
    import robot_stack.label.preference as preference

    seen = []

    def fit(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return fit_bradley_terry(*args, **kwargs)

    monkeypatch.setattr(preference, "fit_bradley_terry", fit)
    torch.set_num_threads(2)
    label(dataset, judge="oracle", pairs=40, ensemble=1, steps=5, pixels=True)
    result = label(dataset, judge="oracle", pairs=40, ensemble=1, steps=5, pixels=True, threads=2)
    assert seen == [1, 2] and torch.get_num_threads() == 2 and result.info["threads"] == 2
    with pytest.raises(LabelError, match="threads=0"):
        label(dataset, judge="oracle", pairs=40, threads=0, pixels=True)
