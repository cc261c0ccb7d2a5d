"""The head a session's generator renders reaches its drivers: a generator whose sessions speak
FLAME's 100 unnamed expression channels gets 100-channel frames from every layer, and the
session says which head it has."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from flamecast.plugins import Driver, FlameFrame, HeadSpace, hookimpl
from flamecast.server.api_client import FlamecastClient
from flamecast.server.sessions import head_from

from .conftest import SwatchGenerator, plugin_host, running_app, settings_for, start_worker

FLAME = HeadSpace("flame2023", 100, None, has_eyelids=False)


class FlameHeadGenerator(SwatchGenerator):
    """Swatch sessions that take FLAME-sized frames and count them."""

    name = "flamehead"
    rendered: dict[int, int] = {}

    def open_session(self, spec):
        session = super().open_session(spec)
        session.head_space = FLAME
        step = session.step

        def counting(frames):
            for f in frames:
                FlameHeadGenerator.rendered[f.expression.shape[0]] = FlameHeadGenerator.rendered.get(
                    f.expression.shape[0], 0) + 1
            return step(frames)

        session.step = counting
        return session


class HeadProbe(Driver):
    """Notes the head space it was given and drives the first expression channel."""

    name = "headprobe"
    seen: list[HeadSpace] = []

    async def frames(self):
        HeadProbe.seen.append(self.context.head)
        while True:
            expression = np.zeros(self.context.head.n_expression, np.float32)
            expression[0] = 0.5
            yield FlameFrame(expression=expression)


class Plugin:
    @hookimpl
    def flamecast_register_generators(self, register):
        register(FlameHeadGenerator)

    @hookimpl
    def flamecast_register_drivers(self, register):
        register(HeadProbe)


@pytest.fixture
def flame_worker():
    w = start_worker(plugin_host(("flamehead", Plugin())), "flamehead")
    yield w
    w.stop()


async def test_drivers_get_the_head_the_generator_renders(flame_worker):
    HeadProbe.seen.clear()
    FlameHeadGenerator.rendered.clear()
    settings = settings_for(flame_worker, generator="flamehead")
    async with running_app(settings, host=plugin_host(("flamehead", Plugin()))) as http:
        async with FlamecastClient(str(http.make_url("/"))) as client:
            info = await client.create_session(layers=[{"driver": "headprobe", "channels": ["mouth"]}])
            assert HeadSpace.from_wire(info["head"]) == FLAME
            async with asyncio.timeout(10):
                while FlameHeadGenerator.rendered.get(100, 0) < 10:
                    await asyncio.sleep(0.02)
            assert HeadProbe.seen == [FLAME]
            assert set(FlameHeadGenerator.rendered) == {100}  # the idle base and the mixer speak FLAME too
            await client.delete_session(info["id"])
            outside = await client.create_session(external=True)
            assert outside["external"]["command"].endswith("--head flame2023")  # an outside driver sends FLAME too
            await client.delete_session(outside["id"])


def test_a_head_space_survives_the_wire_and_bad_ones_fall_back():
    named = HeadSpace("builtin", 2, ("smile", "frown"))
    assert HeadSpace.from_wire(named.to_wire()) == named and HeadSpace.from_wire(FLAME.to_wire()) == FLAME
    for bad in ([], {"name": "x", "n_expression": 0}, {"name": "x", "n_expression": 10**6},
                {"name": "x", "n_expression": 2, "expression_names": ["a"]}, {"name": 3, "n_expression": 2},
                {"name": "x", "n_expression": True}):
        with pytest.raises(ValueError):
            HeadSpace.from_wire(bad)
        assert head_from(bad).name == "builtin"
    assert head_from(None).name == "builtin"
