"""`robot-stack data import-bag`: header-stamp alignment, compressed images decoded, joint names kept.

Real rosbag2 files written with rosbags (MCAP and sqlite3), imported through the CLI into real Zarr datasets.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robot_stack.cli.main import main
from robot_stack.data import Dataset
from robot_stack.data.report import provenance

START_NS = 2_000 * 10**9
LATENCY_NS = 70_000_000  # the camera's frames reach the bag 70 ms after they were taken


def write_bag(path: Path, messages: list[tuple[str, str, int, object]], storage: str = "mcap") -> None:
    """messages: (topic, type, receive time [ns], message), written in receive order as a recorder writes them."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for topic, msgtype, received, message in sorted(messages, key=lambda m: m[2]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], received, store.serialize_cdr(message, msgtype))


def types():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY).types


def header(t: int, frame_id: str = ""):
    t_ = types()
    return t_["std_msgs/msg/Header"](stamp=t_["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9),
                                     frame_id=frame_id)


def joint_states(n: int, names=("j0", "j1", "j2")) -> list:
    """JointState every 10 ms, stamped when sent and received at once; position j0 = the message index."""
    out = []
    for i in range(n):
        t = START_NS + i * 10_000_000
        out.append(("/joint_states", "sensor_msgs/msg/JointState", t, types()["sensor_msgs/msg/JointState"](
            header=header(t), name=list(names), position=np.array([i, 0.5 * i, -i][:len(names)], float),
            velocity=np.zeros(len(names)), effort=np.zeros(0))))
    return out


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["data", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


FEATURES = """\
robot: {name: test_arm, command: joint_positions}
task: pick the cube
features:
  joint_pos: {topic: /joint_states, type: sensor_msgs/msg/JointState, field: position, joints: [j2, j0]}
  wrist_rgb: {topic: /camera/wrist/image_raw, type: sensor_msgs/msg/Image, max_age: 0.5}
"""


@pytest.fixture(scope="module")
def late_camera_bag(tmp_path_factory) -> Path:
    """2 s of joint states at 100 Hz and a 10 Hz camera whose frame k, taken at k * 100 ms (its header stamp),
    shows the value k * 10 (the index of the joint state sent at that moment) and arrives 70 ms later."""
    folder = tmp_path_factory.mktemp("late_camera")
    messages = joint_states(200)
    for k in range(20):
        taken = START_NS + k * 100_000_000
        frame = np.full((4, 6, 3), k * 10, np.uint8)
        messages.append(("/camera/wrist/image_raw", "sensor_msgs/msg/Image", taken + LATENCY_NS,
                         types()["sensor_msgs/msg/Image"](header=header(taken), height=4, width=6, encoding="rgb8",
                                                          is_bigendian=0, step=18, data=frame.reshape(-1))))
    write_bag(folder / "bag", messages)
    (folder / "features.yaml").write_text(FEATURES)
    return folder


def test_header_stamps_pair_a_late_camera_frame_with_the_joint_states_of_its_moment(capsys, late_camera_bag, tmp_path):
    features = late_camera_bag / "features.yaml"
    code, _, err = run(capsys, "import-bag", late_camera_bag / "bag", tmp_path / "header.zarr", "--features",
                       features, "--record-hz", 20, "--stamp", "header", "-q")
    assert code == 0, err
    ds = Dataset.open(tmp_path / "header.zarr")
    tick_ms = np.rint((ds.frames("timestamp") - START_NS / 1e9) * 1000).astype(int)
    assert tick_ms[0] == 0 and np.all(np.diff(tick_ms) == 50)  # both topics are stamped from 0 s on
    image = ds.frames("wrist_rgb")[:, 0, 0, 0].astype(int)
    joint = ds.frames("joint_pos")[:, 1].astype(int)  # j0: the index of the joint state, one every 10 ms
    # Each frame holds the camera frame taken at or before its tick: at whole 100 ms, the one taken at that very
    # moment, whose value is the joint state of the same frame.
    np.testing.assert_array_equal(image, tick_ms // 100 * 10)
    np.testing.assert_array_equal(joint, tick_ms // 10)
    on_the_frame = tick_ms % 100 == 0
    assert on_the_frame.sum() >= 19 and np.array_equal(image[on_the_frame], joint[on_the_frame])
    assert provenance(ds)["stamp"] == "header"

    # By receive time (the default), the same ticks hold the frame taken 100 ms earlier at whole 100 ms:
    # the camera's latency puts the wrong image beside half of the frames.
    code, _, err = run(capsys, "import-bag", late_camera_bag / "bag", tmp_path / "receive.zarr", "--features",
                       features, "--record-hz", 20, "-q")
    assert code == 0, err
    received = Dataset.open(tmp_path / "receive.zarr")
    tick_ms = np.rint((received.frames("timestamp") - START_NS / 1e9) * 1000).astype(int)
    assert tick_ms[0] == 70  # the episode starts when the first frame arrives
    np.testing.assert_array_equal(received.frames("wrist_rgb")[:, 0, 0, 0], (tick_ms - 70) // 100 * 10)
    assert provenance(received)["stamp"] == "receive"


def test_header_stamps_that_are_unset_or_on_another_clock_are_one_line_errors(capsys, tmp_path):
    unset = joint_states(20)
    for topic, msgtype, received, message in unset:
        message.header.stamp.sec, message.header.stamp.nanosec = 0, 0
    write_bag(tmp_path / "unset", unset)
    command = types()["std_msgs/msg/Float64MultiArray"]
    layout = types()["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    sim_time = joint_states(20)
    for _, _, _, message in sim_time:  # stamped on a sim clock that starts at 1 s
        message.header.stamp.sec -= START_NS // 10**9 - 1
    sim_time += [("/robot/command", "std_msgs/msg/Float64MultiArray", START_NS + j * 50_000_000,
                  command(layout=layout, data=np.array([j, 0.0]))) for j in range(4)]
    write_bag(tmp_path / "two_clocks", sim_time)
    features = tmp_path / "features.yaml"
    features.write_text(FEATURES.split("  wrist_rgb")[0] +
                        "  action: {topic: /robot/command, type: std_msgs/msg/Float64MultiArray, field: data, "
                        "optional: true}\n")
    for bag, words in (("unset", "carry no header stamp (0)"), ("two_clocks", "on different clocks")):
        code, _, err = run(capsys, "import-bag", tmp_path / bag, tmp_path / f"{bag}.zarr", "--features", features,
                           "--stamp", "header", "-q")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert words in err and "--stamp receive" in err and not (tmp_path / f"{bag}.zarr").exists()


def encoded(frame: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_compressed_images_become_image_features_and_joint_names_are_kept(capsys, tmp_path, storage):
    rng = np.random.default_rng(0)
    frames = [np.kron(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
              for _ in range(5)]  # 24 x 32 blocks of flat colour: JPEG keeps them within a few levels
    messages = joint_states(50, names=("shoulder", "elbow", "wrist"))
    compressed = types()["sensor_msgs/msg/CompressedImage"]
    for k, frame in enumerate(frames):
        t = START_NS + k * 100_000_000
        for topic, fmt in (("/camera/front/image_raw/compressed", "JPEG"), ("/camera/top/image_raw/compressed", "PNG")):
            data = np.frombuffer(encoded(frame, fmt), np.uint8)
            messages.append((topic, "sensor_msgs/msg/CompressedImage", t,
                             compressed(header=header(t), format=f"rgb8; {fmt.lower()} compressed rgb8", data=data)))
    write_bag(tmp_path / "bag", messages, storage)
    features = tmp_path / "features.yaml"
    features.write_text("""\
robot: {name: test_arm, command: joint_positions}
features:
  joints: {topic: /joint_states, type: sensor_msgs/msg/JointState, field: position, units: rad}
  image.front: {topic: /camera/front/image_raw/compressed, type: sensor_msgs/msg/CompressedImage, field: data}
  image.top: {topic: /camera/top/image_raw/compressed, type: sensor_msgs/msg/CompressedImage, field: data}
""")
    code, _, err = run(capsys, "import-bag", tmp_path / "bag", tmp_path / "out.zarr", "--features", features,
                       "--record-hz", 10, "-q")
    assert code == 0, err
    ds = Dataset.open(tmp_path / "out.zarr")
    for name in ("image.front", "image.top"):
        spec = ds.features[name]
        assert (spec.kind, spec.dtype, spec.shape) == ("image", "uint8", (24, 32, 3))
        assert spec.topic.endswith("/compressed")
    assert ds.n_frames == 5  # ticks at 0, 0.1, ..., 0.4 s: frame k at tick k
    np.testing.assert_array_equal(ds.frames("image.top"), np.stack(frames))  # PNG: lossless
    error = np.abs(ds.frames("image.front").astype(int) - np.stack(frames).astype(int))
    assert error.mean() < 2 and error.max() <= 16  # JPEG: close to the original, not its bytes
    assert provenance(ds)["joint_names"] == {"joints": ["shoulder", "elbow", "wrist"]}


def test_the_joints_picked_in_the_features_file_are_the_stored_names(capsys, late_camera_bag, tmp_path):
    code, _, err = run(capsys, "import-bag", late_camera_bag / "bag", tmp_path / "picked.zarr", "--features",
                       late_camera_bag / "features.yaml", "-q")
    assert code == 0, err
    ds = Dataset.open(tmp_path / "picked.zarr")
    assert provenance(ds)["joint_names"] == {"joint_pos": ["j2", "j0"]}
    np.testing.assert_array_equal(ds.frames("joint_pos")[:, 0], -ds.frames("joint_pos")[:, 1])  # j2 = -j0


def test_a_compressed_image_that_is_not_jpeg_or_png_is_a_one_line_error(capsys, tmp_path):
    compressed = types()["sensor_msgs/msg/CompressedImage"]
    messages = joint_states(10) + [("/camera/front/image_raw/compressed", "sensor_msgs/msg/CompressedImage",
                                    START_NS, compressed(header=header(START_NS), format="jpeg",
                                                         data=np.frombuffer(b"\xff\xd8 not really", np.uint8)))]
    write_bag(tmp_path / "bag", messages)
    features = tmp_path / "features.yaml"
    features.write_text(FEATURES.replace("/camera/wrist/image_raw, type: sensor_msgs/msg/Image",
                                         "/camera/front/image_raw/compressed, type: sensor_msgs/msg/CompressedImage, "
                                         "field: data"))
    code, _, err = run(capsys, "import-bag", tmp_path / "bag", tmp_path / "out.zarr", "--features", features, "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "wrist_rgb" in err and "JPEG image cannot be decoded" in err and not (tmp_path / "out.zarr").exists()
