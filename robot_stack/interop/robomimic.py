"""robomimic's HDF5 layout, both ways: one file with data/demo_<i>/{obs/<key>, actions, rewards, dones, states,
next_obs/<key>} (attr num_samples), data attrs total and env_args (JSON), and mask/<filter key> (demo names).

Frames and steps: robomimic's demo step t holds s_t (obs), a_t (actions), rewards[t] (the reward received after a_t,
i.e. for reaching s_{t+1}), dones[t] and s_{t+1} (next_obs). robot_stack's frame f holds the state observed at f,
the action taken from it and the reward of that state, and transition t (frame t -> t + 1) earns frame t + 1's
reward (robot_stack.data.sampling). So a demo of T steps is an episode of T + 1 frames, as Minari's import does:
frame t holds obs[t] and actions[t]; frame T holds next_obs[T - 1] (s_T) and repeats a_{T - 1}, which `stale.action`
marks (no action was taken from s_T); frame f's `reward` is rewards[f - 1] and its `done` flag dones[f - 1] (frame
0: 0 and False). robot_stack's transition t is then exactly robomimic's step t, (s_t, a_t, rewards[t], s_{t+1}),
and the demo's last step (often the sparse success reward) is a transition too. An obs key with no next_obs (files
written with robomimic's --exclude-next-obs) and `states` have no row for s_T: frame T repeats their last row and
`stale.<feature>` marks it.

Import (docs/interop.md has the full mapping): obs keys of uint8 [T, H, W, 3] -> image.<camera> (agentview_image ->
image.agentview), other obs keys -> state features of the same name and dtype, actions -> action, rewards -> reward,
dones -> done (flag); demos in index order (demo_0, demo_1, ..., demo_10); filter keys -> provenance splits.
robomimic stores no time: timestamps are spaced at the control rate (env_args env_kwargs.control_freq, else 20 Hz,
or record_hz when given). `states` (the MuJoCo sim state) is left out unless keep_states: it is privileged (no robot
publishes it) and the trainers take every state feature as policy input.

Export is the inverse: an episode of F frames is a demo of F - 1 steps (obs = frames 0..F-2, next_obs = frames
1..F-1, actions = their actions, rewards[t] = frame t + 1's reward, dones[t] = 1 where transition t is terminal by
robot_stack's rules: the last step of a successful or terminated episode; a robomimic import's own `done` flag goes
back as it came). robomimic's readers load what they need (obs, next_obs, actions, rewards, dones, num_samples,
env_args); a JSON record (data attr "robot_stack") and a per-demo group robot_stack/ hold what the layout has no
place for (frame 0's reward, the last frame's action, timestamps, flags, further features), so that importing the
export gives back every value, the features' specs, episode boundaries, tasks and success exactly.
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
from robot_stack.data.sampling import terminated_episodes
from robot_stack.errors import DatasetError
from robot_stack.interop import require
from robot_stack.interop.common import IMPORT_KEY, Source, SourceEpisode, fresh_output, write_import

FORMAT = "robomimic"
RECORD_ATTR = "robot_stack"
"""data/ attribute (JSON) an export writes: features, where each is stored, robot, rate, tasks, provenance."""
EXTRA_GROUP = "robot_stack"
"""Per-demo group of an export holding what robomimic has no key for: frames/<name> (every frame of a feature),
first_frame/<name> (frame 0 of a reward or done feature), last_frame/<name> (the last frame of an action or states)."""
RECORD_VERSION = 2
"""1: rows were frames (the reward one step late); 2: steps between frames (the module docstring)."""
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
STALE_PREFIX = "stale."
DONE = "done"
"""The flag feature robomimic's dones become (on the frame the step led to), and the one an export writes back."""
_DEMO = re.compile(r"^demo_(\d+)$")

# How a feature's T + 1 frames come from a demo's T step rows at its key (see the module docstring). The first four
# are also what an export writes and records per feature (record "rows").
OBS_THEN_NEXT = "obs, then next_obs' last row"
STEPS_THEN_LAST = "steps, then robot_stack/last_frame"
FIRST_THEN_STEPS = "robot_stack/first_frame, then steps"
ALL_FRAMES = "robot_stack/frames"
STEPS_REPEAT_LAST = "steps, the last repeated"
ZERO_THEN_STEPS = "zero, then steps"
STALE_LAST = "stale at the last frame"


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
    provenance: dict[str, Any] = {
        "env_args": env_args, "demos": demos, "splits": splits, "timestamps": timestamps, "success": success_rule}
    if record:
        provenance["exported_from"] = {key: record.get(key) for key in ("source", "fingerprint", "provenance")}
    else:
        provenance.update({
            "frames": "a demo of T steps is T + 1 frames: frame t holds obs[t] and actions[t], frame T next_obs[T-1] "
                      "and a_{T-1} again (stale.action); frame f's reward and done are rewards[f-1] and dones[f-1] "
                      "(frame 0: 0, False), so transition t is robomimic's step t",
            "repeated_at_last_frame": sorted(key for _, key, rows in layout.values() if rows == STEPS_REPEAT_LAST),
            "not_imported": ["states (the sim state: privileged; import it with keep_states=True)"]
            if _has(data, demos, "states") and SIM_STATE not in layout else []})

    def episode(index: int) -> SourceEpisode:
        group = data[demos[index]]
        try:
            frames = {name: _frames(group, name, key, rows).reshape(-1, *spec.shape).astype(spec.dtype, copy=False)
                      for name, (spec, key, rows) in layout.items()}
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
    return Source(FORMAT, path, version, robot, hz, [spec for spec, _, _ in layout.values()], tasks, len(demos),
                  episode, provenance, file.close)


def _frames(group: Any, name: str, key: str, rows: str) -> np.ndarray:
    """Feature `name`'s T + 1 frames from the demo's T step rows at `key`, by the rule `rows`."""
    if rows == STALE_LAST:
        count = group[key].shape[0]
        return np.arange(count + 1) == count
    steps = np.asarray(group[key][()])
    if rows == OBS_THEN_NEXT:
        return np.concatenate([steps, group[f"next_{key}"][-1:]])
    if rows == STEPS_THEN_LAST:
        return np.concatenate([steps, group[f"{EXTRA_GROUP}/last_frame/{name}"][()]])
    if rows == FIRST_THEN_STEPS:
        return np.concatenate([group[f"{EXTRA_GROUP}/first_frame/{name}"][()], steps])
    if rows == STEPS_REPEAT_LAST:
        return np.concatenate([steps, steps[-1:]])
    if rows == ZERO_THEN_STEPS:
        return np.concatenate([np.zeros_like(steps[:1]), steps])
    return steps  # ALL_FRAMES: the key holds every frame


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


def _robomimic_layout(path: Path, data: Any, demos: list[str], keep_states: bool
                      ) -> dict[str, tuple[FeatureSpec, str, str]]:
    """{feature name: (spec, key in the demo group, how its frames come from the rows)} from the first demo's arrays
    (robomimic's conventions; the module docstring)."""
    if not demos:
        return {}
    first = data[demos[0]]
    layout: dict[str, tuple[FeatureSpec, str, str]] = {}

    def add(name: str, key: str, kind: str, rows: str, dtype: Any = None, shape: tuple[int, ...] | None = None) -> None:
        if name in layout:
            raise DatasetError(f"{path}: {demos[0]}/{key} and {demos[0]}/{layout[name][1]} both map to feature "
                               f"{name!r}: rename one obs key")
        array = first[key]
        spec = FeatureSpec(name, str(dtype or array.dtype), array.shape[1:] if shape is None else shape, kind)
        layout[name] = (spec, key, rows)
        if rows == STEPS_REPEAT_LAST:  # frame T's value was not observed: flagged, as the recorder flags old data
            add(f"{STALE_PREFIX}{name}", key, "flag", STALE_LAST, dtype="bool", shape=())

    if "actions" not in first:
        raise DatasetError(f"{path}: data/{demos[0]} has no actions: not a robomimic demo")
    add("action", "actions", "action", STEPS_REPEAT_LAST)
    obs = first.get("obs")
    for key in sorted(obs.keys()) if obs is not None else []:
        array = obs[key]
        rows = OBS_THEN_NEXT if f"next_obs/{key}" in first else STEPS_REPEAT_LAST
        if array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] == 3:
            add(f"image.{key.removesuffix(IMAGE_SUFFIX)}", f"obs/{key}", "image", rows)
        else:
            add(key, f"obs/{key}", "state", rows)
    if "rewards" in first:
        add("reward", "rewards", "reward", ZERO_THEN_STEPS, shape=())
    if "dones" in first:
        add(DONE, "dones", "flag", ZERO_THEN_STEPS, dtype="bool", shape=())
    if keep_states and "states" in first:
        add(SIM_STATE, "states", "state", STEPS_REPEAT_LAST)
    return layout


def _record_layout(path: Path, record: dict[str, Any]) -> dict[str, tuple[FeatureSpec, str, str]]:
    """The layout a robot_stack export recorded: every feature's spec, key and rows, for an exact re-import."""
    if record.get("version") != RECORD_VERSION:
        raise DatasetError(f"{path} was exported by another robot_stack version (record version "
                           f"{record.get('version')}, this one reads {RECORD_VERSION}): export the dataset again")
    try:
        return {name: (FeatureSpec.from_json(name, record["features"][name]), key, record["rows"][name])
                for name, key in record["keys"].items()}
    except (KeyError, TypeError, AttributeError) as error:
        raise DatasetError(f"{path}: the data attribute {RECORD_ATTR} is malformed ({error!r}): the file is "
                           "damaged") from None


def _check_demo(path: Path, group: Any, layout: dict[str, tuple[FeatureSpec, str, str]]) -> None:
    """Every array the layout reads exists with the first demo's frame shape; all give the demo's T steps
    (= num_samples): a step array and next_obs T rows, robot_stack/frames T + 1, a first_frame / last_frame 1."""
    name = group.name.lstrip("/")
    lengths = {}
    for feature, (spec, key, rows) in layout.items():
        if rows == STALE_LAST:  # its feature's key, checked there
            continue
        lengths[key] = _rows(path, group, key, spec) - (rows == ALL_FRAMES)
        if rows == OBS_THEN_NEXT:
            lengths[f"next_{key}"] = _rows(path, group, f"next_{key}", spec)
        edge = {FIRST_THEN_STEPS: "first_frame", STEPS_THEN_LAST: "last_frame"}.get(rows)
        if edge and _rows(path, group, f"{EXTRA_GROUP}/{edge}/{feature}", spec) != 1:
            raise DatasetError(f"{path}: {name}/{EXTRA_GROUP}/{edge}/{feature} is not one frame: the file is damaged")
    stated = group.attrs.get("num_samples")
    if stated is not None:
        lengths["num_samples"] = int(stated)
    if len(set(lengths.values())) > 1:
        raise DatasetError(f"{path}: {name}'s arrays disagree in length {lengths}: the file is inconsistent")
    if lengths and min(lengths.values()) < 1:
        raise DatasetError(f"{path}: {name} has no steps")


def _rows(path: Path, group: Any, key: str, spec: FeatureSpec) -> int:
    """The number of rows of the per-step array group[key], checked to hold frames of spec's size."""
    name = group.name.lstrip("/")
    if key not in group:
        raise DatasetError(f"{path}: {name} lacks {key}, which the first demo has: the demos disagree")
    array = group[key]
    if not hasattr(array, "shape") or array.ndim < 1:
        raise DatasetError(f"{path}: {name}/{key} is not a per-step array")
    if int(np.prod(array.shape[1:], dtype=np.int64)) != int(np.prod(spec.shape, dtype=np.int64)):
        raise DatasetError(f"{path}: {name}/{key} has frames of shape {array.shape[1:]}, the first demo "
                           f"{spec.shape}: the demos disagree")
    return int(array.shape[0])


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
    """Write `dataset`'s committed episodes as one robomimic HDF5 file at `out` (must not exist): an episode of F
    frames is a demo of F - 1 steps (the module docstring).

    mask/<key>: the filter keys of a robomimic import (its provenance splits); with valid_fraction, instead a
    "train"/"valid" pair choosing round(valid_fraction * n) episodes at random (seed) as `robot-stack data split`.
    """
    h5py = require("h5py", "exporting robomimic HDF5")
    if dataset.n_episodes == 0:
        raise DatasetError(f"{dataset.path} has no committed episode: nothing to export")
    single = np.flatnonzero(dataset.episode_ends - dataset.episode_starts < 2)
    if len(single):
        raise DatasetError(f"{dataset.path}: episode(s) {single[:5].tolist()} have one frame, so no step for a "
                           "robomimic demo: drop them first (e.g. `robot-stack data merge` with the others)")
    layout = _export_layout(dataset)
    masks = _export_masks(dataset, valid_fraction, seed)
    names = _demo_names(dataset)
    terminal = (dataset.success == 1) | terminated_episodes(dataset)
    with fresh_output(out) as path, h5py.File(path, "w") as file:
        data = file.create_group("data")
        total = 0
        for index in tqdm(range(dataset.n_episodes), desc=f"export robomimic -> {path.name}", unit="episode",
                          disable=not progress):
            total += _write_demo(data.create_group(names[index]), dataset, index, layout, bool(terminal[index]))
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(_env_args(dataset))
        data.attrs[RECORD_ATTR] = json.dumps(_export_record(dataset, layout))
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


def _export_layout(dataset: Dataset) -> dict[str, tuple[str, str]]:
    """{feature name: (key in each demo group, rows: how its frames are split into steps)}; the module docstring."""
    features = dataset.features
    actions = [name for name, spec in features.items() if spec.kind == "action"]
    if not actions:
        raise DatasetError(f"{dataset.path} has no action feature: a robomimic demo needs actions")
    action = "action" if "action" in actions else actions[0]
    reward = next((name for name, spec in features.items() if spec.kind == "reward"), None)
    layout = {}
    for name, spec in features.items():
        if name == action:
            layout[name] = ("actions", STEPS_THEN_LAST)
        elif name == reward:
            layout[name] = ("rewards", FIRST_THEN_STEPS)
        elif name == DONE and spec.kind == "flag" and spec.shape in ((), (1,)):
            layout[name] = ("dones", FIRST_THEN_STEPS)
        elif name == SIM_STATE and spec.kind == "state":
            layout[name] = ("states", STEPS_THEN_LAST)
        elif spec.is_image:
            layout[name] = (f"obs/{name[len('image.'):]}{IMAGE_SUFFIX}", OBS_THEN_NEXT)
        elif spec.kind == "state":
            layout[name] = (f"obs/{name}", OBS_THEN_NEXT)
        else:  # time, flags, further actions or rewards: robomimic has no key for them
            layout[name] = (f"{EXTRA_GROUP}/frames/{name}", ALL_FRAMES)
    keys = [key for key, _ in layout.values()]
    clashes = sorted({key for key in keys if keys.count(key) > 1})
    if clashes:
        raise DatasetError(f"{dataset.path}: features {sorted(n for n, (k, _) in layout.items() if k in clashes)} "
                           f"would all be stored as {clashes}: rename one (e.g. with `robot-stack data merge`)")
    return layout


def _write_demo(group: Any, dataset: Dataset, index: int, layout: dict[str, tuple[str, str]], terminal: bool) -> int:
    """Episode `index` as one demo of T = F - 1 steps (the module docstring); dones from the `done` feature, else 1
    at the last step of a terminal episode; zero rewards if the dataset has none. Returns T."""
    info = dataset.episode_info(index)
    steps = info.length - 1
    for name, (key, rows) in layout.items():
        values = dataset.frames(name, info.start, info.stop)
        if key == "actions":
            values = values.reshape(info.length, -1)  # robomimic reads the action dimension as actions.shape[1]
        elif key in ("rewards", "dones"):
            values = values.reshape(info.length).astype(np.int64 if key == "dones" else values.dtype)
        # gzip is lossless and in every HDF5 build; one image per chunk so a sampled window reads only its frames
        images = dataset.features[name].is_image
        options = {"compression": "gzip", "compression_opts": 4, "chunks": (1, *values.shape[1:])} if images else {}
        if rows == OBS_THEN_NEXT:
            group.create_dataset(key, data=values[:-1], **options)
            group.create_dataset(f"next_{key}", data=values[1:], **options)
        elif rows == STEPS_THEN_LAST:
            group.create_dataset(key, data=values[:-1])
            group.create_dataset(f"{EXTRA_GROUP}/last_frame/{name}", data=values[-1:])
        elif rows == FIRST_THEN_STEPS:
            group.create_dataset(key, data=values[1:])
            group.create_dataset(f"{EXTRA_GROUP}/first_frame/{name}", data=values[:1])
        else:
            group.create_dataset(key, data=values)
    keys = {key for key, _ in layout.values()}
    if "rewards" not in keys:
        group.create_dataset("rewards", data=np.zeros(steps, np.float64))
    if "dones" not in keys:
        dones = np.zeros(steps, np.int64)
        dones[-1] = int(terminal)  # robomimic's done: s' ends the task (robot_stack's terminal transition)
        group.create_dataset("dones", data=dones)
    group.attrs["num_samples"] = steps
    group.attrs["success"] = -1 if info.success is None else int(info.success)
    if info.task_text is not None:
        group.attrs["task"] = info.task_text
    if info.notes:
        group.attrs["notes"] = info.notes
    return steps


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


def _export_record(dataset: Dataset, layout: dict[str, tuple[str, str]]) -> dict[str, Any]:
    return {"version": RECORD_VERSION, "exporter": "robot-stack data export robomimic",
            "source": str(Path(dataset.path).resolve()),
            "fingerprint": dataset.fingerprint(), "record_hz": dataset.record_hz, "robot": dataset.robot,
            "tasks": dataset.tasks, "features": {name: spec.to_json() for name, spec in dataset.features.items()},
            "keys": {name: key for name, (key, _) in layout.items()},
            "rows": {name: rows for name, (_, rows) in layout.items()}, "provenance": dataset.provenance}


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
