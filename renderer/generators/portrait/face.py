"""Expressions, jaw, gaze and blinks, in the photo's own frame (the first of two warps).

The head is posed as in the photo (its fitted global rotation) but with the driven
expression, jaw, eye rotations and eyelids, and rasterized in the source frame around the
face. Each covered pixel's point on the head is looked up where that point was in the photo
(the fitted head, photo pose, photo expression): a backward map that moves the photo's pixels
exactly as the head's surface moves, from the photo's expression to the driven one. So the
driver's expression is shown relative to the photo's, a smiling photo driven to a frown loses
its smile; the eyeballs turn under the lids and carry the irises; lids close over them.
Where the jaw opens wider than in the photo, the inside of the mouth is drawn (``mouth.py``):
the photo has no pixels for it.
"""

from __future__ import annotations

import numpy as np
import torch

from .scene import DEPTH_OFFSET, Scene

WORK_SIZE = 256  # views larger than this get the face map at this scale, upsampled
JAW_ROOM = 0.25  # the face box reaches this many face heights below the chin (an open jaw)
REGIONS = ("face", "eyes", "eye_sockets", "mouth_inside", "neck", "ears")


class FaceWarp:
    """Backward map of the face box for a driven expression (see the module docstring)."""

    def __init__(self, head, fit, scene: Scene) -> None:
        self.head, self.fit, self.scene = head, fit, scene
        with torch.no_grad():
            photo = head(pose=fit.pose[None], shape=fit.shape[None], expression=fit.expression[None]).vertices[0]
        src = scene.to_source(photo)
        self.src_xy = src[:, :2].contiguous()
        self.faces = _region_faces(head, REGIONS)
        used = torch.unique(self.faces)
        lo = src[used, :2].min(0).values.numpy()
        hi = src[used, :2].max(0).values.numpy() + [0.0, JAW_ROOM * scene.face_px]
        n = scene.source_size
        self.x0, self.y0 = int(max(0, np.floor(lo[0]) - 2)), int(max(0, np.floor(lo[1]) - 2))
        self.x1, self.y1 = int(min(n, np.ceil(hi[0]) + 3)), int(min(n, np.ceil(hi[1]) + 3))
        self.f = min(1.0, WORK_SIZE / scene.size)  # the map is rasterized at this scale
        h, w = self.y1 - self.y0, self.x1 - self.x0
        self.work = (max(2, round(h * self.f)), max(2, round(w * self.f)))
        ys = (np.arange(self.work[0], dtype=np.float32) + 0.5) * h / self.work[0] - 0.5 + self.y0
        xs = (np.arange(self.work[1], dtype=np.float32) + 0.5) * w / self.work[1] - 0.5 + self.x0
        self.identity = np.stack(np.meshgrid(xs, ys), -1)
        self.photo_pose = fit.pose.clone()

    @property
    def box(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def driven(self, jaw, eyes, expression, eyelids):
        """Head vertices and landmarks at the photo's global pose with the driven rest."""
        pose = self.photo_pose.clone()
        pose[6:9] = jaw
        pose[9:15] = eyes
        out = self.head(pose=pose[None], shape=self.fit.shape[None], expression=expression[None],
                        eyelids=eyelids[None])
        return out.vertices[0], out.landmarks[0]

    def backward_map(self, vertices: torch.Tensor) -> np.ndarray:
        """(h, w, 2) float32 source coordinates for every pixel of the face box."""
        from flamecast.renderer.raster import rasterize_torch

        import cv2

        p = self.scene.to_source(vertices)
        h, w = self.y1 - self.y0, self.x1 - self.x0
        sy, sx = self.work[0] / h, self.work[1] / w
        screen = torch.stack([(p[:, 0] - (self.x0 - 0.5)) * sx, (p[:, 1] - (self.y0 - 0.5)) * sy,
                              DEPTH_OFFSET - p[:, 2]], -1)
        frags = rasterize_torch(screen[None], self.faces, self.work, cull_backfaces=True)
        cov = frags.covered
        corners = self.faces.index_select(0, cov.face)  # (P, 3)
        xy = (self.src_xy[corners] * cov.bary.t()[..., None]).sum(1)
        out = self.identity.copy().reshape(-1, 2)
        out[cov.index.numpy()] = xy.numpy()
        out = out.reshape(*self.work, 2)
        return out if self.work == (h, w) else cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)


def _region_faces(head, names) -> torch.Tensor:
    regions = head.vertex_regions()
    member = torch.zeros(head.v_template.shape[0], dtype=torch.bool)
    for name in names:
        if name in regions:
            member[regions[name].cpu()] = True
    if not member.any():
        return head.faces.cpu()
    return head.faces.cpu()[member[head.faces.cpu()].all(1)]
