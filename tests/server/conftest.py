"""Fixtures for the server tests: a real generator worker (in-process threads, real ZeroMQ on
loopback) serving a small test generator, and the real aiohttp app on port 0.

The ``swatch`` generator checks portraits with the real ``renderer.portrait`` (so "not an
image" / "no face" are the real messages) and renders each view as a flat colour taken from
the portrait with a bar that moves with the driver's head pose, so frames change over time and
two sessions with different portraits are told apart by colour.
"""

from __future__ import annotations

import contextlib
import io
from typing import AsyncIterator

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from flamecast.plugins import (
    Driver,
    Generator,
    GeneratorSession,
    GeneratorUnavailable,
    RenderedFrame,
    hookimpl,
    pose_slice,
)
from flamecast.plugins.manager import make_plugin_host
from flamecast.renderer.worker import GeneratorWorker, WorkerSettings
from flamecast.server.app import create_app
from flamecast.server.api_client import FlamecastClient
from flamecast.server.settings import Settings

SIZE = 64
VIEWS = ("front", "left")
DEFAULT_TONE = (90, 140, 200)


class SwatchSession(GeneratorSession):
    def __init__(self, tone, size: int, views: tuple[str, ...]) -> None:
        self.tone, self.size, self.view_ids = np.asarray(tone, np.uint8), size, views

    def step(self, frames):
        out = []
        for f in frames:
            img = np.empty((len(self.view_ids), self.size, self.size, 3), np.uint8)
            img[...] = self.tone
            yaw = float(f.pose[pose_slice("neck")][1])
            x = int((f.seq * 3 + yaw * 200) % (self.size - 8))
            img[:, :, x:x + 8] = 255
            out.append(RenderedFrame(f, img, self.view_ids))
        return out


class SwatchGenerator(Generator):
    name = "swatch"
    description = "flat colour from the portrait with a moving bar (tests)"

    def open_session(self, spec):
        views = tuple(spec.options.views or VIEWS)
        if spec.portrait is None:
            return SwatchSession(DEFAULT_TONE, spec.options.size, views)
        from flamecast.renderer.portrait import load_portrait

        portrait = load_portrait(spec.portrait)
        x0, y0 = portrait.landmarks[:, :2].min(0).astype(int)
        x1, y1 = portrait.landmarks[:, :2].max(0).astype(int)
        tone = portrait.image[y0:y1, x0:x1].reshape(-1, 3).mean(0)
        return SwatchSession(tone, spec.options.size, views)


class NoWeightsGenerator(SwatchGenerator):
    name = "noweights"
    description = "refuses every session: its weights are missing (tests)"

    def open_session(self, spec):
        raise GeneratorUnavailable("missing: unet/diffusion_pytorch_model.safetensors; put it in ~/.cache/flamecast/weights")


class SwatchPlugin:
    @hookimpl
    def flamecast_register_generators(self, register):
        register(SwatchGenerator)
        register(NoWeightsGenerator)


def plugin_host(*extra):
    return make_plugin_host(extra_plugins=[("swatch", SwatchPlugin()), *extra])


def start_worker(host, *backends: str, **settings) -> GeneratorWorker:
    """A started worker on loopback ports serving ``backends`` (the first is the default)."""
    w = GeneratorWorker(WorkerSettings(input="tcp://127.0.0.1:0", output="tcp://127.0.0.1:0", backends=backends,
                                       default_backend=backends[0], stats_interval_s=0, **settings), host=host)
    w.start()
    return w


@pytest.fixture
def worker():
    w = start_worker(plugin_host(), "swatch", "noweights")
    yield w
    w.stop()


@pytest.fixture(scope="module")
def mesh_worker():
    """A worker serving the real ``mesh`` generator (skips where it is not installed)."""
    host = make_plugin_host()
    if "mesh" not in host.generators:
        pytest.skip("the mesh generator is not installed")
    w = start_worker(host, "mesh")
    yield w
    w.stop()


def settings_for(worker, **overrides) -> Settings:
    base = Settings(port=0, worker_input=worker.endpoints["input"], worker_output=worker.endpoints["output"],
                    generator="swatch", size=SIZE, open_timeout=20.0)
    return base.replace(**overrides)


@contextlib.asynccontextmanager
async def running_app(settings: Settings, host=None) -> AsyncIterator[TestClient]:
    app = create_app(settings, host=host or plugin_host())
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def http(worker):
    """An HTTP test client of the app, wired to the worker."""
    async with running_app(settings_for(worker)) as client:
        yield client


@pytest.fixture
async def api(http) -> AsyncIterator[FlamecastClient]:
    """The Python client pointed at the test server."""
    client = FlamecastClient(str(http.make_url("/")))
    yield client
    await client.close()


def png(color=(255, 255, 255), size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def face_png(tint=None) -> bytes:
    """The default portrait (one face), optionally tinted so its colour differs."""
    from flamecast.renderer.portrait import default_portrait_image, encode_png

    image = default_portrait_image().astype(np.float32)
    if tint is not None:
        image = image * np.asarray(tint, np.float32)
    return encode_png(np.clip(image, 0, 255).astype(np.uint8))


__all__ = ["Driver", "SIZE", "VIEWS", "face_png", "plugin_host", "png", "running_app", "settings_for"]
