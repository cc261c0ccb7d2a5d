"""The back and sides of the head and the neck: a smooth implicit shape sampled by rays.

The shape is a smooth union of a skull (an egg-shaped ellipsoid), a jaw block and a neck
cylinder, placed relative to the face. It is sampled on a latitude/longitude grid of rays from
the skull centre (rings spaced by arc length, the last ring at the bottom of the neck), so the
back of the head and the neck come out as one regular quad grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SkullParams:
    """Sizes in metres; positions in the face's frame."""

    center: tuple[float, float, float]
    skull_axes_top: tuple[float, float, float] = (0.078, 0.106, 0.099)
    skull_axes_bottom: tuple[float, float, float] = (0.078, 0.085, 0.099)
    jaw_center: tuple[float, float, float] = (0.0, -0.045, -0.045)
    jaw_axes: tuple[float, float, float] = (0.056, 0.036, 0.060)
    neck_center_xz: tuple[float, float] = (0.0, -0.100)
    neck_axes_xz: tuple[float, float] = (0.053, 0.056)
    neck_top: float = 0.0
    y_bottom: float = -0.175
    blend: float = 0.025
    dome_exponent: float = 2.5


def _ellipsoid(p, c, axes):
    q = (p - np.asarray(c)) / np.asarray(axes)
    r = np.linalg.norm(q, axis=-1)
    return (r - 1.0) * np.min(axes)


def _smooth_min(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def head_sdf(p: np.ndarray, s: SkullParams) -> np.ndarray:
    """Approximate signed distance (negative inside) of the skull + jaw + neck union."""
    c = np.asarray(s.center)
    top = p[..., 1] >= c[1]
    axes = np.where(top[..., None], np.asarray(s.skull_axes_top), np.asarray(s.skull_axes_bottom))
    q = (p - c) / axes
    # a rounder-shouldered dome on top: a superellipse in height (exponent 2 at and below the
    # equator, so the two halves meet smoothly)
    e = np.where(top, s.dome_exponent, 2.0)
    horiz = np.sqrt(q[..., 0] ** 2 + q[..., 2] ** 2)
    radial = (horiz**e + np.abs(q[..., 1]) ** e) ** (1.0 / e)
    skull = (radial - 1.0) * 0.08
    jaw = _ellipsoid(p, s.jaw_center, s.jaw_axes)
    nx, nz = s.neck_center_xz
    ax, az = s.neck_axes_xz
    radial = np.sqrt(((p[..., 0] - nx) / ax) ** 2 + ((p[..., 2] - nz) / az) ** 2)
    neck = (radial - 1.0) * min(ax, az)
    neck = np.maximum(neck, p[..., 1] - s.neck_top)  # the neck ends inside the skull
    return _smooth_min(_smooth_min(skull, jaw, s.blend), neck, s.blend)


def cast(origin: np.ndarray, dirs: np.ndarray, s: SkullParams, t_max=0.45, steps=450) -> np.ndarray:
    """Distance along each ray to the last point inside the shape (then refined by bisection)."""
    ts = np.linspace(0.0, t_max, steps)
    pts = origin + dirs[:, None, :] * ts[None, :, None]
    inside = head_sdf(pts, s) < 0
    last = steps - 1 - np.argmax(inside[:, ::-1], axis=1)
    lo, hi = ts[last], ts[np.minimum(last + 1, steps - 1)]
    for _ in range(30):
        mid = (lo + hi) / 2
        ins = head_sdf(origin + dirs * mid[:, None], s) < 0
        lo, hi = np.where(ins, mid, lo), np.where(ins, hi, mid)
    return (lo + hi) / 2


def direction(azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:
    """Unit vectors; azimuth 0 = +z (front), positive toward +x; elevation positive up."""
    ce = np.cos(elevation)
    return np.stack([ce * np.sin(azimuth), np.sin(elevation), ce * np.cos(azimuth)], -1)


def ring_elevations(s: SkullParams, azimuth: float, n_rings: int) -> np.ndarray:
    """Elevations of n_rings rings below the top pole, evenly spaced by surface arc length,
    the last one where the surface reaches the bottom of the neck."""
    el = np.linspace(np.pi / 2, -np.pi / 2 + 0.02, 1200)
    pts = np.asarray(s.center) + direction(np.full_like(el, azimuth), el) * cast(
        np.asarray(s.center), direction(np.full_like(el, azimuth), el), s
    )[:, None]
    below = np.nonzero(pts[:, 1] <= s.y_bottom)[0]
    end = below[0] if len(below) else len(el) - 1
    seg = np.linalg.norm(np.diff(pts[: end + 1], axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    targets = np.linspace(0.0, arc[-1], n_rings + 1)[1:]
    return np.interp(targets, arc, el[: end + 1])


def grid(s: SkullParams, n_az: int = 64, n_rings: int = 44) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (1 + n_rings * n_az, 3), quads-as-triangles, and (azimuth, elevation) per vertex.

    Vertex 0 is the top pole; ring r, column j is vertex 1 + r * n_az + j. The grid is open at
    the bottom ring (the end of the neck).
    """
    c = np.asarray(s.center)
    az = np.linspace(-np.pi, np.pi, n_az, endpoint=False) + np.pi / n_az
    els = np.stack([ring_elevations(s, a, n_rings) for a in az], 1)  # (rings, az)
    dirs = direction(np.broadcast_to(az, els.shape), els).reshape(-1, 3)
    t = cast(c, dirs, s)
    pts = c + dirs * t[:, None]
    pts[-n_az:, 1] = s.y_bottom  # a flat cut at the end of the neck
    top = c + np.array([0, 1.0, 0]) * cast(c, np.array([[0, 1.0, 0]]), s)[:, None]
    verts = np.concatenate([top, pts])
    angles = np.concatenate([[[0.0, np.pi / 2]], np.stack([np.broadcast_to(az, els.shape).ravel(), els.ravel()], 1)])
    tris = []
    idx = lambda r, j: 1 + r * n_az + (j % n_az)  # noqa: E731
    for j in range(n_az):
        tris.append((0, idx(0, j + 1), idx(0, j)))
    for r in range(n_rings - 1):
        for j in range(n_az):
            a, b, c2, d = idx(r, j), idx(r, j + 1), idx(r + 1, j + 1), idx(r + 1, j)
            tris.append((a, b, c2))
            tris.append((a, c2, d))
    return verts, np.array(tris, dtype=np.int64), angles
