"""`robot-stack data export diffusion-policy`: the Zarr layout diffusion_policy's ReplayBuffer opens.

diffusion_policy is not a package, so the export is read back with a plain zarr reader opened as format 2 and
checked against exactly what its ReplayBuffer reads: a format 2 group, arrays under data/, meta/episode_ends and
nothing else under meta/, every array as long as the last end; values, episode boundaries and images as recorded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from robot_stack.sim.collect import collect

from robot_stack.cli.main import main as cli
from robot_stack.data import Dataset, DatasetWriter
from robot_stack.interop.diffusion_policy import export_dataset


@pytest.fixture(scope="module")
def reach(tmp_path_factory):
    """A reach2d dataset of 3 episodes with a 32x32 camera (image.top)."""
    path = tmp_path_factory.mktemp("reach") / "reach.zarr"
    return collect("reach2d", path, 3, mix={"medium": 1.0}, seed=0, cameras=["top:32x32"], progress=False)


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli(["data", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def check_layout(path, ds: Dataset) -> zarr.Group:
    """Assert what diffusion_policy's ReplayBuffer reads; returns the group."""
    assert (path / ".zgroup").is_file() and not (path / "zarr.json").exists()  # format 2 on disk
    root = zarr.open_group(path, mode="r", zarr_format=2)
    assert sorted(root.group_keys()) == ["data", "meta"] and not list(root.array_keys())
    meta = root["meta"]
    assert list(meta.keys()) == ["episode_ends"] and isinstance(meta["episode_ends"], zarr.Array)
    ends = meta["episode_ends"][:]
    assert ends.dtype == np.int64 and ends.tolist() == ds.episode_ends.tolist()
    data = root["data"]
    assert not list(data.group_keys())
    for key, array in data.arrays():
        assert array.shape[0] == ends[-1], key
        with open(path / "data" / key / ".zarray") as file:
            stored = json.load(file)
        assert stored["zarr_format"] == 2 and stored["compressor"]["id"] == "blosc" and stored["filters"] is None
        assert array.chunks[0] <= max(np.diff(np.r_[0, ends])), key
    return root


def test_the_export_is_the_layout_replay_buffer_reads_with_every_value(capsys, reach, tmp_path):
    code, out, err = run(capsys, "export", "diffusion-policy", reach.path, tmp_path / "dp.zarr", "-q")
    assert code == 0, err
    assert "3 episodes" in out
    root = check_layout(tmp_path / "dp.zarr", reach)
    data = root["data"]
    expected = {name.removeprefix("image.") if reach.features[name].is_image else name: name for name in reach.features}
    assert sorted(data.array_keys()) == sorted(expected)
    assert {"action", "top", "timestamp", "joint_position"} <= set(expected)
    for key, name in expected.items():
        assert data[key].dtype == np.dtype(reach.features[name].dtype), key
        np.testing.assert_array_equal(data[key][:], reach.frames(name), err_msg=key)
    assert data["top"].shape[1:] == (32, 32, 3) and data["top"].dtype == np.uint8 and data["top"][:].any()
    described = root.attrs["robot_stack"]
    assert described["episodes"]["success"] == reach.success.tolist()
    assert described["tasks"] == reach.tasks and described["record_hz"] == reach.record_hz
    assert described["keys"]["top"]["feature"] == "image.top"
    assert described["fingerprint"] == reach.fingerprint()


def test_episode_boundaries_split_the_arrays_as_the_dataset_does(reach, tmp_path):
    export_dataset(reach, tmp_path / "dp.zarr", progress=False)
    root = zarr.open_group(tmp_path / "dp.zarr", mode="r", zarr_format=2)
    ends = root["meta/episode_ends"][:]
    for index, (start, stop) in enumerate(zip(np.r_[0, ends[:-1]], ends)):
        episode = reach.episode(index)
        np.testing.assert_array_equal(root["data/action"][start:stop], episode["action"])
        np.testing.assert_array_equal(root["data/top"][start:stop], np.asarray(episode["image.top"]))


def test_an_unfinished_episode_is_left_out(reach, tmp_path):
    path = tmp_path / "unfinished.zarr"
    ds = collect("reach2d", path, 2, mix={"medium": 1.0}, seed=1, cameras=["top:32x32"], progress=False)
    committed = ds.n_frames
    writer = DatasetWriter.open(path)
    first = ds.episode(0)
    frames = {name: np.asarray(values)[:5] for name, values in first.items()}
    frames["timestamp"] = ds.frames("timestamp")[-1] + 1.0 + np.arange(5) / ds.record_hz
    writer.append_frames(frames)
    writer.close()
    ds = Dataset.open(path)
    assert ds.unfinished_frames == 5
    export_dataset(ds, tmp_path / "dp.zarr", progress=False)
    root = check_layout(tmp_path / "dp.zarr", ds)
    assert root["meta/episode_ends"][-1] == committed
    assert all(array.shape[0] == committed for _, array in root["data"].arrays())


def test_bad_output_or_input_is_one_line_and_leaves_nothing(capsys, reach, tmp_path):
    (tmp_path / "taken").mkdir()
    empty = tmp_path / "empty.zarr"
    DatasetWriter.create(empty, robot={"name": "nobody"}, record_hz=10.0, features=[]).close()
    cases = [
        ((reach.path, tmp_path / "taken"), "exists: export into a new path"),
        ((empty, tmp_path / "from_empty.zarr"), "no committed episode"),
        ((tmp_path / "missing.zarr", tmp_path / "from_missing.zarr"), "missing.zarr"),
    ]
    for (dataset, out), words in cases:
        code, _, err = run(capsys, "export", "diffusion-policy", dataset, out, "-q")
        assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
    assert not (tmp_path / "from_empty.zarr").exists() and not (tmp_path / "from_missing.zarr").exists()
    assert not list((tmp_path / "taken").iterdir())
