"""The Judge interface, its query budget and its persistent answer cache.

A judge answers pairs of committed frame indices: int64 [P, 2] -> int8 [P] in {PREFER_FIRST 0, PREFER_SECOND 1,
ABSTAIN -1}. Judge.prefer does the bookkeeping every judge shares, around the judge's own `ask`:

- cache: judges that cost something to ask (`cached = True`: clip, chat, logprob) keep every answer in the
  dataset's labels area, labels/_cache/judge.<key hash>/{first, second, answer}, so no pair is asked twice,
  across runs and processes. The key is the judge, its model, prompt template, decoding settings and the
  image feature (`cache_key`); a pair is identified by both frames' content hashes (frame_hashes), in order.
  Answers are appended after every batch, so a killed job keeps what it asked. One job at a time per cache:
  two jobs appending to the same cache at once may lose each other's last batch (never corrupt an answer).
- budget: at most `budget` pairs are put to the judge per prefer() call series (cache hits are free); once
  spent, the remaining pairs abstain and are counted in stats.over_budget.
- Free judges (time order, oracle) are not cached: answering again costs nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import zarr

from robot_stack.data import Dataset
from robot_stack.data.damage import STORED, stored_frames
from robot_stack.data.store import open_group, writing
from robot_stack.errors import DatasetError, LabelError
from robot_stack.label.base import ABSTAIN, PREFER_FIRST, PREFER_SECOND, LabelContext

CACHE_GROUP = "_cache"
"""labels/_cache: names starting with '_' are hidden from label run listings (Dataset.label_runs)."""
BATCH_PAIRS = 16
"""Pairs asked between two cache writes (what a killed job can lose at most)."""
ANSWERS = (PREFER_FIRST, PREFER_SECOND, ABSTAIN)


@dataclass
class JudgeStats:
    """What a judge did: calls = pairs put to the judge (a chat judge makes two requests per pair),
    cache_hits = pairs answered from the cache, abstentions = pairs answered ABSTAIN (malformed answers,
    unanswerable pairs and over_budget ones included), over_budget = pairs not asked because the budget
    was spent, budget_left = pairs the budget still allows (None: no budget)."""

    calls: int = 0
    cache_hits: int = 0
    abstentions: int = 0
    over_budget: int = 0
    budget_left: int | None = None


class Judge:
    """Base of every judge. Subclasses set `name`, `cached`, `ground_truth` and implement `ask`; cached ones
    also `cache_key`. Constructed with the labeler's options (dict; `budget` = max pairs asked, unset = no limit).
    """

    name = ""
    cached = False  # answers cost something to get: keep them in the dataset's answer cache
    ground_truth = False  # answers come from the recorded sim reward (LabelResult.ground_truth_used)

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        budget = option(config, "budget", int, None)
        if budget is not None and budget < 0:
            raise LabelError(f"budget={budget}: the number of pairs a judge may be asked must be 0 or more")
        self.stats = JudgeStats(budget_left=budget)

    def ask(self, pairs: np.ndarray, context: LabelContext) -> np.ndarray:
        """The judge's own answers to int64 [P, 2] frame pairs: int8 [P] in {0, 1, -1}."""
        raise NotImplementedError

    def cache_key(self, context: LabelContext) -> dict[str, Any]:
        """Everything that decides an answer besides the two frames: model, prompt template, decoding, feature."""
        raise NotImplementedError

    def sample_pairs(self, context: LabelContext, n: int, rng: np.random.Generator) -> np.ndarray:
        """n frame pairs int64 [n, 2] this judge can answer: half within one episode, half across episodes."""
        return sample_pairs(context.dataset, n, rng)

    def prefer(self, pairs: np.ndarray, context: LabelContext) -> np.ndarray:
        """int8 [P] answers to int64 [P, 2] pairs of committed frame indices, through the cache and the budget."""
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        n_frames = context.dataset.n_frames
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= n_frames):
            raise LabelError(f"judge {self.name}: frame pairs must index the {n_frames} committed frames")
        answers = np.full(len(pairs), ABSTAIN, np.int8)
        if self.cached:
            cache = AnswerCache(context.dataset, self.name, self.cache_key(context))
            hashes = frame_hashes(context.dataset, self._feature(context))
            keys = np.stack([hashes[pairs[:, 0]], hashes[pairs[:, 1]]], axis=1)
            known, hit = cache.lookup(keys)
            answers[hit] = known[hit]
            self.stats.cache_hits += int(hit.sum())
            todo = np.flatnonzero(~hit)
        else:
            cache, keys, todo = None, None, np.arange(len(pairs))
        if self.stats.budget_left is not None:
            allowed = min(len(todo), self.stats.budget_left)
            self.stats.over_budget += len(todo) - allowed
            todo = todo[:allowed]
        for start in range(0, len(todo), BATCH_PAIRS if cache is not None else max(1, len(todo))):
            batch = todo[start : start + BATCH_PAIRS] if cache is not None else todo
            got = np.asarray(self.ask(pairs[batch], context), np.int8)
            if got.shape != (len(batch),) or not np.isin(got, ANSWERS).all():
                raise LabelError(f"judge {self.name} gave answers outside 0 / 1 / -1 for {len(batch)} pairs")
            answers[batch] = got
            self.stats.calls += len(batch)
            if self.stats.budget_left is not None:
                self.stats.budget_left -= len(batch)
            if cache is not None:
                cache.append(keys[batch], got)
        self.stats.abstentions += int((answers == ABSTAIN).sum())
        return answers

    def _feature(self, context: LabelContext) -> str:
        if not context.camera:
            raise LabelError(f"judge {self.name} looks at camera frames: choose the camera (--camera image.NAME)")
        return context.camera


def sample_pairs(ds: Dataset, n: int, rng: np.random.Generator, within: float = 0.5) -> np.ndarray:
    """n pairs of distinct committed frames int64 [n, 2]: a `within` share from one episode, the rest from any two."""
    ends = ds.episode_ends
    starts = np.concatenate([[0], ends[:-1]])
    n_within = int(round(n * within))
    lengths = ends - starts
    usable = np.flatnonzero(lengths >= 2)
    if len(usable) == 0 or ds.n_frames < 2:
        raise LabelError(f"{ds.path}: too few committed frames to compare ({ds.n_frames})")
    episode = rng.choice(usable, n_within, p=lengths[usable] / lengths[usable].sum())
    first = starts[episode] + (rng.random(n_within) * lengths[episode]).astype(np.int64)
    shift = 1 + (rng.random(n_within) * (lengths[episode] - 1)).astype(np.int64)  # never the same frame
    second = starts[episode] + (first - starts[episode] + shift) % lengths[episode]
    a = rng.integers(0, ds.n_frames, n - n_within)
    b = (a + rng.integers(1, ds.n_frames, n - n_within)) % ds.n_frames
    return np.concatenate([np.stack([first, second], 1), np.stack([a, b], 1)]).astype(np.int64)


def frame_hashes(ds: Dataset, feature: str) -> np.ndarray:
    """uint64 [n_frames]: a content hash of every committed frame of an image feature, without decoding pixels.

    Image frames are stored one per chunk, zstd-compressed with the content checksum on (the low 32 bits of
    the xxhash64 of the raw pixels, written by the compressor itself); the hash is that checksum in the low
    32 bits and the compressed size in the high 32. It is stable across runs and processes, reads 4 bytes a
    frame, and changes when the pixels do. The feature name is part of the cache key, not of the hash.
    """
    if feature not in ds.features or not ds.features[feature].is_image:
        images = [name for name, spec in ds.features.items() if spec.is_image]
        raise LabelError(f"{ds.path} has no image feature {feature!r}: choose a camera from {images}")
    try:
        nbytes, checksum, state = stored_frames(ds.array(feature), ds.path / "data" / feature, 0, ds.n_frames)
    except DatasetError as error:
        raise LabelError(f"judge answers cannot be cached for {feature!r}: {error}") from None
    if (state != STORED).any():
        bad = np.flatnonzero(state != STORED)
        raise LabelError(f"{ds.path}: frames {bad[:5].tolist()} of {feature} are missing or damaged: run "
                         "`robot-stack data validate` on the dataset")
    return (nbytes.astype(np.uint64) << np.uint64(32)) | checksum.astype(np.uint64)


class AnswerCache:
    """A judge's answers kept in the dataset: labels/_cache/judge.<sha256(key)[:16]>/{first, second, answer}.

    first, second: uint64 [N] the frames' content hashes (frame_hashes), in the order asked; answer: int8 [N].
    The group's attrs hold the key itself (JSON), so a cache says what asked it.
    """

    def __init__(self, ds: Dataset, judge: str, key: dict[str, Any]) -> None:
        self.ds = ds
        self.key = {"judge": judge, **key}
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.name = f"judge.{digest}"
        self.where = f"labels/{CACHE_GROUP}/{self.name}"
        self.known: dict[tuple[int, int], int] = {}
        group = self._group(create=False)
        if group is not None and "answer" in group:
            n = min(group["first"].shape[0], group["second"].shape[0], group["answer"].shape[0])  # a cut-off append
            for a, b, answer in zip(group["first"][:n], group["second"][:n], group["answer"][:n], strict=True):
                self.known[(int(a), int(b))] = int(answer)

    def _group(self, create: bool) -> zarr.Group | None:
        root = open_group(self.ds.path, writable=create)
        if not create:
            try:
                return root[self.where]
            except KeyError:
                return None
        group = root.require_group("labels").require_group(CACHE_GROUP).require_group(self.name)
        if "answer" not in group:
            group.update_attributes({"key": self.key})
            for name, dtype in (("first", "uint64"), ("second", "uint64"), ("answer", "int8")):
                group.create_array(name, shape=(0,), dtype=dtype, chunks=(4096,), fill_value=0)
        return group

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(answers int8 [P], hit bool [P]) for uint64 [P, 2] frame-hash pairs."""
        answers = np.full(len(keys), ABSTAIN, np.int8)
        hit = np.zeros(len(keys), bool)
        for i, (a, b) in enumerate(keys):
            answer = self.known.get((int(a), int(b)))
            if answer is not None:
                answers[i], hit[i] = answer, True
        return answers, hit

    def append(self, keys: np.ndarray, answers: np.ndarray) -> None:
        """Store answers int8 [P] to uint64 [P, 2] frame-hash pairs (answer last: a cut-off write loses only them)."""
        with writing(self.ds.path, f"the {self.key['judge']} judge's answers ({self.where})"):
            group = self._group(create=True)
            group["first"].append(keys[:, 0].astype(np.uint64))
            group["second"].append(keys[:, 1].astype(np.uint64))
            group["answer"].append(np.asarray(answers, np.int8))
        for (a, b), answer in zip(keys, answers, strict=True):
            self.known[(int(a), int(b))] = int(answer)


def option(config: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """config[key] as `kind` (int, float, str, bool; strings from --set KEY=VALUE are converted), or default."""
    value = config.get(key, default)
    if value is None or isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is bool:
            text = str(value).strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text in ("true", "1", "yes")
        return kind(value)
    except (TypeError, ValueError):
        raise LabelError(f"option {key}={value!r} must be {kind.__name__ if kind is not bool else 'true or false'}") \
            from None


def build_judge(name: str, config: dict[str, Any]) -> Judge:
    """The judge named `name` (robot_stack.label.judges.JUDGES), constructed with the labeler's options."""
    from robot_stack.label.judges import JUDGES

    if name not in JUDGES:
        raise LabelError(f"unknown judge {name!r}: choose one of {sorted(JUDGES)} (judge=NAME, or mix=time+NAME)")
    module, _, cls = JUDGES[name].partition(":")
    return getattr(importlib.import_module(module), cls)(config)


def stats_dict(judge: Judge) -> dict[str, Any]:
    """A judge's stats as JSON-able facts."""
    return asdict(judge.stats)
