"""Reading and writing video files in process: PyAV (FFmpeg's libraries) for MP4 and the like, Pillow for
GIF and PNG. No ffmpeg child process is started, so nothing forks a process that runs JAX's threads."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from worldplay.errors import WorldplayError

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
    path = Path(path)
    if path.is_dir():
        for p in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            yield read_image(p)
        return
    if path.suffix.lower() == ".gif":
        with Image.open(path) as im:
            for frame in ImageSequence.Iterator(im):
                yield np.asarray(frame.convert("RGB"))
        return
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale by an integer factor (sharp pixels)."""
    if scale == 1:
        return frame
    return np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


def write_video(path: str | os.PathLike[str], frames: Iterable[np.ndarray], *, fps: float, scale: int = 1) -> Path:
    """Write RGB frames to an MP4 (H.264) or GIF, atomically; returns the path.

    H.264 in yuv420p needs even sides: an odd-sized frame is padded by one black row or column.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
    data = [upscale(to_rgb(f), scale) for f in frames]
    if not data:
        raise ValueError(f"{path}: no frames to write")
    try:
        if path.suffix.lower() == ".gif":
            images = [Image.fromarray(f) for f in data]
            images[0].save(tmp, save_all=True, append_images=images[1:], duration=1000.0 / fps, loop=0)
        else:
            _write_av(tmp, data, fps)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_av(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import av

    H, W = frames[0].shape[:2]
    pad_h, pad_w = H % 2, W % 2
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = W + pad_w, H + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "medium"}
        for f in frames:
            if pad_h or pad_w:
                f = np.pad(f, ((0, pad_h), (0, pad_w), (0, 0)))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        container.mux(stream.encode())


def prompt_from_image(path: str | os.PathLike[str], frame_shape: Sequence[int]) -> np.ndarray:
    """An image file as a one-frame prompt [1, H, W, 3] at the world's frame size."""
    from worldplay.data.sources import resize_frame

    try:
        image = read_image(path)
    except FileNotFoundError:
        raise WorldplayError(f"{path}: no such prompt image") from None
    except OSError as e:
        raise WorldplayError(f"{path}: cannot read the prompt image ({e}); give a PNG or JPEG") from None
    return resize_frame(image, (int(frame_shape[0]), int(frame_shape[1])))[None]
