"""Import rosbag2 recordings (sqlite3 or MCAP, read with rosbags) into a new dataset, one episode per bag.

The features file is the recorder's (robot_stack.record.load_config: robot, task, and which field of
which topic each feature is), and the frames are what the recorder on the wall clock would have
written from the same topics: at every tick of record_hz each feature holds its latest message
received at or before the tick (sample-and-hold by the bag's receive time), and stale.<feature> says
whether that message was older than the feature's max_age (or never came: zeros). An episode starts
when every non-optional feature has had a message and ends at the last mapped message.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robot_stack.data import TIMESTAMP, Dataset, DatasetWriter, FeatureSpec
from robot_stack.errors import DatasetError, RobotStackError

DEFAULT_RECORD_HZ = 20.0
"""Frames a second when none is given: the recorder node's default record_hz."""


@dataclass
class _Bag:
    """A bag opened and checked against the features: its connections and first message per feature."""

    path: Path
    reader: Any  # rosbags.rosbag2.Reader, open
    typestore: Any
    connections: dict[str, list[Any]]  # topic -> the bag's connections on it (mapped topics only)
    first_ns: dict[str, int]  # feature -> receive time of its first message (absent: it never came)
    shapes: dict[str, tuple[int, ...]]  # feature -> shape of its first message's value

    @property
    def message_count(self) -> int:
        return sum(c.msgcount for cs in self.connections.values() for c in cs)


def _type_name(name: str) -> str:
    from robot_stack.ros.messages import normalize_type_name

    return normalize_type_name(name)


def _value(feature: Any, message: Any, bag: Path, stamp_ns: int) -> np.ndarray:
    """feature.value(message), with a failure said as which bag, topic, time and feature."""
    try:
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
            bag.first_ns[feature.name] = stamp
            bag.shapes[feature.name] = _value(feature, typestore.deserialize_cdr(raw, connection.msgtype), path, stamp).shape
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
) -> Dataset:
    """Write one episode per bag into a new dataset at `out`, sampled at record_hz (default 20 Hz).

    features_file: the recorder's features file (path, or a robot_stack.record.RecorderConfig); its
    robot becomes the dataset's, its task the episodes' unless `task` is given. Optional features are
    recorded when they publish in at least one bag (zeros, flagged stale, where they do not). All bags
    must give each feature the same shape. On any error the partly written `out` is removed.
    """
    from robot_stack.record import STALE_PREFIX, EpisodeCounts, RecorderConfig, load_config

    config = features_file if isinstance(features_file, RecorderConfig) else load_config(features_file)
    record_hz = float(record_hz or DEFAULT_RECORD_HZ)
    if not record_hz > 0:
        raise DatasetError(f"record_hz must be a positive number of frames a second, got {record_hz}")
    task = task or config.task or None
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
        specs += [feature.spec(shapes[feature.name]) for feature in recorded]
        specs += [FeatureSpec(STALE_PREFIX + f.name, "bool", (), "flag", topic=f.topic) for f in recorded]
        provenance = {
            "importer": "robot-stack data import-bag",
            "features_file": config.source,
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
                writer.commit_episode(task, None, notes=notes)
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

    connections = [c for topic in by_topic for c in bag.connections.get(topic, ())]
    tick, last = start, None  # integer ns; tick k is start + round(k * period), so long bags do not drift
    for connection, stamp, raw in bag.reader.messages(connections=connections):
        while tick < stamp:  # every tick before this message has seen all messages up to it
            append(tick)
            tick = start + round(counts.frames * period)
        message = bag.typestore.deserialize_cdr(raw, connection.msgtype)
        for feature in by_topic[connection.topic]:
            value = _value(feature, message, bag.path, stamp)
            if value.shape != shapes[feature.name]:
                raise DatasetError(f"{bag.path}: the message on {feature.topic} at {stamp / 1e9:.3f} s gives feature "
                                   f"{feature.name!r} shape {value.shape}, earlier ones {shapes[feature.name]}")
            latest[feature.name] = (stamp, value)
        last = stamp if last is None else max(last, stamp)
        bar.update(1)
    while last is not None and tick <= last:
        append(tick)
        tick = start + round(counts.frames * period)
