"""The ``mesh`` generator: landmark fitting, texture baking, per-frame multi-view rendering.

One session is opened per module (small sizes, few fit iterations) and shared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from flamecast.plugins import FlameFrame, GeneratorSessionSpec, PortraitError
from flamecast.plugins.manager import make_plugin_host
from flamecast.renderer.generators.fitting import LandmarkModel, fit_portrait, rotation_vector, to_image
from flamecast.renderer.generators.mesh import MeshGenerator, MeshOptions
from flamecast.renderer.generators.texture import mirror_vertices, seam_faces, uv_atlas
from flamecast.renderer.head.lbs import rodrigues
from flamecast.renderer.portrait import default_portrait_image, encode_png, load_portrait

SIZE = 64
N_EXPR = 16


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small torch ops on a shared 2-core CPU run far faster on one thread (spinning OpenMP
    threads otherwise; `flamecast generator` sets OMP_WAIT_POLICY=PASSIVE for the same reason)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def generator():
    return MeshGenerator({"device": "cpu"})


@pytest.fixture(scope="module")
def head(generator):
    return generator.head_model


@pytest.fixture(scope="module")
def session(generator):
    options = MeshOptions(size=SIZE, texture_size=256, fit_iterations=80)
    return generator.open_session(GeneratorSessionSpec("s", None, options))


def frame(seq: int, yaw: float = 0.0, jaw: float = 0.0, smile: float = 0.0) -> FlameFrame:
    pose = np.zeros(15, np.float32)
    pose[1], pose[6] = yaw, jaw
    expr = np.zeros(N_EXPR, np.float32)
    expr[0] = smile
    return FlameFrame(session_id="s", seq=seq, capture_ns=10 + seq, pose=pose, expression=expr)


def test_registered_through_the_entry_point():
    assert make_plugin_host().generators.get("mesh") is MeshGenerator


def test_options_check_views_and_ranges():
    assert MeshOptions(views=["front", "left45"]).views == ("front", "left45")
    with pytest.raises(ValidationError, match="unknown view id 'sideways'"):
        MeshOptions(views=["sideways"])
    with pytest.raises(ValidationError):
        MeshOptions(size=8)
    with pytest.raises(ValidationError):
        MeshOptions(colour="red")  # unknown options are refused


def test_landmark_model_matches_the_head(head):
    g = torch.Generator().manual_seed(0)
    pose = torch.randn(3, 15, generator=g) * 0.2
    shape = torch.randn(3, head.n_shape, generator=g)
    expr = torch.randn(3, head.n_expression, generator=g).abs()
    full = head(pose=pose, shape=shape, expression=expr).landmarks
    assert torch.allclose(LandmarkModel(head)(pose, shape, expr), full, atol=1e-5)


def test_rotation_vector_inverts_rodrigues():
    for v in ([0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [0.0, 3.0, 0.0], [1e-5, 0.0, 2e-5]):
        rot = rodrigues(torch.tensor(v, dtype=torch.float64)).numpy()
        back = rodrigues(torch.tensor(rotation_vector(rot))).numpy()
        assert np.allclose(back, rot, atol=1e-6)


def test_fit_recovers_a_synthetic_portrait(head):
    """Landmarks made by the head itself under a known identity, pose and camera are fitted
    back closely (no mediapipe involved)."""
    g = torch.Generator().manual_seed(1)
    shape = torch.randn(1, head.n_shape, generator=g) * 0.8
    pose = torch.zeros(1, 15)
    pose[0, :3] = torch.tensor([0.1, 0.35, -0.05])
    with torch.no_grad():
        lmk = head(pose=pose, shape=shape).landmarks[0]
    target = to_image(lmk, 1800.0, torch.tensor([260.0, 240.0])).numpy()
    fit = fit_portrait(head, target, iterations=200)
    assert fit.error_px < 0.025 * fit.face_px, (fit.error_px, fit.face_px)
    assert abs(fit.scale - 1800.0) / 1800.0 < 0.05
    assert np.allclose(fit.pose[:3].numpy(), pose[0, :3].numpy(), atol=0.05)


def test_fit_to_the_default_portrait_is_tight(head):
    portrait = load_portrait(None)
    fit = fit_portrait(head, portrait.landmarks, iterations=80)
    assert fit.error_px < 0.05 * fit.face_px, (fit.error_px, fit.face_px)


def test_uv_atlas_has_no_seam_faces_and_the_face_owns_the_middle(head):
    atlas = uv_atlas(head.uvs, head.faces, 128, head.v_template, head.center)
    seams = seam_faces(head.uvs, head.faces, head.v_template)
    assert 0 < int(seams.sum()) < 0.1 * head.faces.shape[0]
    assert (head.v_template[head.faces[seams]].mean(1)[:, 2] < head.center[2] + 0.01).all()  # all behind
    owners = atlas.face_idx[atlas.mask]
    assert not seams[owners].any()
    face = torch.zeros(head.uvs.shape[0], dtype=torch.bool)
    face[head.vertex_regions()["face"]] = True
    uv_face = head.uvs[face].mean(0)  # the middle of the face's UV chart
    r, c = int((1 - uv_face[1]) * 128), int(uv_face[0] * 128)
    assert face[head.faces[atlas.face_idx[r, c]]].all()


def test_mirror_vertices_pair_left_and_right(head):
    m = mirror_vertices(head.v_template)
    mirrored = head.v_template[m] * torch.tensor([-1.0, 1.0, 1.0])
    assert (mirrored - head.v_template).norm(dim=-1).median() < 1e-3


def test_step_renders_every_frame_in_every_view(session):
    frames = [frame(i, yaw=0.1 * i) for i in range(3)]
    out = session.step(frames)
    assert [r.source.seq for r in out] == [0, 1, 2]
    for r in out:
        assert r.views.shape == (4, SIZE, SIZE, 3) and r.views.dtype == np.uint8
        assert r.view_ids == ("front", "left30", "right30", "up15") and r.render_ns > 0
    assert session.view_ids == out[0].view_ids
    assert not np.array_equal(out[0].views, out[2].views)  # the head turned


def test_batches_match_single_frames(session):
    frames = [frame(i, yaw=0.2, jaw=0.05 * i) for i in range(3)]
    together = session.step(frames)
    alone = [session.step([f])[0] for f in frames]
    for a, b in zip(together, alone):
        assert np.abs(a.views.astype(int) - b.views.astype(int)).max() <= 1


def test_front_view_shows_the_portraits_face(session):
    """The face in the front view has the portrait's skin colour, and the hidden sides and
    back are filled (no black, nothing far from the portrait's tones)."""
    front, left = session.step([frame(0)])[0].views[:2]
    img = default_portrait_image()
    skin = np.median(img[110:170, 190:260].reshape(-1, 3), axis=0)  # cheeks and nose of the photo
    bg = np.array(session.options.background)
    centre = front[SIZE // 3: SIZE // 2, SIZE * 2 // 5: SIZE * 3 // 5].reshape(-1, 3).astype(float)
    assert np.abs(np.median(centre, axis=0) - skin).max() < 40
    back = session.step([frame(1, yaw=np.pi)])[0].views[0]  # the back of the head, seen from the front camera
    head_px = back[(np.abs(back.astype(int) - bg).sum(-1) > 10)]
    assert len(head_px) > 0.15 * SIZE * SIZE
    assert head_px.astype(int).sum(-1).min() > 60  # nothing black


def test_open_with_bad_portraits_raises_portrait_errors(generator):
    options = MeshOptions(size=SIZE, fit_iterations=1)
    with pytest.raises(PortraitError, match="not an image"):
        generator.open_session(GeneratorSessionSpec("b", b"\x89PNG nope", options))
    from skimage import data

    with pytest.raises(PortraitError, match="no face found"):
        generator.open_session(GeneratorSessionSpec("b", encode_png(data.coffee()), options))


def test_different_portraits_give_different_avatars(generator, session):
    from skimage import data

    options = MeshOptions(size=SIZE, texture_size=256, fit_iterations=40)
    other = generator.open_session(GeneratorSessionSpec("o", encode_png(np.stack([data.camera()] * 3, -1)), options))
    a = session.step([frame(0)])[0].views[0].astype(int)
    b = other.step([frame(0)])[0].views[0].astype(int)
    assert np.abs(a - b).mean() > 10  # the grey cameraman is not the astronaut
