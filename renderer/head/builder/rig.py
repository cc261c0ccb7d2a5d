"""Joints, skinning weights, landmark embedding and UVs of the built-in head."""

from __future__ import annotations

import numpy as np

from . import meshops
from .assemble import Geometry

PARENTS = np.array([-1, 0, 1, 1, 1])  # global -> neck -> jaw, eye_left, eye_right (FLAME's kintree)
LOWER_LIP_AND_CHIN = (
    95, 88, 178, 87, 14, 317, 402, 318, 324,  # inner lower lip
    146, 91, 181, 84, 17, 314, 405, 321, 375,  # outer lower lip
    152, 148, 176, 149, 150, 377, 400, 378, 379, 175, 199, 200, 18, 83, 313, 171, 396,
)
UPPER_LIP = (191, 80, 81, 82, 13, 312, 311, 310, 415, 185, 40, 39, 37, 0, 267, 269, 270, 409)
MOUTH_CORNERS = (61, 291, 78, 308)


def smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def skin_vertices(g: Geometry) -> np.ndarray:
    return np.setdiff1d(np.arange(len(g.verts)), g.regions["eyes"])


def joint_targets(g: Geometry) -> np.ndarray:
    """Rest positions of global, neck, jaw, eye_left, eye_right."""
    v, s = g.verts, g.params
    nx, nz = s.neck_center_xz
    root = np.array([nx, s.y_bottom + 0.005, nz])
    neck = np.array([nx, (v[152, 1] + v[61, 1]) / 2 - 0.01, nz + 0.01])
    jaw = np.array([0.0, v[234, 1] - 0.018, v[234, 2] - 0.002])
    return np.stack([root, neck, jaw, g.eye_centers["eye_left"], g.eye_centers["eye_right"]])


def _affine_weights(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-norm weights w (sum 1) with sum w_i p_i = target."""
    a = np.concatenate([points.T, np.ones((1, len(points)))])  # (4, k)
    b = np.concatenate([target, [1.0]])
    return a.T @ np.linalg.solve(a @ a.T, b)


def joint_regressor(g: Geometry, targets: np.ndarray, k: int = 60) -> np.ndarray:
    """(5, N): each joint is an affine combination of nearby vertices (exact in the neutral)."""
    reg = np.zeros((5, len(g.verts)))
    skin = skin_vertices(g)
    for j, t in enumerate(targets):
        pool = g.regions["eye_left"] if j == 3 else g.regions["eye_right"] if j == 4 else skin
        near = pool[np.argsort(np.linalg.norm(g.verts[pool] - t, axis=1))[:k]]
        reg[j, near] = _affine_weights(g.verts[near], t)
    return reg


def jaw_weights(g: Geometry, jaw_joint: np.ndarray) -> np.ndarray:
    """Harmonic field: 1 on the lower lip and chin, 0 on the upper lip, the upper face, the back."""
    v = g.verts
    lap = meshops.laplacian(len(v), g.tris)
    one = np.array(LOWER_LIP_AND_CHIN)
    half = np.array(MOUTH_CORNERS)
    upper_face = np.nonzero(v[:, 1] > v[61, 1] + 0.016)[0]
    behind = np.nonzero(v[:, 2] < jaw_joint[2] - 0.012)[0]
    neck = np.nonzero(v[:, 1] < v[152, 1] - 0.035)[0]
    zero = np.setdiff1d(np.concatenate([upper_face, behind, neck, np.array(UPPER_LIP), g.regions["eyes"], g.regions["ears"]]), one)
    zero = np.setdiff1d(zero, half)
    fixed = np.concatenate([one, half, zero])
    values = np.concatenate([np.ones(len(one)), np.full(len(half), 0.5), np.zeros(len(zero))])
    w = meshops.harmonic(lap, fixed, values)
    return smoothstep(w)


def skinning_weights(g: Geometry, jaw_joint: np.ndarray) -> np.ndarray:
    v = g.verts
    w = np.zeros((len(v), 5))
    s = g.params
    chin_y = v[152, 1]
    root = 1.0 - smoothstep((v[:, 1] - s.y_bottom) / (chin_y - 0.02 - s.y_bottom))
    root[g.regions["face"]] = 0.0
    jaw = jaw_weights(g, jaw_joint) * (1 - root)
    w[:, 0] = root
    w[:, 2] = jaw
    w[:, 1] = 1.0 - root - jaw
    for j, key in ((3, "eye_left"), (4, "eye_right")):
        w[g.regions[key]] = 0.0
        w[g.regions[key], j] = 1.0
    return w


def landmark_embedding(tris: np.ndarray, n_landmarks: int = 468) -> tuple[np.ndarray, np.ndarray]:
    """Landmark i is vertex i: a triangle that uses it and one-hot barycentrics."""
    face_idx = np.zeros(n_landmarks, np.int64)
    bary = np.zeros((n_landmarks, 3))
    for f, t in enumerate(tris):
        for k, vi in enumerate(t):
            if vi < n_landmarks and bary[vi].sum() == 0:
                face_idx[vi] = f
                bary[vi, k] = 1.0
    return face_idx, bary


def azimuthal_uvs(verts: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Azimuthal equidistant projection about +z from the head centre: the face sits in the
    middle of the texture, the back of the head at the rim (a single point at -z is singular).
    u grows toward +x, v grows upward (v = 0 is the bottom row of the texture, as in OBJ/FLAME)."""
    d = verts - center
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    theta = np.arccos(np.clip(d[:, 2], -1, 1))
    rho = np.linalg.norm(d[:, :2], axis=1) + 1e-12
    r = theta / np.pi * 0.5
    return np.stack([0.5 + r * d[:, 0] / rho, 0.5 + r * d[:, 1] / rho], 1)
