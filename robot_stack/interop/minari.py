"""Minari (D4RL's maintained successor) -> a robot_stack dataset, read with Minari's own loader, one episode at a time.

A Minari episode holds T + 1 observations s_0..s_T and T steps (a_t, r_t, terminated_t, truncated_t, info_t+1). It
becomes T + 1 frames under robot_stack's conventions (robot_stack.data.sampling): frame t holds s_t and the action
a_t taken from it; frame f's reward is the reward of the state observed at f, so r_t (earned by the step t -> t + 1)
goes to frame t + 1 and frame 0 has 0; the flags `terminated` / `truncated` of the step that led to frame f are at f.
The last frame holds s_T with no action taken from it: its action repeats a_{T-1} and `stale.action` marks it (the
recorder's convention for a value that was not received). Transition t of the sampler is then exactly Minari's step
t: (s_t, a_t, r_t, s_t+1).

Success: Minari has no success field; where the episodes' infos carry "success" (Minari's maze and robotics
datasets), it becomes the flag feature `success` (info of s_t at frame t) and the episode's success is its value at
the last frame; otherwise success is unknown. A termination is not a success (a hopper that falls terminates), so
it is never read as one; see docs/interop.md for what that means for the sampler's terminal flag.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.data import Dataset, FeatureSpec
from robot_stack.errors import DatasetError
from robot_stack.interop import require
from robot_stack.interop.common import Source, SourceEpisode, write_import

DEFAULT_RECORD_HZ = 20.0
"""Frames per second when neither --record-hz nor the env's render_fps gives one."""
OBSERVATION = "observation"
STALE_ACTION = "stale.action"
PROVENANCE_FIELDS = ("dataset_id", "minari_version", "data_format", "total_episodes", "total_steps", "author",
                     "author_email", "algorithm_name", "code_permalink", "description", "ref_min_score",
                     "ref_max_score", "env_spec", "eval_env_spec", "requirements")
"""The dataset metadata fields (as Minari states them) kept in the provenance."""


def import_dataset(src: str | os.PathLike, out: str | os.PathLike, *, progress: bool = True,
                   record_hz: float | None = None, task: str | None = None) -> Dataset:
    """Import the Minari dataset `src` (an id in the local Minari store, or a dataset folder) into the new robot_stack
    dataset `out` (resumable; see robot_stack.interop.common). record_hz [Hz]: the frame rate (default: the env's
    render_fps, else 20); task: the task text of every episode (default: unknown)."""
    return write_import(open_source(src, record_hz=record_hz, task=task), out, progress)


def open_source(src: str | os.PathLike, *, record_hz: float | None = None, task: str | None = None) -> Source:
    """The Minari dataset `src` opened and checked, as an import Source."""
    minari = require("minari", "importing a Minari dataset")
    data_path = _data_path(src, minari)
    try:
        dataset = minari.MinariDataset(data_path)
    except Exception as error:  # noqa: BLE001  (Minari's loader raises ValueError, OSError, KeyError... on damage)
        raise DatasetError(f"{data_path.parent}: Minari cannot read this dataset ({type(error).__name__}: {error})"
                           "; check that the download finished, or fetch it again") from None
    folder = data_path.parent
    observations = _observation_features(dataset.observation_space, folder)
    action = _action_feature(dataset.action_space, folder)
    if dataset.total_episodes < 1:
        raise DatasetError(f"{folder} holds no episodes: nothing to import")
    has_success = _success_info(_read_episode(dataset, 0, folder)) is not None
    features = [spec for spec, _ in observations] + [
        action,
        FeatureSpec(STALE_ACTION, "bool", (), "flag"),
        FeatureSpec("reward", "float64", (), "reward"),
        FeatureSpec("terminated", "bool", (), "flag"),
        FeatureSpec("truncated", "bool", (), "flag"),
    ] + ([FeatureSpec("success", "bool", (), "flag")] if has_success else [])
    env_spec = dataset.env_spec
    hz, hz_from = _record_hz(record_hz, env_spec)
    metadata = dataset.storage.metadata

    def episode(index: int) -> SourceEpisode:
        return _episode(_read_episode(dataset, index, folder), index, observations, has_success, folder, task)

    return Source(
        format="minari", path=folder, version=str(dataset.minari_version), robot=_robot(dataset, env_spec),
        record_hz=hz, features=features, tasks=[task] if task else [], n_episodes=int(dataset.total_episodes),
        episode=episode,
        provenance={**{key: _json_value(metadata[key]) for key in PROVENANCE_FIELDS if metadata.get(key) is not None},
                    "reader": f"minari {minari.__version__}", "record_hz_from": hz_from,
                    "success_from": "the episodes' info['success'] at the last step" if has_success else
                    "unknown (the episodes' infos have no 'success'; terminations are not read as success)",
                    "frames": "frame t: s_t and a_t; reward r_{t-1} (0 at frame 0); the last frame: s_T, its action "
                              "repeats a_{T-1} (stale.action)"},
    )


def _data_path(src: str | os.PathLike, minari: Any) -> Path:
    """The `data` folder (metadata.json and the episodes) of a dataset folder or of an id in the local store."""
    path = Path(src).expanduser()
    if path.exists():
        for data in (path / "data", path):
            if (data / "metadata.json").is_file():
                return data
        raise DatasetError(f"{src} is not a Minari dataset (no data/metadata.json in it): give a dataset id of the "
                           "local Minari store or the dataset's folder")
    root = Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets")
    data = root / str(src) / "data"
    if not (data / "metadata.json").is_file():
        raise DatasetError(f"{src!r} is not a path, nor a dataset in the local Minari store {root}; nothing is "
                           f"downloaded here: fetch it first (`minari download {src}`) or set MINARI_DATASETS_PATH")
    try:  # Minari's own lookup, never downloading
        return Path(minari.load_dataset(str(src), download=False).storage.data_path)
    except Exception as error:  # noqa: BLE001  (as in open_source)
        raise DatasetError(f"{data.parent}: Minari cannot read this dataset ({type(error).__name__}: {error}); "
                           "check that the download finished, or fetch it again") from None


def _observation_features(space: Any, folder: Path) -> list[tuple[FeatureSpec, tuple[str, ...]]]:
    """(feature, key path into the episode's observations) per Box of the observation space: a Box is `observation`,
    a Dict's Box at key path k1/k2 is `observation.k1.k2`, an image Box (uint8 [H, W, 3]) is `image.k1.k2`."""
    import gymnasium

    features = []

    def walk(sub: Any, keys: tuple[str, ...]) -> None:
        if isinstance(sub, gymnasium.spaces.Dict):
            for key, child in sub.spaces.items():
                walk(child, (*keys, str(key)))
            return
        where = ".".join(keys) or "the observation"
        if not isinstance(sub, gymnasium.spaces.Box) or np.dtype(sub.dtype).kind not in "biuf":
            raise DatasetError(f"{folder}: observation {where} is a {sub}; robot_stack imports Box observations "
                               "(or Dicts of them) only")
        if np.dtype(sub.dtype) == np.uint8 and len(sub.shape) == 3 and sub.shape[2] == 3:
            features.append((FeatureSpec(f"image.{'.'.join(keys) or OBSERVATION}", "uint8", sub.shape, "image"), keys))
        else:
            name = ".".join((OBSERVATION, *keys))
            features.append((FeatureSpec(name, np.dtype(sub.dtype).name, sub.shape, "state"), keys))

    walk(space, ())
    return features


def _action_feature(space: Any, folder: Path) -> FeatureSpec:
    import gymnasium

    if isinstance(space, gymnasium.spaces.Box) and np.dtype(space.dtype).kind in "iuf":
        return FeatureSpec("action", np.dtype(space.dtype).name, space.shape, "action")
    if isinstance(space, gymnasium.spaces.Discrete):
        return FeatureSpec("action", "int64", (), "action")
    raise DatasetError(f"{folder}: the action space is {space}; robot_stack imports Box and Discrete actions only")


def _robot(dataset: Any, env_spec: Any) -> dict[str, Any]:
    """The robot attribute: the env id (else the dataset id) and, for a bounded Box action, its command bounds."""
    import gymnasium

    robot: dict[str, Any] = {"name": env_spec.id if env_spec is not None else dataset.id}
    space = dataset.action_space
    if isinstance(space, gymnasium.spaces.Box) and space.is_bounded():
        low, high = np.asarray(space.low, np.float64).reshape(-1), np.asarray(space.high, np.float64).reshape(-1)
        robot["command_spec"] = {
            "meaning": f"the gymnasium action of {robot['name']}", "names": [f"a{i}" for i in range(len(low))],
            "low": low.tolist(), "high": high.tolist(),
            # a gymnasium env has no command that keeps it still: the zero action, within the bounds
            "hold": np.clip(0.0, low, high).tolist(),
        }
    return robot


def _record_hz(record_hz: float | None, env_spec: Any) -> tuple[float, str]:
    """The frame rate [Hz] and where it came from: the option, the env class's metadata render_fps, or the default."""
    if record_hz is not None:
        return float(record_hz), "the --record-hz option"
    if env_spec is None:
        return DEFAULT_RECORD_HZ, f"default {DEFAULT_RECORD_HZ:g} Hz (the dataset names no env)"
    try:  # the env class's metadata, without making the env (its simulator may not be installed here)
        from gymnasium.envs.registration import load_env_creator

        entry = env_spec.entry_point
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
        fps = (getattr(creator, "metadata", None) or {}).get("render_fps")
    except Exception as error:  # noqa: BLE001  (an env whose package is not installed here)
        return DEFAULT_RECORD_HZ, f"default {DEFAULT_RECORD_HZ:g} Hz (cannot load {env_spec.entry_point}: {error})"
    if fps and float(fps) > 0:
        return float(fps), f"the env's render_fps ({env_spec.entry_point})"
    return DEFAULT_RECORD_HZ, f"default {DEFAULT_RECORD_HZ:g} Hz ({env_spec.entry_point} states no render_fps)"


def _read_episode(dataset: Any, index: int, folder: Path) -> Any:
    """Minari's EpisodeData of episode `index`; a file it cannot read is a DatasetError."""
    try:
        return dataset[index]
    except Exception as error:  # noqa: BLE001  (h5py / pyarrow raise their own errors on a damaged file)
        raise DatasetError(f"{folder}: Minari cannot read episode {index} ({type(error).__name__}: {error}); the "
                           "dataset's files are damaged or incomplete: fetch it again") from None


def _success_info(episode: Any) -> np.ndarray | None:
    """The episode's per-observation info['success'] as bool [T + 1], or None where the infos have none."""
    values = (episode.infos or {}).get("success")
    if values is None:
        return None
    values = np.asarray(values)
    frames = len(episode.rewards) + 1
    return values.astype(bool).reshape(-1) if values.shape in ((frames,), (frames, 1)) else None


def _episode(episode: Any, index: int, observations: list[tuple[FeatureSpec, tuple[str, ...]]], has_success: bool,
             folder: Path, task: str | None) -> SourceEpisode:
    """Minari's episode `index` as T + 1 frames (the module docstring's conventions)."""
    steps = len(episode.rewards)
    if steps < 1:
        raise DatasetError(f"{folder}: episode {index} has no steps")
    frames: dict[str, np.ndarray] = {}
    for spec, keys in observations:
        value = episode.observations
        for key in keys:
            value = value[key]
        frames[spec.name] = np.asarray(value)
    action = np.asarray(episode.actions)
    frames["action"] = np.concatenate([action, action[-1:]])
    frames[STALE_ACTION] = np.arange(steps + 1) == steps
    frames["reward"] = np.concatenate([[0.0], np.asarray(episode.rewards, np.float64)])
    frames["terminated"] = np.concatenate([[False], np.asarray(episode.terminations, bool)])
    frames["truncated"] = np.concatenate([[False], np.asarray(episode.truncations, bool)])
    success = None
    if has_success:
        flags = _success_info(episode)
        if flags is None:
            raise DatasetError(f"{folder}: episode {index}'s infos lack the 'success' that episode 0's have")
        frames["success"] = flags
        success = bool(flags[-1])
    return SourceEpisode(frames=frames, task=task, success=success, notes=f"minari episode {episode.id}")


def _json_value(value: Any) -> Any:
    """A Minari metadata value as JSON (authors are sets; env specs are JSON text: kept as objects)."""
    if isinstance(value, (set, frozenset)):
        return sorted(str(item) for item in value)
    if isinstance(value, str) and value.startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, (np.generic,)):
        return value.item()
    return value
