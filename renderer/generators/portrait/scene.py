"""The 2.5D scene a ``portrait`` session animates, built once when the session opens.

Frames of reference (all views share them):

- **head frame**: the fitted head's frame in metres (``fitting.PortraitFit``), y up, +z toward
  the photo's camera.
- **source frame**: the portrait crop resampled to ``size`` pixels a side, with ``pad`` pixels
  of margin on each side (the photo's edge pixels repeated where the crop leaves the photo),
  so that a person rotated in a side view never shows an edge. A head-frame point ``X`` lands
  at the continuous source pixel ``scale * (X_x, -X_y) + offset``; the crop itself (what the
  front view shows when the driver is at the photo's own pose) is ``[pad, pad + size)``.

The scene holds the source colours split into a person layer (premultiplied by the person's
alpha from mediapipe's selfie segmentation, merged with the face FaceMesh found) and a still
background filled where the person was; and a grid over the source frame whose vertices carry
a depth (the fitted head's surface where the head is, extended smoothly over hair, neck and
shoulders, rounded off toward the person's outline) and a head weight (1 above the chin,
falling smoothly to 0 toward the shoulders).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flamecast.plugins import PortraitError

CROP_FACES = 2.6  # crop side, in face heights (forehead to chin)
CROP_DROP = 0.30  # the crop's centre sits this many face heights below the face's centre
PAD = 0.125  # margin on each side of the source frame, as a share of the crop side
MIN_FACE_PX = 48  # smaller faces are refused
FOREHEAD, CHIN = 10, 152  # FaceMesh landmark ids
PERSON_ALPHA = 0.02
FALLOFF_FACES = 0.9  # head weight falls from 1 at the chin to 0 this many face heights lower
EDGE_STRETCH = 0.3  # the grid's outer ring reaches this share of the crop side past the source frame
MARGIN_CELLS = 2.5  # the grid vertices moving with the person reach this many cells past its matte


@dataclass
class Crop:
    """The square of the portrait the views show: top-left corner and side, portrait pixels."""

    x0: float
    y0: float
    side: float


@dataclass
class Scene:
    size: int
    pad: int
    scale: float  # source pixels per metre
    offset: np.ndarray  # (2,) continuous source pixel of the head frame's origin
    person: np.ndarray  # (S, S, 4) uint8: RGB premultiplied by alpha, alpha
    background: np.ndarray  # (size, size, 3) uint8, the still background of every view
    reference: np.ndarray  # (size, size, 3) uint8, the portrait crop
    grid_src: np.ndarray  # (G, 2) float32 source index coordinates of the grid vertices
    grid_xyz: torch.Tensor  # (G, 3) head-frame points of the grid vertices
    grid_weight: torch.Tensor  # (G,) head weight of each vertex
    grid_person: torch.Tensor  # (G,) bool: the vertex moves with the person
    grid_faces: torch.Tensor  # (F, 3) long
    landmarks: np.ndarray  # (468+, 2) FaceMesh landmarks in source index coordinates
    face_px: float  # face height in source pixels

    @property
    def source_size(self) -> int:
        return self.size + 2 * self.pad

    def to_source(self, points: torch.Tensor) -> torch.Tensor:
        """Head-frame points (..., 3) -> source index coordinates x, y and depth in pixels
        toward the camera (..., 3)."""
        flip = points.new_tensor([1.0, -1.0, 1.0])
        out = points * flip * self.scale
        off = points.new_tensor([self.offset[0] - 0.5, self.offset[1] - 0.5, 0.0])
        return out + off


def choose_crop(landmarks: np.ndarray, width: int, height: int) -> Crop:
    """A head-and-shoulders square around the face; refuses faces too small or cut off."""
    pts = landmarks[:, :2]
    face_h = float(np.linalg.norm(pts[CHIN] - pts[FOREHEAD]))
    if face_h < MIN_FACE_PX:
        raise PortraitError(
            f"face too small ({face_h:.0f} pixels from forehead to chin): use a photo where the face "
            f"is at least {MIN_FACE_PX * 2} pixels tall, or crop the photo closer around the head")
    lo, hi = pts.min(0), pts.max(0)
    margin = 0.02 * face_h
    if lo[0] < -margin or lo[1] < -margin or hi[0] > width + margin or hi[1] > height + margin:
        raise PortraitError(
            "the face is cut off by the photo's edge: use a photo that shows the whole face with "
            "some room around it")
    centre = (lo + hi) / 2 + np.array([0.0, CROP_DROP * face_h])
    side = CROP_FACES * face_h
    return Crop(float(centre[0] - side / 2), float(centre[1] - side / 2), float(side))


def resample(image: np.ndarray, crop: Crop, size: int, pad: int, interpolation=None, repeat: bool = True) -> np.ndarray:
    """The crop (with ``pad`` extra pixels a side) resampled to ``size + 2 pad``; outside the
    photo its edge pixels repeat (``repeat`` False: zeros)."""
    import cv2

    k = size / crop.side
    if k < 1.0:  # anti-alias before downsampling
        sigma = 0.5 * (1.0 / k - 1.0) ** 0.5 * 1.2
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    n = size + 2 * pad
    m = np.array([[k, 0.0, 0.5 * k - k * crop.x0 + pad - 0.5], [0.0, k, 0.5 * k - k * crop.y0 + pad - 0.5]])
    return cv2.warpAffine(image, m, (n, n), flags=interpolation if interpolation is not None else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE if repeat else cv2.BORDER_CONSTANT)


def crop_landmarks(landmarks: np.ndarray, crop: Crop, size: int, pad: int) -> np.ndarray:
    """Portrait (continuous) landmark pixels -> source index coordinates."""
    k = size / crop.side
    return (landmarks[:, :2] - [crop.x0, crop.y0]) * k + pad - 0.5


def segment_person(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the person (hair, face, neck, clothes) in an RGB image, from
    mediapipe's selfie segmentation (its model ships inside the mediapipe wheel)."""
    import mediapipe

    with mediapipe.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        result = seg.process(np.ascontiguousarray(image[..., :3]))
    mask = result.segmentation_mask
    if mask is None:
        return np.zeros(image.shape[:2], np.float32)
    return np.clip(mask.astype(np.float32), 0.0, 1.0)


def beyond_photo(alpha: np.ndarray, in_photo: np.ndarray) -> np.ndarray:
    """``alpha`` where the source frame lies outside the photo replaced by the alpha of the
    nearest pixel inside it: a person cut by the photo's edge goes on past it, like the photo's
    repeated edge pixels, instead of ending in a line of filled background."""
    import cv2

    if in_photo.all() or not in_photo.any():
        return alpha
    _, labels = cv2.distanceTransformWithLabels((~in_photo).astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    ys, xs = np.nonzero(in_photo)  # the labelled (zero) pixels, in the order OpenCV numbers them
    nearest = alpha[ys, xs]
    out = alpha.copy()
    out[~in_photo] = nearest[labels[~in_photo] - 1]
    return out


def face_hull_mask(points: np.ndarray, n: int, soften: float) -> np.ndarray:
    """(n, n) float32: 1 inside the convex hull of ``points`` (source index coordinates)."""
    import cv2

    mask = np.zeros((n, n), np.float32)
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2)
    cv2.fillConvexPoly(mask, np.round(hull * 16).astype(np.int32), 1.0, lineType=cv2.LINE_AA, shift=4)
    return cv2.GaussianBlur(mask, (0, 0), max(0.5, soften)) if soften > 0 else mask


def fill_background(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``image`` with the pixels where ``hole`` is True filled from their surroundings
    (push-pull: a pyramid of masked averages, the coarsest level first), smooth and seamless."""
    import cv2

    known = (~hole).astype(np.float32)
    levels = [(image.astype(np.float32) * known[..., None], known)]
    while min(levels[-1][1].shape) > 4:
        c, w = levels[-1]
        levels.append((cv2.pyrDown(c), cv2.pyrDown(w)))
    c, w = levels[-1]
    fill = c.sum((0, 1)) / max(float(w.sum()), 1e-6) * np.ones_like(c)
    for c, w in reversed(levels):
        up = cv2.resize(fill, (c.shape[1], c.shape[0]), interpolation=cv2.INTER_LINEAR)
        own = c / np.maximum(w, 1e-6)[..., None]
        t = np.clip(w * 4.0, 0.0, 1.0)[..., None]
        fill = own * t + up * (1.0 - t)
    out = image.astype(np.float32).copy()
    out[hole] = fill[hole]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def mouth_polygon(points: np.ndarray) -> np.ndarray:
    """The inner lip outline (FaceMesh ids) of landmarks (468+, 2)."""
    return points[list(INNER_UPPER) + list(INNER_LOWER[::-1][1:-1])]


INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)


def polygon_mask(poly: np.ndarray, n: int) -> np.ndarray:
    import cv2

    mask = np.zeros((n, n), np.float32)
    cv2.fillPoly(mask, [np.round((poly + 0.5) * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    return mask


GRID = 48  # grid vertices along each side of the source frame
DEPTH_OFFSET = 1.0e4  # camera depth (pixels) of the head centre: barycentrics stay affine


def build_scene(head, fit, portrait, size: int, grid: int = GRID) -> Scene:
    """Everything a session animates, from the portrait and the head fitted to it."""
    import cv2

    h, w = portrait.image.shape[:2]
    crop = choose_crop(portrait.landmarks, w, h)
    pad = int(round(PAD * size))
    n = size + 2 * pad
    rgb = resample(portrait.image, crop, size, pad)
    lmk = crop_landmarks(portrait.landmarks, crop, size, pad)
    k = size / crop.side
    scale = fit.scale * k
    offset = (fit.offset.cpu().numpy() - [crop.x0, crop.y0]) * k + pad
    face_px = float(np.linalg.norm(lmk[CHIN] - lmk[FOREHEAD]))
    alpha = np.maximum(segment_person(rgb), face_hull_mask(lmk, n, 0.03 * face_px))
    alpha = beyond_photo(alpha, resample(np.ones((h, w), np.float32), crop, size, pad, repeat=False) > 0.99)
    hole = cv2.dilate((alpha > PERSON_ALPHA).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    background = fill_background(rgb, hole)
    a = alpha[..., None]
    fore = np.clip(rgb.astype(np.float32) - (1.0 - a) * background, 0.0, 255.0 * a)
    person = np.concatenate([fore, alpha[..., None] * 255.0], -1)
    person = np.clip(person + 0.5, 0, 255).astype(np.uint8)
    scene = Scene(
        size=size, pad=pad, scale=scale, offset=offset, person=person,
        background=np.ascontiguousarray(background[pad:pad + size, pad:pad + size]),
        reference=np.ascontiguousarray(rgb[pad:pad + size, pad:pad + size]),
        grid_src=np.zeros((0, 2), np.float32), grid_xyz=torch.zeros(0, 3), grid_weight=torch.zeros(0),
        grid_person=torch.zeros(0, dtype=torch.bool), grid_faces=torch.zeros(0, 3, dtype=torch.long),
        landmarks=lmk, face_px=face_px,
    )
    _add_grid(scene, head, fit, alpha, grid)
    return scene


def _add_grid(scene: Scene, head, fit, alpha: np.ndarray, n: int) -> None:
    import cv2

    from .depth import person_depth

    size = scene.source_size
    step = (size - 1) / (n - 1)
    axis = np.arange(n) * step
    u, v = np.meshgrid(axis, axis)
    src = np.stack([u.ravel(), v.ravel()], 1).astype(np.float32)
    uf, vf = u.astype(np.float32), v.astype(np.float32)
    solid = cv2.remap(alpha, uf, vf, cv2.INTER_LINEAR) > 0.5
    k = int(2 * MARGIN_CELLS * step) | 1
    grown = cv2.dilate((alpha > PERSON_ALPHA).astype(np.uint8), np.ones((k, k), np.uint8))
    person = cv2.remap(grown.astype(np.float32), uf, vf, cv2.INTER_LINEAR) > 0
    centre_z = head_centre(head, fit)[2]
    z = person_depth(scene, head, fit, person, solid, u, v, centre_z)
    pu, pv = _stretch_border(u, v, EDGE_STRETCH * scene.size)
    xyz = np.stack([(pu.ravel() + 0.5 - scene.offset[0]) / scene.scale,
                    -(pv.ravel() + 0.5 - scene.offset[1]) / scene.scale, z.ravel()], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    scene.grid_src = src
    scene.grid_xyz = torch.tensor(xyz, dtype=torch.float32)
    scene.grid_weight = torch.tensor(head_weight(v.ravel(), scene), dtype=torch.float32)
    scene.grid_person = torch.tensor(person.ravel())
    scene.grid_faces = torch.tensor(faces, dtype=torch.long)


def _stretch_border(u: np.ndarray, v: np.ndarray, by: float):
    """Grid positions with the outermost ring pushed ``by`` pixels outward (its source pixels
    unchanged): a person cut by the frame's edge goes on past it (its edge pixels stretched), so
    a turned view never shows where the source frame ends."""
    pu, pv = u.copy(), v.copy()
    pu[:, 0] -= by
    pu[:, -1] += by
    pv[0, :] -= by
    pv[-1, :] += by
    return pu, pv


def head_weight(rows: np.ndarray, scene: Scene) -> np.ndarray:
    """How much of the head's rotation a point at source row ``rows`` follows: 1 down to the
    chin, easing to 0 ``FALLOFF_FACES`` face heights lower (the neck bends, the shoulders stay)."""
    t = np.clip((rows - scene.landmarks[CHIN, 1]) / (FALLOFF_FACES * scene.face_px), 0.0, 1.0)
    return 1.0 - t * t * (3.0 - 2.0 * t)


def head_centre(head, fit) -> np.ndarray:
    """Centre of the fitted skull's bounding box (head frame, metres)."""
    with torch.no_grad():
        verts = head(pose=fit.pose[None], shape=fit.shape[None], expression=fit.expression[None]).vertices[0]
    regions = head.vertex_regions()
    if regions:
        verts = verts[torch.cat([regions[k] for k in ("face", "scalp") if k in regions])]
    return ((verts.min(0).values + verts.max(0).values) / 2).cpu().numpy()
