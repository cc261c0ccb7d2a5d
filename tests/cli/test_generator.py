"""``flamecast generator --prepare``: compile what a worker will serve into the cache, then exit."""

from __future__ import annotations

import pytest
import torch

from flamecast.cli import main


def _error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_prepare_needs_the_compile_mode(capsys):
    err = _error(capsys, ["generator", "--prepare", "--backend", "flame2video", "--allow-random-weights"])
    assert "give the --compile mode" in err


def test_prepare_refuses_a_generator_that_compiles_nothing(capsys):
    err = _error(capsys, ["generator", "--prepare", "--backend", "portrait", "--compile", "default"])
    assert "'portrait' compiles nothing" in err


def test_prepare_names_missing_weights(capsys, tmp_path):
    err = _error(capsys, ["generator", "--prepare", "--compile", "default", "--warm", "tiny",
                          "--weights-dir", str(tmp_path / "weights"), "--compile-cache", str(tmp_path / "cache")])
    assert "weights are missing" in err and str(tmp_path / "weights") in err


def test_prepare_rejects_a_bad_warm_entry(capsys, tmp_path):
    err = _error(capsys, ["generator", "--prepare", "--compile", "default", "--warm", "tiny:steps=many",
                          "--allow-random-weights", "--compile-cache", str(tmp_path)])
    assert err.strip() == ("flamecast: error: warm profile 'tiny:steps=many': option 'steps': Input should be a valid "
                           "integer, unable to parse string as an integer (got 'many')")


def test_prepare_writes_the_calls_the_next_start_loads(capsys, tmp_path, aot_eager_compile):
    """The first run compiles and writes the UNet's call for each batch size and the decoder's;
    the second, like a worker's start after it, loads them all and compiles none (AOTAutograd's
    eager backend in place of Inductor)."""
    argv = ["generator", "--prepare", "--compile", "default", "--warm", "tiny", "--max-batch", "2",
            "--allow-random-weights", "--compile-cache", str(tmp_path / "cache")]
    outputs = []
    for _ in range(2):
        torch._dynamo.reset()
        assert main(argv) == 0
        outputs.append(capsys.readouterr().out)
    torch._dynamo.reset()
    first, second = outputs
    assert first.startswith("flame2video: compiled calls ready in ") and str(tmp_path / "cache") in first
    assert "tiny: 0 loaded from the cache (0.0 s), 3 compiled and written" in first  # batches of 1 and 2, the decoder
    assert "tiny: 3 loaded from the cache" in second and "0 compiled and written (0.0 s)" in second
    assert len(list((tmp_path / "cache").rglob("precompiled/*/*.pt"))) == 3
