"""A ``portrait`` session: the scene of one portrait, rendered for each driving frame."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from flamecast.plugins import FlameFrame, GeneratorSession, RenderedFrame

from .face import FaceWarp
from .motion import ViewWarp, relative_rotation
from .mouth import Mouth
from .scene import Scene, head_centre

MAX_JAW = 0.55  # radians
MAX_TRANSLATION_M = 0.04


class PortraitSession(GeneratorSession):
    """Per frame: expression warp in the photo's frame, then one pose/camera warp per view
    (docs/portrait.md)."""

    def __init__(self, head, fit, scene: Scene, options) -> None:
        self.head, self.fit, self.scene, self.options = head, fit, scene, options
        self.face = FaceWarp(head, fit, scene)
        with torch.no_grad():
            out = head(pose=fit.pose[None], shape=fit.shape[None], expression=fit.expression[None])
        self.mouth = Mouth(scene, scene.to_source(out.landmarks[0])[:, :2].numpy())
        centre = head_centre(head, fit)
        pivot = out.joints[0, 1].numpy()
        map_size = options.map_size or max(32, options.size // 2)
        self.views = ViewWarp(scene, options.views, pivot, centre, map_size)
        self.view_ids = self.views.view_ids
        self.photo_pose = fit.pose.numpy().astype(np.float64)
        self.limits = (options.max_yaw, options.max_pitch, options.max_roll)
        self.reference = scene.reference

    def step(self, frames: Sequence[FlameFrame]) -> list[RenderedFrame]:
        out = []
        for frame in frames:
            t0 = time.perf_counter_ns()
            views, matte = self.render(frame.pose, frame.expression, frame.eyelids, frame.translation,
                                       with_matte=True)
            out.append(RenderedFrame(frame, views, self.view_ids, time.perf_counter_ns() - t0, matte))
        return out

    def render(self, pose, expression, eyelids=None, translation=None, *, with_matte: bool = False):
        """(V, size, size, 3) uint8 views for one frame's parameters; ``with_matte`` also the
        (V, size, size) uint8 matte of the person in each view (255 person, 0 background)."""
        import cv2

        pose = np.asarray(pose, np.float64)
        with torch.inference_mode():
            edited = self._edit_face(pose, expression, eyelids)
            rel = relative_rotation(pose, self.photo_pose, self.limits)
            t = np.zeros(3) if translation is None else np.clip(np.asarray(translation, np.float64),
                                                                  -MAX_TRANSLATION_M, MAX_TRANSLATION_M)
            maps = self.views.maps(self.views.moved(rel, t))
        size = self.scene.size
        views = np.empty((len(maps), size, size, 3), np.uint8)
        matte = np.empty((len(maps), size, size), np.uint8)
        for i, m in enumerate(maps):
            if m.shape[0] != size:
                m = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
            rgba = cv2.remap(edited, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=0)
            views[i] = composite(rgba, self.scene.background)
            matte[i] = rgba[..., 3]
        return (views, matte) if with_matte else views

    def _edit_face(self, pose: np.ndarray, expression, eyelids) -> np.ndarray:
        import cv2

        n_expr = self.head.n_expression
        expr = torch.zeros(n_expr)
        if expression is not None:
            e = torch.from_numpy(np.array(expression, np.float32))[:n_expr]
            expr[: e.shape[0]] = e
        lids = torch.zeros(2) if eyelids is None else torch.from_numpy(np.array(eyelids, np.float32))[:2]
        jaw = torch.as_tensor(pose[6:9], dtype=torch.float32).clamp(-MAX_JAW, MAX_JAW)
        jaw[0] = jaw[0].clamp(-0.05, MAX_JAW)
        eyes = torch.as_tensor(pose[9:15], dtype=torch.float32).clamp(-0.6, 0.6)
        verts, landmarks = self.face.driven(jaw, eyes, expr, lids)
        fmap = self.face.backward_map(verts)
        edited = self.scene.person.copy()
        box = cv2.remap(self.scene.person, fmap[..., 0], fmap[..., 1], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
        lmk = self.scene.to_source(landmarks)[:, :2].numpy()
        self.mouth.draw(box, lmk, (self.face.x0, self.face.y0))
        edited[self.face.box] = box
        return edited

    def close(self) -> None:
        self.scene = None


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Premultiplied person over the background: ``rgb + (1 - alpha) * background``."""
    import cv2

    inv = 255 - rgba[..., 3]
    behind = cv2.multiply(background, cv2.merge([inv, inv, inv]), scale=1.0 / 255.0)
    return cv2.add(np.ascontiguousarray(rgba[..., :3]), behind)
