"""CLIP embeddings cached beside the data, and the store's label arrays they live in.

The CLIP models are tiny open_clip models these tests build (random weights saved to tmp files): nothing
is downloaded. Datasets are real Zarr stores on disk written by DatasetWriter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from conftest import TINY_CLIP
from conftest import TINY_CLIP_ARCH as ARCH
from PIL import Image
from torch.nn import functional as F

from robot_stack.data import Dataset, DatasetWriter, FeatureSpec, validate
from robot_stack.errors import DatasetError, LearnError
from robot_stack.learn import clip_embed
from robot_stack.learn.clip_embed import (
    BatchPreprocess,
    cache_run,
    clip_embeddings,
    load_clip,
)

FRONT, WRIST = (40, 48, 3), (32, 32, 3)  # the front camera needs resizing and cropping, the wrist one does not
FEATURES = [
    FeatureSpec("image.front", "uint8", FRONT, "image", topic="/camera/front/image_raw"),
    FeatureSpec("image.wrist", "uint8", WRIST, "image", topic="/camera/wrist/image_raw"),
    FeatureSpec("joint_position", "float32", (3,), "state", units="rad"),
    FeatureSpec("action", "float32", (2,), "action"),
]


def smooth_images(rng: np.random.Generator, n: int, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 [n, H, W, C] camera-like images (smooth random fields), different for every frame."""
    fields = np.cumsum(np.cumsum(rng.normal(size=(n, *shape)), axis=1), axis=2)
    return np.clip(fields * 4 + 128, 0, 255).astype(np.uint8)


def episode(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image.front": smooth_images(rng, n, FRONT), "image.wrist": smooth_images(rng, n, WRIST),
            "joint_position": rng.normal(size=(n, 3)).astype(np.float32), "action": np.zeros((n, 2), np.float32),
            "timestamp": seed * 10 + np.arange(n) / 10}


def make_dataset(path: Path, lengths: list[int]) -> Path:
    writer = DatasetWriter.create(path, robot={"name": "arm"}, record_hz=10, features=FEATURES)
    for seed, n in enumerate(lengths):
        writer.append_frames(episode(seed, n))
        writer.commit_episode("reach", True)
    writer.close()
    return path


def reference_embedding(model: str, frame: np.ndarray) -> np.ndarray:
    """The embedding open_clip's own PIL pipeline gives one frame: float32 [E], unit norm."""
    arch, _, checkpoint = model.partition(":")
    clip, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=checkpoint)
    with torch.no_grad():
        return F.normalize(clip.eval().encode_image(preprocess(Image.fromarray(frame))[None]), dim=-1)[0].numpy()


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "d.zarr", [5, 6])


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The model strings load_clip is called with during a test (a model load means the cache missed)."""
    calls: list[str] = []
    real = clip_embed.load_clip

    def counting(model, device="cpu"):
        calls.append(model)
        return real(model, device)

    monkeypatch.setattr(clip_embed, "load_clip", counting)
    return calls


# ---- embeddings


def test_embeddings_are_unit_norm_and_equal_the_model_run_on_each_frame(dataset, tiny_clip):
    model = tiny_clip["checkpoint0"]
    ds = Dataset.open(dataset)
    for feature, atol in (("image.wrist", 1e-5), ("image.front", 2e-3)):  # front: tensor vs PIL resize
        emb = clip_embeddings(ds, feature, model, batch_size=4, progress=False)  # 11 frames: 3 batches, the last short
        assert emb.shape == (11, 16) and emb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        frames = ds.frames(feature)
        for i in (0, 4, 5, 10):
            np.testing.assert_allclose(emb[i], reference_embedding(model, frames[i]), atol=atol, err_msg=f"{feature} {i}")
        assert np.abs(emb[0] - emb[1]).max() > 1e-3  # frames differ, so do their embeddings


def test_embeddings_are_cached_in_the_labels_area_and_read_back_without_the_model(dataset, tiny_clip, loads):
    model = tiny_clip["checkpoint0"]
    first = clip_embeddings(Dataset.open(dataset), "image.front", model, progress=False)
    assert loads == [model]
    ds = Dataset.open(dataset)
    run = cache_run("image.front", model)
    assert run.startswith("clip_embed.image.front.robot-stack-test-tiny-clip_") and ds.label_arrays() == {run: ["embedding"]}
    values, attrs = ds.read_label_array(run, "embedding")
    np.testing.assert_array_equal(values, first)
    assert attrs["model"] == model and attrs["feature"] == "image.front" and attrs["embed_dim"] == 16
    assert attrs["dataset_fingerprint"] == ds.fingerprint() and attrs["n_frames"] == 11
    second = clip_embeddings(ds, "image.front", model, progress=False)
    assert loads == [model], "a cache hit must not load the model"
    np.testing.assert_array_equal(second, first)
    assert Dataset.open(dataset).label_array_attrs(run, "embedding")["created"] == attrs["created"]
    # The cache is beside the data: no reward run, the data's fingerprint unchanged, the dataset valid.
    assert ds.label_runs() == [] and validate(dataset, progress=False) == []
    assert "label arrays" in ds.describe()


def test_a_stale_cache_is_recomputed_after_the_dataset_gains_an_episode(dataset, tiny_clip, loads):
    model = tiny_clip["checkpoint0"]
    before = clip_embeddings(Dataset.open(dataset), "image.wrist", model, progress=False)
    writer = DatasetWriter.open(dataset)
    writer.append_frames(episode(7, 4))
    writer.commit_episode("reach", False)
    writer.close()
    ds = Dataset.open(dataset)
    after = clip_embeddings(ds, "image.wrist", model, progress=False)
    assert loads == [model, model] and after.shape == (15, 16)
    np.testing.assert_allclose(after[:11], before, atol=1e-6)
    np.testing.assert_allclose(after[13], reference_embedding(model, ds.frames("image.wrist")[13]), atol=1e-5)
    assert ds.label_array_attrs(cache_run("image.wrist", model), "embedding")["dataset_fingerprint"] == ds.fingerprint()
    clip_embeddings(ds, "image.wrist", model, progress=False)
    assert len(loads) == 2


def test_the_cache_is_keyed_by_feature_model_and_weights(dataset, tiny_clip, loads):
    ds = Dataset.open(dataset)
    zero, one = tiny_clip["checkpoint0"], tiny_clip["checkpoint1"]
    front0 = clip_embeddings(ds, "image.front", zero, progress=False)
    wrist0 = clip_embeddings(ds, "image.wrist", zero, progress=False)
    front1 = clip_embeddings(ds, "image.front", one, progress=False)
    assert len(set(Dataset.open(dataset).label_arrays())) == 3 and len(loads) == 3
    assert np.abs(front0 - wrist0).max() > 1e-3 and np.abs(front0 - front1).max() > 1e-3
    # The same weights from a model folder: its own cache, the same embeddings.
    np.testing.assert_allclose(clip_embeddings(ds, "image.front", tiny_clip["folder0"], progress=False), front0, atol=1e-6)
    # New weights at the same checkpoint path make that cache stale.
    path = Path(one.partition(":")[2])
    saved = path.read_bytes()
    try:
        path.write_bytes((path.parent / "tiny0.pt").read_bytes())
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        np.testing.assert_allclose(clip_embeddings(ds, "image.front", one, progress=False), front0, atol=1e-6)
        assert len(loads) == 5
    finally:
        path.write_bytes(saved)


def test_load_clip_gives_the_model_and_a_batched_preprocess(tiny_clip):
    clip, preprocess = load_clip(tiny_clip["checkpoint0"], "cpu")
    assert not clip.training and not any(p.requires_grad for p in clip.parameters())
    images = torch.from_numpy(smooth_images(np.random.default_rng(0), 3, FRONT))
    assert preprocess(images).shape == (3, 3, 32, 32) and preprocess(images).dtype == torch.float32


@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_batch_preprocess_matches_open_clips_pil_transform(resize_mode):
    cfg = {"size": 32, "mean": (0.48, 0.46, 0.41), "std": (0.27, 0.26, 0.28), "interpolation": "bicubic",
           "resize_mode": resize_mode, "fill_color": 0}
    pil = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    frames = smooth_images(np.random.default_rng(1), 2, FRONT)
    ours = BatchPreprocess(cfg)(torch.from_numpy(frames))
    for frame, out in zip(frames, ours):
        # Antialiased resizing of uint8 tensors lands within a grey level or two of PIL's (1 level = 0.015 here).
        torch.testing.assert_close(out, pil(Image.fromarray(frame)), rtol=0, atol=0.035)


def test_clip_embeddings_errors_say_what_to_do(dataset, tiny_clip, tmp_path):
    ds = Dataset.open(dataset)
    model = tiny_clip["checkpoint0"]
    with pytest.raises(LearnError, match=r"has no feature 'image.side'.*\['image.front', 'image.wrist'\]"):
        clip_embeddings(ds, "image.side", model, progress=False)
    with pytest.raises(LearnError, match="'joint_position'.*not an image"):
        clip_embeddings(ds, "joint_position", model, progress=False)
    with pytest.raises(LearnError, match="no checkpoint file at"):
        clip_embeddings(ds, "image.front", f"{ARCH}:{tmp_path / 'missing.pt'}", progress=False)
    with pytest.raises(LearnError, match="'NoSuchArch' is not an open_clip architecture"):
        load_clip(f"NoSuchArch:{model.partition(':')[2]}")
    with pytest.raises(LearnError, match="no pretrained tag 'not-a-tag'"):
        load_clip("ViT-B-32/not-a-tag")  # refused before any download
    with pytest.raises(LearnError, match="does not exist"):
        load_clip(str(tmp_path / "no_such_folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LearnError, match="has no open_clip_config.json"):
        load_clip(str(tmp_path / "empty"))
    (tmp_path / "empty" / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    with pytest.raises(LearnError, match="has no weights"):
        load_clip(str(tmp_path / "empty"))
    with pytest.raises(LearnError, match="names no weights"):
        load_clip(ARCH)
    other = {**TINY_CLIP, "embed_dim": 8}
    (tmp_path / f"{ARCH}-8.json").write_text(json.dumps(other))
    open_clip.add_model_config(tmp_path / f"{ARCH}-8.json")
    with pytest.raises(LearnError, match=f"(?s)cannot be loaded .*size mismatch.*do the weights fit {ARCH}-8"):
        load_clip(f"{ARCH}-8:{model.partition(':')[2]}")
    assert Dataset.open(dataset).label_arrays() == {}  # failures cache nothing


# ---- label arrays in the store


def test_label_arrays_round_trip_with_provenance_beside_the_data(dataset):
    ds = Dataset.open(dataset)
    fingerprint = ds.fingerprint()
    values = np.arange(11 * 4, dtype=np.float32).reshape(11, 4)
    ds.write_label_array("features_v1", "values", values, {"producer": "test", "config": {"k": 1}})
    ds.write_label_array("features_v1", "cluster", np.arange(11) % 3, {"producer": "test"})
    ds = Dataset.open(dataset)
    read, attrs = ds.read_label_array("features_v1", "values")
    np.testing.assert_array_equal(read, values)
    assert read.dtype == np.float32 and attrs["producer"] == "test" and attrs["config"] == {"k": 1}
    assert attrs["dataset_fingerprint"] == fingerprint and attrs["n_frames"] == 11 and attrs["n_episodes"] == 2
    assert "created" in attrs
    np.testing.assert_array_equal(ds.read_label_array("features_v1", "cluster")[0], np.arange(11) % 3)
    assert ds.label_arrays() == {"features_v1": ["cluster", "values"]} and ds.label_runs() == []
    assert ds.fingerprint() == fingerprint and validate(dataset, progress=False) == []
    # overwrite replaces one array of the run and leaves the others.
    ds.write_label_array("features_v1", "values", -values, {"producer": "test"}, overwrite=True)
    np.testing.assert_array_equal(Dataset.open(dataset).read_label_array("features_v1", "values")[0], -values)
    np.testing.assert_array_equal(Dataset.open(dataset).read_label_array("features_v1", "cluster")[0], np.arange(11) % 3)


def test_label_arrays_and_reward_runs_stay_apart(dataset):
    ds = Dataset.open(dataset)
    ds.write_labels("reward_v1", np.linspace(0, 1, 11), {"labeler": "test"})
    ds.write_label_array("emb", "embedding", np.zeros((11, 2), np.float32), {})
    ds = Dataset.open(dataset)
    assert ds.label_runs() == ["reward_v1"] and ds.label_arrays() == {"emb": ["embedding"]}
    with pytest.raises(DatasetError, match=r"'emb' .* holds per-frame arrays \['embedding'\], not rewards: read them with read_label_array"):
        ds.read_labels("emb")
    with pytest.raises(DatasetError, match="'reward_v1' .* holds rewards, not arrays: read it with read_labels"):
        ds.read_label_array("reward_v1", "reward")
    with pytest.raises(DatasetError, match="has a reward label run 'reward_v1'"):
        ds.write_label_array("reward_v1", "embedding", np.zeros((11, 2), np.float32), {})
    with pytest.raises(DatasetError, match="already has label run 'emb'"):
        ds.write_labels("emb", np.zeros(11), {"labeler": "test"})
    assert validate(dataset, progress=False) == []


def test_label_array_errors_say_what_to_do(dataset):
    ds = Dataset.open(dataset)
    good = np.zeros((11, 3), np.float32)
    with pytest.raises(DatasetError, match=r"one row per committed frame .* shape \(11, \.\.\.\), got \(10, 3\)"):
        ds.write_label_array("run", "x", good[:-1], {})
    with pytest.raises(DatasetError, match=r"non-finite values at frames \[4\]"):
        ds.write_label_array("run", "x", np.where(np.arange(11)[:, None] == 4, np.nan, good), {})
    with pytest.raises(DatasetError, match="'reward' is reserved"):
        ds.write_label_array("run", "reward", good, {})
    with pytest.raises(DatasetError, match="not usable as a folder name"):
        ds.write_label_array("run", "a/b", good, {})
    with pytest.raises(DatasetError, match="no label run 'run'"):
        ds.read_label_array("run", "x")
    ds.write_label_array("run", "x", good, {})
    with pytest.raises(DatasetError, match="already has array 'x': choose a new name or pass overwrite=True"):
        ds.write_label_array("run", "x", good, {})
    with pytest.raises(DatasetError, match=r"has no array 'y' \(it has \['x'\]\)"):
        ds.read_label_array("run", "y")


def test_an_interrupted_label_array_write_is_detected(dataset):
    import zarr

    ds = Dataset.open(dataset)
    ds.write_label_array("run", "x", np.ones((11, 2), np.float32), {})
    # What a kill before the last write (the attributes) leaves: the values without provenance.
    zarr.open_array(zarr.storage.LocalStore(dataset / "labels" / "run" / "x"), mode="r+").attrs.clear()
    with pytest.raises(DatasetError, match="incomplete .* write it again with overwrite=True"):
        Dataset.open(dataset).read_label_array("run", "x")
    assert any("labels/run/x" in problem and "incomplete" in problem for problem in validate(dataset, progress=False))


def test_embeddings_made_on_cuda_are_named_fp16_and_kept_apart_from_the_cpu_cache():
    # fp16 autocast on CUDA gives other numbers than fp32 on the CPU: a cache must say which it holds.
    assert clip_embed.method("cpu") == clip_embed.METHOD
    assert clip_embed.method("cuda") != clip_embed.METHOD and "fp16" in clip_embed.method("cuda:0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")
def test_fp16_embeddings_on_cuda_match_the_fp32_cpu_ones_and_are_cached_apart(dataset, tiny_clip):
    ds = Dataset.open(dataset)
    model = tiny_clip["checkpoint0"]
    cpu = clip_embeddings(ds, "image.front", model, device="cpu", progress=False)
    cuda = clip_embeddings(Dataset.open(dataset), "image.front", model, device="cuda", progress=False)
    assert cuda.dtype == np.float32 and float((cpu * cuda).sum(axis=1).min()) > 0.999
    attrs = Dataset.open(dataset).label_array_attrs(clip_embed.cache_run("image.front", model), clip_embed.EMBEDDING)
    assert attrs["method"] == clip_embed.CUDA_METHOD  # the CUDA run replaced the CPU cache and says so
