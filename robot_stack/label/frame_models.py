"""Small per-frame models the `progress` and `success` labelers train on the dataset itself: their input
(frozen open_clip embeddings, or pixels for a CNN trained from scratch), windows of frames, and the trainer.

A sample is a window of `window` frames of one clip, the newest last: window indices [N, window] into the
dataset's committed frames, `stride` frames apart along the clip, the clip's first frame repeated before
its start. Labeling runs each episode forward, so a frame's score depends on it and earlier frames only.
Training is on the CPU by default (a few hundred updates of a batch of 64: seconds for small datasets),
seeded, and deterministic on the CPU for a given seed, dataset and thread count.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from robot_stack.errors import LabelError
from robot_stack.label.base import LabelContext, SavedModel
from robot_stack.learn.encoders import MIN_IMAGE_PX, ImageEncoder, random_shift
from robot_stack.learn.networks import MLP

EMBEDDINGS, PIXELS = "embeddings", "pixels"
INPUTS = (EMBEDDINGS, PIXELS)
_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def read_options(name: str, config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The labeler's options: `defaults` overridden by `config` (values may be the strings of --set KEY=VALUE,
    converted to the default's type). An unknown key or a value of the wrong type is a LabelError line."""
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise LabelError(f"labeler {name!r} has no option {', '.join(map(repr, unknown))}; its options: "
                         + ", ".join(f"{key}={value}" for key, value in defaults.items()))
    options = dict(defaults)
    for key, value in config.items():
        kind = type(defaults[key])
        try:
            if kind is bool and isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                value = value.lower() in ("true", "1", "yes")
            elif kind is int and (isinstance(value, float) and not value.is_integer() or isinstance(value, bool)):
                raise ValueError(value)
            options[key] = kind(value)
        except (TypeError, ValueError):
            raise LabelError(f"labeler {name!r}: option {key}={value!r} is not {_KIND_NAMES[kind]} "
                             f"(default {defaults[key]!r})") from None
    return options


class FrameModelLabeler:
    """What the labelers that train a model on the dataset's own frames (progress, success) share: a camera is
    always read; the default input, frozen embeddings, needs an open_clip model, input=pixels does not."""

    name: str
    defaults: dict[str, Any]  # the labeler's options and their defaults (read_options)
    needs_images = True
    needs_embeddings = True  # the default input; requirements(config) says it per run

    @classmethod
    def requirements(cls, config: dict[str, Any]) -> tuple[bool, bool]:
        """(needs_images, needs_embeddings) for a run with these options."""
        input_kind = read_options(cls.name, config, cls.defaults)["input"]
        check_input(input_kind)
        return True, input_kind == EMBEDDINGS


def check_input(input_kind: str) -> None:
    if input_kind not in INPUTS:
        raise LabelError(f"input={input_kind!r} is not a frame model input: use input=embeddings (frozen open_clip "
                         "embeddings, needs --model) or input=pixels (a small CNN trained from scratch, no model)")


@dataclass
class FrameInputs:
    """What a frame model reads: kind EMBEDDINGS with data float32 [n_frames, E], or kind PIXELS with data
    uint8 [n_frames, H, W, C] (the camera's frames as recorded)."""

    kind: str
    data: np.ndarray
    source: str  # the camera (and model) they came from, for the run's provenance


def frame_inputs(context: LabelContext, input_kind: str, labeler: str) -> FrameInputs:
    """The committed frames of context.camera as `input_kind` wants them; a LabelError line when the dataset
    or the context cannot give them."""
    check_input(input_kind)
    ds = context.dataset
    cameras = sorted(name for name, spec in ds.features.items() if spec.is_image)
    if not cameras:
        raise LabelError(f"labeler {labeler!r} needs camera images, and {ds.path} has none: record with a camera "
                         "(the recorder's cameras parameter, sim_collect --cameras)")
    if context.camera is None or context.camera not in cameras:
        what = "no camera was chosen" if context.camera is None else f"it has no image feature {context.camera!r}"
        raise LabelError(f"labeler {labeler!r}: {what} in {ds.path}; pick one with --camera ({', '.join(cameras)})")
    if input_kind == EMBEDDINGS:
        if context.embeddings is None:
            raise LabelError(f"labeler {labeler!r} on embeddings needs an open_clip model (--model), or "
                             "--set input=pixels to train a small CNN from the frames with no model at all")
        data = np.asarray(context.embeddings, dtype=np.float32)
        if data.ndim != 2 or len(data) != ds.n_frames:
            raise LabelError(f"labeler {labeler!r}: the embeddings of {context.camera} have shape {data.shape}, not "
                             f"[{ds.n_frames} frames, E]: recompute them (the dataset changed since they were cached)")
        return FrameInputs(EMBEDDINGS, data, f"{context.camera} embedded by {context.model or 'a given model'}")
    data = ds.frames(context.camera)
    if data.ndim != 4 or min(data.shape[1:3]) < MIN_IMAGE_PX:
        raise LabelError(f"labeler {labeler!r}: {context.camera} frames have shape {data.shape[1:]}; the pixel CNN "
                         f"needs (H, W, C) images of at least {MIN_IMAGE_PX} px a side (record larger images)")
    return FrameInputs(PIXELS, data, context.camera)


def clip_windows(clip: np.ndarray, window: int, stride: int) -> np.ndarray:
    """Windows [len(clip), window] of frame indices: row i holds clip[i - (window - 1 - k) * stride] for
    k = 0..window-1 (the newest, clip[i], last), positions before the clip's start clamped to its first frame."""
    positions = np.arange(len(clip))[:, None] - stride * np.arange(window - 1, -1, -1)[None, :]
    return np.asarray(clip, dtype=np.int64)[np.clip(positions, 0, None)]


def episode_windows(context: LabelContext, window: int, stride: int) -> np.ndarray:
    """Windows [n_frames, window] of every committed frame, each episode played forward: what labeling scores."""
    ds = context.dataset
    rows = [clip_windows(np.arange(ds.episode_slice(e).start, ds.episode_slice(e).stop), window, stride)
            for e in range(ds.n_episodes)]
    return np.concatenate(rows) if rows else np.zeros((0, window), np.int64)


class FrameModel(nn.Module):
    """A window of frames -> one logit. Embeddings: [B, window, E] -> MLP(window * E -> hidden -> 1).
    Pixels: uint8 [B, window, H, W, C] -> frames stacked along channels, scaled to [-0.5, 0.5], shifted by
    up to `augment_pad` px when training (one shift per window, DrQ) -> ImageEncoder -> Linear -> 1."""

    def __init__(self, inputs: FrameInputs, window: int, hidden: int, feature_dim: int, augment_pad: int) -> None:
        super().__init__()
        self.kind, self.augment_pad = inputs.kind, augment_pad
        if inputs.kind == EMBEDDINGS:
            self.net: nn.Module = MLP(window * inputs.data.shape[1], 1, [hidden, hidden])
        else:
            height, width, channels = inputs.data.shape[1:]
            encoder = ImageEncoder(window * channels, height, width, feature_dim)
            self.net = nn.Sequential(encoder, nn.Linear(feature_dim, 1))

    def forward(self, frames: Tensor, augment: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Logits [B]."""
        if self.kind == EMBEDDINGS:
            return self.net(frames.flatten(1)).squeeze(-1)
        batch, window, height, width, channels = frames.shape
        images = frames.permute(0, 1, 4, 2, 3).reshape(batch, window * channels, height, width).float() / 255.0 - 0.5
        if augment:
            images = random_shift(images, self.augment_pad, generator)
        return self.net(images).squeeze(-1)


@dataclass
class TrainSettings:
    """steps: gradient updates; batch: windows per update; lr: AdamW learning rate; hidden: MLP width
    (embeddings); feature_dim: CNN features (pixels); augment_pad: random shift in px (pixels; 0 = none);
    threads: torch CPU threads while training on the CPU (restored after). One by default: these models are
    small enough that a thread team costs more than it gives (a 2-core machine under load: 54 ms an update
    of the 32x32 CNN on one thread, 519 ms on two)."""

    steps: int = 300
    batch: int = 64
    lr: float = 1e-3
    hidden: int = 256
    feature_dim: int = 64
    augment_pad: int = 2
    threads: int = 1


def train_frame_model(inputs: FrameInputs, windows: np.ndarray, targets: np.ndarray, settings: TrainSettings,
                      seed: int, device: str = "cpu", sample_weights: np.ndarray | None = None,
                      log: Callable[[str], None] | None = None) -> FrameModel:
    """Fit a FrameModel so sigmoid(logit) matches `targets` (float [N] in [0, 1]; soft targets welcome) with
    binary cross-entropy. windows: int [N, window] frame indices; sample_weights: relative probability of
    drawing each sample into a batch (default uniform). Seeded: the same seed gives the same model on the CPU."""
    if settings.steps < 1 or settings.batch < 1 or settings.lr <= 0 or settings.threads < 1:
        raise LabelError(f"training needs steps >= 1, batch >= 1, lr > 0 and threads >= 1, got steps={settings.steps}, "
                         f"batch={settings.batch}, lr={settings.lr}, threads={settings.threads}")
    with cpu_threads(settings.threads, device):
        return _train(inputs, windows, targets, settings, seed, device, sample_weights, log)


def _train(inputs: FrameInputs, windows: np.ndarray, targets: np.ndarray, settings: TrainSettings, seed: int,
           device: str, sample_weights: np.ndarray | None, log: Callable[[str], None] | None) -> FrameModel:
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FrameModel(inputs, windows.shape[1], settings.hidden, settings.feature_dim, settings.augment_pad)
    model.to(device).train()
    frames = torch.as_tensor(inputs.data, device=device)
    target = torch.as_tensor(np.asarray(targets, np.float32), device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, foreach=True)
    p = None if sample_weights is None else np.asarray(sample_weights, float) / np.sum(sample_weights)
    # All batches drawn up front: one host-to-device copy, no per-step host work beyond the update itself.
    picks = torch.as_tensor(rng.choice(len(windows), size=(settings.steps, settings.batch), p=p), device=device)
    windows_t = torch.as_tensor(windows, device=device)
    for step in range(settings.steps):
        rows = picks[step]
        logits = model(frames[windows_t[rows]], augment=True, generator=generator)
        loss = F.binary_cross_entropy_with_logits(logits, target[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if log is not None and (step + 1) % max(1, settings.steps // 4) == 0:
            log(f"  step {step + 1}/{settings.steps}: loss {loss.item():.4f}")
    return model.eval()


@contextmanager
def cpu_threads(threads: int, device: str) -> Iterator[None]:
    """torch's CPU thread count set to `threads` inside the block when `device` is the CPU, restored after."""
    before = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def predict(model: FrameModel, inputs: FrameInputs, windows: np.ndarray, device: str = "cpu",
            batch: int = 512, threads: int = 1) -> np.ndarray:
    """sigmoid(logit) float32 [N] of each window (no augmentation); `threads` as TrainSettings.threads."""
    frames = torch.as_tensor(inputs.data, device=device)
    with cpu_threads(threads, device):
        out = [torch.sigmoid(model(frames[torch.as_tensor(windows[i:i + batch], device=device)])).cpu()
               for i in range(0, len(windows), batch)]
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)


FORMAT = "robot_stack.label frame model v1"
"""attrs["format"] of a saved FrameModel; changes when the same attrs would build another module."""


def save_frame_model(model: FrameModel, inputs: FrameInputs, window: int, stride: int,
                     settings: TrainSettings) -> SavedModel:
    """The fitted model as a SavedModel: its state dict (CPU tensors) as torch.save bytes, and what rebuilds
    and feeds it: format, input kind, input_shape (per frame: [E] embeddings or [H, W, C] pixels), window and
    stride (frames), the TrainSettings, sha256 of the bytes (a damaged copy is caught before it is used)."""
    buffer = io.BytesIO()
    torch.save({key: value.detach().cpu() for key, value in model.state_dict().items()}, buffer)
    state = buffer.getvalue()
    attrs = {"format": FORMAT, "input": inputs.kind, "input_shape": list(inputs.data.shape[1:]),
             "window": int(window), "stride": int(stride), "settings": asdict(settings),
             "sha256": hashlib.sha256(state).hexdigest()}
    return SavedModel(state, attrs)


def load_frame_model(saved: SavedModel, device: str = "cpu") -> FrameModel:
    """The FrameModel save_frame_model saved, in eval mode on `device`. ValueError saying what does not fit
    (format, checksum, state dict); torch.load only reads tensors (weights_only=True)."""
    attrs = saved.attrs
    if attrs.get("format") != FORMAT:
        raise ValueError(f"format {attrs.get('format')!r}, this version reads {FORMAT!r}")
    if hashlib.sha256(saved.state).hexdigest() != attrs.get("sha256"):
        raise ValueError("its bytes do not match the checksum saved with them")
    kind, shape = attrs["input"], tuple(attrs["input_shape"])
    check_input(kind)
    settings = TrainSettings(**attrs["settings"])
    shell = FrameInputs(kind, np.zeros((0, *shape), np.float32 if kind == EMBEDDINGS else np.uint8), "")
    with torch.random.fork_rng(devices=[]):  # the weights are overwritten: keep the caller's RNG untouched
        model = FrameModel(shell, attrs["window"], settings.hidden, settings.feature_dim, settings.augment_pad)
    try:
        state = torch.load(io.BytesIO(saved.state), map_location=device, weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, EOFError, KeyError, TypeError, ValueError, AttributeError, pickle.UnpicklingError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"its weights do not load ({first})") from None
    return model.to(device).eval()


def no_success_error(context: LabelContext, labeler: str) -> LabelError:
    """The one line for a dataset with no successful episode to learn from."""
    ds = context.dataset
    return LabelError(f"labeler {labeler!r} learns from successful episodes, and none of the {ds.n_episodes} episodes "
                      f"of {ds.path} is marked successful: mark the ones that succeeded with "
                      f"`robot-stack data mark {ds.path} EPISODES success` (e.g. 0,2,5 or 4-9)")
