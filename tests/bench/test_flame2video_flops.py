"""``bench/flame2video_flops.py`` on the tiny profile: a steady window's operations, counted."""

from __future__ import annotations

import json

import pytest

from tests.bench.helpers import load_bench


@pytest.fixture(scope="module")
def flops():
    return load_bench("flame2video_flops")


def test_summary_multiplies_the_unet_by_the_steps_and_the_rate_by_the_sessions(flops):
    counted = {"frames": 4, "views": 4, "total": 7e12, "unet": 5e12}
    s = flops.summarize(counted, steps=4, fps=30, sessions=[1, 4])
    assert s["unet_tflop_per_window"] == pytest.approx(20.0)
    assert s["other_tflop_per_window"] == pytest.approx(2.0)
    assert s["tflop_per_frame"] == pytest.approx(22.0 / 4)
    assert s["tflop_per_s_needed"] == pytest.approx({"1": 165.0, "4": 660.0})


def test_tiny_window_is_counted_and_written(flops, tmp_path):
    out = tmp_path / "flops.json"
    assert flops.main(["--profile", "tiny", "--sessions", "1,2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["frames_per_window"] > 0 and report["views"] == 2
    assert 0 < report["unet_tflop_per_step"] and 0 < report["other_tflop_per_window"]
    assert report["tflop_per_window"] == pytest.approx(report["unet_tflop_per_window"] + report["other_tflop_per_window"])
    assert report["tflop_per_s_needed"]["2"] == pytest.approx(2 * report["tflop_per_s_needed"]["1"])
    parts = report["unet_tflop_per_step_by_part"]
    assert sum(parts.values()) == pytest.approx(report["unet_tflop_per_step"])
    assert parts["view modules"] > 0 and parts["motion modules"] > 0 and parts["ResNet blocks"] > 0


def test_unet_parts_sum_the_innermost_modules_by_kind(flops):
    """Only layers are summed: a block's count also holds what ran inside it through hooks (the
    view module here), and the UNet's operations outside any layer are "other"."""
    counts = {
        "Global": 20, "MultiViewUNet": 16,
        "MultiViewUNet.unet.down_blocks.0": 15,  # its resnet, its motion module and the hooked view module
        "MultiViewUNet.unet.down_blocks.0.resnets.0.conv1": 4,
        "MultiViewUNet.unet.down_blocks.0.motion_modules.0.proj_in": 3,
        "MultiViewUNet.view_module.down_blocks.0.motion_modules.0.proj_in": 5,
        "MultiViewUNet.unet.up_blocks.0.attentions.0.transformer_blocks.0.attn1": 2,  # a product, then its projection
        "MultiViewUNet.unet.up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": 1,
        "MultiViewUNet.unet.up_blocks.0.upsamplers.0.conv": 1,
    }
    parts = flops.unet_parts(counts)
    assert parts == {"ResNet blocks": 4, "motion modules": 3, "view modules": 5, "spatial transformers": 1,
                     "up- and downsampling": 1, "other": 2}
    assert sum(parts.values()) == counts["MultiViewUNet"]
