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


def test_prepare_refuses_a_batch_size_the_worker_does_not_use(capsys, tmp_path):
    err = _error(capsys, ["generator", "--prepare", "--compile", "default", "--warm", "tiny", "--max-batch", "4",
                          "--prepare-batch", "3", "--allow-random-weights", "--compile-cache", str(tmp_path)])
    assert "batch size(s) 3 not served: with max_batch 4 windows are batched 1, 2, 4 at a time" in err


def test_prepare_jobs_compile_in_processes_what_one_start_loads(capsys, tmp_path, monkeypatch, aot_eager_compile):
    """``--jobs 2`` runs one process per batch size (1 and 2 here), each with its share; a
    worker's start after them loads every call and compiles none."""
    import subprocess
    import sys

    from flamecast.cli import prepare

    monkeypatch.setattr(prepare, "JOB_COMMAND", (sys.executable, "-m", "tests.cli.aot_eager_cli"))
    base = ["generator", "--prepare", "--compile", "default", "--warm", "tiny", "--max-batch", "2",
            "--allow-random-weights", "--compile-cache", str(tmp_path / "cache")]
    assert main([*base, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("--prepare: 2 jobs, 2 at a time")
    assert "[flame2video, tiny, batch 2] flame2video: compiled calls ready in" in out
    assert "[flame2video, tiny, batch 1] flame2video: compiled calls ready in" in out
    assert "--prepare: all 2 jobs done in" in out
    assert len(list((tmp_path / "cache").rglob("precompiled/*/*.pt"))) == 3  # batches 1 and 2, the decoder
    # a worker's start: a process of its own, as the jobs were
    start = subprocess.run([*prepare.JOB_COMMAND, *base], capture_output=True, text=True, timeout=600)
    assert start.returncode == 0, start.stderr[-2000:]
    assert "tiny: 3 loaded from the cache" in start.stdout and "0 compiled and written (0.0 s)" in start.stdout


def test_prepare_jobs_name_the_job_that_failed(capsys, tmp_path):
    """Missing weights surface in the job processes; the command's error names the job and
    the file's folder."""
    err = _error(capsys, ["generator", "--prepare", "--compile", "default", "--warm", "tiny", "--jobs", "2",
                          "--max-batch", "2", "--weights-dir", str(tmp_path / "weights"),
                          "--compile-cache", str(tmp_path / "cache")])
    assert "--prepare job flame2video, tiny, batch " in err
    assert "weights are missing" in err and str(tmp_path / "weights") in err


def test_prepare_jobs_refuse_a_bad_warm_entry_before_starting_any(capsys, tmp_path):
    err = _error(capsys, ["generator", "--prepare", "--compile", "default", "--warm", "tiny:steps=many", "--jobs", "2",
                          "--allow-random-weights", "--compile-cache", str(tmp_path)])
    assert "warm profile 'tiny:steps=many': option 'steps'" in err and "jobs," not in err


def test_prepare_jobs_must_be_positive(capsys, tmp_path):
    err = _error(capsys, ["generator", "--prepare", "--compile", "default", "--jobs", "0", "--allow-random-weights"])
    assert "--jobs must be at least 1" in err


def test_jobs_belong_to_prepare(capsys):
    err = _error(capsys, ["generator", "--jobs", "3", "--insecure"])
    assert "--jobs splits the compiling of --prepare" in err
