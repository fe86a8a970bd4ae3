"""A picture of one episode (`robot-stack data view`): evenly spaced camera frames per camera, then the
actions, the state features, rewards/labels and per-frame flags over time. PNG via matplotlib (Agg).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from robot_stack.data.dataset import Dataset, camera_feature
from robot_stack.data.report import episode_index

FRAMES_PER_CAMERA = 8
MAX_LEGEND_DIMS = 10  # more lines than this get no legend (it would cover the plot)
def default_output(ds: Dataset, episode: int, suffix: str) -> Path:
    """`<dataset stem>_ep<N><suffix>` next to the dataset, or in the working folder if that is not writable."""
    name = f"{ds.path.name.removesuffix('.zarr')}_ep{episode}{suffix}"
    folder = ds.path.resolve().parent
    return folder / name if os.access(folder, os.W_OK) else Path.cwd() / name


def episode_sheet(ds: Dataset, episode: int, out: str | os.PathLike | None = None,
                  frames_per_camera: int = FRAMES_PER_CAMERA, dpi: int = 100, camera: str | None = None) -> Path:
    """Write the episode's contact sheet and plots as a PNG; returns its path. `camera` (a camera or
    feature name, see camera_feature) shows that camera only; default every camera."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    episode = episode_index(ds, episode)
    out = Path(out) if out else default_output(ds, episode, ".png")
    info = ds.episode_info(episode)
    data = ds.episode(episode)
    times = np.asarray(data["timestamp"]) - float(data["timestamp"][0])
    features = ds.features
    cameras = [camera_feature(ds, camera)] if camera else [name for name, spec in features.items() if spec.is_image]
    kinds = {kind: [name for name, spec in features.items() if spec.kind == kind] for kind in ("action", "state", "reward", "flag")}
    labels = {run: reward[info.start:info.stop] for run in ds.label_runs()
              if (reward := _label_rewards(ds, run)) is not None}
    panels = [(name, "action") for name in kinds["action"]] + [(name, "state") for name in kinds["state"]]
    if kinds["reward"] or labels:
        panels.append(("rewards", "reward"))
    if kinds["flag"]:
        panels.append(("flags", "flag"))

    n_cols = max(1, min(frames_per_camera, info.length))
    picks = np.unique(np.linspace(0, info.length - 1, n_cols).round().astype(int))
    aspect = (features[cameras[0]].shape[0] / features[cameras[0]].shape[1]) if cameras else 1.0
    width = 16.0
    image_height = width / n_cols * aspect + 0.4
    heights = [image_height] * len(cameras) + [2.4 if kind != "flag" else 0.4 + 0.25 * len(kinds["flag"]) for _, kind in panels]
    fig = plt.figure(figsize=(width, max(2.0, sum(heights)) + 0.8), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(max(1, len(heights)), n_cols, height_ratios=heights or [1])
    success = {True: "succeeded", False: "failed", None: "outcome unknown"}[info.success]
    fig.suptitle(f"{ds.path.name} episode {episode}: {info.length} frames, {info.duration:.2f} s, "
                 f"task {info.task_text or 'unknown'!r}, {success}", fontsize=13)

    for row, camera in enumerate(cameras):
        frames = data[camera]
        for col, frame in enumerate(picks):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(frames[int(frame)], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"frame {frame}, {times[frame]:.2f} s", fontsize=8)
            if col == 0:
                ax.set_ylabel(camera, fontsize=10)
    first_plot = None
    for offset, (name, kind) in enumerate(panels):
        ax = fig.add_subplot(grid[len(cameras) + offset, :], sharex=first_plot)
        first_plot = first_plot or ax
        if kind in ("action", "state"):
            _plot_lines(ax, times, np.asarray(data[name], dtype=np.float64), name, features[name].units, kind)
        elif kind == "reward":
            for reward in kinds["reward"]:
                ax.plot(times, np.asarray(data[reward], dtype=np.float64), label=reward, drawstyle="steps-post")
            for run, values in labels.items():
                ax.plot(times, values, label=f"labels/{run}", linestyle="--")
            ax.set_ylabel("reward")
            ax.legend(loc="upper left", fontsize=8)
        else:
            raster = np.stack([np.asarray(data[flag]).reshape(info.length, -1).any(axis=1) for flag in kinds["flag"]])
            step = times[1] - times[0] if len(times) > 1 else 1.0
            ax.imshow(raster, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0, vmax=1,
                      extent=(times[0] - step / 2, times[-1] + step / 2, len(kinds["flag"]) - 0.5, -0.5))
            ax.set_yticks(range(len(kinds["flag"])), kinds["flag"], fontsize=8)
            ax.set_ylabel("flags\n(black: true)", fontsize=9)
        if kind == "flag":
            continue
        for frame in picks if cameras else ():
            ax.axvline(times[frame], color="0.85", linewidth=0.8, zorder=0)  # where the pictures above were taken
        ax.grid(True, alpha=0.3)
    if first_plot is not None:
        fig.axes[-1].set_xlabel("time in episode [s]")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _plot_lines(ax, times: np.ndarray, values: np.ndarray, name: str, units: str, kind: str) -> None:
    values = values.reshape(len(values), -1)
    for dim in range(values.shape[1]):
        ax.plot(times, values[:, dim], linewidth=1.2, label=f"[{dim}]")
    ax.set_ylabel(f"{name}" + (f" [{units}]" if units else ""), fontsize=9)
    ax.set_title(f"{kind}: {name} ({values.shape[1]} dims)", fontsize=9, loc="left")
    if 1 < values.shape[1] <= MAX_LEGEND_DIMS:
        ax.legend(loc="upper left", fontsize=7, ncol=values.shape[1])


def _label_rewards(ds: Dataset, run: str) -> np.ndarray | None:
    """A label run's rewards, or None for a run that is incomplete (info and validate report those)."""
    try:
        reward = ds.read_labels(run).reward
    except Exception:
        return None
    return reward if len(reward) >= ds.n_frames else None
