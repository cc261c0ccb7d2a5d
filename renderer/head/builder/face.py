"""The face surface of the built-in head: mediapipe FaceMesh's 468 points and tesselation.

The points come from one FaceMesh run on scikit-image's astronaut photograph (public domain,
NASA); the triangles from the edge list mediapipe ships (Apache-2.0). The face is made
left/right symmetric and scaled to metres in FLAME's frame (y up, +z forward, +x = the
avatar's left).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

IPD_M = 0.063  # distance between the eye centres, metres


def facemesh_points() -> np.ndarray:
    """(468, 3) FaceMesh landmarks of the astronaut photo, in pixels (x right, y down, z away)."""
    import mediapipe as mp
    import skimage.data

    image = skimage.data.astronaut()
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=False
    ) as mesh:
        result = mesh.process(image)
    if not result.multi_face_landmarks:
        raise RuntimeError("FaceMesh found no face in the astronaut photo")
    h, w = image.shape[:2]
    pts = result.multi_face_landmarks[0].landmark
    return np.array([[p.x * w, p.y * h, p.z * w] for p in pts], dtype=np.float64)


def tesselation_triangles() -> np.ndarray:
    """(852, 3) triangles of FaceMesh's tesselation, from its (unordered) edge list.

    Every 3-clique of the edge graph is a triangle except the ones whose three edges all
    border two other triangles already (2 such cliques); those are dropped.
    """
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    edges = {tuple(sorted(e)) for e in FACEMESH_TESSELATION}
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    tris = {tuple(sorted((a, b, k))) for a, b in edges for k in adj[a] & adj[b]}
    count = Counter(e for t in tris for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))
    real = [t for t in tris if not all(count[e] == 3 for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))]
    from .meshops import orient_consistently

    return orient_consistently(np.array(sorted(real), dtype=np.int64))


def to_flame_frame(px: np.ndarray) -> np.ndarray:
    """Pixels (x right, y down, z away from the camera) -> FLAME axes, same units."""
    return np.stack([px[:, 0], -px[:, 1], -px[:, 2]], 1)


def mirror_pairs(points: np.ndarray) -> np.ndarray:
    """perm with points[perm[i]] the mirror partner of points[i] (x -> -x), by optimal matching."""
    from scipy.optimize import linear_sum_assignment

    mirrored = points * np.array([-1.0, 1.0, 1.0])
    cost = np.linalg.norm(points[:, None] - mirrored[None], axis=-1)
    _, perm = linear_sum_assignment(cost)
    return perm


def _rotation_to(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking unit vector a to unit vector b."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def symmetrize(points: np.ndarray, iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the face so its symmetry plane is x = 0, then average it with its mirror image.

    Returns the symmetric points and the mirror permutation.
    """
    p = points - points.mean(0)
    for _ in range(iterations):
        perm = mirror_pairs(p)
        diff = p - p[perm]
        sign = np.sign(diff[:, 0:1])
        sign[sign == 0] = 1
        normal = (diff * sign).sum(0)
        normal /= np.linalg.norm(normal)
        p = p @ _rotation_to(normal, np.array([1.0, 0.0, 0.0])).T
        mid = (p + p[perm]) / 2
        p = p - np.array([mid[:, 0].mean(), 0, 0])
    perm = mirror_pairs(p)
    sym = (p + p[perm] * np.array([-1.0, 1.0, 1.0])) / 2
    return sym, perm


def eye_loops(tris: np.ndarray) -> dict[str, list[int]]:
    """Boundary loops of the tesselation: 'oval', 'mouth', 'eye_a', 'eye_b' (order as traced)."""
    from .meshops import boundary_loops

    loops = sorted(boundary_loops(tris), key=len)
    eyes, mouth, oval = loops[:2], loops[2], loops[3]
    return {"oval": oval, "mouth": mouth, "eye_a": eyes[0], "eye_b": eyes[1]}


PITCH_DEG = -8.0  # the photo's face leans back a little; bring the chin forward


def metric_face(px: np.ndarray, tris: np.ndarray, pitch_deg: float = PITCH_DEG) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric face in metres, FLAME axes; returns points and the mirror permutation."""
    p = to_flame_frame(px)
    p, perm = symmetrize(p)
    a = np.radians(pitch_deg)
    rot_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    p = p @ rot_x.T
    loops = eye_loops(tris)
    c1 = p[loops["eye_a"]].mean(0)
    c2 = p[loops["eye_b"]].mean(0)
    p *= IPD_M / np.linalg.norm(c1 - c2)
    return p, perm
