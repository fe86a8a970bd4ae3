"""numpy arrays <-> the standard robot messages (JointState, PoseStamped, Image, Float64MultiArray).

Messages are built with the active backend's classes. Poses are (7,) arrays: position x, y, z [m] and quaternion x, y, z, w, the order of
geometry_msgs. Images are (H, W, 3) uint8 arrays, rgb8.
"""

from __future__ import annotations

import numpy as np

from robot_stack.errors import RosError


def message_class(type_name: str):
    # The backend's class (rclpy's on a ROS 2 machine), so these messages fit its publishers.
    from robot_stack.ros import message_class as backend_message_class

    return backend_message_class(type_name)


def stamp(nanoseconds: int):
    """A builtin_interfaces/Time from integer nanoseconds."""
    sec, nanosec = divmod(int(nanoseconds), 1_000_000_000)
    return message_class("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)


def message_stamp_ns(message) -> int:
    """Nanoseconds of a message's header stamp."""
    return message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec


def _header(stamp_ns: int, frame_id: str):
    return message_class("std_msgs/msg/Header")(stamp=stamp(stamp_ns), frame_id=frame_id)


def joint_state(names, position, velocity=None, effort=None, *, stamp_ns: int = 0, frame_id: str = ""):
    position = np.asarray(position, dtype=np.float64)
    return message_class("sensor_msgs/msg/JointState")(
        header=_header(stamp_ns, frame_id), name=list(names), position=position,
        velocity=np.zeros(0) if velocity is None else np.asarray(velocity, dtype=np.float64),
        effort=np.zeros(0) if effort is None else np.asarray(effort, dtype=np.float64),
    )


def pose_stamped(pose, *, stamp_ns: int = 0, frame_id: str = "world"):
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (7,):
        raise RosError(f"a pose is 7 values (x, y, z, qx, qy, qz, qw), got shape {pose.shape}")
    message = message_class("geometry_msgs/msg/PoseStamped")(header=_header(stamp_ns, frame_id))
    p, q = message.pose.position, message.pose.orientation
    p.x, p.y, p.z = (float(v) for v in pose[:3])
    q.x, q.y, q.z, q.w = (float(v) for v in pose[3:])
    return message


def pose_array(message) -> np.ndarray:
    """(7,) float64 from a PoseStamped or Pose."""
    pose = getattr(message, "pose", message)
    p, q = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w])


def image(frame, *, stamp_ns: int = 0, frame_id: str = "camera"):
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise RosError(f"an rgb8 image is (H, W, 3) uint8, got shape {frame.shape}")
    height, width, _ = frame.shape
    return message_class("sensor_msgs/msg/Image")(header=_header(stamp_ns, frame_id), height=height, width=width,
                                                  encoding="rgb8", step=width * 3, data=frame)


def image_array(message) -> np.ndarray:
    """(H, W, 3) uint8 view of an rgb8 (or bgr8, converted) Image message."""
    if message.encoding not in ("rgb8", "bgr8"):
        raise RosError(f"image encoding {message.encoding!r} is not supported: publish rgb8 (or bgr8)")
    data = np.frombuffer(message.data, np.uint8) if not isinstance(message.data, np.ndarray) else message.data
    rows = data.reshape(message.height, message.step)[:, : message.width * 3]
    frame = rows.reshape(message.height, message.width, 3)
    return frame[..., ::-1] if message.encoding == "bgr8" else frame


def float_array(values):
    """A std_msgs/Float64MultiArray carrying ``values`` (the /robot/command type)."""
    return message_class("std_msgs/msg/Float64MultiArray")(data=np.asarray(values, dtype=np.float64).reshape(-1))
