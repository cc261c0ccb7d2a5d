"""From an RGB frame to FLAME parameters: FaceMesh, the landmark fit, and DECA when present.

``FaceTracker.process(image)`` returns a parameter vector in ``Layout`` order, or None when
there is no usable face (none found, too small, or a fit too poor to trust). It is blocking
and not thread-safe: the driver calls it from one worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flamecast.plugins import HeadSpace, pose_slice

from .facemesh import FaceMesh
from .fit import FaceFit, FaceFitter
from .geometry import HeadGeometry, axis_angle, rotation_matrix
from .options import WebcamOptions

log = logging.getLogger(__name__)

MIRROR = np.diag([-1.0, 1.0, 1.0])
SWAPPED = {"eye_blink_left": "eye_blink_right", "eye_blink_right": "eye_blink_left"}


@dataclass(frozen=True)
class Layout:
    """Where pose, expression, eyelids and translation sit in the flat parameter vector."""

    n_expression: int

    @property
    def size(self) -> int:
        return 15 + self.n_expression + 2 + 3

    def split(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = self.n_expression
        return v[:15], v[15:15 + n], v[15 + n:17 + n], v[17 + n:20 + n]

    def join(self, pose, expression, eyelids, translation) -> np.ndarray:
        return np.concatenate([pose, expression, eyelids, translation]).astype(np.float64)

    def rest(self) -> np.ndarray:
        return np.zeros(self.size)


def tracker_kind(options: WebcamOptions, head: HeadSpace) -> tuple[str, Path | None]:
    """"landmarks" or "deca" and the DECA checkpoint; raises when DECA is asked for and impossible."""
    from .deca import default_checkpoint

    checkpoint = default_checkpoint(options.weights_dir)
    flame = head.name.startswith("flame")
    if options.tracker == "landmarks":
        return "landmarks", None
    if options.tracker == "deca":
        if not flame:
            raise ValueError(f"tracker 'deca' gives FLAME expressions; the session's head is {head.name!r} "
                             "(use a FLAME head, or tracker=landmarks)")
        if not checkpoint.is_file():
            raise FileNotFoundError(f"tracker 'deca' needs {checkpoint}: get deca_model.tar from "
                                    "https://deca.is.tue.mpg.de and put it there (flamecast never downloads it)")
        return "deca", checkpoint
    if flame and checkpoint.is_file():
        return "deca", checkpoint
    return "landmarks", None


def refine_rotation(deca: np.ndarray, landmarks: np.ndarray, weight: float,
                    max_disagreement: float = np.radians(20)) -> np.ndarray:
    """DECA's head rotation moved toward the landmark fit's by ``weight`` along the shortest
    rotation between them (0: DECA's, 1: the fit's). DECA regresses the pose from one crop and
    jitters from frame to frame; the fit rests on 468 tracked points and is steadier. When the
    two differ by more than ``max_disagreement`` the fit is the one that failed (a landmark fit
    flips on extreme poses where DECA still holds), and DECA's rotation is kept."""
    delta = axis_angle(deca.T @ landmarks)
    if np.linalg.norm(delta) > max_disagreement:
        return deca
    return deca @ rotation_matrix(weight * delta)


class FaceTracker:
    """FaceMesh -> fit -> parameters on the head space of the session."""

    def __init__(self, options: WebcamOptions, head: HeadSpace, *, video: bool = True,
                 geometry: HeadGeometry | None = None) -> None:
        self.options = options
        self.head = head
        self.layout = Layout(head.n_expression)
        self.kind, checkpoint = tracker_kind(options, head)
        self.geometry = geometry or HeadGeometry.load()
        self.fitter = FaceFitter(self.geometry)
        self.mesh = FaceMesh(max_faces=options.max_faces, video=video)
        self.deca = None
        if checkpoint is not None:
            from .deca import DecaTracker, load_deca

            self.deca = DecaTracker(load_deca(checkpoint, options.deca_device))
        self._columns = self._expression_columns()
        self._identity: list[np.ndarray] = []
        self._identity_done = False
        self._calibrate = False
        self._neutral_rotation = np.eye(3)
        self._neutral_offset: np.ndarray | None = None
        self._deca_neutral = np.eye(3)
        self._deca_calibrate = False
        self.last_fit: FaceFit | None = None

    @property
    def name(self) -> str:
        """What runs, for stats: "landmarks" or "deca+landmarks"."""
        return "deca+landmarks" if self.deca is not None else "landmarks"

    def _expression_columns(self) -> list[tuple[int, int]]:
        """(built-in channel, head channel) pairs for the channels the head shares by name."""
        names = self.head.expression_names or ()
        pairs = []
        for i, name in enumerate(self.geometry.expression_names):
            target = SWAPPED.get(name, name) if self.options.mirror else name
            if target in names:
                pairs.append((i, names.index(target)))
        return pairs

    def request_calibration(self) -> None:
        """Take the next face as the neutral face (expression, gaze and head direction zero)."""
        self._calibrate = True

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        return self.mesh.detect(image)

    def process(self, image: np.ndarray) -> np.ndarray | None:
        points = self.mesh.detect(image)
        if points is None:
            return None
        fit = self._fit(points)
        if fit is None:
            return None
        deca = self.deca(image, points) if self.deca is not None else None
        return self._parameters(fit, deca)

    def _fit(self, points: np.ndarray) -> FaceFit | None:
        if not self._identity_done:
            self._learn_identity(points)
        fit = self.fitter.fit(points)
        if not np.isfinite(fit.error) or fit.error > self.options.max_fit_error:
            return None
        if self._calibrate and self._identity_done:
            self._calibrate = False
            self.fitter.calibrate(fit)
            fit = self.fitter.fit(points)
            self._neutral_rotation = fit.rotation.copy()
            self._neutral_offset = fit.offset / fit.scale
            self._deca_calibrate = True  # DECA's rotation of this frame becomes its neutral too
        self.last_fit = fit
        return fit

    def _learn_identity(self, points: np.ndarray) -> None:
        """Collect the first frames with a face and fit the person's shape on them (a calibration
        request ends the collection: the neutral face is taken on the finished identity)."""
        self._identity.append(points)
        done = len(self._identity) >= self.options.identity_frames or self._calibrate
        if len(self._identity) == 1 or done:
            self.fitter.fit_identity(self._identity)
        if done:
            self._identity_done = True
            self._identity = []

    def _parameters(self, fit: FaceFit, deca: dict[str, np.ndarray] | None) -> np.ndarray:
        o = self.options
        rot = self._neutral_rotation.T @ fit.rotation
        if o.mirror:
            rot = MIRROR @ rot @ MIRROR
        head_rot = axis_angle(rot)
        pose = np.zeros(15)
        pose[pose_slice("global")] = (1.0 - o.neck_share) * head_rot
        pose[pose_slice("neck")] = o.neck_share * head_rot
        pose[pose_slice("jaw")] = [fit.jaw, 0.0, 0.0]
        expression = np.zeros(self.head.n_expression)
        for src, dst in self._columns:
            expression[dst] = fit.expression[src] * o.expression_gain
        eyelids = fit.eyelids[::-1] if o.mirror else fit.eyelids
        if fit.gaze is not None:
            gaze = fit.gaze[::-1] * np.array([1.0, -1.0, 1.0]) if o.mirror else fit.gaze
            pose[pose_slice("eye_left")], pose[pose_slice("eye_right")] = gaze[0], gaze[1]
        if deca is not None:
            pose, expression = self._with_deca(pose, expression, deca)
        return self.layout.join(pose, expression, eyelids, self._translation(fit))

    def _with_deca(self, pose: np.ndarray, expression: np.ndarray, deca: dict[str, np.ndarray]):
        """DECA's jaw, expression and head rotation, the rotation refined by the landmark fit
        (see ``refine_rotation``); DECA's rotation is calibrated like the fit's."""
        jaw = deca["pose"][3:6]
        if self.options.mirror:
            jaw = jaw * np.array([1.0, -1.0, -1.0])
        pose[pose_slice("jaw")] = jaw
        exp = deca["exp"] * self.options.expression_gain
        n = min(len(exp), self.head.n_expression)
        expression = np.zeros(self.head.n_expression)
        expression[:n] = exp[:n]
        raw = rotation_matrix(deca["pose"][:3])
        if self._deca_calibrate:
            self._deca_neutral, self._deca_calibrate = raw, False
        deca_rot = self._deca_neutral.T @ raw
        if self.options.mirror:
            deca_rot = MIRROR @ deca_rot @ MIRROR
        landmark_rot = rotation_matrix(pose[pose_slice("global")] + pose[pose_slice("neck")])
        total = axis_angle(refine_rotation(deca_rot, landmark_rot, self.options.deca_refine))
        pose[pose_slice("global")] = (1.0 - self.options.neck_share) * total
        pose[pose_slice("neck")] = self.options.neck_share * total
        return pose, expression

    def _translation(self, fit: FaceFit) -> np.ndarray:
        if not self.options.translation:
            return np.zeros(3)
        here = fit.offset / fit.scale
        if self._neutral_offset is None:
            self._neutral_offset = here
        t = here - self._neutral_offset
        return np.array([-t[0] if self.options.mirror else t[0], t[1], 0.0])

    def close(self) -> None:
        self.mesh.close()
