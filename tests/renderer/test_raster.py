"""The built-in rasterizer against a brute-force reference written independently here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamecast.renderer.raster import make_cameras, project, rasterize, rasterize_torch


def reference_raster(screen: np.ndarray, faces: np.ndarray, h: int, w: int, near: float = 1e-4):
    """Per-triangle loop over all pixel centres in float64: face id, barycentrics, depth and a
    mask of ambiguous pixels, where either answer is right: a centre within 1e-3 pixel of a
    triangle's edge (inside or out), or two covering triangles within a relative 1e-6 in depth."""
    v = screen.astype(np.float64)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    face = -np.ones((h, w), np.int64)
    depth = np.full((h, w), np.inf)
    second = np.full((h, w), np.inf)
    bary = np.zeros((h, w, 3))
    edge = np.zeros((h, w), bool)
    for k, (a, b, c) in enumerate(faces):
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = v[a], v[b], v[c]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if abs(area) < 1e-12 or min(z0, z1, z2) <= near:
            continue
        l0 = ((x1 - xs) * (y2 - ys) - (x2 - xs) * (y1 - ys)) / area
        l1 = ((x2 - xs) * (y0 - ys) - (x0 - xs) * (y2 - ys)) / area
        l2 = 1.0 - l0 - l1
        inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        # Signed distances (pixels) of the centre to the three edge lines, positive inside.
        lengths = [np.hypot(x2 - x1, y2 - y1), np.hypot(x0 - x2, y0 - y2), np.hypot(x1 - x0, y1 - y0)]
        dist = [li * abs(area) / ln for li, ln in zip((l0, l1, l2), lengths)]
        nearest = np.minimum(np.minimum(dist[0], dist[1]), dist[2])
        edge |= np.abs(nearest) < 1e-3
        inv = l0 / z0 + l1 / z1 + l2 / z2
        d = 1.0 / np.where(inside, inv, 1.0)
        nearer = inside & (d < depth)
        second = np.where(nearer, depth, np.where(inside, np.minimum(second, d), second))
        face[nearer] = k
        depth[nearer] = d[nearer]
        for i, li, zi in ((0, l0, z0), (1, l1, z1), (2, l2, z2)):
            bary[..., i][nearer] = (li / zi / inv)[nearer]
    seen = np.isfinite(second)
    tie = seen & (np.where(seen, second, 0.0) - np.where(seen, depth, 0.0) <= 1e-6 * depth)
    return face, bary, np.where(face >= 0, depth, 0.0), edge | tie


def random_mesh(rng, n_verts=60, n_faces=80):
    verts = rng.normal(size=(n_verts, 3)) * 0.1
    faces = np.stack([rng.choice(n_verts, 3, replace=False) for _ in range(n_faces)])
    return torch.tensor(verts, dtype=torch.float32), torch.tensor(faces)


def random_views(rng, n=3):
    return [f"left{rng.integers(0, 90)}up{rng.integers(0, 40)}" for _ in range(n)]


@pytest.mark.parametrize("seed, scan_sizes", [(0, None), (1, None), (2, None), (3, (64,)), (4, (4, 16))])
def test_matches_brute_force_reference_on_random_meshes(seed, scan_sizes):
    rng = np.random.default_rng(seed)
    verts, faces = random_mesh(rng)
    cams = make_cameras(random_views(rng), center=[0, 0, 0], radius=0.25, size=(40, 48))
    screen = project(verts[None], cams)[0]  # (V, N, 3)
    frags = rasterize_torch(screen, faces, (40, 48), scan_sizes=scan_sizes)
    total = same = same_all = 0
    for view in range(len(cams)):
        ref_face, ref_bary, ref_depth, ambiguous = reference_raster(
            screen[view].numpy(), faces.numpy(), 40, 48
        )
        got = frags.face_idx[view].numpy()
        same_all += (got == ref_face).sum()
        clear = ~ambiguous
        total += clear.sum()
        same += (got == ref_face)[clear].sum()
        agree = clear & (got == ref_face) & (ref_face >= 0)
        np.testing.assert_allclose(frags.bary[view].numpy()[agree], ref_bary[agree], atol=2e-4)
        np.testing.assert_allclose(frags.depth[view].numpy()[agree], ref_depth[agree], rtol=1e-5)
        assert (ref_face >= 0).mean() > 0.2  # the views see the mesh
    assert same / total >= 0.999
    assert total >= 0.95 * len(cams) * 40 * 48  # few pixels are set aside as ambiguous
    assert same_all / (len(cams) * 40 * 48) >= 0.999  # ambiguous ones included


def test_barycentrics_sum_to_one_and_reproduce_the_pixel_centre():
    rng = np.random.default_rng(5)
    verts, faces = random_mesh(rng, 40, 60)
    cams = make_cameras("front,right40,down20", center=[0, 0, 0], radius=0.25, size=32)
    screen = project(verts[None], cams)[0]
    frags = rasterize_torch(screen, faces, 32)
    hit = frags.mask
    bary = frags.bary[hit].double()
    assert torch.allclose(bary.sum(-1), torch.ones_like(bary[:, 0]), atol=1e-5)
    assert (bary >= -1e-6).all()
    # Perspective-correct barycentrics interpolate camera-space points; projecting the
    # interpolated point must land on the pixel centre, at the reported depth.
    img, rows, cols = hit.nonzero(as_tuple=True)
    corners = faces[frags.face_idx[hit]]  # (P, 3)
    world = (verts[corners].double() * bary[..., None]).sum(1)
    cam_pts = torch.einsum("pij,pj->pi", cams.R[img].double(), world) + cams.T[img].double()
    k = cams.K[img].double()
    px = k[:, 0, 0] * cam_pts[:, 0] / cam_pts[:, 2] + k[:, 0, 2]
    py = k[:, 1, 1] * cam_pts[:, 1] / cam_pts[:, 2] + k[:, 1, 2]
    assert torch.allclose(px, cols.double() + 0.5, atol=2e-3)
    assert torch.allclose(py, rows.double() + 0.5, atol=2e-3)
    assert torch.allclose(cam_pts[:, 2], frags.depth[hit].double(), rtol=1e-5)


def test_batched_equals_unbatched():
    rng = np.random.default_rng(7)
    verts = torch.stack([random_mesh(rng, 50, 1)[0] for _ in range(2)])  # (B, N, 3)
    faces = random_mesh(rng, 50, 70)[1]
    cams = make_cameras(None, center=[0, 0, 0], radius=0.25, size=24)
    screen = project(verts, cams)  # (B, V, N, 3)
    batched = rasterize_torch(screen, faces, 24)
    assert batched.face_idx.shape == (2, 4, 24, 24)
    for b in range(2):
        for v in range(4):
            one = rasterize_torch(screen[b, v], faces, 24)
            assert torch.equal(one.face_idx, batched.face_idx[b, v])
            assert torch.equal(one.bary, batched.bary[b, v])
            assert torch.equal(one.depth, batched.depth[b, v])


def test_scan_classes_do_not_change_the_result():
    rng = np.random.default_rng(8)
    verts, faces = random_mesh(rng, 60, 120)
    cams = make_cameras(None, center=[0, 0, 0], radius=0.25, size=48)
    screen = project(verts[None], cams)
    cpu_default = rasterize_torch(screen, faces, 48)
    for sizes in [(32,), (64,), (4, 8), (16, 128)]:
        other = rasterize_torch(screen, faces, 48, scan_sizes=sizes)
        same = other.face_idx == cpu_default.face_idx
        assert same.float().mean() >= 0.999
        assert torch.equal(other.bary[same], cpu_default.bary[same])


def test_small_chunks_give_the_same_fragments():
    rng = np.random.default_rng(3)
    verts, faces = random_mesh(rng, 50, 90)
    cams = make_cameras("front,left30", center=[0, 0, 0], radius=0.25, size=32)
    screen = project(verts[None], cams)
    whole = rasterize_torch(screen, faces, 32)
    chunked = rasterize_torch(screen, faces, 32, max_candidates=97)
    assert torch.equal(whole.face_idx, chunked.face_idx)
    assert torch.equal(whole.depth, chunked.depth)


def test_background_near_plane_and_empty_input():
    faces = torch.tensor([[0, 1, 2]])
    behind = torch.tensor([[[2.0, 2.0, 1.0], [10.0, 2.0, -1.0], [2.0, 10.0, 1.0]]])
    frags = rasterize_torch(behind, faces, 12)
    assert (frags.face_idx == -1).all() and (frags.depth == 0).all()
    empty = rasterize_torch(torch.zeros(1, 3, 3), torch.zeros(0, 3, dtype=torch.long), 8)
    assert empty.face_idx.shape == (1, 8, 8) and (empty.face_idx == -1).all()


def test_culling_hides_only_back_faces_of_a_closed_mesh():
    # A tetrahedron wound counter-clockwise seen from outside: culling changes nothing visible.
    verts = torch.tensor([[0.0, 0.0, 0.1], [0.1, 0.0, -0.05], [-0.06, 0.08, -0.05],
                          [-0.06, -0.08, -0.05]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    centre = verts.mean(0)
    tri = verts[faces]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert ((normal * (tri.mean(1) - centre)).sum(-1) > 0).all()
    cams = make_cameras(None, center=centre, radius=0.15, size=32)
    screen = project(verts[None], cams)
    plain = rasterize_torch(screen, faces, 32)
    culled = rasterize_torch(screen, faces, 32, cull_backfaces=True)
    assert plain.mask.any()
    assert torch.equal(plain.face_idx, culled.face_idx)
    # Turned inside out, the culled mesh shows its far side: same silhouette, deeper.
    inside_out = rasterize_torch(screen, faces.flip(1), 32, cull_backfaces=True)
    assert torch.equal(inside_out.mask, plain.mask)
    hit = plain.mask
    assert (inside_out.depth[hit] > plain.depth[hit] + 1e-4).float().mean() > 0.95


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        rasterize(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]), 8, backend="opengl")


@pytest.mark.gpu
def test_cuda_matches_cpu():
    rng = np.random.default_rng(11)
    verts, faces = random_mesh(rng, 80, 150)
    cams = make_cameras(None, center=[0, 0, 0], radius=0.25, size=64)
    screen = project(verts[None], cams)
    cpu = rasterize_torch(screen, faces, 64)
    gpu = rasterize_torch(screen.cuda(), faces.cuda(), 64)
    assert (gpu.face_idx.cpu() == cpu.face_idx).float().mean() >= 0.999
    hit = cpu.mask & (gpu.face_idx.cpu() == cpu.face_idx)
    assert torch.allclose(gpu.bary.cpu()[hit], cpu.bary[hit], atol=1e-4)
