"""BuiltinHead: layout, conventions (+x = avatar's left), expressions, joints, shape basis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamecast.plugins import BUILTIN_EXPRESSION_NAMES, FlameFrame, pose_slice
from flamecast.renderer.head import BuiltinHead, HeadOutput, load_head
from flamecast.renderer.head.builtin import ASSET

# FaceMesh landmark indices (the avatar's left = +x side first)
MOUTH_CORNER_L, MOUTH_CORNER_R = 291, 61
UPPER_LID_L, LOWER_LID_L = 386, 374
UPPER_LID_R, LOWER_LID_R = 159, 145
UPPER_LIP, LOWER_LIP = 13, 14
BROW_L, BROW_R = 334, 105
NOSE_TIP = 4


@pytest.fixture(scope="module")
def head() -> BuiltinHead:
    return load_head("builtin")


def _run(head, **kw) -> HeadOutput:
    kw.setdefault("pose", torch.zeros(1, 15))
    with torch.no_grad():
        return head(**kw)


def _expr(head, name, value=1.0):
    e = torch.zeros(1, head.n_expression)
    e[0, head.expression_names.index(name)] = value
    return e


def test_layout(head):
    out = _run(head, pose=torch.zeros(3, 15))
    n = head.v_template.shape[0]
    assert 3000 <= n <= 8000
    assert out.vertices.shape == (3, n, 3) and out.joints.shape == (3, 5, 3)
    assert out.landmarks.shape == (3, 468, 3) and head.landmark_set == "mediapipe468"
    assert head.expression_names == BUILTIN_EXPRESSION_NAMES
    assert head.head_space().expression_names == BUILTIN_EXPRESSION_NAMES and head.head_space().has_eyelids
    assert 10 <= head.n_shape <= 20 and len(head.shape_names) == head.n_shape
    assert head.uvs.shape == (n, 2) and head.uvs.min() >= 0 and head.uvs.max() <= 1
    assert head.faces.dtype == torch.long and int(head.faces.max()) == n - 1
    assert ASSET.stat().st_size < 2_000_000


def test_asset_is_package_data():
    from importlib.resources import files

    assert files("flamecast.renderer.head.assets").joinpath("builtin_head.npz").is_file()


def test_uvs_put_the_face_in_the_middle_upright(head):
    uv = head.uvs
    assert (uv[10] - 0.5).abs().max() < 0.2 and (uv[152] - 0.5).abs().max() < 0.25
    assert uv[10, 1] > uv[152, 1]  # v grows upward: forehead above chin
    assert uv[454, 0] > uv[234, 0]  # u grows toward the avatar's left (+x)


def test_landmarks_are_the_facemesh_vertices(head):
    out = _run(head)
    assert torch.allclose(out.landmarks[0], out.vertices[0, :468], atol=1e-6)


def test_size_and_orientation(head):
    v = head.v_template
    width = v[:, 0].max() - v[:, 0].min()
    height = v[:, 1].max() - v[:, 1].min()
    assert 0.13 < width < 0.19 and 0.25 < height < 0.40  # a head with a neck, in metres
    lm = head.v_template[:468]
    assert lm[NOSE_TIP, 2] > lm[:, 2].mean()  # the nose points along +z
    assert lm[10, 1] > lm[152, 1]  # forehead above chin
    assert lm[MOUTH_CORNER_L, 0] > 0 > lm[MOUTH_CORNER_R, 0]  # +x is the avatar's left


def test_faces_point_outward(head):
    v, f = head.v_template.numpy(), head.faces.numpy()
    regions = head.vertex_regions()
    inner = np.concatenate([regions[k].numpy() for k in ("mouth_inside", "eyes", "eye_sockets", "ears")])
    skin = ~np.isin(f, inner).any(1)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    out = v[f].mean(1) - head.center.numpy()
    assert ((n * out).sum(1)[skin] > 0).mean() > 0.97
    for part, share in (("eye_left", 0.99), ("eye_right", 0.99), ("ears", 0.8)):
        ids = regions[part].numpy()
        sel = np.isin(f, ids).all(1)
        centroid = v[ids].mean(0) if part != "ears" else None
        if centroid is None:  # two ears: each face against its own ear's centre
            centroid = np.where((v[f[sel]].mean(1)[:, :1] > 0), v[ids][v[ids, 0] > 0].mean(0), v[ids][v[ids, 0] < 0].mean(0))
        assert ((n[sel] * (v[f[sel]].mean(1) - centroid)).sum(1) > 0).mean() > share, part
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert counts.max() == 2  # a manifold surface


def test_regions(head):
    regions = head.vertex_regions()
    for key in ("face", "scalp", "neck", "eyes", "eye_left", "eye_right", "mouth_inside"):
        assert len(regions[key]) > 0, key
    v = head.v_template
    assert v[regions["eye_left"], 0].mean() > 0 > v[regions["eye_right"], 0].mean()
    assert v[regions["neck"], 1].mean() < v[regions["scalp"], 1].mean()
    assert v[regions["scalp"], 2].min() < v[regions["face"], 2].min() - 0.05  # back of the head exists


def test_smile_moves_mouth_corners_up_and_out(head):
    base, smile = _run(head).landmarks[0], _run(head, expression=_expr(head, "smile")).landmarks[0]
    d = smile - base
    assert d[MOUTH_CORNER_L, 1] > 0.004 and d[MOUTH_CORNER_R, 1] > 0.004
    assert d[MOUTH_CORNER_L, 0] > 0.002 and d[MOUTH_CORNER_R, 0] < -0.002


def test_frown_moves_mouth_corners_down(head):
    d = _run(head, expression=_expr(head, "frown")).landmarks[0] - _run(head).landmarks[0]
    assert d[MOUTH_CORNER_L, 1] < -0.003 and d[MOUTH_CORNER_R, 1] < -0.003


def _lid_gap(lm, upper, lower):
    return float(lm[upper, 1] - lm[lower, 1])


def test_blink_left_closes_only_the_left_eye(head):
    base = _run(head).landmarks[0]
    blink = _run(head, expression=_expr(head, "eye_blink_left")).landmarks[0]
    assert _lid_gap(base, UPPER_LID_L, LOWER_LID_L) > 0.006
    assert abs(_lid_gap(blink, UPPER_LID_L, LOWER_LID_L)) < 0.0015
    assert _lid_gap(blink, UPPER_LID_R, LOWER_LID_R) == pytest.approx(_lid_gap(base, UPPER_LID_R, LOWER_LID_R), abs=1e-4)


def test_eyelids_match_blink_and_combine_by_max(head):
    blink = _run(head, expression=_expr(head, "eye_blink_right")).vertices
    lids = _run(head, eyelids=torch.tensor([[0.0, 1.0]])).vertices
    assert torch.allclose(blink, lids, atol=1e-6)
    both = _run(head, expression=_expr(head, "eye_blink_right", 1.0), eyelids=torch.tensor([[0.0, 0.4]])).vertices
    assert torch.allclose(both, blink, atol=1e-6)


@pytest.mark.parametrize(
    "name,index,axis,sign",
    [
        ("brow_raise", BROW_L, 1, +1),
        ("brow_furrow", BROW_L, 1, -1),
        ("eye_wide", UPPER_LID_L, 1, +1),
        ("mouth_pucker", UPPER_LIP, 2, +1),
        ("mouth_stretch", MOUTH_CORNER_L, 0, +1),
        ("cheek_puff", 425, 0, +1),
        ("sneer", 327, 1, +1),
        ("lip_press", UPPER_LIP, 2, -1),
        ("mouth_funnel", LOWER_LIP, 1, -1),
        ("eye_squint", LOWER_LID_L, 1, +1),
        ("brow_inner_raise", 336, 1, +1),
        ("upper_lip_raise", 0, 1, +1),
    ],
)
def test_expression_moves_its_region(head, name, index, axis, sign):
    d = _run(head, expression=_expr(head, name)).landmarks[0] - _run(head).landmarks[0]
    assert sign * float(d[index, axis]) > 0.001, (name, d[index])
    far = d[[152, 234, 454]] if name.startswith("brow") else d[[10, 152, 234, 454]]
    assert far.abs().max() < 0.002  # the forehead top, chin and face sides stay (mostly)


def test_expressions_are_distinct(head):
    dirs = head.exprdirs.reshape(-1, head.n_expression).T
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    cos = dirs @ dirs.T - torch.eye(head.n_expression)
    assert cos.abs().max() < 0.95


def test_jaw_opens_the_mouth(head):
    pose = torch.zeros(1, 15)
    pose[0, pose_slice("jaw")] = torch.tensor([0.3, 0.0, 0.0])
    base, open_ = _run(head).landmarks[0], _run(head, pose=pose).landmarks[0]
    assert open_[LOWER_LIP, 1] < base[LOWER_LIP, 1] - 0.008
    assert (open_[UPPER_LIP] - base[UPPER_LIP]).norm() < 0.0015
    assert (open_[10] - base[10]).norm() < 1e-6  # forehead does not move with the jaw


def test_eye_pose_rotates_only_that_eyeball(head):
    regions = head.vertex_regions()
    pose = torch.zeros(1, 15)
    pose[0, pose_slice("eye_left")] = torch.tensor([0.0, 0.4, 0.0])  # look toward +x
    base, turned = _run(head).vertices[0], _run(head, pose=pose).vertices[0]
    left, right = regions["eye_left"], regions["eye_right"]
    front = left[torch.argmax(base[left, 2])]
    assert turned[front, 0] > base[front, 0] + 0.003
    assert torch.allclose(turned[right], base[right]) and torch.allclose(turned[:468], base[:468])
    joints = _run(head).joints[0]
    assert torch.allclose(base[left].mean(0), joints[3], atol=0.002)


def test_positive_yaw_turns_the_face_toward_plus_x(head):
    pose = torch.zeros(1, 15)
    pose[0, pose_slice("global")] = torch.tensor([0.0, 0.5, 0.0])
    base, turned = _run(head).landmarks[0], _run(head, pose=pose).landmarks[0]
    assert turned[NOSE_TIP, 0] > base[NOSE_TIP, 0] + 0.02
    pose = torch.zeros(1, 15)
    pose[0, pose_slice("neck")] = torch.tensor([0.3, 0.0, 0.0])  # positive pitch looks down
    down = _run(head, pose=pose).landmarks[0]
    assert down[NOSE_TIP, 1] < base[NOSE_TIP, 1] - 0.01


def test_neck_pose_keeps_the_neck_base(head):
    pose = torch.zeros(1, 15)
    pose[0, pose_slice("neck")] = torch.tensor([0.0, 0.6, 0.0])
    base, turned = _run(head).vertices[0], _run(head, pose=pose).vertices[0]
    bottom = head.v_template[:, 1] < head.v_template[:, 1].min() + 0.005
    assert (turned[bottom] - base[bottom]).norm(dim=1).max() < 1e-4


def test_shape_components_change_geometry(head):
    names = head.shape_names
    for i, name in enumerate(names):
        shape = torch.zeros(1, head.n_shape)
        shape[0, i] = 2.0
        d = (_run(head, shape=shape).vertices - _run(head).vertices).norm(dim=-1)
        assert d.max() > 0.003, name
    shape = torch.zeros(1, head.n_shape)
    shape[0, names.index("head_width")] = 2.0
    wide = _run(head, shape=shape).vertices[0]
    assert wide[:, 0].max() - wide[:, 0].min() > head.v_template[:, 0].max() - head.v_template[:, 0].min() + 0.005


def test_gradients_flow_to_every_input(head):
    pose = torch.zeros(2, 15, requires_grad=True)
    expr = torch.zeros(2, head.n_expression, requires_grad=True)
    shape = torch.zeros(2, head.n_shape, requires_grad=True)
    trans = torch.zeros(2, 3, requires_grad=True)
    out = head(pose=pose, expression=expr, shape=shape, translation=trans)
    (out.landmarks[:, :, 1].sum() + out.landmarks[:, :, 0].pow(2).sum()).backward()
    for t in (pose, expr, shape, trans):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_frames_drive_the_head(head):
    frame = FlameFrame(pose=np.zeros(15), expression=np.zeros(3))  # fewer channels: zero-padded
    out = head(pose=frame.pose[None], expression=frame.expression[None])  # read-only numpy arrays
    assert out.vertices.shape[0] == 1 and out.vertices.dtype == torch.float32
    with pytest.raises(ValueError, match="at most"):
        head(pose=torch.zeros(1, 15), expression=torch.zeros(1, head.n_expression + 1))


@pytest.mark.gpu
def test_builtin_on_cuda(head):
    gpu = BuiltinHead().cuda()
    out = gpu(pose=torch.zeros(4, 15, device="cuda"), expression=torch.ones(4, gpu.n_expression, device="cuda"))
    cpu = head(pose=torch.zeros(4, 15), expression=torch.ones(4, head.n_expression))
    assert torch.allclose(out.vertices.cpu(), cpu.vertices, atol=1e-5)


def test_docs_list_every_channel_and_shape_component(head):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "head.md").read_text()
    for name in head.expression_names:
        assert f"| `{name}` |" in text, name
    for name in head.shape_names:
        assert name in text, name
