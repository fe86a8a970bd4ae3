"""A label run's reward model applied to episodes recorded after the run (robot_stack.label.apply): progress and
success runs on the shared recorded reach2d dataset (conftest.reach_pixels, 32x32 camera) score a dataset's own
episodes exactly as their labels and a later-recorded dataset's episodes in the same order (higher near success);
runs that keep no model, runs made before models were kept and damaged models are one-line LabelErrors.
(conftest.py picks the headless MuJoCo backend before anything imports mujoco.)"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil

import numpy as np
import pytest

from robot_stack.cli.main import main as cli
from robot_stack.data import Dataset
from robot_stack.data.store import open_group
from robot_stack.errors import LabelError
from robot_stack.label.apply import MODEL, label_reward_model
from robot_stack.label.job import LabelRequest, run_label_job
from robot_stack.sim import collect as sim_collect

CAMERA = "image.top"
TASK = "move the fingertip onto the target"


def label(ds: Dataset, labeler: str, run: str, **config) -> Dataset:
    """Run the real label job on `ds` and return the dataset opened again (it now holds labels/<run>)."""
    run_label_job(LabelRequest(dataset=ds.path, labeler=labeler, task=TASK, run=run, camera=CAMERA, config=config,
                               progress=False, overwrite=True))
    return Dataset.open(ds.path)


def episode_frames(ds: Dataset, episode: int) -> dict[str, np.ndarray]:
    span = ds.episode_slice(episode)
    return {CAMERA: ds.frames(CAMERA, span.start, span.stop), "action": ds.frames("action", span.start, span.stop)}


def spearman_with_time(values: np.ndarray) -> float:
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return float(np.corrcoef(ranks, np.arange(len(values)))[0, 1]) if np.ptp(values) > 0 else 0.0


@pytest.fixture(scope="module")
def reach(reach_pixels) -> Dataset:
    """The shared recorded reach2d dataset with progress and success runs on pixels (labels/apply-progress,
    labels/apply-success)."""
    label(reach_pixels, "progress", "apply-progress", input="pixels")
    return label(reach_pixels, "success", "apply-success", input="pixels")


@pytest.fixture(scope="module")
def with_preference(reach) -> Dataset:
    """`reach` with a small preference run as well (labels/apply-preference: the time judge, a CNN on pixels)."""
    return label(reach, "preference", "apply-preference", judge="time", pixels=True, pairs=60, ensemble=1, steps=20)


@pytest.fixture(scope="module")
def later(tmp_path_factory) -> Dataset:
    """Episodes recorded after the runs (other placements: another seed), none of them seen by any labeler."""
    path = tmp_path_factory.mktemp("later") / "later.zarr"
    ds = sim_collect.collect("reach2d", path, 6, mix={"expert": 0.5, "random": 0.5}, seed=7, cameras=["top:32x32"],
                             progress=False)
    assert (ds.success == 1).any() and (ds.success == 0).any()
    return ds


@pytest.mark.parametrize("run", ["apply-progress", "apply-success"])
def test_saved_model_scores_the_datasets_own_episodes_exactly_as_the_run_labeled_them(reach, run):
    labels = reach.read_labels(run)
    model = label_reward_model(reach, f"labels/{run}")
    assert model.features == {CAMERA: (32, 32, 3)} and model.labeler == run.removeprefix("apply-")
    assert not model.ground_truth_used
    for episode in range(reach.n_episodes):
        rewards = model.rewards(episode_frames(reach, episode))
        assert rewards.dtype == np.float32 and rewards.shape == (reach.episode_info(episode).length,)
        # The run's calibration is applied: its rewards are not the raw scores (which differ by the affine map).
        np.testing.assert_allclose(rewards, labels.reward[reach.episode_slice(episode)], rtol=0, atol=1e-5)
    assert not np.allclose(labels.reward, labels.raw, atol=1e-3)


def test_a_frames_reward_depends_on_it_and_earlier_frames_only(reach):
    model = label_reward_model(reach.path, "apply-progress")
    frames = episode_frames(reach, int(np.flatnonzero(reach.success == 1)[0]))
    whole = model.rewards(frames)
    np.testing.assert_allclose(model.rewards({CAMERA: frames[CAMERA][:7]}), whole[:7], rtol=0, atol=1e-6)
    assert model.rewards({CAMERA: frames[CAMERA][:0]}).shape == (0,)


def test_progress_model_on_later_episodes_rises_toward_success_and_ranks_them_above_failures(reach, later):
    model = label_reward_model(reach, "apply-progress")
    scored = {e: model.rewards(episode_frames(later, e)) for e in range(later.n_episodes)}
    succeeded = np.flatnonzero(later.success == 1)
    failed = np.flatnonzero(later.success == 0)
    assert np.mean([spearman_with_time(scored[e]) for e in succeeded]) > 0.6
    ends = [scored[e][-3:].mean() for e in succeeded]
    assert min(ends) > max(scored[e].mean() for e in failed)
    # Rewards follow the sim's own measure of progress on episodes the model never saw.
    reward, sim = np.concatenate(list(scored.values())), later.frames("sim_reward")
    assert np.corrcoef(reward, sim)[0, 1] > 0.5


def test_success_model_on_later_episodes_is_high_at_the_success_and_low_on_failures(reach, later):
    model = label_reward_model(reach, "apply-success")
    succeeded = np.flatnonzero(later.success == 1)
    failed = np.flatnonzero(later.success == 0)
    scored = {e: model.rewards(episode_frames(later, e)) for e in range(later.n_episodes)}
    final = np.concatenate([scored[e][-3:] for e in succeeded])
    early = np.concatenate([scored[e][:3] for e in succeeded])
    others = np.concatenate([scored[e] for e in failed])
    assert final.mean() > early.mean() + 0.25 and final.mean() > others.mean() + 0.25


def test_embeddings_run_embeds_new_frames_with_the_runs_clip_and_matches_its_labels(reach, tiny_clip):
    run = "apply-progress-clip"
    run_label_job(LabelRequest(dataset=reach.path, labeler="progress", task=TASK, run=run, camera=CAMERA,
                               model=tiny_clip["checkpoint0"], config={"steps": 50}, progress=False, overwrite=True))
    ds = Dataset.open(reach.path)
    model = label_reward_model(ds, run)
    assert model.clip_model == tiny_clip["checkpoint0"]
    for episode in (0, ds.n_episodes - 1):
        np.testing.assert_allclose(model.rewards(episode_frames(ds, episode)),
                                   ds.read_labels(run).reward[ds.episode_slice(episode)], rtol=0, atol=1e-4)


def test_frames_of_the_wrong_camera_or_size_are_one_line_errors(reach):
    model = label_reward_model(reach, "apply-progress")
    with pytest.raises(LabelError, match=r"scores image.top frames, and this episode has none.*record image.top "
                                         r"at 32x32"):
        model.rewards({"image.side": np.zeros((4, 32, 32, 3), np.uint8)})
    with pytest.raises(LabelError, match=r"32x32x3 uint8, got uint8 \[64, 64, 3\]: record image.top at 32x32") as error:
        model.rewards({CAMERA: np.zeros((4, 64, 64, 3), np.uint8)})
    assert "\n" not in str(error.value)


def test_a_preference_run_keeps_no_model_and_says_to_label_with_progress_or_success(with_preference):
    ds = with_preference
    with pytest.raises(LabelError, match=r"made by the 'preference' labeler, which keeps no model to score new "
                                         r"episodes: label the dataset with --labeler progress or success") as error:
        label_reward_model(ds, "apply-preference")
    assert "\n" not in str(error.value)
    assert MODEL not in open_group(ds.path, writable=False)["labels/apply-preference"]
    with pytest.raises(LabelError, match=r"has no label run 'nope'.*--labeler progress"):
        label_reward_model(ds, "nope")


def test_a_run_made_before_models_were_kept_names_the_command_that_labels_it_again(reach_pixels, tmp_path, capsys):
    path = tmp_path / "copy.zarr"
    shutil.copytree(reach_pixels.path, path)
    ds = label(Dataset.open(path), "success", "old", input="pixels", steps=40, final_frames=4)
    before = ds.read_labels("old").reward
    del open_group(ds.path, writable=True)["labels/old"][MODEL]  # what a run written by the earlier job holds
    with pytest.raises(LabelError, match=r"cannot score new episodes, its model was not kept") as error:
        label_reward_model(ds, "old")
    message = str(error.value)
    assert "\n" not in message
    command = shlex.split(message.split("label it again: ", 1)[1])
    assert command[:3] == ["robot-stack", "label", "run"] and "--overwrite" in command
    assert {"input=pixels", "steps=40", "final_frames=4"} <= set(command)
    # The advice works: the command makes the same run again, now with its model.
    assert cli(command[1:] + ["--no-progress"]) == 0
    capsys.readouterr()
    again = Dataset.open(path)
    np.testing.assert_array_equal(again.read_labels("old").reward, before)
    model = label_reward_model(again, "old")
    np.testing.assert_allclose(model.rewards(episode_frames(again, 0)), before[again.episode_slice(0)], atol=1e-5)


def test_a_damaged_saved_model_is_a_one_line_error(reach, tmp_path):
    path = tmp_path / "copy.zarr"
    shutil.copytree(reach.path, path)
    array = open_group(path, writable=True)["labels/apply-progress"][MODEL]
    state = array[:]
    flipped = state.copy()
    flipped[len(state) // 2] ^= 0xFF
    array[:] = flipped
    with pytest.raises(LabelError, match=r"saved model of label run 'apply-progress' .* is damaged \(its bytes do not "
                                         r"match the checksum saved with them\): label it again: robot-stack label "
                                         r"run .* --overwrite") as error:
        label_reward_model(path, "apply-progress")
    assert "\n" not in str(error.value)
    # Bytes that match their checksum but hold no state dict (a model written by something else) are caught too.
    garbage = np.frombuffer(b"not a torch file" * 8, np.uint8)
    array.resize(garbage.shape)
    array[:] = garbage
    array.update_attributes({"sha256": hashlib.sha256(garbage.tobytes()).hexdigest()})
    with pytest.raises(LabelError, match=r"is damaged \(its weights do not load"):
        label_reward_model(path, "apply-progress")



def test_label_list_says_which_runs_reward_episodes_recorded_later(with_preference, capsys):
    ds = with_preference
    assert cli(["label", "list", str(ds.path)]) == 0
    blocks: dict[str, str] = {}
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith(" "):
            current = line.split()[0]
        blocks[current] = blocks.get(current, "") + line + "\n"
    assert "model kept: rewards episodes recorded later" in blocks["apply-progress"]
    assert "model kept" in blocks["apply-success"] and "model kept" not in blocks["apply-preference"]
    assert cli(["label", "list", str(ds.path), "--json"]) == 0
    rows = {row["run"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["apply-progress"]["scores_new_episodes"] and not rows["apply-preference"]["scores_new_episodes"]
