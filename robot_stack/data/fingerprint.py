"""The dataset fingerprint: a SHA-256 of what was recorded (schema, committed index, low-dim values, and the
stored size and zstd content checksum of every image frame), read without decoding a pixel.

Labels, statistics and training runs record it to say which data they were made from; docs/dataset.md says
what it covers and why.
"""

from __future__ import annotations

import hashlib
import json
import numpy as np

from robot_stack.data.damage import damage_error, image_file_damage, read_frames, stored_frames
from robot_stack.data.store import Store, now, open_group, writing


def fingerprint(ds: Store, store: bool = False) -> str:
    """A stable hex digest of the committed data of an opened store (Dataset.fingerprint() calls this);
    `store=True` also writes it to meta/fingerprint.

    Covers the schema attributes (not provenance), meta/episode_ends, every committed value of the
    low-dim features, and for image features the stored size and zstd content checksum (xxhash64 of
    the pixels, stored with each compressed frame) of every committed frame. Frames past the last
    commit do not count, so a dataset being recorded keeps its fingerprint until the next commit.
    Damage it meets (a missing or broken file, a chunk that fails to decode) is a DatasetError line.
    """
    digest = hashlib.sha256(b"robot_stack.dataset fingerprint 1\n")
    schema = ds.schema.to_attrs()
    digest.update(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode())
    digest.update(ds.episode_ends.astype("<i8").tobytes())
    n = ds.committed_frames
    for name in sorted(ds.schema.features):
        spec, array = ds.schema.features[name], ds.data[name]
        digest.update(f"\n{name}\n".encode())
        if not n:
            continue
        if spec.is_image:
            nbytes, checksum, state = stored_frames(array, ds.path / "data" / name, 0, n)
            found = image_file_damage(name, state)
            if found:
                raise damage_error(ds.path, found, ds.episode_ends)
            digest.update(nbytes.astype("<i8").tobytes() + checksum.astype("<u4").tobytes())
        else:
            step = array.chunks[0]
            for start in range(0, n, step):
                block = np.ascontiguousarray(read_frames(ds.path, name, array, start, min(n, start + step), ds.episode_ends))
                digest.update(block.astype(block.dtype.newbyteorder("<")).tobytes())
    value = digest.hexdigest()
    if store:
        # A group of its own: a writer recording at the same time rewrites meta's attributes.
        with writing(ds.path, "the fingerprint"):
            open_group(ds.path, writable=True)["meta"].require_group("fingerprint").update_attributes(
                {"value": value, "n_episodes": len(ds.episode_ends), "n_frames": n, "computed": now()})
    return value
