"""Frozen CLIP image embeddings of a dataset's camera frames, computed once and cached beside the data.

    labels/clip_embed.<feature>.<model>/embedding   float32 [n_frames, E], L2-normalised, one row per committed frame
        attrs: model, feature, weights (identity of local weight files), method, embed_dim, image_size,
               producer + what the store adds: dataset_fingerprint, n_frames, n_episodes, created

A cache whose fingerprint, model, feature, weights or method differs from the current ones is stale and is
recomputed. Models load with open_clip (see load_clip); nothing is downloaded unless a pretrained tag asks.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from robot_stack.data import Dataset
from robot_stack.errors import DatasetError, LearnError

EMBEDDING = "embedding"
"""Array name of the cache inside its label run."""
METHOD = "open_clip encode_image, batched tensor preprocess v1, L2-normalised float32"
"""Changes when the same model would give different embeddings (then every cache is stale)."""
CUDA_METHOD = f"{METHOD}, fp16 autocast on CUDA"
"""On CUDA the image tower runs in fp16 (twice the frames/s of fp32; cosine to fp32 above 0.999): another cache."""


def method(device: str | torch.device) -> str:
    """The method string of embeddings computed on `device` (the caches of fp32 and fp16 runs are kept apart)."""
    return CUDA_METHOD if torch.device(device).type == "cuda" else METHOD
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
FOLDER_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")  # what open_clip looks for in a model folder
MODEL_FORMS = (
    "use 'ARCH/TAG' for pretrained weights (e.g. 'ViT-B-32/openai', downloaded once), 'ARCH:/path/to/checkpoint.pt' "
    "(or .safetensors) for a local checkpoint of an open_clip architecture, or the path of a local model folder "
    "(open_clip_config.json + weights; 'local-dir:PATH' also works)"
)


@dataclass(frozen=True)
class ModelSource:
    """Where a model string says the weights are: kind 'tag' (arch + tag), 'checkpoint' (arch + path),
    'folder' (path) or 'hub' (hf-hub repo id in `tag`)."""

    kind: str
    arch: str = ""
    path: Path | None = None
    tag: str = ""


def parse_model(model: str) -> ModelSource:
    """Check a model string's form (see MODEL_FORMS) and that its local files exist; loads nothing."""
    import open_clip

    if not isinstance(model, str) or not model.strip():
        raise LearnError(f"CLIP model {model!r} is empty: {MODEL_FORMS}")
    if model.startswith("hf-hub:"):
        return ModelSource("hub", tag=model.removeprefix("hf-hub:"))
    if model.startswith(("local-dir:", "/", "./", "../", "~")) or os.path.isdir(model):
        path = Path(model.removeprefix("local-dir:")).expanduser()
        if not (path / "open_clip_config.json").is_file():
            what = "does not exist" if not path.exists() else "has no open_clip_config.json"
            raise LearnError(f"CLIP model folder {path} {what}: give a folder with open_clip_config.json and the "
                             f"weights, or {MODEL_FORMS}")
        if not any(p.suffix in FOLDER_WEIGHT_SUFFIXES for p in path.iterdir()):
            raise LearnError(f"CLIP model folder {path} has no weights: it needs open_clip_model.safetensors (or "
                             "open_clip_pytorch_model.bin / .pth) beside open_clip_config.json")
        return ModelSource("folder", path=path)
    arch, colon, file = model.partition(":")
    if colon:
        _check_arch(arch, model, open_clip)
        path = Path(file).expanduser()
        if not path.is_file():
            raise LearnError(f"CLIP model {model!r}: no checkpoint file at {path} (is the path right? it must be on "
                             "this machine)")
        return ModelSource("checkpoint", arch=arch, path=path)
    arch, slash, tag = model.partition("/")
    if slash:
        _check_arch(arch, model, open_clip)
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag not in tags:
            raise LearnError(f"CLIP model {model!r}: open_clip has no pretrained tag {tag!r} for {arch} (tags: {tags})")
        return ModelSource("tag", arch=arch, tag=tag)
    raise LearnError(f"CLIP model {model!r} names no weights: {MODEL_FORMS}")


def _check_arch(arch: str, model: str, open_clip: Any) -> None:
    if arch not in open_clip.list_models():
        raise LearnError(f"CLIP model {model!r}: {arch!r} is not an open_clip architecture (open_clip.list_models(), "
                         "or register a config with open_clip.add_model_config)")


def weights_identity(source: ModelSource) -> str:
    """Names the exact weights: the tag or hub repo, or the size and mtime of each local weight/config file."""
    if source.kind in ("tag", "hub"):
        return f"{source.kind}:{source.arch}/{source.tag}"
    files = [source.path] if source.kind == "checkpoint" else sorted(
        p for p in source.path.iterdir() if p.suffix in (*CHECKPOINT_SUFFIXES, ".json"))
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


class BatchPreprocess:
    """The model's inference preprocessing on tensors, a batch at a time: uint8 [B, H, W, 3] -> float [B, 3, h, w].

    Follows open_clip's PIL transform for the model's preprocess config (resize_mode shortest: resize the
    short side to the model's size and center-crop; longest: resize the long side and pad; squash: resize
    to the size), with antialiased resizing of the uint8 images (within a grey level or two of PIL's), then
    scales to [0, 1] and normalizes by the config's mean and std. Runs on the images' device.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        from torchvision.transforms import InterpolationMode

        size = cfg["size"]
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.resize_mode = cfg.get("resize_mode", "shortest")
        if self.resize_mode not in ("shortest", "longest", "squash"):
            raise LearnError(f"CLIP preprocess: unknown resize_mode {self.resize_mode!r} in the model's preprocess config")
        bilinear = cfg.get("interpolation") == "bilinear"
        self.interpolation = InterpolationMode.BILINEAR if bilinear else InterpolationMode.BICUBIC
        self.fill = int(cfg.get("fill_color", 0))
        self.mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, images: Tensor) -> Tensor:
        from open_clip.transform import center_crop_or_pad
        from torchvision.transforms import functional as TF

        x = images.permute(0, 3, 1, 2)
        height, width = x.shape[-2:]
        if self.resize_mode == "squash":
            size = list(self.size)
        elif self.resize_mode == "shortest" and self.size[0] == self.size[1]:
            size = [self.size[0]]  # torchvision's short-side rule, as open_clip's Resize(int) uses
        else:  # open_clip's ResizeKeepRatio
            ratios = (height / self.size[0], width / self.size[1])
            ratio = max(ratios) if self.resize_mode == "longest" else min(ratios)
            size = [round(height / ratio), round(width / ratio)]
        if size != [height, width]:
            x = TF.resize(x, size, self.interpolation, antialias=True)
        x = center_crop_or_pad(x, list(self.size), fill=self.fill)
        x = x.float() / 255.0
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def load_clip(model: str, device: str | torch.device = "cpu") -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    """(open_clip model in eval mode without gradients, BatchPreprocess for its images) on `device`.

    model: 'ARCH/TAG' (pretrained tag, downloaded on first use: users' machines only), 'ARCH:/path/ckpt.pt'
    (or .safetensors; a local checkpoint of an open_clip architecture, built-in or added with
    open_clip.add_model_config), or a local folder with open_clip_config.json + weights ('local-dir:PATH'
    too), or 'hf-hub:ORG/REPO'. Raises LearnError naming what is missing.
    """
    import open_clip

    source = parse_model(model)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LearnError(f"CLIP model {model!r}: device {device} asked for, but torch sees no CUDA GPU; use device='cpu'")
    if source.kind == "folder":
        name, pretrained = f"local-dir:{source.path}", None
    elif source.kind == "hub":
        name, pretrained = f"hf-hub:{source.tag}", None
    else:
        name, pretrained = source.arch, str(source.path) if source.kind == "checkpoint" else source.tag
    try:
        clip = open_clip.create_model(name, pretrained=pretrained, device=device, require_pretrained=True)
    except (RuntimeError, ValueError, OSError, KeyError) as error:
        hint = ("the download failed (no network?): load it once where there is network, or give a local checkpoint"
                if source.kind in ("tag", "hub") else f"do the weights fit {source.arch or 'the folder config'}?")
        raise LearnError(f"CLIP model {model!r} cannot be loaded ({type(error).__name__}: {error}): {hint}") from None
    clip.eval().requires_grad_(False)
    return clip, BatchPreprocess(clip.visual.preprocess_cfg)


def cache_run(image_feature: str, model: str) -> str:
    """The label run that caches embeddings of `image_feature` by `model`: clip_embed.<feature>.<model, sanitised>.

    Characters a folder name cannot hold become '_'; a long model string is cut and given a short hash. Two
    model strings that sanitise alike share the run, and each replaces the other's cache (attrs name the model).
    """
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", model).strip("_.-")
    if len(name) > 64:
        name = f"{name[:55]}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"
    return f"clip_embed.{image_feature}.{name}"


def clip_embeddings(ds: Dataset, image_feature: str, model: str, *, device: str | torch.device = "cpu",
                    batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """L2-normalised CLIP image embeddings of every committed frame of `image_feature`: float32 [n_frames, E].

    Read from the dataset's cache (labels/<cache_run(...)>/embedding) when it matches the dataset's current
    fingerprint, the model string, its weights and METHOD; otherwise computed in batches of `batch_size`
    frames on `device` (tqdm bar if `progress`) and cached, replacing a stale cache. The dataset's data is
    never changed. Raises LearnError for an unknown or non-image feature, an empty dataset or a model that
    cannot be loaded.
    """
    spec = ds.features.get(image_feature)
    cameras = [name for name, other in ds.features.items() if other.is_image]
    if spec is None or not spec.is_image:
        what = f"has no feature {image_feature!r}" if spec is None else \
            f"feature {image_feature!r} is a {spec.kind} feature, not an image"
        raise LearnError(f"{ds.path} {what}: CLIP embeds image features ({cameras})")
    if spec.shape[2] != 3:
        raise LearnError(f"image feature {image_feature!r} has {spec.shape[2]} channels: CLIP needs RGB (3)")
    if batch_size < 1:
        raise LearnError(f"CLIP embeddings: batch_size must be at least 1 frame, got {batch_size}")
    source = parse_model(model)
    run = cache_run(image_feature, model)
    wanted = {"model": model, "feature": image_feature, "weights": weights_identity(source), "method": method(device)}
    try:
        attrs = ds.label_array_attrs(run, EMBEDDING)
    except DatasetError:
        attrs = None  # no cache, or an interrupted one: compute
    if attrs is not None and attrs.get("dataset_fingerprint") == ds.fingerprint() and attrs.get("n_frames") == ds.n_frames \
            and all(attrs.get(key) == value for key, value in wanted.items()):
        return ds.read_label_array(run, EMBEDDING)[0].astype(np.float32, copy=False)
    n = ds.n_frames
    if n == 0:
        raise LearnError(f"{ds.path} has no committed episodes: no frames to embed")
    clip, preprocess = load_clip(model, device)
    embeddings = _embed(ds, image_feature, clip, preprocess, torch.device(device), batch_size, progress)
    ds.write_label_array(run, EMBEDDING, embeddings, wanted | {
        "producer": "robot_stack.learn.clip_embed", "embed_dim": int(embeddings.shape[1]),
        "image_size": list(preprocess.size), "batch_size": batch_size,
    }, overwrite=True)
    return embeddings


def _embed(ds: Dataset, feature: str, clip: nn.Module, preprocess: BatchPreprocess, device: torch.device,
           batch_size: int, progress: bool) -> np.ndarray:
    with tqdm(total=ds.n_frames, desc=f"CLIP {feature}", unit="frame", disable=not progress) as bar:
        values = []
        for batch in embed_batches(ds, feature, clip, preprocess, device, 0, ds.n_frames, batch_size):
            values.append(batch)
            bar.update(len(batch))
    return np.concatenate(values)


def embed_batches(ds: Dataset, feature: str, clip: nn.Module, preprocess: Callable[[Tensor], Tensor],
                  device: str | torch.device, start: int, stop: int, batch_size: int) -> Iterator[np.ndarray]:
    """L2-normalised embeddings float32 [<= batch_size, E] of frames [start, stop) of `feature`, one batch at a
    time (batches begin at start, start + batch_size, ...); one thread reads (and decompresses) the next batch
    from Zarr while the model encodes this one. The one embedding loop: clip_embeddings and the label engines."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-embed-read") as reader:
        starts = range(start, stop, batch_size)
        future = reader.submit(ds.frames, feature, start, min(start + batch_size, stop)) if starts else None
        for first in starts:
            frames = future.result()
            if first + batch_size < stop:
                future = reader.submit(ds.frames, feature, first + batch_size, min(first + 2 * batch_size, stop))
            yield encode_frames(clip, preprocess, frames, device)


_LOADED: dict[tuple[str, str], tuple[nn.Module, Callable[[Tensor], Tensor]]] = {}


def embed_images(images: np.ndarray, model: str, *, device: str | torch.device = "cpu") -> np.ndarray:
    """L2-normalised CLIP embeddings of live camera frames (uint8 [N, H, W, 3]) -> float32 [N, E].

    The same model and preprocessing as clip_embeddings, so a policy trained on cached embeddings sees the
    same numbers when it runs (sim evaluation, the policy node). The model is loaded once per process.
    """
    key = (model, str(device))
    if key not in _LOADED:
        _LOADED[key] = load_clip(model, device)
    clip, preprocess = _LOADED[key]
    return encode_frames(clip, preprocess, images, device)


def encode_frames(clip: nn.Module, preprocess: Callable[[Tensor], Tensor], images: np.ndarray,
                  device: str | torch.device) -> np.ndarray:
    """uint8 [N, H, W, 3] frames -> L2-normalised image embeddings float32 [N, E] (the one place CLIP embeds).

    The frames go to the device as uint8 and are preprocessed there; on CUDA the model runs under fp16
    autocast (method(device) names it in the cache)."""
    device = torch.device(device)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
        batch = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        return F.normalize(clip.encode_image(preprocess(batch)).float(), dim=-1).cpu().numpy()
