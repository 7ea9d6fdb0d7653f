"""Reading and writing video files (imageio with its ffmpeg plugin; Pillow for GIF and PNG)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mkv", ".avi", ".mov")
IMAGE_SUFFIXES = (".png",)


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """Any uint8 image (gray, RGB, RGBA) as RGB uint8 [H, W, 3]."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    if frame.shape[-1] == 4:
        frame = frame[..., :3]
    return np.ascontiguousarray(frame)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """A still image as RGB uint8 [H, W, 3]."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def iter_video(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Frames of a video file, or of a folder of PNG images in name order, as RGB uint8."""
    import imageio.v3 as iio

    path = Path(path)
    if path.is_dir():
        for p in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            yield read_image(p)
        return
    if path.suffix.lower() == ".gif":
        for frame in iio.imiter(path, plugin="pillow", mode="RGB"):
            yield to_rgb(frame)
        return
    for frame in iio.imiter(path, plugin="FFMPEG"):
        yield to_rgb(frame)


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale by an integer factor (sharp pixels)."""
    if scale == 1:
        return frame
    return np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


def write_video(path: str | os.PathLike[str], frames: Iterable[np.ndarray], *, fps: float, scale: int = 1) -> Path:
    """Write RGB frames to an MP4 (H.264) or GIF, atomically; returns the path."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
    data = np.stack([upscale(to_rgb(f), scale) for f in frames])
    try:
        if path.suffix.lower() == ".gif":
            iio.imwrite(tmp, data, plugin="pillow", duration=1000.0 / fps, loop=0)
        else:
            iio.imwrite(tmp, data, plugin="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=1)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
