"""The ``cache`` carry mode: carried frames as cached temporal context (tiny profile, CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flamecast.renderer.flame2video.attention import ShortSequenceAttnProcessor
from flamecast.renderer.flame2video.components import random_components
from flamecast.renderer.flame2video.config import get_profile, tiny_config
from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline
from flamecast.renderer.flame2video.stream import WindowStream
from flamecast.renderer.flame2video.temporal import CarryAttnProcessor, CarryGroupNorm, TemporalCarry

from .test_flame2video_stream import conditioner  # the same fake FLAME renderings (tiny: 2 views, 64 px)

PROFILE = get_profile("tiny").replace(carry_mode="cache")  # W = 4, S = 2, 2 views, 2 steps


@pytest.fixture(scope="module")
def pipe():
    return FLAME2VideoPipeline(random_components(tiny_config(), seed=0), PROFILE)


def first_motion_block(pipe):
    module = pipe.unet.unet.down_blocks[0].motion_modules[0]
    return module, module.transformer_blocks[0]


@pytest.mark.parametrize("window,stride", [(4, 2), (5, 2), (4, 3)])
def test_attention_over_cached_frames_equals_attention_over_the_window(pipe, window, stride):
    module, block = first_motion_block(pipe)
    attn, pe = block.attn1, block.pos_embed.pe
    assert isinstance(attn.processor, CarryAttnProcessor)
    k = window - stride
    x = torch.randn(6, window, attn.query_dim, generator=torch.Generator().manual_seed(window * 10 + stride))
    full = ShortSequenceAttnProcessor()(attn, x + pe[:, :window])
    carry = attn.processor.carry
    try:
        # a window without a past: plain attention, and the kept frames recorded at their next places
        carry.begin(stride, None)
        torch.testing.assert_close(attn.processor(attn, x + pe[:, :window]), full)
        (kept,) = carry.take()[attn.processor.key]
        torch.testing.assert_close(kept, x[:, stride:] + pe[:, :k])
        # the same layer on the new frames only, the first k frames coming from the cache:
        # the block adds positions 0.. to whatever frames it is given
        carry.begin(stride, {attn.processor.key: (x[:, :k] + pe[:, :k],)})
        out = attn.processor(attn, x[:, k:] + pe[:, :stride])
        torch.testing.assert_close(out, full[:, k:], atol=1e-5, rtol=1e-4)
    finally:
        carry.end()


def test_group_norm_with_cached_statistics_equals_the_window_norm():
    carry = TemporalCarry()
    plain = nn.GroupNorm(4, 16, eps=1e-6)
    with torch.no_grad():
        plain.weight.normal_()
        plain.bias.normal_()
    norm = CarryGroupNorm.replacing(plain, carry, "n")
    assert set(norm.state_dict()) == set(plain.state_dict())
    x = torch.randn(3, 16, 6, 5, 5) * 3 + 1
    want = plain(x)
    torch.testing.assert_close(norm(x), want)  # carry off: GroupNorm
    carry.begin(2, None)
    torch.testing.assert_close(norm(x), want, atol=1e-5, rtol=1e-4)
    ctx = carry.take()
    assert ctx["n"][0].shape == (3, 4, 4)  # mean and variance of the last 4 frames, per group
    # the new frames alone, with the statistics of the first 4 frames from the cache
    mean, var = torch.var_mean(x.reshape(3, 4, 4, 6, 25), dim=(2, 4), unbiased=False)[::-1]
    carry.begin(2, {"n": (mean[..., :4], var[..., :4])})
    torch.testing.assert_close(norm(x[:, :, 4:]), want[:, :, 4:], atol=1e-5, rtol=1e-4)
    carry.end()


def unet_batches(pipe) -> list[int]:
    sizes: list[int] = []
    pipe.unet.unet.conv_in.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    return sizes


def test_cache_mode_denoises_only_the_new_frames_after_the_first_window(pipe):
    sizes = unet_batches(pipe)
    ref = pipe.prepare_reference(torch.rand(3, 64, 64))
    stream = WindowStream(pipe, ref, conditioner, seed=3)
    out = stream.push([0, 1])
    assert [i for i, _ in out] == [0, 1] and out[0][1].shape == (2, 64, 64, 3)
    assert sizes == [PROFILE.views * PROFILE.window] * PROFILE.steps  # the first window: all W frames
    sizes.clear()
    out = stream.push([2, 3, 4, 5])
    assert [i for i, _ in out] == [2, 3, 4, 5]
    assert sizes == [PROFILE.views * PROFILE.stride] * (2 * PROFILE.steps)  # then S new frames only
    assert stream.carry_latents is None and len(stream.context) == PROFILE.steps
    assert pipe.reference_runs == 1


def test_new_frames_depend_on_the_cached_context(pipe):
    ref = pipe.prepare_reference(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1)))
    cond = pipe.encode_conditions(conditioner([0, 0, 0, 1]))
    _, context = pipe.denoise_cached(cond, ref, None, torch.Generator().manual_seed(0))
    new = pipe.encode_conditions(conditioner([2, 3]))
    a, _ = pipe.denoise_cached(new, ref, context, torch.Generator().manual_seed(0))
    b, _ = pipe.denoise_cached(new, ref, context, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    shifted = [{k: tuple(t + 0.5 for t in v) for k, v in step.items()} for step in context]
    c, _ = pipe.denoise_cached(new, ref, shifted, torch.Generator().manual_seed(0))
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="steps"):
        pipe.denoise_cached(new, ref, context[:1], torch.Generator().manual_seed(0))


def test_sessions_sharing_a_pipeline_keep_their_own_context(pipe):
    ref_a = pipe.prepare_reference(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2)))
    ref_b = pipe.prepare_reference(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(3)))
    alone = WindowStream(pipe, ref_a, conditioner, seed=4)
    want = alone.push([0, 1]) + alone.push([2, 3]) + alone.push([4, 5])
    a = WindowStream(pipe, ref_a, conditioner, seed=4)
    b = WindowStream(pipe, ref_b, conditioner, seed=9)
    got = []
    for items in ([0, 1], [2, 3], [4, 5]):
        got += a.push(items)
        b.push([7, 6])
    assert [i for i, _ in got] == [i for i, _ in want]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(got, want))


def test_renoise_and_cache_agree_on_the_first_window():
    comps = random_components(tiny_config(), seed=0)
    ref_img = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(6))
    outs = []
    for mode in ("renoise", "cache"):
        p = FLAME2VideoPipeline(comps, PROFILE.replace(carry_mode=mode))
        outs.append(WindowStream(p, p.prepare_reference(ref_img), conditioner, seed=5).push([0, 1]))
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(*outs))


def test_unknown_carry_mode_is_refused():
    with pytest.raises(ValueError, match="carry_mode"):
        PROFILE.replace(carry_mode="guess")


def test_layers_read_context_and_reference_from_fixed_addresses(pipe):
    """torch.compile treats tensors reached through a module as static inputs, so CUDA graphs
    would be recorded again whenever one moved: sessions' data are copied into fixed buffers."""
    ref_a = pipe.prepare_reference(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(4)))
    ref_b = pipe.prepare_reference(torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(5)))
    _, join = next(iter(pipe.reference.joins.values()))
    name = next(iter(pipe.reference.joins))
    pipe.reference.activate(ref_a.cache)
    ptr = join.kv[0].data_ptr()
    pipe.reference.activate(ref_b.cache)
    assert join.kv[0].data_ptr() == ptr
    torch.testing.assert_close(join.kv[0], ref_b.cache.kv[name][0])

    carry = pipe.unet.temporal
    cond = pipe.encode_conditions(conditioner([0, 0, 0, 1]))
    _, ctx_a = pipe.denoise_cached(cond, ref_a, None, torch.Generator().manual_seed(0))
    _, ctx_b = pipe.denoise_cached(cond, ref_b, None, torch.Generator().manual_seed(1))
    key = next(iter(ctx_a[0]))
    carry.begin(PROFILE.stride, ctx_a[0])
    ptr = carry.context[key][0].data_ptr()
    carry.begin(PROFILE.stride, ctx_b[1])
    assert carry.context[key][0].data_ptr() == ptr
    torch.testing.assert_close(carry.context[key][0], ctx_b[1][key][0])
    carry.end()
