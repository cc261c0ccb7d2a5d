"""Shading: Lambert, normals, textures, vertex colours and the one-call render."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flamecast.renderer.raster import (
    interpolate,
    lambert,
    make_cameras,
    normals_image,
    project,
    rasterize_torch,
    render_views,
    texture_image,
    vertex_colors_image,
    vertex_normals,
)
from flamecast.renderer.raster.shading import DEFAULT_LIGHT


def quad(z: float = 0.0):
    """A 0.2 m square facing +z, counter-clockwise seen from +z, with UVs over [0, 1]^2."""
    verts = torch.tensor([[-0.1, -0.1, z], [0.1, -0.1, z], [0.1, 0.1, z], [-0.1, 0.1, z]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    return verts, faces, uvs


def front(size=32, views="front"):
    return make_cameras(views, center=[0, 0, 0], radius=0.15, size=size)


def raster(verts, faces, cams):
    return rasterize_torch(project(verts[None], cams)[0], faces, cams.size)


def test_vertex_normals_of_a_square_point_to_plus_z():
    verts, faces, _ = quad()
    n = vertex_normals(verts, faces)
    assert torch.allclose(n, torch.tensor([0.0, 0.0, 1.0]).expand(4, 3), atol=1e-6)
    batched = vertex_normals(torch.stack([verts, verts * 2]), faces)
    assert batched.shape == (2, 4, 3) and torch.allclose(batched[1], n)


def test_lambert_matches_the_formula_and_background_is_configurable():
    verts, faces, _ = quad()
    cams = front()
    frags = raster(verts, faces, cams)
    img = lambert(frags, verts, faces, cams, background=(0.0, 0.0, 1.0))
    light = torch.tensor(DEFAULT_LIGHT) / torch.tensor(DEFAULT_LIGHT).norm()
    n_cam = cams.R[0] @ torch.tensor([0.0, 0.0, 1.0])
    expected = 0.28 + 0.72 * max(0.0, float(n_cam @ light))
    hit = frags.mask[0]
    assert hit.sum() > 100
    assert torch.allclose(img[0][hit], torch.full_like(img[0][hit], expected), atol=1e-5)
    assert torch.equal(img[0][~hit], torch.tensor([0.0, 0.0, 1.0]).expand_as(img[0][~hit]))
    u8 = lambert(frags, verts, faces, cams, uint8=True)
    assert u8.dtype == torch.uint8 and int(u8[0][hit][0, 0]) == round(expected * 255)


def test_lambert_is_darker_when_the_surface_turns_from_the_light():
    verts, faces, _ = quad()
    cams = front()
    c, s = math.cos(math.radians(60)), math.sin(math.radians(60))
    turned = verts @ torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]]).T
    lit = lambert(raster(verts, faces, cams), verts, faces, cams)
    dim = lambert(raster(turned, faces, cams), turned, faces, cams)
    assert dim[dim.sum(-1) > 0].mean() < lit[lit.sum(-1) > 0].mean() - 0.05


def test_normals_image_world_and_camera_space():
    verts, faces, _ = quad()
    cams = front()
    frags = raster(verts, faces, cams)
    hit = frags.mask[0]
    world = normals_image(frags, verts, faces)
    assert torch.allclose(world[0][hit], torch.tensor([0.5, 0.5, 1.0]).expand(int(hit.sum()), 3))
    cam = normals_image(frags, verts, faces, cameras=cams)  # facing the camera: -z in its space
    assert torch.allclose(cam[0][hit], torch.tensor([0.5, 0.5, 0.0]).expand(int(hit.sum()), 3),
                          atol=1e-6)
    assert (world[0][~hit] == 0).all()


def test_texture_follows_u_right_v_up():
    verts, faces, uvs = quad()
    cams = front(64)
    frags = raster(verts, faces, cams)
    # Texture: red grows to the right (u), green grows toward the top row (v = 1).
    ht, wt = 16, 16
    red = torch.linspace(0, 1, wt).expand(ht, wt)
    green = torch.linspace(1, 0, ht)[:, None].expand(ht, wt)
    tex = torch.stack([red, green, torch.zeros(ht, wt)], dim=-1)
    img = texture_image(frags, faces, uvs, tex)[0]
    rows, cols = frags.mask[0].nonzero(as_tuple=True)
    top, bottom = rows.min(), rows.max()
    left, right = cols.min(), cols.max()
    mid_r, mid_c = (top + bottom) // 2, (left + right) // 2
    assert img[mid_r, right, 0] > 0.9 and img[mid_r, left, 0] < 0.1
    assert img[top, mid_c, 1] > 0.9 and img[bottom, mid_c, 1] < 0.1
    u8 = texture_image(frags, faces, uvs, (tex * 255).to(torch.uint8), uint8=True)[0]
    assert (u8.float() / 255 - img).abs()[frags.mask[0]].max() < 0.01


def test_texture_per_frame_and_uv_faces():
    verts, faces, uvs = quad()
    cams = front(24, "front,left20")
    screen = project(torch.stack([verts, verts]), cams)  # (2, 2, 4, 3)
    frags = rasterize_torch(screen, faces, 24)
    textures = torch.stack([torch.ones(4, 4, 3) * 0.25, torch.ones(4, 4, 3) * 0.75])
    img = texture_image(frags, faces, uvs, textures)
    assert img.shape == (2, 2, 24, 24, 3)
    assert torch.allclose(img[0][frags.mask[0]], torch.tensor(0.25))
    assert torch.allclose(img[1][frags.mask[1]], torch.tensor(0.75))
    same = texture_image(frags, faces, uvs, textures, uv_faces=faces)
    assert torch.equal(same, img)


def test_vertex_colors_interpolate_linearly_in_3d():
    verts, faces, _ = quad()
    cams = front(32, "front,right35up10")
    frags = raster(verts, faces, cams)
    colors = (verts + 0.1) / 0.2  # x, y, z mapped to [0, 1]
    img = vertex_colors_image(frags, faces, colors)
    interp = interpolate(frags, faces, verts)  # world position per pixel
    assert torch.allclose(img[frags.mask], ((interp + 0.1) / 0.2)[frags.mask], atol=1e-5)


def test_render_views_modes_shapes_and_errors():
    verts, faces, uvs = quad()
    cams = front(16, "front,left30,up15")
    batch = torch.stack([verts, verts * 0.5])
    for mode in ("lambert", "normals"):
        img = render_views(batch, faces, cams, mode=mode, uint8=True)
        assert img.shape == (2, 3, 16, 16, 3) and img.dtype == torch.uint8
        assert img[0].float().mean() > img[1].float().mean()  # the smaller square covers less
    tex = render_views(batch, faces, cams, mode="texture", uvs=uvs, texture=torch.ones(2, 2, 3))
    assert tex.shape == (2, 3, 16, 16, 3)
    col = render_views(batch, faces, cams, mode="colors", colors=torch.ones(4, 3) * 0.5)
    assert torch.allclose(col[col > 0], torch.tensor(0.5))
    with pytest.raises(ValueError, match="mode"):
        render_views(batch, faces, cams, mode="phong")
    with pytest.raises(ValueError, match="uvs and texture"):
        render_views(batch, faces, cams, mode="texture")
    with pytest.raises(ValueError, match="prefix"):
        render_views(batch, faces, cams, mode="colors", colors=torch.ones(3, 4, 3))


def test_closed_mesh_has_no_cracks():
    # A finely tessellated sphere seen from many views: every pixel centre well inside the
    # silhouette is covered (no pixel falls between two triangles that share an edge).
    rng = np.random.default_rng(0)
    n_lat, n_lon = 40, 80
    lat = torch.linspace(0, math.pi, n_lat + 1)[1:-1]
    lon = torch.linspace(0, 2 * math.pi, n_lon + 1)[:-1]
    ring = torch.stack(torch.meshgrid(lat, lon, indexing="ij"), -1).reshape(-1, 2)
    pts = torch.stack([torch.sin(ring[:, 0]) * torch.sin(ring[:, 1]), torch.cos(ring[:, 0]),
                       torch.sin(ring[:, 0]) * torch.cos(ring[:, 1])], -1)
    verts = torch.cat([pts, torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])]) * 0.1
    faces = []
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            faces += [[a, c, b], [b, c, d]]
    top, bottom = len(pts), len(pts) + 1
    last = (n_lat - 2) * n_lon
    for j in range(n_lon):
        faces += [[top, j, (j + 1) % n_lon], [bottom, last + (j + 1) % n_lon, last + j]]
    faces = torch.tensor(faces)
    views = [f"left{int(y)}up{int(p)}" for y, p in rng.uniform(0, 80, size=(6, 2))]
    cams = make_cameras(views, center=[0, 0, 0], radius=0.1, size=96)
    screen = project(verts[None], cams)[0]
    frags = rasterize_torch(screen, faces, 96, cull_backfaces=True)
    centre = screen[:, :, :2].mean(1)  # the sphere's centre projects near the mean
    cols = torch.arange(96) + 0.5
    d2 = (cols[None, None, :] - centre[:, 0, None, None]) ** 2 + (
        cols[None, :, None] - centre[:, 1, None, None]) ** 2
    radius = (screen[:, :, :2] - centre[:, None]).norm(dim=-1).amax(1)
    inner = d2 < (0.9 * radius[:, None, None]) ** 2
    assert inner.sum() > 1000
    assert frags.mask[inner].all()


def test_dense_fragments_shade_like_sparse_ones():
    # Fragments from another backend carry only dense tensors; shading must not depend on it.
    from flamecast.renderer.raster import Fragments

    verts, faces, uvs = quad()
    cams = front(24, "front,left40")
    sparse = rasterize_torch(project(verts[None], cams), faces, 24)
    dense = Fragments(sparse.face_idx, sparse.bary, sparse.depth)
    assert dense.covered is None and dense.shape == sparse.shape == (1, 2, 24, 24)
    for shade in (
        lambda fr: lambert(fr, verts[None], faces, cams),
        lambda fr: normals_image(fr, verts[None], faces, cameras=cams),
        lambda fr: texture_image(fr, faces, uvs, torch.rand(4, 4, 3, generator=torch.Generator().manual_seed(0))),
    ):
        assert torch.equal(shade(dense), shade(sparse))


@pytest.mark.gpu
def test_render_views_on_cuda_matches_cpu():
    verts, faces, uvs = quad()
    cams = front(32, "front,left30,up15")
    batch = torch.stack([verts, verts * 0.8])
    cpu = render_views(batch, faces, cams, mode="lambert")
    gpu = render_views(batch.cuda(), faces.cuda(), cams.to("cuda"), mode="lambert")
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() < 1e-3
