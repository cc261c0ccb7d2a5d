"""Cameras: view ids, the documented directions, and projection."""

from __future__ import annotations

import math

import pytest
import torch

from flamecast.renderer.raster import (
    DEFAULT_VIEWS,
    ViewSpec,
    make_cameras,
    parse_views,
    project,
    rasterize_torch,
)


def test_default_views_are_documented_four():
    assert [v.id for v in DEFAULT_VIEWS] == ["front", "left30", "right30", "up15"]
    assert parse_views(None) == DEFAULT_VIEWS


def test_parse_views_ids_and_errors():
    views = parse_views("front, left30,right45up15,down10")
    assert views == (
        ViewSpec("front", 0.0, 0.0),
        ViewSpec("left30", 30.0, 0.0),
        ViewSpec("right45up15", -45.0, 15.0),
        ViewSpec("down10", 0.0, -10.0),
    )
    for bad in ("back", "left", "left30left20", "sideways30", "up90"):
        with pytest.raises(ValueError, match="view id"):
            parse_views(bad)
    with pytest.raises(ValueError, match="unique"):
        parse_views("front,front")
    assert parse_views([ViewSpec("mine", 10.0, 5.0)])[0].yaw_deg == 10.0


def test_camera_positions_follow_the_convention():
    cams = make_cameras("front,left30,up15", center=[0.0, 0.1, 0.0], radius=0.2, size=64)
    c = cams.centers - torch.tensor([0.0, 0.1, 0.0])
    d = c / c.norm(dim=1, keepdim=True)
    s = math.sin(math.radians(30))
    assert torch.allclose(d[0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(d[1], torch.tensor([s, 0.0, math.cos(math.radians(30))]), atol=1e-6)
    assert d[2, 1] > 0.25  # up15 sits above the head
    # Every camera looks at the centre: it projects to the image centre.
    centre = project(torch.tensor([[[0.0, 0.1, 0.0]]]), cams)[0, :, 0]
    assert torch.allclose(centre[:, :2], torch.full((3, 2), 32.0), atol=1e-4)


def test_front_view_axes():
    cams = make_cameras("front", center=[0, 0, 0], radius=0.2, size=64)
    pts = torch.tensor([[[0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1], [0, 0, 0]]])
    (right, up, nose, centre), = project(pts, cams)[0]
    assert right[0] > centre[0] + 5  # the avatar's left (+x) is on the image's right
    assert up[1] < centre[1] - 5  # +y is up in the image
    assert nose[2] < centre[2]  # the +z side of the face is nearer the front camera


def _quad(z_sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A square facing +z (counter-clockwise seen from +z) placed at z = 0.1 * z_sign."""
    v = torch.tensor([[-0.1, -0.1, 0], [0.1, -0.1, 0], [0.1, 0.1, 0], [-0.1, 0.1, 0.0]])
    v[:, 2] = 0.1 * z_sign
    return v, torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_front_camera_sees_the_plus_z_face():
    front, faces = _quad(+1)
    back, _ = _quad(-1)
    verts = torch.cat([front, back])
    all_faces = torch.cat([faces, faces + 4])
    cams = make_cameras("front", center=[0, 0, 0], radius=0.2, size=32)
    frags = rasterize_torch(project(verts[None], cams), all_faces, 32, cull_backfaces=True)
    seen = frags.face_idx[frags.mask].unique().tolist()
    assert seen == [0, 1]  # the +z square, wound counter-clockwise toward the camera


def _rotate_y(verts: torch.Tensor, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # axis-angle (0, angle, 0)
    return verts @ rot.T


def test_positive_head_yaw_faces_the_left_view():
    # A "nose" point on +z: after the head turns by +30 degrees about +y, the left30 camera
    # sees it at the image centre, exactly as the front camera sees the unturned head.
    g = torch.Generator().manual_seed(0)
    verts = torch.randn(50, 3, generator=g) * 0.05
    verts[0] = torch.tensor([0.0, 0.0, 0.12])
    turned = _rotate_y(verts, math.radians(30))
    assert turned[0, 0] > 0.05  # the nose moved toward +x, the avatar's own left
    cams = make_cameras("front,left30", center=[0, 0, 0], radius=0.2, size=64)
    seen_front = project(verts[None], cams)[0, 0]
    seen_left = project(turned[None], cams)[0, 1]
    assert torch.allclose(seen_front, seen_left, atol=1e-4)
    # The front camera sees the turned nose on the image's right.
    assert project(turned[None], cams)[0, 0, 0, 0] > 32 + 5


def test_rectangular_images_and_device_move():
    cams = make_cameras(None, center=[0, 0, 0], radius=0.2, size=(48, 64))
    assert cams.size == (48, 64) and cams.K.shape == (4, 3, 3)
    assert cams.K[0, 0, 2] == 32 and cams.K[0, 1, 2] == 24
    assert cams.to("cpu", torch.float64).R.dtype == torch.float64
    assert cams.select(["up15", "front"]).view_ids == ("up15", "front")


def test_cameras_follow_a_tensor_centre_to_its_device():
    cams = make_cameras(None, center=torch.zeros(3, dtype=torch.float64), radius=0.2, size=32)
    assert cams.R.device.type == "cpu" and cams.R.dtype == torch.float32


@pytest.mark.gpu
def test_cameras_from_a_cuda_centre_are_on_cuda():
    cams = make_cameras(None, center=torch.zeros(3, device="cuda"), radius=0.2, size=32)
    assert cams.R.device.type == "cuda" and cams.K.device.type == "cuda"
