"""Depth of the whole person in the photo, at the scene's grid vertices (head frame, metres,
+z toward the photo's camera).

- **Face**: the fitted head's own surface, inside the outline of the face FaceMesh found.
- **Hair, skull, ears**: a smooth continuation of the head's surface (the scalp a little
  raised for the hair), rounded off toward the person's outline like the top and sides of a
  head: the height above the silhouette's depth shrinks as ``sqrt(1 - (1 - d / W)^2)`` with the
  distance ``d`` to the outline, so the outline is a rim seen edge-on, not a cut.
- **Neck and body**: the head model's neck, then the chest a few centimetres behind the chin,
  joined smoothly (a push-pull fill between the known parts) and rounded off in the same way
  toward the shoulders.
- **Margin**: grid vertices just outside the person sit at the silhouette's depth, so the soft
  edge of the matte moves with the person.
"""

from __future__ import annotations

import numpy as np
import torch

HAIR_M = 0.012  # hair over the scalp (metres)
CHEST_BEHIND_CHIN_M = 0.055  # the chest's depth below the chin's (metres)
SILHOUETTE_BEHIND_M = 0.01  # the outline's depth behind the head's centre (metres)
ROUND_FACES = 0.45  # width of the rounded rim along the outline, in face heights
BODY_FACES = 0.8  # the chest is known from this many face heights below the chin
MAX_SLOPE = 1.2  # steepest fall of the depth outside the face (about 50 degrees)
SLOPE_ITERATIONS = 8


def push_pull(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``values`` where ``weights`` (0..1) are high, smoothly filled elsewhere: a pyramid of
    weighted averages, the coarsest level first (2D float arrays, any size >= 2)."""
    import cv2

    levels = [(values.astype(np.float32) * weights, weights.astype(np.float32))]
    while min(levels[-1][1].shape) > 2:
        v, w = levels[-1]
        levels.append((cv2.pyrDown(v), cv2.pyrDown(w)))
    v, w = levels[-1]
    fill = np.full_like(v, float(v.sum()) / max(float(w.sum()), 1e-6))
    for v, w in reversed(levels):
        up = cv2.resize(fill, (v.shape[1], v.shape[0]), interpolation=cv2.INTER_LINEAR)
        own = v / np.maximum(w, 1e-6)
        t = np.clip(w * 4.0, 0.0, 1.0)
        fill = own * t + up * (1.0 - t)
    return fill


def head_depth_on_grid(scene, head, fit, n: int, step: float):
    """The fitted head's nearest surface at each grid vertex: (z metres, covered, region id)
    with region 0 face, 1 scalp, 2 other (ears, neck, eyes)."""
    from flamecast.renderer.raster import rasterize_torch

    from .scene import DEPTH_OFFSET

    with torch.no_grad():
        verts = head(pose=fit.pose[None], shape=fit.shape[None], expression=fit.expression[None]).vertices[0]
    p = scene.to_source(verts.cpu())
    screen = torch.stack([p[:, 0] / step + 0.5, p[:, 1] / step + 0.5, DEPTH_OFFSET - p[:, 2]], -1)
    faces = head.faces.cpu()
    frags = rasterize_torch(screen[None], faces, n, cull_backfaces=True)
    covered = frags.mask[0].numpy()
    z = ((DEPTH_OFFSET - frags.depth[0].numpy()) / scene.scale).astype(np.float64)
    label = torch.full((verts.shape[0],), 2, dtype=torch.long)
    regions = head.vertex_regions()
    for name, value in (("scalp", 1), ("face", 0)):
        if name in regions:
            label[regions[name].cpu()] = value
    face_label = label[faces].max(1).values  # a triangle touching a non-face vertex is not face
    region = np.full((n, n), 2, np.int64)
    idx = frags.face_idx[0].numpy()
    region[covered] = face_label.numpy()[idx[covered]]
    return np.where(covered, z, 0.0), covered, region


def person_depth(scene, head, fit, person: np.ndarray, solid: np.ndarray, u: np.ndarray, v: np.ndarray,
                 centre_z: float) -> np.ndarray:
    """(n, n) head-frame depth of every grid vertex (see the module docstring). ``person``: the
    vertices that move with the person (the matte and its margin); ``solid``: the vertices inside
    the matte proper; ``u, v``: their source coordinates; ``centre_z``: the head's centre depth."""
    import cv2

    from .scene import CHIN, face_hull_mask

    n = u.shape[0]
    step = (scene.source_size - 1) / (n - 1)
    z_head, covered, region = head_depth_on_grid(scene, head, fit, n, step)
    face = face_hull_mask(scene.landmarks / step, n, 0.0)
    face = cv2.GaussianBlur(cv2.erode(face, np.ones((3, 3), np.float32)), (0, 0), 0.8) * covered
    chin_z = _chin_depth(head, fit)
    body = solid & (v > scene.landmarks[CHIN, 1] + BODY_FACES * scene.face_px)
    known = np.where(covered, np.where(region == 1, 0.5, 0.8), 0.0)
    known = np.maximum(known, face)
    known = np.where(body, 1.0, known).astype(np.float32)
    value = np.where(body, chin_z - CHEST_BEHIND_CHIN_M, z_head + HAIR_M * (region == 1))
    filled = push_pull(value, known).astype(np.float64)
    base = centre_z - SILHOUETTE_BEHIND_M
    inside = cv2.distanceTransform(solid.astype(np.uint8), cv2.DIST_L2, 5) * step  # source pixels
    t = np.clip(inside / (ROUND_FACES * scene.face_px), 0.0, 1.0)
    rounded = base + np.maximum(filled - base, 0.0) * np.sqrt(1.0 - (1.0 - t) ** 2)
    smooth = cv2.GaussianBlur(rounded, (0, 0), 1.0)
    out = face * z_head + (1.0 - face) * smooth
    out = np.where(person | covered, out, base)
    return limit_slope(out, step / scene.scale, face < 0.5)


def limit_slope(z: np.ndarray, step_m: float, free: np.ndarray) -> np.ndarray:
    """Raise the ``free`` vertices so that the surface nowhere falls faster than ``MAX_SLOPE``
    away from its neighbours: hair and neck beside the face turn with the cheek's edge instead
    of folding behind it along a line of grid cells."""
    import cv2

    drop = MAX_SLOPE * step_m
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(SLOPE_ITERATIONS):
        raised = np.maximum(z, cv2.dilate(z, kernel) - drop)
        z = np.where(free, raised, z)
    return z


def _chin_depth(head, fit) -> float:
    from .scene import CHIN

    with torch.no_grad():
        lmk = head(pose=fit.pose[None], shape=fit.shape[None], expression=fit.expression[None]).landmarks[0]
    return float(lmk[CHIN, 2])
