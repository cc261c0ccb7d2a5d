"""Multi-view cameras around the head, and projection to pixels.

Frame of reference: FLAME's canonical head frame. ``y`` is up, the face looks along ``+z`` and
``+x`` points toward the avatar's own left. A view is a camera on a sphere around the head
centre, looking at the centre, with the world's ``+y`` kept upright in the image:

- ``yaw_deg`` turns the camera about ``+y``. Yaw 0 is the front camera on the ``+z`` axis.
  Positive yaw moves the camera toward ``+x``, the avatar's own LEFT: ``left30`` sees the
  avatar's left cheek, and a head that turns to its own left by 30 degrees (axis-angle
  ``(0, +0.52, 0)``) faces ``left30`` square on.
- ``pitch_deg`` raises the camera toward ``+y``: ``up15`` looks slightly down on the face.

The camera direction (from the head centre to the camera) is
``(sin(yaw) cos(pitch), sin(pitch), cos(yaw) cos(pitch))``.

Pixels: ``x`` grows to the right, ``y`` downward; pixel ``(row i, column j)`` covers
``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``. Seen from the front camera
the avatar's left (``+x``) is on the image's right, as when facing a person.
Camera space is OpenCV's: ``x`` right, ``y`` down, ``z`` forward (depth, metres).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class ViewSpec:
    """One camera direction around the head (degrees; see the module docstring)."""

    id: str
    yaw_deg: float
    pitch_deg: float = 0.0


#: The default four views of a streamed multi-view talking head: the front, the two
#: three-quarter views (camera 30 degrees toward the avatar's left and right) and a view from
#: 15 degrees above.
DEFAULT_VIEWS: tuple[ViewSpec, ...] = (
    ViewSpec("front", 0.0, 0.0),
    ViewSpec("left30", 30.0, 0.0),
    ViewSpec("right30", -30.0, 0.0),
    ViewSpec("up15", 0.0, 15.0),
)

_TERM = re.compile(r"(left|right|up|down)(\d+(?:\.\d+)?)")
VIEW_ID_HELP = (
    "a view id is 'front' or one or two terms of left<deg>/right<deg> (camera toward the "
    "avatar's own left/right) and up<deg>/down<deg>, e.g. 'left30', 'down10', 'right45up15'"
)


def view_from_id(view_id: str) -> ViewSpec:
    """The ViewSpec an id names: ``front``, ``left30``, ``right45up15``, ``down10``...

    Raises ValueError (saying what ids look like) for anything else."""
    vid = view_id.strip()
    if vid == "front":
        return ViewSpec("front", 0.0, 0.0)
    terms = _TERM.findall(vid)
    if not terms or "".join(a + b for a, b in terms) != vid or len(terms) > 2:
        raise ValueError(f"unknown view id {view_id!r}: {VIEW_ID_HELP}")
    yaw = pitch = None
    for word, number in terms:
        value = float(number)
        if word in ("left", "right"):
            if yaw is not None:
                raise ValueError(f"view id {view_id!r} names the yaw twice: {VIEW_ID_HELP}")
            yaw = value if word == "left" else -value
        else:
            if pitch is not None:
                raise ValueError(f"view id {view_id!r} names the pitch twice: {VIEW_ID_HELP}")
            pitch = value if word == "up" else -value
    if abs(pitch or 0.0) >= 89.0:
        raise ValueError(f"view id {view_id!r}: pitch must stay within 89 degrees")
    return ViewSpec(vid, yaw or 0.0, pitch or 0.0)


def parse_views(spec: str | Sequence[str | ViewSpec] | None) -> tuple[ViewSpec, ...]:
    """Views from ``"front,left30"``, a list of ids/ViewSpecs, or None (DEFAULT_VIEWS)."""
    if spec is None:
        return DEFAULT_VIEWS
    items = [s for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    if not items:
        raise ValueError(f"no views given: {VIEW_ID_HELP}")
    views = tuple(v if isinstance(v, ViewSpec) else view_from_id(v) for v in items)
    ids = [v.id for v in views]
    if len(set(ids)) != len(ids):
        raise ValueError(f"view ids must be unique, got {ids}")
    return views


@dataclass(frozen=True)
class Cameras:
    """V pinhole cameras sharing one image size.

    ``R`` (V,3,3) and ``T`` (V,3) map world points to camera space, ``X_cam = R @ X + T``
    (rows of R: image right, image down, forward). ``K`` (V,3,3) holds the intrinsics in
    pixels (``fx, fy, cx, cy``).
    """

    view_ids: tuple[str, ...]
    R: torch.Tensor
    T: torch.Tensor
    K: torch.Tensor
    size: tuple[int, int]  # (H, W)

    def __len__(self) -> int:
        return len(self.view_ids)

    @property
    def centers(self) -> torch.Tensor:
        """Camera positions in world space, (V, 3)."""
        return -torch.einsum("vji,vj->vi", self.R, self.T)

    def to(self, device=None, dtype=None) -> "Cameras":
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype or t.dtype)

        return Cameras(self.view_ids, move(self.R), move(self.T), move(self.K), self.size)

    def select(self, view_ids: Sequence[str]) -> "Cameras":
        """The cameras for a subset of the view ids, in the order given."""
        idx = [self.view_ids.index(v) for v in view_ids]
        return Cameras(tuple(view_ids), self.R[idx], self.T[idx], self.K[idx], self.size)


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = (int(s) for s in size)
    return (h, w)


def look_at_rotation(direction: torch.Tensor) -> torch.Tensor:
    """World-to-camera rotations (V,3,3) for cameras at ``center + d * direction`` looking
    at the centre with world ``+y`` upright."""
    forward = -torch.nn.functional.normalize(direction, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=direction.dtype).expand_as(forward)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up), dim=-1)
    down = torch.linalg.cross(forward, right)
    return torch.stack([right, down, forward], dim=-2)


def make_cameras(
    views: str | Sequence[str | ViewSpec] | None,
    center,
    radius: float,
    size: int | Sequence[int],
    fov_deg: float = 20.0,
    margin: float = 1.05,
    device=None,
) -> Cameras:
    """Perspective cameras for the views, all looking at ``center`` (3,).

    The distance is chosen so that a sphere of ``radius * margin`` around the centre just fits
    the narrower side of the image at the vertical/horizontal field of view ``fov_deg``.
    """
    specs = parse_views(views)
    h, w = _size_hw(size)
    if device is None and isinstance(center, torch.Tensor):
        device = center.device  # cameras live where the head's centre lives
    c = torch.as_tensor(center, dtype=torch.float32).detach().cpu().reshape(3)
    yaw = torch.tensor([math.radians(v.yaw_deg) for v in specs], dtype=torch.float64)
    pitch = torch.tensor([math.radians(v.pitch_deg) for v in specs], dtype=torch.float64)
    direction = torch.stack(
        [torch.sin(yaw) * torch.cos(pitch), torch.sin(pitch), torch.cos(yaw) * torch.cos(pitch)], -1
    )
    half = math.radians(fov_deg) / 2.0
    distance = float(radius) * margin / math.sin(half)
    R = look_at_rotation(direction).float()
    eye = c + distance * direction.float()
    T = -torch.einsum("vij,vj->vi", R, eye)
    focal = (min(h, w) / 2.0) / math.tan(half)
    K = torch.tensor([[focal, 0.0, w / 2.0], [0.0, focal, h / 2.0], [0.0, 0.0, 1.0]])
    K = K.expand(len(specs), 3, 3).clone()
    cams = Cameras(tuple(v.id for v in specs), R, T, K, (h, w))
    return cams.to(device) if device is not None else cams


def project(vertices: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """World vertices (B,N,3) -> (B,V,N,3): pixel x, pixel y, depth (camera z, metres)."""
    R = cameras.R.to(vertices)
    T = cameras.T.to(vertices)
    K = cameras.K.to(vertices)
    cam = torch.einsum("vij,bnj->bvni", R, vertices) + T[None, :, None, :]
    z = cam[..., 2]
    safe = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    cx, cy = K[:, 0, 2, None], K[:, 1, 2, None]
    x = fx * cam[..., 0] / safe + cx
    y = fy * cam[..., 1] / safe + cy
    return torch.stack([x, y, z], dim=-1)
