"""``bench/flame2video_service.py`` on a CPU: the narrow model has the real model's layout, and
one uncompiled pass of the tiny profile writes its report."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def service():
    spec = importlib.util.spec_from_file_location("flame2video_service", ROOT / "bench" / "flame2video_service.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _layout(config) -> Counter:
    """Module classes and counts of the UNet with its motion and view modules, built on the meta device."""
    from diffusers import MotionAdapter, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config.unet)
        motion = MotionAdapter(**config.motion)
    return Counter(type(m).__name__ for model in (unet, motion) for m in model.modules())


def test_narrow_widths_keep_every_block_layer_and_attention(service):
    from flamecast.renderer.flame2video.config import sd15_config

    real, narrow = sd15_config(), service.narrow_sd15()
    assert _layout(narrow) == _layout(real)
    assert narrow.unet["block_out_channels"] != real.unet["block_out_channels"]
    assert narrow.flame_encoder["out_channels"] == narrow.unet["block_out_channels"][0]


def test_tiny_uncompiled_pass_writes_its_report(service, tmp_path, capsys):
    out = tmp_path / "service.json"
    code = service.main(["--profile", "tiny", "--device", "cpu", "--compile", "", "--sessions", "1,2", "--seconds", "0.5",
                         "--max-batch", "2", "--allow-random-weights", "--stage-windows", "2", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0
    assert report["first_frame"]["first_frame_after_open_s"] > 0
    assert [c["sessions"] for c in report["concurrent"]] == [1, 2]
    assert all(c["min_fps"] > 0 for c in report["concurrent"])
    assert all(c["per_session"][0]["frames_out"] > 0 for c in report["concurrent"])
    assert all(0 < p["frames_out"] <= p["frames_in"] for c in report["concurrent"] for p in c["per_session"])
    assert {"unet", "decode", "window"} <= set(report["stage_ms_per_window"])


def test_output_rate_leaves_out_the_first_output_and_the_latency_before_it(service):
    assert service.output_rate([(10.0, 4), (10.5, 4), (11.0, 4)]) == pytest.approx(8.0)
    assert service.output_rate([(10.0, 4), (10.0, 4)]) is None  # no time between them
    assert service.output_rate([(10.0, 4)]) is None
    assert service.output_rate([]) is None
