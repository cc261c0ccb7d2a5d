"""The inside of the mouth, drawn where the driven lips part wider than the photo's.

The photo has no pixels for an open mouth, and warping its own (a smile's teeth) stretches
them into fangs at the corners. So inside the driven inner-lip outline a mouth is drawn: a
dark cavity, darker toward the corners and the back; a tongue low in it; and a band of upper
teeth hanging from the upper lip, fading out before the corners. The teeth are the photo's own
when the photo smiles with them, sampled at their own scale along the lip (never stretched
downward), otherwise synthesized. The lips (the warped photo outside the outline) mask it, with
anti-aliased edges; it fades in over the first millimetres of opening, so at the photo's own
expression the photo's mouth is untouched.
"""

from __future__ import annotations

import numpy as np

from .scene import INNER_LOWER, INNER_UPPER, mouth_polygon, polygon_mask

CAVITY = np.array([46.0, 18.0, 22.0])
TONGUE = np.array([150.0, 64.0, 70.0])
TEETH = np.array([214.0, 204.0, 182.0])
TEETH_FACES = 0.045  # height of synthesized upper teeth, in face heights
PHOTO_TEETH_FACES = 0.065  # most of the photo's teeth band used, in face heights
OPEN_RAMP_FACES = 0.012  # the drawn mouth fades in over this much more opening (face heights)
CORNER = 0.2  # teeth fade out over this share of the mouth's width at each corner


class Mouth:
    """Draws the inside of the mouth for one portrait (see the module docstring)."""

    def __init__(self, scene, fit_landmarks: np.ndarray) -> None:
        self.scene = scene
        self.face_px = scene.face_px
        self.rest_gap = mean_gap(fit_landmarks)
        self.photo = _lip_lines(scene.landmarks)
        self.photo_teeth = shows_teeth(scene)
        self.teeth_colour = TEETH * min(1.0, (skin_luminance(scene) / 170.0) ** 0.5)

    def draw(self, image: np.ndarray, landmarks: np.ndarray, origin: tuple[int, int]) -> None:
        """Paint into ``image`` (h, w, 4 premultiplied, its top-left at source pixel ``origin``)
        the mouth of the driven landmarks (source coordinates)."""
        amount = np.clip((mean_gap(landmarks) - self.rest_gap) / (OPEN_RAMP_FACES * self.face_px), 0.0, 1.0)
        if amount <= 0.0:
            return
        poly = mouth_polygon(landmarks) - origin
        lo = np.floor(poly.min(0)).astype(int) - 1
        hi = np.ceil(poly.max(0)).astype(int) + 2
        h, w = image.shape[:2]
        x0, y0, x1, y1 = max(0, lo[0]), max(0, lo[1]), min(w, hi[0]), min(h, hi[1])
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        inside = polygon_mask(poly - [x0, y0], max(x1 - x0, y1 - y0))[: y1 - y0, : x1 - x0]
        beta = (inside * amount)[..., None]
        if beta.max() <= 0.01:
            return
        colour = self.interior(landmarks - [origin[0] + x0, origin[1] + y0], y1 - y0, x1 - x0,
                               (origin[0] + x0, origin[1] + y0))
        region = image[y0:y1, x0:x1].astype(np.float32)
        region[..., :3] = region[..., :3] * (1 - beta) + colour * beta
        region[..., 3:] = region[..., 3:] * (1 - beta) + 255.0 * beta
        image[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)

    def interior(self, points: np.ndarray, h: int, w: int, origin) -> np.ndarray:
        """(h, w, 3) colours of the open mouth whose inner lips are ``points`` (local pixels)."""
        left, right, yu, yl = _lip_lines(points, w)
        xs = np.arange(w, dtype=np.float32)
        ys = np.arange(h, dtype=np.float32)[:, None]
        s = np.clip((xs - left) / max(right - left, 1.0), 0.0, 1.0)[None]
        gap = np.maximum(yl - yu, 0.5)[None]
        below = ys - yu[None]  # pixels below the upper lip
        t = np.clip(below / gap, 0.0, 1.0)
        side = np.abs(2.0 * s - 1.0)
        shade = (1.0 - 0.6 * side ** 2)[..., None]
        back = 1.0 - 0.35 * np.sin(np.pi * t)[..., None]  # deepest between the teeth and tongue
        colour = CAVITY * shade * back
        tongue = _smooth((t - 0.55) / 0.35) * _smooth(gap / (0.05 * self.face_px))
        colour = colour * (1 - tongue[..., None]) + TONGUE * shade * tongue[..., None]
        teeth_rgb, band = self._teeth(s, below, w, h, origin)
        fade = _smooth(np.minimum(s, 1.0 - s) / CORNER)
        band = band * (1.0 - 0.35 * side ** 2)  # the arch curves back: side teeth show shorter
        teeth = fade * np.clip((band - below) / 1.2 + 0.5, 0.0, 1.0) * (below > -1.0)
        lip_shadow = 0.7 + 0.3 * _smooth(below / np.maximum(0.35 * band, 1.0))  # under the upper lip
        lit = ((0.7 + 0.3 * (1.0 - side ** 2)) * lip_shadow)[..., None]
        return colour * (1 - teeth[..., None]) + teeth_rgb * lit * teeth[..., None]

    def _teeth(self, s, below, w, h, origin):
        """Teeth colours (h, w, 3) and the band's height in pixels (1, w) along the mouth."""
        import cv2

        if self.photo_teeth:
            left, right, yu, yl = self.photo
            columns = np.arange(len(yu), dtype=np.float32)
            xp = left + s[0] * (right - left)
            ju, jl = np.interp(xp, columns, yu), np.interp(xp, columns, yl)
            band = np.minimum(0.85 * np.maximum(jl - ju, 0.0), PHOTO_TEETH_FACES * self.face_px)[None]
            mx = np.broadcast_to(xp[None], (h, w)).astype(np.float32)
            my = (ju[None] + np.clip(below, 0.0, band)).astype(np.float32)
            rgb = cv2.remap(self.scene.person, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            return rgb[..., :3].astype(np.float32), band
        tooth = np.abs(np.sin(np.pi * (s - 0.5) * 6.0))  # 0 at the gaps between teeth
        band = TEETH_FACES * self.face_px * (0.88 + 0.12 * tooth ** 0.5)  # each tooth's edge rounded
        seams = 1.0 - 0.12 * (1.0 - tooth) ** 8
        return self.teeth_colour * seams[..., None] * np.ones((h, 1, 1)), band.astype(np.float32)


def _smooth(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _lip_lines(points: np.ndarray, w: int | None = None):
    """Mouth corners (x) and the inner upper and lower lip's y at each pixel column 0..w-1
    (``w`` None: the columns of the source frame up to the right corner)."""
    upper = points[list(INNER_UPPER), :2]
    lower = points[list(INNER_LOWER), :2]
    left, right = float(upper[0, 0]), float(upper[-1, 0])
    if w is None:
        w = int(np.ceil(max(right, left))) + 2
    xs = np.arange(w, dtype=np.float32)
    yu = np.interp(xs, *upper[np.argsort(upper[:, 0])].T)
    yl = np.interp(xs, *lower[np.argsort(lower[:, 0])].T)
    return min(left, right), max(left, right), yu.astype(np.float32), yl.astype(np.float32)


def mean_gap(points: np.ndarray) -> float:
    """Mean distance between the inner lips (pixels), corners left out."""
    upper = points[list(INNER_UPPER[1:-1]), 1]
    lower = points[list(INNER_LOWER[1:-1]), 1]
    return float(np.mean(lower - upper))


def shows_teeth(scene) -> bool:
    """Whether the photo's own mouth is open on teeth: open by more than 2% of the face and
    brighter inside than the lips around it."""
    import cv2

    if mean_gap(scene.landmarks) < 0.02 * scene.face_px:
        return False
    n = scene.source_size
    inside = polygon_mask(mouth_polygon(scene.landmarks), n) > 0.5
    if inside.sum() < 10:
        return False
    lum = cv2.cvtColor(np.ascontiguousarray(scene.person[..., :3]), cv2.COLOR_RGB2GRAY).astype(np.float32)
    k = max(3, int(0.08 * scene.face_px)) | 1  # about the lips' thickness
    lips = cv2.dilate(inside.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    around = lum[lips & ~inside]
    return bool(around.size and np.percentile(lum[inside], 70) > 1.08 * float(np.median(around)))


def skin_luminance(scene) -> float:
    """Median luminance of the face (inside FaceMesh's outline): lit teeth are drawn no
    brighter than the light on the face allows."""
    import cv2

    from .scene import face_hull_mask

    inside = face_hull_mask(scene.landmarks, scene.source_size, 0.0) > 0.5
    lum = cv2.cvtColor(np.ascontiguousarray(scene.person[..., :3]), cv2.COLOR_RGB2GRAY)
    return float(np.median(lum[inside])) if inside.any() else 170.0
