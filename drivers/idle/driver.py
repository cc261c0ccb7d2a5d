"""The idle driver: what the avatar does when nothing drives it.

Breathing (a slow pitch and rise of the head), blinks at natural random intervals, a small
head sway made of incommensurate sines, and eye saccades with fixations in between. Everything
is a function of the frame index and the seed, so a run is reproducible.
"""

from __future__ import annotations

import math
from typing import AsyncIterator

import numpy as np
from pydantic import Field

from flamecast.plugins import Driver, DriverOptions, FlameFrame, pose_slice

BLINK_SECONDS = 0.18


class IdleOptions(DriverOptions):
    """Options of the idle driver."""

    fps: float = Field(25.0, gt=0, le=120, description="Frames per second.")
    sway: float = Field(1.0, ge=0, le=3, description="Head sway amplitude (1 = natural).")
    blink_rate: float = Field(17.0, ge=0, le=60, description="Blinks per minute on average.")
    breathing: float = Field(1.0, ge=0, le=3, description="Breathing amplitude (1 = natural).")
    smile: float = Field(0.1, ge=0, le=1, description="Resting smile level of the built-in head.")


class _Schedule:
    """Random event times (blinks, saccades) drawn once per interval from a seeded generator."""

    def __init__(self, rng: np.random.Generator, mean_interval: float, min_interval: float) -> None:
        self.rng, self.mean, self.min = rng, mean_interval, min_interval
        self.next_t = rng.uniform(0.2, 0.6) * mean_interval  # the first one comes early

    def _draw(self, after: float) -> float:
        return after + self.min + self.rng.exponential(max(self.mean - self.min, 1e-3))

    def fire(self, t: float) -> float | None:
        """The start time of an event that began at or before ``t``, scheduling the next."""
        if t < self.next_t:
            return None
        start, self.next_t = self.next_t, self._draw(self.next_t)
        return start


class IdleDriver(Driver):
    name = "idle"
    description = "Breathing, blinks, a little head sway and eye saccades."
    rate = 25.0
    Options = IdleOptions

    def __init__(self, options, context) -> None:
        super().__init__(options, context)
        self.rate = options.fps
        rng = np.random.default_rng(options.seed)
        self._phases = rng.uniform(0, 2 * math.pi, size=8)
        self._blinks = _Schedule(rng, 60.0 / options.blink_rate if options.blink_rate > 0 else 1e9, 1.2)
        self._saccades = _Schedule(rng, 1.4, 0.35)
        self._rng = rng
        self._gaze = np.zeros(2, np.float32)
        self._blink_start = -1.0

    def _head(self, t: float) -> np.ndarray:
        o, p = self.options, self._phases
        breath = o.breathing * 0.012 * math.sin(2 * math.pi * 0.22 * t + p[0])
        yaw = o.sway * (0.05 * math.sin(2 * math.pi * 0.071 * t + p[1]) + 0.02 * math.sin(2 * math.pi * 0.193 * t + p[2]))
        pitch = o.sway * (0.025 * math.sin(2 * math.pi * 0.113 * t + p[3])) + breath
        roll = o.sway * 0.02 * math.sin(2 * math.pi * 0.057 * t + p[4])
        return np.array([pitch, yaw, roll], np.float32)

    def _eyelids(self, t: float) -> float:
        start = self._blinks.fire(t)
        if start is not None:
            self._blink_start = start
        phase = (t - self._blink_start) / BLINK_SECONDS
        return float(math.sin(math.pi * phase) ** 2) if 0 <= phase <= 1 else 0.0

    def _eyes(self, t: float) -> np.ndarray:
        if self._saccades.fire(t) is not None:
            self._gaze = self._rng.normal(0, [0.06, 0.1]).clip(-0.2, 0.2).astype(np.float32)
        return np.array([self._gaze[0], self._gaze[1], 0.0], np.float32)

    def frame_at(self, i: int) -> FlameFrame:
        t = i / self.rate
        head = self._head(t)
        pose = np.zeros(15, np.float32)
        pose[pose_slice("global")] = head * 0.4
        pose[pose_slice("neck")] = head * 0.6
        pose[pose_slice("jaw")] = [0.02 + 0.01 * math.sin(2 * math.pi * 0.22 * t + self._phases[0]), 0, 0]
        eyes = self._eyes(t)
        pose[pose_slice("eye_left")] = eyes
        pose[pose_slice("eye_right")] = eyes
        closure = self._eyelids(t)
        return FlameFrame(
            pose=pose,
            expression=self._expression(t, closure),
            eyelids=np.array([closure, closure], np.float32),
        )

    def _expression(self, t: float, closure: float) -> np.ndarray:
        head = self.context.head
        expr = np.zeros(head.n_expression, np.float32)
        if head.expression_names is None:
            return expr
        names = head.expression_names
        levels = {
            "smile": self.options.smile * (1 + 0.3 * math.sin(2 * math.pi * 0.05 * t + self._phases[5])),
            "brow_raise": 0.05 * max(0.0, math.sin(2 * math.pi * 0.09 * t + self._phases[6])),
            "eye_blink_left": closure,
            "eye_blink_right": closure,
        }
        for name, value in levels.items():
            if name in names:
                expr[names.index(name)] = value
        return expr

    async def frames(self) -> AsyncIterator[FlameFrame]:
        i = 0
        while True:
            yield self.frame_at(i)
            i += 1
