"""FlameFrame: the one intermediate representation between every driver and every generator.

Frame of reference: FLAME's canonical head frame. y points up, the face looks along +z and +x
points toward the avatar's own left. Angles are axis-angle vectors in radians, so a positive
rotation about +y (yaw) turns the head to its own left and a positive rotation about +x (pitch)
looks down.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

POSE_SIZE = 15
POSE_JOINTS = ("global", "neck", "jaw", "eye_left", "eye_right")
EYELIDS_SIZE = 2
TRANSLATION_SIZE = 3
MAX_EXPRESSION = 400
MAX_SHAPE = 400


def pose_slice(joint: str) -> slice:
    """The 3 axis-angle entries of ``joint`` (one of POSE_JOINTS) inside the 15-float pose."""
    i = POSE_JOINTS.index(joint)
    return slice(3 * i, 3 * i + 3)


def _vector(name: str, value, size: int | None, limit: int | None = None) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(value, dtype=np.float32).reshape(-1))
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"{name} must have {size} values, got {arr.shape[0]}")
    if limit is not None and arr.shape[0] > limit:
        raise ValueError(f"{name} has {arr.shape[0]} values; the limit is {limit}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, kw_only=True)
class FlameFrame:
    """One frame of FLAME parameters.

    Drivers build frames with ``pose`` and ``expression`` (and optionally ``eyelids``,
    ``translation``, ``shape``); the driver runtime stamps ``session_id``, ``seq`` and
    ``capture_ns`` before publishing.

    Attributes:
        session_id: the session this frame drives.
        seq: sequence number, strictly increasing within a session.
        capture_ns: wall-clock capture time in nanoseconds (``time.time_ns()``).
        pose: 15 floats, axis-angle of the global, neck, jaw, left-eye and right-eye joints.
        expression: n expression coefficients (named channels for the built-in head).
        shape: optional identity coefficients.
        eyelids: optional closure of the left and right eyelid, 0 open .. 1 closed.
        translation: optional head translation in metres.
    """

    session_id: str = ""
    seq: int = 0
    capture_ns: int = 0
    pose: np.ndarray = field(default_factory=lambda: np.zeros(POSE_SIZE, np.float32))
    expression: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    shape: np.ndarray | None = None
    eyelids: np.ndarray | None = None
    translation: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "pose", _vector("pose", self.pose, POSE_SIZE))
        set_(self, "expression", _vector("expression", self.expression, None, MAX_EXPRESSION))
        if self.shape is not None:
            set_(self, "shape", _vector("shape", self.shape, None, MAX_SHAPE))
        if self.eyelids is not None:
            set_(self, "eyelids", _vector("eyelids", self.eyelids, EYELIDS_SIZE))
        if self.translation is not None:
            set_(self, "translation", _vector("translation", self.translation, TRANSLATION_SIZE))
        if self.seq < 0 or self.capture_ns < 0:
            raise ValueError("seq and capture_ns must be non-negative")

    def joint(self, name: str) -> np.ndarray:
        """Axis-angle (3,) of one joint of POSE_JOINTS."""
        return self.pose[pose_slice(name)]

    def stamped(self, *, session_id: str, seq: int, capture_ns: int) -> FlameFrame:
        """A copy carrying the runtime's session id, sequence number and capture time."""
        return dataclasses.replace(self, session_id=session_id, seq=seq, capture_ns=capture_ns)
