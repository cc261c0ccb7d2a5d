"""FlameModel: loads a FLAME-layout pickle without chumpy; skinning matches FLAME's formulas."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from flamecast.renderer.head import FlameModel, load_head
from flamecast.renderer.head.flame import read_flame_pickle

N_VERTS = 40
PARENTS = [-1, 0, 1, 1, 1]


def _fake_chumpy() -> type:
    """A stand-in `chumpy` package whose Ch pickles like chumpy's (state dict with 'x')."""
    pkg = types.ModuleType("chumpy")
    mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x, np.float64)

        def __getstate__(self):
            return {"x": self.x, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {}}

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    mod.Ch = Ch
    pkg.ch = mod
    return pkg, mod, Ch


def _synthetic_model(rng: np.random.Generator) -> dict:
    v = rng.normal(scale=0.05, size=(N_VERTS, 3))
    # each joint regressed from 4 vertices
    reg = np.zeros((5, N_VERTS))
    for j in range(5):
        reg[j, rng.choice(N_VERTS, 4, replace=False)] = 0.25
    weights = rng.random((N_VERTS, 5)) ** 3
    weights /= weights.sum(1, keepdims=True)
    return {
        "v_template": v,
        "shapedirs": rng.normal(scale=0.01, size=(N_VERTS, 3, 400)),
        "posedirs": rng.normal(scale=0.01, size=(N_VERTS, 3, 36)),
        "J_regressor": sp.csc_matrix(reg),
        "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "f": rng.integers(0, N_VERTS, size=(60, 3)).astype(np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


@pytest.fixture()
def flame_dir(tmp_path):
    rng = np.random.default_rng(0)
    model = _synthetic_model(rng)
    pkg, mod, ch_cls = _fake_chumpy()
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, mod
    try:
        pickled = dict(model)
        pickled["shapedirs"] = ch_cls(model["shapedirs"])
        pickled["v_template"] = ch_cls(model["v_template"])
        (tmp_path / "generic_model.pkl").write_bytes(pickle.dumps(pickled, protocol=2))
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    return tmp_path, model


# ----------------------------------------------------------- independent numpy reference


def _rodrigues(r):
    theta = np.linalg.norm(r)
    if theta < 1e-12:
        return np.eye(3)
    k = r / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def _reference(model, shape, expression, pose):
    """FLAME (Li et al. 2017, eq. 1-4) in float64 numpy, one frame."""
    dirs = model["shapedirs"]
    beta = np.concatenate([shape, np.zeros(300 - len(shape)), expression, np.zeros(100 - len(expression))])
    v_shaped = model["v_template"] + dirs @ beta
    reg = model["J_regressor"].toarray()
    joints = reg @ v_shaped
    rots = [_rodrigues(pose[3 * j : 3 * j + 3]) for j in range(5)]
    feature = np.concatenate([(r - np.eye(3)).ravel() for r in rots[1:]])
    v_posed = v_shaped + model["posedirs"] @ feature
    world = []
    for j, p in enumerate(PARENTS):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = joints[j] - (joints[p] if p >= 0 else 0)
        world.append(local if p < 0 else world[p] @ local)
    skinning = []
    for j in range(5):
        a = world[j].copy()
        a[:3, 3] -= world[j][:3, :3] @ joints[j]
        skinning.append(a)
    out = np.zeros_like(v_posed)
    for i in range(len(v_posed)):
        t = sum(model["weights"][i, j] * skinning[j] for j in range(5))
        out[i] = t[:3, :3] @ v_posed[i] + t[:3, 3]
    return out, np.array([w[:3, 3] for w in world])


# ------------------------------------------------------------------------------- tests


def test_pickle_loads_without_chumpy(flame_dir):
    folder, model = flame_dir
    assert "chumpy" not in sys.modules
    arrays = read_flame_pickle(folder / "generic_model.pkl")
    np.testing.assert_array_equal(arrays["shapedirs"], model["shapedirs"])
    np.testing.assert_array_equal(arrays["J_regressor"], model["J_regressor"].toarray())


def test_unpickler_refuses_arbitrary_classes(tmp_path):
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps({"v_template": __import__("collections").OrderedDict()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_flame_pickle(path)


def test_skinning_matches_reference(flame_dir):
    folder, model = flame_dir
    head = FlameModel(folder / "generic_model.pkl", n_shape=300, n_expression=100).double()
    rng = np.random.default_rng(1)
    shape, expression = rng.normal(size=10), rng.normal(size=5)
    pose = rng.normal(scale=0.4, size=15)
    out = head(
        pose=torch.tensor(pose)[None], shape=torch.tensor(shape)[None], expression=torch.tensor(expression)[None]
    )
    ref_verts, ref_joints = _reference(model, shape, expression, pose)
    np.testing.assert_allclose(out.vertices[0].numpy(), ref_verts, atol=1e-7)
    np.testing.assert_allclose(out.joints[0].numpy(), ref_joints, atol=1e-7)


def test_batch_translation_and_gradients(flame_dir):
    folder, _ = flame_dir
    head = FlameModel(folder / "generic_model.pkl", n_shape=20, n_expression=10)
    assert (head.n_shape, head.n_expression) == (20, 10)
    pose = torch.zeros(3, 15, requires_grad=True)
    expr = torch.zeros(3, 10, requires_grad=True)
    out = head(pose=pose, expression=expr, translation=torch.tensor([[0.0, 0.0, 1.0]] * 3))
    assert out.vertices.shape == (3, N_VERTS, 3) and out.joints.shape == (3, 5, 3)
    assert torch.allclose(out.vertices[..., 2].mean(), head.v_template[:, 2].mean() + 1.0, atol=1e-5)
    (out.vertices**2).sum().backward()
    assert pose.grad.abs().sum() > 0 and expr.grad.abs().sum() > 0


def test_missing_file_names_the_place(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAMECAST_WEIGHTS", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        load_head("flame")
    assert str(tmp_path / "flame" / "generic_model.pkl") in str(err.value)
    assert "flame.is.tue.mpg.de" in str(err.value)


def test_flame68_dynamic_contour_follows_yaw(flame_dir):
    folder, _ = flame_dir
    rng = np.random.default_rng(2)
    emb = {
        "static_lmk_faces_idx": rng.integers(0, 60, 51),
        "static_lmk_bary_coords": np.full((51, 3), 1 / 3),
        "dynamic_lmk_faces_idx": np.arange(79)[:, None].repeat(17, 1) % 60,
        "dynamic_lmk_bary_coords": np.tile(np.array([1.0, 0.0, 0.0]), (79, 17, 1)),
    }
    np.save(folder / "landmark_embedding.npy", emb, allow_pickle=True)
    head = FlameModel(folder / "generic_model.pkl")
    assert head.landmark_set == "flame68"
    pose = torch.zeros(2, 15)
    pose[0, 1] = np.radians(20.0)
    pose[1, 1] = np.radians(-20.0)
    out = head(pose=pose)
    assert out.landmarks.shape == (2, 68, 3)
    # row 20 for +20 degrees, row 39 + 20 = 59 for -20 degrees; contour uses corner 0 of those faces
    for b, row in ((0, 20), (1, 59)):
        expected = out.vertices[b, head.faces[row % 60, 0]]
        assert torch.allclose(out.landmarks[b, 0], expected, atol=1e-6)


def test_mediapipe_embedding(flame_dir):
    folder, _ = flame_dir
    faces_idx = np.array([3, 7, 11, 20, 41])
    bary = np.random.default_rng(3).dirichlet(np.ones(3), size=5)
    np.savez(folder / "mediapipe_landmark_embedding.npz", lmk_face_idx=faces_idx, lmk_b_coords=bary,
             landmark_indices=np.array([1, 4, 33, 263, 152]))
    head = load_head("flame2023", str(folder / "generic_model.pkl"))
    assert head.name == "flame2023" and head.landmark_set == "mediapipe105"
    assert head.landmark_indices == (1, 4, 33, 263, 152)
    out = head(pose=torch.zeros(1, 15))
    tri = out.vertices[0, head.faces[torch.as_tensor(faces_idx)]]
    expected = (tri * torch.as_tensor(bary, dtype=torch.float32)[..., None]).sum(1)
    assert torch.allclose(out.landmarks[0], expected, atol=1e-6)


def test_eyelid_blendshapes_are_used(flame_dir):
    folder, _ = flame_dir
    np.save(folder / "l_eyelid.npy", np.ones((1, N_VERTS, 3)) * 0.01)
    np.save(folder / "r_eyelid.npy", np.zeros((N_VERTS, 3)))
    head = FlameModel(folder / "generic_model.pkl")
    assert head.head_space().has_eyelids
    closed = head(pose=torch.zeros(1, 15), eyelids=torch.tensor([[1.0, 0.0]])).vertices
    open_ = head(pose=torch.zeros(1, 15)).vertices
    assert torch.allclose(closed - open_, torch.full_like(open_, 0.01), atol=1e-6)


@pytest.mark.gpu
def test_flame_on_cuda(flame_dir):
    folder, _ = flame_dir
    head = FlameModel(folder / "generic_model.pkl").cuda()
    out = head(pose=torch.zeros(2, 15, device="cuda"))
    assert out.vertices.is_cuda and out.vertices.shape == (2, N_VERTS, 3)
