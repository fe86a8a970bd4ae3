"""Damaged data never reaches training silently: real datasets on disk, damaged by really truncating,
bit-flipping, deleting or overwriting their files, then read through every reader path (validate, info,
stats, recover, the fingerprint, the samplers and loaders, `robot-stack train`). Each damage is one line
naming the array, the frames and the episodes, with what to do; never a traceback, never zeros.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr

from robot_stack.cli.main import main
from robot_stack.data import Dataset, DatasetWriter, FeatureSpec, validate
from robot_stack.data.loader import WindowDataset  # torch: imported before the sim's MuJoCo (robot_stack.native)
from robot_stack.data.sampling import load_transitions
from robot_stack.data.store import writing
from robot_stack.errors import DatasetError

IMAGE = (16, 16, 3)
FEATURES = [
    FeatureSpec("joint_pos", "float32", (3,), "state", units="rad"),
    FeatureSpec("action", "float32", (2,), "action"),
    FeatureSpec("image.wrist", "uint8", IMAGE, "image", topic="/camera/wrist/image_raw"),
]
LENGTHS = (6, 5, 7)  # episodes 0: frames 0-5, 1: 6-10, 2: 11-17
SHARD = 4  # image frames per shard file: shard k holds frames 4k..4k+3


def make_dataset(path: Path) -> Path:
    writer = DatasetWriter.create(path, robot={"name": "test_arm"}, record_hz=10, features=FEATURES,
                                  tasks=["pick"], image_shard_frames=SHARD)
    for key, n in enumerate(LENGTHS):
        i = np.arange(n)
        writer.append_frames({
            "joint_pos": (key * 10 + i[:, None] + np.arange(3) / 10).astype(np.float32),
            "action": np.sin(key + i[:, None] * np.arange(1, 3) / 3).astype(np.float32),
            "image.wrist": np.full((n, *IMAGE), 50 + key, np.uint8),
            "timestamp": 100.0 * key + i / 10,
        })
        writer.commit_episode("pick", key != 1, operator="ada")
    writer.close()
    return path


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("damage") / "clean.zarr")


def _copy(clean: Path, tmp_path: Path) -> Path:
    path = tmp_path / "damaged.zarr"
    shutil.copytree(clean, path)
    return path


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _flip_one_bit(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x10
    file.write_bytes(bytes(data))


SHARD_1 = "data/image.wrist/c/1/0/0/0"  # frames 4-7: the end of episode 0 and the start of episode 1
LOW_DIM = "data/action/c/0/0"  # the one chunk of action: every frame
DAMAGE = {
    # name: (damage it, the line validate prints (a prefix), what it names after it)
    "truncated image shard": (lambda p: _truncate(p / SHARD_1), "data/image.wrist: frames 4-7 are in a damaged file",
                              "episodes 0-1"),
    "zero-byte image shard": (lambda p: (p / SHARD_1).write_bytes(b""), "data/image.wrist: frames 4-7 are in a damaged file",
                              "episodes 0-1"),
    "truncated low-dim chunk": (lambda p: _truncate(p / LOW_DIM), "data/action: frames 0-17 cannot be read: the file is corrupted",
                                "episodes 0-2"),
    "bit-flipped low-dim chunk": (lambda p: _flip_one_bit(p / LOW_DIM),
                                  "data/action: frames 0-17 cannot be read: the file is corrupted", "episodes 0-2"),
    "deleted low-dim chunk": (lambda p: (p / LOW_DIM).unlink(), "data/action: frames 0-17 are missing on disk", "episodes 0-2"),
}


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_each_damage_is_one_line_from_every_reader_path(damage, clean, tmp_path, capsys):
    make_damage, line, episodes = DAMAGE[damage]
    path = _copy(clean, tmp_path)
    make_damage(path)

    problems = validate(path, progress=False)
    assert len(problems) == 1 and problems[0].startswith(line) and episodes in problems[0], problems
    assert "restore the dataset from a backup copy" in problems[0]
    code, out, err = _cli(capsys, "data", "validate", path, "-q")
    assert code == 1 and f"problem: {problems[0]}" in out.splitlines(), out + err

    # The readers that touch the damaged array refuse with the same line, not a codec traceback or zeros.
    array = line.split(":")[0].removeprefix("data/")
    ds = Dataset.open(path)
    with pytest.raises(DatasetError) as failure:
        ds.frames(array)
    assert problems[0] in str(failure.value)
    with pytest.raises(DatasetError) as failure:
        ds.fingerprint()  # reads every low-dim value and every image frame's stored size and checksum
    assert problems[0] in str(failure.value)
    code, out, err = _cli(capsys, "data", "stats", path)
    assert code == 2 and problems[0] in err and "Traceback" not in err and out == ""
    if array == "action":
        with pytest.raises(DatasetError, match=line):
            load_transitions(ds, ["joint_pos"], action="action")
    else:
        with pytest.raises(DatasetError, match=line):
            WindowDataset(path, ["image.wrist"], length=2)

    # info reads metadata only, and says so; recover has nothing to do with committed frames.
    code, out, _ = _cli(capsys, "data", "info", path)
    assert code == 0 and f"metadata only, the recorded chunks were not read: run `robot-stack data validate {path}`" in out
    assert _cli(capsys, "data", "recover", path, "--keep")[0] == 0


def test_a_corrupted_image_frame_read_by_the_loader_is_one_line(clean, tmp_path):
    path = _copy(clean, tmp_path)
    shard = path / SHARD_1
    index = np.frombuffer(shard.read_bytes()[-(16 * SHARD + 4) : -4], "<u8").reshape(SHARD, 2)
    data = bytearray(shard.read_bytes())
    data[int(index[2, 0]) + int(index[2, 1]) // 2] ^= 0x01  # frame 6: the first of episode 1
    shard.write_bytes(bytes(data))
    problems = validate(path, progress=False)
    assert len(problems) == 1 and problems[0].startswith("data/image.wrist: frames 6-6 cannot be read") \
        and "episode 1:" in problems[0], problems
    windows = WindowDataset(path, ["image.wrist"], length=1)  # the files are all there: it opens
    with pytest.raises(DatasetError) as failure:
        windows.__getitems__([5, 6, 7])
    assert problems[0] in str(failure.value)


def test_garbage_in_an_array_description_is_one_line_everywhere(clean, tmp_path, capsys):
    path = _copy(clean, tmp_path)
    (path / "data" / "action" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "arr')
    problems = validate(path, progress=False)
    assert len(problems) == 1 and "data/action/zarr.json is damaged" in problems[0], problems
    assert "restore the dataset from a backup copy" in problems[0]
    for verb in (["info"], ["validate", "-q"], ["stats"], ["recover", "--keep"], ["view", "--camera", "wrist"]):
        code, out, err = _cli(capsys, "data", verb[0], path, *verb[1:] if verb[0] != "view" else ["0", *verb[1:]])
        assert code in (1, 2) and "Traceback" not in err, (verb, out, err)
        assert "data/action/zarr.json is damaged" in out + err, (verb, out, err)


@pytest.mark.parametrize("feature, bad", [("action", "nan"), ("action", "inf"), ("joint_pos", "-inf")])
def test_nan_or_inf_actions_or_states_are_damage_validate_reports(feature, bad, clean, tmp_path, capsys):
    path = _copy(clean, tmp_path)
    array = zarr.open_array(path / "data" / feature, mode="r+")  # rewritten whole, as a bad tool would
    values = array[:]
    values[8, 1] = float(bad)  # episode 1 (frames 6-10)
    array[:] = values
    problems = validate(path, progress=False)
    assert problems == [f"data/{feature}: frames 8-8 hold NaN or Inf values; they belong to episode 1: restore the "
                        "dataset from a backup copy, or re-record those episodes"]
    code, out, _ = _cli(capsys, "data", "validate", path, "-q")
    assert code == 1 and f"problem: {problems[0]}" in out
    with pytest.raises(DatasetError) as failure:
        load_transitions(Dataset.open(path), ["joint_pos"])
    assert problems[0] in str(failure.value)


def test_validate_reports_unfinished_frames_with_the_recover_command(clean, tmp_path, capsys):
    path = _copy(clean, tmp_path)
    writer = DatasetWriter.open(path)
    writer.append_frames({"joint_pos": np.zeros((3, 3), np.float32), "action": np.zeros((3, 2), np.float32),
                          "image.wrist": np.zeros((3, *IMAGE), np.uint8), "timestamp": 500 + np.arange(3) / 10})
    writer.close()  # the episode stays unfinished, as a killed recorder leaves it
    code, out, _ = _cli(capsys, "data", "validate", path, "-q")
    assert code == 1
    assert (f"problem: 3 frames past the last committed episode (a recording that stopped without commit or discard): "
            f"run `robot-stack data recover {path} --keep` or `--drop`") in out


# ---- the store's own messages


def test_a_store_killed_while_being_created_says_nothing_was_recorded(tmp_path, capsys):
    path = tmp_path / "new.zarr"
    DatasetWriter.create(path, robot={"name": "test_arm"}, record_hz=10, features=FEATURES).close()
    # What a kill just before create's last write (the root attributes with the format marker) leaves.
    root = json.loads((path / "zarr.json").read_text())
    root["attributes"] = {}
    (path / "zarr.json").write_text(json.dumps(root))
    code, _, err = _cli(capsys, "data", "info", path)
    assert code == 2
    assert err.strip().endswith(f"{path} was being created when its recorder stopped (it has no format marker and no "
                                f"episode): nothing was recorded in it; remove the folder (rm -r {path}) and record again")


@pytest.mark.parametrize("code, cause, action", [
    (errno.ENOENT, "a folder on the way to it does not exist", "check that the folder exists and is mounted"),
    (errno.EACCES, "permission denied: this user may not write there", "record into a folder you may write to"),
    (errno.EROFS, "the file system is read-only", "record onto a writable disk"),
])
def test_a_failed_write_names_its_cause_not_a_full_disk(code, cause, action, tmp_path):
    with pytest.raises(DatasetError) as failure, writing(tmp_path / "d.zarr", "frames 0-9"):
        raise OSError(code, "os message", str(tmp_path / "d.zarr" / "data"))
    message = str(failure.value)
    assert cause in message and action in message and "disk is full" not in message and "free" not in message


@pytest.fixture
def small_mount(tmp_path):
    """A 4 MB tmpfs (needs root; skipped otherwise), unmounted after the test."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_background_write_failure_says_the_episode_is_lost_in_an_operators_terms(small_mount):
    path = small_mount / "d.zarr"
    writer = DatasetWriter.create(path, robot={"name": "test_arm"}, record_hz=10, features=FEATURES[:2])
    frame = {"joint_pos": np.zeros(3, np.float32), "action": np.zeros(2, np.float32), "timestamp": 0.0}
    writer.append_frame(frame)
    writer.commit_episode("pick", True)
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)  # the disk goes read-only
    with pytest.raises(DatasetError) as failure:
        for i in range(100):
            writer.append_frame(frame | {"timestamp": 1.0 + i / 10})
        writer.flush()
    message = str(failure.value)
    assert message.startswith("the episode being recorded is lost: cannot write frames 1-")
    assert "the file system is read-only" in message and "Committed episodes are intact" in message
    assert "discard_episode" not in message and "disk is full" not in message
    assert failure.value.__cause__.errno == errno.EROFS  # a recorder can tell the cause from the exception
    with pytest.raises(DatasetError, match="the episode being recorded is lost"):
        writer.append_frame(frame)  # and it stays so until the episode is dropped
    writer.discard_episode()
    assert Dataset.open(path).n_episodes == 1


# ---- robot-stack train refuses damaged data before its first update, with validate's line


@pytest.fixture(scope="module")
def reach(tmp_path_factory) -> Path:
    """4 scripted reach2d episodes from the MuJoCo sim (a few seconds)."""
    from robot_stack.sim.collect import collect

    return collect("reach2d", tmp_path_factory.mktemp("train") / "reach.zarr", 4, mix={"expert": 1.0}, seed=0,
                   progress=False).path


def _nan_action(path: Path) -> None:
    action = zarr.open_array(path / "data" / "action", mode="r+")  # rewrites the chunk as a bad tool would
    values = action[:]
    values[30, 0] = np.nan
    action[:] = values


@pytest.mark.parametrize("damage", ["deleted action chunk", "NaN action"])
def test_train_refuses_damaged_data_with_the_line_validate_prints(damage, reach, tmp_path, capsys):
    path = tmp_path / "reach.zarr"
    shutil.copytree(reach, path)
    if damage == "deleted action chunk":
        (path / "data" / "action" / "c" / "0" / "0").unlink()
    else:
        _nan_action(path)
    problems = validate(path, progress=False)
    assert len(problems) == 1, problems
    out_dir = tmp_path / "run"
    code, out, err = _cli(capsys, "train", "--algo", "bc", "--dataset", path, "--steps", "5", "--eval-every", "-1",
                          "--device", "cpu", "--out", out_dir, "--no-progress")
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [f"robot-stack train: error: cannot train on {path}: {problems[0]} "
                                        f"(`robot-stack data validate {path}` lists every problem)"], err
    assert not (out_dir / "checkpoints").exists()  # no run started
