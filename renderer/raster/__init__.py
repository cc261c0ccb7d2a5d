"""Multi-view cameras, rasterizers (built-in PyTorch; pytorch3d when installed) and shading.

Typical use::

    from flamecast.renderer.raster import make_cameras, render_views
    cams = make_cameras("front,left30", center=head.center, radius=head.radius, size=256)
    rgb = render_views(vertices, head.faces, cams, mode="lambert")  # (B, V, H, W, 3)

See docs/rendering.md for the conventions (views, pixels, winding) and the backends.
"""

from __future__ import annotations

from .cameras import (
    DEFAULT_VIEWS,
    Cameras,
    ViewSpec,
    make_cameras,
    parse_views,
    project,
    view_from_id,
)
from .torch_backend import CoveredPixels, Fragments, rasterize_torch
from .render import BACKENDS, rasterize, render_views
from .shading import (
    interpolate,
    lambert,
    normals_image,
    texture_image,
    to_uint8,
    vertex_colors_image,
    vertex_normals,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_VIEWS",
    "Cameras",
    "CoveredPixels",
    "Fragments",
    "ViewSpec",
    "interpolate",
    "lambert",
    "make_cameras",
    "normals_image",
    "parse_views",
    "project",
    "rasterize",
    "rasterize_torch",
    "render_views",
    "texture_image",
    "to_uint8",
    "vertex_colors_image",
    "vertex_normals",
    "view_from_id",
]
