"""What the driver sends over time: smoothing, and the face-lost behaviour.

With a face: the One-Euro filter over the parameter vector. When the face returns after being
lost, the output blends from where it is to the tracked face over a third of ``ease_seconds``
(the filter alone would let a large change through quickly). Face lost: the last output is
held for ``hold_seconds``, then eases to rest (all parameters zero: the head straight, eyes
open, a neutral face) over ``ease_seconds`` with a smoothstep.
"""

from __future__ import annotations

import numpy as np

from .smoothing import OneEuroFilter


def smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


class Motion:
    """``update(measured or None, t)`` -> the parameters to send at time ``t`` (seconds)."""

    def __init__(self, size: int, *, min_cutoff: float, beta: float, d_cutoff: float,
                 hold_seconds: float, ease_seconds: float) -> None:
        self.rest = np.zeros(size)
        self.filter = OneEuroFilter(min_cutoff, beta, d_cutoff)
        self.hold, self.ease = hold_seconds, ease_seconds
        self.output = self.rest.copy()
        self.face = False
        self._lost_at: float | None = None
        self._lost_from = self.rest.copy()
        self._return_at: float | None = None
        self._return_from = self.rest.copy()
        self._started = False

    def update(self, measured: np.ndarray | None, t: float) -> np.ndarray:
        if measured is None:
            return self._lost(t)
        if not self.face:
            self.face = True
            if self._started:
                self._return_at, self._return_from = t, self.output.copy()
            self.filter.reset(measured if not self._started else self.output, t)
        self._started = True
        self._lost_at = None
        target = self.filter(measured, t)
        if self._return_at is not None:
            k = smoothstep((t - self._return_at) / max(self.ease / 3.0, 1e-6))
            target = self._return_from + k * (target - self._return_from)
            if k >= 1.0:
                self._return_at = None
        self.output = target
        return self.output.copy()

    def _lost(self, t: float) -> np.ndarray:
        self._started = True
        if self.face or self._lost_at is None:
            self.face = False
            self._return_at = None
            self._lost_at, self._lost_from = t, self.output.copy()
        k = smoothstep((t - self._lost_at - self.hold) / self.ease)
        self.output = self._lost_from + k * (self.rest - self._lost_from)
        return self.output.copy()

    @property
    def state(self) -> str:
        """"tracking", "holding" or "easing" (toward rest, or at rest)."""
        return "tracking" if self.face else ("holding" if self._lost_at is not None and self._is_holding() else "easing")

    def _is_holding(self) -> bool:
        return np.allclose(self.output, self._lost_from)
