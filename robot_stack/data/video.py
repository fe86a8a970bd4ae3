"""An MP4 of one camera feature of one episode (`robot-stack data export-video`), encoded with PyAV.

H.264 (libx264, yuv420p, crf 18) when the installed FFmpeg has it, which PyPI's PyAV wheels do;
otherwise MPEG-4 part 2, said so in the result. Odd frame sizes are padded by one edge pixel
(yuv420p needs even sizes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from robot_stack.data.dataset import Dataset, camera_feature
from robot_stack.data.report import episode_index
from robot_stack.data.view import default_output
from robot_stack.errors import DatasetError

READ_BLOCK_FRAMES = 64
H264 = "libx264"
FALLBACK = "mpeg4"


@dataclass(frozen=True)
class VideoResult:
    path: Path
    camera: str
    frames: int
    fps: float
    codec: str  # the encoder used: libx264, or mpeg4 when H.264 is not available
    size: tuple[int, int]  # width, height of the video (even)


def h264_available() -> bool:
    import av

    return H264 in av.codecs_available


def export_video(ds: Dataset, episode: int, camera: str | None = None, out: str | os.PathLike | None = None,
                 fps: float | None = None, progress: bool = True) -> VideoResult:
    """Encode every frame of `camera` in `episode` at `fps` (default: record_hz) into an MP4."""
    try:
        import av
    except ImportError:
        raise DatasetError("exporting video needs PyAV: pip install av") from None
    episode = episode_index(ds, episode)
    camera = camera_feature(ds, camera)
    fps = float(fps or ds.record_hz)
    if not fps > 0:
        raise DatasetError(f"fps must be positive, got {fps}")
    out = Path(out) if out else default_output(ds, episode, f"_{camera}.mp4")
    frames = ds.episode(episode)[camera]
    height, width = frames.shape[1:3]
    size = (width + width % 2, height + height % 2)
    codec = H264 if H264 in av.codecs_available else FALLBACK
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        container = av.open(str(out), mode="w")
    except (OSError, av.error.FFmpegError) as error:
        raise DatasetError(f"cannot write {out}: {error}") from None
    with container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == H264:
            stream.options = {"crf": "18", "preset": "medium"}
        else:
            stream.bit_rate = 8_000_000
        for start in tqdm(range(0, len(frames), READ_BLOCK_FRAMES), desc=f"encode {camera}", unit="block",
                          disable=not progress):
            block = frames[start : start + READ_BLOCK_FRAMES]
            if size != (width, height):
                block = np.pad(block, ((0, 0), (0, size[1] - height), (0, size[0] - width), (0, 0)), mode="edge")
            if block.shape[-1] != 3:  # gray: repeat; rgba: drop alpha
                block = np.repeat(block, 3, axis=-1) if block.shape[-1] == 1 else block[..., :3]
            for image in block:
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    return VideoResult(out, camera, len(frames), fps, codec, size)
