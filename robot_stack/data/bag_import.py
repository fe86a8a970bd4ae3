"""Import rosbag2 recordings (sqlite3 or MCAP, read with rosbags) into a new dataset, one episode per bag.

The features file is the recorder's (robot_stack.record.load_config: robot, task, and which field of
which topic each feature is), and the frames are what the recorder on the wall clock would have
written from the same topics: at every tick of record_hz each feature holds its latest message
at or before the tick (sample-and-hold), and stale.<feature> says whether that message was older than
the feature's max_age (or never came: zeros). An episode starts when every non-optional feature has had
a message and ends at the last mapped message.

A message's time is its receive time in the bag (stamp "receive", what the recorder sees live) or its
header stamp (stamp "header": when a camera took the frame, so a late-arriving image still pairs with the
joint states of its moment; messages without a header keep their receive time). A
sensor_msgs/msg/CompressedImage feature (JPEG or PNG) is decoded into a uint8 [H, W, 3] rgb image feature.
"""

from __future__ import annotations

import heapq
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robot_stack.data import TIMESTAMP, Dataset, DatasetWriter, FeatureSpec
from robot_stack.errors import DatasetError, RobotStackError

DEFAULT_RECORD_HZ = 20.0
"""Frames a second when none is given: the recorder node's default record_hz."""
STAMPS = ("receive", "header")
"""What times a message: its receive time in the bag, or its header stamp (see the module docstring)."""
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
# Header stamps more than this apart from receive times on one topic and not on another are two clocks
# (e.g. sim time and wall time): aligning them would pair unrelated moments.
CLOCK_MISMATCH_S = 10.0


@dataclass
class _Bag:
    """A bag opened and checked against the features: its connections and first message per feature."""

    path: Path
    reader: Any  # rosbags.rosbag2.Reader, open
    typestore: Any
    connections: dict[str, list[Any]]  # topic -> the bag's connections on it (mapped topics only)
    first_ns: dict[str, int]  # feature -> time of its first message (absent: it never came)
    shapes: dict[str, tuple[int, ...]]  # feature -> shape of its first message's value
    joint_names: dict[str, list[str]] = field(default_factory=dict)  # JointState feature -> its joints, in order
    # stamp "header": topic -> the most a message's receive time exceeds its header stamp [ns] (reorder window)
    lateness_ns: dict[str, int] = field(default_factory=dict)

    @property
    def message_count(self) -> int:
        return sum(c.msgcount for cs in self.connections.values() for c in cs)


def _type_name(name: str) -> str:
    from robot_stack.ros.messages import normalize_type_name

    return normalize_type_name(name)


def _is_compressed(feature: Any) -> bool:
    return _type_name(feature.type) == COMPRESSED_IMAGE_TYPE


def _spec(feature: Any, shape: tuple[int, ...]) -> FeatureSpec:
    """The dataset feature: the recorder's, except a compressed image is stored as the image it holds."""
    if _is_compressed(feature):
        return FeatureSpec(feature.name, "uint8", shape, "image", topic=feature.topic, units=feature.units)
    return feature.spec(shape)


def _decode_image(data: Any) -> np.ndarray:
    """A JPEG or PNG (a CompressedImage's data) as uint8 [H, W, 3] rgb; grey and rgba are converted."""
    import av

    data = bytes(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        codec = "png"
    elif data[:2] == b"\xff\xd8":
        codec = "mjpeg"
    else:
        raise ValueError("the compressed image is neither JPEG nor PNG")
    try:
        frames = av.CodecContext.create(codec, "r").decode(av.Packet(data))
    except av.error.FFmpegError as error:
        raise ValueError(f"the {'PNG' if codec == 'png' else 'JPEG'} image cannot be decoded ({error})") from None
    if not frames:
        raise ValueError("the compressed image holds no picture")
    return frames[0].to_ndarray(format="rgb24")


def _value(feature: Any, message: Any, bag: Path, stamp_ns: int) -> np.ndarray:
    """feature.value(message), with a failure said as which bag, topic, time and feature."""
    try:
        if _is_compressed(feature):
            return _decode_image(message.data)
        return np.asarray(feature.value(message))
    except AttributeError as error:
        owner = getattr(error, "obj", None)
        fields = list(getattr(owner, "__dataclass_fields__", ()))  # rosbags messages are dataclasses
        type_name = getattr(owner, "__msgtype__", type(owner).__name__)
        raise DatasetError(f"feature {feature.name!r}: {type_name} has no field {error.name!r} (its fields: "
                           f"{', '.join(fields)}); fix the field in the features file") from None
    except (RobotStackError, TypeError, ValueError) as error:
        raise DatasetError(f"{bag}: the message on {feature.topic} at {stamp_ns / 1e9:.3f} s cannot be read as feature "
                           f"{feature.name!r}: {error}") from None


def _open_bag(path: Path, features: list[Any]) -> _Bag:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    if not path.exists():
        raise DatasetError(f"no bag at {path}: give a rosbag2 folder (with metadata.yaml) or a .db3/.mcap file")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as error:  # rosbags raises its own error types, and OSError/ValueError on garbage
        raise DatasetError(f"{path} is not a readable rosbag2 bag ({type(error).__name__}: {error}); give a bag "
                           "folder (with metadata.yaml) or a .db3/.mcap file") from None
    try:
        typestore = get_typestore(Stores.ROS2_JAZZY)
        topics = {c.topic: c.msgtype for c in reader.connections}
        bag = _Bag(path, reader, typestore, {}, {}, {})
        for feature in features:
            if feature.topic not in topics:
                if feature.optional:
                    continue
                raise DatasetError(f"feature {feature.name!r}: topic {feature.topic} is not in {path}; its topics: "
                                   f"{', '.join(sorted(topics))}. Fix the features file or mark the feature optional")
            if _type_name(topics[feature.topic]) != _type_name(feature.type):
                raise DatasetError(f"feature {feature.name!r}: {feature.topic} carries {topics[feature.topic]} in {path}, "
                                   f"not {feature.type}: fix its type in the features file")
            connections = bag.connections.setdefault(feature.topic, [c for c in reader.connections if c.topic == feature.topic])
            first = reader.messages(connections=connections)
            try:
                item = next(first, None)
            finally:
                first.close()
            if item is None:
                if feature.optional:
                    continue
                raise DatasetError(f"feature {feature.name!r}: topic {feature.topic} has no messages in {path}")
            connection, stamp, raw = item
            message = typestore.deserialize_cdr(raw, connection.msgtype)
            bag.first_ns[feature.name] = stamp
            bag.shapes[feature.name] = _value(feature, message, path, stamp).shape
            if _type_name(feature.type) == JOINT_STATE_TYPE:
                bag.joint_names[feature.name] = list(feature.joints or message.name)
        return bag
    except BaseException:
        reader.close()
        raise


def import_bags(
    bags: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    features_file: str | os.PathLike | Any,
    record_hz: float | None = None,
    task: str | None = None,
    progress: bool = True,
    stamp: str = "receive",
) -> Dataset:
    """Write one episode per bag into a new dataset at `out`, sampled at record_hz (default 20 Hz).

    features_file: the recorder's features file (path, or a robot_stack.record.RecorderConfig); its
    robot becomes the dataset's, its task the episodes' unless `task` is given. Optional features are
    recorded when they publish in at least one bag (zeros, flagged stale, where they do not). All bags
    must give each feature the same shape. stamp: "receive" or "header" (STAMPS), what times each message.
    The dataset's provenance records the bags, the stamp and, per JointState feature, its joint names
    (joint_names: {feature: [names]}). On any error the partly written `out` is removed.
    """
    from robot_stack.record import STALE_PREFIX, EpisodeCounts, RecorderConfig, load_config

    config = features_file if isinstance(features_file, RecorderConfig) else load_config(features_file)
    record_hz = float(record_hz or DEFAULT_RECORD_HZ)
    if not record_hz > 0:
        raise DatasetError(f"record_hz must be a positive number of frames a second, got {record_hz}")
    task = task or config.task or None
    if stamp not in STAMPS:
        raise DatasetError(f"stamp {stamp!r}: use {' or '.join(STAMPS)}")
    if not bags:
        raise DatasetError("import needs at least one bag")
    out = Path(out)
    if out.exists():
        raise DatasetError(f"{out} exists: import into a new path (merge datasets afterwards with `robot-stack data merge`)")
    opened: list[_Bag] = []
    writer = None
    try:
        for path in bags:
            opened.append(_open_bag(Path(path), config.features))
            if stamp == "header":
                _read_header_stamps(opened[-1], config.features)
        shapes: dict[str, tuple[int, ...]] = {}
        for bag in opened:
            for name, shape in bag.shapes.items():
                first = shapes.setdefault(name, shape)
                if shape != first:
                    raise DatasetError(f"feature {name!r} has shape {shape} in {bag.path} but {first} in an earlier bag: "
                                       "import them into separate datasets")
        recorded = [f for f in config.features if f.name in shapes]  # an optional feature that never came is left out
        for feature in recorded:
            if feature.shape is not None and tuple(feature.shape) != shapes[feature.name]:
                raise DatasetError(f"feature {feature.name!r}: the features file says shape {tuple(feature.shape)}, "
                                   f"its messages give {shapes[feature.name]}")
        # The recorder's layout: timestamp, the features, then one stale flag per feature.
        specs = [FeatureSpec(TIMESTAMP, "float64", (), "time", units="s")]
        specs += [_spec(feature, shapes[feature.name]) for feature in recorded]
        specs += [FeatureSpec(STALE_PREFIX + f.name, "bool", (), "flag", topic=f.topic) for f in recorded]
        joint_names: dict[str, list[str]] = {}
        for bag in opened:
            for name, names in bag.joint_names.items():
                if joint_names.setdefault(name, names) != names:
                    raise DatasetError(f"feature {name!r}: the JointState in {bag.path} names joints {names}, an "
                                       f"earlier bag {joint_names[name]}: pick the joints with joints: [...] in the "
                                       "features file")
        provenance = {
            "importer": "robot-stack data import-bag",
            "features_file": config.source,
            "stamp": stamp,
            "joint_names": {name: names for name, names in joint_names.items() if name in shapes},
            "bags": [{"path": str(bag.path.resolve()), "start_ns": bag.reader.start_time,
                      "duration_s": bag.reader.duration * 1e-9, "message_count": bag.reader.message_count}
                     for bag in opened],
        }
        writer = DatasetWriter.create(out, robot=config.robot, record_hz=record_hz, features=specs,
                                      tasks=[task] if task else [], provenance=provenance)
        with tqdm(total=sum(bag.message_count for bag in opened), desc=f"import into {out.name}", unit="msg",
                  disable=not progress) as bar:
            for bag in opened:
                counts = EpisodeCounts(stale={feature.name: 0 for feature in recorded})
                _import_episode(bag, recorded, shapes, writer, record_hz, counts, STALE_PREFIX, bar)
                if counts.frames == 0:
                    raise DatasetError(f"{bag.path} gives no frames: its topics overlap for less than one tick at "
                                       f"{record_hz:g} Hz")
                notes = "; ".join(part for part in (f"imported from {bag.path.name}", counts.notes()) if part)
                writer.commit_episode(task, None, notes=notes, source="import")
        writer.close()
    except BaseException:
        if writer is not None:
            try:
                writer.discard_episode()
                writer.close()
            except Exception:
                pass  # the output is removed anyway; the original error is the one to report
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        for bag in opened:
            bag.reader.close()
    return Dataset.open(out)


def _import_episode(bag: _Bag, recorded: list[Any], shapes: dict[str, tuple[int, ...]], writer: DatasetWriter,
                    record_hz: float, counts: Any, stale_prefix: str, bar: tqdm) -> None:
    """Stream the bag's mapped messages in time order and append a frame at every tick (counted in `counts`)."""
    by_topic: dict[str, list[Any]] = {}
    for feature in recorded:
        by_topic.setdefault(feature.topic, []).append(feature)
    latest: dict[str, tuple[int, np.ndarray] | None] = {feature.name: None for feature in recorded}
    zeros = {feature.name: np.zeros(shapes[feature.name], feature.dtype) for feature in recorded}
    max_age_ns = {feature.name: feature.max_age_s * 1e9 for feature in recorded}
    start = max(bag.first_ns[f.name] for f in recorded if not f.optional) if any(not f.optional for f in recorded) \
        else min(bag.first_ns.values())
    period = 1e9 / record_hz

    def append(tick: int) -> None:
        frame: dict[str, Any] = {TIMESTAMP: tick / 1e9}
        for feature in recorded:
            entry = latest[feature.name]
            # A stale value is kept (flagged); one never received is zeros (flagged), as the recorder does.
            stale = entry is None or tick - entry[0] > max_age_ns[feature.name]
            frame[feature.name] = zeros[feature.name] if entry is None else entry[1]
            frame[stale_prefix + feature.name] = stale
            counts.stale[feature.name] += stale
        writer.append_frame(frame)
        counts.frames += 1

    tick, last = start, None  # integer ns; tick k is start + round(k * period), so long bags do not drift
    for stamp, topic, message in _in_time_order(bag, list(by_topic), bar):
        while tick < stamp:  # every tick before this message has seen all messages up to it
            append(tick)
            tick = start + round(counts.frames * period)
        for feature in by_topic[topic]:
            value = _value(feature, message, bag.path, stamp)
            if value.shape != shapes[feature.name]:
                raise DatasetError(f"{bag.path}: the message on {feature.topic} at {stamp / 1e9:.3f} s gives feature "
                                   f"{feature.name!r} shape {value.shape}, earlier ones {shapes[feature.name]}")
            latest[feature.name] = (stamp, value)
        last = stamp if last is None else max(last, stamp)
    while last is not None and tick <= last:
        append(tick)
        tick = start + round(counts.frames * period)


def _header_ns(message: Any) -> int | None:
    """The header stamp of a message [ns], None for a type without a header."""
    header = getattr(message, "header", None)
    stamp = getattr(header, "stamp", None)
    return None if stamp is None else int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _read_header_stamps(bag: _Bag, features: list[Any]) -> None:
    """stamp "header": one pass over the bag for each feature's first header stamp and each topic's lateness."""
    topics = {f.topic for f in features if f.topic in bag.connections}
    offsets: dict[str, list[int]] = {}  # topic -> receive - header [ns], per message
    first: dict[str, int] = {}
    connections = [c for topic in topics for c in bag.connections[topic]]
    for connection, received, raw in bag.reader.messages(connections=connections):
        stamp = _header_ns(bag.typestore.deserialize_cdr(raw, connection.msgtype))
        if stamp is None:
            continue  # no header: timed by its receive time
        if stamp == 0:
            raise DatasetError(f"{bag.path}: the messages on {connection.topic} carry no header stamp (0): import "
                               "with --stamp receive")
        offsets.setdefault(connection.topic, []).append(received - stamp)
        first[connection.topic] = min(stamp, first.get(connection.topic, stamp))
    typical = {topic: float(np.median(values)) for topic, values in offsets.items()}
    if len(typical) < len(topics):
        typical.update({topic: 0.0 for topic in topics - set(typical)})  # receive-timed topics: offset 0
    if typical and max(typical.values()) - min(typical.values()) > CLOCK_MISMATCH_S * 1e9:
        shown = ", ".join(f"{topic} {value / 1e9:+.1f} s" for topic, value in sorted(typical.items()))
        raise DatasetError(f"{bag.path}: header stamps and receive times are on different clocks (receive minus "
                           f"header: {shown}): import with --stamp receive")
    bag.lateness_ns = {topic: max(0, max(values)) for topic, values in offsets.items()}
    for feature in features:
        if feature.name in bag.first_ns and feature.topic in first:
            bag.first_ns[feature.name] = first[feature.topic]


def _in_time_order(bag: _Bag, topics: list[str], bar: tqdm) -> Iterator[tuple[int, str, Any]]:
    """(time [ns], topic, message) of the topics' messages, in time order.

    Receive times are the bag's order. Header stamps are not (a camera's frame lands after later joint
    states): messages wait in a heap until no message still to come can be older, which holds once the
    bag's receive time is past their stamp plus the largest lateness of any topic. Memory: that window.
    """
    connections = [c for topic in topics for c in bag.connections.get(topic, ())]
    if not bag.lateness_ns:
        for connection, received, raw in bag.reader.messages(connections=connections):
            bar.update(1)
            yield received, connection.topic, bag.typestore.deserialize_cdr(raw, connection.msgtype)
        return
    window = max(bag.lateness_ns.values())
    waiting: list[tuple[int, int, str, Any]] = []
    for order, (connection, received, raw) in enumerate(bag.reader.messages(connections=connections)):
        bar.update(1)
        message = bag.typestore.deserialize_cdr(raw, connection.msgtype)
        stamp = _header_ns(message)
        heapq.heappush(waiting, (received if stamp is None else stamp, order, connection.topic, message))
        while waiting and waiting[0][0] < received - window:
            stamp, _, topic, message = heapq.heappop(waiting)
            yield stamp, topic, message
    while waiting:
        stamp, _, topic, message = heapq.heappop(waiting)
        yield stamp, topic, message
