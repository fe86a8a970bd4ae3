"""`robot-stack data mark`: episodes' outcomes marked without code, kept beside the recorded data with
provenance, seen by Dataset.success, the episode table, `data info` and `--reward success`; and
`--reward success` on data with no successful episode is refused with the command that fixes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robot_stack.cli.main import main
from robot_stack.data import Dataset, DatasetWriter, FeatureSpec, validate
from robot_stack.data.loader import TransitionDataset  # torch first (robot_stack.native)
from robot_stack.data.sampling import frame_rewards, load_transitions
from robot_stack.errors import DatasetError

FEATURES = [FeatureSpec("joint_pos", "float32", (3,), "state"), FeatureSpec("action", "float32", (2,), "action")]
LENGTH = 5


def make_dataset(path: Path, n_episodes: int = 10) -> Path:
    """Episodes recorded with no outcome (success unknown), as a teleop's `stop` or an importer leaves them."""
    writer = DatasetWriter.create(path, robot={"name": "test_arm"}, record_hz=10, features=FEATURES)
    for key in range(n_episodes):
        i = np.arange(LENGTH)
        writer.append_frames({"joint_pos": np.full((LENGTH, 3), key, np.float32), "action": np.zeros((LENGTH, 2), np.float32),
                              "timestamp": 10.0 * key + i / 10})
        writer.commit_episode("pick", None, operator="ada")
    writer.close()
    return path


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_mark_records_outcomes_beside_the_data_with_provenance(tmp_path, capsys):
    path = make_dataset(tmp_path / "d.zarr")
    recorded = {file.relative_to(path): file.read_bytes() for file in (path / "data").rglob("*") if file.is_file()}
    recorded |= {file.relative_to(path): file.read_bytes() for file in (path / "meta" / "episodes").rglob("*") if file.is_file()}
    fingerprint = Dataset.open(path).fingerprint()

    assert _cli(capsys, "data", "mark", path, "0,2,5", "success", "--by", "ada")[0] == 0
    assert _cli(capsys, "data", "mark", path, "4-6", "fail")[0] == 0  # 5 was success: the last mark counts
    code, out, _ = _cli(capsys, "data", "mark", path, "3", "success", "--by", "bo")
    assert code == 0 and out.strip() == f"{path}: marked episode 3 success (1 changed; by bo)"

    ds = Dataset.open(path)
    assert ds.success.tolist() == [1, -1, 1, 1, 0, 0, 0, -1, -1, -1]
    assert ds.episode_table()["marked"].tolist() == [True, False, True, True, True, True, True, False, False, False]
    assert ds.episode_info(5).success is False and ds.episode_info(5).marked and not ds.episode_info(1).marked
    # Beside the data: every recorded file is byte for byte what it was, and the fingerprint is unchanged.
    assert all((path / name).read_bytes() == content for name, content in recorded.items())
    assert ds.fingerprint() == fingerprint
    marks = json.loads((path / "meta" / "marks" / "zarr.json").read_text())["attributes"]["marks"]
    assert [(m["episode"], m["success"], m["previous"]) for m in marks] == [
        (0, True, -1), (2, True, -1), (5, True, -1), (4, False, -1), (5, False, 1), (6, False, -1), (3, True, -1)]
    assert {m["by"] for m in marks[:3]} == {"ada"} and marks[-1]["by"] == "bo" and all(m["at"] for m in marks)
    assert validate(path, progress=False) == []

    code, out, _ = _cli(capsys, "data", "info", path, "--episodes")
    assert "success    50% of known outcomes (3 succeeded, 3 failed, 4 unknown); 6 marked by an operator" in out
    assert "(m): outcome marked by an operator (robot-stack data mark), not recorded" in out
    reward = frame_rewards(ds, "success")
    assert np.flatnonzero(reward).tolist() == [LENGTH * (e + 1) - 1 for e in (0, 2, 3)]


@pytest.mark.parametrize("episodes, message", [
    ("10", "episode 10 does not exist: the dataset has episodes 0-9"),
    ("3-x", "'3-x' is not an episode index or range; write e.g. 3, 0,2,5, 4-9 or all"),
    ("7-2", "'7-2' is not an episode index or range"),
])
def test_mark_names_a_bad_episode_choice_in_one_line(episodes, message, tmp_path, capsys):
    path = make_dataset(tmp_path / "d.zarr")
    code, _, err = _cli(capsys, "data", "mark", path, episodes, "success")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (path / "meta" / "marks").exists()


def test_mark_all(tmp_path, capsys):
    path = make_dataset(tmp_path / "d.zarr", n_episodes=3)
    assert _cli(capsys, "data", "mark", path, "all", "fail")[0] == 0
    assert Dataset.open(path).success.tolist() == [0, 0, 0]


def test_reward_success_without_successful_episodes_is_refused_with_how_to_mark_them(tmp_path, capsys):
    path = make_dataset(tmp_path / "d.zarr")
    ds = Dataset.open(path)
    hint = f"mark the episodes that succeeded with `robot-stack data mark {path} EPISODES success`"
    for load in (lambda: frame_rewards(ds, "success"), lambda: load_transitions(ds, ["joint_pos"]),
                 lambda: TransitionDataset(path, ["joint_pos"])):
        with pytest.raises(DatasetError, match="no episode of .* is marked successful") as failure:
            load()
        assert hint in str(failure.value)
    code, _, err = _cli(capsys, "train", "--algo", "iql", "--dataset", path, "--reward", "success", "--steps", "2",
                        "--eval-every", "-1", "--device", "cpu", "--out", tmp_path / "run", "--no-progress")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1 and hint in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()

    assert _cli(capsys, "data", "mark", path, "1,4", "success")[0] == 0  # now it trains
    code, out, err = _cli(capsys, "train", "--algo", "iql", "--dataset", path, "--reward", "success", "--steps", "2",
                          "--eval-every", "-1", "--device", "cpu", "--out", tmp_path / "run", "--no-progress",
                          "--set", "batch_size=4")
    assert code == 0, err
    assert json.loads(out)["steps"] == 2

    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["reward"]["marked_episodes"] == [1, 4]
    assert [run["reward"]["episode_outcomes"][i] for i in (1, 4)] == [1, 1]


def test_a_run_on_success_rewards_refuses_to_resume_after_the_marks_changed(tmp_path, capsys):
    path = make_dataset(tmp_path / "d.zarr")
    assert _cli(capsys, "data", "mark", path, "1", "success")[0] == 0
    train = ("train", "--algo", "iql", "--dataset", path, "--reward", "success", "--eval-every", "-1",
             "--device", "cpu", "--out", tmp_path / "run", "--no-progress", "--set", "batch_size=4")
    assert _cli(capsys, *train, "--steps", "2")[0] == 0
    assert _cli(capsys, "train", "--resume", tmp_path / "run", "--steps", "3", "--no-progress")[0] == 0

    assert _cli(capsys, "data", "mark", path, "2", "success")[0] == 0  # the rewards of episode 2 change
    code, _, err = _cli(capsys, "train", "--resume", tmp_path / "run", "--steps", "4", "--no-progress")
    assert code == 2 and "success marks" in err and "start a new run" in err and "Traceback" not in err, err
