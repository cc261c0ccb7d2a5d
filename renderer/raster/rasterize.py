"""The built-in rasterizer: pure PyTorch, CPU and CUDA, batched over frames and views.

Input is screen-space geometry (pixel x, pixel y, camera depth; see ``cameras.project``). The
algorithm is a vectorised scan over each triangle's pixel bounding box:

1. set-up per triangle: drop triangles behind the near plane, degenerate, off-screen or (when
   asked) back-facing; compute three plane equations ``P_i(x, y) = l_i / z_i`` (screen-space
   barycentric over vertex depth), which are linear in pixel coordinates. Their signs give the
   inside test, their sum is ``1 / depth`` and ``P_i / sum`` are the perspective-correct
   barycentrics.
2. expand every surviving triangle into the pixel centres of its bounding box (bounded chunks),
   keep the centres inside the triangle;
3. depth test with one ``scatter_reduce(amin)`` of int64 keys ``(depth bits << 32) | triangle``
   into a per-pixel buffer: positive float32 bit patterns order like the floats, so the smallest
   key is the nearest triangle, and equal depths resolve to the lower triangle index;
4. decode the winning triangle per pixel and evaluate its planes once more for barycentrics
   and depth.

A pixel belongs to a triangle when its centre lies inside or on an edge. Triangles are not
clipped: one with a vertex at or behind ``near`` is dropped whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_INT64_MAX = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF


@dataclass
class Fragments:
    """What a rasterizer gives per pixel, for images of shape (..., H, W).

    face_idx: (..., H, W) long, the index into ``faces`` of the visible face; -1 = background.
    bary: (..., H, W, 3) perspective-correct barycentrics of that face (0 on background).
    depth: (..., H, W) camera depth in the vertices' units (0 on background).
    """

    face_idx: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(..., H, W) bool, True where a face is visible."""
        return self.face_idx >= 0


@dataclass
class _Triangles:
    """Per-triangle set-up of the surviving triangles (T of them)."""

    image: torch.Tensor  # (T,) image index in the flattened batch
    face: torch.Tensor  # (T,) face index
    xmin: torch.Tensor  # (T,) bounding box, pixel columns/rows (inclusive), int64
    ymin: torch.Tensor
    width: torch.Tensor
    height: torch.Tensor
    coef: torch.Tensor  # (T, 9): d/dx (3), d/dy (3), value at the box's first pixel centre (3)


def _setup(verts: torch.Tensor, faces: torch.Tensor, h: int, w: int, cull: bool, near: float):
    n_faces = faces.shape[0]
    tri = verts[:, faces]  # (I, F, 3 vertices, 3 coords)
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    area2 = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (x[..., 2] - x[..., 0]) * (
        y[..., 1] - y[..., 0]
    )
    xmin = torch.ceil(x.amin(-1) - 0.5).clamp(0, w)
    xmax = torch.floor(x.amax(-1) - 0.5).clamp(-1, w - 1)
    ymin = torch.ceil(y.amin(-1) - 0.5).clamp(0, h)
    ymax = torch.floor(y.amax(-1) - 0.5).clamp(-1, h - 1)
    keep = (z.amin(-1) > near) & (area2.abs() > 1e-12) & (xmax >= xmin) & (ymax >= ymin)
    keep &= torch.isfinite(tri).flatten(-2).all(-1)
    if cull:
        keep &= area2 < 0  # counter-clockwise seen from outside -> clockwise in y-down pixels
    idx = keep.flatten().nonzero().squeeze(1)
    sel = lambda t: t.flatten(0, 1)[idx]  # noqa: E731
    x, y, z, area2 = sel(x), sel(y), sel(z), sel(area2)
    xmin, ymin = sel(xmin), sel(ymin)
    coef = _planes(x, y, z, area2, xmin + 0.5, ymin + 0.5)
    xmin_i, ymin_i = xmin.long(), ymin.long()
    return _Triangles(
        image=idx // n_faces,
        face=idx % n_faces,
        xmin=xmin_i,
        ymin=ymin_i,
        width=sel(xmax).long() - xmin_i + 1,
        height=sel(ymax).long() - ymin_i + 1,
        coef=coef,
    )


def _planes(x, y, z, area2, qx, qy) -> torch.Tensor:
    """Coefficients of ``P_i = l_i / z_i`` relative to the point (qx, qy): (T, 9)."""
    order_a, order_b = [1, 2, 0], [2, 0, 1]
    xa, xb = x[:, order_a] - qx[:, None], x[:, order_b] - qx[:, None]
    ya, yb = y[:, order_a] - qy[:, None], y[:, order_b] - qy[:, None]
    scale = 1.0 / (area2[:, None] * z)
    da = (ya - yb) * scale
    db = (xb - xa) * scale
    c = (xa * yb - xb * ya) * scale
    return torch.cat([da, db, c], dim=1)


def _chunks(counts: torch.Tensor, limit: int):
    """Split triangle ranges so that each holds at most ``limit`` candidate pixels (a single
    triangle larger than the limit gets a range of its own)."""
    total = torch.cumsum(counts, 0)
    if total.numel() == 0:
        return []
    n_total = int(total[-1])
    if n_total <= limit:
        return [(0, counts.numel(), n_total)]
    bounds = torch.arange(limit, n_total, limit, device=counts.device)
    cuts = torch.searchsorted(total, bounds, right=True).tolist()
    edges = sorted(set([0, *cuts, counts.numel()]))
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        if b > a:
            out.append((a, b, None))
    return out


def _scan(tris: _Triangles, buf: torch.Tensor, h: int, w: int, limit: int) -> None:
    counts = tris.width * tris.height
    for a, b, n in _chunks(counts, limit):
        _scan_range(tris, counts, a, b, n, buf, h, w)


def _scan_range(tris, counts, a, b, n, buf, h, w) -> None:
    cnt = counts[a:b]
    local_tri = torch.repeat_interleave(torch.arange(a, b, device=cnt.device), cnt, output_size=n)
    starts = torch.cumsum(cnt, 0) - cnt
    local = torch.arange(local_tri.numel(), device=cnt.device) - starts[local_tri - a]
    width = tris.width[local_tri]
    dy = torch.div(local, width, rounding_mode="floor")
    dx = local - dy * width
    co = tris.coef[local_tri]
    fx = dx.to(co.dtype)[:, None]
    fy = dy.to(co.dtype)[:, None]
    p = co[:, 0:3] * fx + co[:, 3:6] * fy + co[:, 6:9]
    inside = (p >= 0).all(dim=1).nonzero().squeeze(1)
    tri = local_tri[inside]
    depth = 1.0 / p[inside].sum(dim=1)
    pix = (tris.image[tri] * h + tris.ymin[tri] + dy[inside]) * w + tris.xmin[tri] + dx[inside]
    key = (depth.float().view(torch.int32).long() << 32) | tri
    buf.scatter_reduce_(0, pix, key, reduce="amin")


def _decode(tris: _Triangles, buf: torch.Tensor, n_img: int, h: int, w: int):
    dtype = tris.coef.dtype
    device = buf.device
    covered = (buf != _INT64_MAX).nonzero().squeeze(1)
    tri = buf[covered] & _LOW32
    pix = covered % (h * w)
    py, px = pix // w, pix % w
    co = tris.coef[tri]
    fx = (px - tris.xmin[tri]).to(dtype)[:, None]
    fy = (py - tris.ymin[tri]).to(dtype)[:, None]
    p = co[:, 0:3] * fx + co[:, 3:6] * fy + co[:, 6:9]
    s = p.sum(dim=1, keepdim=True)
    total = n_img * h * w
    face_idx = torch.full((total,), -1, dtype=torch.long, device=device)
    face_idx[covered] = tris.face[tri]
    bary = torch.zeros((total, 3), dtype=dtype, device=device)
    bary[covered] = p / s
    depth = torch.zeros((total,), dtype=dtype, device=device)
    depth[covered] = 1.0 / s.squeeze(1)
    return face_idx, bary, depth


def rasterize_torch(
    verts: torch.Tensor,
    faces: torch.Tensor,
    image_size: int | tuple[int, int],
    *,
    cull_backfaces: bool = False,
    near: float = 1e-4,
    max_candidates: int = 1 << 22,
) -> Fragments:
    """Rasterize screen-space triangles with the built-in PyTorch rasterizer.

    Args:
        verts: (..., N, 3) pixel x, pixel y, camera depth (e.g. ``project`` output; any leading
            dims such as (B, V) or (B*V,)).
        faces: (F, 3) long vertex indices, counter-clockwise seen from outside.
        image_size: H (square) or (H, W).
        cull_backfaces: skip faces turned away from the camera (halves the work for closed
            meshes; needs consistent counter-clockwise winding).
        near: triangles with a vertex at a depth <= near are dropped.
        max_candidates: bound on candidate pixels held at once (memory).
    Returns:
        Fragments with shapes (..., H, W).
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    lead = verts.shape[:-2]
    flat = verts.reshape(-1, *verts.shape[-2:])
    if not flat.is_floating_point():
        flat = flat.float()
    n_img = flat.shape[0]
    faces = faces.to(device=flat.device, dtype=torch.long)
    buf = torch.full((n_img * h * w,), _INT64_MAX, dtype=torch.int64, device=flat.device)
    if faces.numel() and n_img:
        tris = _setup(flat, faces, h, w, cull_backfaces, near)
        _scan(tris, buf, h, w, max_candidates)
    else:
        tris = _Triangles(*(torch.zeros(0, dtype=torch.long, device=flat.device),) * 6,
                          coef=torch.zeros(0, 9, dtype=flat.dtype, device=flat.device))
    face_idx, bary, depth = _decode(tris, buf, n_img, h, w)
    return Fragments(
        face_idx=face_idx.reshape(*lead, h, w),
        bary=bary.reshape(*lead, h, w, 3),
        depth=depth.reshape(*lead, h, w),
    )
