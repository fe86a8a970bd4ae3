"""The per-episode `source` (meta/episodes/source): written by commit, kept by merge and recover, shown by
`data info`, set by sim collect and the bag importer; datasets written before the field existed read "" for
it without being rewritten, and can be appended to. Real Zarr on disk in tmp_path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from robot_stack.sim import collect as sim_collect

from robot_stack.cli.main import main
from robot_stack.data import Dataset, DatasetWriter, FeatureSpec, recover, validate
from robot_stack.data.merge import merge
from robot_stack.errors import DatasetError

FEATURES = [
    FeatureSpec("joint_pos", "float32", (3,), "state", topic="/joint_states", units="rad"),
    FeatureSpec("action", "float32", (2,), "action", topic="/robot/command"),
]
ROBOT = {"name": "test_arm", "command": "joint_positions"}
LENGTH = 5


def frames(key: int) -> dict[str, np.ndarray]:
    i = np.arange(LENGTH)
    return {"joint_pos": (key * 10 + i[:, None] + np.arange(3) / 10).astype(np.float32),
            "action": np.full((LENGTH, 2), key, np.float32), "timestamp": 100.0 * key + i / 10}


def record(path: Path, sources: list[str], unfinished: bool = False) -> Path:
    """Episodes with these sources (episode k's frames hold k); `unfinished` leaves one more episode on disk uncommitted."""
    writer = (DatasetWriter.open(path) if path.exists() else
              DatasetWriter.create(path, robot=ROBOT, record_hz=10, features=FEATURES, tasks=["reach"]))
    for source in sources:
        writer.append_frames(frames(writer.n_episodes))
        writer.commit_episode("reach", True, operator="ada", source=source)
    if unfinished:
        writer.append_frames(frames(writer.n_episodes))
    writer.close()
    return path


def as_before_the_field(path: Path) -> Path:
    """The dataset as a writer from before meta/episodes/source wrote it: the same store without that array."""
    shutil.rmtree(path / "meta" / "episodes" / "source")
    return path


def contents(path: Path) -> dict[str, bytes]:
    return {str(file.relative_to(path)): file.read_bytes() for file in sorted(path.rglob("*")) if file.is_file()}


def info(capsys, path: Path, *flags: str) -> str:
    code = main(["data", "info", str(path), *flags])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_source_round_trips_through_commit_and_is_counted_by_data_info(tmp_path, capsys):
    path = record(tmp_path / "d.zarr", ["teleop", "online", "", "online"])
    ds = Dataset.open(path)
    assert ds.episode_table()["source"].tolist() == ["teleop", "online", "", "online"]
    assert [ds.episode_info(i).source for i in range(4)] == ["teleop", "online", "", "online"]
    assert validate(path, progress=False) == []
    assert json.loads(info(capsys, path, "--json"))["sources"] == {"": 1, "online": 2, "teleop": 1}
    out = info(capsys, path, "--episodes")
    assert "sources    unknown 1, online 2, teleop 1" in out
    assert "     1        5      0.40s  yes      reach  (online)" in out
    assert "sources: {'online': 2, 'teleop': 1, 'unknown': 1}" in Dataset.open(path).describe()


def test_a_source_that_is_not_a_known_kind_is_refused_in_one_line(tmp_path):
    writer = DatasetWriter.create(tmp_path / "d.zarr", robot=ROBOT, record_hz=10, features=FEATURES)
    writer.append_frames(frames(0))
    with pytest.raises(DatasetError, match="episode source 'human' is not one of teleop, scripted, policy, online, import"):
        writer.commit_episode("reach", True, source="human")
    assert writer.commit_episode("reach", True, source="policy") == 0
    writer.close()


def test_a_dataset_from_before_the_field_reads_empty_sources_and_is_not_rewritten_by_readers(tmp_path, capsys):
    path = as_before_the_field(record(tmp_path / "old.zarr", ["teleop", "scripted", "online"]))
    before = contents(path)
    ds = Dataset.open(path)
    assert ds.episode_table()["source"].tolist() == ["", "", ""]
    assert ds.episode_info(2).source == "" and ds.episode_info(2).operator == "ada"
    assert validate(path, progress=False) == []
    assert json.loads(info(capsys, path, "--json"))["sources"] == {"": 3}
    assert "sources    unknown 3" in info(capsys, path, "--episodes")
    assert contents(path) == before


def test_a_damaged_source_array_is_damage_not_a_dataset_from_before_the_field(tmp_path):
    path = record(tmp_path / "d.zarr", ["teleop"])
    (path / "meta" / "episodes" / "source" / "zarr.json").write_text("{garbage")
    with pytest.raises(DatasetError, match="meta/episodes/source/zarr.json is damaged"):
        Dataset.open(path)


def test_appending_to_a_dataset_from_before_the_field_adds_it_with_empty_rows_for_the_old_episodes(tmp_path):
    path = as_before_the_field(record(tmp_path / "old.zarr", ["teleop", "teleop"]))
    record(path, ["online", "policy"])
    ds = Dataset.open(path)
    assert ds.episode_table()["source"].tolist() == ["", "", "online", "policy"]
    assert ds.episode_table()["operator"].tolist() == ["ada"] * 4
    assert ds.n_episodes == 4 and ds.frames("action")[:, 0].tolist() == np.repeat([0, 1, 2, 3], LENGTH).tolist()
    assert validate(path, progress=False) == []


def test_recover_keeps_the_unfinished_episode_of_a_dataset_from_before_the_field(tmp_path):
    path = as_before_the_field(record(tmp_path / "old.zarr", ["teleop"], unfinished=True))
    result = recover(path, keep=True)
    assert (result.kept_episode, result.kept_frames) == (1, LENGTH)
    ds = Dataset.open(path)
    assert ds.episode_table()["source"].tolist() == ["", ""] and ds.episode_info(1).notes == "recovered"
    assert validate(path, progress=False) == []
    record(path, ["online"])
    assert Dataset.open(path).episode_table()["source"].tolist() == ["", "", "online"]


def test_merge_keeps_each_episodes_source_old_datasets_included(tmp_path):
    new = record(tmp_path / "new.zarr", ["online", "teleop"])
    old = as_before_the_field(record(tmp_path / "old.zarr", ["teleop"]))
    merged = merge(tmp_path / "merged.zarr", [new, old, new], progress=False)
    assert merged.episode_table()["source"].tolist() == ["online", "teleop", "", "online", "teleop"]
    assert validate(merged.path, progress=False) == []


def test_sim_collect_marks_its_episodes_scripted(tmp_path):
    ds = sim_collect.collect("reach2d", tmp_path / "collected.zarr", 2, seed=1, horizon=5, progress=False)
    assert ds.episode_table()["source"].tolist() == ["scripted", "scripted"]


def test_the_bag_importer_marks_its_episodes_import(tmp_path, capsys):
    from test_bag_import import joint_states, write_bag

    write_bag(tmp_path / "bag", joint_states(50))
    (tmp_path / "features.yaml").write_text(
        "robot: {name: test_arm, command: joint_positions}\ntask: pick the cube\nfeatures:\n"
        "  joint_pos: {topic: /joint_states, type: sensor_msgs/msg/JointState, field: position}\n")
    code = main(["data", "import-bag", str(tmp_path / "bag"), str(tmp_path / "bag.zarr"), "--features",
                 str(tmp_path / "features.yaml"), "--record-hz", "20", "-q"])
    assert code == 0, capsys.readouterr().err
    assert Dataset.open(tmp_path / "bag.zarr").episode_table()["source"].tolist() == ["import"]


@pytest.mark.parametrize("teleop, source", [("scripted", "scripted"), ("gamepad", "teleop"), ("none", "teleop")])
def test_the_collect_launch_gives_the_recorder_the_source_of_its_teleop_choice(teleop, source):
    from conftest import REPO

    from robot_stack.launch.launch_file import load_launch

    plan = load_launch(REPO / "launch" / "collect.launch.yaml", {"teleop": teleop, "task": "reach2d"})
    recorder = next(node for node in plan.nodes if node.executable == "recorder")
    inline = {k: v for part in recorder.parameters if isinstance(part, dict) for k, v in part.items()}
    assert inline["source"] == source
