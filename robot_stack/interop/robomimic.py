"""robomimic's HDF5 layout, both ways: one file with data/demo_<i>/{obs/<key>, actions, rewards, dones, states,
next_obs} (attr num_samples), data attrs total and env_args (JSON), and mask/<filter key> (demo names).

Import (docs/interop.md has the full mapping): obs keys of uint8 [T, H, W, 3] -> image.<camera> (agentview_image ->
image.agentview), other obs keys -> state features of the same name and dtype, actions -> action, rewards -> reward,
dones -> done (flag); demos in index order (demo_0, demo_1, ..., demo_10); filter keys -> provenance splits. Rows
stay rows: frame t holds rewards[t] and dones[t], which robomimic gives for the step taken from frame t (its reward
r(s') rewards the state after it), so robot_stack's samplers (transition t earns frame t + 1's reward) credit each
reward one step later than robomimic does (docs/interop.md).
robomimic stores no time: timestamps are spaced at the control rate (env_args env_kwargs.control_freq, else 20 Hz,
or record_hz when given). `states` (the MuJoCo sim state) is left out unless keep_states: it is privileged (no robot
publishes it) and the trainers take every state feature as policy input. next_obs is obs shifted by one frame and
is not kept (its last frame, the observation after the final action, is dropped).

Export writes what robomimic's readers load (obs, next_obs, actions, rewards, dones, num_samples, env_args) and a
JSON record (data attr "robot_stack") plus a per-demo group robot_stack/ holding what robomimic has no place for
(timestamps, flags, further reward or action features), so that importing the export gives back every value, the
features' specs, episode boundaries, tasks and success exactly.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from robot_stack.data import Dataset, FeatureSpec
from robot_stack.errors import DatasetError
from robot_stack.interop import require
from robot_stack.interop.common import IMPORT_KEY, Source, SourceEpisode, fresh_output, write_import

FORMAT = "robomimic"
RECORD_ATTR = "robot_stack"
"""data/ attribute (JSON) an export writes: features, where each is stored, robot, rate, tasks, provenance."""
EXTRA_GROUP = "robot_stack"
"""Per-demo group of an export holding the features robomimic has no key for."""
RECORD_VERSION = 1
DEFAULT_HZ = 20.0
"""robosuite's default control rate, used when the file states none."""
ROBOSUITE_TYPE, GYM_TYPE = 1, 2
ENV_TYPES = {ROBOSUITE_TYPE: "robosuite", GYM_TYPE: "gym", 3: "ig_momart"}
"""robomimic's EnvType values (robomimic/envs/env_base.py)."""
SUCCESS_KEPT = "kept from the robot_stack export (per-demo attribute success)"
SUCCESS_SPARSE = "from the last reward: robosuite with reward_shaping false rewards only success states (> 0)"
SUCCESS_UNKNOWN = "unknown: robomimic stores no success and the rewards are not stated to be a sparse success signal"
IMAGE_SUFFIX = "_image"
SIM_STATE = "sim_state"
"""The feature robomimic's `states` becomes with keep_states, and the one an export writes back as `states`."""
_DEMO = re.compile(r"^demo_(\d+)$")


# ---- import


def import_dataset(src: str | os.PathLike, out: str | os.PathLike, *, progress: bool = True,
                   record_hz: float | None = None, task: str | None = None, keep_states: bool = False) -> Dataset:
    """Import the robomimic HDF5 file `src` into the new robot_stack dataset `out` (resumable; see
    robot_stack.interop.common). record_hz: frames a second (default: env_args' control_freq, else 20); task: the
    task text of demos whose file gives none; keep_states: also import `states` as the state feature sim_state."""
    h5py = require("h5py", "importing robomimic HDF5")
    return write_import(_open_source(Path(src), h5py, record_hz, task, keep_states), out, progress)


def _open_source(path: Path, h5py: Any, record_hz: float | None, task: str | None, keep_states: bool) -> Source:
    if not path.exists():
        raise DatasetError(f"{path} does not exist: give the path of a robomimic .hdf5 file")
    if path.is_dir():
        raise DatasetError(f"{path} is a folder: a robomimic dataset is one .hdf5 file")
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{path} is not an HDF5 file: robomimic datasets are HDF5 (.hdf5); for other formats "
                           "see `robot-stack data import --help`")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise DatasetError(f"{path} cannot be read as HDF5 ({error}): it may be truncated; copy it again") from None
    try:
        source = _describe(path, file, record_hz, task, keep_states)
    except DatasetError:
        file.close()
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as error:
        file.close()
        raise DatasetError(f"{path}: unreadable robomimic layout ({error}): the file may be damaged") from None
    return source


def _describe(path: Path, file: Any, record_hz: float | None, task: str | None, keep_states: bool) -> Source:
    """Check the file's layout (every demo's keys and lengths, before anything is written) and describe it."""
    data = file.get("data")
    if data is None or not hasattr(data, "keys"):
        raise DatasetError(f"{path} has no data/ group: not a robomimic dataset (data/demo_<i>/...)")
    numbered = {}
    for key in data:
        match = _DEMO.match(key)
        if match is None:
            raise DatasetError(f"{path}: data/{key} is not a demo_<i> group: not a robomimic dataset")
        numbered[int(match.group(1))] = key
    demos = [numbered[i] for i in sorted(numbered)]
    env_args = _json_attr(path, data, "env_args")
    record = _json_attr(path, data, RECORD_ATTR) or None
    layout = _record_layout(path, record) if record else _robomimic_layout(path, data, demos, keep_states)
    for demo in demos:
        _check_demo(path, data[demo], layout)
    hz, timestamps = _rate(env_args, record, record_hz)
    success_rule = _success_rule(env_args, record)
    texts = [_demo_task(data[demo], task) for demo in demos]
    splits = _splits(path, file, demos)
    provenance = {
        "env_args": env_args, "demos": demos, "splits": splits, "timestamps": timestamps, "success": success_rule,
        "not_imported": [item for item, left in (
            ("next_obs (obs one frame on; the observation after each demo's last action is dropped)", "next_obs"),
            ("states (the sim state: privileged; import it with keep_states=True)", "states"))
            if not record and _has(data, demos, left) and not (left == "states" and SIM_STATE in layout)],
    }
    if record:
        provenance["exported_from"] = {key: record.get(key) for key in ("source", "fingerprint", "provenance")}

    def episode(index: int) -> SourceEpisode:
        group = data[demos[index]]
        try:
            frames = {name: np.asarray(group[key][()]).reshape(-1, *spec.shape).astype(spec.dtype, copy=False)
                      for name, (spec, key) in layout.items()}
            success = _demo_success(group, success_rule)
        except OSError as error:
            raise DatasetError(f"{path}: {demos[index]} cannot be read ({error}): the file is damaged") from None
        notes = group.attrs.get("notes", f"robomimic {demos[index]}")
        return SourceEpisode(frames, texts[index], success, notes.decode() if isinstance(notes, bytes) else str(notes))

    if record:
        robot, tasks, version = record["robot"], list(record["tasks"]), f"robot_stack export {record['version']}"
    else:
        robot, tasks, version = _robot(env_args), [], f"env_version {env_args.get('env_version', 'unstated')}"
    tasks += [text for text in dict.fromkeys(texts) if text is not None and text not in tasks]
    return Source(FORMAT, path, version, robot, hz, [spec for spec, _ in layout.values()], tasks, len(demos),
                  episode, provenance, file.close)


def _rate(env_args: dict[str, Any], record: dict[str, Any] | None, record_hz: float | None) -> tuple[float, str]:
    """Frames a second and how the timestamps come about (the provenance's "timestamps"). A robot_stack export
    keeps its own rate and timestamps; otherwise record_hz when given, else env_args' control_freq, else 20 Hz."""
    if record:
        return float(record["record_hz"]), "kept from the robot_stack export (data/demo_<i>/robot_stack/timestamp)"
    control_freq = (env_args.get("env_kwargs") or {}).get("control_freq")
    if record_hz is not None:
        hz, said = float(record_hz), "record_hz given to the import"
    elif control_freq is not None:
        hz, said = float(control_freq), "env_args env_kwargs.control_freq"
    else:
        hz, said = DEFAULT_HZ, "the default: the file states no rate"
    return hz, f"from the control rate: {hz:g} Hz ({said}), one frame per step, continuing across demos"


def _json_attr(path: Path, group: Any, name: str) -> dict[str, Any]:
    raw = group.attrs.get(name)
    if raw is None:
        return {}
    try:
        value = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: data attribute {name} is not JSON ({error}): the file is damaged") from None
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: data attribute {name} is not a JSON object")
    return value


def _robomimic_layout(path: Path, data: Any, demos: list[str], keep_states: bool) -> dict[str, tuple[FeatureSpec, str]]:
    """{feature name: (spec, key in the demo group)} from the first demo's arrays (robomimic's conventions)."""
    if not demos:
        return {}
    first = data[demos[0]]
    layout: dict[str, tuple[FeatureSpec, str]] = {}

    def add(name: str, key: str, kind: str, dtype: Any = None, shape: tuple[int, ...] | None = None) -> None:
        if name in layout:
            raise DatasetError(f"{path}: {demos[0]}/{key} and {demos[0]}/{layout[name][1]} both map to feature "
                               f"{name!r}: rename one obs key")
        array = first[key]
        layout[name] = (FeatureSpec(name, str(dtype or array.dtype), array.shape[1:] if shape is None else shape, kind), key)

    if "actions" not in first:
        raise DatasetError(f"{path}: data/{demos[0]} has no actions: not a robomimic demo")
    add("action", "actions", "action")
    obs = first.get("obs")
    for key in sorted(obs.keys()) if obs is not None else []:
        array = obs[key]
        if array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] == 3:
            camera = key.removesuffix(IMAGE_SUFFIX)
            add(f"image.{camera}", f"obs/{key}", "image")
        else:
            add(key, f"obs/{key}", "state")
    if "rewards" in first:
        add("reward", "rewards", "reward", shape=())
    if "dones" in first:
        add("done", "dones", "flag", dtype="bool", shape=())
    if keep_states and "states" in first:
        add(SIM_STATE, "states", "state")
    return layout


def _record_layout(path: Path, record: dict[str, Any]) -> dict[str, tuple[FeatureSpec, str]]:
    """The layout a robot_stack export recorded: every feature's spec and key, for an exact re-import."""
    try:
        return {name: (FeatureSpec.from_json(name, record["features"][name]), key)
                for name, key in record["keys"].items()}
    except (KeyError, TypeError, AttributeError) as error:
        raise DatasetError(f"{path}: the data attribute {RECORD_ATTR} is malformed ({error!r}): the file is "
                           "damaged") from None


def _check_demo(path: Path, group: Any, layout: dict[str, tuple[FeatureSpec, str]]) -> None:
    """Every mapped array exists with the first demo's frame shape, all of one length (= num_samples)."""
    name = group.name.lstrip("/")
    lengths = {}
    for spec, key in layout.values():
        if key not in group:
            raise DatasetError(f"{path}: {name} lacks {key}, which the first demo has: the demos disagree")
        array = group[key]
        if not hasattr(array, "shape") or array.ndim < 1:
            raise DatasetError(f"{path}: {name}/{key} is not a per-step array")
        if int(np.prod(array.shape[1:], dtype=np.int64)) != int(np.prod(spec.shape, dtype=np.int64)):
            raise DatasetError(f"{path}: {name}/{key} has frames of shape {array.shape[1:]}, the first demo "
                               f"{spec.shape}: the demos disagree")
        lengths[key] = array.shape[0]
    stated = group.attrs.get("num_samples")
    if stated is not None:
        lengths["num_samples"] = int(stated)
    if len(set(lengths.values())) > 1:
        raise DatasetError(f"{path}: {name}'s arrays disagree in length {lengths}: the file is inconsistent")
    if lengths and min(lengths.values()) < 1:
        raise DatasetError(f"{path}: {name} has no steps")


def _has(data: Any, demos: list[str], key: str) -> bool:
    return bool(demos) and key in data[demos[0]]


def _success_rule(env_args: dict[str, Any], record: dict[str, Any] | None) -> str:
    """How success is read: kept by a robot_stack export, from a sparse success reward, or unknown."""
    if record:
        return SUCCESS_KEPT
    kwargs = env_args.get("env_kwargs") or {}
    if env_args.get("type") == ROBOSUITE_TYPE and kwargs.get("reward_shaping") is False:
        return SUCCESS_SPARSE
    return SUCCESS_UNKNOWN


def _demo_success(group: Any, rule: str) -> bool | None:
    if rule == SUCCESS_KEPT:
        value = int(group.attrs.get("success", -1))
        return None if value < 0 else bool(value)
    if rule == SUCCESS_SPARSE and "rewards" in group:
        return bool(np.asarray(group["rewards"][-1]).reshape(-1)[0] > 0)
    return None


def _demo_task(group: Any, fallback: str | None) -> str | None:
    """A robot_stack export's task attribute, else the language of robocasa-style ep_meta, else `fallback`."""
    text = group.attrs.get("task")
    if text is None and "ep_meta" in group.attrs:
        try:
            text = json.loads(group.attrs["ep_meta"]).get("lang")
        except (json.JSONDecodeError, TypeError, AttributeError):
            text = None
    text = text.decode() if isinstance(text, bytes) else text
    return str(text) if text else fallback


def _splits(path: Path, file: Any, demos: list[str]) -> dict[str, list[int]]:
    """mask/<filter key> (arrays of demo names) -> {filter key: [episode indices in the import, ascending]}."""
    index = {name: i for i, name in enumerate(demos)}
    splits = {}
    for key, names in (file["mask"].items() if "mask" in file else []):
        members = [name.decode() if isinstance(name, bytes) else str(name) for name in np.asarray(names[()]).reshape(-1)]
        unknown = [name for name in members if name not in index]
        if unknown:
            raise DatasetError(f"{path}: filter key mask/{key} names {unknown[:3]}, which data/ lacks: the file is "
                               "inconsistent")
        splits[key] = sorted(index[name] for name in members)
    return splits


def _robot(env_args: dict[str, Any]) -> dict[str, Any]:
    env_type = env_args.get("type")
    robot: dict[str, Any] = {"name": str(env_args.get("env_name") or "robomimic"),
                             "robomimic_env": {"env_name": env_args.get("env_name"), "type": env_type,
                                               "type_name": ENV_TYPES.get(env_type, "unknown")}}
    robots = (env_args.get("env_kwargs") or {}).get("robots")
    if robots:
        robot["robots"] = robots
    return robot


# ---- export


def export_dataset(dataset: Dataset, out: str | os.PathLike, *, progress: bool = True,
                   valid_fraction: float | None = None, seed: int = 0) -> Path:
    """Write `dataset`'s committed episodes as one robomimic HDF5 file at `out` (must not exist).

    mask/<key>: the filter keys of a robomimic import (its provenance splits); with valid_fraction, instead a
    "train"/"valid" pair choosing round(valid_fraction * n) episodes at random (seed) as `robot-stack data split`.
    """
    h5py = require("h5py", "exporting robomimic HDF5")
    if dataset.n_episodes == 0:
        raise DatasetError(f"{dataset.path} has no committed episode: nothing to export")
    keys, reward = _export_keys(dataset)
    masks = _export_masks(dataset, valid_fraction, seed)
    obs_keys = [key for key in keys.values() if key.startswith("obs/")]
    names = _demo_names(dataset)
    with fresh_output(out) as path, h5py.File(path, "w") as file:
        data = file.create_group("data")
        total = 0
        for index in tqdm(range(dataset.n_episodes), desc=f"export robomimic -> {path.name}", unit="episode",
                          disable=not progress):
            total += _write_demo(data.create_group(names[index]), dataset, index, keys, reward, obs_keys)
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(_env_args(dataset))
        data.attrs[RECORD_ATTR] = json.dumps(_export_record(dataset, keys))
        for key, episodes in masks.items():
            file.create_dataset(f"mask/{key}", data=np.array([names[i] for i in episodes], dtype="S"))
    return path


def _demo_names(dataset: Dataset) -> list[str]:
    """demo_<i> for episode i; a robomimic import keeps its demos' own names (so its filter keys read the same)."""
    imported = dataset.provenance.get(IMPORT_KEY) or {}
    demos = imported.get("demos") or []
    if imported.get("format") == FORMAT and len(demos) == dataset.n_episodes:
        return [str(name) for name in demos]
    return [f"demo_{index}" for index in range(dataset.n_episodes)]


def _export_keys(dataset: Dataset) -> tuple[dict[str, str], str | None]:
    """{feature name: key in each demo group} and the reward feature written as `rewards` (None: zeros)."""
    features = dataset.features
    actions = [name for name, spec in features.items() if spec.kind == "action"]
    if not actions:
        raise DatasetError(f"{dataset.path} has no action feature: a robomimic demo needs actions")
    action = "action" if "action" in actions else actions[0]
    rewards = [name for name, spec in features.items() if spec.kind == "reward"]
    reward = rewards[0] if rewards else None
    keys = {}
    for name, spec in features.items():
        if name == action:
            keys[name] = "actions"
        elif name == reward:
            keys[name] = "rewards"
        elif name == SIM_STATE and spec.kind == "state":
            keys[name] = "states"
        elif spec.is_image:
            keys[name] = f"obs/{name[len('image.'):]}{IMAGE_SUFFIX}"
        elif spec.kind == "state":
            keys[name] = f"obs/{name}"
        else:  # time, flags, further actions or rewards: robomimic has no key for them
            keys[name] = f"{EXTRA_GROUP}/{name}"
    clashes = sorted({key for key in keys.values() if list(keys.values()).count(key) > 1})
    if clashes:
        raise DatasetError(f"{dataset.path}: features {sorted(n for n, k in keys.items() if k in clashes)} would all "
                           f"be stored as {clashes}: rename one (e.g. with `robot-stack data merge`)")
    return keys, reward


def _write_demo(group: Any, dataset: Dataset, index: int, keys: dict[str, str], reward: str | None,
                obs_keys: list[str]) -> int:
    """One demo: every feature at its key, next_obs, zero rewards if the dataset has none, dones. Returns T."""
    info = dataset.episode_info(index)
    count = info.length
    for name, key in keys.items():
        values = dataset.frames(name, info.start, info.stop)
        if key == "actions":
            values = values.reshape(count, -1)  # robomimic reads the action dimension as actions.shape[1]
        elif key == "rewards":
            values = values.reshape(count)
        images = dataset.features[name].is_image
        # gzip is lossless and in every HDF5 build; one image per chunk so a sampled window reads only its frames
        options = {"compression": "gzip", "compression_opts": 4, "chunks": (1, *values.shape[1:])} if images else {}
        group.create_dataset(key, data=values, **options)
        if key in obs_keys:
            # robomimic's next_obs: the next frame's observation; the last frame repeats (no observation follows it)
            group.create_dataset(f"next_{key}", data=np.concatenate([values[1:], values[-1:]]), **options)
    if reward is None:
        group.create_dataset("rewards", data=np.zeros(count, np.float64))
    dones = np.zeros(count, np.int64)
    dones[-1] = 1 if info.success else 0  # robomimic's done: the demo ends in a success state
    group.create_dataset("dones", data=dones)
    group.attrs["num_samples"] = count
    group.attrs["success"] = -1 if info.success is None else int(info.success)
    if info.task_text is not None:
        group.attrs["task"] = info.task_text
    if info.notes:
        group.attrs["notes"] = info.notes
    return count


def _env_args(dataset: Dataset) -> dict[str, Any]:
    """robomimic's env metadata for a robot_stack dataset: robomimic cannot create these envs (robot_stack's sim
    envs are gymnasium envs; real robots have none), so it describes the source and is marked as robot_stack's."""
    robot = dataset.robot
    imported = (dataset.provenance.get(IMPORT_KEY) or {})
    if imported.get("format") == FORMAT and imported.get("env_args"):
        return imported["env_args"]  # a robomimic import goes back with the env it came from
    task = robot.get("sim_task")
    if task:
        from robot_stack.sim.envs import ENV_IDS, TASK_ENV_ID

        ids = {name: env_id for env_id, name in ENV_IDS.items()}
        env_name = ids.get(task, TASK_ENV_ID)
    else:
        env_name = f"robot_stack/{robot.get('name', 'robot')}"
    return {"env_name": env_name, "type": GYM_TYPE,
            "env_kwargs": {"control_freq": dataset.record_hz, **({"task": task} if task else {})},
            "robot_stack": {"robot": robot.get("name"), "sim_task": task,
                            "note": "recorded with robot_stack, not creatable by robomimic's env utils"}}


def _export_record(dataset: Dataset, keys: dict[str, str]) -> dict[str, Any]:
    return {"version": RECORD_VERSION, "exporter": "robot-stack data export robomimic",
            "source": str(Path(dataset.path).resolve()),
            "fingerprint": dataset.fingerprint(), "record_hz": dataset.record_hz, "robot": dataset.robot,
            "tasks": dataset.tasks, "features": {name: spec.to_json() for name, spec in dataset.features.items()},
            "keys": keys, "provenance": dataset.provenance}


def _export_masks(dataset: Dataset, valid_fraction: float | None, seed: int) -> dict[str, list[int]]:
    if valid_fraction is not None:
        n_valid = round(valid_fraction * dataset.n_episodes)
        if not 0 < valid_fraction < 1 or not 0 < n_valid < dataset.n_episodes:
            raise DatasetError(f"valid_fraction {valid_fraction} of {dataset.n_episodes} episodes leaves train or "
                               "valid empty: give a fraction between 0 and 1 that leaves both non-empty")
        order = np.random.default_rng(seed).permutation(dataset.n_episodes)
        return {"train": sorted(order[n_valid:].tolist()), "valid": sorted(order[:n_valid].tolist())}
    imported = dataset.provenance.get(IMPORT_KEY) or {}
    splits = imported.get("splits") or {}
    return {key: [int(i) for i in episodes if int(i) < dataset.n_episodes] for key, episodes in splits.items()}
