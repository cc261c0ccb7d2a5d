"""The FLAME2Video pipeline and sliding-window stream on the tiny profile (plain tensors)."""

from __future__ import annotations

import logging

import pytest
import torch

from flamecast.renderer.flame2video.components import random_components
from flamecast.renderer.flame2video.config import get_profile, tiny_config
from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline, quiet_empty_fp32_warnings
from flamecast.renderer.flame2video.stream import WindowStream

PROFILE = get_profile("tiny")  # 64 px, 2 views, W = 4, S = 2, 2 steps


def pipeline(**changes) -> FLAME2VideoPipeline:
    return FLAME2VideoPipeline(random_components(tiny_config(), seed=0), PROFILE.replace(**changes))


def conditioner(items):
    """Deterministic fake FLAME renderings: a bright square that moves with the item index."""
    out = torch.zeros(len(items), PROFILE.views, 3, PROFILE.size, PROFILE.size)
    for i, item in enumerate(items):
        x = 4 * (item % 8)
        out[i, :, :, 20:40, x:x + 20] = 1.0
    return out


def count_calls(module: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls


@pytest.fixture(scope="module")
def pipe():
    return pipeline()


def test_windows_yield_stride_frames_in_order_and_reference_runs_once(pipe):
    ref_calls = count_calls(pipe.reference_unet)
    clip_calls = count_calls(pipe.image_encoder)
    ref = pipe.prepare_reference(torch.rand(3, 80, 80))
    stream = WindowStream(pipe, ref, conditioner, seed=1)
    assert stream.push([0]) == []  # S = 2: nothing until two frames are in
    out = stream.push([1])
    assert [i for i, _ in out] == [0, 1]
    assert out[0][1].shape == (2, 64, 64, 3) and out[0][1].dtype == torch.uint8
    out = stream.push([2, 3, 4])
    assert [i for i, _ in out] == [2, 3]
    assert stream.pending == [4] and stream.windows == 2
    assert stream.carry_latents.shape == (2, 2, 4, 8, 8)
    out = stream.push([5])
    assert [i for i, _ in out] == [4, 5]
    # reference features and the CLIP embedding were computed once for the session, not per window
    assert len(ref_calls) == 1 and len(clip_calls) == 1 and pipe.reference_runs == 1


def test_carried_frames_keep_their_final_latents(pipe):
    ref = pipe.prepare_reference(torch.rand(3, 64, 64))
    cond = pipe.encode_conditions(conditioner(list(range(4))))
    carry = torch.randn(2, 2, 4, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = pipe.denoise(cond, ref, carry, g)
    assert out.shape == (4, 2, 4, 8, 8)
    torch.testing.assert_close(out[:2], carry)
    assert torch.isfinite(out).all()
    # the new frames depend on what was carried (continuity across windows)
    other = pipe.denoise(cond, ref, carry + 1.0, torch.Generator().manual_seed(0))
    assert not torch.allclose(other[2:], out[2:])


def test_same_seed_same_frames(pipe):
    ref = pipe.prepare_reference(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(5)))
    a = WindowStream(pipe, ref, conditioner, seed=7).push([0, 1, 2, 3])
    b = WindowStream(pipe, ref, conditioner, seed=7).push([0, 1, 2, 3])
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))
    c = WindowStream(pipe, ref, conditioner, seed=8).push([0, 1])
    assert not torch.equal(a[0][1], c[0][1])


@pytest.mark.parametrize("scheduler", ["lcm", "tcd"])
def test_few_step_schedulers(scheduler):
    p = pipeline(scheduler=scheduler, steps=1, window=2, stride=2)
    ref = p.prepare_reference(torch.rand(3, 64, 64))
    out = WindowStream(p, ref, conditioner).push([0, 1])
    assert len(out) == 2 and out[0][1].shape == (2, 64, 64, 3)


def test_paper_mode_reruns_reference_every_step_with_guidance_and_full_vae():
    p = pipeline(rerun_reference=True, guidance=3.0, decoder="vae", steps=1, window=2, stride=2)
    assert p.decoder is p.vae
    ref = p.prepare_reference(torch.rand(3, 64, 64))
    calls = count_calls(p.reference_unet)
    out = WindowStream(p, ref, conditioner).push([0, 1, 2, 3])
    assert len(out) == 4
    assert len(calls) == 2 * 1  # two windows x one step
    assert out[0][1].shape == (2, 64, 64, 3)


def test_stride_equal_to_window_carries_nothing():
    p = pipeline(window=2, stride=2)
    ref = p.prepare_reference(torch.rand(3, 64, 64))
    stream = WindowStream(p, ref, conditioner)
    assert len(stream.push([0, 1, 2, 3])) == 4
    assert stream.carry_latents is None


def test_stage_timer_counts_each_stage(pipe):
    ref = pipe.prepare_reference(torch.rand(3, 64, 64))
    pipe.timer.enabled = True
    try:
        WindowStream(pipe, ref, conditioner).push([0, 1])
        stages = pipe.timer.as_dict()
    finally:
        pipe.timer.enabled = False
        pipe.timer.seconds.clear()
        pipe.timer.counts.clear()
    assert {"window", "rasterize", "flame_encoder", "unet", "decode"} <= set(stages)
    assert stages["unet"]["calls"] == PROFILE.steps and stages["window"]["calls"] == 1


def test_cross_attention_on_the_clip_token_skips_queries(pipe):
    from diffusers.models.attention_processor import Attention

    cross = [m for u in (pipe.unet.unet, pipe.reference_unet) for m in u.modules()
             if isinstance(m, Attention) and m.is_cross_attention]
    values, queries = [], []
    hooks = [h for m in cross for h in (m.to_v.register_forward_hook(lambda *a: values.append(1)),
                                        m.to_q.register_forward_hook(lambda *a: queries.append(1)))]
    try:
        ref = pipe.prepare_reference(torch.rand(3, 64, 64))
        WindowStream(pipe, ref, conditioner).push([0, 1])
    finally:
        for h in hooks:
            h.remove()
    assert cross and values and not queries


def test_bad_inputs_are_refused(pipe):
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        pipe.prepare_reference(torch.rand(64, 64, 3))
    with pytest.raises(ValueError, match="stride"):
        PROFILE.replace(stride=5)
    with pytest.raises(ValueError, match="multiple of"):
        FLAME2VideoPipeline(random_components(tiny_config()), PROFILE.replace(size=60)).latent_side


def test_each_enumeration_is_defined_once_and_validated():
    from flamecast.renderer.flame2video import FLAME2VideoOptions
    from flamecast.renderer.flame2video.config import CARRY_MODES, PROFILE_NAMES, PROFILES, SCHEDULERS

    assert tuple(PROFILES) == PROFILE_NAMES
    for name in PROFILE_NAMES:
        FLAME2VideoOptions(profile=name)
    for mode in CARRY_MODES:
        assert PROFILE.replace(carry_mode=mode).carry_mode == mode
    for name in SCHEDULERS:
        assert PROFILE.replace(scheduler=name).scheduler == name
    for bad in ({"scheduler": "euler"}, {"decoder": "big"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PROFILE.replace(**bad)


def test_conditioning_stage_draws_frames_as_they_arrive(pipe):
    """With a ConditioningStage the renderings of each batch of frames are drawn on the stage's
    thread as the batch arrives, before its window is due, and the frames equal those drawn in
    line, whatever way the batches fall across windows."""
    import threading

    from flamecast.renderer.flame2video.conditioning import ConditioningStage

    calls, first_drawn = [], threading.Event()

    def watched(items):
        calls.append((threading.current_thread().name, list(items)))
        if items == [0]:
            first_drawn.set()
        return conditioner(items)

    ref = pipe.prepare_reference(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2)))
    batches = [[0], [1, 2, 3], [4], [5, 6, 7, 8, 9], [10, 11]]
    inline = WindowStream(pipe, ref, conditioner, seed=3)
    want = [f for b in batches for f in inline.push(b)]
    stage = ConditioningStage(torch.device("cpu"))
    try:
        staged = WindowStream(pipe, ref, watched, seed=3, stage=stage)
        assert staged.push(batches[0]) == [] and first_drawn.wait(30)  # drawn with no window due
        got = staged.push(batches[1])
        for b in batches[2:]:
            got += staged.push(b)
    finally:
        stage.close()
    assert [i for i, _ in got] == [i for i, _ in want] == list(range(12))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, want))
    assert [items for _, items in calls] == batches  # one drawing per arriving batch, in order
    assert {name.split("_")[0] for name, _ in calls} == {"flame2video-conditions"}


def test_conditioning_stage_errors_reach_the_window(pipe):
    from flamecast.renderer.flame2video.conditioning import ConditioningStage

    def broken(items):
        if 3 in items:
            raise RuntimeError("no head for frame 3")
        return conditioner(items)

    stage = ConditioningStage(torch.device("cpu"))
    try:
        stream = WindowStream(pipe, pipe.prepare_reference(torch.rand(3, 64, 64)), broken, stage=stage)
        assert len(stream.push([0, 1])) == 2
        with pytest.raises(RuntimeError, match="no head for frame 3"):
            stream.push([2, 3])
    finally:
        stage.close()


def test_building_a_pipeline_logs_no_untrue_float32_warnings():
    """diffusers warns at every cast that a model "should keep" modules in float32, also when
    it names none; those are dropped, a warning that names modules is kept."""
    logger = logging.getLogger("diffusers.models.modeling_utils")  # diffusers' loggers do not propagate
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    named = "There are modules in X that should be kept in float32: ['norm']. Casting directly ..."
    try:
        pipeline()
        with quiet_empty_fp32_warnings():
            logger.warning(named)
            logger.warning("There are modules in Y that should be kept in float32: []. Casting directly ...")
        logger.warning("There are modules in Z that should be kept in float32: []. Casting directly ...")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == [named, records[-1].getMessage()]
    assert "Z" in records[-1].getMessage()  # outside a pipeline's build, diffusers' logging is untouched
