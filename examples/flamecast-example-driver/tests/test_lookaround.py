"""Tests of the lookaround driver with flamecast's harness: no server, no GPU, no waiting."""

import pytest

from flamecast.plugins import ControlNotSupported, OptionsError
from flamecast.plugins.testing import DriverHarness
from flamecast_example_driver.driver import LookAroundDriver, yaw_of


async def test_prompt_left_turns_the_head_to_its_left_then_interrupt_recentres():
    h = DriverHarness(LookAroundDriver, {"period": 10})
    await h.collect(5)
    assert await h.control("prompt", "please look left") == {"looking": "left"}
    frames = await h.collect(40)
    h.check(frames)
    assert yaw_of(frames[-1]) > 0.4  # positive yaw: the avatar's own left
    await h.control("interrupt")
    assert abs(yaw_of((await h.collect(40))[-1])) < 0.02
    await h.close()


async def test_unknown_direction_and_unsupported_kind_are_errors():
    h = DriverHarness(LookAroundDriver)
    with pytest.raises(ValueError, match="say one of"):
        await h.control("prompt", "dance")
    with pytest.raises(ControlNotSupported):
        await h.control("emotion", "happy")


def test_options_are_validated():
    with pytest.raises(OptionsError, match="period"):
        LookAroundDriver.parse_options({"period": 0})
