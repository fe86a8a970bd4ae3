"""`robot-stack data import/export robomimic`: a reach2d dataset the sim collector records, exported to one HDF5 file
and imported back; robomimic files the tests write with h5py in robomimic's layout (data/demo_<i>/{obs, next_obs,
actions, rewards, dones, states}, env_args, mask/ filter keys); robomimic's own file utilities and SequenceDataset
opening an export where robomimic is installed (CI has only the interop extra: that test skips there).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robot_stack.cli.main import main as cli
from robot_stack.data import Dataset, DatasetWriter, FeatureSpec
from robot_stack.data.sampling import load_transitions
from robot_stack.interop import robomimic
from robot_stack.sim.collect import collect

h5py = pytest.importorskip("h5py", reason="the interop extra (h5py) is not installed")

CONTROL_FREQ = 10  # the written file's env_kwargs.control_freq: timestamps must follow it, not the 20 Hz default
N_DEMOS = 11  # demo_10 sorts before demo_2 by name: the import must follow the index
STATE_DIM = 5


@pytest.fixture(scope="module")
def reach(tmp_path_factory) -> Dataset:
    """Three reach2d episodes (one failure, two successes) with a 32x32 top camera, shared read-only."""
    path = tmp_path_factory.mktemp("reach") / "reach.zarr"
    return collect("reach2d", path, 3, mix={"medium": 1.0}, seed=0, cameras=["top:32x32"], progress=False)


def demo_arrays(index: int) -> dict[str, np.ndarray]:
    """Demo `index` of the written file: T = 4 + index % 3 steps, values that say which demo and step they are.
    "obs/<key>" holds the T + 1 observations s_0..s_T (the file's obs are the first T, its next_obs the last T)."""
    steps = 4 + index % 3
    rng = np.random.default_rng(index)
    rewards = np.zeros(steps)
    rewards[-1] = 1.0 if index % 2 == 0 else 0.0  # sparse success reward (for reaching s_T): even demos succeed
    rewards[-2] = 0.25  # and one earlier reward, so that a reward moved by a step shows
    dones = np.zeros(steps, np.int64)
    dones[-1] = 1  # done_mode 1: the end of every demo, success or not
    image = np.zeros((steps + 1, 8, 8, 3), np.uint8)
    image[:, 0, 0, 0] = index
    image[:, 1, 1, 1] = np.arange(steps + 1)
    return {"obs/robot0_eef_pos": rng.normal(size=(steps + 1, 3)), "obs/object": rng.normal(size=(steps + 1, 10)),
            "obs/agentview_image": image, "actions": rng.uniform(-1, 1, (steps, 7)), "rewards": rewards,
            "dones": dones, "states": rng.normal(size=(steps, STATE_DIM))}


def write_robomimic(path: Path, n_demos: int = N_DEMOS, *, env_kwargs: dict | None = None,
                    masks: dict[str, list[int]] | None = None, edit=None, no_next_obs: tuple[str, ...] = ()) -> Path:
    """A robomimic HDF5 file as robomimic's dataset_states_to_obs writes it: step t holds obs s_t, next_obs s_{t+1}
    (the obs keys in no_next_obs get none, as with its --exclude-next-obs)."""
    kwargs = {"control_freq": CONTROL_FREQ, "reward_shaping": False, "robots": ["Panda"]} if env_kwargs is None else env_kwargs
    masks = {"train": [i for i in range(n_demos) if i % 4], "valid": [i for i in range(n_demos) if not i % 4]} \
        if masks is None else masks
    with h5py.File(path, "w") as file:
        data = file.create_group("data")
        total = 0
        for index in range(n_demos):
            group = data.create_group(f"demo_{index}")
            arrays = demo_arrays(index)
            for key, values in arrays.items():
                group.create_dataset(key, data=values[:-1] if key.startswith("obs/") else values)
                if key.startswith("obs/") and key[4:] not in no_next_obs:
                    group.create_dataset(f"next_{key}", data=values[1:])
            group.attrs["num_samples"] = len(arrays["actions"])
            group.attrs["model_file"] = "<mujoco/>"
            total += len(arrays["actions"])
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": kwargs})
        for key, demos in masks.items():
            file.create_dataset(f"mask/{key}", data=np.array([f"demo_{i}" for i in demos], dtype="S"))
        if edit is not None:
            edit(file)
    return path


@pytest.fixture(scope="module")
def robomimic_file(tmp_path_factory) -> Path:
    return write_robomimic(tmp_path_factory.mktemp("rm") / "lift.hdf5")


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_round_trip_keeps_values_boundaries_tasks_success(reach, tmp_path, capsys):
    exported = tmp_path / "reach.hdf5"
    code, out, _ = run(capsys, "data", "export", "robomimic", reach.path, exported, "-q")
    assert code == 0, out
    code, out, _ = run(capsys, "data", "import", "robomimic", exported, tmp_path / "back.zarr", "-q")
    assert code == 0, out
    back = Dataset.open(tmp_path / "back.zarr")

    assert back.features == reach.features  # names, dtypes, shapes, kinds, topics, units
    for name in reach.features:
        assert back.frames(name).dtype == reach.frames(name).dtype
        assert np.array_equal(back.frames(name), reach.frames(name)), name  # images raw (gzip): exact
    assert back.episode_ends.tolist() == reach.episode_ends.tolist()
    assert back.success.tolist() == reach.success.tolist() == [0, 1, 1]
    assert back.tasks == reach.tasks
    assert [back.episode_info(i).task_text for i in range(3)] == [reach.episode_info(i).task_text for i in range(3)]
    assert [back.episode_info(i).notes for i in range(3)] == [reach.episode_info(i).notes for i in range(3)]
    assert back.robot == reach.robot and back.record_hz == reach.record_hz
    record = back.provenance["import"]
    assert record["format"] == "robomimic" and record["exported_from"]["fingerprint"] == reach.fingerprint()
    assert record["success"] == robomimic.SUCCESS_KEPT


def test_export_is_robomimic_layout(reach, tmp_path):
    """An episode of F frames is a demo of F - 1 steps: obs frames 0..F-2, next_obs frames 1..F-1, their actions,
    rewards[t] = frame t + 1's reward, dones 1 at the last step of a successful episode only; num_samples, total and
    env_args; what the layout cannot hold (frame 0's reward, the last frame's action) under robot_stack/."""
    path = robomimic.export_dataset(reach, tmp_path / "reach.hdf5", progress=False)
    with h5py.File(path, "r") as file:
        data = file["data"]
        assert sorted(data) == ["demo_0", "demo_1", "demo_2"] and "mask" not in file
        assert data.attrs["total"] == reach.n_frames - reach.n_episodes
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["env_name"] == "RobotStack/Reach2D-v0" and env_args["type"] == 2
        assert env_args["env_kwargs"]["control_freq"] == reach.record_hz and "robot_stack" in env_args
        for index in range(3):
            demo, info = data[f"demo_{index}"], reach.episode_info(index)
            steps = info.length - 1
            frames = {name: reach.frames(name, info.start, info.stop) for name in ("eef_pose", "action", "sim_reward")}
            assert sorted(demo["obs"]) == ["eef_pose", "joint_position", "joint_velocity", "object_pose", "top_image"]
            assert sorted(demo["next_obs"]) == sorted(demo["obs"])
            assert demo.attrs["num_samples"] == steps
            assert demo["actions"].shape == (steps, 2)
            assert demo["obs/top_image"].dtype == np.uint8 and demo["obs/top_image"].shape == (steps, 32, 32, 3)
            assert np.array_equal(demo["obs/eef_pose"][()], frames["eef_pose"][:-1])
            assert np.array_equal(demo["next_obs/eef_pose"][()], frames["eef_pose"][1:])  # the last one is s_T
            assert np.array_equal(demo["next_obs/top_image"][-1], reach.frames("image.top", info.stop - 1, info.stop)[0])
            assert np.array_equal(demo["actions"][()], frames["action"][:-1])
            assert np.array_equal(demo["rewards"][()], frames["sim_reward"][1:])  # rewards[t]: for reaching s_{t+1}
            assert demo["dones"][()].tolist() == [0] * (steps - 1) + [int(info.success)]
            assert np.array_equal(demo["robot_stack/last_frame/action"][()], frames["action"][-1:])
            assert np.array_equal(demo["robot_stack/first_frame/sim_reward"][()], frames["sim_reward"][:1])
            assert demo["robot_stack/frames/timestamp"].shape == (info.length,)


def test_import_maps_obs_rewards_dones_splits_and_provenance(robomimic_file, tmp_path):
    ds = robomimic.import_dataset(robomimic_file, tmp_path / "lift.zarr", progress=False, task="lift the cube")

    assert ds.n_episodes == N_DEMOS
    assert {name: (spec.kind, spec.dtype, spec.shape) for name, spec in ds.features.items()} == {
        "timestamp": ("time", "float64", ()), "action": ("action", "float64", (7,)),
        "robot0_eef_pos": ("state", "float64", (3,)), "object": ("state", "float64", (10,)),
        "image.agentview": ("image", "uint8", (8, 8, 3)), "reward": ("reward", "float64", ()),
        "done": ("flag", "bool", ()), "stale.action": ("flag", "bool", ())}
    for index in range(N_DEMOS):  # episode i is demo_i: numeric order (demo_10 last, not after demo_1)
        arrays, part = demo_arrays(index), ds.episode_slice(index)
        steps = len(arrays["actions"])
        assert part.stop - part.start == steps + 1  # T steps: T + 1 frames, the last one next_obs[T - 1]
        assert np.array_equal(ds.frames("robot0_eef_pos", part.start, part.stop), arrays["obs/robot0_eef_pos"])
        assert np.array_equal(ds.frames("image.agentview", part.start, part.stop), arrays["obs/agentview_image"])
        action = ds.frames("action", part.start, part.stop)
        assert np.array_equal(action[:-1], arrays["actions"]) and np.array_equal(action[-1], arrays["actions"][-1])
        assert ds.frames("stale.action", part.start, part.stop).tolist() == [False] * steps + [True]
        assert np.array_equal(ds.frames("reward", part.start, part.stop), np.concatenate([[0.0], arrays["rewards"]]))
        assert ds.frames("done", part.start, part.stop).tolist() == [False] * steps + [True]
    assert ds.success.tolist() == [int(i % 2 == 0) for i in range(N_DEMOS)]  # the last sparse reward
    assert set(ds.tasks) == {"lift the cube"}
    assert np.allclose(np.diff(ds.frames("timestamp")), 1.0 / CONTROL_FREQ) and ds.record_hz == CONTROL_FREQ

    record = ds.provenance["import"]
    assert record["splits"] == {"train": [i for i in range(N_DEMOS) if i % 4], "valid": [0, 4, 8]}
    assert record["env_args"]["env_kwargs"]["control_freq"] == CONTROL_FREQ
    assert record["timestamps"].startswith("from the control rate") and "control_freq" in record["timestamps"]
    assert record["success"] == robomimic.SUCCESS_SPARSE
    assert record["demos"][10] == "demo_10" and any(item.startswith("states") for item in record["not_imported"])
    assert record["repeated_at_last_frame"] == ["actions"] and "transition t is robomimic's step t" in record["frames"]
    assert ds.robot["name"] == "Lift" and ds.robot["robomimic_env"]["type_name"] == "robosuite"
    assert ds.robot["robots"] == ["Panda"]


def test_imported_transitions_are_robomimic_steps(robomimic_file, tmp_path):
    """robot_stack's samplers make from an import exactly robomimic's steps: transition t of demo i is (obs[t],
    actions[t], rewards[t], next_obs[t]), one per step, the last step (the sparse success reward) included and
    terminal where the demo succeeded. Copying rewards row for row would pay rewards[t] on transition t - 1."""
    ds = robomimic.import_dataset(robomimic_file, tmp_path / "lift.zarr", progress=False)
    obs = ["robot0_eef_pos", "object"]
    transitions = load_transitions(ds, obs=obs, reward="feature:reward")
    assert len(transitions.reward) == sum(len(demo_arrays(i)["actions"]) for i in range(N_DEMOS))
    for index in range(N_DEMOS):
        arrays, mine = demo_arrays(index), np.flatnonzero(transitions.episode == index)
        assert len(mine) == len(arrays["actions"])
        for name in obs:
            assert np.array_equal(transitions.obs[name][mine], arrays[f"obs/{name}"][:-1])
            assert np.array_equal(transitions.next_obs[name][mine], arrays[f"obs/{name}"][1:])
        assert np.array_equal(transitions.action[mine], arrays["actions"])
        assert np.array_equal(transitions.reward[mine], arrays["rewards"].astype(np.float32))
        assert transitions.terminal[mine].tolist() == [False] * (len(mine) - 1) + [index % 2 == 0]
        assert transitions.timeout[mine[-1]] == (index % 2 == 1)


def test_import_without_next_obs_repeats_the_last_obs_and_flags_it(tmp_path):
    """An obs key with no next_obs (robomimic's --exclude-next-obs) has no s_T: frame T repeats obs[T - 1] and
    stale.<feature> marks it; the provenance names the key."""
    src = write_robomimic(tmp_path / "no_next.hdf5", 3, no_next_obs=("object", "agentview_image"))
    ds = robomimic.import_dataset(src, tmp_path / "a.zarr", progress=False)
    record = ds.provenance["import"]
    assert record["repeated_at_last_frame"] == ["actions", "obs/agentview_image", "obs/object"]
    for index in range(3):
        arrays, part = demo_arrays(index), ds.episode_slice(index)
        steps = len(arrays["actions"])
        observed = arrays["obs/object"][:-1]
        assert np.array_equal(ds.frames("object", part.start, part.stop), np.concatenate([observed, observed[-1:]]))
        assert ds.frames("stale.object", part.start, part.stop).tolist() == [False] * steps + [True]
        assert ds.frames("stale.image.agentview", part.start, part.stop).tolist() == [False] * steps + [True]
        assert np.array_equal(ds.frames("robot0_eef_pos", part.start, part.stop), arrays["obs/robot0_eef_pos"])
    assert "stale.robot0_eef_pos" not in ds.features


def test_import_without_rate_or_sparse_reward_says_so(tmp_path):
    """No control_freq: 20 Hz (or --record-hz), said in the provenance; dense rewards: success unknown."""
    src = write_robomimic(tmp_path / "dense.hdf5", 3, env_kwargs={"reward_shaping": True}, masks={})
    ds = robomimic.import_dataset(src, tmp_path / "a.zarr", progress=False)
    assert ds.record_hz == robomimic.DEFAULT_HZ and "the default" in ds.provenance["import"]["timestamps"]
    assert ds.success.tolist() == [-1, -1, -1] and ds.provenance["import"]["splits"] == {}
    ds = robomimic.import_dataset(src, tmp_path / "b.zarr", progress=False, record_hz=5.0, keep_states=True)
    assert np.allclose(np.diff(ds.frames("timestamp")), 0.2) and "record_hz given" in ds.provenance["import"]["timestamps"]
    part, states = ds.episode_slice(2), demo_arrays(2)["states"]  # the sim state of s_T is not in the file
    assert np.array_equal(ds.frames("sim_state", part.start, part.stop), np.concatenate([states, states[-1:]]))
    assert ds.frames("stale.sim_state", part.start, part.stop).tolist() == [False] * len(states) + [True]


def test_import_then_export_keeps_demo_names_filter_keys_env_args_and_states(tmp_path):
    """A file whose demos skip numbers (demo_1 and demo_3 removed, as after robomimic's filtering) goes back with
    the same demo names, filter keys, env_args and arrays."""
    def drop(file):
        del file["data/demo_1"], file["data/demo_3"]

    src = write_robomimic(tmp_path / "gaps.hdf5", 6, masks={"train": [0, 4, 5], "valid": [2]}, edit=drop)
    ds = robomimic.import_dataset(src, tmp_path / "gaps.zarr", progress=False, keep_states=True)
    assert ds.provenance["import"]["splits"] == {"train": [0, 2, 3], "valid": [1]}
    path = robomimic.export_dataset(ds, tmp_path / "again.hdf5", progress=False)
    with h5py.File(src, "r") as original, h5py.File(path, "r") as again:
        assert sorted(again["data"]) == sorted(original["data"]) == ["demo_0", "demo_2", "demo_4", "demo_5"]
        for key in ("train", "valid"):
            assert again[f"mask/{key}"][()].tolist() == original[f"mask/{key}"][()].tolist()
        assert json.loads(again["data"].attrs["env_args"]) == json.loads(original["data"].attrs["env_args"])
        for demo in original["data"]:
            assert again[f"data/{demo}"].attrs["num_samples"] == original[f"data/{demo}"].attrs["num_samples"]
            for key in ("actions", "states", "rewards", "dones", "obs/object", "obs/agentview_image",
                        "next_obs/object", "next_obs/agentview_image"):
                assert np.array_equal(again[f"data/{demo}/{key}"][()], original[f"data/{demo}/{key}"][()])


def test_export_valid_fraction_writes_train_valid_masks(reach, tmp_path, capsys):
    path = tmp_path / "split.hdf5"
    code, _, err = run(capsys, "data", "export", "robomimic", reach.path, path, "--valid-fraction", 0.34, "-q")
    assert code == 0, err
    with h5py.File(path, "r") as file:
        train = {name.decode() for name in file["mask/train"][()]}
        valid = {name.decode() for name in file["mask/valid"][()]}
    assert len(valid) == 1 and train | valid == {"demo_0", "demo_1", "demo_2"} and not train & valid
    code, _, err = run(capsys, "data", "export", "diffusion-policy", reach.path, tmp_path / "dp.zarr",
                       "--valid-fraction", 0.5, "-q")
    assert code == 2 and "--valid-fraction" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "dp.zarr").exists()


def test_trainer_runs_on_imported_dataset(robomimic_file, tmp_path, capsys):
    code, out, err = run(capsys, "data", "import", "robomimic", robomimic_file, tmp_path / "lift.zarr", "--task",
                         "lift the cube", "-q")
    assert code == 0, err
    assert f"{N_DEMOS} episodes" in out and f"{CONTROL_FREQ:g} Hz" in out
    code, out, err = run(capsys, "train", "--algo", "bc", "--dataset", tmp_path / "lift.zarr", "--steps", 20,
                         "--batch-size", 16, "--eval-every", -1, "--device", "cpu", "--out", tmp_path / "run",
                         "--no-progress", "--set", "hidden_dims=[16]")
    assert code == 0, err
    assert (tmp_path / "run").is_dir()


def test_interrupted_import_resumes(robomimic_file, tmp_path, monkeypatch):
    out = tmp_path / "lift.zarr"
    real = robomimic.write_import

    def interrupted(source, target, progress):
        read = source.episode

        def episode(index):
            if index == 4:
                raise KeyboardInterrupt
            return read(index)

        source.episode = episode
        return real(source, target, progress)

    monkeypatch.setattr(robomimic, "write_import", interrupted)
    with pytest.raises(KeyboardInterrupt):
        robomimic.import_dataset(robomimic_file, out, progress=False)
    assert Dataset.open(out).n_episodes == 4
    monkeypatch.setattr(robomimic, "write_import", real)

    resumed = robomimic.import_dataset(robomimic_file, out, progress=False)
    fresh = robomimic.import_dataset(robomimic_file, tmp_path / "fresh.zarr", progress=False)
    assert resumed.episode_ends.tolist() == fresh.episode_ends.tolist()
    for name in fresh.features:
        assert np.array_equal(resumed.frames(name), fresh.frames(name)), name


def _unequal_lengths(file) -> None:
    del file["data/demo_3/actions"]
    file["data/demo_3/actions"] = np.zeros((2, 7))


@pytest.mark.parametrize(("case", "words"), [
    ("missing", ["does not exist"]),
    ("not_hdf5", ["not an HDF5 file"]),
    ("no_data", ["no data/ group"]),
    ("truncated", ["truncated"]),
    ("not_demo", ["data/episode_0", "demo_<i>"]),
    ("unequal", ["demo_3", "disagree in length"]),
    ("bad_mask", ["mask/train", "demo_99"]),
    ("old_export", ["record version 1", "export the dataset again"]),
    ("out_exists", ["exists", "new path"]),
])
def test_bad_input_is_one_line(case, words, tmp_path, capsys):
    src, out = tmp_path / "in.hdf5", tmp_path / "out.zarr"
    if case == "not_hdf5":
        src.write_text("demo_0,actions\n1,2\n")
    elif case == "no_data":
        with h5py.File(src, "w") as file:
            file.create_dataset("observations", data=np.zeros((3, 2)))
    elif case == "truncated":
        whole = write_robomimic(tmp_path / "whole.hdf5", 3).read_bytes()
        src.write_bytes(whole[: len(whole) // 2])
    elif case == "not_demo":
        with h5py.File(src, "w") as file:
            file.create_dataset("data/episode_0/actions", data=np.zeros((3, 2)))
    elif case == "unequal":
        write_robomimic(src, 4, edit=_unequal_lengths)
    elif case == "bad_mask":
        write_robomimic(src, 2, masks={"train": [0, 99]})
    elif case == "old_export":  # rows were frames then: read under today's rules it would move every reward
        write_robomimic(src, 2, edit=lambda file: file["data"].attrs.create("robot_stack", json.dumps({"version": 1})))
    elif case == "out_exists":
        write_robomimic(src, 2)
        out.mkdir()
        (out / "notes.txt").write_text("someone else's")
    code, _, err = run(capsys, "data", "import", "robomimic", src, out, "-q")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert all(word in lines[0] for word in words), lines[0]
    assert case == "out_exists" or not out.exists()  # refused before anything was written


def test_export_refuses_existing_out(reach, tmp_path, capsys):
    (tmp_path / "taken.hdf5").write_bytes(b"x")
    code, _, err = run(capsys, "data", "export", "robomimic", reach.path, tmp_path / "taken.hdf5", "-q")
    assert code == 2 and "exists" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "taken.hdf5").read_bytes() == b"x"


def test_export_refuses_a_one_frame_episode(tmp_path, capsys):
    """An episode of one frame has no step: a robomimic demo of 0 steps is refused, and nothing is written."""
    features = [FeatureSpec("position", "float32", (2,), "state"), FeatureSpec("action", "float32", (2,), "action")]
    with DatasetWriter.create(tmp_path / "short.zarr", robot={"name": "arm"}, record_hz=10.0,
                              features=features) as writer:
        for count in (3, 1):
            writer.append_frames({"timestamp": np.arange(count) / 10.0, "position": np.zeros((count, 2)),
                                  "action": np.zeros((count, 2))})
            writer.commit_episode(None, None)
    code, _, err = run(capsys, "data", "export", "robomimic", tmp_path / "short.zarr", tmp_path / "short.hdf5", "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "episode(s) [1]" in err and "one frame" in err
    assert not (tmp_path / "short.hdf5").exists()


def test_robomimic_own_reader_opens_export(reach, tmp_path):
    """robomimic 0.3's FileUtils and SequenceDataset (with the exported filter keys) read what robot_stack wrote; a
    filter key its create_hdf5_filter_key adds becomes a split of the import."""
    pytest.importorskip("robomimic", reason="robomimic is not installed (not part of the interop extra)")
    file_utils = pytest.importorskip("robomimic.utils.file_utils", reason="robomimic's file utils do not import")
    obs_utils = pytest.importorskip("robomimic.utils.obs_utils")
    sequence = pytest.importorskip("robomimic.utils.dataset").SequenceDataset
    path = robomimic.export_dataset(reach, tmp_path / "reach.hdf5", progress=False, valid_fraction=0.34, seed=1)
    low_dim = ["eef_pose", "joint_position", "joint_velocity", "object_pose"]
    obs_utils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": low_dim, "rgb": ["top_image"]}})

    env = file_utils.get_env_metadata_from_dataset(str(path))
    assert env["env_name"] == "RobotStack/Reach2D-v0" and env["env_kwargs"]["control_freq"] == reach.record_hz
    shapes = file_utils.get_shape_metadata_from_dataset(str(path), all_obs_keys=[*low_dim, "top_image"])
    assert shapes["ac_dim"] == 2 and shapes["use_images"]
    assert shapes["all_shapes"]["eef_pose"] == [7] and shapes["all_shapes"]["top_image"] == [3, 32, 32]

    # robomimic's (s, a, r, s', done) of every step is robot_stack's transition of the same frame, reward included
    transitions = load_transitions(reach, obs=["eef_pose"], reward="feature:sim_reward")
    row_of_frame = {int(frame): row for row, frame in enumerate(transitions.frame)}
    seen = 0
    for split in ("train", "valid"):
        data = sequence(str(path), obs_keys=["eef_pose", "top_image"], dataset_keys=["actions", "rewards", "dones"],
                        seq_length=1, hdf5_cache_mode=None, filter_by_attribute=split)
        for item in range(len(data)):
            sample, demo = data[item], data._index_to_demo_id[item]
            frame = reach.episode_slice(int(demo[5:])).start + item - data._demo_id_to_start_indices[demo]
            row = row_of_frame[frame]
            assert np.array_equal(sample["obs"]["eef_pose"][0], transitions.obs["eef_pose"][row])
            assert np.array_equal(sample["next_obs"]["eef_pose"][0], transitions.next_obs["eef_pose"][row])
            assert np.array_equal(sample["actions"][0], transitions.action[row])
            assert sample["rewards"][0] == transitions.reward[row]
            assert sample["dones"][0] == transitions.terminal[row]
            assert np.array_equal(sample["obs"]["top_image"][0], reach.frames("image.top", frame, frame + 1)[0])
            assert np.array_equal(sample["next_obs"]["top_image"][0], reach.frames("image.top", frame + 1, frame + 2)[0])
            seen += 1
        data.close_and_delete_hdf5_handle()
    assert seen == len(transitions.reward) and transitions.reward.any()
    train_demos = sequence(str(path), obs_keys=["eef_pose"], dataset_keys=["actions"], filter_by_attribute="train",
                           hdf5_cache_mode=None).n_demos
    assert train_demos == 2

    # a filter key robomimic's own create_hdf5_filter_key adds comes back as a split
    lengths = file_utils.create_hdf5_filter_key(str(path), ["demo_0", "demo_2"], "picked")
    assert lengths == [reach.episode_info(0).length - 1, reach.episode_info(2).length - 1]  # its steps
    back = robomimic.import_dataset(path, tmp_path / "back.zarr", progress=False)
    assert back.provenance["import"]["splits"]["picked"] == [0, 2]
