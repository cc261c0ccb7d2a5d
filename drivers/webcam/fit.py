"""Fit the built-in head's pose, expression, eyelids and gaze to FaceMesh landmarks.

Camera model (as in the mesh generator's portrait fit): scaled orthographic. FaceMesh gives
pixels ``x, y`` and a depth ``z`` on the same scale as ``x`` (smaller = nearer); with
``Y = (x, -y, -z)`` a head-frame landmark ``X`` lands at ``Y = s * R @ X + t``.

Per frame, twice: (1) the rigid pose (s, R, t) by a closed-form similarity (Umeyama) on points
that do not move with expressions (forehead, nose, eye corners, cheekbones); (2) the
landmarks brought back into the head frame, ``Z = R^T (Y - t) / s``, and the jaw angle and the
expression channels solved by one regularised Gauss-Newton step of linear least squares
against the person's template. The template is the head's identity (shape coefficients fitted
over the first frames with a face) plus what neither shape nor expression explains in those
frames; the "neutral" calibration absorbs the current expression into it. Eyelids are the
fitted blink channels; gaze comes from the iris centres (FaceMesh's refined landmarks 468 and
473) relative to the eye outline, turned into eye rotations with a 12 mm eyeball.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import (
    EYEBALL_RADIUS_M,
    LEFT_EYE,
    LEFT_IRIS_CENTER,
    N_LANDMARKS,
    RIGHT_EYE,
    RIGHT_IRIS_CENTER,
    RIGID,
    HeadGeometry,
    rotation_matrix,
)

FLIP = np.array([1.0, -1.0, -1.0])
DEPTH_WEIGHT = 0.5
EXPRESSION_PRIOR = 2e-4
SHAPE_PRIOR = 2e-4
JAW_RANGE = (-0.05, 0.6)
EXPRESSION_RANGE = (0.0, 1.5)
GAZE_LIMIT = 0.6


@dataclass
class FaceFit:
    """One frame's fit.

    Attributes:
        rotation: (3, 3) head rotation (head frame -> camera frame, y up, +z toward the camera).
        scale: pixels per metre; offset: (3,) offset of ``Y`` in pixels.
        jaw: jaw opening in radians (rotation about +x).
        expression: (E,) channels of the built-in head.
        eyelids: (2,) closure of the left and right eye, 0 open .. 1 closed.
        gaze: (2, 3) axis-angle of the left and right eye, or None without iris landmarks.
        error: RMS distance of the rigid points after fitting, as a fraction of the face size.
        face_px: face size in pixels (RMS spread of the landmarks).
    """

    rotation: np.ndarray
    scale: float
    offset: np.ndarray
    jaw: float
    expression: np.ndarray
    eyelids: np.ndarray
    gaze: np.ndarray | None
    error: float
    face_px: float
    observed: np.ndarray = field(repr=False, default=None)  # (468, 3) landmarks in the head frame


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama: scale s, rotation R and offset t minimising |s R source + t - target|^2."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    src, dst = source - mu_s, target - mu_t
    u, sig, vt = np.linalg.svd(dst.T @ src / len(src))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / src.var(0).sum())
    return scale, rot, mu_t - scale * rot @ mu_s


class FaceFitter:
    """Holds the person's template and fits frames to it."""

    def __init__(self, geometry: HeadGeometry, *, expression_prior: float = EXPRESSION_PRIOR) -> None:
        self.geo = geometry
        self.n_expression = geometry.exprdirs.shape[-1]
        self.shape = np.zeros(geometry.shapedirs.shape[-1])
        self.residual = np.zeros((N_LANDMARKS, 3))
        self.expression_prior = expression_prior
        self.gaze_offset = np.zeros((2, 2))
        self.blink = [geometry.expression_names.index(n) for n in ("eye_blink_left", "eye_blink_right")]
        self._rigid = np.array(RIGID)
        self._lower = np.append(np.full(self.n_expression, EXPRESSION_RANGE[0]), JAW_RANGE[0])
        self._upper = np.append(np.full(self.n_expression, EXPRESSION_RANGE[1]), JAW_RANGE[1])
        self._weights = np.tile(np.array([1.0, 1.0, DEPTH_WEIGHT]), N_LANDMARKS)

    # --- the person ---------------------------------------------------------------------

    def fit_identity(self, frames: list[np.ndarray]) -> None:
        """Fit the shape coefficients to a few frames of landmarks (pixels, (>=468, 3)) jointly
        with each frame's expression, and keep what neither explains as the template's detail."""
        self.shape[:] = 0
        self.residual[:] = 0
        observed, expressions = [], []
        for _ in range(2):
            fits = [self.fit(p) for p in frames]
            observed = [f.observed for f in fits]
            rest = [self._expressed(f.jaw, f.expression, with_residual=False) - self.geo.shapedirs @ self.shape for f in fits]
            self.shape = self._solve_shape(observed, rest)
            expressions = fits
        residuals = [o - self._expressed(f.jaw, f.expression, with_residual=False) for o, f in zip(observed, expressions)]
        self.residual = np.mean(residuals, axis=0)

    def _solve_shape(self, observed: list[np.ndarray], rest: list[np.ndarray]) -> np.ndarray:
        a = self.geo.shapedirs.reshape(-1, self.shape.size)
        w = self._weights[:, None]
        lhs = len(observed) * (a * w).T @ a + SHAPE_PRIOR * np.eye(self.shape.size)
        rhs = sum((a * w).T @ (o - r).reshape(-1) for o, r in zip(observed, rest))
        return np.clip(np.linalg.solve(lhs, rhs), -3.0, 3.0)

    def calibrate(self, fit: FaceFit) -> None:
        """Take this frame's face as the person's neutral face (expression and gaze zero)."""
        self.residual = fit.observed - self.geo.identity(self.shape)
        if fit.gaze is not None:
            self.gaze_offset = self.gaze_offset + _gaze_angles(fit.gaze)

    # --- one frame ----------------------------------------------------------------------

    def _expressed(self, jaw: float, expression: np.ndarray, with_residual: bool = True) -> np.ndarray:
        pts = self.geo.landmarks(np.array([jaw, 0.0, 0.0]), expression, self.shape)
        return pts + self.residual if with_residual else pts

    def fit(self, points_px: np.ndarray) -> FaceFit:
        """Fit one frame of FaceMesh landmarks in pixels ((468 or 478, 3))."""
        y_all = np.asarray(points_px, np.float64) * FLIP
        y = y_all[:N_LANDMARKS]
        jaw, expr = 0.0, np.zeros(self.n_expression)
        for _ in range(2):
            model = self._expressed(jaw, expr)
            scale, rot, offset = similarity(model[self._rigid], y[self._rigid])
            observed = (y - offset) @ rot / scale
            jaw, expr = self._solve_nonrigid(observed, jaw, expr)
        model = self._expressed(jaw, expr)
        err = (scale * model @ rot.T + offset - y)[self._rigid, :2]
        face_px = float(np.sqrt(y[:, :2].var(0).sum()))
        return FaceFit(
            rotation=rot, scale=scale, offset=offset, jaw=jaw, expression=expr,
            eyelids=np.clip(expr[self.blink], 0.0, 1.0), gaze=self._gaze(y_all, offset, rot, scale, observed),
            error=float(np.sqrt((err ** 2).sum(-1).mean())) / max(face_px, 1e-6), face_px=face_px, observed=observed,
        )

    def _solve_nonrigid(self, observed: np.ndarray, jaw: float, expr: np.ndarray) -> tuple[float, np.ndarray]:
        """One Gauss-Newton step for (expression, jaw) about the current values."""
        geo = self.geo
        w_jaw = geo.jaw_weight[:, None]
        rot_j = rotation_matrix(np.array([jaw, 0.0, 0.0]))
        # d(landmarks)/d(expression): the rest-pose offsets, turned by the jaw where it skins them
        b = geo.exprdirs
        b_posed = (1 - w_jaw[..., None]) * b + w_jaw[..., None] * np.einsum("ij,njk->nik", rot_j, b)
        pivot = geo.jaw_joint(self.shape, expr)
        rest = geo.identity(self.shape) + geo.exprdirs @ expr + self.residual
        d_rot = np.array([[0, 0, 0], [0, -np.sin(jaw), -np.cos(jaw)], [0, np.cos(jaw), -np.sin(jaw)]])
        j_jaw = w_jaw * ((rest - pivot) @ d_rot.T)
        jac = np.concatenate([b_posed.reshape(-1, self.n_expression), j_jaw.reshape(-1, 1)], axis=1)
        r = (observed - self._expressed(jaw, expr)).reshape(-1)
        w = self._weights[:, None]
        reg = np.full(self.n_expression + 1, self.expression_prior)
        reg[-1] = self.expression_prior * 0.01
        current = np.concatenate([expr, [jaw]])
        lhs = (jac * w).T @ jac + np.diag(reg)
        rhs = (jac * w).T @ r - reg * current
        new = _bounded_solve(lhs, rhs, current, self._lower, self._upper)
        return float(new[-1]), new[:-1]

    def _gaze(self, y_all: np.ndarray, offset, rot, scale, observed) -> np.ndarray | None:
        if y_all.shape[0] <= LEFT_IRIS_CENTER:
            return None
        out = np.zeros((2, 3))
        for i, (iris, outline) in enumerate(((LEFT_IRIS_CENTER, LEFT_EYE), (RIGHT_IRIS_CENTER, RIGHT_EYE))):
            centre = observed[list(outline)].mean(0)
            q = (y_all[iris] - offset) @ rot / scale
            dx, dy = (q - centre)[:2] / EYEBALL_RADIUS_M
            yaw = np.arcsin(np.clip(dx, -0.99, 0.99)) - self.gaze_offset[i, 1]
            pitch = np.arcsin(np.clip(-dy, -0.99, 0.99)) - self.gaze_offset[i, 0]
            out[i] = np.clip([pitch, yaw, 0.0], -GAZE_LIMIT, GAZE_LIMIT)
        return out


def _bounded_solve(lhs, rhs, current, lower, upper, rounds: int = 4) -> np.ndarray:
    """Minimise the quadratic ``0.5 d^T lhs d - rhs^T d`` over steps d that keep
    ``current + d`` within bounds: values that leave the box are pinned to the bound and the
    rest solved again (a few active-set rounds; exact when the pinned set settles)."""
    pinned = np.zeros(len(current), bool)
    target = current.copy()
    for _ in range(rounds):
        free = ~pinned
        d = np.zeros(len(current))
        fixed_step = np.where(pinned, target - current, 0.0)
        d[free] = np.linalg.solve(lhs[np.ix_(free, free)], rhs[free] - lhs[np.ix_(free, pinned)] @ fixed_step[pinned])
        d[pinned] = fixed_step[pinned]
        new = current + d
        out = free & ((new < lower) | (new > upper))
        if not out.any():
            return new
        target = np.clip(new, lower, upper)
        pinned |= out
    return np.clip(current + d, lower, upper)


def _gaze_angles(gaze: np.ndarray) -> np.ndarray:
    """(2, 2) pitch and yaw of each eye from (2, 3) eye rotations."""
    return gaze[:, :2].copy()
