"""What every labeler and judge shares: the context a labeler runs in, what it returns, and the
preference answer convention.

A labeler turns the committed frames of a dataset and a task sentence into one raw score per frame
(`LabelResult.scores`); the job (robot_stack.label.job) calibrates those scores with one affine map fitted
over the whole dataset and writes labels/<run>/reward with provenance. Labelers never normalise per episode.

Preferences (RL-VLM-F's convention, kept everywhere in robot_stack.label):
    PREFER_FIRST = 0   the first frame of the pair is closer to achieving the task
    PREFER_SECOND = 1  the second frame is
    ABSTAIN = -1       the judge cannot tell (or its answer was malformed)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from robot_stack.data import Dataset

PREFER_FIRST = 0
PREFER_SECOND = 1
ABSTAIN = -1


@dataclass
class LabelContext:
    """Everything a labeler may use.

    dataset: the dataset (read-only; committed frames only); task: the task sentence; camera: the image
    feature (e.g. "image.agentview"), or None for a labeler that needs no image; model: the open_clip model
    string (robot_stack.learn.clip_embed.MODEL_FORMS), "" when none is given; embeddings: L2-normalised
    image embeddings float32 [n_frames, E] of `camera` by `model` (computed and cached by the job when the
    labeler asks for them), else None; config: the labeler's own options (from --set KEY=VALUE), JSON-able;
    seed: for every random choice; device: torch device string; progress: show progress bars; log: one line
    of human-readable progress (stderr).
    """

    dataset: Dataset
    task: str
    camera: str | None = None
    model: str = ""
    embeddings: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    log: Callable[[str], None] = print


@dataclass
class SavedModel:
    """A labeler's fitted model, kept with its run so it can score episodes recorded later
    (robot_stack.label.apply): state: torch.save bytes of a state dict (tensors only: loads with
    weights_only=True); attrs: JSON-able, everything needed to rebuild the module and feed it (architecture,
    input, window)."""

    state: bytes
    attrs: dict[str, Any]


@dataclass
class LabelResult:
    """A labeler's output: scores float32 [n_frames] (raw, one per committed frame, finite), and provenance.

    info: JSON-able facts for the run's attributes (prompts, config actually used, judge statistics such as
    calls, cache_hits, abstentions, budget); ground_truth_used: True when any part came from the recorded sim
    reward or success (the oracle judge): `label list` and the run's provenance say so; model: the model that
    gave `scores`, when it can score new episodes the same way (None: the labeler keeps none).
    """

    scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    ground_truth_used: bool = False
    model: SavedModel | None = None


class Labeler(Protocol):
    """A labeler class: constructed with no arguments, registered in robot_stack.label.labelers.LABELERS."""

    name: str
    needs_images: bool  # the job refuses a dataset without image features (or without --camera) at once
    needs_embeddings: bool  # the job fills LabelContext.embeddings (cached in the dataset's labels area)

    def label(self, context: LabelContext) -> LabelResult: ...

    # Optional: @classmethod requirements(cls, config) -> (needs_images, needs_embeddings) for these options,
    # where they change what the labeler needs (progress on pixels needs no CLIP model); the job asks it first.
