"""``flamecast weights`` and ``flamecast bench`` on a CPU with the tiny profile."""

from __future__ import annotations

import json

import pytest
import torch

from flamecast.renderer.flame2video.components import build_component
from flamecast.renderer.flame2video.config import tiny_config
from flamecast.cli import main


def test_weights_status_lists_components_and_where(tmp_path, capsys):
    assert main(["weights", "--weights-dir", str(tmp_path), "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in data["flame2video"]}
    assert data["weights_dir"] == str(tmp_path)
    assert rows["motion_module"]["path"] == str(tmp_path / "flame2video" / "motion_module")
    assert not rows["motion_module"]["present"] and "animatediff" in rows["motion_module"]["import"]
    assert main(["weights", "--weights-dir", str(tmp_path), "status"]) == 0
    assert "MISSING" in capsys.readouterr().out


def test_weights_import_converts_and_status_sees_it(tmp_path, capsys):
    torch.manual_seed(0)
    build_component("tiny_vae", tiny_config()).save_pretrained(tmp_path / "taesd")
    assert main(["weights", "--weights-dir", str(tmp_path / "w"), "import", "tiny-vae", str(tmp_path / "taesd")]) == 0
    assert "imported tiny_vae" in capsys.readouterr().out
    main(["weights", "--weights-dir", str(tmp_path / "w"), "status", "--json"])
    rows = {r["name"]: r["present"] for r in json.loads(capsys.readouterr().out)["flame2video"]}
    assert rows["tiny_vae"] and not rows["vae"]


def test_weights_import_of_a_wrong_file_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "x.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as err:
        main(["weights", "--weights-dir", str(tmp_path), "import", "animatediff", str(tmp_path / "x.ckpt")])
    assert err.value.code == 2 and "cannot import" in capsys.readouterr().err


def test_bench_refuses_without_weights(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["bench", "--profile", "tiny", "--device", "cpu", "--weights-dir", str(tmp_path)])
    assert err.value.code == 2 and "weights are missing" in capsys.readouterr().err


def test_bench_tiny_profile_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--backend", "flame2video", "--profile", "tiny,tiny:carry_mode=cache", "--allow-random-weights",
                 "--device", "cpu", "--weights-dir", str(tmp_path), "--frames", "2", "--warmup", "2",
                 "--fps", "1000", "--max-seconds", "60", "--stage-frames", "2", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    r, cached = report["results"]
    assert r["backend"] == "flame2video" and r["profile"] == "tiny"
    assert r["config"]["carry_mode"] == "renoise" and cached["config"]["carry_mode"] == "cache"
    assert cached["profile"] == "tiny:carry_mode=cache" and cached["throughput"]["frames_out"] == 2
    assert r["throughput"]["frames_out"] == 2 and r["throughput"]["fps"] > 0
    assert r["latency"]["frames_out"] == 2 and r["latency"]["p95_ms"] >= r["latency"]["p50_ms"] > 0
    assert {"window", "rasterize", "flame_encoder", "unet", "decode"} <= set(r["stages"])
    assert r["stages"]["window"]["calls"] == 1  # the timing pass only: two frames, one window
    assert report["environment"]["command"].startswith("flamecast bench")
    assert "flame2video/tiny" in capsys.readouterr().out
    assert r["gc"]["frozen"] > 0 and r["gc"]["gc_full_collections"] >= 0  # frozen after warm-up, as a worker does


@pytest.mark.parametrize("spec,message", [("tiny:carry_mode", "not KEY=VALUE"), ("tiny:carry_mode=guess", "carry_mode")])
def test_bench_refuses_bad_profile_overrides(tmp_path, capsys, spec, message):
    with pytest.raises(SystemExit) as err:
        main(["bench", "--profile", spec, "--allow-random-weights", "--device", "cpu", "--weights-dir", str(tmp_path)])
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_bench_unknown_backend(capsys):
    with pytest.raises(SystemExit) as err:
        main(["bench", "--backend", "nope", "--device", "cpu"])
    assert err.value.code == 2 and "unknown generator 'nope'" in capsys.readouterr().err
