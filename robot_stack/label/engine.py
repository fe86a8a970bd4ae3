"""Where a label job's per-frame work (CLIP image embeddings) runs: "local", in this process (the default), or
"ray", in shards over a Ray cluster (`--engine ray [--address ADDR]`). Labelers that fit a model on the whole
dataset keep fitting in the driver on the embeddings the engine returns.

Both engines embed with the same code (clip_embed.embed_batches) in the same batches: a ray shard is
a whole number of `batch_size` batches on the grid the local engine uses, so every frame is encoded in the same
batch as in a single-process run and the embeddings, hence the labels, are bitwise equal on the same kind of
hardware (across different CPUs or GPUs, float32 round-off may differ).

Without --address Ray is started for the job on this machine, bound to 127.0.0.1 only, with no dashboard, and
shut down at its end; --address connects to a running cluster, whose workers must see the dataset (and a local
model folder) at the same path as this machine.
"""

from __future__ import annotations

import math
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from robot_stack import cluster
from robot_stack.cluster import LOOPBACK_ENV, ray_session  # noqa: F401  (LOOPBACK_ENV: the tests' local cluster)
from robot_stack.data import Dataset
from robot_stack.errors import DatasetError, LabelError, LearnError, RobotStackError
from robot_stack.learn import clip_embed

ENGINES = ("local", "ray")
SHARDS_PER_WORKER = 4
"""A few shards per worker, so that a slow worker does not hold the others up at the end."""

SaveSegment = Callable[[int, np.ndarray], None]
"""save(first frame, embeddings float32 [k, E]): called in frame order, each block continuing the last."""


@dataclass(frozen=True)
class EmbedWork:
    """What to embed, as a worker needs it: the dataset (absolute path) and the fingerprint its data had when the
    job checked it, the camera (image feature), the clip_embed model string, the torch device, frames per batch,
    and about how many frames to embed between two saves."""

    dataset: str
    fingerprint: str
    camera: str
    model: str
    device: str
    batch_size: int
    save_every: int


class LocalEngine:
    """Embeds in this process, saving a block every `save_every` frames (rounded up to whole batches)."""

    name = "local"

    def __init__(self) -> None:
        self.info: dict[str, Any] = {"name": self.name}

    def embed(self, ds: Dataset, work: EmbedWork, start: int, save: SaveSegment, progress: bool) -> list[int]:
        """Embed frames [start, n_frames) and hand them to `save` in blocks; returns the model's image size [h, w]."""
        clip, preprocess = clip_embed.load_clip(work.model, work.device)
        n, pending, done = ds.n_frames, [], start
        with tqdm(total=n, initial=start, desc=f"CLIP {work.camera}", unit="frame", disable=not progress) as bar:
            for values in clip_embed.embed_batches(ds, work.camera, clip, preprocess, work.device, start, n,
                                                   work.batch_size):
                pending.append(values)
                bar.update(len(values))
                if sum(map(len, pending)) >= work.save_every or done + sum(map(len, pending)) >= n:
                    segment = np.concatenate(pending)
                    save(done, segment)
                    done, pending = done + len(segment), []
        return list(preprocess.size)


def shard_ranges(start: int, stop: int, batch_size: int, workers: int, save_every: int) -> list[tuple[int, int]]:
    """Frame ranges [a, b) covering [start, stop) in order, each a whole number of batches from `start` (the
    last may end short at `stop`): about SHARDS_PER_WORKER per worker, at most about `save_every` frames each."""
    batches = math.ceil((stop - start) / batch_size)
    per_shard = max(1, min(math.ceil(save_every / batch_size), math.ceil(batches / (SHARDS_PER_WORKER * workers))))
    step = per_shard * batch_size
    return [(first, min(first + step, stop)) for first in range(start, stop, step)]


class ShardEmbedder:
    """One Ray worker: opens the dataset read-only and loads the model once, then embeds the shards it is given.
    Only the resulting embeddings travel back through Ray's object store."""

    def __init__(self, work: EmbedWork) -> None:
        self.work = work
        self.node = ""
        self.ds: Dataset | None = None

    def embed(self, start: int, stop: int) -> tuple[np.ndarray, str, list[int]]:
        """(embeddings float32 [stop - start, E] of frames [start, stop), this worker's node address, the model's
        image size [h, w]). LabelError when this node cannot open the dataset or the model."""
        if self.ds is None:
            import ray

            self._open()
            self.node = ray.util.get_node_ip_address()
        values = list(clip_embed.embed_batches(self.ds, self.work.camera, self.clip, self.preprocess,
                                               self.work.device, start, stop, self.work.batch_size))
        return np.concatenate(values), self.node, list(self.preprocess.size)

    def _open(self) -> None:
        work, place = self.work, f"a Ray worker on {socket.gethostname()}"
        try:
            ds = Dataset.open(work.dataset)
            fingerprint = ds.fingerprint()
        except DatasetError as error:
            raise LabelError(f"{place} cannot open the dataset {work.dataset} ({error}): every Ray worker must see "
                             "the dataset at the same path as this machine (a shared filesystem)") from None
        if fingerprint != work.fingerprint:
            raise LabelError(f"{place} sees other data at {work.dataset} than this machine: give every worker the "
                             "same dataset at the same path (a shared filesystem), or label without --address")
        try:
            self.clip, self.preprocess = clip_embed.load_clip(work.model, work.device)
        except LearnError as error:
            raise LabelError(f"{place}: {error}") from None
        self.ds = ds


class RayEngine:
    """Shards the frames over a Ray cluster: a local one started for the job on 127.0.0.1 (`workers` CPUs, default
    all of this machine's) or the running cluster at `address` (its CPUs, or GPUs for a CUDA device)."""

    name = "ray"

    def __init__(self, address: str = "", workers: int | None = None) -> None:
        self.ray = import_ray()
        self.address, self.workers = address, workers
        if address:
            check_address(address)
        self.info: dict[str, Any] = {"name": self.name, "address": address or "local", "shards": 0}

    def embed(self, ds: Dataset, work: EmbedWork, start: int, save: SaveSegment, progress: bool) -> list[int]:
        """Embed frames [start, n_frames) in shards on Ray and hand them to `save` in frame order; returns the
        model's image size [h, w]."""
        if start >= ds.n_frames:  # every frame was saved by an interrupted job: nothing to shard
            return LocalEngine().embed(ds, work, start, save, progress)
        ray = self.ray
        with self._session():
            resource = "GPU" if torch.device(work.device).type == "cuda" else "CPU"
            available = int(ray.cluster_resources().get(resource, 0))
            if available < 1:
                raise LabelError(f"the Ray cluster at {self.info['address']} has no {resource} for --device "
                                 f"{work.device}: add nodes with one, or choose another --device")
            workers = min(self.workers or available, available)
            work = replace(work, model=absolute_model(work.model))
            if resource == "GPU":
                work = replace(work, device="cuda")  # each worker's own GPU, the one Ray gives it
            shards = shard_ranges(start, ds.n_frames, work.batch_size, workers, work.save_every)
            workers = min(workers, len(shards))
            if self.workers and workers < self.workers:  # say why fewer work than asked, not leave it to guess
                why = (f"the cluster at {self.info['address']} has {available} {resource}s" if self.workers > available
                       else f"the {ds.n_frames - start} frames to embed make {len(shards)} shards")
                print(f"--workers {self.workers}: {workers} used, as {why}", file=sys.stderr, flush=True)
            embedder = ray.remote(num_cpus=1, num_gpus=1 if resource == "GPU" else 0)(ShardEmbedder)
            pool = ray.util.ActorPool([embedder.remote(work) for _ in range(workers)])
            nodes, image_size = set(), []
            results = pool.map(lambda actor, shard: actor.embed.remote(*shard), shards)
            with tqdm(total=len(shards), desc=f"CLIP {work.camera} on {workers} Ray workers", unit="shard",
                      disable=not progress) as bar:
                for first, (values, node, image_size) in self._results(results, shards):
                    save(first, values)
                    nodes.add(node)
                    bar.update(1)
        self.info.update(workers=workers, shards=len(shards), nodes=sorted(nodes))
        return image_size

    def _results(self, results: Iterator, shards: list[tuple[int, int]]) -> Iterator[tuple[int, tuple]]:
        """(first frame, ShardEmbedder.embed's result) of each shard in order; a worker's LabelError, or a worker
        lost, as one LabelError line."""
        exceptions = self.ray.exceptions
        for first, last in shards:
            try:
                yield first, next(results)
            except exceptions.RayTaskError as error:
                if isinstance(error.cause, RobotStackError):
                    raise LabelError(str(error.cause)) from None
                raise
            except exceptions.RayActorError as error:
                raise LabelError(f"a Ray worker was lost while embedding frames {first}..{last} ({type(error).__name__})"
                                 ": run the same command again; it resumes after the shards saved so far") from None

    def _session(self):
        """Ray for the job (robot_stack.cluster.ray_session): this process's, the cluster at --address, or a local one."""
        return ray_session(self.ray, self.address, self.workers, LabelError)


def absolute_model(model: str) -> str:
    """The model string with a local folder's or checkpoint's path made absolute, as a worker whose working
    directory is not this process's must be given it."""
    source = clip_embed.parse_model(model)
    if source.kind == "folder":
        return str(source.path.absolute())
    if source.kind == "checkpoint":
        return f"{source.arch}:{source.path.absolute()}"
    return model


def import_ray() -> Any:
    """The ray module, or a LabelError saying how to install it."""
    return cluster.import_ray(LabelError, "label without --engine ray")


def check_address(address: str) -> None:
    """A reachable Ray cluster address (robot_stack.cluster.check_address), else a one-line LabelError."""
    cluster.check_address(address, LabelError)


def make_engine(name: str, address: str = "", workers: int | None = None) -> LocalEngine | RayEngine:
    """The engine `name` (ENGINES); LabelError for an unknown one, Ray missing, or an address given to "local"."""
    if name not in ENGINES:
        raise LabelError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}")
    if name == "local":
        if address or workers:
            raise LabelError(f"--{'address' if address else 'workers'} goes with --engine ray")
        return LocalEngine()
    return RayEngine(address, workers)
