"""Frames and videos made from scikit-image's astronaut photograph, for the webcam tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def astronaut(size: int = 240) -> np.ndarray:
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def portrait(size: int = 200) -> np.ndarray:
    """The astronaut's head and shoulders only (the face fills most of it)."""
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut()[10:290, 100:380], (size, size), interpolation=cv2.INTER_AREA)


def rotated(image: np.ndarray, degrees: float, canvas=(320, 240), shift=(0, 0)) -> np.ndarray:
    """``image`` rotated counter-clockwise by ``degrees`` and centred (plus ``shift``) on a canvas."""
    import cv2

    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    m[:, 2] += [canvas[0] / 2 - w / 2 + shift[0], canvas[1] / 2 - h / 2 + shift[1]]
    return cv2.warpAffine(image, m, canvas, borderMode=cv2.BORDER_REPLICATE)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
