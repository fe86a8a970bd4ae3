"""A label run's reward model applied to episodes recorded after the run (online fine-tuning's rewards).

The `progress` and `success` labelers fit one frame model each; the job keeps it with the run:

    labels/<run>/model   uint8 [n_bytes]: torch.save bytes of the model's state dict (tensors only)
        attrs: format, input (embeddings | pixels), input_shape, window, stride (frames), settings (architecture),
               sha256 of the bytes (robot_stack.label.frame_models.save_frame_model), camera, camera_shape
               [H, W, 3]; complete (written last: an array without it was interrupted)

`label_reward_model(dataset, run)` loads it as a RewardModel whose `rewards(frames)` scores one episode the way
the run scored the dataset's episodes: the same windows (each episode played forward from its first frame), the
same model, the run's calibration. For the dataset's own episodes the values equal labels/<run>/reward (to
float rounding; on embeddings, as long as CLIP runs on the same kind of device as the run's did). New episodes
are out of sample for the model, as the episodes a run held out (success) or could not train on (unknown
outcome) were.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from typing import Any

import numpy as np

from robot_stack.data import Dataset
from robot_stack.data.schema import FeatureSpec
from robot_stack.data.store import create_array, open_group, writing
from robot_stack.errors import LabelError
from robot_stack.label.base import SavedModel
from robot_stack.label.frame_models import (
    EMBEDDINGS,
    FrameInputs,
    clip_windows,
    load_frame_model,
    predict,
)
from robot_stack.label.labelers import labeler_class

MODEL = "model"
"""Array name of the saved model inside its label run."""
APPLICABLE = ("progress", "success")
"""Labelers whose runs keep a model that scores new episodes."""
CLIP_BATCH = 64
"""Frames per CLIP batch when embedding an episode (the job's default batch)."""


def save_reward_model(ds: Dataset, run: str, saved: SavedModel, camera: str) -> None:
    """Store `saved` as labels/<run>/model of the reward run `run` (written by Dataset.write_labels just before),
    with the camera it reads and that camera's frame shape [H, W, 3]; the attributes go last."""
    attrs = saved.attrs | {"camera": camera, "camera_shape": list(ds.features[camera].shape)}
    state = np.frombuffer(saved.state, dtype=np.uint8)
    root = open_group(ds.path, writable=True)
    with writing(ds.path, f"labels/{run}/{MODEL}"):
        group = root["labels"][run]
        array = create_array(group, MODEL, FeatureSpec(MODEL, "uint8", (), "state"), shard_frames=1)
        array.resize(state.shape)
        array[:] = state
        array.update_attributes(attrs | {"complete": True})


def has_reward_model(ds: Dataset, run: str) -> bool:
    """Whether labels/<run> holds a completely written model (it may still be damaged: label_reward_model checks)."""
    group = open_group(ds.path, writable=False).get(f"labels/{run}")
    return group is not None and MODEL in group and bool(group[MODEL].attrs.get("complete"))


class RewardModel:
    """A label run's frame model with its calibration: per-frame rewards of one episode at a time.

    run, labeler, dataset: where it came from; ground_truth_used: the run's model learnt from recorded sim ground
    truth (success labels=sim_success), so its rewards measure the rest of the chain only; features: {image
    feature: (H, W, 3)} the frames `rewards` needs, uint8 at exactly that size (render or record that camera at
    that size); calibration: the run's {scale, offset, ...}. rewards() sets torch's CPU thread count to the
    run's `threads` while it runs (as the labelers do): call it from one thread at a time.
    """

    def __init__(self, ds: Dataset, run: str, attrs: Mapping[str, Any], saved: SavedModel, device: str) -> None:
        self.run, self.labeler = run, attrs["labeler"]
        self.dataset = str(ds.path)
        self.ground_truth_used = bool(attrs.get("ground_truth_used", False))
        self.camera = saved.attrs["camera"]
        self.features: dict[str, tuple[int, ...]] = {self.camera: tuple(saved.attrs["camera_shape"])}
        self.calibration: dict[str, Any] = dict(attrs["calibration"])
        self.input, self.window, self.stride = saved.attrs["input"], saved.attrs["window"], saved.attrs["stride"]
        self.threads = saved.attrs["settings"]["threads"]
        self.clip_model: str | None = attrs.get("model") if self.input == EMBEDDINGS else None
        self.device = device
        try:
            self.model = load_frame_model(saved, device)
        except ValueError as error:
            raise LabelError(f"the saved model of label run {run!r} in {ds.path} is damaged ({error}): "
                             f"{relabel_command(ds, run, attrs)}") from None

    def rewards(self, frames: Mapping[str, np.ndarray]) -> np.ndarray:
        """Rewards float32 [T] of one episode, the way labels/<run>/reward holds them (calibrated, before any
        trainer's reward offset). frames: {feature: array [T, ...]} holding at least `features` (uint8
        [T, H, W, 3], the episode's frames in order, first to last); other entries are ignored. Frame t's
        reward depends on frames 0..t only."""
        images = frames.get(self.camera)
        shape = self.features[self.camera]
        if images is None:
            raise LabelError(f"label run {self.run!r} scores {self.camera} frames, and this episode has none "
                             f"(it has {', '.join(sorted(frames)) or 'nothing'}): record {self.camera} at "
                             f"{shape[0]}x{shape[1]}")
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape:
            raise LabelError(f"label run {self.run!r} scores {self.camera} frames of {shape[0]}x{shape[1]}x{shape[2]} "
                             f"uint8, got {images.dtype} {list(images.shape[1:])}: record {self.camera} at "
                             f"{shape[0]}x{shape[1]}, as the labeled dataset has it")
        if len(images) == 0:
            return np.zeros(0, np.float32)
        raw = predict(self.model, self._inputs(images), clip_windows(np.arange(len(images)), self.window, self.stride),
                      self.device, threads=self.threads)
        # The job's arithmetic exactly (float64, then float32), so the dataset's own episodes match their labels.
        reward = self.calibration["scale"] * raw.astype(np.float64) + self.calibration["offset"]
        return reward.astype(np.float32)

    def _inputs(self, images: np.ndarray) -> FrameInputs:
        if self.clip_model is None:
            return FrameInputs(self.input, images, self.camera)
        from robot_stack.learn import clip_embed  # open_clip loads only for runs on embeddings

        embedded = [clip_embed.embed_images(images[i:i + CLIP_BATCH], self.clip_model, device=self.device)
                    for i in range(0, len(images), CLIP_BATCH)]
        return FrameInputs(EMBEDDINGS, np.concatenate(embedded), f"{self.camera} embedded by {self.clip_model}")


def label_reward_model(dataset: Dataset | str | os.PathLike, run: str, device: str = "cpu") -> RewardModel:
    """The reward model of label run `run` ('NAME' or 'labels/NAME') of `dataset`, on torch `device`.

    LabelError (one line, saying what to do) for a run that does not exist or is incomplete, a run of a labeler
    that keeps no model (clip, preference), a run made before runs kept their model, or a damaged model.
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    run = run.removeprefix("labels/")
    group = open_group(ds.path, writable=False).get(f"labels/{run}")
    runs = ds.label_runs()
    if group is None or run not in runs:
        raise LabelError(f"{ds.path} has no label run {run!r} (runs: {', '.join(runs) or 'none'}): label it with "
                         f"robot-stack label run {shlex.quote(str(ds.path))} --labeler progress (or success) "
                         f"--task TEXT --run {run}")
    attrs = group.attrs.asdict()
    if "dataset_fingerprint" not in attrs or "reward" not in group:
        raise LabelError(f"label run {run!r} in {ds.path} is incomplete (its writing was interrupted): "
                         f"{relabel_command(ds, run, attrs)}")
    labeler = attrs.get("labeler")
    if labeler not in APPLICABLE:
        raise LabelError(f"label run {run!r} in {ds.path} was made by the {labeler!r} labeler, which keeps no model "
                         "to score new episodes: label the dataset with --labeler progress or success (robot-stack "
                         f"label run {shlex.quote(str(ds.path))} --labeler progress --task TEXT --set input=pixels) "
                         "and use that run")
    if MODEL not in group or not group[MODEL].attrs.get("complete"):
        why = "its model was not kept (made before label runs kept their model)" if MODEL not in group \
            else "its model's writing was interrupted"
        raise LabelError(f"label run {run!r} in {ds.path} cannot score new episodes, {why}: "
                         f"{relabel_command(ds, run, attrs)}")
    array = group[MODEL]
    saved = SavedModel(np.asarray(array[:], dtype=np.uint8).tobytes(), array.attrs.asdict())
    if saved.attrs.get("camera") not in ds.features:
        raise LabelError(f"the saved model of label run {run!r} in {ds.path} is damaged (it names camera "
                         f"{saved.attrs.get('camera')!r}, which the dataset lacks): {relabel_command(ds, run, attrs)}")
    return RewardModel(ds, run, attrs, saved, device)


def relabel_command(ds: Dataset, run: str, attrs: Mapping[str, Any]) -> str:
    """'label it again: robot-stack label run ... --overwrite' with the run's own task, camera, model, options
    (those that differ from the labeler's defaults), seed and calibration method."""
    words = ["robot-stack", "label", "run", str(ds.path), "--labeler", str(attrs.get("labeler")),
             "--task", str(attrs.get("task") or "TEXT")]
    if attrs.get("camera"):
        words += ["--camera", str(attrs["camera"])]
    if attrs.get("model"):
        words += ["--model", str(attrs["model"])]
    try:
        defaults = labeler_class(str(attrs.get("labeler"))).defaults
    except (LabelError, AttributeError):
        defaults = {}
    for key, value in (attrs.get("config") or {}).items():
        if key not in defaults or defaults[key] != value:
            words += ["--set", f"{key}={value}"]
    if attrs.get("seed"):
        words += ["--seed", str(attrs["seed"])]
    if (attrs.get("calibration") or {}).get("method"):
        words += ["--calibration", attrs["calibration"]["method"]]
    return f"label it again: {shlex.join(words + ['--run', run, '--overwrite'])}"
