"""Observation encoder: the normalized state vector plus one small CNN per camera, with DrQ random shifts.

Images arrive as the dataset stores them (uint8 [B, H, W, C], rgb8); the encoder scales them to [-0.5, 0.5],
optionally shifts them by a few pixels (DrQ, Kostrikov et al. 2020 / Yarats et al. 2021) and encodes each
camera to `feature_dim` features in [-1, 1]. No data-dependent Python control flow, so it runs under
torch.compile; everything works on the CPU too.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from robot_stack.errors import LearnError

CONV_CHANNELS = 32
CONV_STRIDES = (2, 1, 1, 1)  # 3x3 kernels, no padding: an image needs at least MIN_IMAGE_PX px a side
MIN_IMAGE_PX = 15


def random_shift(images: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """Each image translated by its own random whole-pixel shift in [-pad, pad] along each axis (DrQ).

    images: float [B, C, H, W]; pad: the largest shift in pixels. The image is padded by replicating its
    border `pad` px on every side, then a window of the original size is cut out at a random offset, so
    content moves by up to `pad` px and the uncovered edge repeats the border. pad=0 returns `images`.
    The offsets come from `generator` (on the images' device) or the global torch RNG. Returns the same
    shape and dtype; an exact copy of shifted pixels (index gathers, no interpolation).
    """
    if pad == 0:
        return images
    batch, channels, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    # Offsets in [0, 2 * pad] of the window's top-left corner: 0 shifts content down/right by pad.
    offset = torch.randint(0, 2 * pad + 1, (batch, 2), device=images.device, generator=generator)
    rows = offset[:, 0:1] + torch.arange(height, device=images.device)  # [B, H]
    cols = offset[:, 1:2] + torch.arange(width, device=images.device)  # [B, W]
    padded = padded.gather(2, rows[:, None, :, None].expand(batch, channels, height, width + 2 * pad))
    return padded.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))


class ImageEncoder(nn.Module):
    """One camera: float [B, C, H, W] in [-0.5, 0.5] -> features [B, feature_dim] in [-1, 1].

    4 conv layers 3x3 with CONV_CHANNELS channels (strides CONV_STRIDES, ReLU), flatten, Linear, LayerNorm,
    tanh (the DrQ-v2 encoder and its trunk). The flattened size comes from a dummy forward at init.
    """

    def __init__(self, channels: int, height: int, width: int, feature_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = channels
        for stride in CONV_STRIDES:
            layers += [nn.Conv2d(in_channels, CONV_CHANNELS, 3, stride=stride), nn.ReLU()]
            in_channels = CONV_CHANNELS
        self.conv = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, channels, height, width)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.conv(images))


class ObservationEncoder(nn.Module):
    """obs {"state": float [B, state_dim], "<image name>": uint8 [B, H, W, C]} -> float [B, out_dim].

    out_dim = state_dim + len(image_shapes) * feature_dim: the state unchanged, then each camera's features
    in the order of `image_shapes` (name -> (H, W, C) in pixels). With no images, forward returns
    obs["state"] itself and the module has no parameters. augment=True applies random_shift with
    `augment_pad` px (global torch RNG) to every image, each sample its own shift: use it for training
    batches, never for acting. state_dim may be 0 when images are the whole observation.
    """

    def __init__(self, state_dim: int, image_shapes: dict[str, tuple[int, int, int]], feature_dim: int = 64,
                 augment_pad: int = 4) -> None:
        super().__init__()
        if state_dim < 0 or (state_dim == 0 and not image_shapes):
            raise LearnError(f"observation encoder: nothing to encode (state_dim {state_dim}, no images): "
                             "choose at least one state or image feature")
        if feature_dim < 1 or augment_pad < 0:
            raise LearnError(f"observation encoder: feature_dim must be >= 1 and augment_pad >= 0 px, got "
                             f"{feature_dim} and {augment_pad}")
        for name, shape in image_shapes.items():
            if len(shape) != 3 or min(shape[:2]) < MIN_IMAGE_PX:
                raise LearnError(f"observation encoder: image {name!r} has shape {tuple(shape)}; it must be (H, W, C) "
                                 f"with H and W at least {MIN_IMAGE_PX} px (resize the camera images when recording)")
        self.state_dim = int(state_dim)
        self.image_names = list(image_shapes)
        self.feature_dim = int(feature_dim)
        self.augment_pad = int(augment_pad)
        self.out_dim = self.state_dim + len(self.image_names) * self.feature_dim
        # A list, not a ModuleDict: image feature names contain dots ("image.front").
        self.cameras = nn.ModuleList(ImageEncoder(c, h, w, self.feature_dim) for h, w, c in image_shapes.values())

    def forward(self, obs: dict[str, Tensor], augment: bool = False) -> Tensor:
        if not self.image_names:
            return obs["state"]
        parts = [obs["state"]] if self.state_dim else []
        for name, camera in zip(self.image_names, self.cameras):
            images = obs[name].permute(0, 3, 1, 2).float() / 255.0 - 0.5
            if augment:
                images = random_shift(images, self.augment_pad)
            parts.append(camera(images))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
