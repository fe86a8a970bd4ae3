"""A labeling job: check the request, build the LabelContext (cached CLIP embeddings when the labeler wants
them), run the labeler, calibrate its raw scores with one affine map fitted over the whole dataset, and write
labels/<run>/reward (calibrated) and labels/<run>/raw (the labeler's scores) with provenance, and the labeler's
fitted model where it keeps one (labels/<run>/model: robot_stack.label.apply scores later episodes with it).

Calibration (method "percentile-5-95"): reward = scale * raw + offset, with scale and offset chosen so that the
5th percentile of all raw scores of the dataset maps to 0 and the 95th to 1. One map for every episode, never
min–max per episode, so a failed episode whose scores are all low keeps low rewards. Method "none": identity.

Resumable: image embeddings are saved every `save_every` frames under labels/_partial/<cache run>/ while
they are computed, so a killed job rerun with the same command embeds only the frames it had not saved; once
all are done they become clip_embed's cache (labels/clip_embed.<camera>.<model>/embedding), reused by later runs.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.data import Dataset
from robot_stack.data.dataset import camera_feature
from robot_stack.data.schema import FeatureSpec, check_name
from robot_stack.data.store import create_array, open_group, writing
from robot_stack.errors import DatasetError, LabelError, LearnError
from robot_stack.label.apply import save_reward_model
from robot_stack.label.base import LabelContext
from robot_stack.label.engine import EmbedWork, LocalEngine, RayEngine, make_engine
from robot_stack.label.labelers import labeler_class
from robot_stack.learn import clip_embed

CALIBRATIONS = ("percentile-5-95", "none")
CALIBRATION_PERCENTILES = (5.0, 95.0)
PARTIAL = "_partial"
"""labels/_partial/<cache run>/: embeddings saved so far by an unfinished job (not a label run)."""
CHECKPOINT_FRAMES = 1024
"""By default embeddings are saved every this many frames (a killed job loses at most about this much work)."""


@dataclass
class LabelRequest:
    """What `robot-stack label run` asks for. model: a clip_embed model string ('' = none); config: the
    labeler's options (--set); run: the label run name ('' = '<labeler>-<hash of the request>')."""

    dataset: Path
    labeler: str
    task: str
    run: str = ""
    camera: str | None = None
    model: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    calibration: str = CALIBRATIONS[0]
    overwrite: bool = False
    progress: bool = True
    batch_size: int = 64
    save_every: int = CHECKPOINT_FRAMES
    engine: str = "local"
    address: str = ""
    workers: int | None = None


@dataclass
class LabelSummary:
    """What a finished job did: the run written, frames labeled, wall seconds, and the run's provenance."""

    run: str
    frames: int
    seconds: float
    attrs: dict[str, Any]


def model_string(model: str, pretrained: str | None) -> str:
    """`--model ARCH --pretrained TAG` -> 'ARCH/TAG' (clip_embed's form); a model string alone is kept."""
    if not pretrained:
        return model or ""
    if not model:
        raise LabelError(f"--pretrained {pretrained} needs --model ARCH (e.g. --model ViT-B-32 --pretrained {pretrained})")
    if "/" in model or ":" in model:
        raise LabelError(f"--pretrained {pretrained} goes with an architecture name (e.g. ViT-B-32), not with the "
                         f"model string {model!r}")
    return f"{model}/{pretrained}"


def run_name(request: LabelRequest) -> str:
    """The default run name: '<labeler>-<8 hex digits of the request's labeler, task, camera, model, config, seed>'."""
    key = json.dumps([request.labeler, request.task, request.camera, request.model, request.config, request.seed,
                      request.calibration], sort_keys=True, default=str)
    return f"{request.labeler}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def resolve_camera(ds: Dataset, camera: str | None) -> str:
    """The image feature `camera` names ('agentview' or 'image.agentview'); the only one when None."""
    if not any(spec.is_image for spec in ds.features.values()):
        raise LabelError(f"{ds.path} has no camera images, and this labeler needs them: record with a camera "
                         "(cameras:=agentview:84x84 in the collect launch) or run a labeler that needs no images")
    try:
        return camera_feature(ds, camera)
    except DatasetError as error:
        raise LabelError(str(error)) from None


def fit_calibration(raw: np.ndarray, method: str) -> dict[str, Any]:
    """One affine map reward = scale * raw + offset over all frames (module docstring): {method, scale, offset,
    and for percentiles the raw values that map to 0 and 1}."""
    if method == "none":
        return {"method": "none", "scale": 1.0, "offset": 0.0}
    low, high = np.percentile(raw.astype(np.float64), CALIBRATION_PERCENTILES)
    # Scores that barely vary get scale 1 (all rewards near 0) rather than an exploding scale.
    scale = 1.0 / (high - low) if high - low > 1e-12 else 1.0
    return {"method": method, "scale": float(scale), "offset": float(-low * scale),
            "raw_at_0": float(low), "raw_at_1": float(high),
            "percentiles": list(CALIBRATION_PERCENTILES)}


def requirements(labeler: type, config: dict[str, Any]) -> tuple[bool, bool]:
    """(needs_images, needs_embeddings) of a labeler for these options: its requirements(config) classmethod
    where it has one (e.g. a labeler on pixels needs no CLIP model), else its class attributes."""
    rule = getattr(labeler, "requirements", None)
    return tuple(rule(config)) if rule is not None else (labeler.needs_images, labeler.needs_embeddings)


def check_request(request: LabelRequest) -> tuple[Dataset, type, str, str | None, bool]:
    """Everything a user can get wrong, before any work: (dataset, labeler class, run name, camera, whether
    it needs embeddings). LabelError (or DatasetError for the dataset itself) naming the problem."""
    labeler = labeler_class(request.labeler)
    needs_images, needs_embeddings = requirements(labeler, request.config)
    if not request.task.strip():
        raise LabelError('the task is empty: say what the robot should do, e.g. --task "lift the red cube"')
    if request.calibration not in CALIBRATIONS:
        raise LabelError(f"unknown calibration {request.calibration!r}: use one of {', '.join(CALIBRATIONS)}")
    ds = Dataset.open(request.dataset)
    if ds.n_frames == 0:
        raise LabelError(f"{ds.path} has no committed episodes: nothing to label")
    camera = resolve_camera(ds, request.camera) if needs_images else None
    if needs_embeddings:
        if not request.model:
            raise LabelError(f"labeler {request.labeler!r} embeds frames with CLIP: give --model ({clip_embed.MODEL_FORMS})")
        try:
            clip_embed.parse_model(request.model)
        except LearnError as error:
            raise LabelError(str(error)) from None
    run = request.run or run_name(request)
    try:
        check_name("label run", run)
    except DatasetError as error:
        raise LabelError(str(error)) from None
    if run.startswith("_"):
        raise LabelError(f"label run names starting with '_' are kept for caches: choose another name than {run!r}")
    taken = run in ds.label_runs() or run in ds.label_arrays()
    if taken and not request.overwrite:
        raise LabelError(f"{ds.path} already has label run {run!r}: choose another --run name, or pass --overwrite "
                         "to replace it")
    if taken and run in ds.label_arrays():
        raise LabelError(f"label run {run!r} in {ds.path} holds cached arrays, not rewards: choose another --run name")
    return ds, labeler, run, camera, needs_embeddings


def run_label_job(request: LabelRequest) -> LabelSummary:
    """Label every committed frame of the dataset and write the run (module docstring). Raises LabelError
    (one line) for anything the user can fix."""
    started = time.perf_counter()
    ds, labeler_type, run, camera, needs_embeddings = check_request(request)
    engine = make_engine(request.engine, request.address, request.workers)
    labeler = labeler_type()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    embeddings, embedded, embed_seconds = None, 0, 0.0
    if needs_embeddings:
        try:
            embeddings, embedded = embed_frames(ds, camera, request.model, request.device, request.batch_size,
                                                request.save_every, request.progress, log, engine)
        except LearnError as error:
            raise LabelError(str(error)) from None
        embed_seconds = time.perf_counter() - started
    elif engine.name != "local":
        log(f"the {engine.name} engine has nothing to share out: labeler {request.labeler!r} needs no image "
            "embeddings with these options, and runs in this process")
    context = LabelContext(dataset=ds, task=request.task, camera=camera, model=request.model, embeddings=embeddings,
                           config=dict(request.config), seed=request.seed, device=request.device,
                           progress=request.progress, log=log)
    try:
        result = labeler.label(context)
    except LearnError as error:
        raise LabelError(str(error)) from None
    raw = np.asarray(result.scores, dtype=np.float32)
    if raw.shape != (ds.n_frames,):
        raise LabelError(f"labeler {request.labeler!r} returned scores of shape {raw.shape}, not one per frame "
                         f"({ds.n_frames},): a fault in the labeler, please report it")
    if not np.isfinite(raw).all():
        raise LabelError(f"labeler {request.labeler!r} returned non-finite scores at frames "
                         f"{np.flatnonzero(~np.isfinite(raw))[:5].tolist()}: a fault in the labeler, please report it")
    calibration = fit_calibration(raw, request.calibration)
    reward = calibration["scale"] * raw.astype(np.float64) + calibration["offset"]
    info = dict(result.info)
    seconds = time.perf_counter() - started
    attrs = {
        "labeler": request.labeler, "judge": info.pop("judge", None), "model": request.model or None,
        "weights": clip_embed.weights_identity(clip_embed.parse_model(request.model)) if request.model else None,
        "camera": camera, "task": request.task, "prompts": info.pop("prompts", None),
        "config": info.pop("config", dict(request.config)), "seed": request.seed, "calibration": calibration,
        "ground_truth_used": bool(result.ground_truth_used),
        "cost": {"seconds": round(seconds, 3), "embed_seconds": round(embed_seconds, 3), "frames": ds.n_frames,
                 "frames_embedded": embedded, "judge_calls": info.get("calls"), "cache_hits": info.get("cache_hits")},
        "info": info, "engine": engine.info, "producer": "robot_stack.label.job",
    }
    ds.write_labels(run, reward.astype(np.float32), attrs, overwrite=request.overwrite, raw=raw)
    if result.model is not None:
        save_reward_model(ds, run, result.model, camera)
    return LabelSummary(run, ds.n_frames, seconds, ds.read_labels(run).attrs)


def embed_frames(ds: Dataset, camera: str, model: str, device: str, batch_size: int, save_every: int,
                 progress: bool, log: Callable[[str], None],
                 engine: LocalEngine | RayEngine | None = None) -> tuple[np.ndarray, int]:
    """(L2-normalised CLIP embeddings float32 [n_frames, E] of `camera`, frames embedded by this call).

    clip_embed's cache when it is current; otherwise the frames not saved by an interrupted job are embedded
    (batches of `batch_size`, the next batch read while this one is encoded, saved every `save_every` frames)
    with clip_embed's encoding, by `engine` (default: in this process), and the result is stored as
    clip_embed's cache.
    """
    source = clip_embed.parse_model(model)
    cache = clip_embed.cache_run(camera, model)
    wanted = {"model": model, "feature": camera, "weights": clip_embed.weights_identity(source),
              "method": clip_embed.method(device)}
    try:
        attrs = ds.label_array_attrs(cache, clip_embed.EMBEDDING)
    except DatasetError:
        attrs = {}  # no cache yet, or an interrupted write of it
    current = {**wanted, "dataset_fingerprint": ds.fingerprint(), "n_frames": ds.n_frames}
    if all(attrs.get(key) == value for key, value in current.items()):
        return clip_embed.clip_embeddings(ds, camera, model, device=device, progress=False), 0
    saved = _saved_segments(ds, cache, current)
    done = sum(len(segment) for segment in saved)
    if done:
        log(f"resuming: {done} of {ds.n_frames} frames were embedded by an earlier, interrupted run")
    resumed, n = done, ds.n_frames
    work = EmbedWork(str(Path(ds.path).absolute()), current["dataset_fingerprint"], camera, model, device, batch_size,
                     save_every)

    def save(start: int, segment: np.ndarray) -> None:
        _save_segment(ds, cache, current, start, segment)
        saved.append(segment)
        log(f"embedded {start + len(segment)} of {n} frames (saved)")

    image_size = (engine or LocalEngine()).embed(ds, work, done, save, progress)
    embeddings = np.concatenate(saved)
    ds.write_label_array(cache, clip_embed.EMBEDDING, embeddings, wanted | {
        "producer": "robot_stack.label.job (clip_embed's encoding, resumable)", "embed_dim": int(embeddings.shape[1]),
        "image_size": image_size, "batch_size": batch_size}, overwrite=True)
    root = open_group(ds.path, writable=True)
    with writing(ds.path, f"labels/{PARTIAL}/{cache}"):
        del root["labels"][PARTIAL][cache]
    return embeddings, n - resumed


def _saved_segments(ds: Dataset, cache: str, current: dict[str, Any]) -> list[np.ndarray]:
    """The embeddings [k, E] an interrupted job saved for these frames, model and data, in frame order from 0;
    saved work of other data or another model is dropped."""
    root = open_group(ds.path, writable=False)
    group = root.get(f"labels/{PARTIAL}/{cache}")
    if group is None:
        return []
    if group.attrs.asdict() != current:
        with writing(ds.path, f"labels/{PARTIAL}/{cache}"):
            del open_group(ds.path, writable=True)["labels"][PARTIAL][cache]
        return []
    segments, done = [], 0
    for name, array in sorted(group.arrays()):
        if int(name) != done or not array.attrs.get("complete"):
            break  # a segment whose writing was interrupted, and everything after it, is embedded again
        segments.append(array[:])
        done += len(segments[-1])
    return segments


def _save_segment(ds: Dataset, cache: str, current: dict[str, Any], start: int, segment: np.ndarray) -> None:
    """Save embeddings [k, E] of frames [start, start + k) under labels/_partial/<cache>/<start>."""
    root = open_group(ds.path, writable=True)
    with writing(ds.path, f"labels/{PARTIAL}/{cache}"):
        partial = root.require_group("labels").require_group(PARTIAL)
        group = partial[cache] if cache in partial else partial.create_group(cache, attributes=current)
        name = f"{start:012d}"
        if name in group:
            del group[name]
        array = create_array(group, name, FeatureSpec("embedding", "float32", segment.shape[1:], "state"), 1)
        array.resize(segment.shape)
        array[:] = segment
        array.update_attributes({"complete": True})  # last: an array without it was interrupted
