"""The idle driver through the public test harness."""

from __future__ import annotations

import numpy as np
import pytest

from flamecast.drivers.idle import IdleDriver
from flamecast.plugins import HeadSpace, OptionsError, pose_slice
from flamecast.plugins.testing import DriverHarness, run_driver


def _blinks(frames) -> int:
    closed = np.array([f.eyelids[0] > 0.5 for f in frames], int)
    return int((np.diff(closed) == 1).sum())


@pytest.mark.parametrize("seed", range(6))
async def test_five_seconds_are_bounded_and_blink(seed):
    harness = DriverHarness(IdleDriver, {"seed": seed})
    frames = await harness.collect(125)
    harness.check(frames)
    assert _blinks(frames) >= 1
    pose = np.stack([f.pose for f in frames])
    assert np.abs(pose).max() < 0.3
    head = pose[:, pose_slice("neck")]
    assert np.ptp(head, axis=0).max() > 0.005  # it sways and breathes
    eyes = pose[:, pose_slice("eye_left")]
    assert len(np.unique(eyes.round(5), axis=0)) >= 2  # at least one saccade
    await harness.close()


async def test_same_seed_same_motion_other_seed_other_motion():
    a = await run_driver(IdleDriver, {"seed": 3}, n=60)
    b = await run_driver(IdleDriver, {"seed": 3}, n=60)
    c = await run_driver(IdleDriver, {"seed": 4}, n=60)
    np.testing.assert_array_equal(np.stack([f.pose for f in a]), np.stack([f.pose for f in b]))
    assert not np.allclose(np.stack([f.pose for f in a]), np.stack([f.pose for f in c]))


async def test_fps_option_sets_the_rate():
    harness = DriverHarness(IdleDriver, {"fps": 50})
    frames = await harness.collect(3)
    assert harness.context.rate == 50
    assert frames[1].capture_ns - frames[0].capture_ns == 20_000_000


async def test_unnamed_expression_space_gets_zeros_of_the_right_size():
    frames = await run_driver(IdleDriver, {}, n=5, head=HeadSpace(name="flame2020", n_expression=50))
    assert all(f.expression.shape == (50,) and not f.expression.any() for f in frames)


@pytest.mark.parametrize("options, field", [({"fps": 0}, "fps"), ({"sway": "lots"}, "sway"), ({"colour": 1}, "colour")])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(OptionsError, match=f"option '{field}'"):
        IdleDriver.parse_options(options)
