"""The compiled denoising UNet sees every static input at one address (tiny profile, CPU).

torch.compile treats tensors reached through a module (parameters, buffers, and attributes such
as the FLAME condition, the reference keys/values and the carried context) as static inputs,
and CUDA graphs are recorded again whenever one of them moves. A recording backend checks the
addresses over several windows of two sessions taking turns, without a GPU or a C++ compiler.
"""

from __future__ import annotations

import collections
import re
import os

import numpy as np
import pytest
import torch

from flamecast.renderer.flame2video.components import random_components
from flamecast.renderer.flame2video.config import get_profile, tiny_config
from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline
from flamecast.renderer.flame2video.stream import WindowStream


def address_recorder(seen: dict):
    def backend(gm: torch.fx.GraphModule, example_inputs):
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        static = [i for i, n in enumerate(placeholders)
                  if "_dynamo_static_input_type" in (n.meta.get("tensor_dict") or {})]
        assert static, "no static inputs: the check would see nothing"

        def run(*args):
            for i in static:
                if isinstance(args[i], torch.Tensor):
                    seen[(id(gm), placeholders[i].name)].add(args[i].data_ptr())
            return gm.forward(*args)

        return run

    return backend


@pytest.mark.parametrize("carry_mode", ["renoise", "cache"])
@pytest.mark.parametrize("compiled", ["in place", "as an argument"])
def test_static_inputs_keep_their_addresses(carry_mode, compiled):
    """``in place``: the UNet module compiled (``torch.compile`` without a cache); ``as an
    argument``: ``call_unet`` compiled with the UNet passed in, as the calls compiled ahead of
    time are (precompile.py)."""
    from flamecast.renderer.flame2video.unet import call_unet

    torch._dynamo.reset()
    seen: dict = collections.defaultdict(set)
    profile = get_profile("tiny").replace(carry_mode=carry_mode)
    pipe = FLAME2VideoPipeline(random_components(tiny_config(), seed=0), profile)
    if compiled == "in place":
        pipe.unet.unet.compile(backend=address_recorder(seen), dynamic=False)
    else:
        pipe._unet_calls = torch.compile(call_unet, backend=address_recorder(seen), dynamic=False, fullgraph=True)
    g = torch.Generator().manual_seed(0)
    streams = [WindowStream(pipe, pipe.prepare_reference(torch.rand(3, 64, 64, generator=g)),
                            lambda items: torch.rand(len(items), 2, 3, 64, 64, generator=g), seed=i)
               for i in range(2)]
    for _ in range(3):
        for s in streams:
            assert len(s.push([0, 1])) == 2
    assert len(seen) > 100  # parameters, the condition, reference keys/values (and the context)
    moved = sorted(name for (_, name), ptrs in seen.items() if len(ptrs) > 1)
    assert moved == []
    torch._dynamo.reset()


def test_compile_counts_see_a_recompilation():
    from flamecast.renderer.flame2video.compile_cache import CompileCounts

    torch._dynamo.reset()
    fn = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
    fn(torch.ones(2))
    warm = CompileCounts.now()
    fn(torch.ones(2))
    assert (CompileCounts.now() - warm).graphs == 0  # same shape: served by the compiled graph
    fn(torch.ones(3))
    assert (CompileCounts.now() - warm).graphs == 1  # a new shape after warm-up is a recompilation
    torch._dynamo.reset()


def test_compile_cache_folder_is_keyed_by_versions_and_device(tmp_path, monkeypatch):
    from flamecast.renderer.flame2video.compile_cache import cache_key, use_compile_cache

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # restored after the test
        monkeypatch.setenv(name, str(tmp_path / "before"))
    folder = use_compile_cache(tmp_path)
    assert folder.parent == tmp_path and folder.name == cache_key() and torch.__version__.split("+")[0] in folder.name
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(str(folder))


def _portrait_png(seed: int, size: tuple[int, int]) -> bytes:
    from flamecast.renderer.portrait import encode_png

    return encode_png(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_serving_after_warm_up_compiles_nothing(tmp_path, aot_eager_compile):
    """After ``warm_up`` a worker's life (sessions opening and closing at any time, other
    portraits, seeds, views and motion, batches of every size, frame numbers an hour into serving) runs on the
    graphs warm-up compiled: Dynamo compiles nothing more. AOTAutograd's eager backend stands in
    for Inductor (the guards, and so the recompilations, are Dynamo's); the carry mode is
    ``cache``, the one ``live`` and ``hq`` serve with."""
    from flamecast.plugins import GeneratorSessionSpec, OptionsRefused
    from flamecast.renderer.flame2video import FLAME2VideoGenerator, FLAME2VideoOptions
    from flamecast.renderer.flame2video.compile_cache import CompileCounts
    from flamecast.renderer.flame2video.generator import batch_sizes, random_frames

    torch._dynamo.reset()
    gen = FLAME2VideoGenerator({"device": "cpu", "allow_random_weights": True, "detect_face": False, "compile": "default",
                                "compile_cache_dir": str(tmp_path), "warm_profiles": "tiny", "max_batch": 2})
    before = CompileCounts.now()  # the counters are the process's
    gen.warm_up()
    # the UNet for each batch size and the decoder; the sessions' first windows ran eagerly
    assert gen.compile_report()["at_warm_up"]["graphs"] - before.graphs == len(batch_sizes(2)) + 1
    rng, n_expr, seq = np.random.default_rng(1), gen.head.n_expression, 30 * 3600

    def open_session(i: int, views: tuple[str, str]):
        options = FLAME2VideoOptions(profile="tiny", seed=100 + i, views=views)
        portrait = _portrait_png(i, (64 + 16 * i, 128 - 8 * i))
        return gen.open_session(GeneratorSessionSpec(f"s{i}", portrait, options))

    sessions = {0: open_session(0, ("front", "left30"))}
    for turn in range(10):  # sessions join and leave while the others stream
        if turn in (2, 4, 5):
            sessions[turn] = open_session(turn, ("right30", "up15") if turn % 2 else ("left45", "front"))
        if turn in (6, 8):
            sessions.pop(min(sessions)).close()
        work = [(s, random_frames(rng, int(rng.integers(1, 5)), n_expr, seq, extras=bool(k % 2))) for k, s in sessions.items()]
        seq += 4
        outs = gen.step_sessions(work)
        assert all(r.views.shape == (2, 64, 64, 3) for out in outs for r in out)
    report = gen.compile_report()
    assert report["since_warm_up"]["graphs"] == 0 and report["recompiles"] == 0, report
    # warm-up compiled the UNet for each batch size and the decoder ahead of time and wrote them
    precompiled = report["precompiled"]["tiny"]
    assert (precompiled["unet"]["compiled"], precompiled["decoder"]["compiled"]) == (len(batch_sizes(2)), 1), precompiled
    assert precompiled["unet"]["saved"] == len(batch_sizes(2)) and precompiled["unet"]["loaded"] == 0
    # a session that would need graphs warm-up did not compile is refused before anything is built
    for options, says in ((FLAME2VideoOptions(profile="tiny", window=2, stride=1), "window 2 (compiled: 4)"),
                          (FLAME2VideoOptions(profile="tiny", steps=3), "steps 3 (compiled: 2); open the session without them, "
                           "or start the worker with --warm tiny,tiny:steps=3"),
                          (FLAME2VideoOptions(profile="live"), "--warm tiny,live")):
        with pytest.raises(OptionsRefused, match=re.escape(says)):
            gen.open_session(GeneratorSessionSpec("other", _portrait_png(9, (64, 64)), options))
    assert len(gen._pipelines) == 1 and gen.compile_report()["recompiles"] == 0
    for s in sessions.values():
        s.close()
    torch._dynamo.reset()
