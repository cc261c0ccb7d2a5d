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
