"""`robot-stack data ...`: info, validate, view, export-video, import-bag, recover, merge, split, stats,
run in-process through the CLI dispatcher on real Zarr datasets (and real rosbag2 files) in tmp_path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robot_stack.cli.main import main
from robot_stack.data import Dataset, DatasetWriter, FeatureSpec

REPO = Path(__file__).resolve().parents[1]
IMAGE = (32, 32, 3)
RECORD_HZ = 10
FEATURES = [
    FeatureSpec("joint_pos", "float32", (7,), "state", topic="/joint_states", units="rad"),
    FeatureSpec("action", "float32", (4,), "action", topic="/robot/command"),
    FeatureSpec("sim_reward", "float32", (), "reward", topic="/sim/reward"),
    FeatureSpec("wrist_rgb", "uint8", IMAGE, "image", topic="/camera/wrist/image_raw"),
]
ROBOT = {"name": "test_arm", "command": "eef_delta_xyz+gripper"}
LENGTHS = (20, 25, 30)


def episode_frames(key: int, n: int) -> dict[str, np.ndarray]:
    i = np.arange(n)
    image = np.zeros((n, *IMAGE), np.uint8)
    image[..., 0] = (key * 60 + i * 7)[:, None, None] % 256  # red tells the episode and frame
    image[..., 1] = 40 * key % 256
    return {
        "joint_pos": (key * 100 + i[:, None] + np.arange(7) / 10).astype(np.float32),
        "action": np.sin(key + i[:, None] * np.arange(1, 5) / 5).astype(np.float32),
        "sim_reward": (i / n).astype(np.float32),
        "wrist_rgb": image,
        "timestamp": 1000.0 + key * 10 + i / RECORD_HZ,
    }


def make_dataset(path: Path, unfinished: int = 0) -> Path:
    writer = DatasetWriter.create(path, robot=ROBOT, record_hz=RECORD_HZ, features=FEATURES, tasks=["pick the cube"])
    for key, n in enumerate(LENGTHS):
        writer.append_frames(episode_frames(key, n))
        writer.commit_episode("pick the cube", key != 1, operator="ada")
    if unfinished:
        writer.append_frames(episode_frames(9, unfinished))
    writer.close()  # an uncommitted episode stays on disk as unfinished frames
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A read-only dataset shared by the tests that only look at it."""
    return make_dataset(tmp_path_factory.mktemp("data") / "demo.zarr")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["data", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("robot-stack data: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])


# ---- help


def test_every_verb_has_help_with_examples(capsys):
    verbs = ["info", "validate", "view", "export-video", "import-bag", "recover", "merge", "split", "stats"]
    with pytest.raises(SystemExit) as exit_:
        main(["data", "--help"])
    assert exit_.value.code == 0
    top = capsys.readouterr().out
    for verb in verbs:
        assert verb in top
        with pytest.raises(SystemExit):
            main(["data", verb, "--help"])
        text = capsys.readouterr().out
        assert "examples:" in text and f"robot-stack data {verb}" in text, verb


# ---- info


def test_info_text_shows_counts_features_tasks_success_and_size(capsys, demo):
    code, out, _ = run(capsys, "info", demo, "--episodes")
    assert code == 0
    assert f"3, {sum(LENGTHS)} frames" in out
    assert "record_hz  10" in out
    assert "67% of known outcomes (2 succeeded, 1 failed, 0 unknown)" in out
    assert "kB on disk" in out and "unfinished none" in out
    for spec in FEATURES:
        row = next(line for line in out.splitlines() if line.strip().startswith(spec.name + " "))
        assert spec.kind in row and spec.dtype in row and str(spec.shape) in row and spec.topic in row
    assert "'pick the cube'  (3 episodes)" in out
    assert "labels     none" in out
    assert "     1       25      2.40s  no       pick the cube" in out  # the --episodes table


def test_info_json_holds_the_summary(capsys, demo):
    code, out, _ = run(capsys, "info", demo, "--json")
    assert code == 0
    info = json.loads(out)
    assert (info["n_episodes"], info["n_frames"], info["record_hz"]) == (3, sum(LENGTHS), RECORD_HZ)
    assert info["success"] == {"succeeded": 2, "failed": 1, "unknown": 0, "marked": 0}
    assert info["success_rate"] == pytest.approx(2 / 3)
    assert info["episodes_duration_s"] == pytest.approx(sum((n - 1) / RECORD_HZ for n in LENGTHS))
    assert info["size_bytes"] == sum(f.stat().st_size for f in demo.rglob("*") if f.is_file())
    features = {f["name"]: f for f in info["features"]}
    assert features["wrist_rgb"] == {"name": "wrist_rgb", "dtype": "uint8", "shape": list(IMAGE), "kind": "image",
                                     "topic": "/camera/wrist/image_raw", "units": ""}
    assert features["joint_pos"]["units"] == "rad"
    assert info["tasks"] == [{"index": 0, "text": "pick the cube", "episodes": 3}]
    assert info["robot"] == ROBOT and info["unfinished_frames"] == 0 and info["label_runs"] == []


def test_info_reports_label_runs_and_whether_they_match_the_data(capsys, tmp_path):
    path = make_dataset(tmp_path / "labeled.zarr")
    ds = Dataset.open(path)
    ds.write_labels("clip1", np.linspace(0, 1, ds.n_frames), {"labeler": "test", "model": "tiny"})
    code, out, _ = run(capsys, "info", path)
    assert code == 0 and "clip1  labeler test, model tiny" in out and "matches the data" in out
    info = json.loads(run(capsys, "info", path, "--json")[1])
    assert info["label_runs"][0] | {"created": None} == {"run": "clip1", "labeler": "test", "model": "tiny",
                                                        "created": None, "n_frames": sum(LENGTHS), "current": True}


def test_info_reports_cached_label_arrays_beside_the_reward_runs(capsys, tmp_path):
    path = make_dataset(tmp_path / "embedded.zarr")
    ds = Dataset.open(path)
    ds.write_label_array("clip_embed.image.front.tiny", "embedding", np.zeros((ds.n_frames, 4), np.float32),
                         {"producer": "robot_stack.learn.clip_embed", "model": "tiny"})
    code, out, _ = run(capsys, "info", path)
    assert code == 0 and "clip_embed.image.front.tiny/embedding  robot_stack.learn.clip_embed, model tiny" in out
    info = json.loads(run(capsys, "info", path, "--json")[1])
    assert info["label_runs"] == []
    assert [(a["run"], a["name"], a["current"]) for a in info["label_arrays"]] == [
        ("clip_embed.image.front.tiny", "embedding", True)]


def test_info_tells_how_to_recover_unfinished_frames(capsys, tmp_path):
    path = make_dataset(tmp_path / "crashed.zarr", unfinished=7)
    code, out, _ = run(capsys, "info", path)
    assert code == 0
    assert "unfinished 7 frames" in out and f"robot-stack data recover {path} --keep" in out


# ---- validate


def test_validate_clean_dataset_exits_0(capsys, demo):
    code, out, _ = run(capsys, "validate", demo, "-q")
    assert code == 0
    assert out.strip() == f"{demo}: OK (3 episodes, {sum(LENGTHS)} frames, every chunk read)"


def test_validate_names_the_array_and_episode_of_a_corrupted_chunk_and_exits_1(capsys, demo, tmp_path):
    path = tmp_path / "damaged.zarr"
    shutil.copytree(demo, path)
    # Image shards hold 10 frames (1 s at 10 Hz): shard 2 is frames 20-29, inside episode 1 (frames 20-44).
    shard = path / "data" / "wrist_rgb" / "c" / "2" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 3 : len(raw) // 3 + 32] = b"\xa5" * 32
    shard.write_bytes(bytes(raw))
    code, out, _ = run(capsys, "validate", path, "-q")
    assert code == 1
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert problems and all("data/wrist_rgb" in p and "episode 1" in p for p in problems), out
    assert out.splitlines()[-1] == f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''} found"


def test_validate_on_something_that_is_not_a_dataset_exits_2(capsys, tmp_path):
    (tmp_path / "plain").mkdir()
    assert_one_line_error(*run(capsys, "validate", tmp_path / "plain")[::2], "not a Zarr v3 store")
    assert_one_line_error(*run(capsys, "validate", tmp_path / "missing.zarr")[::2], "no dataset at")


# ---- view and export-video


def test_view_writes_a_png_next_to_the_dataset(capsys, demo, tmp_path):
    from PIL import Image

    out = tmp_path / "ep2.png"
    code, stdout, _ = run(capsys, "view", demo, 2, "-o", out)
    assert code == 0 and stdout.strip() == f"wrote {out}"
    with Image.open(out) as picture:
        picture.verify()
    with Image.open(out) as picture:
        width, height = picture.size
        pixels = np.asarray(picture.convert("RGB"))
    assert width >= 1200 and 600 <= height <= 3000
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # frames and lines were drawn, not a blank page
    code, stdout, _ = run(capsys, "view", demo, -1)  # default path: next to the dataset
    assert code == 0 and stdout.strip() == f"wrote {demo.parent.resolve() / 'demo_ep2.png'}"


def test_export_video_writes_an_mp4_that_decodes_to_the_episode(capsys, demo, tmp_path):
    import av

    out = tmp_path / "wrist.mp4"
    code, stdout, _ = run(capsys, "export-video", demo, 1, "--camera", "wrist_rgb", "-o", out)
    assert code == 0 and "25 frames, 32x32, 10 fps" in stdout
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "mpeg4")
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    expected = episode_frames(1, LENGTHS[1])["wrist_rgb"]
    assert len(frames) == LENGTHS[1] and frames[0].shape == IMAGE
    error = np.abs(np.stack(frames).astype(int) - expected.astype(int)).mean(axis=(1, 2, 3))
    assert error.max() < 6, error  # lossy, but each frame is the recorded one (they differ by 7 in red)


def test_export_video_pads_odd_frame_sizes(tmp_path):
    import av

    from robot_stack.data.video import export_video

    writer = DatasetWriter.create(tmp_path / "odd.zarr", robot=ROBOT, record_hz=5,
                                  features=[FeatureSpec("cam", "uint8", (15, 21, 3), "image")])
    writer.append_frames({"cam": np.full((4, 15, 21, 3), 120, np.uint8), "timestamp": np.arange(4) / 5})
    writer.commit_episode(None, None)
    writer.close()
    result = export_video(Dataset.open(tmp_path / "odd.zarr"), 0, progress=False)
    assert result.size == (22, 16) and result.path == tmp_path / "odd_ep0_cam.mp4"
    with av.open(str(result.path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4


# ---- import-bag

BAG_START_NS = 1_000 * 10**9
FEATURES_FILE = """\
robot: {name: test_arm, command: joint_positions}
task: pick the cube
features:
  joint_pos: {topic: /joint_states, type: sensor_msgs/msg/JointState, field: position, units: rad, joints: [j2, j0]}
  wrist_rgb: {topic: /camera/wrist/image_raw, type: sensor_msgs/msg/Image, max_age: 0.15}
  action: {topic: /robot/command, type: std_msgs/msg/Float64MultiArray, field: data}
"""


def write_bag(path: Path, storage: str) -> None:
    """2 s of JointState at 100 Hz, an rgb8 Image at 10 Hz for the first 1 s, and commands at 20 Hz from 0.3 s."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types = store.types

    def header(t: int):
        return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9),
                                            frame_id="")

    messages = []
    for i in range(200):
        t = BAG_START_NS + i * 10_000_000
        messages.append(("/joint_states", "sensor_msgs/msg/JointState", t, types["sensor_msgs/msg/JointState"](
            header=header(t), name=["j0", "j1", "j2"], position=np.array([i, i + 0.5, -i], float),
            velocity=np.zeros(3), effort=np.zeros(0))))
    for k in range(11):
        t = BAG_START_NS + k * 100_000_000
        frame = np.full((6, 8, 3), (k, 2 * k, 3 * k), np.uint8)
        messages.append(("/camera/wrist/image_raw", "sensor_msgs/msg/Image", t, types["sensor_msgs/msg/Image"](
            header=header(t), height=6, width=8, encoding="rgb8", is_bigendian=0, step=24, data=frame.reshape(-1))))
    for j in range(34):
        t = BAG_START_NS + 300_000_000 + j * 50_000_000
        messages.append(("/robot/command", "std_msgs/msg/Float64MultiArray", t, types["std_msgs/msg/Float64MultiArray"](
            layout=types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.array([j, 2.0 * j]))))
    messages.sort(key=lambda m: m[2])
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for topic, msgtype, t, message in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], t, store.serialize_cdr(message, msgtype))


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bags")
    paths = {storage: folder / f"bag_{storage}" for storage in ("sqlite3", "mcap")}
    for storage, path in paths.items():
        write_bag(path, storage)
    (folder / "features.yaml").write_text(FEATURES_FILE)  # the recorder's features file format
    return paths


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_import_bag_samples_the_latest_message_at_each_tick_with_stale_flags(capsys, bags, tmp_path, storage):
    features = bags[storage].parent / "features.yaml"
    out = tmp_path / "imported.zarr"
    code, stdout, _ = run(capsys, "import-bag", bags[storage], out, "--features", features, "--record-hz", 10,
                          "--task", "open the drawer", "-q")
    assert code == 0, stdout
    ds = Dataset.open(out)
    # The episode starts when the last topic (the command, at 0.3 s) first publishes and ends at the last
    # message (1.99 s): ticks at 0.3, 0.4, ..., 1.9 s.
    assert (ds.n_episodes, ds.n_frames, ds.record_hz) == (1, 17, 10)
    assert ds.episode_info(0).task_text == "open the drawer" and ds.robot["command"] == "joint_positions"
    assert f"wrote {out}: 1 episode, 17 frames at 10 Hz" in stdout and "wrist_rgb 8 (47%)" in stdout
    assert ds.episode_info(0).notes == f"imported from {bags[storage].name}; stale frames: wrist_rgb 8"
    m = np.arange(17)
    np.testing.assert_allclose(ds.frames("timestamp"), 1000.3 + m / 10, atol=1e-9)
    joints = 30 + 10 * m  # JointState i is at i * 10 ms; joints: [j2, j0] picks -i and i
    np.testing.assert_array_equal(ds.frames("joint_pos"), np.stack([-joints, joints], axis=1).astype(np.float32))
    np.testing.assert_array_equal(ds.frames("action"), np.stack([2 * m, 4 * m], axis=1).astype(np.float32))
    image_index = np.minimum(3 + m, 10)  # images stop at 1.0 s: the last one is held
    np.testing.assert_array_equal(ds.frames("wrist_rgb")[:, 0, 0], np.stack([image_index, 2 * image_index,
                                                                             3 * image_index], axis=1))
    # max_age 0.15 s: the 1.0 s image is fresh at 1.1 s and stale from 1.2 s on (frame 9)
    np.testing.assert_array_equal(ds.frames("stale.wrist_rgb"), m >= 9)
    assert not ds.frames("stale.joint_pos").any() and not ds.frames("stale.action").any()
    assert ds.features["joint_pos"].units == "rad" and ds.features["wrist_rgb"].shape == (6, 8, 3)
    assert ds.features["stale.wrist_rgb"].kind == "flag" and ds.features["action"].kind == "action"
    # the recorder's layout: timestamp, the features, their stale flags
    assert list(ds.features) == ["timestamp", "joint_pos", "wrist_rgb", "action",
                                 "stale.joint_pos", "stale.wrist_rgb", "stale.action"]


def test_import_bag_makes_an_episode_per_bag_at_the_recorders_default_rate(capsys, bags, tmp_path):
    out = tmp_path / "both.zarr"
    code, stdout, _ = run(capsys, "import-bag", bags["sqlite3"], bags["mcap"], out,
                          "--mapping", bags["mcap"].parent / "features.yaml", "-q")
    assert code == 0
    ds = Dataset.open(out)
    # 20 Hz from 0.3 s to 1.99 s: 34 frames; the task comes from the features file
    assert ds.record_hz == 20 and ds.n_episodes == 2 and list(ds.episode_table()["length"]) == [34, 34]
    assert ds.tasks == ["pick the cube"] and ds.episode_info(1).task_text == "pick the cube"
    np.testing.assert_array_equal(ds.episode(0)["joint_pos"], ds.episode(1)["joint_pos"])
    assert [b["path"] for b in json.loads(run(capsys, "info", out, "--json")[1])["provenance"]["bags"]] == \
        [str(bags["sqlite3"].resolve()), str(bags["mcap"].resolve())]


@pytest.mark.parametrize("change, words", [
    (("/robot/command", "/robot/cmd"), ["topic /robot/cmd is not in", "/robot/command", "feature 'action'"]),
    (("field: position", "field: positions"), ["sensor_msgs/msg/JointState has no field 'positions'", "position"]),
    (("type: std_msgs/msg/Float64MultiArray", "type: std_msgs/msg/Float32MultiArray"), ["carries std_msgs/msg/Float64MultiArray"]),
    (("joints: [j2, j0]", "joints: [j2, j7]"), ["cannot be read as feature 'joint_pos'", "j7"]),
])
def test_import_bag_with_a_features_file_that_does_not_fit_is_a_one_line_error(capsys, bags, tmp_path, change, words):
    features = tmp_path / "bad.yaml"
    features.write_text(FEATURES_FILE.replace(*change))
    out = tmp_path / "never.zarr"
    code, _, err = run(capsys, "import-bag", bags["mcap"], out, "--features", features, "-q")
    assert_one_line_error(code, err, *words)
    assert not out.exists()


def test_import_bag_leaves_out_an_optional_feature_no_bag_has_and_holds_one_some_bags_lack(capsys, bags, tmp_path):
    features = tmp_path / "optional.yaml"
    features.write_text(FEATURES_FILE + "  sim_reward: {topic: /sim/reward, type: std_msgs/msg/Float64, field: data, "
                                        "kind: reward, optional: true}\n")
    code, _, err = run(capsys, "import-bag", bags["sqlite3"], tmp_path / "o.zarr", "--features", features, "-q")
    assert code == 0, err
    assert "sim_reward" not in Dataset.open(tmp_path / "o.zarr").features  # as the recorder does
    # An optional camera some frames lack: recorded, zeros and stale before its first message.
    late = tmp_path / "late.yaml"
    late.write_text(FEATURES_FILE.replace("max_age: 0.15}", "max_age: 0.15, optional: true}")
                    .replace("/robot/command, type", "/robot/command, optional: true, type"))
    code, _, err = run(capsys, "import-bag", bags["sqlite3"], tmp_path / "late.zarr", "--features", late, "-q")
    assert code == 0, err
    ds = Dataset.open(tmp_path / "late.zarr")
    # Only joint_pos is required: ticks start with it at 0 s; the command first comes at 0.3 s.
    assert ds.n_frames == 40 and ds.frames("timestamp")[0] == 1000.0
    np.testing.assert_array_equal(ds.frames("stale.action")[:8], [True] * 6 + [False] * 2)
    assert not ds.frames("action")[:6].any()


def test_import_bag_bad_paths_are_one_line_errors(capsys, bags, tmp_path):
    mapping = bags["mcap"].parent / "features.yaml"
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error
        main(["data", "import-bag", str(bags["mcap"]), str(tmp_path / "o.zarr")])
    assert exit_.value.code == 2 and "required: --features" in capsys.readouterr().err
    assert_one_line_error(*run(capsys, "import-bag", tmp_path / "nope", tmp_path / "o.zarr", "--mapping", mapping)[::2],
                          "no bag at")
    (tmp_path / "notabag").mkdir()
    assert_one_line_error(*run(capsys, "import-bag", tmp_path / "notabag", tmp_path / "o.zarr", "--mapping", mapping)[::2],
                          "is not a readable rosbag2 bag")
    assert_one_line_error(*run(capsys, "import-bag", bags["mcap"], tmp_path / "o.zarr", "--mapping", tmp_path / "x.yaml")[::2],
                          "x.yaml not found")


# ---- recover, merge, split, stats


def test_recover_keep_commits_the_unfinished_frames_and_drop_removes_them(capsys, tmp_path):
    kept = make_dataset(tmp_path / "keep.zarr", unfinished=7)
    dropped = shutil.copytree(kept, tmp_path / "drop.zarr")
    code, out, _ = run(capsys, "recover", kept, "--keep", "--task", "open the drawer")
    assert code == 0 and out.strip() == f"{kept}: kept 7 unfinished frames as episode 3"
    ds = Dataset.open(kept)
    assert (ds.n_episodes, ds.n_frames, ds.unfinished_frames) == (4, sum(LENGTHS) + 7, 0)
    assert ds.episode_info(3).task_text == "open the drawer" and ds.episode_info(3).success is None
    np.testing.assert_array_equal(ds.episode(3)["joint_pos"], episode_frames(9, 7)["joint_pos"])
    code, out, _ = run(capsys, "recover", dropped, "--drop")
    assert code == 0 and out.strip() == f"{dropped}: dropped 7 unfinished frames"
    ds = Dataset.open(dropped)
    assert (ds.n_episodes, ds.n_frames, ds.unfinished_frames) == (3, sum(LENGTHS), 0)
    assert run(capsys, "recover", dropped, "--drop")[1].strip() == f"{dropped}: no unfinished episode, nothing to recover"
    with pytest.raises(SystemExit):  # --keep or --drop is required
        main(["data", "recover", str(dropped)])
    capsys.readouterr()


def test_merge_then_split_round_trips_every_episode(capsys, demo, tmp_path):
    merged, train, val = tmp_path / "merged.zarr", tmp_path / "train.zarr", tmp_path / "val.zarr"
    code, out, _ = run(capsys, "merge", merged, demo, demo, "-q")
    assert code == 0 and out.strip() == f"wrote {merged}: 6 episodes, {2 * sum(LENGTHS)} frames from 2 datasets"
    code, out, _ = run(capsys, "split", merged, "--train", train, "--val", val, "--val-fraction", 0.34, "--seed", 3, "-q")
    assert code == 0
    t, v = Dataset.open(train), Dataset.open(val)
    assert (t.n_episodes, v.n_episodes) == (4, 2) and t.n_frames + v.n_frames == 2 * sum(LENGTHS)
    assert f"wrote {train} (train): 4 episodes" in out and f"wrote {val} (val): 2 episodes" in out
    # every source episode comes back exactly once, with its frames
    source_of = {}
    for ds in (t, v):
        for index in range(ds.n_episodes):
            first = float(ds.episode(index)["timestamp"][0])
            source_of.setdefault(first, []).append((ds, index))
    assert sorted(len(copies) for copies in source_of.values()) == [2, 2, 2]
    for key, n in enumerate(LENGTHS):
        for ds, index in source_of[1000.0 + key * 10]:
            np.testing.assert_array_equal(np.asarray(ds.episode(index)["wrist_rgb"]), episode_frames(key, n)["wrist_rgb"])
    assert_one_line_error(*run(capsys, "split", demo, "--train", tmp_path / "a.zarr", "--val", tmp_path / "b.zarr")[::2],
                          "leaves one side empty")
    assert_one_line_error(*run(capsys, "merge", tmp_path / "m2.zarr", demo, tmp_path / "missing.zarr", "-q")[::2],
                          "no dataset at")


def test_stats_prints_a_row_per_component_and_json(capsys, tmp_path):
    path = make_dataset(tmp_path / "stats.zarr")
    code, out, _ = run(capsys, "stats", path)
    assert code == 0
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in out.splitlines()[2:]}
    assert set(rows) == {f"joint_pos[{i}]" for i in range(7)} | {f"action[{i}]" for i in range(4)} | {"sim_reward"}
    joint = np.concatenate([episode_frames(k, n)["joint_pos"] for k, n in enumerate(LENGTHS)])
    assert rows["joint_pos[3]"][0] == pytest.approx(joint[:, 3].mean(), rel=1e-3)
    assert rows["joint_pos[3]"][2:4] == pytest.approx([joint[:, 3].min(), joint[:, 3].max()], rel=1e-3)
    stats = json.loads(run(capsys, "stats", path, "--json", "--recompute")[1])
    assert stats["joint_pos"]["count"] == sum(LENGTHS) and len(stats["action"]["std"]) == 4


# ---- bad input


@pytest.mark.parametrize("args, words", [
    (["info", "{tmp}/missing.zarr"], ["no dataset at", "missing.zarr"]),
    (["info", "{tmp}"], ["is not a Zarr v3 store"]),
    (["view", "{demo}", "7"], ["has no episode 7", "0-2"]),
    (["export-video", "{demo}", "0", "--camera", "front"], ["has no camera 'front'", "wrist_rgb"]),
    (["export-video", "{demo}", "-4"], ["has no episode -4"]),
    (["stats", "{tmp}/missing.zarr"], ["no dataset at"]),
])
def test_bad_input_is_a_one_line_error_with_exit_2(capsys, demo, tmp_path, args, words):
    args = [a.format(tmp=tmp_path, demo=demo) for a in args]
    assert_one_line_error(*run(capsys, *args)[::2], *words)


def test_the_installed_command_prints_errors_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "robot_stack.cli.main", "data", "info", str(tmp_path / "nope.zarr")],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"robot-stack data: error: no dataset at {tmp_path / 'nope.zarr'}: the path does " \
                                    "not exist (record one, or check the path)"



def test_the_features_file_example_in_the_docs_loads(tmp_path):
    from robot_stack.record import load_config

    text = (REPO / "docs" / "data_cli.md").read_text()
    example = text[text.index("```yaml\n") + len("```yaml\n"):]
    (tmp_path / "features.yaml").write_text(example[: example.index("```")])
    config = load_config(tmp_path / "features.yaml")
    assert [f.name for f in config.features] == ["joint_pos", "wrist_rgb", "action"] and config.task == "pick the cube"


# ---- camera names: the launch's (cameras:=agentview:84x84) and the feature's (image.agentview)


@pytest.fixture(scope="module")
def launch_cameras(tmp_path_factory) -> Path:
    """Two cameras named as the recorder names a launch's cameras:=agentview:32x32,top:32x32."""
    features = [FEATURES[0], FEATURES[1], FeatureSpec("image.agentview", "uint8", IMAGE, "image"),
                FeatureSpec("image.top", "uint8", IMAGE, "image")]
    path = tmp_path_factory.mktemp("cams") / "cams.zarr"
    writer = DatasetWriter.create(path, robot=ROBOT, record_hz=RECORD_HZ, features=features)
    frames = episode_frames(0, 12)
    writer.append_frames({"joint_pos": frames["joint_pos"], "action": frames["action"], "timestamp": frames["timestamp"],
                          "image.agentview": frames["wrist_rgb"], "image.top": 255 - frames["wrist_rgb"]})
    writer.commit_episode("pick the cube", True)
    writer.close()
    return path


@pytest.mark.parametrize("camera", ["agentview", "image.agentview"])
def test_export_video_and_view_take_the_camera_name_the_launch_took(camera, capsys, launch_cameras, tmp_path):
    code, out, err = run(capsys, "export-video", launch_cameras, "0", "--camera", camera, "-o", tmp_path / "a.mp4")
    assert code == 0 and "image.agentview, 12 frames" in out, err
    code, out, err = run(capsys, "view", launch_cameras, "0", "--camera", camera, "-o", tmp_path / "a.png")
    assert code == 0 and (tmp_path / "a.png").stat().st_size > 0, err


def test_a_wrong_camera_name_lists_the_cameras_that_exist(capsys, launch_cameras, tmp_path):
    for verb in ("export-video", "view"):
        code, _, err = run(capsys, verb, launch_cameras, "0", "--camera", "wrist", "-o", tmp_path / "x")
        assert_one_line_error(code, err, "has no camera 'wrist': its cameras are agentview (image.agentview), top (image.top)")


def test_info_says_where_the_data_came_from(capsys, tmp_path):
    """The provenance a writer recorded: one origin line in the text, all of it in --json."""
    features = [FeatureSpec("x", "float32", (1,), "state"), FeatureSpec("action", "float32", (1,), "action")]
    provenance = {"import": {"format": "robomimic", "source": "/data/demo.hdf5", "version": "1.5", "episodes": 1}}
    with DatasetWriter.create(tmp_path / "p.zarr", robot={"name": "arm"}, record_hz=10, features=features,
                              provenance=provenance) as writer:
        writer.append_frames({"x": np.zeros((2, 1), np.float32), "action": np.zeros((2, 1), np.float32),
                              "timestamp": np.arange(2) / 10.0})
        writer.commit_episode(None, True)
    assert main(["data", "info", str(tmp_path / "p.zarr")]) == 0
    assert "origin     imported from robomimic /data/demo.hdf5 (version 1.5, 1 episodes)" in capsys.readouterr().out
    assert main(["data", "info", str(tmp_path / "p.zarr"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"] == provenance
