"""Expression and identity blendshapes of the built-in head, authored from landmark handles.

An expression moves a few FaceMesh landmarks by set offsets (metres, written for the avatar's
left side, +x, and mirrored); the rest of the skin follows by a biharmonic solve that keeps
vertices farther than a radius still. Identity components are smooth displacement fields of
position (eyeballs move rigidly with their centre).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from flamecast.plugins import BUILTIN_EXPRESSION_NAMES

from . import meshops
from .assemble import Geometry

# FaceMesh landmarks on the avatar's left (+x) side.
CORNER = (291, 308)
UPPER_LIP_OUT = (267, 269, 270, 409)
UPPER_LIP_IN = (312, 311, 310, 415)
LOWER_LIP_OUT = (314, 405, 321, 375)
LOWER_LIP_IN = (317, 402, 318, 324)
UPPER_MID = (0, 13)
LOWER_MID = (17, 14)
BROW = (336, 296, 334, 293, 300, 285, 295, 282, 283, 276)
BROW_INNER = (336, 285, 296, 295)
BROW_OUTER = (293, 300, 283, 276)
CHEEK = (425, 411, 280, 352, 376, 436)
UNDER_EYE = (330, 347, 348, 349)
NOSE_WING = (327, 358, 294, 278, 279)


def _solve(g: Geometry, handles: dict[int, np.ndarray], radius: float, pinned=()) -> np.ndarray:
    """Biharmonic fill of handle displacements; zero beyond ``radius`` and on ``pinned``."""
    v = g.verts
    n = len(v)
    idx = np.array(list(handles), np.int64)
    disp = np.array([handles[i] for i in idx])
    dist = np.linalg.norm(v[:, None] - v[idx][None], axis=-1).min(1)
    far = np.nonzero(dist > radius)[0]
    zero = np.setdiff1d(np.concatenate([far, np.asarray(pinned, np.int64), g.regions["eyes"], g.regions["ears"]]), idx)
    lap = meshops.laplacian(n, g.tris)
    bi = (lap @ lap).tocsr()
    out = meshops.harmonic(sp.csr_matrix(bi), np.concatenate([idx, zero]), np.concatenate([disp, np.zeros((len(zero), 3))]))
    return out


def _both(perm, spec):
    """Handle dict for the left side plus its mirror (x negated) on the right."""
    out = {}
    for ids, d in spec:
        for i in ids:
            out[int(i)] = np.asarray(d, float)
            m = int(perm[i])
            if m != i:
                out[m] = np.asarray(d, float) * [-1, 1, 1]
            else:
                out[i] = out[i] * [0, 1, 1]
    return out


def _lid_closure(g: Geometry, side: str, amount: float = 1.0) -> dict[int, np.ndarray]:
    """Upper lid margin down to a closure line 3/4 of the way to the lower lid; lower lid up."""
    loop = np.array(g.loops[side])
    p = g.verts[loop]
    center = g.eye_centers[side]
    left, right = loop[np.argmin(p[:, 0])], loop[np.argmax(p[:, 0])]
    rest = [i for i in loop if i not in (left, right)]
    mid_y = p[:, 1].mean()
    upper = [i for i in rest if g.verts[i, 1] >= mid_y]
    lower = [i for i in rest if g.verts[i, 1] < mid_y]
    lx = g.verts[lower, 0]
    order = np.argsort(lx)
    ly = np.interp(g.verts[:, 0], lx[order], g.verts[lower, 1][order])
    uy = np.interp(g.verts[:, 0], np.sort(g.verts[upper, 0]), g.verts[upper, 1][np.argsort(g.verts[upper, 0])])
    handles = {int(left): np.zeros(3), int(right): np.zeros(3)}
    from .parts import CORNEA, EYE_RADIUS

    radius = EYE_RADIUS * CORNEA + 0.0012
    for group, frac in ((upper, 0.75), (lower, 0.75)):
        for i in group:
            close_y = uy[i] + (ly[i] - uy[i]) * 0.75
            target = np.array([g.verts[i, 0], close_y, 0.0])
            dxy = target[:2] - center[:2]
            target[2] = center[2] + np.sqrt(max(radius**2 - (dxy**2).sum(), 1e-8))
            handles[int(i)] = (target - g.verts[i]) * amount
    return handles


def _lid_shift(g: Geometry, dy_upper: float, dy_lower: float) -> dict[int, np.ndarray]:
    out = {}
    for side in ("eye_left", "eye_right"):
        loop = np.array(g.loops[side])
        p = g.verts[loop]
        span = p[:, 0].max() - p[:, 0].min()
        cx, mid_y = p[:, 0].mean(), p[:, 1].mean()
        for i in loop:
            taper = max(0.0, 1 - (2 * abs(g.verts[i, 0] - cx) / span) ** 2)
            dy = dy_upper if g.verts[i, 1] >= mid_y else dy_lower
            out[int(i)] = np.array([0.0, dy * taper, 0.0])
    return out


# Lip landmarks from the mouth corner (layer 0) toward the middle, outer and inner lips.
LIP_LAYERS = ((291, 308), (409, 415, 375, 324), (270, 310, 321, 318), (269, 311, 405, 402), (267, 312, 314, 317))
LIP_FALLOFF = (1.0, 0.7, 0.45, 0.25, 0.1)


def _sum(*dicts: dict) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out


def expression_handles(g: Geometry, perm: np.ndarray) -> dict[str, tuple[dict, float, tuple]]:
    """name -> (handles, radius, pinned vertices)."""
    eyes_loops = tuple(g.loops["eye_left"]) + tuple(g.loops["eye_right"])
    upper = UPPER_LIP_OUT + UPPER_LIP_IN + UPPER_MID
    lower = LOWER_LIP_OUT + LOWER_LIP_IN + LOWER_MID
    b = lambda spec: _both(perm, spec)  # noqa: E731
    # a mouth-corner motion that fades along the lips toward the middle, so no lip folds over
    graded = lambda d: b([(layer, np.asarray(d) * w) for layer, w in zip(LIP_LAYERS, LIP_FALLOFF)])  # noqa: E731
    mirror_all = lambda ids: tuple(ids) + tuple(int(perm[i]) for i in ids)  # noqa: E731
    specs = {
        "smile": ({**b([(CHEEK[:2], (0.001, 0.004, 0.002))]), **graded((0.006, 0.007, -0.003))}, 0.045, eyes_loops),
        "frown": (graded((0.0, -0.006, 0.0)), 0.035, eyes_loops),
        "brow_raise": (b([(BROW, (0.0, 0.008, 0.001))]), 0.045, eyes_loops),
        "brow_furrow": (b([(BROW_INNER, (-0.005, -0.006, 0.001)), (BROW_OUTER, (0.0, -0.0015, 0.0))]), 0.035, eyes_loops),
        "eye_blink_left": (_lid_closure(g, "eye_left"), 0.025, ()),
        "eye_blink_right": (_lid_closure(g, "eye_right"), 0.025, ()),
        "eye_wide": (_lid_shift(g, 0.0035, -0.0015), 0.022, ()),
        "mouth_pucker": (_sum(graded((-0.008, 0.0, 0.0)), b([(LIP_LAYERS[0], (0.0, 0.0, 0.006)),
                              (sum(LIP_LAYERS[1:], ()), (0.0, 0.0, 0.008)), (UPPER_MID + LOWER_MID, (0.0, 0.0, 0.009))])),
                         0.04, eyes_loops),
        "mouth_stretch": ({**graded((0.009, -0.002, -0.002)), **b([(LOWER_MID, (0.0, -0.002, 0.0))])}, 0.045, eyes_loops),
        "cheek_puff": (b([(CHEEK, (0.010, 0.0, 0.006)), (CORNER, (0.001, 0.0, 0.001))]), 0.045, eyes_loops),
        "sneer": (b([(NOSE_WING, (0.0, 0.003, 0.0)), ((267, 269, 270, 312, 311, 310), (0.0, 0.004, 0.001))]),
                  0.03, eyes_loops + mirror_all(LOWER_LIP_OUT + LOWER_LIP_IN) + LOWER_MID),
        "lip_press": (b([(UPPER_LIP_OUT + (0,), (0.0, -0.0015, -0.002)), (LOWER_LIP_OUT + (17,), (0.0, 0.0015, -0.002)),
                         (UPPER_LIP_IN + LOWER_LIP_IN + (13, 14), (0.0, 0.0, -0.002))]), 0.03, eyes_loops),
        "mouth_funnel": (b([(UPPER_LIP_OUT + (0,), (-0.002, 0.003, 0.006)), (UPPER_LIP_IN + (13,), (-0.002, 0.004, 0.005)),
                            (LOWER_LIP_OUT + (17,), (-0.002, -0.004, 0.006)), (LOWER_LIP_IN + (14,), (-0.002, -0.005, 0.005)),
                            (CORNER, (-0.004, 0.0, 0.003))]), 0.04, eyes_loops),
        "eye_squint": ({**_lid_shift(g, -0.0015, 0.002), **b([(UNDER_EYE, (0.0, 0.002, 0.001))])}, 0.025, ()),
        "brow_inner_raise": (b([(BROW_INNER, (0.0, 0.007, 0.0)), (BROW_OUTER, (0.0, 0.0, 0.0))]), 0.035, eyes_loops),
        "upper_lip_raise": (b([(upper, (0.0, 0.004, 0.001)), (CORNER, (0.0, 0.001, 0.0))]), 0.03,
                            eyes_loops + mirror_all(LOWER_LIP_OUT + LOWER_LIP_IN) + LOWER_MID),
    }
    assert tuple(specs) == BUILTIN_EXPRESSION_NAMES
    return specs


def expression_dirs(g: Geometry, perm: np.ndarray) -> np.ndarray:
    """(N, 3, 16) displacement per unit of each named expression channel."""
    cols = []
    for name, (handles, radius, pinned) in expression_handles(g, perm).items():
        cols.append(_solve(g, handles, radius, pinned))
    return np.stack(cols, -1)


# ---------------------------------------------------------------- identity (shape) basis

SHAPE_NAMES = (
    "head_width", "head_height", "head_depth", "face_length", "jaw_width", "chin_forward",
    "nose_length", "nose_width", "nose_bridge", "eye_spacing", "cheek_fullness", "brow_ridge",
    "lip_fullness", "mouth_width", "neck_thickness", "forehead_slope",
)


def _gauss(p, centers, sigma):
    d = np.linalg.norm(p[:, None] - np.atleast_2d(centers)[None], axis=-1).min(1)
    return np.exp(-0.5 * (d / sigma) ** 2)


def shape_dirs(g: Geometry) -> np.ndarray:
    """(N, 3, S) identity displacement per unit (about one standard deviation) of each component."""
    v = g.verts
    s = g.params
    c = np.asarray(s.center)
    side = np.tanh(v[:, 0] / 0.006)
    chin_y, nose_y, eye_y = v[152, 1], v[2, 1], v[[33, 263], 1].mean()
    front = 1 / (1 + np.exp(-(v[:, 2] - (c[2] + 0.03)) / 0.01))
    neckfade = np.clip((v[:, 1] - (chin_y - 0.06)) / 0.05, 0, 1)
    lower = np.clip((nose_y - v[:, 1]) / (nose_y - chin_y), 0, 1) * neckfade
    fields = {
        "head_width": np.stack([0.04 * (v[:, 0] - c[0]), 0 * side, 0 * side], 1),
        "head_height": np.stack([0 * side, 0.06 * np.maximum(v[:, 1] - c[1], 0), 0 * side], 1),
        "head_depth": np.stack([0 * side, 0 * side, 0.06 * np.minimum(v[:, 2] - c[2], 0)], 1),
        "face_length": np.stack([0 * side, -0.008 * lower * front, 0 * side], 1),
        "jaw_width": np.stack([0.006 * side * _gauss(v, v[[58, 288, 172, 397]], 0.025), 0 * side, 0 * side], 1),
        "chin_forward": np.stack([0 * side, 0 * side, 0.006 * _gauss(v, v[[152, 175, 199]], 0.018)], 1),
        "nose_length": np.stack([0 * side, -0.001 * _gauss(v, v[[4, 1]], 0.012), 0.004 * _gauss(v, v[[4, 1]], 0.014)], 1),
        "nose_width": np.stack([0.003 * side * _gauss(v, v[[98, 327, 129, 358]], 0.01), 0 * side, 0 * side], 1),
        "nose_bridge": np.stack([0 * side, 0 * side, 0.003 * _gauss(v, v[[6, 197, 195]], 0.012)], 1),
        "eye_spacing": np.stack([0.003 * side * _gauss(v, np.stack(list(g.eye_centers.values())), 0.018), 0 * side, 0 * side], 1),
        "cheek_fullness": _gauss(v, v[[425, 205, 411, 187]], 0.02)[:, None] * np.stack([0.004 * side, 0 * side, 0 * side + 0.002], 1),
        "brow_ridge": np.stack([0 * side, 0 * side, 0.003 * _gauss(v, v[[105, 334, 66, 296, 9]], 0.015)], 1),
        "lip_fullness": np.stack([0 * side, 0 * side, 0.0025 * _gauss(v, v[[0, 17, 13, 14]], 0.012)], 1),
        "mouth_width": np.stack([0.0025 * side * _gauss(v, v[[61, 291]], 0.016), 0 * side, 0 * side], 1),
        "neck_thickness": _neck(v, s, chin_y),
        "forehead_slope": np.stack([0 * side, 0 * side, -0.1 * np.maximum(v[:, 1] - eye_y - 0.02, 0) * front], 1),
    }
    dirs = np.stack([fields[n] for n in SHAPE_NAMES], -1)
    for key in ("eye_left", "eye_right"):  # eyeballs move rigidly (their mean displacement)
        ids = g.regions[key]
        dirs[ids] = dirs[ids].mean(0, keepdims=True)
    return dirs


def _neck(v, s, chin_y):
    nx, nz = s.neck_center_xz
    d = np.stack([v[:, 0] - nx, 0 * v[:, 0], v[:, 2] - nz], 1)
    mask = np.clip((chin_y - 0.01 - v[:, 1]) / 0.04, 0, 1)
    return 0.08 * d * mask[:, None]
