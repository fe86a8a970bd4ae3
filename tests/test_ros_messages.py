"""Message classes and the CDR codec: bytes equal rosbags' for every type, numpy in and out, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from robot_stack.errors import RosError
from robot_stack.ros import messages

STORE = get_typestore(Stores.ROS2_JAZZY)
REQUIRED = [
    "std_msgs/msg/Bool", "std_msgs/msg/String", "std_msgs/msg/Float64", "std_msgs/msg/Float64MultiArray",
    "std_msgs/msg/Header", "std_msgs/msg/Empty", "builtin_interfaces/msg/Time", "sensor_msgs/msg/JointState",
    "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "geometry_msgs/msg/PoseStamped",
    "geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped",
]


def random_value(rng, node):
    kind, detail = node
    if kind == 1:
        base = detail[0]
        if base == "string":
            return "".join(rng.choice(list("abcdefé"), int(rng.integers(0, 9))))
        if base == "bool":
            return bool(rng.integers(0, 2))
        dtype = messages._PRIMITIVES[base][2]
        if dtype.kind == "f":
            return float(rng.normal())
        high = 127 if base == "byte" else min(np.iinfo(dtype).max, 10_000)  # rosbags reads byte as int8
        return int(rng.integers(max(np.iinfo(dtype).min, -10_000), high))
    if kind == 2:
        return random_fields(rng, detail)
    (inner_kind, inner_detail), size = detail
    length = size if kind == 3 else int(rng.integers(0, 4))
    if inner_kind == 1 and inner_detail[0] in messages._PRIMITIVES:
        dtype = messages._PRIMITIVES[inner_detail[0]][2]
        if dtype.kind == "f":
            return rng.normal(size=length).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, size=length).astype(bool)
        return rng.integers(0, 100, size=length).astype(dtype)
    return [random_value(rng, (inner_kind, inner_detail)) for _ in range(length)]


def random_fields(rng, type_name):
    return {name: random_value(rng, node) for name, node in STORE.fielddefs[type_name][1]}


def build(type_name, values, make_class):
    fields = {}
    for name, (kind, detail) in STORE.fielddefs[type_name][1]:
        value = values[name]
        if kind == 2:
            value = build(detail, value, make_class)
        elif kind in (3, 4) and detail[0][0] == 2:
            value = [build(detail[0][1], v, make_class) for v in value]
        fields[name] = value
    return make_class(type_name)(**fields)


def rosbags_bytes(type_name, values) -> bytes:
    return bytes(STORE.serialize_cdr(build(type_name, values, lambda t: STORE.types[t]), type_name))


@pytest.mark.parametrize("type_name", sorted(STORE.fielddefs))
def test_cdr_bytes_equal_rosbags_for_every_jazzy_type(type_name):
    rng = np.random.default_rng(abs(hash(type_name)) % 2**32)
    for _ in range(3):
        values = random_fields(rng, type_name)
        ours = messages.serialize(build(type_name, values, messages.message_class))
        assert ours == rosbags_bytes(type_name, values)
        decoded = messages.deserialize(ours, type_name)
        assert messages.serialize(decoded) == ours


def test_required_types_are_all_available():
    for type_name in REQUIRED:
        assert messages.message_class(type_name).__msgtype__ == type_name


def test_image_640x480_matches_rosbags_and_decodes_without_copying():
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    Image = messages.message_class("sensor_msgs/msg/Image")
    image = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=frame)
    data = messages.serialize(image)
    reference = STORE.types["sensor_msgs/msg/Image"](
        header=STORE.types["std_msgs/msg/Header"](stamp=STORE.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""),
        height=480, width=640, encoding="rgb8", is_bigendian=0, step=1920, data=frame.reshape(-1))
    assert data == bytes(STORE.serialize_cdr(reference, "sensor_msgs/msg/Image"))
    decoded = messages.deserialize(data, "sensor_msgs/msg/Image")
    assert isinstance(decoded.data, np.ndarray) and decoded.data.dtype == np.uint8
    assert decoded.data.base is not None  # a view of the received buffer, not a per-element copy
    np.testing.assert_array_equal(decoded.data.reshape(480, 640, 3), frame)
    # bytes work as input too (what a camera driver usually has)
    assert messages.serialize(Image(height=480, width=640, encoding="rgb8", step=1920, data=frame.tobytes())) == data


def test_empty_joint_state_matches_rosbags():
    ours = messages.serialize(messages.message_class("sensor_msgs/msg/JointState")())
    values = {"header": {"stamp": {"sec": 0, "nanosec": 0}, "frame_id": ""}, "name": [],
              "position": np.zeros(0), "velocity": np.zeros(0), "effort": np.zeros(0)}
    assert ours == rosbags_bytes("sensor_msgs/msg/JointState", values)


def test_numeric_sequences_are_numpy_in_and_out():
    JointState = messages.message_class("sensor_msgs/msg/JointState")
    message = JointState(name=["a", "b"], position=[1, 2], velocity=np.array([0.5, 0.25], np.float32))
    decoded = messages.deserialize(messages.serialize(message), "sensor_msgs/msg/JointState")
    assert decoded.position.dtype == np.float64 and decoded.position.tolist() == [1.0, 2.0]
    assert decoded.velocity.tolist() == [0.5, 0.25]
    assert decoded.name == ["a", "b"]


def test_messages_default_every_field_like_rclpy():
    pose = messages.message_class("geometry_msgs/msg/PoseStamped")()
    assert pose.header.frame_id == "" and pose.pose.orientation.w == 0.0
    pose.pose.position.x = 1.5
    assert messages.deserialize(messages.serialize(pose), "geometry_msgs/msg/PoseStamped") == pose
    assert messages.message_class("sensor_msgs/JointState") is messages.message_class("sensor_msgs/msg/JointState")


def test_unknown_message_type_is_a_clear_error():
    with pytest.raises(RosError, match="unknown message type 'sensor_msgs/msg/JointStat'.*JointState"):
        messages.message_class("sensor_msgs/msg/JointStat")
    with pytest.raises(RosError, match="unknown message type 'nope_msgs/msg/X'"):
        messages.message_class("nope_msgs/msg/X")


@pytest.mark.parametrize(
    ("type_name", "fields", "expected"),
    [
        ("std_msgs/msg/Float64", {"data": "abc"}, r"field 'data' expects float64, got str"),
        ("std_msgs/msg/String", {"data": 5}, r"field 'data' expects string, got int"),
        ("std_msgs/msg/Bool", {"data": "yes"}, r"field 'data' expects bool"),
        ("std_msgs/msg/UInt8", {"data": 300}, r"field 'data' value 300 is out of range for uint8"),
        ("sensor_msgs/msg/JointState", {"position": ["a"]}, r"field 'position' expects a sequence of float64"),
        ("std_msgs/msg/Int32MultiArray", {"data": [1.5]}, r"field 'data' expects a sequence of int32"),
        ("geometry_msgs/msg/PoseStamped", {"header": 3}, r"field 'header' expects a std_msgs/msg/Header"),
    ],
)
def test_a_wrong_value_names_the_field(type_name, fields, expected):
    message = messages.message_class(type_name)()
    for name, value in fields.items():
        setattr(message, name, value)
    with pytest.raises(RosError, match=expected):
        messages.serialize(message)


def test_nested_wrong_value_names_the_path():
    pose = messages.message_class("geometry_msgs/msg/PoseStamped")()
    pose.pose.position.x = "far"
    with pytest.raises(RosError, match=r"field 'pose.position.x' expects float64"):
        messages.serialize(pose)


def test_unknown_field_in_constructor_lists_the_fields():
    with pytest.raises(RosError, match="has no field 'dta'.*data"):
        messages.message_class("std_msgs/msg/String")(dta="x")


def test_truncated_data_is_a_clear_error():
    data = messages.serialize(messages.message_class("sensor_msgs/msg/JointState")(position=np.ones(7)))
    with pytest.raises(RosError, match="truncated or corrupt"):
        messages.deserialize(data[:20], "sensor_msgs/msg/JointState")


def test_dict_round_trip_for_command_line_tools():
    values = {"layout": {"dim": [{"label": "x", "size": 3, "stride": 3}]}, "data": [0.1, 0, 1]}
    message = messages.from_dict("std_msgs/msg/Float64MultiArray", values)
    plain = messages.to_dict(messages.deserialize(messages.serialize(message), "std_msgs/msg/Float64MultiArray"))
    assert plain["data"] == [0.1, 0.0, 1.0]
    assert plain["layout"]["dim"][0] == {"label": "x", "size": 3, "stride": 3}
    with pytest.raises(RosError, match="has no field 'dat'"):
        messages.from_dict("std_msgs/msg/Float64", {"dat": 1})


def test_a_scalar_is_not_a_sequence():
    with pytest.raises(RosError, match="field 'data' expects a sequence of float64, got a single int"):
        messages.serialize(messages.message_class("std_msgs/msg/Float64MultiArray")(data=3))
    with pytest.raises(RosError, match="field 'dim' is a list of std_msgs/msg/MultiArrayDimension, got 5"):
        messages.from_dict("std_msgs/msg/Float64MultiArray", {"layout": {"dim": 5}})
