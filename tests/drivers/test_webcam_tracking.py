"""Webcam tracking: FaceMesh + fit on the astronaut photograph, the largest face, smoothing,
the face-lost behaviour, DECA's checkpoint layout."""

import math

import numpy as np
import pytest
import torch

from flamecast.drivers.webcam.deca import N_OUTPUTS, DecaEncoder, DecaTracker, EncoderConfig, load_deca
from flamecast.drivers.webcam.facemesh import FaceMesh
from flamecast.drivers.webcam.fit import FaceFitter
from flamecast.drivers.webcam.geometry import HeadGeometry, axis_angle, euler_xyz, rotation_matrix
from flamecast.drivers.webcam.motion import Motion
from flamecast.drivers.webcam.options import WebcamOptions
from flamecast.drivers.webcam.smoothing import OneEuroFilter
from flamecast.drivers.webcam.tracker import FaceTracker, refine_rotation
from flamecast.plugins import HeadSpace

from .webcam_media import astronaut, portrait, rotated


@pytest.fixture(scope="module")
def mesh():
    m = FaceMesh(video=False)
    yield m
    m.close()


def _roll(fitter, points) -> float:
    return math.degrees(euler_xyz(fitter.fit(points).rotation)[2])


def test_roll_of_the_rotated_photograph(mesh):
    photo = astronaut()
    fitter = FaceFitter(HeadGeometry.load())
    base_points = mesh.detect(rotated(photo, 0))
    fitter.fit_identity([base_points])
    base = _roll(fitter, base_points)
    for angle in (-20.0, 12.0, 25.0):
        points = mesh.detect(rotated(photo, angle))
        assert points is not None and points.shape == (478, 3)
        assert abs(_roll(fitter, points) - base - angle) < 3.0


def test_follows_the_largest_face(mesh):
    big, small = portrait(260), portrait(130)
    canvas = np.full((300, 480, 3), 90, np.uint8)
    canvas[20:280, 10:270] = rotated(big, 15, canvas=(260, 260))
    canvas[100:230, 320:450] = rotated(small, -15, canvas=(130, 130))
    points = mesh.detect(canvas)
    assert points is not None
    assert points[:, 0].mean() < 270  # the big face on the left
    fitter = FaceFitter(HeadGeometry.load())
    ref = mesh.detect(rotated(big, 0, canvas=(260, 260)))
    fitter.fit_identity([ref])
    assert _roll(fitter, points) - _roll(fitter, ref) == pytest.approx(15, abs=4)


def test_blank_and_dark_frames_have_no_face(mesh):
    assert mesh.detect(np.zeros((240, 320, 3), np.uint8)) is None
    assert mesh.detect(np.full((240, 320, 3), 200, np.uint8)) is None
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert mesh.detect(noise) is None


def test_one_euro_filter_smooths_noise_and_follows_motion():
    rng = np.random.default_rng(0)
    t = np.arange(300) / 30.0
    clean = np.where(t > 5, 1.0, 0.0)
    noisy = clean + rng.normal(0, 0.05, t.size)
    slow = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    out = np.array([slow(np.array([x]), ti)[0] for x, ti in zip(noisy, t)])
    assert np.std(out[30:140] - clean[30:140]) < 0.4 * np.std(noisy[30:140] - clean[30:140])
    assert abs(out[-1] - 1.0) < 0.05
    fast = OneEuroFilter(min_cutoff=1.0, beta=20.0)
    out_fast = np.array([fast(np.array([x]), ti)[0] for x, ti in zip(noisy, t)])
    step = int(np.argmax(t > 5)) + 3
    assert out_fast[step] > out[step] + 0.1  # beta: less lag when moving fast
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0)


def test_face_lost_holds_then_eases_to_rest_and_returns_without_a_jump():
    m = Motion(4, min_cutoff=2.0, beta=0.5, d_cutoff=1.0, hold_seconds=0.5, ease_seconds=1.0)
    face = np.array([0.3, -0.2, 0.5, 0.1])
    for i in range(30):
        out = m.update(face, i / 30)
    assert np.allclose(out, face, atol=1e-3)
    held = [m.update(None, 1.0 + i / 30) for i in range(14)]  # 0.47 s
    assert all(np.allclose(h, out) for h in held)
    easing = [m.update(None, 1.5 + i / 30) for i in range(1, 31)]
    norms = [np.abs(e).max() for e in easing]
    assert all(b <= a + 1e-12 for a, b in zip(norms, norms[1:]))
    assert np.abs(easing[-1]).max() < 1e-6
    steps = np.abs(np.diff(np.array([out, *held, *easing]), axis=0)).max()
    assert steps < 0.05  # no jumps while losing the face
    back = [m.update(face, 3.0 + i / 30) for i in range(30)]
    assert np.abs(np.diff(np.array([easing[-1], *back]), axis=0)).max() < 0.12
    assert np.allclose(back[-1], face, atol=0.02)


def _tiny_state_dict(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = DecaEncoder(EncoderConfig(width=4, blocks=(1, 2, 1, 1), hidden=16))
    return model.state_dict()


def test_deca_state_dict_uses_the_official_key_layout():
    keys = set(DecaEncoder().state_dict())
    for key in ("encoder.conv1.weight", "encoder.bn1.running_mean", "encoder.layer1.0.conv1.weight",
                "encoder.layer1.0.downsample.0.weight", "encoder.layer1.0.downsample.1.weight",
                "encoder.layer3.5.bn3.weight", "encoder.layer4.2.conv3.weight", "layers.0.weight", "layers.2.bias"):
        assert key in keys
    assert DecaEncoder().state_dict()["layers.2.weight"].shape == (N_OUTPUTS, 1024)
    assert sum(p.numel() for p in DecaEncoder().encoder.parameters()) == 23_508_032  # ResNet-50 trunk


def test_deca_tiny_checkpoint_loads_and_runs(tmp_path, mesh):
    state = _tiny_state_dict()
    path = tmp_path / "deca" / "deca_model.tar"
    path.parent.mkdir()
    torch.save({"E_flame": state, "E_detail": {}, "D_detail": {}}, path)
    model = load_deca(path)
    assert model.config == EncoderConfig(width=4, blocks=(1, 2, 1, 1), hidden=16)
    assert torch.equal(model.state_dict()["layers.2.weight"], state["layers.2.weight"])
    photo = astronaut()
    codes = DecaTracker(model)(photo, mesh.detect(photo))
    assert {k: v.shape for k, v in codes.items()} == {
        "shape": (100,), "tex": (50,), "exp": (50,), "pose": (6,), "cam": (3,), "light": (9, 3)}
    with torch.no_grad():
        again = model(torch.zeros(1, 3, 224, 224))
    assert all(torch.isfinite(v).all() for v in again.values())
    torch.save({"E_detail": {}}, path)
    with pytest.raises(ValueError, match="E_flame"):
        load_deca(path)
    with pytest.raises(FileNotFoundError, match="deca_model.tar"):
        load_deca(tmp_path / "missing" / "deca_model.tar")


def test_deca_tracker_runs_with_a_flame_head(tmp_path):
    path = tmp_path / "deca" / "deca_model.tar"
    path.parent.mkdir()
    torch.save({"E_flame": _tiny_state_dict(1)}, path)
    flame = HeadSpace("flame2020", 100, None)
    tracker = FaceTracker(WebcamOptions(weights_dir=str(tmp_path)), flame, video=False)
    assert tracker.name == "deca+landmarks"
    params = tracker.process(astronaut())
    assert params is not None and params.shape == (15 + 100 + 2 + 3,)
    assert np.any(params[15:65] != 0) and np.all(params[65:115] == 0)  # DECA's 50 expressions
    tracker.close()
    builtin = FaceTracker(WebcamOptions(weights_dir=str(tmp_path)), HeadSpace("builtin", 16, None), video=False)
    assert builtin.name == "landmarks"  # DECA's expressions are FLAME's: not for the built-in head
    builtin.close()
    with pytest.raises(FileNotFoundError, match="deca_model.tar"):
        FaceTracker(WebcamOptions(tracker="deca", weights_dir=str(tmp_path / "none")), flame)


def test_deca_rotation_is_refined_by_the_landmark_fit():
    deca = rotation_matrix(np.radians([0.0, 10.0, 0.0]))
    fit = rotation_matrix(np.radians([0.0, 16.0, 0.0]))
    assert np.allclose(refine_rotation(deca, fit, 0.0), deca)
    assert np.allclose(refine_rotation(deca, fit, 1.0), fit)
    between = np.degrees(axis_angle(refine_rotation(deca, fit, 0.5)))
    assert np.allclose(between, [0.0, 13.0, 0.0], atol=1e-6)  # halfway along the shortest rotation
    flipped = rotation_matrix(np.radians([0.0, -20.0, 0.0]))  # a fit 30 degrees off: DECA's is kept
    assert np.allclose(refine_rotation(deca, flipped, 0.7), deca)
