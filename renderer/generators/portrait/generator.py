"""The ``portrait`` generator: the photograph itself, animated in 2.5D (docs/portrait.md)."""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

from pydantic import Field, field_validator

from flamecast.plugins import Generator, GeneratorOptions, GeneratorSessionSpec, GeneratorSettings

log = logging.getLogger(__name__)


class PortraitOptions(GeneratorOptions):
    """Options of the ``portrait`` generator (all optional)."""

    size: int = Field(256, ge=64, le=1024, description="side of each view in pixels")
    map_size: int | None = Field(
        None, ge=32, le=1024,
        description="side of the per-view motion map (upsampled to size); default size/2")
    grid: int = Field(48, ge=8, le=128, description="vertices along each side of the scene's grid")
    fit_iterations: int = Field(200, ge=0, le=2000, description="gradient steps of the landmark fit")
    max_yaw: float = Field(60.0, ge=0, le=75, description="largest head turn from the photo's pose, degrees")
    max_pitch: float = Field(25.0, ge=0, le=45, description="largest nod from the photo's pose, degrees")
    max_roll: float = Field(30.0, ge=0, le=45, description="largest tilt from the photo's pose, degrees")

    @field_validator("views")
    @classmethod
    def _known_views(cls, views):
        if views is None:
            return None
        from flamecast.renderer.raster.cameras import parse_views

        return tuple(v.id for v in parse_views(list(views)))


class PortraitGenerator(Generator):
    """The photograph animated: real-time on one CPU core, no weights; the default generator."""

    name = "portrait"
    description = "the portrait photo itself animated in 2.5D (real-time on a CPU, no weights)"
    Options = PortraitOptions

    def __init__(self, settings: GeneratorSettings | Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self._head = None

    @property
    def head_model(self):
        """The built-in head (on the CPU: the per-frame work is small), shared by sessions."""
        if self._head is None:
            from flamecast.renderer.head import load_head

            self._head = load_head("builtin").eval()
        return self._head

    def warm_up(self) -> None:
        """Load the head, FaceMesh and the segmentation model and pay torch's first-use costs."""
        import numpy as np
        import torch

        from flamecast.renderer.portrait import detect_faces

        from ..fitting import fit_portrait, to_image
        from .scene import segment_person

        head = self.head_model
        detect_faces(np.zeros((64, 64, 3), np.uint8))
        segment_person(np.zeros((64, 64, 3), np.uint8))
        with torch.no_grad():
            lmk = head(pose=torch.zeros(1, 15)).landmarks[0]
        fit_portrait(head, to_image(lmk, 1000.0, lmk.new_tensor([128.0, 128.0])).numpy(), iterations=4)

    def open_session(self, spec: GeneratorSessionSpec):
        import torch

        from flamecast.renderer.portrait import load_portrait

        from ..fitting import fit_portrait
        from .scene import build_scene
        from .session import PortraitSession

        options = spec.options if isinstance(spec.options, PortraitOptions) else \
            PortraitOptions.model_validate(dict(spec.options))
        t0 = time.perf_counter()
        portrait = load_portrait(spec.portrait)
        head = self.head_model
        with torch.inference_mode(False):
            fit = fit_portrait(head, portrait.landmarks, iterations=options.fit_iterations)
        with torch.no_grad():
            scene = build_scene(head, fit, portrait, options.size, options.grid)
        session = PortraitSession(head, fit, scene, options)
        log.info("session %s: portrait %dx%d fitted (%.1f px RMS) and built in %.2f s", spec.session_id,
                 *portrait.size, fit.error_px, time.perf_counter() - t0)
        return session

    def close(self) -> None:
        self._head = None
