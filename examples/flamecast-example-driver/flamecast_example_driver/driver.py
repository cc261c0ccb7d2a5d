"""The ``lookaround`` driver: the head glances between directions and follows prompts.

It shows every part of the driver contract: typed options with validation, an async frame
iterator, control messages with replies and errors, and the head space from the context.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from flamecast.plugins import Control, Driver, DriverOptions, FlameFrame, pose_slice

# Head rotation (pitch, yaw) for each direction. Positive yaw turns the head to its own left,
# positive pitch looks down (FLAME's canonical frame).
DIRECTIONS = {
    "center": (0.0, 0.0),
    "left": (0.0, 0.45),
    "right": (0.0, -0.45),
    "up": (-0.3, 0.0),
    "down": (0.3, 0.0),
}


class LookAroundOptions(DriverOptions):
    """Options of the lookaround driver."""

    period: float = Field(3.0, gt=0.2, le=60, description="Seconds between glances.")
    amplitude: float = Field(1.0, ge=0, le=1.5, description="Scale of every head turn (1 = as listed).")
    smile: bool = Field(False, description="Smile while looking around.")


class LookAroundDriver(Driver):
    name = "lookaround"
    description = "Glances between directions; prompts 'left', 'right', 'up', 'down', 'center'."
    rate = 25.0
    Options = LookAroundOptions

    def __init__(self, options, context) -> None:
        super().__init__(options, context)
        self._rng = np.random.default_rng(options.seed)
        self._target = np.zeros(2)
        self._current = np.zeros(2)
        self._held: str | None = None

    def _pick(self, i: int) -> None:
        """Every ``period`` seconds choose a new direction unless a prompt holds one."""
        if self._held is None and i % max(1, round(self.options.period * self.context.rate)) == 0:
            self._target = np.array(DIRECTIONS[self._rng.choice(list(DIRECTIONS))])

    def _frame(self) -> FlameFrame:
        self._current += 0.15 * (self._target * self.options.amplitude - self._current)  # ease toward it
        pose = np.zeros(15, np.float32)
        pose[pose_slice("neck")] = [self._current[0], self._current[1], 0.0]
        pose[pose_slice("eye_left")] = pose[pose_slice("eye_right")] = [0.5 * self._current[0], 0.5 * self._current[1], 0]
        expression = np.zeros(self.context.head.n_expression, np.float32)
        if self.options.smile and self.context.head.expression_names and "smile" in self.context.head.expression_names:
            expression[self.context.head.index("smile")] = 0.6
        return FlameFrame(pose=pose, expression=expression)

    async def frames(self):
        i = 0
        while True:
            self._pick(i)
            yield self._frame()
            i += 1

    async def control(self, message: Control) -> dict:
        if message.kind == "interrupt":
            self._held, self._target = None, np.zeros(2)
            return {"looking": "center"}
        if message.kind != "prompt":
            return await super().control(message)
        words = [w for w in (message.text or "").lower().split() if w in DIRECTIONS]
        if not words:
            raise ValueError(f"say one of: {', '.join(DIRECTIONS)}")
        self._held = words[-1]
        self._target = np.array(DIRECTIONS[self._held])
        return {"looking": self._held}


def yaw_of(frame: FlameFrame) -> float:
    """The neck yaw of a frame, in radians (used by the tests)."""
    return float(frame.joint("neck")[1])


__all__ = ["LookAroundDriver", "LookAroundOptions", "DIRECTIONS", "yaw_of", "math"]
