"""flamecast bench: a generator's first output is timed on its own, and a run whose generator
compiled or re-recorded CUDA graphs after warm-up fails instead of reporting figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flamecast.cli import main
from flamecast.plugins import Generator, GeneratorOptions, GeneratorSession, RenderedFrame, hookimpl


class _Session(GeneratorSession):
    def __init__(self, window: int) -> None:
        self.window, self.pending = window, []

    def step(self, frames):
        self.pending += list(frames)
        if len(self.pending) < self.window:
            return []
        done, self.pending = self.pending, []
        return [RenderedFrame(f, np.zeros((1, 8, 8, 3), np.uint8), ("front",)) for f in done]

    def close(self):
        pass


class Windowed(Generator):
    """Outputs in windows of 4 frames; reports the compilations its settings say happened."""

    name = "windowed"
    Options = GeneratorOptions
    warmed = False

    def warm_up(self):
        Windowed.warmed = True

    def open_session(self, spec):
        return _Session(4)

    def compile_report(self):
        n = int(self.settings.compile == "reduce-overhead")
        return {"recompiles": n, "cudagraph_rerecords": 0}


class Plugin:
    @hookimpl
    def flamecast_register_generators(self, register):
        register(Windowed)


@pytest.fixture
def windowed(monkeypatch):
    from flamecast.plugins import manager

    real = manager.make_plugin_host
    monkeypatch.setattr(manager, "make_plugin_host", lambda **kw: real(**{**kw, "extra_plugins": [("windowed", Plugin())]}))


def test_first_output_is_timed_and_clean_runs_pass(windowed, tmp_path):
    out = tmp_path / "b.json"
    assert main(["bench", "--backend", "windowed", "--device", "cpu", "--frames", "8", "--warmup", "4",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert Windowed.warmed and result["first_frame_after_frames_in"] == 4 and result["first_frame_s"] >= 0
    assert result["compile_counts"] == {"recompiles": 0, "cudagraph_rerecords": 0}


def test_recompiling_after_warm_up_fails_the_run(windowed, tmp_path, capsys):
    out = tmp_path / "b.json"
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--backend", "windowed", "--device", "cpu", "--frames", "8", "--warmup", "4",
              "--compile", "reduce-overhead", "--json", str(out)])
    assert exc.value.code == 2 and "1 compilation(s)" in capsys.readouterr().err
    assert json.loads(out.read_text())["results"][0]["compile_counts"]["recompiles"] == 1


def test_a_compiled_profile_is_warmed_as_its_session_will_run():
    """What the bench warms is what its session opens with, overrides and size included (a
    compiled generator refuses any other)."""
    from flamecast.cli.bench import _options, warm_spec
    from flamecast.renderer.flame2video import FLAME2VideoGenerator
    from flamecast.renderer.flame2video.generator import resolve_profile, warm_options

    for profile, size in (("live", None), ("live:carry_mode=renoise:steps=2", 384), ("hq:window=6:stride=3", 256)):
        session = resolve_profile(_options(FLAME2VideoGenerator, profile, size))
        assert resolve_profile(warm_options(warm_spec(profile, size))) == session
