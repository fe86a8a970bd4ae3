"""The observation encoder: DrQ random shifts, per-camera CNN features, the state-only identity, torch.compile.

CPU only; the images of one test come from a real dataset on disk (DatasetWriter, tmp_path).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from robot_stack.data import Dataset, DatasetWriter, FeatureSpec
from robot_stack.errors import LearnError
from robot_stack.learn.encoders import ObservationEncoder, random_shift


def numbered_images(batch: int, channels: int = 2, height: int = 9, width: int = 11) -> torch.Tensor:
    """float [B, C, H, W] where every pixel of every image holds a different value."""
    return torch.arange(batch * channels * height * width, dtype=torch.float32).reshape(batch, channels, height, width)


def shifts_of(shifted: torch.Tensor, original: torch.Tensor, pad: int) -> torch.Tensor:
    """bool [B, 2 * pad + 1, 2 * pad + 1]: [b, dy + pad, dx + pad] says shifted[b] is original[b] moved by
    (dy, dx) px (down, right) with the border replicated."""
    height, width = original.shape[-2:]
    padded = F.pad(original, (pad, pad, pad, pad), mode="replicate")
    return torch.stack([
        torch.stack([(shifted == padded[..., pad - dy : pad - dy + height, pad - dx : pad - dx + width]).flatten(1).all(1)
                     for dx in range(-pad, pad + 1)], dim=1)
        for dy in range(-pad, pad + 1)], dim=1)


def observation(batch: int, state_dim: int, image_shapes: dict[str, tuple[int, int, int]], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    obs = {"state": torch.randn(batch, state_dim, generator=generator)}
    for name, shape in image_shapes.items():
        obs[name] = torch.randint(0, 256, (batch, *shape), generator=generator, dtype=torch.uint8)
    return obs


# ---- random shift


def test_random_shift_with_pad_zero_is_the_identity():
    images = numbered_images(3)
    assert random_shift(images, 0) is images


def test_random_shift_translates_each_image_by_whole_pixels_within_pad():
    pad, images = 4, numbered_images(256)
    shifted = random_shift(images, pad, generator=torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape and shifted.dtype == images.dtype
    matches = shifts_of(shifted, images, pad)
    assert (matches.flatten(1).sum(1) == 1).all(), "each output must be exactly one integer translation of its input"
    # Per-sample shifts that reach every offset in [-pad, pad] on both axes (and nothing beyond, checked above).
    assert matches.any(dim=2).any(dim=0).all() and matches.any(dim=1).any(dim=0).all()


def test_random_shift_is_deterministic_given_a_generator_or_the_global_seed():
    images = numbered_images(16)
    first = random_shift(images, 3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, random_shift(images, 3, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(first, random_shift(images, 3, generator=torch.Generator().manual_seed(8)))
    torch.manual_seed(3)
    a = random_shift(images, 3)
    torch.manual_seed(3)
    assert torch.equal(a, random_shift(images, 3))


# ---- encoder


SHAPES = {"image.front": (16, 20, 3), "image.wrist": (18, 18, 3)}


def test_encoder_concatenates_the_state_and_one_feature_vector_per_camera():
    torch.manual_seed(0)
    encoder = ObservationEncoder(5, SHAPES, feature_dim=8)
    obs = observation(4, 5, SHAPES)
    out = encoder(obs)
    assert encoder.out_dim == 5 + 2 * 8 and out.shape == (4, encoder.out_dim) and out.dtype == torch.float32
    assert torch.equal(out[:, :5], obs["state"])
    assert out[:, 5:].abs().max() <= 1.0  # tanh features
    # Camera order follows image_shapes: the wrist features depend only on the wrist images.
    other = dict(obs, **{"image.front": torch.zeros_like(obs["image.front"])})
    changed = encoder(other)
    assert torch.equal(changed[:, 13:], out[:, 13:]) and not torch.allclose(changed[:, 5:13], out[:, 5:13])


def test_encoder_gradients_reach_every_cnn_parameter():
    torch.manual_seed(0)
    encoder = ObservationEncoder(3, SHAPES, feature_dim=8)
    out = encoder(observation(4, 3, SHAPES), augment=True)
    ((out - 0.3) ** 2).sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_augment_changes_the_output_and_without_it_the_encoder_is_deterministic():
    torch.manual_seed(0)
    encoder = ObservationEncoder(3, SHAPES, feature_dim=8, augment_pad=4)
    obs = observation(8, 3, SHAPES)
    plain = encoder(obs)
    torch.manual_seed(123)  # the RNG state must not matter without augmentation
    assert torch.equal(encoder(obs), plain)
    augmented = encoder(obs, augment=True)
    assert not torch.allclose(augmented[:, 3:], plain[:, 3:])
    assert torch.equal(augmented[:, :3], plain[:, :3])  # the state is never augmented
    torch.manual_seed(5)
    a = encoder(obs, augment=True)
    torch.manual_seed(5)
    assert torch.equal(a, encoder(obs, augment=True))
    unpadded = ObservationEncoder(3, SHAPES, feature_dim=8, augment_pad=0)
    assert torch.equal(unpadded(obs, augment=True), unpadded(obs))


def test_encoder_without_images_returns_the_state_itself():
    encoder = ObservationEncoder(6, {})
    state = torch.randn(5, 6)
    assert encoder({"state": state}) is state and encoder({"state": state}, augment=True) is state
    assert encoder.out_dim == 6 and list(encoder.parameters()) == []


def test_encoder_of_images_only_has_no_state_columns():
    torch.manual_seed(0)
    encoder = ObservationEncoder(0, {"image.front": (16, 16, 3)}, feature_dim=4)
    obs = observation(2, 0, {"image.front": (16, 16, 3)})
    assert encoder(obs).shape == (2, 4) == (2, encoder.out_dim)


def test_encoder_refuses_images_too_small_for_its_convolutions_and_an_empty_observation():
    with pytest.raises(LearnError, match=r"image 'image.front' has shape \(8, 8, 3\).*at least 15 px"):
        ObservationEncoder(3, {"image.front": (8, 8, 3)})
    with pytest.raises(LearnError, match="nothing to encode"):
        ObservationEncoder(0, {})


def test_encoder_encodes_frames_read_from_a_dataset(tmp_path):
    image = FeatureSpec("image.front", "uint8", (24, 32, 3), "image", topic="/camera/front/image_raw")
    state = FeatureSpec("joint_position", "float32", (4,), "state", units="rad")
    action = FeatureSpec("action", "float32", (2,), "action")
    writer = DatasetWriter.create(tmp_path / "d.zarr", robot={"name": "arm"}, record_hz=10, features=[image, state, action])
    rng = np.random.default_rng(0)
    writer.append_frames({"image.front": rng.integers(0, 256, (6, 24, 32, 3), dtype=np.uint8),
                          "joint_position": rng.normal(size=(6, 4)).astype(np.float32),
                          "action": np.zeros((6, 2), np.float32), "timestamp": np.arange(6) / 10})
    writer.commit_episode("reach", True)
    writer.close()
    ds = Dataset.open(tmp_path / "d.zarr")
    encoder = ObservationEncoder(4, {"image.front": ds.features["image.front"].shape}, feature_dim=8)
    obs = {"state": torch.from_numpy(ds.frames("joint_position")), "image.front": torch.from_numpy(ds.frames("image.front"))}
    out = encoder(obs, augment=True)
    assert out.shape == (6, 12) and torch.isfinite(out).all()
    # Different frames give different features.
    assert torch.cdist(out[:, 4:], out[:, 4:]).fill_diagonal_(1.0).min() > 1e-3


def test_compiled_encoder_matches_eager():
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile (dynamo) is not supported on this Python/platform")
    torch.manual_seed(0)
    shapes = {"image.front": (16, 16, 3)}
    encoder = ObservationEncoder(3, shapes, feature_dim=8)
    obs = observation(4, 3, shapes)
    # aot_eager traces the whole forward (fullgraph: no graph breaks, no data-dependent Python control flow)
    # through dynamo and AOTAutograd without the minutes of C++ codegen inductor costs on a CPU.
    compiled = torch.compile(encoder, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(obs), encoder(obs), rtol=0, atol=1e-6)
    torch.manual_seed(9)
    augmented = compiled(obs, augment=True)
    torch.manual_seed(9)
    torch.testing.assert_close(augmented, encoder(obs, augment=True), rtol=0, atol=1e-6)
