"""Backend choice and the one-call multi-view render."""

from __future__ import annotations

import torch

from .cameras import Cameras, project
from .torch_backend import Fragments, rasterize_torch
from .shading import lambert, normals_image, texture_image, vertex_colors_image

BACKENDS = ("torch", "pytorch3d")
MODES = ("lambert", "normals", "texture", "colors")


def rasterize(
    verts: torch.Tensor,
    faces: torch.Tensor,
    image_size: int | tuple[int, int],
    *,
    backend: str = "torch",
    cull_backfaces: bool = False,
) -> Fragments:
    """Rasterize screen-space vertices (..., N, 3) with the chosen backend ("torch" is the
    built-in one; "pytorch3d" needs pytorch3d installed). Both give the same Fragments."""
    if backend == "torch":
        return rasterize_torch(verts, faces, image_size, cull_backfaces=cull_backfaces)
    if backend == "pytorch3d":
        from .pytorch3d_backend import rasterize_pytorch3d

        return rasterize_pytorch3d(verts, faces, image_size, cull_backfaces=cull_backfaces)
    raise ValueError(f"unknown rasterizer backend {backend!r}; choose one of {BACKENDS}")


def render_views(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    mode: str = "lambert",
    *,
    backend: str = "torch",
    cull_backfaces: bool = True,
    background=0.0,
    uvs: torch.Tensor | None = None,
    uv_faces: torch.Tensor | None = None,
    texture: torch.Tensor | None = None,
    colors: torch.Tensor | None = None,
    uint8: bool = False,
) -> torch.Tensor:
    """Render world-space vertices (B, N, 3) from every camera: (B, V, H, W, 3).

    mode: "lambert" (grey, the FLAME rendering), "normals" (world-space normals as RGB),
    "texture" (needs ``uvs`` and ``texture``, see ``shading.texture_image``) or "colors"
    (per-vertex ``colors`` (N, 3) or (B, N, 3)). Back faces are culled by default: the mesh
    must be wound counter-clockwise seen from outside (as FLAME is).
    """
    if mode not in MODES:
        raise ValueError(f"unknown render mode {mode!r}; choose one of {MODES}")
    cams = cameras.to(vertices.device)
    screen = project(vertices, cams)
    frags = rasterize(screen, faces, cams.size, backend=backend, cull_backfaces=cull_backfaces)
    faces = faces.to(vertices.device)
    common = dict(background=background, uint8=uint8)
    if mode == "lambert":
        return lambert(frags, vertices, faces, cams, **common)
    if mode == "normals":
        return normals_image(frags, vertices, faces, **common)
    if mode == "texture":
        if uvs is None or texture is None:
            raise ValueError("mode='texture' needs uvs and texture")
        return texture_image(frags, faces, uvs, texture, uv_faces=uv_faces, **common)
    if colors is None:
        raise ValueError("mode='colors' needs per-vertex colors")
    return vertex_colors_image(frags, faces, colors.to(vertices.device), **common)
