"""DECA inside a live session: with the mesh generator rendering the user's FLAME model and
DECA's checkpoint in the weights folder, the session's webcam layer tracks with DECA refined by
the landmarks (the session's stats say so) and its frames drive FLAME's 100 components."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from flamecast.plugins import GeneratorSettings
from flamecast.plugins.manager import make_plugin_host
from flamecast.server.api_client import FlamecastClient

from ..drivers.webcam_media import portrait
from ..flame_files import write_flame_folder
from .conftest import running_app, settings_for, start_worker


@pytest.fixture
def weights(tmp_path):
    from flamecast.drivers.webcam.deca import DecaEncoder, EncoderConfig
    from flamecast.renderer.flame2video.training.layout import write_video

    write_flame_folder(tmp_path / "flame")
    torch.manual_seed(0)
    tiny = DecaEncoder(EncoderConfig(width=4, blocks=(1, 2, 1, 1), hidden=16)).state_dict()
    (tmp_path / "deca").mkdir()
    torch.save({"E_flame": tiny}, tmp_path / "deca" / "deca_model.tar")
    write_video(tmp_path / "face.mp4", np.stack([portrait(240)] * 30))
    return tmp_path


async def test_the_webcam_layer_runs_deca_on_a_flame_session(weights):
    host = make_plugin_host()
    worker = start_worker(host, "mesh", generator_settings=GeneratorSettings(weights_dir=str(weights)))
    try:
        server = settings_for(worker, generator="mesh", size=64, open_timeout=60.0)
        async with running_app(server, host=host) as http, FlamecastClient(str(http.make_url("/"))) as client:
            layer = {"driver": "webcam", "channels": ["head", "jaw", "mouth", "eyes"],
                     "options": {"source": "file", "file": str(weights / "face.mp4"), "loop": True,
                                 "weights_dir": str(weights)}}
            info = await client.create_session(layers=[layer], generator_options={"head": "flame", "fit_iterations": 50})
            assert info["head"]["name"] == "flame2020" and info["head"]["n_expression"] == 100
            async with asyncio.timeout(60):
                while True:
                    described = await client.session(info["id"])
                    stats = next((la for la in described["layers"] if la["driver"] == "webcam"), {})
                    if (stats.get("driver_stats") or {}).get("frames_tracked", 0) > 5:
                        break
                    await asyncio.sleep(0.2)
            assert stats["driver_stats"]["tracker"] == "deca+landmarks" and stats["active"]
            await client.delete_session(info["id"])
    finally:
        worker.stop()
