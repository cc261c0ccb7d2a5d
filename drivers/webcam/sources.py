"""Frame sources: a local camera (OpenCV), a video file (PyAV) and the browser's camera.

A source hands out RGB uint8 frames with their capture time. The camera and file sources are
blocking (call them from a worker thread); ``read(t, wait)`` returns the newest frame not yet
returned, or None. Broken frames are skipped and counted in ``skipped``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np

MAX_FAILED_READS = 50  # consecutive failed camera reads before the camera counts as gone


class SourceError(RuntimeError):
    """A source that cannot start or stopped working; the message names the device or file."""


def valid_frame(image) -> bool:
    """An (H, W, 3) uint8 array of a usable size."""
    return (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
            and 16 <= image.shape[0] <= 8192 and 16 <= image.shape[1] <= 8192)


class CameraSource:
    """A local camera through OpenCV; a reader thread keeps the newest frame."""

    def __init__(self, device: str, width: int, height: int, fps: float) -> None:
        import cv2

        self.device = device
        target = int(device) if device.strip().isdigit() else device
        if isinstance(target, str) and not Path(target).exists():
            raise SourceError(f"camera {device!r} does not exist; pass -o device=INDEX or a path like /dev/video0")
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(
                f"cannot open camera {device!r}: there is no such camera or another program is using it "
                "(close it, or pick another with -o device=INDEX|PATH)"
            )
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._cap.set(cv2.CAP_PROP_FPS, fps)
        self._cv2 = cv2
        self._cond = threading.Condition()
        self._frame: tuple[np.ndarray, int] | None = None
        self._fresh = False
        self._error: str | None = None
        self._stop = False
        self.skipped = 0
        self._thread = threading.Thread(target=self._reader, name=f"camera-{device}", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        failures = 0
        while not self._stop:
            ok, bgr = self._cap.read()
            if not ok or bgr is None or bgr.ndim != 3:
                failures += 1
                self.skipped += 1
                if failures >= MAX_FAILED_READS:
                    with self._cond:
                        self._error = f"camera {self.device!r} stopped delivering frames (unplugged or taken by another program?)"
                        self._cond.notify_all()
                    return
                time.sleep(0.01)
                continue
            failures = 0
            rgb = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
            with self._cond:
                self._frame, self._fresh = (rgb, time.time_ns()), True
                self._cond.notify_all()

    def read(self, t: float, wait: float) -> tuple[np.ndarray, int] | None:
        with self._cond:
            self._cond.wait_for(lambda: self._fresh or self._error is not None, timeout=wait)
            if self._error is not None:
                raise SourceError(self._error)
            if not self._fresh:
                return None
            self._fresh = False
            return self._frame

    ended = False

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2.0)
        self._cap.release()


class FileSource:
    """A video file read on the driver's clock: ``read(t)`` decodes up to time ``t`` (seconds
    since the start) and returns the last frame at or before it, so a fake clock reads every
    frame as fast as possible and the real clock reads in real time. Undecodable packets are
    skipped."""

    def __init__(self, path: str, *, loop: bool = False, start_ns: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"video file {str(self.path)!r} not found")
        self.loop = loop
        self.skipped = 0
        self.ended = False
        self._offset = 0.0
        self._start_ns = start_ns if start_ns is not None else time.time_ns()
        self._pending: tuple[np.ndarray, float] | None = None
        self._open()

    def _open(self) -> None:
        import av

        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError) as exc:
            raise SourceError(f"cannot read video from {str(self.path)!r}: {exc}") from None
        stream.thread_type = "AUTO"
        self._stream = stream
        self._frames = self._decode()
        self._last_t = 0.0

    def _decode(self):
        import av

        for packet in self._container.demux(self._stream):
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError):
                self.skipped += 1
                continue
            for frame in frames:
                try:
                    image = frame.to_ndarray(format="rgb24")
                except (av.FFmpegError, ValueError):
                    self.skipped += 1
                    continue
                t = float(frame.time) if frame.time is not None else self._last_t + 1 / 30
                self._last_t = t
                if valid_frame(image):
                    yield image, t

    def next_frame(self) -> tuple[np.ndarray, float] | None:
        item = next(self._frames, None)
        if item is None and self.loop:
            self._offset += self._last_t + 1 / 30
            self._container.close()
            self._open()
            item = next(self._frames, None)
            if item is None:
                return None
        if item is None:
            return None
        return item[0], item[1] + self._offset

    def read(self, t: float, wait: float = 0.0) -> tuple[np.ndarray, int] | None:
        latest = None
        while True:
            if self._pending is None:
                self._pending = self.next_frame()
                if self._pending is None:
                    self.ended = latest is None
                    break
            if self._pending[1] > t + 1e-6:
                break
            latest, self._pending = self._pending, None
        if latest is None:
            return None
        return latest[0], self._start_ns + int(latest[1] * 1e9)

    def close(self) -> None:
        self._container.close()


async def newest_from_queue(queue: asyncio.Queue, wait: float) -> tuple[tuple[np.ndarray, int] | None, int]:
    """The newest valid (image, capture_ns) in the browser's queue, waiting up to ``wait``
    seconds for one; returns it (or None) and how many broken items were skipped."""
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    if not items and wait > 0:
        try:
            async with asyncio.timeout(wait):  # not wait_for: on 3.11 it can swallow a cancellation
                items.append(await queue.get())
        except TimeoutError:
            pass
    valid = [(item[0], int(item[1])) for item in items if _valid_item(item)]
    return (valid[-1] if valid else None), len(items) - len(valid)


def _valid_item(item) -> bool:
    return (isinstance(item, tuple) and len(item) == 2 and valid_frame(item[0])
            and isinstance(item[1], (int, np.integer)))
