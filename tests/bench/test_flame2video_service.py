"""``bench/flame2video_service.py`` on a CPU: the narrow model has the real model's layout, and
one uncompiled pass of the tiny profile writes its report."""

from __future__ import annotations

import gc
import json
from collections import Counter

import pytest
import torch

from tests.bench.helpers import load_bench


@pytest.fixture(scope="module")
def service():
    return load_bench("flame2video_service")


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


def test_tiny_uncompiled_pass_writes_its_report(service, tmp_path, capsys, monkeypatch):
    drive = service.drive

    def drive_after_a_full_collection(*args, **kwargs):
        gc.collect()  # one full collection inside every session count's driving
        return drive(*args, **kwargs)

    monkeypatch.setattr(service, "drive", drive_after_a_full_collection)
    out = tmp_path / "service.json"
    code = service.main(["--profile", "tiny:steps=1", "--device", "cpu", "--compile", "", "--sessions", "1,2", "--seconds", "0.5,0.4",
                         "--max-batch", "2", "--allow-random-weights", "--stage-windows", "2", "--stage-batches", "1,2",
                         "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0
    assert report["profile"]["spec"] == "tiny:steps=1" and report["profile"]["steps"] == 1  # an override, as sessions ask
    assert report["first_frame"]["first_frame_after_open_s"] > 0
    assert [c["sessions"] for c in report["concurrent"]] == [1, 2]
    assert [c["seconds"] for c in report["concurrent"]] == [0.5, 0.4]
    assert all(c["min_fps"] > 0 for c in report["concurrent"])
    assert all(c["per_session"][0]["frames_out"] > 0 for c in report["concurrent"])
    assert all(0 < p["frames_out"] <= p["frames_in"] for c in report["concurrent"] for p in c["per_session"])
    assert {"unet", "decode", "window"} <= set(report["stage_ms_per_window"])
    assert set(report["stage_ms_per_batched_window"]) == {"1", "2"}
    assert report["stage_ms_per_batched_window"]["2"]["unet"] > 0
    assert report["queue_depth"] == 0 and all(c["frames_dropped"] == 0 for c in report["concurrent"])
    assert all(set(c["compile_since_warm_up"]) == {"recompiles", "cudagraph_rerecords"} for c in report["concurrent"])
    # as a worker does: the heap frozen after warm-up, each count's collections timed
    assert report["gc_freeze"]["objects"] > 0
    assert all(set(c["gc"]) == {"gc_full_collections", "gc_longest_ms", "gc_total_ms"} for c in report["concurrent"])
    # each full collection while driving, stamped on the drops' clock: as many as were counted
    assert all(c["gc"]["gc_full_collections"] >= 1 for c in report["concurrent"])
    assert all(len(c["gc_full_at"]) == c["gc"]["gc_full_collections"] for c in report["concurrent"])
    assert all(0 <= at < c["seconds"] and ms >= 0 for c in report["concurrent"] for at, ms in c["gc_full_at"])


def test_varied_sessions_each_have_their_own_portrait_views_and_motion(service, tmp_path):
    from flamecast.renderer.flame2video import FLAME2VideoOptions
    from flamecast.renderer.portrait import decode_image
    from flamecast.renderer.raster.cameras import view_from_id

    options = FLAME2VideoOptions(profile="live")
    specs = [service.varied_spec(i, options, 4) for i in range(5)]
    sizes = {decode_image(portrait).shape for portrait, _ in specs}
    assert len(sizes) >= 4 and all(len(s) == 3 and s[2] == 3 for s in sizes)  # colour, whatever the picture
    views = [opts.views for _, opts in specs]
    assert all(len(set(v)) == 4 for v in views) and len(set(views)) == 5
    assert all(view_from_id(v) for vs in views for v in vs)
    assert len({opts.seed for _, opts in specs}) == 5
    out = tmp_path / "varied.json"
    code = service.main(["--profile", "tiny:steps=1", "--device", "cpu", "--compile", "", "--sessions", "2,1",
                         "--seconds", "0.4", "--max-batch", "2", "--allow-random-weights", "--vary", "--no-gc-freeze",
                         "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0 and all(c["varied"] for c in report["concurrent"])
    assert "gc_freeze" not in report and gc.get_freeze_count() == 0
    assert all(p["frames_out"] > 0 for c in report["concurrent"] for p in c["per_session"])


class _SlowGenerator:
    """``step_sessions`` that takes ``seconds`` a turn and returns every frame it was given."""

    def __init__(self, seconds: float, first: float | None = None) -> None:
        self.head = type("Head", (), {"n_expression": 4})()
        self.seconds, self.first, self.turns = seconds, first, []

    def step_sessions(self, work):
        import time

        self.turns.append([f.seq for f in work[0][1]])
        time.sleep(self.first if self.first is not None and len(self.turns) == 1 else self.seconds)
        return [[type("Out", (), {"source": f})() for f in frames] for _, frames in work]


def test_a_queue_depth_renders_the_newest_frames_and_drops_the_rest(service):
    gen = _SlowGenerator(0.1)  # 100 ms a turn, frames due every 10 ms: about 10 due per turn
    (per,) = service.drive(gen, [object()], fps=100, seconds=1.0, start_seq=0, depth=3)
    assert max(len(t) for t in gen.turns) == 3
    seqs = [q for t in gen.turns for q in t]
    assert seqs == sorted(seqs) and seqs[-1] == 99  # the newest, in order, up to the last frame
    assert per["frames_dropped"] == 100 - len(seqs) > 0
    assert per["frames_out"] == len(seqs)
    assert sum(k for _, k in per["drops"]) == per["frames_dropped"]


def test_drops_say_when_they_happened(service):
    gen = _SlowGenerator(0.001, first=0.4)  # a slow first turn, as a session's first window is
    (per,) = service.drive(gen, [object()], fps=50, seconds=1.0, start_seq=0, depth=8)
    when, count = per["drops"][0]
    assert when >= 0.4 and count >= 20 - 8  # 20 or more due after it, the newest 8 kept
    assert len(gen.turns[1]) == 8 and gen.turns[1][0] == 1 + count  # the frames after the dropped ones
    assert sum(k for _, k in per["drops"]) == per["frames_dropped"]


def test_each_session_gets_the_motion_made_for_it(service):
    gen, given = _SlowGenerator(0.01), []

    def motion(i, n, start):
        given.append((i, n, start))
        return [type("Frame", (), {"seq": start + k})() for k in range(n)]

    service.drive(gen, [object(), object()], fps=100, seconds=0.2, start_seq=5, motion=motion)
    assert {i for i, _, _ in given} == {0, 1}
    assert sum(n for i, n, _ in given if i == 1) == 20 and min(s for _, _, s in given) == 5


def test_without_a_queue_depth_every_frame_is_rendered(service):
    gen = _SlowGenerator(0.1)
    (per,) = service.drive(gen, [object()], fps=100, seconds=0.5, start_seq=0)
    assert [q for t in gen.turns for q in t] == list(range(50))
    assert per["frames_dropped"] == 0 and per["frames_out"] == 50


def test_stage_batches_above_max_batch_are_refused(service, capsys):
    with pytest.raises(SystemExit):
        service.parse_args(["--max-batch", "2", "--stage-batches", "1,4"])
    assert "at most --max-batch (2)" in capsys.readouterr().err


def test_output_rate_leaves_out_the_first_output_and_the_latency_before_it(service):
    assert service.output_rate([(10.0, 4), (10.5, 4), (11.0, 4)]) == pytest.approx(8.0)
    assert service.output_rate([(10.0, 4), (10.0, 4)]) is None  # no time between them
    assert service.output_rate([(10.0, 4)]) is None
    assert service.output_rate([]) is None


def test_seconds_take_one_value_for_all_counts_or_one_each(service):
    assert service.seconds_per_count("20", [1, 2, 4]) == [20.0, 20.0, 20.0]
    assert service.seconds_per_count("180,20,20,20", [1, 2, 4, 8]) == [180.0, 20.0, 20.0, 20.0]
    with pytest.raises(SystemExit, match="2 values for 3 session counts"):
        service.seconds_per_count("180,20", [1, 2, 4])
