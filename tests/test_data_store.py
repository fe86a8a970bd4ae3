"""The dataset store: round trips, the commit rule under SIGKILL and a full disk, validation, merge/split,
statistics, fingerprint, labels, and the samplers learners use. Real Zarr on disk in tmp_path.

Run as a script (`python tests/test_data_store.py PATH SEED`) it is the recorder the kill test kills.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from robot_stack.data import Dataset, DatasetWriter, FeatureSpec, recover, validate
from robot_stack.data.merge import merge, split
from robot_stack.data.sampling import frame_rewards, load_transitions, load_windows, transition_index
from robot_stack.data.stats import QUANTILE_BINS, compute_stats, dataset_stats
from robot_stack.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]
IMAGE = (12, 16, 3)
FEATURES = [
    FeatureSpec("joint_pos", "float32", (7,), "state", topic="/joint_states", units="rad"),
    FeatureSpec("action", "float32", (4,), "action", topic="/robot/command"),
    FeatureSpec("sim_reward", "float32", (), "reward", topic="/sim/reward"),
    FeatureSpec("wrist_rgb", "uint8", IMAGE, "image", topic="/camera/wrist/image_raw"),
]
ROBOT = {"name": "test_arm", "command": "eef_delta_xyz+gripper"}
TASKS = ["pick the cube", "open the drawer"]


def episode_frames(key: int, n: int) -> dict[str, np.ndarray]:
    """Frames of the episode recorded under `key`: different for every key and frame."""
    i = np.arange(n)
    image = (key * 37 + i[:, None, None, None] * 5 + np.arange(IMAGE[1])[None, None, :, None]) % 256
    return {
        "joint_pos": (key * 100 + i[:, None] + np.arange(7) / 10).astype(np.float32),
        "action": np.sin(key + i[:, None] * np.arange(1, 5)).astype(np.float32),
        "sim_reward": ((i + key) % 3 == 0).astype(np.float32),
        "wrist_rgb": np.broadcast_to(image, (n, *IMAGE)).astype(np.uint8),
        "timestamp": 1000.0 + key * 10 + i / 100,
    }


def frame_at(frames: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    return {name: values[i] for name, values in frames.items()}


def make_dataset(path: Path, episodes: list[tuple[int, int, str | None, bool | None]], **create) -> Path:
    """Record (key, length, task, success) episodes, frame by frame."""
    writer = DatasetWriter.create(path, robot=ROBOT, record_hz=30, features=FEATURES, tasks=TASKS, **create)
    for key, n, task, success in episodes:
        frames = episode_frames(key, n)
        for i in range(n):
            writer.append_frame(frame_at(frames, i))
        writer.commit_episode(task, success, operator="ada", notes=f"key {key}")
    writer.close()
    return path


def assert_episode_is(ds: Dataset, index: int, key: int, n: int | None = None) -> None:
    episode = ds.episode(index)
    n = len(episode["timestamp"]) if n is None else n
    expected = episode_frames(key, n)
    for name, values in expected.items():
        np.testing.assert_array_equal(np.asarray(episode[name]), values, err_msg=f"episode {index} feature {name}")


# ---- round trip


def test_round_trip_of_episodes_with_low_dim_and_image_features(tmp_path):
    path = tmp_path / "demo.zarr"
    writer = DatasetWriter.create(path, robot=ROBOT, record_hz=30, features=FEATURES, tasks=TASKS, image_shard_frames=4)
    lengths = [9, 1, 14, 6]
    for key, n in enumerate(lengths):
        frames = episode_frames(key, n)
        if key % 2:
            writer.append_frames(frames)  # a batch
        else:
            for i in range(n):
                writer.append_frame(frame_at(frames, i))
        task = ["pick the cube", "stack two cubes", 1, None][key]
        writer.commit_episode(task, success=[True, False, None, True][key], operator="ada", notes=f"key {key}")
    writer.close()

    ds = Dataset.open(path)
    assert (ds.n_episodes, ds.n_frames, ds.unfinished_frames) == (4, sum(lengths), 0)
    assert ds.tasks == [*TASKS, "stack two cubes"]
    assert ds.robot == ROBOT and ds.record_hz == 30
    assert ds.features["wrist_rgb"] == FEATURES[3] and ds.features["timestamp"].units == "s"
    for key, n in enumerate(lengths):
        assert_episode_is(ds, key, key, n)
    images = ds.episode(2)["wrist_rgb"]
    assert images.shape == (14, *IMAGE) and images[-1].shape == IMAGE  # lazy view, read per frame
    np.testing.assert_array_equal(images[3:7], episode_frames(2, 14)["wrist_rgb"][3:7])
    table = ds.episode_table()
    assert table["length"].tolist() == lengths
    assert table["task"].tolist() == [0, 2, 1, -1]
    assert table["success"].tolist() == [1, 0, -1, 1]
    assert ds.success_rate == pytest.approx(2 / 3)
    info = ds.episode_info(2)
    assert (info.task_text, info.success, info.operator, info.notes) == ("open the drawer", None, "ada", "key 2")
    assert info.start_time == pytest.approx(1020.0) and info.duration == pytest.approx(0.13)
    assert ds.episode_slice(3) == slice(24, 30)
    assert ds.size_bytes() > 0
    assert validate(path, progress=False) == []


def test_appending_to_an_existing_dataset_checks_the_features(tmp_path):
    path = make_dataset(tmp_path / "d.zarr", [(0, 5, "pick the cube", True)])
    other = [*FEATURES[:3], FeatureSpec("wrist_rgb", "uint8", (24, 32, 3), "image")]
    with pytest.raises(DatasetError, match=r"feature 'wrist_rgb' has shape \(12, 16, 3\) in one and \(24, 32, 3\)"):
        DatasetWriter.open(path, features=other)
    writer = DatasetWriter.open(path, features=FEATURES)
    writer.append_frames(episode_frames(1, 4))
    assert writer.commit_episode("open the drawer", False) == 1
    writer.close()
    ds = Dataset.open(path)
    assert ds.n_episodes == 2
    assert_episode_is(ds, 1, 1, 4)


def test_frames_that_do_not_fit_the_features_are_refused(tmp_path):
    writer = DatasetWriter.create(tmp_path / "d.zarr", robot=ROBOT, record_hz=30, features=FEATURES)
    frame = frame_at(episode_frames(0, 1), 0)
    with pytest.raises(DatasetError, match=r"feature 'joint_pos' expects shape \(7,\)"):
        writer.append_frame(frame | {"joint_pos": np.zeros(6)})
    with pytest.raises(DatasetError, match=r"missing \['action'\]"):
        writer.append_frame({k: v for k, v in frame.items() if k != "action"})
    with pytest.raises(DatasetError, match="nothing to commit"):
        writer.commit_episode("pick the cube", True)
    writer.close()


def test_a_discarded_episode_leaves_nothing_behind(tmp_path):
    path = tmp_path / "d.zarr"
    writer = DatasetWriter.create(path, robot=ROBOT, record_hz=30, features=FEATURES, flush_interval_s=0.1)
    writer.append_frames(episode_frames(0, 7))
    writer.commit_episode("pick", True)
    writer.append_frames(episode_frames(9, 11))  # more than a flush: partly on disk already
    writer.flush()
    writer.discard_episode()
    writer.append_frames(episode_frames(1, 3))
    writer.commit_episode("pick", False)
    writer.close()
    ds = Dataset.open(path)
    assert (ds.n_episodes, ds.n_frames, ds.unfinished_frames) == (2, 10, 0)
    assert_episode_is(ds, 1, 1, 3)
    assert ds.array("joint_pos").shape[0] == 10


# ---- the commit rule


def record_until_killed(path: str, seed: int) -> None:
    """The recorder the kill test kills: short episodes, flushes every 3 frames, a discard now and then.

    Prints `start KEY` before an attempt's first frame and `committed INDEX KEY` after each commit.
    """
    rng = random.Random(seed)
    writer = DatasetWriter.create(path, robot=ROBOT, record_hz=100, features=FEATURES, tasks=TASKS,
                                  flush_interval_s=0.03, image_shard_frames=4)
    print("ready", flush=True)
    committed = 0
    for attempt in itertools.count():
        discard = attempt % 4 == 3
        key = 1000 + attempt if discard else committed
        frames = episode_frames(key, rng.randint(1, 16))
        print(f"start {key}", flush=True)
        for i in range(len(frames["timestamp"])):
            writer.append_frame(frame_at(frames, i))
        if discard:
            writer.discard_episode()
            continue
        writer.commit_episode(TASKS[key % 2], success=key % 3 != 0, operator="child", notes=f"key {key}")
        print(f"committed {committed} {key}", flush=True)
        committed += 1


def test_a_killed_writer_loses_no_committed_episode(tmp_path):
    runs = 12
    children = []
    for run in range(runs):
        path = tmp_path / f"killed{run}.zarr"
        child = subprocess.Popen([sys.executable, __file__, str(path), str(run)], stdout=subprocess.PIPE, text=True, cwd=REPO)
        children.append((path, child))
    rng = random.Random(4)
    delays = [rng.uniform(0.02, 1.0) for _ in range(runs)]

    def kill_later(child: subprocess.Popen, delay: float) -> None:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)

    threads = [threading.Thread(target=kill_later, args=(child, delay)) for (_, child), delay in zip(children, delays)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for run, (path, child) in enumerate(children):
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        lines = [line.split() for line in child.stdout.read().splitlines()]
        reported = [int(words[2]) for words in lines if words[0] == "committed"]
        started = [int(words[1]) for words in lines if words[0] == "start"]
        ds = Dataset.open(path)
        # Killed after commit_episode returned but before it printed: one more than reported.
        assert len(reported) <= ds.n_episodes <= len(reported) + 1, f"run {run}"
        for index in range(ds.n_episodes):
            assert_episode_is(ds, index, index)
            assert ds.episode_info(index).notes == f"key {index}"
        assert ds.n_frames == ds.episode_ends[-1] if ds.n_episodes else ds.n_frames == 0
        assert validate(path, progress=False) == [], f"run {run}"

        unfinished, n = ds.unfinished_frames, ds.n_episodes
        keep = run % 2 == 0
        result = recover(path, keep=keep)
        after = Dataset.open(path)
        assert after.unfinished_frames == 0 and not list(path.rglob("*.partial"))
        if keep and result.kept_frames:
            assert after.n_episodes == n + 1 and result.kept_episode == n
            # The kept frames are a prefix of the attempt being recorded (or the whole of a commit cut short).
            assert_episode_is(after, n, started[-1])
            assert after.episode_info(n).notes in ("recovered", f"key {started[-1]}")
        else:
            assert after.n_episodes == n and result.dropped_frames == (0 if keep else unfinished)
            assert all(after.array(name).shape[0] == after.n_frames for name in after.features)
        writer = DatasetWriter.open(path)  # appending works again
        writer.append_frames(episode_frames(77, 3))
        writer.commit_episode("pick the cube", True)
        writer.close()
        final = Dataset.open(path)
        assert_episode_is(final, final.n_episodes - 1, 77, 3)
        assert validate(path, progress=False) == []


# ---- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB file system: tmpfs, else a loop-mounted ext4 image; skipped only if neither can be mounted."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    attempts = []
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if tmpfs.returncode != 0:
        attempts.append(f"tmpfs: {tmpfs.stderr.strip()}")
        image = tmp_path / "disk.img"
        with image.open("wb") as handle:
            handle.truncate(4 << 20)
        loop = subprocess.run(f"mkfs.ext4 -q {image} && mount -o loop {image} {mount_point}", shell=True, capture_output=True, text=True)
        if loop.returncode != 0:
            attempts.append(f"loop device: {loop.stderr.strip()}")
            pytest.skip(f"cannot mount a small file system to fill (needs root): {'; '.join(attempts)}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_raises_dataset_error_and_keeps_committed_episodes(small_disk):
    path = small_disk / "d.zarr"
    noise = np.random.default_rng(0)
    features = [FEATURES[0], FeatureSpec("cam", "uint8", (64, 64, 3), "image")]  # incompressible frames
    writer = DatasetWriter.create(path, robot=ROBOT, record_hz=30, features=features, flush_interval_s=0.3)
    committed = 0
    with pytest.raises(DatasetError) as failure:
        for key in range(1000):
            for i in range(20):
                writer.append_frame({"joint_pos": np.full(7, key, np.float32), "timestamp": key + i / 30,
                                     "cam": noise.integers(0, 256, (64, 64, 3), dtype=np.uint8)})
            writer.commit_episode("fill the disk", True)
            committed += 1
    message = str(failure.value)
    assert "the disk is full" in message and str(path) in message and "Committed episodes are intact" in message
    assert committed > 0
    try:
        writer.discard_episode()
    except DatasetError:
        pass  # discarding may need a few bytes the disk no longer has; the data stays unfinished then
    ds = Dataset.open(path)
    assert ds.n_episodes in (committed, committed + 1)  # +1: the disk filled after the commit point
    for index in range(ds.n_episodes):
        np.testing.assert_array_equal(ds.episode(index)["joint_pos"], np.full((20, 7), index, np.float32))
    assert validate(path, progress=False) == []


# ---- damage and foreign stores


def _flip_bytes(file: Path, offset: int, count: int = 16) -> None:
    data = bytearray(file.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    file.write_bytes(bytes(data))


def test_validate_names_the_array_and_episode_of_a_corrupted_chunk(tmp_path):
    path = make_dataset(tmp_path / "d.zarr", [(0, 6, "pick", True), (1, 5, "pick", True), (2, 7, "pick", False)],
                        image_shard_frames=4)
    # Frame 8 (episode 1: frames 6-10) is the first frame of image shard 2; find its bytes through the shard index.
    shard = path / "data" / "wrist_rgb" / "c" / "2" / "0" / "0" / "0"
    index = np.frombuffer(shard.read_bytes()[-(16 * 4 + 4) : -4], "<u8").reshape(4, 2)
    _flip_bytes(shard, int(index[0, 0]) + int(index[0, 1]) // 2)
    problems = validate(path, progress=False)
    assert len(problems) == 1, problems
    assert problems[0].startswith("data/wrist_rgb: frames 8-8 cannot be read") and "episode 1:" in problems[0]

    _flip_bytes(path / "data" / "joint_pos" / "c" / "0" / "0", 20)  # the one low-dim chunk: every episode
    (path / "data" / "wrist_rgb" / "c" / "0" / "0" / "0" / "0").unlink()  # frames 0-3
    problems = validate(path, progress=False)
    assert any(p.startswith("data/joint_pos: frames 0-17 cannot be read") and "episodes 0-2" in p for p in problems), problems
    assert any(p.startswith("data/wrist_rgb: frames 0-3 are missing") and "episode 0:" in p for p in problems), problems


def test_opening_something_that_is_not_a_usable_dataset_says_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match=r"no dataset at .*nowhere.zarr: the path does not exist"):
        Dataset.open(tmp_path / "nowhere.zarr")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DatasetError, match="is not a Zarr v3 store: it has no zarr.json"):
        Dataset.open(tmp_path / "folder")
    zarr.open_group(tmp_path / "foreign.zarr", mode="w", zarr_format=3).attrs["whatever"] = 1
    with pytest.raises(DatasetError, match="is a Zarr store but not a robot_stack dataset"):
        Dataset.open(tmp_path / "foreign.zarr")

    path = make_dataset(tmp_path / "d.zarr", [(0, 4, "pick", True), (1, 3, "pick", True)])
    newer = tmp_path / "newer.zarr"
    shutil.copytree(path, newer)
    root = json.loads((newer / "zarr.json").read_text())
    root["attributes"]["schema_version"] = 99
    (newer / "zarr.json").write_text(json.dumps(root))
    with pytest.raises(DatasetError, match="schema_version 99, newer than the 1 .*: upgrade robot_stack"):
        Dataset.open(newer)

    zarr.open_array(path / "data" / "action", mode="r+").resize((5, 4))  # shorter than the 7 committed frames
    with pytest.raises(DatasetError, match="data/action has 5 frames but meta/episode_ends commits 7: feature lengths are inconsistent"):
        Dataset.open(path)
    assert "inconsistent" in validate(path, progress=False)[0]


# ---- merge and split


def test_merge_combines_episodes_and_remaps_task_indices(tmp_path):
    a = make_dataset(tmp_path / "a.zarr", [(0, 4, "pick the cube", True), (1, 3, "wipe", False)])
    writer = DatasetWriter.create(tmp_path / "b.zarr", robot=ROBOT, record_hz=30, features=FEATURES, tasks=["wipe"])
    writer.append_frames(episode_frames(2, 5))
    writer.commit_episode("wipe", None, notes="key 2")
    writer.close()
    merged = merge(tmp_path / "m.zarr", [a, tmp_path / "b.zarr"], progress=False)
    assert merged.n_episodes == 3 and merged.tasks == [*TASKS, "wipe"]
    assert [merged.episode_info(i).task_text for i in range(3)] == ["pick the cube", "wipe", "wipe"]
    assert merged.success.tolist() == [1, 0, -1]
    for index, key in enumerate([0, 1, 2]):
        assert_episode_is(merged, index, key)
    assert [source["path"] for source in merged._store.root.attrs["provenance"]["merged_from"]] == [str(a), str(tmp_path / "b.zarr")]

    other = DatasetWriter.create(tmp_path / "c.zarr", robot=ROBOT, record_hz=15, features=FEATURES)
    other.close()
    with pytest.raises(DatasetError, match=r"cannot merge .*c.zarr into a dataset with .*a.zarr: record_hz is 30.0 in one and 15.0"):
        merge(tmp_path / "m2.zarr", [a, tmp_path / "c.zarr"], progress=False)


def test_split_by_episode_is_complete_and_depends_only_on_the_seed(tmp_path):
    keys = list(range(10))
    path = make_dataset(tmp_path / "d.zarr", [(key, 2 + key % 4, TASKS[key % 2], key % 3 == 0) for key in keys])
    train, val = split(path, tmp_path / "train.zarr", tmp_path / "val.zarr", val_fraction=0.3, seed=5, progress=False)
    assert (train.n_episodes, val.n_episodes) == (7, 3)
    val_keys = val._store.root.attrs["provenance"]["split_of"]["episodes"]
    train_keys = train._store.root.attrs["provenance"]["split_of"]["episodes"]
    assert sorted(val_keys + train_keys) == keys
    for ds, chosen in ((train, train_keys), (val, val_keys)):
        for index, key in enumerate(chosen):
            assert_episode_is(ds, index, key)
            assert ds.episode_info(index).notes == f"key {key}"
    again = split(path, tmp_path / "t2.zarr", tmp_path / "v2.zarr", val_fraction=0.3, seed=5, progress=False,
                  image_shard_frames=1)[1]
    assert again._store.root.attrs["provenance"]["split_of"]["episodes"] == val_keys
    assert again.array("wrist_rgb").shards is None  # re-laid out: a file per frame
    for index, key in enumerate(val_keys):
        assert_episode_is(again, index, key)


# ---- statistics and fingerprint


def test_stats_match_numpy_and_are_recomputed_when_the_data_changes(tmp_path):
    path = make_dataset(tmp_path / "d.zarr", [(key, 20 + key, "pick", True) for key in range(5)])
    ds = Dataset.open(path)
    blocked = compute_stats(ds, block_frames=7)  # several blocks: the merge of partial results is exercised
    for name in ("joint_pos", "action", "sim_reward"):
        values = ds.frames(name).astype(np.float64)
        got = blocked[name]
        np.testing.assert_allclose(got.mean, values.mean(axis=0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.std, values.std(axis=0), rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(got.min, values.min(axis=0))
        np.testing.assert_array_equal(got.max, values.max(axis=0))
        tolerance = (values.max(axis=0) - values.min(axis=0)) / QUANTILE_BINS + 1e-12
        for q, mine in ((0.01, got.q01), (0.99, got.q99)):
            assert np.all(np.abs(mine - np.quantile(values, q, axis=0)) <= tolerance), (name, q)
    assert set(blocked) == {"joint_pos", "action", "sim_reward"}  # not images, not timestamps

    stored = dataset_stats(ds)
    stats_attrs = zarr.open_group(path, mode="r")["meta"]["stats"].attrs
    assert stats_attrs["fingerprint"] == ds.fingerprint() and stats_attrs["n_frames"] == ds.n_frames
    np.testing.assert_allclose(dataset_stats(Dataset.open(path))["joint_pos"].mean, stored["joint_pos"].mean)

    writer = DatasetWriter.open(path)
    writer.append_frames(episode_frames(50, 9))
    writer.commit_episode("pick", True)
    writer.close()
    grown = Dataset.open(path)
    assert dataset_stats(grown)["joint_pos"].count == grown.n_frames == ds.n_frames + 9


def test_fingerprint_changes_on_append_and_edit_but_not_with_unfinished_frames(tmp_path):
    path = make_dataset(tmp_path / "d.zarr", [(0, 6, "pick", True), (1, 4, "pick", False)])
    before = Dataset.open(path).fingerprint()
    assert Dataset.open(path).fingerprint() == before  # stable

    writer = DatasetWriter.open(path)
    writer.append_frames(episode_frames(2, 5))
    writer.flush()  # on disk, not committed
    assert Dataset.open(path).fingerprint() == before
    writer.commit_episode("pick", True)
    writer.close()
    appended = Dataset.open(path).fingerprint()
    assert appended != before

    copy = tmp_path / "copy.zarr"
    shutil.copytree(path, copy)
    assert Dataset.open(copy).fingerprint() == appended  # a copy is the same data
    joint = zarr.open_array(copy / "data" / "joint_pos", mode="r+")
    joint[3, 2] = -5.0
    assert Dataset.open(copy).fingerprint() != appended
    shutil.rmtree(copy)
    shutil.copytree(path, copy)
    images = zarr.open_array(copy / "data" / "wrist_rgb", mode="r+")
    images[4] = 255 - images[4]  # same compressed size: seen through its zstd content checksum
    assert Dataset.open(copy).fingerprint() != appended

    Dataset.open(path).fingerprint(store=True)
    assert zarr.open_group(path, mode="r")["meta"]["fingerprint"].attrs["value"] == appended


# ---- labels


def test_labels_are_stored_beside_the_data_with_provenance(tmp_path):
    path = make_dataset(tmp_path / "d.zarr", [(0, 6, "pick", True), (1, 4, "pick", False)])
    ds = Dataset.open(path)
    reward = np.linspace(0, 1, ds.n_frames, dtype=np.float32)
    ds.write_labels("clip_v1", reward, {"labeler": "clip_progress", "model": "tiny", "prompts": ["a robot picks"], "config": {"k": 1}})
    labels = Dataset.open(path).read_labels("clip_v1")
    np.testing.assert_array_equal(labels.reward, reward)
    assert labels.attrs["labeler"] == "clip_progress" and labels.attrs["dataset_fingerprint"] == ds.fingerprint()
    assert labels.attrs["n_frames"] == 10 and "created" in labels.attrs
    assert Dataset.open(path).label_runs() == ["clip_v1"]
    np.testing.assert_array_equal(frame_rewards(Dataset.open(path), "label:clip_v1"), reward)
    with pytest.raises(DatasetError, match="already has label run 'clip_v1'"):
        ds.write_labels("clip_v1", reward, {"labeler": "x"})
    with pytest.raises(DatasetError, match=r"one reward per committed frame: shape \(10,\)"):
        ds.write_labels("short", reward[:-1], {"labeler": "x"})
    with pytest.raises(DatasetError, match="no label run 'nope'"):
        ds.read_labels("nope")
    assert validate(path, progress=False) == []
    assert Dataset.open(path).fingerprint() == ds.fingerprint()  # labels are beside the data, not in it


# ---- samplers


def test_transitions_never_cross_episodes_and_flag_the_last_step(tmp_path):
    episodes = [(0, 5, "pick", True), (1, 1, "pick", True), (2, 4, "pick", False), (3, 3, "pick", None)]
    ds = Dataset.open(make_dataset(tmp_path / "d.zarr", episodes))
    for n_step in (1, 3):
        index = transition_index(ds, "success", n_step=n_step)
        assert len(index.frame) == 4 + 0 + 3 + 2  # T - 1 per episode
        assert np.all(ds.episode_of(index.frame) == ds.episode_of(index.next_frame))
        assert np.all(index.episode == ds.episode_of(index.frame))
        ends_episode = index.next_frame == ds.episode_ends[index.episode] - 1
        # Succeeded: terminal; failed or unknown: timeout; never both, never before the end.
        assert np.array_equal(index.terminal, ends_episode & (ds.success[index.episode] == 1))
        assert np.array_equal(index.timeout, ends_episode & (ds.success[index.episode] != 1))
    one = load_transitions(ds, ["joint_pos"], action="action", reward="success")
    np.testing.assert_array_equal(one.next_obs["joint_pos"], ds.frames("joint_pos")[one.frame + 1])
    np.testing.assert_array_equal(one.action, ds.frames("action")[one.frame])
    # Sparse success: 1 on the transition into a successful episode's last frame only.
    assert one.reward.tolist() == [0, 0, 0, 1] + [0, 0, 0] + [0, 0]
    assert np.allclose(one.discount, 0.99)


def test_n_step_returns_match_hand_computed_values(tmp_path):
    ds = Dataset.open(make_dataset(tmp_path / "d.zarr", [(0, 4, "pick", True), (1, 3, "pick", False)]))
    r = frame_rewards(ds, "feature:sim_reward")
    np.testing.assert_array_equal(r, np.concatenate([episode_frames(0, 4)["sim_reward"], episode_frames(1, 3)["sim_reward"]]))
    g = 0.5
    got = transition_index(ds, "feature:sim_reward", n_step=2, gamma=g)
    # Episode 0 = frames 0-3 (succeeded), episode 1 = frames 4-6 (failed).
    assert got.frame.tolist() == [0, 1, 2, 4, 5]
    assert got.next_frame.tolist() == [2, 3, 3, 6, 6]
    np.testing.assert_allclose(got.reward, [r[1] + g * r[2], r[2] + g * r[3], r[3], r[5] + g * r[6], r[6]])
    np.testing.assert_allclose(got.discount, [g**2, g**2, g, g**2, g])
    assert got.terminal.tolist() == [False, True, True, False, False]
    assert got.timeout.tolist() == [False, False, False, True, True]
    # The data's own return to its episode's end (1-step rewards whatever n is, nothing past a timeout).
    np.testing.assert_allclose(got.return_to_go, [r[1] + g * r[2] + g**2 * r[3], r[2] + g * r[3], r[3],
                                                  r[5] + g * r[6], r[6]], rtol=1e-6)
    with pytest.raises(DatasetError, match="unknown reward source 'dense'"):
        transition_index(ds, "dense")


def test_windows_repeat_the_last_frame_past_an_episode_end(tmp_path):
    ds = Dataset.open(make_dataset(tmp_path / "d.zarr", [(0, 4, "pick", True), (1, 2, "pick", True)]))
    windows = load_windows(ds, ["joint_pos", "action"], length=3)
    assert windows.data["joint_pos"].shape == (6, 3, 7) and windows.valid.shape == (6, 3)
    first = windows.data["joint_pos"][:, :, 0]
    assert first.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 3], [3, 3, 3], [100, 101, 101], [101, 101, 101]]
    assert windows.valid.tolist() == [[True] * 3, [True] * 3, [True, True, False], [True, False, False],
                                      [True, True, False], [True, False, False]]
    assert windows.episode.tolist() == [0, 0, 0, 0, 1, 1]
    with pytest.raises(DatasetError, match="are images"):
        load_windows(ds, ["wrist_rgb"], length=2)


def test_torch_loader_reads_the_same_transitions_and_images_in_workers(tmp_path):
    torch = pytest.importorskip("torch")
    from robot_stack.data.loader import TransitionDataset, WindowDataset

    path = make_dataset(tmp_path / "d.zarr", [(0, 9, "pick", True), (1, 7, "pick", False)], image_shard_frames=4)
    ds = Dataset.open(path)
    reference = load_transitions(ds, ["joint_pos"], reward="feature:sim_reward", n_step=2, gamma=0.9)
    dataset = TransitionDataset(path, obs=["joint_pos", "wrist_rgb"], reward="feature:sim_reward", n_step=2, gamma=0.9)
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, shuffle=False, num_workers=2)
    batches = list(loader)
    obs = torch.cat([b["obs"]["joint_pos"] for b in batches]).numpy()
    np.testing.assert_array_equal(obs, reference.obs["joint_pos"])
    np.testing.assert_allclose(torch.cat([b["reward"] for b in batches]).numpy(), reference.reward)
    images = torch.cat([b["next_obs"]["wrist_rgb"] for b in batches])
    assert images.dtype == torch.uint8 and images.shape == (len(reference), *IMAGE)
    np.testing.assert_array_equal(images.numpy(), ds.frames("wrist_rgb")[dataset.index.next_frame])

    on_device = reference.to_torch("cpu")
    batch = on_device.batch(torch.tensor([0, 2]))
    assert batch.obs["joint_pos"].shape == (2, 7) and batch.terminal.dtype == torch.bool

    windows = WindowDataset(path, ["wrist_rgb", "action"], length=4)
    item = windows[8]  # the last frame of episode 0: three padded frames
    assert item["valid"].tolist() == [True, False, False, False]
    np.testing.assert_array_equal(item["wrist_rgb"].numpy(), np.repeat(ds.frames("wrist_rgb")[8:9], 4, axis=0))


def test_the_example_in_docs_dataset_md_runs(tmp_path, monkeypatch):
    text = (REPO / "docs" / "dataset.md").read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    assert blocks
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/dataset.md", "exec"), {})
    assert validate(tmp_path / "demo.zarr", progress=False) == []


if __name__ == "__main__":
    record_until_killed(sys.argv[1], int(sys.argv[2]))


def test_a_terminated_flag_at_an_episodes_last_frame_makes_it_terminal_without_success(tmp_path):
    """Gymnasium/Minari terminations (a fall) end the episode as success does: no bootstrap past them; a flag raised
    before the last frame, or none, leaves a failed episode a timeout."""
    features = [FeatureSpec("x", "float32", (2,), "state"), FeatureSpec("action", "float32", (1,), "action"),
                FeatureSpec("terminated", "bool", (), "flag")]
    writer = DatasetWriter.create(tmp_path / "t.zarr", robot=ROBOT, record_hz=10, features=features)
    for length, raised_at, success in ((4, 3, False), (3, None, False), (5, 2, False), (3, None, True)):
        flag = np.zeros(length, bool)
        if raised_at is not None:
            flag[raised_at] = True
        writer.append_frames({"x": np.zeros((length, 2), np.float32), "action": np.zeros((length, 1), np.float32),
                              "terminated": flag, "timestamp": np.arange(length) / 10.0})
        writer.commit_episode(None, success)
    writer.close()
    ds = Dataset.open(tmp_path / "t.zarr")
    index = transition_index(ds, "none")
    last = [index.episode == e for e in range(4)]
    assert [bool(index.terminal[m][-1]) for m in last] == [True, False, False, True]
    assert [bool(index.timeout[m][-1]) for m in last] == [False, True, True, False]
    ends_episode = index.next_frame == ds.episode_ends[index.episode] - 1
    assert not (index.terminal & ~ends_episode).any()
