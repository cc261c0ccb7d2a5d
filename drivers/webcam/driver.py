"""The webcam driver: the user's face drives the avatar.

Each frame: take the newest camera / browser / file frame, track it in a worker thread
(FaceMesh, the landmark fit, DECA when present: ``tracker``), smooth it and apply the
face-lost behaviour (``motion``), and yield a FlameFrame. The driver waits for a new frame up
to one period, so a camera that delivers at the driver's rate is followed frame by frame.

Events (``context.emit``): ``{"type": "webcam", "tracker": ..., "source": ...}`` at the start,
``{"type": "webcam", "face": true|false}`` when the face is found or lost,
``{"type": "webcam", "calibrated": true}`` after a calibration. ``stats()`` has the counters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any, AsyncIterator

import numpy as np

from flamecast.plugins import Control, ControlNotSupported, Driver, FlameFrame, OptionsError

from .motion import Motion
from .options import WebcamOptions
from .sources import CameraSource, FileSource, SourceError, newest_from_queue
from .tracker import FaceTracker

LIVE_OPTIONS = {"min_cutoff", "beta", "d_cutoff", "hold_seconds", "ease_seconds", "expression_gain",
                "neck_share", "mirror", "translation", "max_fit_error"}


class WebcamDriver(Driver):
    name = "webcam"
    description = "Your face drives the avatar: a local camera, the browser's camera or a video file."
    rate = 30.0
    needs_video = True
    Options = WebcamOptions

    def __init__(self, options: WebcamOptions, context) -> None:
        super().__init__(options, context)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="webcam")
        self._tracker: FaceTracker | None = None
        self._source = None
        self._motion: Motion | None = None
        self.counters = {"frames_in": 0, "frames_tracked": 0, "faces": 0, "skipped": 0, "track_ms": 0.0}

    # --- setup ------------------------------------------------------------------------------

    def source_kind(self) -> str:
        o = self.options
        if o.source != "auto":
            return o.source
        if o.file:
            return "file"
        return "browser" if self.context.video_in is not None else "camera"

    def _open(self) -> None:
        """Build the tracker and open the source (blocking: runs in the worker thread)."""
        kind = self.source_kind()
        if kind == "browser" and self.context.video_in is None:
            raise SourceError("source 'browser' needs a session that carries the browser's camera")
        self._tracker = FaceTracker(self.options, self.context.head)
        if kind == "camera":
            o = self.options
            self._source = CameraSource(o.device, o.width, o.height, o.fps)
        elif kind == "file":
            self._source = FileSource(self.options.file, loop=self.options.loop, start_ns=self.context.clock.now_ns())

    def _motion_for(self, size: int) -> Motion:
        o = self.options
        return Motion(size, min_cutoff=o.min_cutoff, beta=o.beta, d_cutoff=o.d_cutoff,
                      hold_seconds=o.hold_seconds, ease_seconds=o.ease_seconds)

    # --- frames -----------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[FlameFrame]:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._open)
        tracker = self._tracker
        if self._calibrate:
            tracker.request_calibration()
        self._motion = self._motion_for(tracker.layout.size)
        self.context.emit({"type": "webcam", "tracker": tracker.name, "source": self.source_kind()})
        clock, t0 = self.context.clock, self.context.clock.monotonic()
        period = 1.0 / self.context.rate
        face = None
        while True:
            t = clock.monotonic() - t0
            frame = await self._next_frame(loop, t, period)
            if frame is None and self._source is not None and self._source.ended:
                return
            params = await self._params(loop, frame, t)
            if self._motion.face != face:
                face = self._motion.face
                self.context.emit({"type": "webcam", "face": face})
            yield self._frame(params)

    @property
    def active(self) -> bool:
        """A face is tracked, or was lost less than ``hold_seconds`` ago. In a stack of layers the
        layers below (the idle base) take the head back with a cross-fade once the face is gone."""
        motion = getattr(self, "_motion", None)
        return motion is not None and motion.state != "easing"

    _last_seen = 0.0
    last_capture_ns = 0  # capture time of the newest frame taken (for latency measurements)
    _calibrate = False

    async def _params(self, loop, frame, t: float) -> np.ndarray:
        motion = self._motion
        if frame is not None:
            measured = await loop.run_in_executor(self._executor, self._track, frame[0])
            return motion.update(measured, t)
        if motion.face and t - self._last_seen <= self.options.hold_seconds:
            return motion.output.copy()  # no new frame yet: keep the last one
        return motion.update(None, t)  # no face, or no frames at all for a while

    async def _next_frame(self, loop, t: float, period: float) -> tuple[np.ndarray, int] | None:
        if self._source is None:
            frame, skipped = await newest_from_queue(self.context.video_in, period)
            self.counters["skipped"] += skipped
        else:
            frame = await loop.run_in_executor(self._executor, self._source.read, t, period)
            self.counters["skipped"] = self._source.skipped
        if frame is not None:
            self.counters["frames_in"] += 1
            self._last_seen = t
            self.last_capture_ns = frame[1]
        return frame

    def _track(self, image: np.ndarray) -> np.ndarray | None:
        start = time.perf_counter()
        measured = self._tracker.process(image)
        self.counters["frames_tracked"] += 1
        self.counters["faces"] += measured is not None
        self.counters["track_ms"] = round((time.perf_counter() - start) * 1e3, 2)
        return measured

    def _frame(self, params: np.ndarray) -> FlameFrame:
        pose, expression, eyelids, translation = self._tracker.layout.split(params)
        pose = np.clip(pose, -3.0, 3.0)
        return FlameFrame(
            pose=pose, expression=expression, eyelids=np.clip(eyelids, 0.0, 1.0),
            translation=translation if self.options.translation else None,
        )

    # --- control ----------------------------------------------------------------------------

    async def control(self, message: Control) -> dict[str, Any]:
        """``option`` messages: ``{"calibrate": true}`` takes the current face as the neutral
        face; other keys update the live options (filter, face-lost timing, gain, mirror)."""
        if message.kind == "interrupt":
            return {}
        if message.kind != "option":
            raise ControlNotSupported(f"driver 'webcam' does not accept {message.kind!r} messages")
        data = dict(message.data)
        reply: dict[str, Any] = {}
        if data.pop("calibrate", False):
            self._calibrate = True
            if self._tracker is not None:
                self._tracker.request_calibration()
            reply["calibrating"] = True
        if data:
            reply["options"] = self._update_options(data)
        return reply

    def _update_options(self, data: dict[str, Any]) -> dict[str, Any]:
        fixed = sorted(set(data) - LIVE_OPTIONS)
        if fixed:
            raise ValueError(f"options {fixed} cannot change while running; live ones: {sorted(LIVE_OPTIONS)}")
        try:
            options = self.parse_options({**self.options.model_dump(), **data})
        except OptionsError as exc:
            raise ValueError(str(exc)) from None
        self.options = options
        if self._tracker is not None:
            self._tracker.options = options
            self._tracker._columns = self._tracker._expression_columns()
        if self._motion is not None:
            m = self._motion
            m.filter.min_cutoff, m.filter.beta, m.filter.d_cutoff = options.min_cutoff, options.beta, options.d_cutoff
            m.hold, m.ease = options.hold_seconds, options.ease_seconds
        return {k: getattr(options, k) for k in data}

    def stats(self) -> dict[str, Any]:
        """Counters for the session's stats: which tracker runs and how it goes."""
        return {
            "tracker": self._tracker.name if self._tracker else None,
            "source": self.source_kind(),
            "face": bool(self._motion and self._motion.face),
            **self.counters,
        }

    async def aclose(self) -> None:
        def close() -> None:
            if self._source is not None:
                self._source.close()
            if self._tracker is not None:
                self._tracker.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)
