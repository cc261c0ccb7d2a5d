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
from flamecast.renderer.generators.portrait.motion import euler_yxz, from_euler_yxz, relative_rotation
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


def _png(image: np.ndarray) -> bytes:
    return encode_png(np.ascontiguousarray(image))


def _open(generator, image: np.ndarray):
    return generator.open_session(GeneratorSessionSpec("b", _png(image), PortraitOptions(size=64, fit_iterations=30)))


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


@pytest.mark.parametrize("make", [
    lambda: grace_hopper(),  # glasses
    lambda: np.stack([np.asarray(Image.fromarray(default_portrait_image()).convert("L"))] * 3, -1),  # grey
    lambda: np.pad(default_portrait_image()[:300, 60:420], ((40, 40), (300, 40), (0, 0)), mode="edge"),  # off-centre
], ids=["glasses", "grayscale", "padded"])
def test_awkward_photos_work(generator, make):
    session = _open(generator, make())
    views = session.step([at_photo(session)])[0].views
    assert psnr(views[0], session.reference) >= 25.0


def test_small_face_is_refused_with_what_to_do(generator):
    small = np.asarray(Image.fromarray(default_portrait_image()).resize((150, 150)))
    with pytest.raises(PortraitError, match="(face too small|no face found).*use a photo"):
        _open(generator, np.pad(small, ((200, 200), (200, 200), (0, 0)), mode="edge"))


def test_face_cut_by_the_edge_is_refused(generator):
    with pytest.raises(PortraitError, match="(cut off by the photo's edge|no face found)"):
        _open(generator, default_portrait_image()[:150, 180:512])
