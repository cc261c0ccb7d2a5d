"""Join the FaceMesh face to the implicit skull and neck, and add eyeballs and a mouth cavity."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import meshops, skull
from .face import eye_loops



@dataclass
class Geometry:
    """The neutral head before rigging. Face vertices come first (vertex i = FaceMesh point i)."""

    verts: np.ndarray
    tris: np.ndarray
    loops: dict[str, list[int]]
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    eye_centers: dict[str, np.ndarray] = field(default_factory=dict)
    mouth_rings: list[np.ndarray] = field(default_factory=list)
    params: skull.SkullParams | None = None


def skull_params(face: np.ndarray, loops: dict[str, list[int]]) -> skull.SkullParams:
    """Place skull, jaw and neck relative to the face landmarks."""
    eye_y = np.mean([face[loops["eye_a"]][:, 1].mean(), face[loops["eye_b"]][:, 1].mean()])
    glabella, chin = face[168], face[152]
    cz = glabella[2] - 0.097
    center = (0.0, eye_y + 0.012, cz)
    return skull.SkullParams(
        center=center,
        jaw_center=(0.0, chin[1] + 0.036, chin[2] - 0.040),
        neck_center_xz=(0.0, cz - 0.020),
        neck_top=eye_y - 0.010,
        y_bottom=chin[1] - 0.100,
    )


def _angles(points: np.ndarray, center: np.ndarray) -> np.ndarray:
    d = points - center
    az = np.arctan2(d[:, 0], d[:, 2])
    el = np.arcsin(d[:, 1] / np.linalg.norm(d, axis=1))
    return np.stack([az, el], 1)


def _fit_to_oval(verts, oval_pts, params, sigma=0.35):
    """Scale grid radii so the grid meets the face outline (angular Gaussian blending)."""
    c = np.asarray(params.center)
    oval_ang = _angles(oval_pts, c)
    dirs = skull.direction(oval_ang[:, 0], oval_ang[:, 1])
    base = skull.cast(c, dirs, params)
    ratio = np.linalg.norm(oval_pts - c, axis=1) / base
    gdirs = (verts - c) / np.linalg.norm(verts - c, axis=1, keepdims=True)
    cosang = np.clip(gdirs @ dirs.T, -1, 1)
    ang = np.arccos(cosang)
    w = np.exp(-((ang / sigma) ** 2))
    fade = np.exp(-((ang.min(1) / sigma) ** 2))
    corr = 1.0 + fade * ((w * (ratio - 1.0)).sum(1) / (w.sum(1) + 1e-12))
    return c + (verts - c) * corr[:, None]


def _remove_footprint(gverts, gtris, gang, oval_ang, margin):
    from skimage.measure import points_in_poly

    inside = points_in_poly(gang, oval_ang)
    # also drop grid vertices within `margin` (radians) of the outline
    seg_a, seg_b = oval_ang, np.roll(oval_ang, -1, axis=0)
    d = seg_b - seg_a
    rel = gang[:, None, :] - seg_a[None]
    t = np.clip((rel * d).sum(-1) / ((d * d).sum(-1) + 1e-12), 0, 1)
    dist = np.linalg.norm(rel - t[..., None] * d, axis=-1).min(1)
    drop = inside | (dist < margin)
    keep_tri = ~drop[gtris].any(1)
    used = np.unique(gtris[keep_tri])
    remap = -np.ones(len(gverts), np.int64)
    remap[used] = np.arange(len(used))
    return gverts[used], remap[gtris[keep_tri]], gang[used]


def _signed_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def join_face_and_skull(face: np.ndarray, face_tris: np.ndarray, n_az=48, n_rings=34) -> Geometry:
    loops = eye_loops(face_tris)
    params = skull_params(face, loops)
    c = np.asarray(params.center)
    gverts, gtris, gang = skull.grid(params, n_az=n_az, n_rings=n_rings)
    oval = loops["oval"]
    gverts = _fit_to_oval(gverts, face[oval], params)
    oval_ang = _angles(face[oval], c)
    gverts, gtris, gang = _remove_footprint(gverts, gtris, gang, oval_ang, margin=0.6 * 2 * np.pi / n_az)
    n_face = len(face)
    verts = np.concatenate([face, gverts])
    gtris = gtris + n_face
    hole = min(meshops.boundary_loops(gtris), key=lambda lp: np.linalg.norm(verts[lp].mean(0) - face[oval].mean(0)))
    oval_l, hole_l = list(oval), list(hole)
    if np.sign(_signed_area(oval_ang)) != np.sign(_signed_area(_angles(verts[hole_l], c))):
        hole_l = hole_l[::-1]
    start_a = oval_l.index(10)
    oval_l = oval_l[start_a:] + oval_l[:start_a]
    start_b = int(np.argmin(np.linalg.norm(verts[hole_l] - face[10], axis=1)))
    hole_l = hole_l[start_b:] + hole_l[:start_b]
    strip = meshops.zipper(oval_l, hole_l, verts)
    tris = np.concatenate([face_tris, strip, gtris])
    tris = meshops.orient_consistently(tris)
    normals = meshops.face_normals(verts, tris)
    centroids = verts[tris].mean(1)
    if np.mean(((centroids - c) * normals).sum(1)) < 0:
        tris = tris[:, [0, 2, 1]]
    # relax the grid next to the seam (face vertices stay where FaceMesh put them)
    movable = np.zeros(len(verts), bool)
    near = np.linalg.norm(verts[:, None] - face[oval][None], axis=-1).min(1) < 0.025
    movable[n_face:] = near[n_face:]
    verts = meshops.smooth_free(verts, tris, movable, iterations=6, step=0.5)
    regions = {"face": np.arange(n_face), "scalp_and_neck": np.arange(n_face, len(verts))}
    return Geometry(verts=verts, tris=tris, loops=loops, regions=regions, params=params)


def full_geometry(face: np.ndarray, face_tris: np.ndarray) -> Geometry:
    """Skin (face + skull + neck + mouth cavity) followed by the two eyeballs."""
    from . import parts

    g = join_face_and_skull(face, face_tris)
    verts = parts.neutral_mouth(parts.close_mouth(g.verts, g.tris, g.loops["mouth"]), g.tris)
    bag_verts, bag_tris, rings = parts.mouth_bag(verts, g.loops["mouth"])
    n_skin0 = len(verts)
    verts = np.concatenate([verts, bag_verts])
    tris = meshops.orient_consistently(np.concatenate([g.tris, bag_tris]))
    g.regions["mouth_inside"] = np.arange(n_skin0, len(verts))
    sockets = []
    for key in ("eye_a", "eye_b"):
        center = parts.eye_center(verts[g.loops[key]])
        sv, st = parts.eye_socket(verts, g.loops[key], center)
        sockets.append(np.arange(len(verts), len(verts) + len(sv)))
        tris = np.concatenate([tris, st])
        verts = np.concatenate([verts, sv])
    tris = meshops.orient_consistently(tris)
    g.regions["eye_sockets"] = np.concatenate(sockets)
    eyes = {}
    for key in ("eye_a", "eye_b"):
        center = parts.eye_center(verts[g.loops[key]])
        side = "eye_left" if center[0] > 0 else "eye_right"  # +x is the avatar's left
        ev, et = parts.eyeball(center)
        g.regions[side] = np.arange(len(verts), len(verts) + len(ev))
        tris = np.concatenate([tris, et + len(verts)])
        verts = np.concatenate([verts, ev])
        eyes[side] = center
        g.loops[side] = g.loops[key]
    g.regions["eyes"] = np.concatenate([g.regions["eye_left"], g.regions["eye_right"]])
    verts, tris = _add_ears(g, verts, tris)
    g.verts, g.tris, g.eye_centers, g.mouth_rings = verts, tris, eyes, rings
    return g


def _add_ears(g: Geometry, verts: np.ndarray, tris: np.ndarray):
    """Two ears against the sides of the head, behind the jaw hinge, between brow and nose base."""
    from . import parts

    y = (verts[168, 1] + verts[2, 1]) / 2 - 0.004
    z = verts[234, 2] - 0.030
    skin = np.concatenate([g.regions["face"], g.regions["scalp_and_neck"]])
    near = skin[(np.abs(verts[skin, 1] - y) < 0.012) & (np.abs(verts[skin, 2] - z) < 0.012)]
    ears = []
    for sign in (1.0, -1.0):
        side_x = np.max(verts[near, 0] * sign)
        ev, et = parts.ear(sign, np.array([sign * (side_x + 0.002), y, z]))
        ears.append(np.arange(len(verts), len(verts) + len(ev)))
        tris = np.concatenate([tris, et + len(verts)])
        verts = np.concatenate([verts, ev])
    g.regions["ears"] = np.concatenate(ears)
    return verts, tris
