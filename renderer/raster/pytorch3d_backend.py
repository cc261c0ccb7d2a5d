"""Optional backend: pytorch3d's ``rasterize_meshes``, returning the built-in Fragments.

pytorch3d is not a dependency (PyPI has no installable build for current Python); when a user
has built it, ``rasterize(..., backend="pytorch3d")`` uses it. Screen-space vertices are mapped
to pytorch3d's NDC (+x left, +y up, the shorter image side spanning [-1, 1]); the camera depth
is kept as z, which is what pytorch3d's perspective correction divides by.
"""

from __future__ import annotations

import torch

from .torch_backend import Fragments


def available() -> bool:
    """True when pytorch3d's rasterizer can be imported."""
    try:
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes  # noqa: F401
        from pytorch3d.structures import Meshes  # noqa: F401
    except ImportError:
        return False
    return True


def rasterize_pytorch3d(
    verts: torch.Tensor,
    faces: torch.Tensor,
    image_size: int | tuple[int, int],
    *,
    cull_backfaces: bool = False,
) -> Fragments:
    """Same contract as ``rasterize_torch``, computed by pytorch3d."""
    try:
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
        from pytorch3d.structures import Meshes
    except ImportError as exc:
        raise RuntimeError(
            "backend='pytorch3d' needs pytorch3d, which is not installed; build it from "
            "source (github.com/facebookresearch/pytorch3d) or use backend='torch'"
        ) from exc
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    lead = verts.shape[:-2]
    flat = verts.reshape(-1, *verts.shape[-2:]).float()
    short = float(min(h, w))
    ndc = torch.stack(
        [(w - 2.0 * flat[..., 0]) / short, (h - 2.0 * flat[..., 1]) / short, flat[..., 2]], -1
    )
    n_img, n_faces = flat.shape[0], faces.shape[0]
    faces = faces.to(device=flat.device, dtype=torch.long)
    meshes = Meshes(verts=list(ndc), faces=[faces] * n_img)
    pix_to_face, zbuf, bary, _ = rasterize_meshes(
        meshes,
        image_size=(h, w),
        blur_radius=0.0,
        faces_per_pixel=1,
        perspective_correct=True,
        cull_backfaces=cull_backfaces,
    )
    p2f = pix_to_face[..., 0]
    hit = p2f >= 0
    face_idx = torch.where(hit, p2f % max(n_faces, 1), torch.full_like(p2f, -1))
    bary = torch.where(hit[..., None], bary[..., 0, :], torch.zeros_like(bary[..., 0, :]))
    depth = torch.where(hit, zbuf[..., 0], torch.zeros_like(zbuf[..., 0]))
    return Fragments(
        face_idx=face_idx.reshape(*lead, h, w),
        bary=bary.reshape(*lead, h, w, 3),
        depth=depth.reshape(*lead, h, w),
    )
