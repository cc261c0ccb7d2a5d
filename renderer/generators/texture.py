"""Project a portrait onto the fitted head as a UV texture atlas, and fill what it cannot see.

For every texel of the atlas (a rasterization of the head in UV space) we know its face and
barycentrics, hence its point on the fitted head. That point is projected into the portrait
(``fitting.PortraitFit``), and it takes the portrait's colour where it is visible: in front of
the portrait's depth map, turned toward the camera (weights fall off smoothly toward grazing
angles) and inside the face FaceMesh found (softly: beyond the face's outline the portrait
shows hair or background, and the fitted skull need not match the person's hair).

The hidden side gets a plausible fill, smoothly blended:

1. mirror: a texel whose own point is hidden takes the colour of its mirror point (x -> -x on
   the neutral head), when that one is visible; faces are close to symmetric.
2. extension: colours spread a little into what remains hidden (normalised convolution), so
   seams between seen and unseen do not show as edges.
3. tone: everything else gets a skin tone (the median of the well-seen face) or, on the scalp,
   a hair tone (the median of a patch above the forehead); the inside of the mouth is dark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..raster import rasterize_torch, vertex_normals
from .fitting import PortraitFit

MOUTH_INSIDE = (0.30, 0.12, 0.12)
EYE_WHITE = (0.85, 0.83, 0.80)
DEPTH_TOLERANCE_M = 0.006
FACING_LO, FACING_HI = 0.10, 0.45


@dataclass
class UVAtlas:
    """The head rasterized in UV space: per texel its face and barycentrics (mask = covered)."""

    face_idx: torch.Tensor  # (T, T) long, -1 outside every face
    bary: torch.Tensor  # (T, T, 3)

    @property
    def mask(self) -> torch.Tensor:
        return self.face_idx >= 0


def uv_atlas(uvs: torch.Tensor, faces: torch.Tensor, size: int, vertices: torch.Tensor | None = None,
             center: torch.Tensor | None = None) -> UVAtlas:
    """Rasterize the UV layout (u right, v up) into a ``size`` x ``size`` atlas.

    Where parts of the layout overlap (a projection-style layout puts the inside of the mouth
    and the eyeballs under the lips and lids), the surface farthest from ``center`` owns the
    texel: it is the one a camera sees. Without ``vertices``, the lower face index wins.
    """
    kept = torch.arange(faces.shape[0], device=faces.device)
    if vertices is not None:
        kept = kept[~seam_faces(uvs, faces, vertices)]
    faces = faces[kept]
    depth = torch.ones_like(uvs[:, 0])
    if vertices is not None:
        r = (vertices - (center if center is not None else vertices.mean(0))).norm(dim=-1)
        depth = 20.0 * float(r.max()) - r  # positive, nearly constant: barycentrics stay affine
    screen = torch.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size, depth], -1)
    frags = rasterize_torch(screen[None].float(), faces, size, cull_backfaces=False)
    return UVAtlas(kept[frags.face_idx[0].clamp(min=0)].where(frags.face_idx[0] >= 0, -1), frags.bary[0])


SEAM_STRETCH = 5.0


def seam_faces(uvs: torch.Tensor, faces: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """(F,) bool: faces across the UV layout's seam or pole. With per-vertex UVs they span
    (part of) the atlas, folded or stretched: more than SEAM_STRETCH times the median UV area
    per surface area, or folded over (UV winding against the majority) behind the head's
    centre. They get no texels and a flat colour when rendered."""
    t_uv, t_3d = uvs[faces], vertices[faces]
    e1, e2 = t_uv[:, 1] - t_uv[:, 0], t_uv[:, 2] - t_uv[:, 0]
    signed = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    area_3d = 0.5 * torch.linalg.cross(t_3d[:, 1] - t_3d[:, 0], t_3d[:, 2] - t_3d[:, 0]).norm(dim=-1)
    ratio = signed.abs() / area_3d.clamp_min(1e-12)
    folded = torch.sign(signed) != torch.sign(torch.sign(signed).sum())  # against most faces
    behind = t_3d.mean(1)[:, 2] < vertices[:, 2].mean()
    return (ratio > SEAM_STRETCH * ratio.median()) | (folded & behind)


def mirror_vertices(template: torch.Tensor) -> torch.Tensor:
    """For each vertex, the index of the vertex nearest its mirror image (x -> -x)."""
    mirrored = template * template.new_tensor([-1.0, 1.0, 1.0])
    out = torch.empty(template.shape[0], dtype=torch.long, device=template.device)
    for start in range(0, template.shape[0], 2048):
        d = torch.cdist(mirrored[start:start + 2048], template)
        out[start:start + 2048] = d.argmin(1)
    return out


@dataclass
class BakedTexture:
    """The avatar's colours.

    Attributes:
        image: (T, T, 3) float in [0, 1], the UV texture atlas.
        skin, hair: (3,) the tones estimated from the portrait.
        flat: (F,) bool, faces drawn in one flat colour instead of the texture: faces across
            the UV layout's seam (they have no texels) and the inside of the mouth.
        flat_color: (F, 3) float, the flat colour of those faces.
    """

    image: torch.Tensor
    skin: torch.Tensor
    hair: torch.Tensor
    flat: torch.Tensor
    flat_color: torch.Tensor


def bake_texture(head, fit: PortraitFit, portrait, size: int = 512, mirror: bool = True) -> BakedTexture:
    """The head's colours from the portrait (``renderer.portrait.Portrait``)."""
    image = portrait.image
    device = head.center.device
    faces = head.faces
    atlas = uv_atlas(head.uvs, faces, size, head.v_template, head.center)
    with torch.no_grad():
        out = head(pose=fit.pose[None], shape=fit.shape[None], expression=fit.expression[None])
    verts = out.vertices[0]
    img = torch.from_numpy(np.array(image, dtype=np.float32)).to(device) / 255.0
    proj = fit.to_image(verts)  # (N, 3) pixels + depth
    depth_map = _depth_map(proj, faces, img.shape[0], img.shape[1], fit.scale)
    facing = vertex_normals(verts[None], faces)[0][:, 2]  # toward the portrait camera (+z)
    trust = _face_mask(img.shape[:2], portrait.landmarks, fit.face_px).to(device)
    texel = _TexelSampler(atlas, faces, proj, facing, depth_map, img, fit.scale, trust)
    color, weight = texel.sample(torch.arange(verts.shape[0], device=device))
    if mirror:
        mirror_idx = mirror_vertices(head.v_template if hasattr(head, "v_template") else verts)
        m_color, m_weight = texel.sample(mirror_idx)
        extra = (1.0 - weight) * m_weight
        total = weight + extra
        color = torch.where(total[..., None] > 0, (color * weight[..., None] + m_color * extra[..., None])
                            / total.clamp_min(1e-6)[..., None], color)
        weight = total
    fill, skin, hair = _tone_fill(head, atlas, faces, color, weight, img, portrait.landmarks)
    image = _pad_outside(_blend(color, weight, fill, atlas.mask), atlas.mask, hair).clamp(0.0, 1.0)
    flat, flat_color = _flat_faces(head, image)
    return BakedTexture(image, skin, hair, flat, flat_color)


def _pad_outside(image: torch.Tensor, mask: torch.Tensor, default: torch.Tensor) -> torch.Tensor:
    """Texels outside every face take the colour of the nearest covered ones (bilinear lookups
    near a chart's edge read them); far from any, ``default``."""
    m = mask.float()[..., None]
    sigma = 0.02 * image.shape[0]
    den = _soften(m, sigma)
    spread = _soften(image * m, sigma) / den.clamp_min(1e-4)
    near = (den / 0.05).clamp(0.0, 1.0)
    outside = near * spread + (1.0 - near) * default
    return torch.where(mask[..., None], image, outside)


def _flat_faces(head, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Seam faces take the mean texture colour at their corners' UVs; the mouth cavity is dark."""
    faces = head.faces
    t = image.shape[0]
    uv = head.uvs
    cols = (uv[:, 0] * t - 0.5).round().long().clamp(0, t - 1)
    rows = ((1.0 - uv[:, 1]) * t - 0.5).round().long().clamp(0, t - 1)
    color = image[rows, cols][faces].mean(1)  # (F, 3)
    regions = head.vertex_regions() if hasattr(head, "vertex_regions") else {}
    mouth = torch.zeros(faces.shape[0], dtype=torch.bool, device=faces.device)
    if "mouth_inside" in regions:
        member = torch.zeros(uv.shape[0], dtype=torch.bool, device=faces.device)
        member[regions["mouth_inside"].to(faces.device)] = True
        mouth = member[faces].float().mean(-1) > 0.5
    color[mouth] = image.new_tensor(MOUTH_INSIDE)
    return seam_faces(uv, faces, head.v_template) | mouth, color


def _depth_map(proj: torch.Tensor, faces: torch.Tensor, h: int, w: int, scale: float) -> torch.Tensor:
    """Nearest depth per portrait pixel (inf where the head is not), for the visibility test."""
    offset = float(proj[:, 2].abs().max()) * 4.0 + 10.0 * scale  # positive depths, near-affine
    screen = torch.cat([proj[:, :2], proj[:, 2:] + offset], -1)
    frags = rasterize_torch(screen[None], faces, (h, w), cull_backfaces=True)
    depth = frags.depth[0] - offset
    return torch.where(frags.mask[0], depth, torch.full_like(depth, float("inf")))


class _TexelSampler:
    """Colour and confidence of each texel's point, or of the point of another vertex set."""

    def __init__(self, atlas, faces, proj, facing, depth_map, img, scale, trust) -> None:
        self.atlas, self.faces, self.proj, self.facing = atlas, faces, proj, facing
        self.depth_map, self.img, self.trust = depth_map, img, trust
        self.tolerance = DEPTH_TOLERANCE_M * scale
        self.h, self.w = img.shape[:2]

    def _interp(self, values: torch.Tensor, vertex_ids: torch.Tensor) -> torch.Tensor:
        fidx = self.atlas.face_idx.clamp(min=0)
        corners = vertex_ids[self.faces[fidx]]  # (T, T, 3)
        return (values[corners] * self.atlas.bary[..., None]).sum(-2)

    def sample(self, vertex_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self._interp(self.proj, vertex_ids)  # (T, T, 3)
        facing = self._interp(self.facing[:, None], vertex_ids)[..., 0]
        grid = torch.stack([p[..., 0] / self.w * 2 - 1, p[..., 1] / self.h * 2 - 1], -1)[None]
        color = F.grid_sample(self.img.permute(2, 0, 1)[None], grid, mode="bilinear",
                              padding_mode="border", align_corners=False)[0].permute(1, 2, 0)
        seen = F.grid_sample(self.depth_map[None, None], grid, mode="nearest", padding_mode="border",
                             align_corners=False)[0, 0]
        trust = F.grid_sample(self.trust[None, None], grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)[0, 0]
        visible = (p[..., 2] <= seen + self.tolerance) & self.atlas.mask
        weight = visible.float() * _smoothstep(FACING_LO, FACING_HI, facing) * trust
        return color, weight


def _face_mask(size: tuple[int, int], landmarks: np.ndarray, face_px: float) -> torch.Tensor:
    """(H, W) float: 1 well inside the face's outline (convex hull of the landmarks, pulled in
    by 4%), falling smoothly to 0 across its edge."""
    import cv2

    h, w = size
    pts = np.asarray(landmarks)[:, :2].astype(np.float64)
    centre = pts.mean(0)
    hull = cv2.convexHull(((pts - centre) * 0.96 + centre).astype(np.float32)).reshape(-1, 2)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull * 16).astype(np.int32), 255, lineType=cv2.LINE_AA, shift=4)
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), max(0.5, 0.1 * face_px))
    return torch.from_numpy(soft)


def _smoothstep(lo: float, hi: float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


def _tone_fill(head, atlas, faces, color, weight, img, landmarks) -> torch.Tensor:
    """Per-texel fill colour: skin on the face, neck and ears, dark in the mouth, white eyes,
    hair everywhere else (the scalp, and any part of the head no region names)."""
    regions = head.vertex_regions() if hasattr(head, "vertex_regions") else {}
    n_verts = head.uvs.shape[0]
    region_of = _texel_regions(atlas, faces, regions, n_verts)
    good = (weight > 0.9) & atlas.mask
    face_sel = good & region_of.get("face", torch.ones_like(good))
    skin = _median(color[face_sel]) if int(face_sel.sum()) > 50 else _median(color[good]) if int(good.sum()) > 50 else None
    if skin is None:
        skin = torch.tensor([0.75, 0.6, 0.5], device=color.device)
    hair = _patch_above_forehead(img, landmarks)
    fill = (hair if "scalp" in region_of else skin).expand(*atlas.mask.shape, 3).clone()
    for name, tone in (("face", skin), ("neck", skin), ("ears", skin), ("eye_sockets", skin),
                       ("mouth_inside", color.new_tensor(MOUTH_INSIDE)), ("eyes", color.new_tensor(EYE_WHITE))):
        sel = region_of.get(name)
        if sel is not None:
            fill[sel] = tone
    return _soften(fill, 0.01 * atlas.mask.shape[0]), skin, hair


def _texel_regions(atlas, faces, regions: dict[str, torch.Tensor], n_verts: int) -> dict[str, torch.Tensor]:
    """Texels whose face's vertices are mostly in each named vertex region."""
    out = {}
    fidx = atlas.face_idx.clamp(min=0)
    for name, idx in regions.items():
        member = torch.zeros(n_verts, dtype=torch.float32, device=atlas.bary.device)
        member[idx.to(member.device)] = 1.0
        share = (member[faces[fidx]] * atlas.bary).sum(-1)
        out[name] = (share > 0.5) & atlas.mask
    return out


def _median(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.median(dim=0).values


FOREHEAD, CHIN = 10, 152  # FaceMesh landmark ids


def _patch_above_forehead(img: torch.Tensor, landmarks: np.ndarray) -> torch.Tensor:
    """Median colour of a patch just above the forehead landmark: a guess at the hair."""
    h, w = img.shape[:2]
    (fx, fy), (_, cy) = landmarks[FOREHEAD, :2], landmarks[CHIN, :2]
    face_h = max(4.0, float(cy - fy))
    half = max(1, int(0.08 * face_h))
    yc = int(fy - 0.2 * face_h)
    y0, y1 = max(0, yc - half), min(h, yc + half)
    x0, x1 = max(0, int(fx) - half), min(w, int(fx) + half)
    patch = img[y0:y1, x0:x1]
    if patch.numel() == 0:
        return img.new_tensor([0.25, 0.2, 0.17])
    return _median(patch.reshape(-1, 3))


def _blend(color, weight, fill, mask) -> torch.Tensor:
    """Seen colour where seen, its normalised-convolution extension nearby, the fill beyond."""
    t = color.shape[0]
    w = weight * mask.float()
    sigma = 0.02 * t
    num = _soften(color * w[..., None], sigma)
    den = _soften(w[..., None], sigma)
    spread = num / den.clamp_min(1e-4)
    reach = (den / 0.15).clamp(0.0, 1.0)  # how much seen colour is near
    around = reach * spread + (1.0 - reach) * fill
    return w[..., None] * color + (1.0 - w[..., None]) * around


def _soften(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of an (H, W, C) image (separable, reflect padding)."""
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / max(sigma, 1e-3)) ** 2)
    k = k / k.sum()
    chw = img.permute(2, 0, 1)[:, None]  # (C, 1, H, W)
    chw = F.conv2d(F.pad(chw, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    chw = F.conv2d(F.pad(chw, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return chw[:, 0].permute(1, 2, 0)
