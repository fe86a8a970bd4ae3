"""LeRobot dataset v3 <-> robot_stack (robot_stack.interop.lerobot): the round trip keeps every value, an export
has the v3 layout (and LeRobot's own LeRobotDataset opens it, where lerobot installs), a v3 folder that the test
writes by hand or with LeRobot's own recorder imports, a trainer runs on an import, an interrupted import resumes,
and bad input is one line through the CLI."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from robot_stack.cli.main import main
from robot_stack.data import Dataset, DatasetWriter
from robot_stack.interop import lerobot
from robot_stack.sim.collect import collect

pa = pytest.importorskip("pyarrow", reason="the LeRobot format needs pyarrow (the interop extra)")
pq = pytest.importorskip("pyarrow.parquet", reason="the LeRobot format needs pyarrow (the interop extra)")

EPISODES = 5  # 4 collected and one appended with an unknown task and outcome


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["data", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def reach(tmp_path_factory) -> Dataset:
    """A reach2d dataset with a 32x32 camera (successes 0 and 1) and a copy of episode 0 appended with no task and
    an unknown outcome, so that every success value and an unknown task occur."""
    path = tmp_path_factory.mktemp("reach") / "reach.zarr"
    collect("reach2d", path, EPISODES - 1, mix={"medium": 1.0}, seed=0, progress=False, cameras=["top:32x32"])
    ds = Dataset.open(path)
    span = ds.episode_slice(0)
    frames = {name: ds.frames(name, span.start, span.stop) for name in ds.features}
    frames["timestamp"] = frames["timestamp"] - frames["timestamp"][0] + ds.frames("timestamp")[-1] + 1 / ds.record_hz
    with DatasetWriter.open(path) as writer:
        writer.append_frames(frames)
        writer.commit_episode(None, None, notes="a copy of episode 0, outcome unknown")
    return Dataset.open(path)


@pytest.fixture(scope="module")
def exported(reach, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "reach_lerobot"
    assert main(["data", "export", "lerobot", str(reach.path), str(out), "-q"]) == 0
    return out


def test_round_trip_keeps_every_value_episode_boundaries_tasks_and_success(reach, exported, tmp_path):
    back = lerobot.import_dataset(exported, tmp_path / "back.zarr", progress=False)
    assert list(back.features) == list(reach.features)
    assert back.features == reach.features
    assert back.robot == reach.robot and back.record_hz == reach.record_hz and back.tasks == reach.tasks
    assert [back.episode_slice(i) for i in range(back.n_episodes)] == [
        reach.episode_slice(i) for i in range(EPISODES)]
    assert list(back.success) == list(reach.success) and sorted(set(reach.success)) == [-1, 0, 1]
    for i in range(EPISODES):
        before, after = reach.episode_info(i), back.episode_info(i)
        assert (after.task_text, after.notes) == (before.task_text, before.notes)
    for name, spec in reach.features.items():
        original, restored = reach.frames(name), back.frames(name)
        assert restored.dtype == original.dtype and restored.shape == original.shape, name
        if spec.is_image:
            assert np.abs(restored.astype(int) - original.astype(int)).max() <= lerobot.IMAGE_TOLERANCE
            assert np.abs(restored.astype(int) - np.roll(original, 1, axis=0).astype(int)).max() > 10  # frames aligned
        else:
            np.testing.assert_array_equal(restored, original, err_msg=name)
    record = back.provenance["import"]
    assert record["format"] == "lerobot" and record["version"] == "v3.0" and record["episodes"] == EPISODES
    assert record["source"] == str(exported.resolve()) and record["origin"] == reach.provenance
    assert "robot_stack.timestamp" in record["timestamps"]


def test_export_has_the_v3_layout_lerobot_reads(reach, exported):
    """What LeRobot 0.4's loader reads (lerobot/datasets/utils.py, lerobot_dataset.py), checked without it."""
    info = json.loads((exported / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and info["total_episodes"] == EPISODES
    assert info["total_frames"] == reach.n_frames and info["total_tasks"] == 2  # the unknown task is ""
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    features = info["features"]
    state = [name for name, spec in reach.features.items() if spec.kind == "state"]
    assert features["observation.state"]["shape"] == [sum(int(np.prod(reach.features[n].shape)) for n in state)]
    assert features["observation.state"]["names"][:2] == ["joint_position.0", "joint_position.1"]
    assert features["action"] == {"dtype": "float32", "shape": [2], "names": ["dx", "dy"]}
    assert features["observation.images.top"]["dtype"] == "video"
    assert features["observation.images.top"]["shape"] == [32, 32, 3]
    assert features["next.reward"]["shape"] == [1] and features["next.success"]["dtype"] == "bool"
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert features[key]["shape"] == [1]
    stale = [name for name in reach.features if name.startswith("stale.")]
    assert features["stale"] == {"dtype": "bool", "shape": [len(stale)], "names": stale}
    # LeRobot's statistics tools take any key holding "image" for a camera's
    assert [key for key in features if "image" in key] == ["observation.images.top"]

    data = pq.read_table(exported / "data/chunk-000/file-000.parquet")
    assert set(data.column_names) == {key for key, spec in features.items() if spec["dtype"] != "video"}
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), features["observation.state"]["shape"][0])
    assert data.schema.field("next.reward").type == pa.float32()
    assert data.column("index").to_pylist() == list(range(reach.n_frames))
    frame_index = np.asarray(data.column("frame_index"))
    timestamp = np.asarray(data.column("timestamp"))
    np.testing.assert_allclose(timestamp, frame_index / 20, atol=1e-6)  # episode-relative, frame_index / fps

    episodes = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [row["episode_index"] for row in episodes] == list(range(EPISODES))
    video_frames = 0
    for row, i in zip(episodes, range(EPISODES), strict=True):
        span = reach.episode_slice(i)
        assert (row["dataset_from_index"], row["dataset_to_index"], row["length"]) == (span.start, span.stop, span.stop - span.start)
        assert row["tasks"] == [reach.episode_info(i).task_text or ""]
        assert row["videos/observation.images.top/from_timestamp"] == pytest.approx(span.start / 20)
        assert row["videos/observation.images.top/to_timestamp"] == pytest.approx(span.stop / 20)
        video_frames += row["length"]
        np.testing.assert_allclose(row["stats/action/mean"], reach.frames("action", span.start, span.stop).mean(0), rtol=1e-5)
        assert np.asarray(row["stats/observation.images.top/mean"]).shape == (3, 1, 1)
    with av.open(str(exported / "videos/observation.images.top/chunk-000/file-000.mp4")) as container:
        times = [frame.time for frame in container.decode(video=0)]
    np.testing.assert_allclose(times, np.arange(video_frames) / 20, atol=1e-6)  # one file holds every episode

    tasks = pq.read_table(exported / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert tasks.column("task").to_pylist() == [*reach.tasks, ""] and tasks.column("task_index").to_pylist() == [0, 1]
    stats = json.loads((exported / "meta/stats.json").read_text())
    assert np.asarray(stats["observation.images.top"]["mean"]).shape == (3, 1, 1)
    np.testing.assert_allclose(stats["action"]["mean"], reach.frames("action").mean(0), rtol=1e-5)
    assert set(stats["observation.state"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}


def test_an_export_split_over_many_files_comes_back_whole(reach, tmp_path, monkeypatch):
    """Past the size limits a data parquet and a video file close and the next episode opens new ones (LeRobot
    rolls files so); the import follows each episode to its files."""
    monkeypatch.setattr(lerobot, "DATA_FILE_MB", 0)
    monkeypatch.setattr(lerobot, "VIDEO_FILE_MB", 0)
    out = lerobot.export_dataset(reach, tmp_path / "split", progress=False)
    assert len(list(out.glob("data/chunk-000/file-*.parquet"))) == EPISODES
    assert len(list(out.glob("videos/observation.images.top/chunk-000/file-*.mp4"))) == EPISODES
    rows = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [row["videos/observation.images.top/from_timestamp"] for row in rows] == [0.0] * EPISODES
    back = lerobot.import_dataset(out, tmp_path / "back.zarr", progress=False)
    for name, spec in reach.features.items():
        if not spec.is_image:
            np.testing.assert_array_equal(back.frames(name), reach.frames(name), err_msg=name)
    assert np.abs(back.frames("image.top").astype(int) - reach.frames("image.top").astype(int)).max() <= lerobot.IMAGE_TOLERANCE


def write_lerobot_v3(root: Path, episodes: list[int], fps: int = 10, split_data_after: int = 2) -> None:
    """A LeRobot v3 folder written from the documented layout: 2 data files, one video file holding every episode
    (frame k shows the value 5 * k), state = [k, -k, 0.5 k], action = [k, 2 k], next.reward = k / 100, next.success
    on the last frame of even episodes, next.done on every last frame, tasks "push" / "pull" alternating) and a
    camera stored as PNG in the parquet ("image" dtype) whose frame k shows the value k."""
    tasks = ["push", "pull"]
    total = sum(episodes)
    index = np.arange(total)
    episode_of = np.repeat(np.arange(len(episodes)), episodes)
    starts = np.concatenate([[0], np.cumsum(episodes)[:-1]])
    frame_index = index - starts[episode_of]
    last = frame_index == np.asarray(episodes)[episode_of] - 1
    columns = {
        "observation.state": np.stack([index, -index, 0.5 * index], 1).astype(np.float32),
        "action": np.stack([index, 2 * index], 1).astype(np.float32),
        "next.reward": (index / 100).astype(np.float32),
        "next.success": last & (episode_of % 2 == 0),
        "next.done": last,
        "timestamp": (frame_index / fps).astype(np.float32),
        "frame_index": frame_index, "episode_index": episode_of, "index": index, "task_index": episode_of % 2,
    }
    pngs = []
    for k in range(total):
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), k, np.uint8)).save(buffer, format="PNG")
        pngs.append({"bytes": buffer.getvalue(), "path": f"frame-{k:06d}.png"})
    files = (episode_of >= split_data_after).astype(int)
    for file in (0, 1):
        rows = files == file
        table = pa.table({key: (pa.FixedSizeListArray.from_arrays(pa.array(values[rows].reshape(-1)), values.shape[1])
                                if values.ndim == 2 else pa.array(values[rows])) for key, values in columns.items()})
        table = table.append_column("observation.images.wrist", pa.array([pngs[k] for k in index[rows]]))
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / f"data/chunk-000/file-{file:03d}.parquet")
    video = root / "videos/observation.images.cam/chunk-000/file-000.mp4"
    video.parent.mkdir(parents=True)
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "0", "bf": "0"})
        stream.pix_fmt, stream.width, stream.height, stream.time_base = "yuv444p", 16, 12, Fraction(1, fps)
        for k in range(total):
            frame = av.VideoFrame.from_ndarray(np.full((12, 16, 3), 5 * k % 250, np.uint8), format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    rows = [{"episode_index": i, "tasks": [tasks[i % 2]], "length": n, "data/chunk_index": 0,
             "data/file_index": int(i >= split_data_after), "dataset_from_index": int(starts[i]),
             "dataset_to_index": int(starts[i] + n), "videos/observation.images.cam/chunk_index": 0,
             "videos/observation.images.cam/file_index": 0,
             "videos/observation.images.cam/from_timestamp": starts[i] / fps,
             "videos/observation.images.cam/to_timestamp": (starts[i] + n) / fps,
             "stats/action/mean": [0.0, 0.0]} for i, n in enumerate(episodes)]
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": [0, 1], "__index_level_0__": tasks}), root / "meta/tasks.parquet")
    scalar = {"shape": [1], "names": None}
    info = {"codebase_version": "v3.0", "robot_type": "so100", "fps": fps, "total_episodes": len(episodes),
            "total_frames": total, "total_tasks": 2, "chunks_size": 1000, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "splits": {"train": f"0:{len(episodes)}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": {
                "observation.state": {"dtype": "float32", "shape": [3], "names": ["x", "y", "z"]},
                "observation.images.cam": {"dtype": "video", "shape": [12, 16, 3], "names": ["height", "width", "channels"]},
                "observation.images.wrist": {"dtype": "image", "shape": [3, 8, 8], "names": ["channels", "height", "width"]},
                "action": {"dtype": "float32", "shape": [2], "names": ["a0", "a1"]},
                "next.reward": {"dtype": "float32", **scalar}, "next.success": {"dtype": "bool", **scalar},
                "next.done": {"dtype": "bool", **scalar}, "timestamp": {"dtype": "float32", **scalar},
                **{key: {"dtype": "int64", **scalar} for key in ("frame_index", "episode_index", "index", "task_index")}}}
    (root / "meta/info.json").write_text(json.dumps(info))


@pytest.fixture
def handmade(tmp_path) -> Path:
    root = tmp_path / "so100_push"
    write_lerobot_v3(root, [6, 4, 5, 3])
    return root


def test_import_of_a_lerobot_dataset_maps_its_keys_and_a_trainer_runs_on_it(capsys, handmade, tmp_path):
    out = tmp_path / "push.zarr"
    code, _, err = run(capsys, "import", "lerobot", handmade, out, "-q")
    assert code == 0, err
    ds = Dataset.open(out)
    assert ds.n_episodes == 4 and ds.n_frames == 18 and ds.record_hz == 10 and ds.robot == {"name": "so100"}
    assert {name: spec.kind for name, spec in ds.features.items()} == {
        "state": "state", "image.cam": "image", "image.wrist": "image", "action": "action", "reward": "reward", "success": "flag",
        "done": "flag", "timestamp": "time"}
    index = np.arange(18)
    np.testing.assert_array_equal(ds.frames("state"), np.stack([index, -index, 0.5 * index], 1).astype(np.float32))
    np.testing.assert_array_equal(ds.frames("action")[:, 1], 2 * index)
    np.testing.assert_array_equal(ds.frames("reward"), (index / 100).astype(np.float32))
    assert np.abs(ds.frames("image.cam")[:, 0, 0, 0].astype(int) - 5 * index).max() <= lerobot.IMAGE_TOLERANCE
    np.testing.assert_array_equal(ds.frames("image.wrist"), np.broadcast_to(index[:, None, None, None], (18, 8, 8, 3)))
    assert [ds.episode_slice(i).stop for i in range(4)] == [6, 10, 15, 18]
    assert list(ds.frames("done").nonzero()[0]) == [5, 9, 14, 17]
    assert list(ds.success) == [1, 0, 1, 0] and ds.tasks == ["push", "pull"]
    assert [ds.episode_info(i).task_text for i in range(4)] == ["push", "pull", "push", "pull"]
    np.testing.assert_allclose(np.diff(ds.frames("timestamp")), 0.1)
    record = ds.provenance["import"]
    assert record["robot_type"] == "so100" and record["names"]["state"] == ["x", "y", "z"]
    assert record["columns"]["observation.state"] == ["state"] and "frame index / 10 Hz" in record["timestamps"]

    code = main(["train", "--algo", "bc", "--dataset", str(out), "--steps", "20", "--batch-size", "16",
                 "--eval-every", "-1", "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress",
                 "--set", "hidden_dims=[16]"])
    assert code == 0, capsys.readouterr().err


def test_an_interrupted_import_resumes_with_every_episode_once(handmade, tmp_path, monkeypatch):
    clean = lerobot.import_dataset(handmade, tmp_path / "clean.zarr", progress=False)
    episode = lerobot.LeRobotReader.episode

    def fail_on_episode_2(self, index):
        if index == 2:
            raise KeyboardInterrupt
        return episode(self, index)

    monkeypatch.setattr(lerobot.LeRobotReader, "episode", fail_on_episode_2)
    with pytest.raises(KeyboardInterrupt):
        lerobot.import_dataset(handmade, tmp_path / "resumed.zarr", progress=False)
    assert Dataset.open(tmp_path / "resumed.zarr").n_episodes == 2
    monkeypatch.setattr(lerobot.LeRobotReader, "episode", episode)
    resumed = lerobot.import_dataset(handmade, tmp_path / "resumed.zarr", progress=False)
    assert resumed.n_episodes == 4
    assert [resumed.episode_slice(i) for i in range(4)] == [clean.episode_slice(i) for i in range(4)]
    for name in clean.features:
        np.testing.assert_array_equal(resumed.frames(name), clean.frames(name), err_msg=name)


def test_bad_input_is_one_line_through_the_cli(capsys, reach, handmade, exported, tmp_path):
    def one_line_error(*args) -> str:
        code, _, err = run(capsys, *args, "-q")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    assert "is not a folder" in one_line_error("import", "lerobot", tmp_path / "nowhere", tmp_path / "a.zarr")
    assert "not a LeRobot dataset" in one_line_error("import", "lerobot", reach.path, tmp_path / "b.zarr")

    old = tmp_path / "old"
    write_lerobot_v3(old, [3, 3])
    info = json.loads((old / "meta/info.json").read_text())
    (old / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    assert "v2.1" in one_line_error("import", "lerobot", old, tmp_path / "c.zarr")
    (old / "meta/info.json").write_text("{\"codebase_version\": \"v3.0\", ")
    assert "not readable JSON" in one_line_error("import", "lerobot", old, tmp_path / "d.zarr")

    assert "exists" in one_line_error("import", "lerobot", handmade, reach.path)
    (tmp_path / "e").mkdir()
    assert "exists" in one_line_error("import", "lerobot", handmade, tmp_path / "e")
    assert "exists" in one_line_error("export", "lerobot", reach.path, exported)

    damaged = tmp_path / "damaged"
    write_lerobot_v3(damaged, [3, 3])
    data = damaged / "data/chunk-000/file-000.parquet"
    data.write_bytes(data.read_bytes()[: len(data.read_bytes()) // 2])
    assert "damaged" in one_line_error("import", "lerobot", damaged, tmp_path / "f.zarr")


# ------------------------------------------------------------------------ LeRobot's own classes (optional group)


def pyav_frames_at(video_path, timestamps, tolerance_s, backend=None):
    """LeRobot's decode_video_frames contract ([N, C, H, W] float32 in [0, 1], the frames shown at `timestamps`
    within tolerance_s), with PyAV: the torchvision (VideoReader) and torchcodec backends do not run here."""
    import torch

    with av.open(str(video_path)) as container:
        decoded = [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]
    times = np.array([time for time, _ in decoded])
    picks = [int(np.abs(times - t).argmin()) for t in timestamps]
    assert all(abs(times[i] - t) < tolerance_s for i, t in zip(picks, timestamps, strict=True))
    return torch.from_numpy(np.stack([decoded[i][1] for i in picks])).permute(0, 3, 1, 2).float() / 255


@pytest.fixture
def lerobot_dataset(monkeypatch, tmp_path):
    pytest.importorskip("lerobot", reason="LeRobot's own dataset classes need lerobot (not in the interop extra)")
    module = pytest.importorskip("lerobot.datasets.lerobot_dataset", reason="lerobot's dataset module does not import")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(module, "decode_video_frames", pyav_frames_at)
    return module.LeRobotDataset


def test_lerobots_own_loader_reads_the_export(lerobot_dataset, reach, exported):
    dataset = lerobot_dataset("robot_stack/reach", root=exported)
    assert dataset.num_episodes == EPISODES and len(dataset) == reach.n_frames and dataset.fps == 20
    assert dataset.meta.video_keys == ["observation.images.top"] and dataset.meta.robot_type == reach.robot["name"]
    state = np.concatenate([reach.frames(name).reshape(reach.n_frames, -1) for name, spec in reach.features.items()
                            if spec.kind == "state"], axis=1)
    images = reach.frames("image.top")
    for index in (0, 30, 31, reach.n_frames - 1):  # the first and last frame of an episode, the next one's first
        item = dataset[index]
        episode = int(reach.episode_of(index))
        assert int(item["episode_index"]) == episode and item["task"] == (reach.episode_info(episode).task_text or "")
        np.testing.assert_array_equal(item["observation.state"].numpy(), state[index])
        np.testing.assert_array_equal(item["action"].numpy(), reach.frames("action", index, index + 1)[0])
        assert float(item["next.reward"]) == float(reach.frames("sim_reward", index, index + 1)[0])
        assert bool(item["next.success"]) == bool(reach.frames("sim_success", index, index + 1)[0])
        image = (item["observation.images.top"].permute(1, 2, 0).numpy() * 255).round().astype(int)
        assert np.abs(image - images[index].astype(int)).max() <= lerobot.IMAGE_TOLERANCE
    assert dataset.meta.stats["observation.state"]["mean"].shape == (state.shape[1],)

    # what ACT / diffusion policies ask for: an action chunk and the previous image, padded at episode edges
    chunked = lerobot_dataset("robot_stack/reach", root=exported, delta_timestamps={
        "action": [0.0, 0.05, 0.1], "observation.images.top": [-0.05, 0.0]})
    last = reach.episode_slice(0).stop - 1
    item = chunked[last]
    np.testing.assert_array_equal(item["action"][0].numpy(), reach.frames("action", last, last + 1)[0])
    assert item["action_is_pad"].tolist() == [False, True, True]
    item = chunked[last + 1]
    assert item["observation.images.top_is_pad"].tolist() == [True, False]
    image = (item["observation.images.top"][1].permute(1, 2, 0).numpy() * 255).round().astype(int)
    assert np.abs(image - images[last + 1].astype(int)).max() <= lerobot.IMAGE_TOLERANCE


def test_lerobots_own_recorder_writes_a_dataset_the_import_reads(lerobot_dataset, tmp_path):
    features = {
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["x", "y", "z"]},
        "observation.images.cam": {"dtype": "video", "shape": (24, 32, 3), "names": ["height", "width", "channels"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["a0", "a1"]},
    }
    recorded = lerobot_dataset.create("robot_stack/recorded", fps=10, features=features, root=tmp_path / "rec",
                                      robot_type="toy")
    frame = 0
    for length, task in ((7, "push"), (5, "pull"), (6, "push")):
        for _ in range(length):
            recorded.add_frame({"observation.state": np.array([frame, -frame, 1], np.float32),
                                "action": np.array([frame, 0], np.float32), "task": task,
                                "observation.images.cam": np.full((24, 32, 3), 10 * frame, np.uint8)})
            frame += 1
        recorded.save_episode()
    recorded.finalize()
    ds = lerobot.import_dataset(tmp_path / "rec", tmp_path / "rec.zarr", progress=False)
    assert [ds.episode_slice(i).stop for i in range(ds.n_episodes)] == [7, 12, 18]
    assert [ds.episode_info(i).task_text for i in range(3)] == ["push", "pull", "push"]
    np.testing.assert_array_equal(ds.frames("state")[:, 0], np.arange(18))
    # LeRobot's recorder encodes AV1 at crf 30 (lossy, 4:2:0): flat frames come back within a few levels
    assert np.abs(ds.frames("image.cam")[:, 5, 5, 0].astype(int) - 10 * np.arange(18)).max() <= 4
    assert list(ds.success) == [-1, -1, -1]


def test_lerobots_act_policy_trains_on_the_export(lerobot_dataset, exported):
    """A user's first LeRobot run on a robot_stack recording: ACT, its own pre/post processors with the export's
    stats, action chunks from delta_timestamps; a few updates on one batch lower its loss, and it acts."""
    import torch

    act = pytest.importorskip("lerobot.policies.act.modeling_act", reason="LeRobot's policies need draccus, diffusers")
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.utils import dataset_to_policy_features
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.processor_act import make_act_pre_post_processors

    torch.manual_seed(0)
    dataset = lerobot_dataset("robot_stack/reach", root=exported, delta_timestamps={"action": [0.0, 0.05, 0.1, 0.15]})
    features = dataset_to_policy_features(dataset.meta.features)
    assert {key: feature.type for key, feature in features.items()} == {
        "observation.state": FeatureType.STATE, "observation.images.top": FeatureType.VISUAL, "action": FeatureType.ACTION}
    outputs = {key: feature for key, feature in features.items() if feature.type is FeatureType.ACTION}
    config = ACTConfig(input_features={key: f for key, f in features.items() if key not in outputs},
                       output_features=outputs, chunk_size=4, n_action_steps=4, dim_model=32, n_heads=2,
                       dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1, dropout=0.0, use_vae=False,
                       pretrained_backbone_weights=None, device="cpu")
    policy = act.ACTPolicy(config)
    preprocess, postprocess = make_act_pre_post_processors(config, dataset_stats=dataset.meta.stats)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=False)))
    optimizer = torch.optim.Adam(policy.parameters(), 1e-3)
    losses = []
    for _ in range(5):
        loss, _ = policy.forward(preprocess(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    policy.eval()
    observation = {key: value[:1] for key, value in batch.items() if key.startswith("observation.")}
    assert postprocess(policy.select_action(preprocess(observation))).shape == (1, 2)


def test_lerobots_episode_tools_edit_the_export_and_the_import_reads_the_result(lerobot_dataset, reach, exported, tmp_path):
    """LeRobot's delete_episodes re-aggregates the export's per-episode stats and re-encodes its videos (AV1, crf
    30); its output has no robot_stack section, so the import maps LeRobot's keys."""
    tools = pytest.importorskip("lerobot.datasets.dataset_tools", reason="LeRobot's dataset tools do not import")
    tools.delete_episodes(lerobot_dataset("robot_stack/reach", root=exported), [1], output_dir=tmp_path / "edited",
                          repo_id="robot_stack/reach_edited")
    ds = lerobot.import_dataset(tmp_path / "edited", tmp_path / "edited.zarr", progress=False)
    kept = [i for i in range(EPISODES) if i != 1]
    assert ds.n_episodes == EPISODES - 1
    assert [ds.episode_slice(i).stop - ds.episode_slice(i).start for i in range(ds.n_episodes)] == [
        reach.episode_slice(i).stop - reach.episode_slice(i).start for i in kept]

    def of_kept(name):
        return np.concatenate([reach.frames(name, reach.episode_slice(i).start, reach.episode_slice(i).stop) for i in kept])

    state = np.concatenate([of_kept(name).reshape(-1, int(np.prod(spec.shape))) for name, spec in reach.features.items()
                            if spec.kind == "state"], axis=1)
    np.testing.assert_array_equal(ds.frames("state"), state)
    np.testing.assert_array_equal(ds.frames("action"), of_kept("action"))
    np.testing.assert_array_equal(ds.frames("reward"), of_kept("sim_reward"))
    assert np.abs(ds.frames("image.top").astype(float) - of_kept("image.top")).mean() < 8  # lossy, but aligned
