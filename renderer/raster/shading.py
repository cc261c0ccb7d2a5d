"""Shading of rasterized fragments: normals, grey Lambert, textures and vertex colours.

Every function works on Fragments with any leading dims (e.g. (B, V)), in torch, on the
fragments' device, and returns float images (..., H, W, C) in [0, 1] unless noted; pass the
result through ``to_uint8`` for 8-bit frames. Per-vertex inputs may have leading dims that are
a prefix of the fragments' leading dims (e.g. vertices (B, N, 3) for fragments (B, V, H, W)),
or none at all (shared by every image).

Texture coordinates: ``u`` grows left to right and ``v`` bottom to top across the texture
image (the OBJ / OpenGL convention FLAME's template uses); texel centres are at half-texel
offsets and sampling is bilinear with border clamping.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .cameras import Cameras
from .rasterize import Fragments

#: Direction toward the Lambert light in camera space (x right, y down, z forward): from the
#: camera, a little above and to the left of it.
DEFAULT_LIGHT = (-0.3, -0.4, -1.0)


def _lead(frags: Fragments) -> tuple[int, ...]:
    return tuple(frags.face_idx.shape[:-2])


def _per_image(values: torch.Tensor, lead: tuple[int, ...], inner: int) -> torch.Tensor:
    """Broadcast ``values`` (prefix-of-lead..., *inner dims) to (prod(lead), *inner dims)."""
    own = values.shape[: values.dim() - inner]
    if tuple(own) != lead[: len(own)]:
        raise ValueError(f"leading dims {tuple(own)} do not prefix the images' dims {lead}")
    shape = (*own, *(1,) * (len(lead) - len(own)), *values.shape[values.dim() - inner :])
    full = values.reshape(shape).expand(*lead, *values.shape[values.dim() - inner :])
    return full.reshape(-1, *values.shape[values.dim() - inner :])


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit area-weighted vertex normals (..., N, 3) of a mesh wound counter-clockwise."""
    faces = faces.to(device=verts.device, dtype=torch.long)
    tri = verts[..., faces, :]  # (..., F, 3, 3)
    fn = torch.linalg.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :])
    normals = torch.zeros_like(verts)
    for k in range(3):
        normals.index_add_(-2, faces[:, k], fn)
    return F.normalize(normals, dim=-1, eps=1e-12)


def interpolate(frags: Fragments, faces: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes (..., N, C) -> (..., H, W, C).

    ``faces`` (F, 3) indexes ``attrs`` (pass UV faces for per-corner UVs). Background = 0.
    """
    lead = _lead(frags)
    h, w = frags.face_idx.shape[-2:]
    per_img = _per_image(attrs, lead, 2)  # (I, N, C)
    n_img, n_vert, chans = per_img.shape
    faces = faces.to(device=per_img.device, dtype=torch.long)
    fidx = frags.face_idx.reshape(n_img, h * w)
    corner = faces[fidx.clamp(min=0)]  # (I, HW, 3)
    offset = (torch.arange(n_img, device=corner.device) * n_vert)[:, None, None]
    vals = per_img.reshape(-1, chans)[(corner + offset).reshape(-1)].reshape(n_img, h * w, 3, chans)
    bary = frags.bary.reshape(n_img, h * w, 3, 1).to(vals.dtype)
    out = (vals * bary).sum(dim=2)
    out = out * (fidx >= 0)[..., None].to(out.dtype)
    return out.reshape(*lead, h, w, chans)


def _with_background(img: torch.Tensor, frags: Fragments, background) -> torch.Tensor:
    bg = torch.as_tensor(background, dtype=img.dtype, device=img.device).expand(img.shape[-1])
    return torch.where(frags.mask[..., None], img, bg)


def normals_image(
    frags: Fragments,
    verts: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras | None = None,
    background=0.0,
    normals: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-pixel interpolated vertex normals as RGB, ``(n + 1) / 2``.

    World-space normals by default; given ``cameras`` (fragments (..., V, H, W)), normals are
    turned into each camera's space (x right, y down, z forward).
    """
    n = vertex_normals(verts, faces) if normals is None else normals
    img = F.normalize(interpolate(frags, faces, n), dim=-1, eps=1e-12)
    if cameras is not None:
        img = torch.einsum("vij,...vhwj->...vhwi", cameras.R.to(img), img)
    return _with_background((img + 1.0) * 0.5, frags, background)


def lambert(
    frags: Fragments,
    verts: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    albedo: float = 0.72,
    ambient: float = 0.28,
    light: Sequence[float] = DEFAULT_LIGHT,
    background=0.0,
    normals: torch.Tensor | None = None,
) -> torch.Tensor:
    """Grey Lambert shading: ``ambient + albedo * max(0, n . l)``, one light fixed relative to
    each camera (``light`` points toward it in camera space), the same grey in RGB.

    Fragments are (..., V, H, W) for the V cameras. Returns (..., V, H, W, 3).
    """
    n = vertex_normals(verts, faces) if normals is None else normals
    img = interpolate(frags, faces, n)
    l_cam = F.normalize(torch.as_tensor(light, dtype=img.dtype, device=img.device), dim=0)
    l_world = cameras.R.to(img).transpose(1, 2) @ l_cam  # (V, 3)
    # Normalising the interpolated normal only rescales the dot product.
    dot = torch.einsum("...vhwc,vc->...vhw", img, l_world)
    dot = dot * torch.rsqrt((img * img).sum(-1).clamp_min(1e-20))
    shade = (ambient + albedo * dot.clamp_min(0.0)).clamp(0.0, 1.0)
    return _with_background(shade[..., None].expand(*shade.shape, 3), frags, background)


def vertex_colors_image(
    frags: Fragments, faces: torch.Tensor, colors: torch.Tensor, background=0.0
) -> torch.Tensor:
    """Per-vertex colours (..., N, C) interpolated over the faces."""
    return _with_background(interpolate(frags, faces, colors), frags, background)


def texture_image(
    frags: Fragments,
    faces: torch.Tensor,
    uvs: torch.Tensor,
    texture: torch.Tensor,
    background=0.0,
    uv_faces: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bilinear texture lookup.

    Args:
        uvs: (..., N, 2) per-vertex UVs, or per-corner UVs indexed by ``uv_faces`` (F, 3).
        texture: (..., Ht, Wt, C) float in [0, 1] or uint8; its leading dims must prefix the
            fragments' (e.g. one texture per frame for (B, V) images) or be absent.
    """
    lead = _lead(frags)
    h, w = frags.face_idx.shape[-2:]
    tex = texture.float() / 255.0 if texture.dtype == torch.uint8 else texture
    tex = tex.to(frags.bary.device)
    uv = interpolate(frags, faces if uv_faces is None else uv_faces, uvs.to(tex))
    grid = torch.stack([uv[..., 0] * 2.0 - 1.0, 1.0 - uv[..., 1] * 2.0], dim=-1)
    t_lead = tuple(tex.shape[:-3])
    n_tex = math.prod(t_lead)
    src = tex.reshape(n_tex, *tex.shape[-3:]).permute(0, 3, 1, 2)
    grid = grid.reshape(n_tex, -1, w, 2)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out.permute(0, 2, 3, 1).reshape(*lead, h, w, tex.shape[-1])
    return _with_background(out, frags, background)


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Float image in [0, 1] -> uint8."""
    return (img.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)
