"""Eyeballs, the closed-mouth neutral and the mouth cavity of the built-in head."""

from __future__ import annotations

import numpy as np

from . import meshops

EYE_RADIUS = 0.0120


def close_mouth(verts: np.ndarray, tris: np.ndarray, loop: list[int], gap: float = 0.0004) -> np.ndarray:
    """Bring the inner lips together (the photo's mouth is open) and carry the lips along.

    The inner-lip loop is split at the mouth corners (FaceMesh 78 and 308) into an upper and a
    lower arc with the same number of points; matching points meet at their midpoint.
    """
    upper, lower = lip_arcs(verts, loop)
    mid = (verts[upper] + verts[lower]) / 2
    disp_u = mid + np.array([0, gap, 0]) - verts[upper]
    disp_l = mid - np.array([0, gap, 0]) - verts[lower]
    return _deform(verts, tris, np.concatenate([upper, lower]), np.concatenate([disp_u, disp_l]), verts[13], 0.035)


def lip_arcs(verts: np.ndarray, loop: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower inner-lip arcs between the corners, both ordered from 78 to 308."""
    loop = list(loop)
    i = loop.index(78)
    rolled = loop[i:] + loop[:i]
    k = rolled.index(308)
    first, second = rolled[1:k], rolled[k + 1 :][::-1]
    if len(first) != len(second):
        raise ValueError("the inner-lip loop is not symmetric")
    a, b = np.array(first), np.array(second)
    return (a, b) if verts[a, 1].mean() > verts[b, 1].mean() else (b, a)


def _deform(verts, tris, handles, disp, center, radius):
    """Harmonic deformation: handles move by disp, vertices beyond radius of center stay."""
    lap = meshops.laplacian(len(verts), tris)
    far = np.nonzero(np.linalg.norm(verts - center, axis=1) > radius)[0]
    far = np.setdiff1d(far, handles)
    fixed = np.concatenate([handles, far])
    values = np.concatenate([disp, np.zeros((len(far), 3))])
    return verts + meshops.harmonic(lap, fixed, values)


CORNEA = 1.12  # the cornea stands out this much beyond the eyeball radius


def eye_center(loop_pts: np.ndarray, radius: float = EYE_RADIUS) -> np.ndarray:
    """Eyeball centre: the cornea apex sits just behind the middle of the lid margins."""
    m = loop_pts.mean(0)
    middle = loop_pts[np.argsort(np.abs(loop_pts[:, 0] - m[0]))[:4]]
    front = middle[:, 2].mean() - 0.0015
    return np.array([m[0], m[1], front - radius * CORNEA])


def eye_socket(verts: np.ndarray, loop: list[int], center: np.ndarray):
    """A cone from the lid margin to the eyeball centre, so no gap beside the ball shows through."""
    lip = verts[loop]
    n = len(loop)
    base = len(verts)
    rings = [lip + (center - lip) * t for t in (0.3, 0.6)]
    new = np.concatenate(rings + [center[None]])
    ids = [np.asarray(loop)] + [np.arange(base + k * n, base + (k + 1) * n) for k in range(len(rings))]
    tris = []
    for a_ring, b_ring in zip(ids[:-1], ids[1:]):
        for j in range(n):
            a, b, c, d = a_ring[j], a_ring[(j + 1) % n], b_ring[(j + 1) % n], b_ring[j]
            tris += [(a, b, c), (a, c, d)]
    cap = base + len(rings) * n
    tris += [(ids[-1][j], ids[-1][(j + 1) % n], cap) for j in range(n)]
    return new, np.array(tris, np.int64)


def eyeball(center: np.ndarray, radius: float = EYE_RADIUS, n_lat: int = 10, n_lon: int = 16):
    """UV sphere facing +z with a cornea bulge; returns verts, tris (outward, CCW)."""
    th = np.linspace(0, np.pi, n_lat + 1)[1:-1]  # angle from +z
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    bulge = 1.0 + (CORNEA - 1.0) * np.clip(np.cos(t * 2.6), 0, None) * (t < np.pi / 5.2)
    r = radius * bulge
    pts = np.stack([r * np.sin(t) * np.cos(p), r * np.sin(t) * np.sin(p), r * np.cos(t)], -1).reshape(-1, 3)
    front = np.array([[0, 0, radius * CORNEA]])
    back = np.array([[0, 0, -radius]])
    verts = np.concatenate([front, pts, back]) + center
    tris = _sphere_faces(n_lat, n_lon)
    n = meshops.face_normals(verts, tris)
    if np.mean(((verts[tris].mean(1) - center) * n).sum(1)) < 0:
        tris = tris[:, [0, 2, 1]]
    return verts, tris


def mouth_bag(verts: np.ndarray, loop: list[int], depth: float = 0.032):
    """Rings behind the inner-lip loop closing into a cavity; returns new verts, tris, rings.

    Ring k sits further back and opens up and down; the last ring is closed by a centre vertex.
    """
    lip = verts[loop]
    center = lip.mean(0)
    upper = lip[:, 1] >= center[1]
    half = np.abs(lip[:, 0] - center[0]).max()
    # the cavity opens least at the mouth corners, where the lips are thin
    taper = np.clip(1.0 - (np.abs(lip[:, 0] - center[0]) / half) ** 2, 0.1, 1.0)
    steps = [(0.004, 0.003, 0.97), (0.012, 0.010, 0.9), (0.022, 0.013, 0.75), (depth, 0.010, 0.5)]
    new, rings = [], []
    base = len(verts)
    for k, (back, open_, squeeze) in enumerate(steps):
        ring = lip.copy()
        ring[:, 0] = center[0] + (ring[:, 0] - center[0]) * squeeze
        ring[:, 1] += np.where(upper, open_, -open_) * (taper if k < 2 else 1.0)
        ring[:, 2] = lip[:, 2] - back
        rings.append(np.arange(base, base + len(loop)))
        base += len(loop)
        new.append(ring)
    cap = center - np.array([0, 0, depth + 0.004])
    new_verts = np.concatenate(new + [cap[None]])
    cap_idx = base
    tris = []
    prev = np.asarray(loop)
    n = len(loop)
    for ring in rings:
        for j in range(n):
            a, b, c, d = prev[j], prev[(j + 1) % n], ring[(j + 1) % n], ring[j]
            tris += [(a, b, c), (a, c, d)]
        prev = ring
    tris += [(prev[j], prev[(j + 1) % n], cap_idx) for j in range(n)]
    return new_verts, np.array(tris, np.int64), rings


# (landmark on the avatar's left, its mirror, displacement for the left one)
_NEUTRAL_MOUTH = (
    (291, 61, (-0.003, -0.0045, 0.0)),
    (308, 78, (-0.003, -0.0045, 0.0)),
    (409, 185, (-0.0015, -0.003, 0.0)),
    (415, 191, (-0.0015, -0.003, 0.0)),
    (375, 146, (-0.0015, -0.0025, 0.0)),
    (324, 95, (-0.0015, -0.0025, 0.0)),
    (425, 205, (0.0, -0.0015, -0.001)),
)


def neutral_mouth(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Lower and narrow the photo's smiling mouth corners so the neutral face is neutral."""
    handles, disp = [], []
    for left, right, d in _NEUTRAL_MOUTH:
        handles += [left, right]
        disp += [d, (-d[0], d[1], d[2])]
    handles += [13, 14, 0, 17]
    disp += [(0.0, -0.0005, 0.0)] * 4
    return _deform(verts, tris, np.array(handles), np.array(disp, float), verts[13], 0.045)


def _unit_sphere(n_lat: int, n_lon: int):
    """Unit UV sphere about +z (poles on z), outward counter-clockwise triangles."""
    th = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    pts = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 0, 1.0]], pts, [[0, 0, -1.0]]])
    return verts, _sphere_faces(n_lat, n_lon)


def _sphere_faces(n_lat: int, n_lon: int) -> np.ndarray:
    """Triangles of a UV sphere laid out as [front pole, (n_lat - 1) rings of n_lon, back pole]."""
    idx = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    tris = [(0, idx(0, j), idx(0, j + 1)) for j in range(n_lon)]
    for i in range(n_lat - 2):
        for j in range(n_lon):
            tris += [(idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)), (idx(i, j), idx(i + 1, j + 1), idx(i, j + 1))]
    last = 1 + (n_lat - 1) * n_lon
    tris += [(last, idx(n_lat - 2, j + 1), idx(n_lat - 2, j)) for j in range(n_lon)]
    return np.array(tris, np.int64)


def ear(side_sign: float, center: np.ndarray, height=0.060, width=0.032, thickness=0.011):
    """A simple ear: a flattened, cupped ellipsoid leaning back and standing off the head.

    ``center`` is where the ear meets the side of the head; side_sign is +1 for the
    avatar's left (+x) ear.
    """
    u, tris = _unit_sphere(12, 18)
    # local frame: x out of the head, y up, z forward
    x, y, z = u[:, 2], u[:, 0], u[:, 1]
    r2 = y**2 + z**2
    x = x - 0.55 * np.exp(-r2 / 0.35) * (x > -0.2)  # the cup (concha) on the outer side
    local = np.stack([x * thickness / 2, y * height / 2, z * width / 2], 1)
    back = np.radians(15.0)  # lean back
    rx = np.array([[1, 0, 0], [0, np.cos(back), np.sin(back)], [0, -np.sin(back), np.cos(back)]])
    flare = np.radians(22.0)  # rear edge stands off the head
    ry = np.array([[np.cos(flare), 0, -np.sin(flare)], [0, 1, 0], [np.sin(flare), 0, np.cos(flare)]])
    local = local @ rx.T @ ry.T
    local[:, 0] *= side_sign
    verts = center + local
    n = meshops.face_normals(verts, tris)
    if np.mean(((verts[tris].mean(1) - verts.mean(0)) * n).sum(1)) < 0:
        tris = tris[:, [0, 2, 1]]
    return verts, tris
