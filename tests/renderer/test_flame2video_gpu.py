"""FLAME2Video on a CUDA GPU (skipped without one): bf16 agrees with float32, windows run."""

from __future__ import annotations

import pytest
import torch

from flamecast.renderer.flame2video.components import random_components
from flamecast.renderer.flame2video.config import get_profile, tiny_config
from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline
from flamecast.renderer.flame2video.stream import WindowStream

from .test_flame2video_stream import conditioner

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _output(profile, x, cond, portrait, t):
    pipe = FLAME2VideoPipeline(random_components(tiny_config(), seed=3, device="cuda"), profile, device="cuda")
    ref = pipe.prepare_reference(portrait)
    pipe.reference.activate(ref.cache)
    return pipe._model_output(x, t, ref, pipe.encode_conditions(cond))


def test_bf16_matches_float32_on_cuda():
    profile = get_profile("tiny")
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(4, 2, 4, 8, 8, device="cuda", generator=g)
    cond = torch.rand(4, 2, 3, 64, 64, device="cuda", generator=g)
    portrait = torch.rand(3, 64, 64, device="cuda", generator=g)
    t = torch.tensor(700, device="cuda")
    ref = _output(profile.replace(dtype="float32"), x, cond, portrait, t)
    out = _output(profile.replace(dtype="bfloat16"), x, cond, portrait, t)
    err = float((out - ref).norm() / ref.norm())
    assert torch.isfinite(out).all() and err < 3e-2, err


def test_the_short_attention_kernel_gives_the_unet_output_of_the_products(monkeypatch):
    """The motion and view modules' Triton kernel, in the whole (tiny) UNet, agrees with the
    products it replaces, and it did run."""
    from flamecast.renderer.flame2video import short_attention
    from flamecast.renderer.flame2video.attention import ShortSequenceAttnProcessor

    calls = []
    kernel = short_attention.short_attention
    monkeypatch.setattr(short_attention, "short_attention", lambda *a: calls.append(1) or kernel(*a))
    # full float32 convolutions: cuDNN's TF32 (on by default) alone moves this output by about 1e-3
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    profile = get_profile("tiny").replace(dtype="float32")
    pipe = FLAME2VideoPipeline(random_components(tiny_config(), seed=6, device="cuda"), profile, device="cuda")
    procs = [m.processor for m in pipe.unet.modules()
             if isinstance(getattr(m, "processor", None), ShortSequenceAttnProcessor)]
    assert procs and all(p.kernel for p in procs)
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(4, 2, 4, 8, 8, device="cuda", generator=g)
    cond = pipe.encode_conditions(torch.rand(4, 2, 3, 64, 64, device="cuda", generator=g))
    ref = pipe.prepare_reference(torch.rand(3, 64, 64, device="cuda", generator=g))
    pipe.reference.activate(ref.cache)
    t = torch.tensor(700, device="cuda")
    with torch.no_grad():
        with_kernel = pipe._model_output(x, t, ref, cond)
        assert len(calls) >= len(procs)
        for p in procs:
            p.kernel = False
        n = len(calls)
        products = pipe._model_output(x, t, ref, cond)
        assert len(calls) == n
    err = float((with_kernel - products).norm() / products.norm())
    assert err < 1e-4, err


def test_stream_runs_on_cuda():
    profile = get_profile("tiny").replace(dtype="bfloat16")
    pipe = FLAME2VideoPipeline(random_components(tiny_config(), device="cuda"), profile, device="cuda")
    ref = pipe.prepare_reference(torch.rand(3, 64, 64))
    stream = WindowStream(pipe, ref, lambda items: torch.rand(len(items), 2, 3, 64, 64))
    out = stream.push(list(range(6)))
    assert [i for i, _ in out] == list(range(6))
    assert out[0][1].shape == (2, 64, 64, 3) and out[0][1].dtype == torch.uint8


def test_cached_carry_survives_cuda_graphs():
    """The carried context a compiled (CUDA-graph) UNet records is copied out before the next
    step overwrites it: compiled and eager cache-mode windows agree."""
    profile = get_profile("tiny").replace(dtype="float32", carry_mode="cache")
    comps = random_components(tiny_config(), seed=4, device="cuda")
    portrait = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    outs = []
    for compiled in (False, True):
        pipe = FLAME2VideoPipeline(comps, profile, device="cuda")
        if compiled:
            pipe.compile("reduce-overhead")
        ref = pipe.prepare_reference(portrait)
        g = torch.Generator("cuda").manual_seed(1)
        cond = pipe.encode_conditions(torch.rand(4, 2, 3, 64, 64, device="cuda", generator=g))
        latents, ctx = pipe.denoise_cached(cond, ref, None, torch.Generator("cuda").manual_seed(2))
        windows = [latents]
        for i in range(3):
            new = pipe.encode_conditions(torch.rand(2, 2, 3, 64, 64, device="cuda", generator=g))
            latents, ctx = pipe.denoise_cached(new, ref, ctx, torch.Generator("cuda").manual_seed(3 + i))
            windows.append(latents)
        outs.append(torch.cat(windows))
    err = float((outs[1] - outs[0]).norm() / outs[0].norm())
    assert err < 1e-2, err


def test_conditioning_stage_on_its_own_stream_gives_the_same_frames():
    """Renderings drawn on the stage's CUDA stream, beside the denoising, equal those drawn in line."""
    from flamecast.renderer.flame2video.conditioning import ConditioningStage

    profile = get_profile("tiny").replace(dtype="float32", carry_mode="cache")
    pipe = FLAME2VideoPipeline(random_components(tiny_config(), seed=5, device="cuda"), profile, device="cuda")
    ref = pipe.prepare_reference(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)))

    def draw(items):  # per frame, with kernels on the calling thread's current stream
        return conditioner(items).to("cuda").mul_(0.5).add_(0.25)

    batches = [[0], [1, 2, 3], [4], [5, 6, 7, 8, 9]]
    inline = WindowStream(pipe, ref, draw, seed=1)
    want = [f for b in batches for f in inline.push(b)]
    stage = ConditioningStage(torch.device("cuda"))
    try:
        staged = WindowStream(pipe, ref, draw, seed=1, stage=stage)
        got = [f for b in batches for f in staged.push(b)]
    finally:
        stage.close()
    assert [i for i, _ in got] == [i for i, _ in want]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, want))


def test_compiled_generator_draws_ahead_as_it_draws_in_line(monkeypatch, tmp_path):
    """The whole service path on a GPU: warm-up with CUDA graphs, a session's first window eager,
    FlameConditioner renderings drawn on the conditioning stage beside the replayed graphs; its
    frames equal those of a session that draws in line, and nothing is compiled after warm-up."""
    import numpy as np

    from flamecast.plugins import GeneratorSessionSpec
    from flamecast.renderer.flame2video import FLAME2VideoGenerator, FLAME2VideoOptions, config
    from flamecast.renderer.flame2video.generator import warm_frames

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setitem(config.PROFILES, "tiny", config.PROFILES["tiny"].replace(carry_mode="cache"))
    gen = FLAME2VideoGenerator({"device": "cuda", "allow_random_weights": True, "detect_face": False,
                                "compile": "reduce-overhead", "compile_cache_dir": str(tmp_path),
                                "warm_profiles": "tiny", "max_batch": 1})
    gen.warm_up()
    outputs = []
    for ahead in (True, False):
        gen.draw_ahead = ahead
        session = gen.open_session(GeneratorSessionSpec("s", None, FLAME2VideoOptions(profile="tiny", seed=4)))
        frames = warm_frames(12, gen.head.n_expression, 100)
        got, start = [], 0
        for n in (1, 3, 1, 5, 2):
            got += session.step(frames[start:start + n])
            start += n
        session.close()
        outputs.append(got)
    ahead, inline = outputs
    assert [r.source.seq for r in ahead] == [r.source.seq for r in inline] == list(range(100, 112))
    for a, b in zip(ahead, inline):
        assert np.abs(a.views.astype(int) - b.views.astype(int)).max() <= 1
    report = gen.compile_report()
    assert report["recompiles"] == 0 and report["cudagraph_rerecords"] == 0, report
    gen.close()


@pytest.mark.parametrize("scheduler", ["ddim", "lcm", "tcd"])
def test_a_steady_window_never_waits_for_the_gpu(scheduler):
    """Between a window's UNet calls the host never waits for the GPU (the schedulers read
    timesteps kept on the host), so it queues the next step while the GPU runs this one: a steady
    cache-mode window's denoising runs with CUDA's sync debug mode raising on any synchronisation."""
    profile = get_profile("tiny").replace(dtype="bfloat16", carry_mode="cache", scheduler=scheduler)
    pipe = FLAME2VideoPipeline(random_components(tiny_config(), seed=5, device="cuda"), profile, device="cuda")
    ref = pipe.prepare_reference(torch.rand(3, 64, 64))
    g = torch.Generator("cuda").manual_seed(0)
    cond = pipe.encode_conditions(torch.rand(4, 2, 3, 64, 64, device="cuda", generator=g))
    _, ctx = pipe.denoise_cached(cond, ref, None, torch.Generator("cuda").manual_seed(1))  # the first window
    new = pipe.encode_conditions(torch.rand(2, 2, 3, 64, 64, device="cuda", generator=g))
    gen = torch.Generator("cuda").manual_seed(2)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        latents, _ = pipe.denoise_cached(new, ref, ctx, gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert latents.shape[0] == 2 and torch.isfinite(latents).all()
