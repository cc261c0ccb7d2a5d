"""Head motion, brows and blinks: an idle head, and a little more when speech is emphatic.

Speech activity comes from the level above a running noise floor; emphasis from jumps in level
and from pitch above the speaker's running median (in semitones). Emphasis kicks a damped
spring that nods the head and raises the brows a little; the idle part is slow incommensurate
sway and breathing, and blinks at natural random intervals. Everything is bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BLINK_SECONDS = 0.18


@dataclass
class HeadState:
    """pitch/yaw/roll of the head (radians), brow raise 0..1, eyelid closure 0..1."""

    head: np.ndarray
    brow: float
    blink: float
    activity: float


class _Spring:
    """Critically damped spring: a kicked value that returns to rest smoothly."""

    def __init__(self, freq_hz: float) -> None:
        self.w = 2 * math.pi * freq_hz
        self.x = self.v = 0.0

    def step(self, target: float, dt: float) -> float:
        a = self.w * self.w * (target - self.x) - 2 * self.w * self.v
        self.v += a * dt
        self.x += self.v * dt
        return self.x


class Prosody:
    """One per stream; ``step`` once per video frame with the mouth state's level and F0."""

    def __init__(self, rate: float, seed: int, amount: float = 1.0) -> None:
        self.dt = 1.0 / rate
        self.amount = amount
        self.rng = np.random.default_rng(seed)
        self.phases = self.rng.uniform(0, 2 * math.pi, size=6)
        self.t = 0.0
        self.floor_db = -60.0
        self.prev_db = -100.0
        self.f0_median = 0.0
        self.nod, self.brow = _Spring(2.5), _Spring(1.5)
        self.activity = 0.0
        self.next_blink = self.rng.uniform(1.0, 3.0)
        self.blink_start = -1.0

    def _activity(self, level_db: float) -> float:
        # the noise floor follows quiet levels quickly and loud ones very slowly
        rate = 0.2 if level_db < self.floor_db else 0.002
        self.floor_db += rate * (max(level_db, -100.0) - self.floor_db)
        above = level_db - max(self.floor_db, -75.0)
        target = float(np.clip((above - 6.0) / 15.0, 0.0, 1.0))
        self.activity += (0.5 if target > self.activity else 0.1) * (target - self.activity)
        return self.activity

    def _emphasis(self, level_db: float, f0: float) -> float:
        jump = max(0.0, level_db - self.prev_db - 6.0) / 12.0
        self.prev_db = level_db
        rise = 0.0
        if f0 > 0:
            if self.f0_median <= 0:
                self.f0_median = f0
            semis = 12 * math.log2(f0 / self.f0_median)
            self.f0_median *= 2 ** (0.02 * np.sign(semis) / 12)  # a slow running median
            rise = max(0.0, semis - 2.0) / 6.0
        return float(min(1.0, jump + rise)) * self.activity

    def _blink(self) -> float:
        if self.t >= self.next_blink:
            self.blink_start = self.t
            self.next_blink = self.t + 1.2 + self.rng.exponential(2.4)
        phase = (self.t - self.blink_start) / BLINK_SECONDS
        return float(math.sin(math.pi * phase) ** 2) if 0 <= phase <= 1 else 0.0

    def step(self, level_db: float, f0: float) -> HeadState:
        activity = self._activity(level_db)
        emphasis = self._emphasis(level_db, f0)
        t, p, a = self.t, self.phases, self.amount
        nod = self.nod.step(0.06 * emphasis, self.dt)
        brow = self.brow.step(0.5 * emphasis, self.dt)
        sway = 1.0 + 1.5 * activity
        pitch = 0.012 * math.sin(2 * math.pi * 0.22 * t + p[0]) + 0.02 * math.sin(2 * math.pi * 0.11 * t + p[1]) + nod
        yaw = 0.04 * sway * math.sin(2 * math.pi * 0.07 * t + p[2]) + 0.015 * sway * math.sin(2 * math.pi * 0.19 * t + p[3])
        roll = 0.015 * sway * math.sin(2 * math.pi * 0.05 * t + p[4])
        head = np.clip(np.array([pitch, yaw, roll], np.float32) * a, -0.25, 0.25)
        blink = self._blink()
        self.t += self.dt
        return HeadState(head, float(np.clip(brow * a, 0.0, 0.6)), blink, activity)
