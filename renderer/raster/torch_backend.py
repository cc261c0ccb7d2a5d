"""The built-in rasterizer: pure PyTorch, CPU and CUDA, batched over frames and views.

Input is screen-space geometry (pixel x, pixel y, camera depth; see ``cameras.project``).
Three plane equations per triangle, ``P_i(x, y) = l_i / z_i`` (screen-space barycentric over
vertex depth), are linear in pixel coordinates: their signs give the inside test, their sum is
``1 / depth`` and ``P_i / sum`` are the perspective-correct barycentrics. The steps:

1. set-up per triangle: drop triangles behind the near plane, degenerate, off-screen or (when
   asked) back-facing; compute the planes and the pixel bounding box; sort the triangles into
   size classes by box area (``SCAN_SIZES`` on a CPU, ``GPU_SCAN_SIZES`` on a GPU).
2. scan: each class is one broadcast over (triangles, K candidate centres), the first K centres
   of the box row by row; boxes larger than the largest class are cut into pieces of whole
   rows. No per-pixel gathers.
3. depth test: one ``scatter_reduce(amax)`` per class of keys that pack the float64 bit pattern
   of ``1 / depth`` (positive floats order like their bit patterns) with the triangle index in
   the 29 low bits, always zero in a float32 value widened to float64. The largest key is the
   nearest triangle; equal depths resolve to the later triangle. A centre outside the triangle
   gets the sign bit of its planes' OR copied onto its key, so the key is negative and loses to
   the buffer's initial 0.
4. decode, on covered pixels only: the winning triangle, its barycentrics and depth.

A pixel belongs to a triangle when its centre lies inside or on an edge; triangles are grown by
``EDGE_EPS`` pixels for that test so that float32 rounding never opens a crack between
neighbours. Triangles are not clipped: one with a vertex at or behind ``near`` is dropped whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_TRI_BITS = 29
_TRI_MASK = (1 << _TRI_BITS) - 1
_SIGN_BIT = -(1 << 31)

@dataclass
class CoveredPixels:
    """The covered pixels of Fragments in sparse form.

    index: (P,) ascending flat pixel indices in (..., H, W) order.
    face: (P,) face index of each.
    bary: (3, P) barycentrics, one row per corner.
    depth: (P,) camera depth.
    """

    index: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor


class Fragments:
    """What a rasterizer gives per pixel, for images of shape (..., H, W).

    face_idx: (..., H, W) long, the index into ``faces`` of the visible face; -1 = background.
    bary: (..., H, W, 3) perspective-correct barycentrics of that face (0 on background).
    depth: (..., H, W) camera depth in the vertices' units (0 on background).
    covered: the covered pixels in sparse form (``CoveredPixels``) or None.
    shape: (..., H, W).

    Built either from the dense tensors, or from ``covered`` and ``shape``; then the dense
    tensors are made on first access (the shaders work from ``covered`` and never need them).
    """

    def __init__(self, face_idx=None, bary=None, depth=None, *, covered=None, shape=None):
        if face_idx is None and (covered is None or shape is None):
            raise ValueError("Fragments needs face_idx, bary and depth, or covered and shape")
        self._face_idx, self._bary, self._depth = face_idx, bary, depth
        self.covered: CoveredPixels | None = covered
        self.shape = tuple(shape) if shape is not None else tuple(face_idx.shape)

    def _dense(self, values: torch.Tensor, fill, tail: tuple[int, ...] = ()) -> torch.Tensor:
        total = math.prod(self.shape)
        out = torch.full((total, *tail), fill, dtype=values.dtype, device=values.device)
        out.index_copy_(0, self.covered.index, values)
        return out.view(*self.shape, *tail)

    @property
    def face_idx(self) -> torch.Tensor:
        if self._face_idx is None:
            self._face_idx = self._dense(self.covered.face, -1)
        return self._face_idx

    @property
    def bary(self) -> torch.Tensor:
        if self._bary is None:
            self._bary = self._dense(self.covered.bary.t(), 0.0, (3,))
        return self._bary

    @property
    def depth(self) -> torch.Tensor:
        if self._depth is None:
            self._depth = self._dense(self.covered.depth, 0.0)
        return self._depth

    @property
    def mask(self) -> torch.Tensor:
        """(..., H, W) bool, True where a face is visible."""
        return self.face_idx >= 0


#: Candidate centres per scanned piece. A box of w x h pixels goes to the smallest class that
#: holds it whole; larger boxes are cut into pieces of whole rows of the largest class. Fewer
#: classes mean fewer (but larger) operations: on a CPU the padding costs more than the calls,
#: on a GPU the calls (kernel launches, synchronisations) cost more than the padding.
SCAN_SIZES = (8, 16, 32, 64)
GPU_SCAN_SIZES = (32,)
#: Triangles are grown by this many pixels (about) so that float32 rounding never leaves a
#: crack between two triangles that share an edge.
EDGE_EPS = 1e-4


@dataclass
class _Triangles:
    """The surviving triangles (T of them), sorted by scan size class."""

    face: torch.Tensor  # (T,) face index
    base: torch.Tensor  # (T,) flat pixel index of the box's first pixel
    width: torch.Tensor  # (T,) box size in pixels (long)
    height: torch.Tensor
    scan: torch.Tensor  # (10, T) float32 [d/dx (3), d/dy (3), value (3)] at the box's first
    # centre, planes grown by EDGE_EPS, and the sum of the three growths
    decode: torch.Tensor  # (12, T) float32 [d/dx, d/dy, value] of P_0..P_2, box x, y, face
    sizes: tuple[int, ...]  # the scan classes (candidate centres per piece)
    counts: list[int]  # triangles per class


def _box(c: torch.Tensor, size: int):
    """Inclusive range of pixel centres between the smallest and largest corner coordinate
    ``c`` (3, M), clamped to [0, size - 1] (empty when first > last)."""
    lo = c.amin(0).sub_(0.5).ceil_().clamp_(0, size)
    hi = c.amax(0).sub_(0.5).floor_().clamp_(-1, size - 1)
    return lo, hi


def _planes(x, y, z, area2, qx, qy) -> torch.Tensor:
    """Coefficients of ``P_i = l_i / z_i`` relative to the points (qx, qy): (9, T) ordered
    [d/dx (P_0, P_1, P_2), d/dy (...), value (...)]; x, y, z are (3 corners, T)."""
    x, y = x - qx, y - qy
    xa, xb = torch.cat([x[1:], x[:1]]), torch.cat([x[2:], x[:2]])  # corners i+1 and i+2
    ya, yb = torch.cat([y[1:], y[:1]]), torch.cat([y[2:], y[:2]])
    s = (z * area2).reciprocal_()
    value = (xa * yb).sub_(xb * ya)
    planes = torch.cat([ya - yb, xb - xa, value]).view(3, 3, -1).mul_(s)
    return planes.view(9, -1)


def _corners(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(9, I*F): x, y, z of corners 0..2 of triangle m = image * F + face, as plain vectors."""
    n_img, n_faces = verts.shape[0], faces.shape[0]
    vt = verts.permute(2, 0, 1).reshape(3 * n_img, -1)  # (3 * I, N)
    corners = vt.index_select(1, faces.t().reshape(-1)).view(3, n_img, 3, n_faces)
    return corners.transpose(1, 2).reshape(9, n_img * n_faces)


def _visible(corners, h: int, w: int, cull: bool, near: float):
    """Indices of the triangles worth scanning, with their boxes and signed areas."""
    x, y, z = corners.view(3, 3, -1)
    area2 = (x[1] - x[0]).mul_(y[2] - y[0]).sub_((x[2] - x[0]).mul_(y[1] - y[0]))
    xlo, xhi = _box(x, w)
    ylo, yhi = _box(y, h)
    keep = (xhi >= xlo) & (yhi >= ylo) & (area2.abs() > 1e-9) & (z.amin(0) > near)
    if cull:  # counter-clockwise seen from outside -> negative area in y-down pixels
        keep &= area2 < 0
    idx = keep.nonzero().squeeze(1)
    width = xhi.sub_(xlo).add_(1).long()[idx]
    height = yhi.sub_(ylo).add_(1).long()[idx]
    return idx, width, height, xlo, ylo, area2


def _by_class(width, height, sizes: tuple[int, ...]) -> tuple[torch.Tensor | None, list[int]]:
    """An order that groups triangles by scan class (box area up to each of ``sizes``, the
    last class taking all larger ones; None: keep the order), and the class sizes."""
    if len(sizes) == 1:
        return None, [width.numel()]
    area = width * height
    classes, lower = [], 0
    for k in sizes[:-1]:
        classes.append(((area > lower) & (area <= k)).nonzero().squeeze(1))
        lower = k
    classes.append((area > lower).nonzero().squeeze(1))
    return torch.cat(classes), [c.numel() for c in classes]


def _setup(verts, faces, h: int, w: int, cull: bool, near: float, sizes) -> _Triangles:
    n_faces = faces.shape[0]
    corners = _corners(verts, faces)
    idx, width, height, xlo, ylo, area2 = _visible(corners, h, w, cull, near)
    order, counts = _by_class(width, height, sizes)
    if order is not None:
        idx, width, height = idx[order], width[order], height[order]
    x, y, z = corners.index_select(1, idx).view(3, 3, -1)
    xlo, ylo = xlo[idx], ylo[idx]
    scan = _planes(x, y, z, area2[idx], xlo + 0.5, ylo + 0.5)
    face = idx.remainder(n_faces)
    decode = torch.cat([scan[[0, 3, 6, 1, 4, 7, 2, 5, 8]], xlo[None], ylo[None], face[None].to(xlo)])
    grow = (scan[0:3].abs() + scan[3:6].abs()).mul_(EDGE_EPS)
    scan = torch.cat([scan, grow.sum(0, keepdim=True)])
    scan[6:9] += grow  # the decode planes stay exact; row 9 takes the growth off 1 / depth
    image = torch.div(idx, n_faces, rounding_mode="floor")
    return _Triangles(
        face=face,
        base=(image * h + ylo.long()) * w + xlo.long(),
        width=width,
        height=height,
        scan=scan,
        decode=decode,
        sizes=tuple(sizes),
        counts=counts,
    )


def _split(tris: _Triangles, a: int, b: int, w: int):
    """Cut the boxes of triangles a..b into pieces of at most ``tris.sizes[-1]`` centres (whole
    rows; strips of at most that many columns when wider): (tri, base, width, last_row, coef)."""
    k_max = tris.sizes[-1]
    width, height = tris.width[a:b], tris.height[a:b]
    rows = k_max // width.clamp(max=k_max)
    nx = (width + k_max - 1) // k_max
    count = nx * ((height + rows - 1) // rows)
    tri = torch.repeat_interleave(torch.arange(a, b, device=width.device), count)
    local = tri - a
    first = torch.cumsum(count, 0) - count
    j = torch.arange(tri.numel(), device=tri.device) - first[local]
    nx, rows = nx[local], rows[local]
    jy = torch.div(j, nx, rounding_mode="floor")
    ox, oy = (j - jy * nx) * k_max, jy * rows
    coef = tris.scan.index_select(1, tri)
    coef[6:9] += coef[0:3] * ox.to(coef) + coef[3:6] * oy.to(coef)
    piece_w = (width[local] - ox).clamp_(max=k_max)
    last = (height[local] - oy).clamp_(max=rows) - 1
    return tri, tris.base[tri] + oy * w + ox, piece_w.to(coef), last.to(coef), coef


def _scan(tris: _Triangles, buf: torch.Tensor, w: int, limit: int) -> None:
    """Depth test the pixel centres of every triangle's box into ``buf`` (flat (I*H*W,))."""
    start = 0
    for cls, (k, n) in enumerate(zip(tris.sizes, tris.counts)):
        if n == 0:
            continue
        a, b = start, start + n
        start = b
        if cls == len(tris.sizes) - 1:
            fields = _split(tris, a, b, w)
        else:
            tri = torch.arange(a, b, device=buf.device)
            width, height = tris.width[a:b], tris.height[a:b]
            fields = (tri, tris.base[a:b], width.to(tris.scan), (height - 1).to(tris.scan),
                      tris.scan[:, a:b])
        step = max(1, limit // k)
        for c in range(0, fields[0].numel(), step):
            part = [t[..., c : c + step] for t in fields]
            _scan_pieces(*part, k, buf, w)


def _scan_pieces(tri, base, width, last_row, coef, k: int, buf: torch.Tensor, w: int) -> None:
    """One broadcast scan of n pieces of k candidate centres each: the first k centres of a
    piece, row by row, of a box ``width`` wide (rows past ``last_row`` repeat the last row).

    tri, base, width, last_row are (n,); coef is (10, n) (see ``_Triangles.scan``)."""
    kf = torch.arange(k, device=buf.device, dtype=coef.dtype)
    wf = width[:, None]
    dy = torch.div(kf, wf).floor_()
    dx = (dy * wf).neg_().add_(kf)
    dy = torch.minimum(dy, last_row[:, None])
    planes = []
    for i in range(3):
        p = dx * coef[i, :, None]
        p.addcmul_(dy, coef[3 + i, :, None]).add_(coef[6 + i, :, None])
        planes.append(p)
    p0, p1, p2 = planes
    # A centre is outside when a plane is negative: then the OR of the three bit patterns has
    # the sign bit, which is copied onto 1 / depth so that its key is negative and never wins.
    bits = (p0.view(torch.int32) | p1.view(torch.int32)).bitwise_or_(p2.view(torch.int32))
    inv_depth = p0.add_(p1).add_(p2).sub_(coef[9, :, None])
    inv_depth.view(torch.int32).bitwise_or_(bits.bitwise_and_(_SIGN_BIT))
    key = inv_depth.double()
    key.view(torch.int64).bitwise_or_(tri[:, None])
    pix = dy.mul_(w).add_(dx).long().add_(base[:, None])
    buf.scatter_reduce_(0, pix.view(-1), key.view(-1), reduce="amax")


def _row_col(flat_idx: torch.Tensor, h: int, w: int):
    """Row and column of flat pixel indices into (I, h, w) images."""
    if h & (h - 1) == 0 and w & (w - 1) == 0:  # powers of two: bit operations
        shift = w.bit_length() - 1
        return (flat_idx >> shift) & (h - 1), flat_idx & (w - 1)
    pix = flat_idx.remainder(h * w)
    row = torch.div(pix, w, rounding_mode="floor")
    return row, pix - row * w


def _decode(tris: _Triangles, keys: torch.Tensor):
    """The covered pixels of the winning keys (I, H, W)."""
    n_img, h, w = keys.shape
    flat = keys.view(-1)
    covered = (flat > 0).nonzero().squeeze(1)
    tri = flat.index_select(0, covered).view(torch.int64) & _TRI_MASK
    co = tris.decode.index_select(1, tri)  # (12, P)
    row, col = _row_col(covered, h, w)
    col = col.to(co.dtype).sub_(co[9])
    row = row.to(co.dtype).sub_(co[10])
    p = torch.addcmul(co[2:9:3], co[0:9:3], col).addcmul_(co[1:9:3], row)  # (3, P)
    depth = p.sum(0).reciprocal_()
    return CoveredPixels(covered, co[11].long(), p.mul_(depth), depth)


def rasterize_torch(
    verts: torch.Tensor,
    faces: torch.Tensor,
    image_size: int | tuple[int, int],
    *,
    cull_backfaces: bool = False,
    near: float = 1e-4,
    max_candidates: int = 1 << 20,
    scan_sizes: tuple[int, ...] | None = None,
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
        max_candidates: bound on pixel centres tested at once (memory).
        scan_sizes: ascending scan classes (see ``SCAN_SIZES``); None picks ``SCAN_SIZES`` on
            a CPU and ``GPU_SCAN_SIZES`` on other devices. The result does not depend on it.
    Returns:
        Fragments with shapes (..., H, W); float32 barycentrics and depth.
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    lead = verts.shape[:-2]
    flat = verts.reshape(-1, *verts.shape[-2:]).float()
    flat = torch.nan_to_num(flat, nan=-1.0, posinf=-1.0, neginf=-1.0)  # non-finite: dropped
    n_img = flat.shape[0]
    faces = faces.to(device=flat.device, dtype=torch.long)
    if faces.shape[0] > 1 << 24:  # face ids travel as float32 in the decode table
        raise ValueError(f"meshes with more than {1 << 24} faces are not supported")
    if scan_sizes is None:
        scan_sizes = SCAN_SIZES if flat.device.type == "cpu" else GPU_SCAN_SIZES
    tris = None
    if n_img and faces.numel():
        tris = _setup(flat, faces, h, w, cull_backfaces, near, tuple(scan_sizes))
    if tris is None or tris.face.numel() == 0:
        none = torch.zeros(0, dtype=torch.long, device=flat.device)
        covered = CoveredPixels(none, none, flat.new_zeros(3, 0), flat.new_zeros(0))
    else:
        if tris.face.numel() > _TRI_MASK:
            raise ValueError(f"more than {_TRI_MASK} visible triangles in one call: split the batch")
        buf = torch.zeros((n_img, h, w), dtype=torch.float64, device=flat.device)
        _scan(tris, buf.view(-1), w, max_candidates)
        covered = _decode(tris, buf)
    return Fragments(covered=covered, shape=(*lead, h, w))
