"""Fixtures of the renderer's tests (the command line's tests reuse them)."""

from __future__ import annotations

import pytest


@pytest.fixture
def aot_eager_compile(monkeypatch, tmp_path):
    """A compiled flame2video worker that a CPU test can afford: AOTAutograd's eager backend
    stands in for Inductor (the guards, the recompilations and the calls compiled ahead of time
    are Dynamo's and AOTAutograd's either way; Inductor builds C++ kernels for minutes), the
    ``tiny`` profile carries frames as cached context as ``live`` does, and torch's kernel caches
    stay under ``tmp_path``."""
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # use_compile_cache sets them
        monkeypatch.setenv(name, str(tmp_path / name))
    for target, name, value in aot_eager_patches():
        (monkeypatch.setitem if isinstance(target, dict) else monkeypatch.setattr)(target, name, value)


def aot_eager_patches() -> list[tuple[object, str, object]]:
    """``aot_eager_compile``'s replacements, as (object or dict, name, value); a process of its
    own applies them too (tests/cli/aot_eager_cli.py)."""
    from flamecast.renderer.flame2video import config
    from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline

    compile_inductor = FLAME2VideoPipeline.compile
    return [(config.PROFILES, "tiny", config.PROFILES["tiny"].replace(carry_mode="cache")),
            (FLAME2VideoPipeline, "compile",
             lambda self, mode=None, **kw: compile_inductor(self, backend="aot_eager", **kw))]
