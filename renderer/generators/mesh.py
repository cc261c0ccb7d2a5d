"""The ``mesh`` generator: the built-in head, textured from the portrait, rendered in V views.

Opening a session (once, about a second on a CPU): find the face (``renderer.portrait``), fit
the head's identity, expression, pose and an orthographic portrait camera to the FaceMesh
landmarks (``fitting``), and bake the portrait into a UV texture with a plausible fill for
what the portrait does not show (``texture``). Every ``step`` then runs the head with the
fitted identity and each frame's pose, expression, eyelids and translation, and rasterizes
all views of all frames of the batch in one go.

A frame's ``shape`` is ignored: the portrait defines the identity.

``head="flame"`` renders the user's FLAME model instead of the built-in head (its
``generic_model.pkl`` with FLAME's MediaPipe landmark embedding and texture space beside it, in
``<weights>/flame/``); the session then speaks FLAME's 100 expression components, and the
server hands that head to the session's drivers (the webcam driver runs DECA on it when DECA's
weights are there).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal, Mapping, Sequence

from pydantic import Field, field_validator

from flamecast.plugins import (
    FlameFrame,
    Generator,
    GeneratorOptions,
    GeneratorSession,
    GeneratorSessionSpec,
    GeneratorSettings,
    GeneratorUnavailable,
    RenderedFrame,
)

log = logging.getLogger(__name__)


class MeshOptions(GeneratorOptions):
    """Options of the ``mesh`` generator (all optional)."""

    size: int = Field(256, ge=32, le=1024, description="side of each view in pixels")
    texture_size: int = Field(512, ge=64, le=2048, description="side of the baked UV texture in pixels")
    fit_iterations: int = Field(200, ge=0, le=2000, description="gradient steps of the landmark fit")
    mirror: bool = Field(True, description="fill the hidden side of the face from its mirror image")
    background: tuple[int, int, int] = Field((24, 26, 30), description="background colour, RGB 0-255")
    batch: int = Field(8, ge=1, le=64, description="frames rendered together at most")
    framing: Literal["head", "full"] = Field(
        "head", description="'head': the head and the top of the neck fill the views; 'full': the whole model")
    head: Literal["builtin", "flame"] = Field(
        "builtin", description="head model: the built-in head, or your FLAME model (<weights>/flame/generic_model.pkl "
        "with mediapipe_landmark_embedding.npz and FLAME_texture.npz beside it)")

    @field_validator("views")
    @classmethod
    def _known_views(cls, views):
        if views is None:
            return None
        from flamecast.renderer.raster.cameras import parse_views

        return tuple(v.id for v in parse_views(list(views)))

    @field_validator("background")
    @classmethod
    def _rgb(cls, rgb):
        if not all(0 <= c <= 255 for c in rgb):
            raise ValueError("background must be three integers 0-255")
        return rgb


class MeshGenerator(Generator):
    """Real-time on a CPU, no downloads: the embedded default generator."""

    name = "mesh"
    description = "built-in head textured from the portrait (real-time on a CPU, no weights)"
    Options = MeshOptions

    def __init__(self, settings: GeneratorSettings | Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self._heads: dict[str, Any] = {}
        self.device = self.settings.device

    @property
    def head_model(self):
        """The built-in head, loaded once and shared by every session."""
        return self.load_head_model("builtin")

    def load_head_model(self, kind: str):
        """The head model of the ``head`` option, loaded once and shared by every session;
        GeneratorUnavailable naming the missing file for a FLAME model that is not complete."""
        if kind not in self._heads:
            self._heads[kind] = (_builtin() if kind == "builtin" else _flame(self.settings.weights_dir)).to(self.device).eval()
        return self._heads[kind]

    def warm_up(self) -> None:
        """Load the head and FaceMesh now, so that the first session opens as fast as later ones."""
        import numpy as np
        import torch

        from flamecast.renderer.portrait import detect_faces

        from .fitting import fit_portrait, to_image

        head = self.head_model
        detect_faces(np.zeros((64, 64, 3), np.uint8))
        with torch.no_grad():
            lmk = head(pose=torch.zeros(1, 15, device=head.center.device)).landmarks[0]
        fit_portrait(head, to_image(lmk, 1000.0, lmk.new_tensor([128.0, 128.0])).cpu().numpy(), iterations=4)

    def open_session(self, spec: GeneratorSessionSpec) -> MeshSession:
        from flamecast.renderer.portrait import load_portrait

        from .fitting import fit_portrait
        from .texture import bake_texture

        options = spec.options if isinstance(spec.options, MeshOptions) else MeshOptions.model_validate(dict(spec.options))
        t0 = time.perf_counter()
        portrait = load_portrait(spec.portrait)
        head = self.load_head_model(options.head)
        fit = fit_portrait(head, portrait.landmarks, iterations=options.fit_iterations)
        texture = bake_texture(head, fit, portrait, size=options.texture_size, mirror=options.mirror)
        log.info("session %s: portrait %dx%d fitted (%.1f px RMS) and baked in %.2f s", spec.session_id,
                 *portrait.size, fit.error_px, time.perf_counter() - t0)
        return MeshSession(head, fit, texture, options)

    def close(self) -> None:
        self._heads.clear()


def _builtin():
    from flamecast.renderer.head import load_head

    return load_head("builtin")


def _flame(weights_dir: str | None):
    """The user's FLAME model with what fitting and texturing a portrait need."""
    from pathlib import Path

    from flamecast.renderer.head import FlameModel, default_flame_path

    path = Path(weights_dir) / "flame" / "generic_model.pkl" if weights_dir else default_flame_path()
    try:
        head = FlameModel(path, landmarks="mediapipe105")
    except FileNotFoundError as exc:
        raise GeneratorUnavailable(str(exc)) from None
    missing = [name for name, ok in (("mediapipe_landmark_embedding.npz", head.landmark_set == "mediapipe105"),
                                     ("FLAME_texture.npz", head.uvs is not None)) if not ok]
    if missing:
        raise GeneratorUnavailable(
            f"head 'flame' needs {' and '.join(missing)} beside {path} (FLAME's MediaPipe landmark embedding and "
            f"texture space, from https://flame.is.tue.mpg.de; flamecast never downloads them)")
    return head


class MeshSession(GeneratorSession):
    """One avatar: the fitted identity, its texture and the session's cameras."""

    def __init__(self, head, fit, texture, options: MeshOptions) -> None:
        import torch

        from flamecast.renderer.raster import make_cameras

        self.head, self.fit, self.options = head, fit, options
        self.head_space = head.head_space()  # FLAME: the drivers speak its unnamed components
        device = head.center.device
        center, radius = framing(head, options.framing)
        self.cameras = make_cameras(options.views, center=center, radius=radius, size=options.size, device=device)
        self.view_ids: tuple[str, ...] = self.cameras.view_ids
        self.texture = texture.image.to(device).permute(2, 0, 1)[None].contiguous()  # (1, 3, T, T)
        self.flat = texture.flat.to(device)
        self.flat_color = (texture.flat_color.to(device) * 255.0 + 0.5).to(torch.uint8)
        self.background = torch.tensor(options.background, dtype=torch.uint8, device=device)
        self.shape = fit.shape.to(device)
        self.face_uvs = head.uvs[head.faces]  # (F, 3 corners, 2)

    def step(self, frames: Sequence[FlameFrame]) -> list[RenderedFrame]:
        out: list[RenderedFrame] = []
        for start in range(0, len(frames), self.options.batch):
            out.extend(self._render(frames[start:start + self.options.batch]))
        return out

    def render_arrays(self, pose, expression, eyelids=None, translation=None, *, with_matte=False):
        """(B, V, H, W, 3) uint8 tensor for batched parameters (numpy or torch); with
        ``with_matte`` also the (B, V, H, W) uint8 coverage of the head (255 where it is)."""
        import torch

        from flamecast.renderer.raster import project, rasterize

        device = self.shape.device

        def t(x):
            return None if x is None else torch.as_tensor(x, dtype=torch.float32, device=device)

        pose = t(pose)
        with torch.inference_mode():
            out = self.head(pose=pose, expression=t(expression), eyelids=t(eyelids), translation=t(translation),
                            shape=self.shape.expand(pose.shape[0], -1))
            screen = project(out.vertices, self.cameras)
            frags = rasterize(screen, self.head.faces, self.cameras.size, cull_backfaces=True)
            images = sample_texture(frags, self.face_uvs, self.texture, self.background, self.flat, self.flat_color)
            return (images, (frags.face_idx >= 0).to(torch.uint8) * 255) if with_matte else images

    def _render(self, frames: Sequence[FlameFrame]) -> list[RenderedFrame]:
        import numpy as np

        t0 = time.perf_counter_ns()
        pose = np.stack([f.pose for f in frames])
        expression = np.stack([f.expression for f in frames])
        eyelids = np.stack([f.eyelids if f.eyelids is not None else np.zeros(2, np.float32) for f in frames])
        translation = None
        if any(f.translation is not None for f in frames):
            translation = np.stack([f.translation if f.translation is not None else np.zeros(3, np.float32) for f in frames])
        views, matte = (x.cpu().numpy() for x in self.render_arrays(pose, expression, eyelids, translation,
                                                                     with_matte=True))
        per_frame = (time.perf_counter_ns() - t0) // len(frames)
        return [RenderedFrame(f, views[i], self.view_ids, per_frame, matte[i]) for i, f in enumerate(frames)]

    def close(self) -> None:
        self.texture = None


NECK_SHOWN_M = 0.05


def framing(head, mode: str):
    """Centre and radius the cameras frame: the whole model, or the head down to a little
    below the chin."""
    if mode == "full":
        return head.center.cpu(), head.radius
    verts = head.v_template.cpu()
    face = head.vertex_regions().get("face")
    chin = float(verts[face, 1].min()) if face is not None else float(verts[:, 1].min())
    kept = verts[verts[:, 1] >= chin - NECK_SHOWN_M]
    lo, hi = kept.min(0).values, kept.max(0).values
    center = (lo + hi) / 2
    return center, float((kept - center).norm(dim=-1).max())


def sample_texture(frags, face_uvs, texture, background, flat=None, flat_color=None):
    """Textured uint8 images (..., H, W, 3) from fragments.

    The same bilinear lookup as ``raster.texture_image`` (u right, v up, border clamping), but
    evaluated on the covered pixels only and written straight into a uint8 frame: about a
    third of the pixels of a head view are covered, and this is the per-frame hot path.
    Faces marked in ``flat`` (F,) bool take ``flat_color`` (F, 3) uint8 instead.
    """
    import torch
    import torch.nn.functional as F

    lead, (h, w) = frags.face_idx.shape[:-2], frags.face_idx.shape[-2:]
    fidx = frags.face_idx.reshape(-1)
    covered = (fidx >= 0).nonzero().squeeze(1)
    face = fidx.index_select(0, covered)  # index_select/index_copy_: faster than [] indexing here
    bary = frags.bary.reshape(-1, 3).index_select(0, covered).to(face_uvs.dtype)
    uv = torch.bmm(bary.unsqueeze(1), face_uvs.index_select(0, face)).squeeze(1)
    grid = (uv * uv.new_tensor([2.0, -2.0]) + uv.new_tensor([-1.0, 1.0]))[None, None]  # v up -> y down
    colors = F.grid_sample(texture, grid, mode="bilinear", padding_mode="border", align_corners=False)
    colors = colors[0, :, 0].T.mul_(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)
    if flat is not None:
        sel = flat.index_select(0, face).nonzero().squeeze(1)
        colors.index_copy_(0, sel, flat_color.index_select(0, face.index_select(0, sel)))
    out = background.expand(fidx.shape[0], 3).clone()
    out.index_copy_(0, covered, colors)
    return out.reshape(*lead, h, w, 3)
