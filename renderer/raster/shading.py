"""Shading of rasterized fragments: normals, grey Lambert, textures and vertex colours.

Every function works on Fragments with any leading dims (e.g. (B, V)), in torch, on the
fragments' device, and returns images (..., H, W, C): float in [0, 1], or uint8 with
``uint8=True``. Per-vertex inputs may have leading dims that are a prefix of the fragments'
leading dims (e.g. vertices (B, N, 3) for fragments (B, V, H, W)), or none at all (shared by
every image). Work is done on covered pixels only; the background is a constant colour.

Texture coordinates: ``u`` grows left to right and ``v`` bottom to top across the texture
image (the OBJ / OpenGL convention FLAME's template uses); sampling is bilinear, texel centres
at half-texel offsets, clamped at the border.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .cameras import Cameras
from .torch_backend import Fragments

#: Direction toward the Lambert light in camera space (x right, y down, z forward): from the
#: camera, a little above and to the left of it.
DEFAULT_LIGHT = (-0.3, -0.4, -1.0)


@dataclass
class _Covered:
    """The covered pixels of a batch of fragments, flattened to (I*H*W,) order."""

    lead: tuple[int, ...]
    h: int
    w: int
    idx: torch.Tensor  # (P,) ascending flat pixel index
    face: torch.Tensor  # (P,) face index
    bary: torch.Tensor  # (3, P)
    starts: list[int]  # pixels of image i are idx[starts[i]:starts[i + 1]]

    @property
    def n_images(self) -> int:
        return math.prod(self.lead)

    def image(self) -> torch.Tensor:
        """(P,) image index in the flattened batch."""
        return torch.div(self.idx, self.h * self.w, rounding_mode="floor")


def _covered(frags: Fragments) -> _Covered:
    lead, (h, w) = tuple(frags.shape[:-2]), frags.shape[-2:]
    if frags.covered is not None:
        idx, face, bary = frags.covered.index, frags.covered.face, frags.covered.bary
    else:
        flat = frags.face_idx.reshape(-1)
        idx = (flat >= 0).nonzero().squeeze(1)
        face, bary = flat[idx], frags.bary.reshape(-1, 3)[idx].t()
    bounds = torch.arange(math.prod(lead) + 1, device=idx.device) * (h * w)
    starts = torch.searchsorted(idx, bounds).tolist()
    return _Covered(lead, h, w, idx, face, bary, starts)


def _owner(cov: _Covered, values: torch.Tensor, inner: int) -> tuple[torch.Tensor | None, int]:
    """Which batch entry of ``values`` (prefix-of-lead..., *inner dims) each covered pixel
    uses (None when there is one entry), and how many entries there are."""
    own = tuple(values.shape[: values.dim() - inner])
    if own != cov.lead[: len(own)]:
        raise ValueError(f"leading dims {own} do not prefix the images' dims {cov.lead}")
    n_entries = math.prod(own)
    if n_entries == 1:
        return None, 1
    per_entry = math.prod(cov.lead[len(own) :])
    return torch.div(cov.image(), per_entry, rounding_mode="floor"), n_entries


def _interp(cov: _Covered, faces: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """Per-vertex attributes (prefix..., N, C) interpolated at the covered pixels: (C, P)."""
    entry, n_entries = _owner(cov, attrs, 2)
    n_vert, chans = attrs.shape[-2:]
    faces = faces.to(device=attrs.device, dtype=torch.long)
    n_faces = faces.shape[0]
    planar = attrs.reshape(n_entries, n_vert, chans).permute(2, 0, 1).reshape(chans, -1)
    offsets = torch.arange(n_entries, device=attrs.device)[:, None] * n_vert
    corners = (faces.t()[:, None, :] + offsets).reshape(3, -1)  # (3, E*F) rows of ``planar``
    table = torch.cat([planar.index_select(1, c) for c in corners])  # (3C, E*F)
    rows = cov.face if entry is None else entry * n_faces + cov.face
    vals = table.index_select(1, rows).view(3, chans, -1)
    bary = cov.bary.to(vals.dtype)
    out = vals[0] * bary[0]
    return out.addcmul_(vals[1], bary[1]).addcmul_(vals[2], bary[2])


def _compose(cov: _Covered, values: torch.Tensor, background, uint8: bool) -> torch.Tensor:
    """Images (..., H, W, C) with ``values`` (C, P) at the covered pixels."""
    chans = values.shape[0]
    total = cov.n_images * cov.h * cov.w
    bg = torch.as_tensor(background, dtype=torch.float32).expand(chans).tolist()
    if uint8:
        values = to_uint8(values)
        bg = [min(max(int(c * 255.0 + 0.5), 0), 255) for c in bg]
    out = torch.empty((total, chans), dtype=values.dtype, device=values.device)
    if len(set(bg)) == 1:
        out.fill_(bg[0])
    else:
        for c, value in enumerate(bg):
            out[:, c].fill_(value)
    out.index_copy_(0, cov.idx, values.t())
    return out.view(*cov.lead, cov.h, cov.w, chans)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit area-weighted vertex normals (..., N, 3) of a mesh wound counter-clockwise."""
    faces = faces.to(device=verts.device, dtype=torch.long)
    lead, n_vert = verts.shape[:-2], verts.shape[-2]
    flat = verts.reshape(-1, 3)
    n_mesh = flat.shape[0] // n_vert
    # Corner k of every face of every mesh, as rows of ``flat``.
    corner = (faces.t()[:, None, :] + n_vert * torch.arange(n_mesh, device=verts.device)[:, None])
    corner = corner.reshape(3, -1)
    p0, p1, p2 = (flat.index_select(0, c) for c in corner)
    fn = torch.linalg.cross(p1 - p0, p2 - p0)
    normals = torch.zeros_like(flat)
    for c in corner:
        normals.index_add_(0, c, fn)
    return F.normalize(normals, dim=-1, eps=1e-12).view(*lead, n_vert, 3)


def interpolate(frags: Fragments, faces: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes (..., N, C) -> (..., H, W, C).

    ``faces`` (F, 3) indexes ``attrs`` (pass UV faces for per-corner UVs). Background = 0.
    """
    cov = _covered(frags)
    return _compose(cov, _interp(cov, faces, attrs), 0.0, uint8=False)


def normals_image(
    frags: Fragments,
    verts: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras | None = None,
    background=0.0,
    normals: torch.Tensor | None = None,
    uint8: bool = False,
) -> torch.Tensor:
    """Per-pixel interpolated vertex normals as RGB, ``(n + 1) / 2``.

    World-space normals by default; given ``cameras`` (fragments (..., V, H, W)), normals are
    turned into each camera's space (x right, y down, z forward).
    """
    cov = _covered(frags)
    n = vertex_normals(verts, faces) if normals is None else normals
    px = F.normalize(_interp(cov, faces, n), dim=0, eps=1e-12)  # (3, P)
    if cameras is not None:
        rot = cameras.R.to(px)
        for i in range(cov.n_images):
            seg = px[:, cov.starts[i] : cov.starts[i + 1]]
            seg.copy_(rot[i % len(cameras)] @ seg)
    return _compose(cov, px.add_(1.0).mul_(0.5), background, uint8)


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
    uint8: bool = False,
) -> torch.Tensor:
    """Grey Lambert shading: ``ambient + albedo * max(0, n . l)``, one light fixed relative to
    each camera (``light`` points toward it in camera space), the same grey in RGB.

    Fragments are (..., V, H, W) for the V cameras. Returns (..., V, H, W, 3).
    """
    cov = _covered(frags)
    n = vertex_normals(verts, faces) if normals is None else normals
    px = _interp(cov, faces, n)  # (3, P), not unit length
    l_cam = F.normalize(torch.as_tensor(light, dtype=px.dtype), dim=0)
    l_world = (cameras.R.to("cpu", px.dtype).transpose(1, 2) @ l_cam).tolist()  # V x 3
    x, y, z = px
    dot = torch.empty_like(x)
    for i in range(cov.n_images):
        a, b = cov.starts[i], cov.starts[i + 1]
        lx, ly, lz = l_world[i % len(cameras)]
        torch.mul(x[a:b], lx, out=dot[a:b]).add_(y[a:b], alpha=ly).add_(z[a:b], alpha=lz)
    norm2 = (x * x).addcmul_(y, y).addcmul_(z, z).clamp_(min=1e-20)
    shade = dot.mul_(norm2.rsqrt_()).clamp_(min=0.0).mul_(albedo).add_(ambient).clamp_(0.0, 1.0)
    return _compose(cov, shade[None].expand(3, -1), background, uint8)


def vertex_colors_image(
    frags: Fragments, faces: torch.Tensor, colors: torch.Tensor, background=0.0, uint8=False
) -> torch.Tensor:
    """Per-vertex colours (..., N, C) in [0, 1] interpolated over the faces."""
    cov = _covered(frags)
    return _compose(cov, _interp(cov, faces, colors.to(frags.bary)), background, uint8)


def texture_image(
    frags: Fragments,
    faces: torch.Tensor,
    uvs: torch.Tensor,
    texture: torch.Tensor,
    background=0.0,
    uv_faces: torch.Tensor | None = None,
    uint8: bool = False,
) -> torch.Tensor:
    """Bilinear texture lookup.

    Args:
        uvs: (..., N, 2) per-vertex UVs, or per-corner UVs indexed by ``uv_faces`` (F, 3).
        texture: (..., Ht, Wt, C) float in [0, 1] or uint8; its leading dims must prefix the
            fragments' (e.g. one texture per frame for (B, V) images) or be absent.
    """
    cov = _covered(frags)
    tex = texture.to(frags.bary.device)
    tex = tex.float().div_(255.0) if tex.dtype == torch.uint8 else tex.float()
    uv = _interp(cov, faces if uv_faces is None else uv_faces, uvs.to(tex))
    grid = torch.stack([uv[0] * 2.0 - 1.0, 1.0 - uv[1] * 2.0], dim=-1)
    entry, n_tex = _owner(cov, tex, 3)
    src = tex.reshape(n_tex, *tex.shape[-3:]).permute(0, 3, 1, 2)
    if n_tex == 1:
        values = _sample(src, grid)
    else:
        counts = torch.bincount(entry, minlength=n_tex).tolist()  # pixels come sorted by image
        parts = torch.split(grid, counts)
        values = torch.cat([_sample(src[i : i + 1], g) for i, g in enumerate(parts)], dim=1)
    return _compose(cov, values, background, uint8)


def _sample(src: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (C, P) of one texture (1, C, Ht, Wt) at grid points (P, 2)."""
    out = F.grid_sample(
        src, grid.view(1, 1, -1, 2), mode="bilinear", padding_mode="border", align_corners=False
    )
    return out[0, :, 0]


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Float image in [0, 1] -> uint8."""
    return img.mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)
