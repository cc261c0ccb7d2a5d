"""The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012), vectorised over a parameter vector.

Each value is low-passed with a cutoff that rises with its speed: at rest the cutoff is
``min_cutoff`` (little jitter), when it moves fast the cutoff grows by ``beta`` per unit of
speed (little lag). ``d_cutoff`` low-passes the speed estimate itself. Cutoffs are in Hz, the
speed in units per second of the filtered value (radians per second for angles).
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """``filter(x, t)`` -> smoothed x; ``reset(x, t)`` starts again from ``x``."""

    def __init__(self, min_cutoff: float = 1.5, beta: float = 0.5, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("min_cutoff and d_cutoff must be positive and beta non-negative")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t = 0.0

    def reset(self, x: np.ndarray | None = None, t: float = 0.0) -> None:
        self._x = None if x is None else np.array(x, np.float64)
        self._dx = None if x is None else np.zeros_like(self._x)
        self._t = t

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or self._x.shape != x.shape:
            self.reset(x, t)
            return x.copy()
        dt = t - self._t
        if dt <= 0:
            return self._x.copy()
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = self._dx + a_d * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = self._x + a * (x - self._x)
        self._t = t
        return self._x.copy()
