"""The ``portrait`` generator: the photo reproduced at its own pose, every view filled, the
driver followed, bad portraits refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flamecast.plugins import FlameFrame, GeneratorSessionSpec, PortraitError
from flamecast.plugins.manager import make_plugin_host
from flamecast.renderer.generators.evaluate import psnr
from flamecast.renderer.generators.portrait import PortraitGenerator, PortraitOptions
from flamecast.renderer.generators.portrait.depth import MAX_SLOPE
from flamecast.renderer.generators.portrait.motion import euler_yxz, from_euler_yxz, relative_rotation, rotation
from flamecast.renderer.generators.portrait.mouth import INNER_LOWER, INNER_UPPER
from flamecast.renderer.generators.portrait.scene import beyond_photo
from flamecast.renderer.portrait import default_portrait_image, encode_png

SIZE = 96


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def generator():
    return PortraitGenerator()


@pytest.fixture(scope="module")
def session(generator):
    return generator.open_session(GeneratorSessionSpec("s", None, PortraitOptions(size=SIZE, fit_iterations=80)))


def at_photo(session, **changes) -> FlameFrame:
    pose = session.fit.pose.numpy().copy()
    expr = session.fit.expression.numpy().copy()
    for index, value in changes.get("pose", {}).items():
        pose[index] += value
    return FlameFrame(session_id="s", seq=0, capture_ns=0, pose=pose, expression=expr,
                      eyelids=changes.get("eyelids"))


def test_registered_and_listed_first():
    generators = make_plugin_host().generators
    assert generators.get("portrait") is PortraitGenerator


def test_front_view_at_the_photos_pose_is_the_photo(session):
    views = session.step([at_photo(session)])[0].views
    assert views.shape == (4, SIZE, SIZE, 3) and views.dtype == np.uint8
    assert psnr(views[0], session.reference) >= 30.0
    assert np.abs(views[1].astype(int) - views[0]).mean() > 3  # a side view is another camera


def test_turned_head_moves_the_face_and_never_tears(session):
    still = session.step([at_photo(session)])[0].views
    turned = session.step([at_photo(session, pose={1: 0.4})])[0].views
    assert np.abs(turned[0].astype(int) - still[0]).mean() > 3
    dark = (session.reference.astype(int).sum(-1) < 15).mean()  # the photo's own black clothes
    for view in turned:  # no black holes anywhere: background or person everywhere
        assert (view.astype(int).sum(-1) < 15).mean() < dark + 0.01


def test_jaw_opens_a_dark_mouth_and_blinks_change_the_eyes(session):
    base = session.step([at_photo(session)])[0].views[0].astype(int)
    open_ = session.step([at_photo(session, pose={6: 0.35})])[0].views[0].astype(int)
    shut = session.step([at_photo(session, eyelids=np.ones(2, np.float32))])[0].views[0].astype(int)
    changed = np.abs(open_ - base).sum(-1) > 60
    assert changed.sum() > 20
    assert open_[changed].mean() < base[changed].mean()  # the inside of the mouth is darker
    assert (np.abs(shut - base).sum(-1) > 40).sum() > 5


def test_extreme_poses_are_clamped():
    rel = relative_rotation(np.r_[0.0, 3.0, 0.0, np.zeros(12)], np.zeros(15), (40.0, 25.0, 30.0))
    assert abs(np.degrees(euler_yxz(rel)[0]) - 40.0) < 1e-6
    angles = np.radians([10.0, -5.0, 3.0])
    assert np.allclose(euler_yxz(from_euler_yxz(angles)), angles)


def test_the_head_turns_by_the_driven_angle(session):
    photo = session.photo_pose
    driven = photo.copy()
    driven[:3] = _rotvec(from_euler_yxz(np.radians([10.0, 0.0, 0.0])) @ rotation(photo[:3]))
    rel = relative_rotation(driven, photo, (60.0, 25.0, 30.0))
    assert np.allclose(np.degrees(euler_yxz(rel)), [10.0, 0.0, 0.0], atol=1e-4)
    views = session.views
    moved = views.moved(rel, np.zeros(3)).numpy()
    x = session.scene.grid_xyz.numpy()
    head = session.scene.grid_weight.numpy() > 0.999
    pivot = views.pivot.numpy()
    rigid = (x[head] - pivot) @ rel.T + pivot
    assert np.allclose(moved[head], rigid, atol=1e-5)  # the head is rotated, not blended
    shoulders = session.scene.grid_weight.numpy() < 1e-3
    assert np.allclose(moved[shoulders], x[shoulders], atol=1e-6)


def _rotvec(rot):
    from flamecast.renderer.generators.portrait.motion import rotation_vector

    return rotation_vector(rot)


def test_depth_is_the_fitted_head_on_the_face_and_never_a_cliff(session):
    scene = session.scene
    n = int(round(len(scene.grid_src) ** 0.5))
    z = scene.grid_xyz[:, 2].numpy().reshape(n, n)
    step_m = (scene.source_size - 1) / (n - 1) / scene.scale
    nose = np.round(scene.landmarks[1] / ((scene.source_size - 1) / (n - 1))).astype(int)
    assert z[nose[1], nose[0]] == z.max() or z[nose[1], nose[0]] > np.percentile(z, 99)
    person = scene.grid_person.numpy().reshape(n, n)
    assert z[person].min() < z[nose[1], nose[0]] - 0.05  # the outline lies well behind the nose
    from flamecast.renderer.generators.portrait.scene import face_hull_mask
    import cv2

    face = cv2.dilate(face_hull_mask(scene.landmarks / ((scene.source_size - 1) / (n - 1)), n, 0.0),
                      np.ones((5, 5), np.float32)) > 0
    drop = np.abs(np.diff(z, axis=1))[~(face[:, 1:] | face[:, :-1])]
    assert drop.max() <= MAX_SLOPE * step_m * 1.01  # hair and neck: no step to fold along


def test_views_carry_the_persons_matte(session):
    frame = session.step([at_photo(session, pose={1: 0.3})])[0]
    assert frame.matte is not None and frame.matte.shape == frame.views.shape[:3]
    assert frame.matte.dtype == np.uint8
    still = session.step([at_photo(session)])[0].matte[0]
    alpha = session.scene.person[..., 3]
    pad, size = session.scene.pad, session.scene.size
    assert np.abs(still.astype(int) - alpha[pad:pad + size, pad:pad + size]).mean() < 2.0
    centre = session.scene.landmarks[1] - pad  # the nose: person in every view
    assert (frame.matte[:, int(centre[1]), int(centre[0])] > 250).all()
    assert (frame.matte[:, 1, 1] < 5).all()  # the astronaut's top-left corner is background


def _mouth_points(left=5.0, right=65.0, upper=10.0, lower=30.0) -> np.ndarray:
    points = np.zeros((478, 2))
    for ids, y in ((INNER_UPPER, upper), (INNER_LOWER, lower)):
        xs = np.linspace(left, right, len(ids))
        for i, (k, x) in enumerate(zip(ids, xs)):
            points[k] = (x, y if 0 < i < len(ids) - 1 else (upper + lower) / 2)
    return points


@pytest.mark.parametrize("photo_teeth", [True, False], ids=["photo teeth", "synthesized teeth"])
def test_open_mouth_is_dark_with_upper_teeth_and_no_fangs(session, photo_teeth):
    mouth = session.mouth
    before = mouth.photo_teeth, mouth.face_px
    mouth.photo_teeth, mouth.face_px = photo_teeth, 150.0  # a mouth 60 pixels wide on a face 150 tall
    try:
        rgb = mouth.interior(_mouth_points(), 40, 70, (0, 0))
    finally:
        mouth.photo_teeth, mouth.face_px = before
    lum = rgb.mean(-1)
    assert lum[10:12, 30:40].mean() > 120  # teeth under the middle of the upper lip
    assert lum[12:24, 5:11].max() < 90 and lum[12:24, 60:66].max() < 90  # corners: no teeth
    assert lum[18:22, 30:40].mean() < 70  # the cavity behind them
    assert rgb[27:30, 30:40, 0].mean() > rgb[27:30, 30:40, 1].mean() + 30  # a tongue low in it


def test_the_smiling_photos_own_teeth_are_used(session):
    assert session.mouth.photo_teeth  # the astronaut smiles with her teeth


def test_a_person_cut_by_the_photos_edge_goes_on_past_it():
    alpha = np.zeros((6, 8), np.float32)
    alpha[2:, 3:] = 1.0
    in_photo = np.zeros((6, 8), bool)
    in_photo[:, :6] = True
    out = beyond_photo(alpha, in_photo)
    assert (out[2:, 6:] == 1.0).all() and (out[:2, 6:] == 0.0).all() and (out[:, :6] == alpha[:, :6]).all()


def _png(image: np.ndarray) -> bytes:
    return encode_png(np.ascontiguousarray(image))


def _open(generator, image: np.ndarray):
    return generator.open_session(GeneratorSessionSpec("b", _png(image), PortraitOptions(size=64, fit_iterations=30)))


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def hand_near_the_face() -> np.ndarray:
    """The default portrait with a skin-coloured hand (palm and four fingers) against the cheek."""
    import cv2

    image = default_portrait_image().copy()
    skin = (205, 160, 135)
    cv2.ellipse(image, (290, 192), (30, 40), 20, 0, 360, skin, -1)  # the palm against the jaw
    for i in range(4):
        cv2.line(image, (268 + 11 * i, 165), (262 + 11 * i, 118), skin, 10)  # fingers along the cheek
    return image


def busy_background() -> np.ndarray:
    """The default portrait with a high-contrast coloured checkerboard around the head."""
    image = default_portrait_image().copy()
    y, x = np.mgrid[:512, :512]
    board = np.where(((x // 12) + (y // 12)) % 2 == 0, 1, 0)[..., None] * np.array([230, 40, 200]) + \
        np.where(((x // 12) + (y // 12)) % 2 == 1, 1, 0)[..., None] * np.array([20, 220, 60])
    image[:250, :150] = board[:250, :150]
    image[:250, 330:] = board[:250, 330:]
    return image


@pytest.mark.parametrize("make", [
    lambda: grace_hopper(),  # glasses
    lambda: np.stack([np.asarray(Image.fromarray(default_portrait_image()).convert("L"))] * 3, -1),  # grey
    lambda: np.pad(default_portrait_image()[:300, 60:420], ((40, 40), (300, 40), (0, 0)), mode="edge"),  # off-centre
    hand_near_the_face,
], ids=["glasses", "grayscale", "padded", "hand-near-face"])
def test_awkward_photos_work(generator, make):
    session = _open(generator, make())
    views = session.step([at_photo(session)])[0].views
    assert psnr(views[0], session.reference) >= 25.0


def test_a_busy_background_stays_still_while_the_head_turns(generator):
    session = generator.open_session(GeneratorSessionSpec("b", _png(busy_background()), PortraitOptions(size=160)))
    views = session.step([at_photo(session)])[0].views
    assert psnr(views[0], session.reference) >= 25.0
    corner = np.s_[:40, :20]  # checkerboard, away from the person: the same in a turned view
    assert np.abs(views[1][corner].astype(int) - session.reference[corner].astype(int)).mean() < 8


def test_small_face_is_refused_with_what_to_do(generator):
    small = np.asarray(Image.fromarray(default_portrait_image()).resize((150, 150)))
    with pytest.raises(PortraitError, match="(face too small|no face found).*use a photo"):
        _open(generator, np.pad(small, ((200, 200), (200, 200), (0, 0)), mode="edge"))


def test_face_cut_by_the_edge_is_refused(generator):
    with pytest.raises(PortraitError, match="(cut off by the photo's edge|no face found)"):
        _open(generator, default_portrait_image()[:150, 180:512])
