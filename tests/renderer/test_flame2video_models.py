"""FLAME2Video building blocks on tiny configs: reference attention processors, the
motion + view UNet, the FLAME encoder."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from flamecast.renderer.flame2video.attention import (
    ReferenceAttention,
    ReferenceJoinProcessor,
    ShortSequenceAttnProcessor,
    SingleTokenCrossAttnProcessor,
    fuse_self_attention_projections,
    self_attention_names,
    short_attention_matmul,
    short_attention_products,
)
from flamecast.renderer.flame2video.components import build_component
from flamecast.renderer.flame2video.config import tiny_config
from flamecast.renderer.flame2video.flame_encoder import FlameEncoder
from flamecast.renderer.flame2video.unet import MultiViewUNet, motion_module_names


@pytest.fixture(scope="module")
def cfg():
    return tiny_config()


@pytest.fixture(scope="module")
def unet(cfg):
    torch.manual_seed(0)
    parts = [build_component(n, cfg) for n in ("denoising_unet", "motion_module", "view_module")]
    return MultiViewUNet.build(*parts).eval()


def _attn() -> Attention:
    torch.manual_seed(1)
    return Attention(32, heads=4, dim_head=8).eval()


@torch.no_grad()
def test_join_processor_equals_attention_over_concatenated_tokens():
    attn = _attn()
    x, ref = torch.randn(3, 10, 32), torch.randn(1, 6, 32)
    expected = AttnProcessor2_0()(attn, x, encoder_hidden_states=torch.cat([x, ref.expand(3, -1, -1)], 1))
    proc = ReferenceJoinProcessor()
    proc.kv = (attn.to_k(ref), attn.to_v(ref))
    torch.testing.assert_close(proc(attn, x), expected, atol=1e-5, rtol=1e-5)
    proc.kv = None
    torch.testing.assert_close(proc(attn, x), AttnProcessor2_0()(attn, x), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_short_sequence_processor_equals_sdpa_and_survives_fusing():
    attn = _attn()
    x = torch.randn(50, 8, 32)
    expected = AttnProcessor2_0()(attn, x)
    attn.set_processor(ShortSequenceAttnProcessor())
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)
    assert fuse_self_attention_projections(attn) == 1 and attn.fused_projections
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_single_token_cross_attention_is_exact_and_falls_back_otherwise():
    torch.manual_seed(3)
    attn = Attention(32, cross_attention_dim=24, heads=4, dim_head=8).eval()
    x, one, many = torch.randn(3, 10, 32), torch.randn(3, 1, 24), torch.randn(3, 5, 24)
    proc = SingleTokenCrossAttnProcessor()
    calls = []
    attn.to_q.register_forward_hook(lambda *a: calls.append("q"))
    for ctx in (one, many):
        calls.clear()
        expected = AttnProcessor2_0()(attn, x, encoder_hidden_states=ctx)
        torch.testing.assert_close(proc(attn, x, encoder_hidden_states=ctx), expected, atol=1e-5, rtol=1e-5)
        assert calls == ["q"] * (1 if ctx is one else 2)  # one token: no query projection


@torch.no_grad()
def test_short_attention_products_equal_the_matmul_form():
    torch.manual_seed(2)
    q, k, v = torch.randn(6, 4, 3, 8), torch.randn(6, 4, 7, 8), torch.randn(6, 4, 7, 8)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, -1) @ v
    torch.testing.assert_close(short_attention_matmul(q, k, v), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short_attention_products(q, k, v), expected, atol=1e-5, rtol=1e-5)
    half = [t.bfloat16() for t in (q, k, v)]
    assert short_attention_products(*half).dtype == torch.bfloat16
    torch.testing.assert_close(short_attention_products(*half).float(), expected, atol=3e-2, rtol=3e-2)


@torch.no_grad()
def test_short_sequence_processor_takes_the_products_form_under_compile():
    attn = _attn()
    attn.set_processor(ShortSequenceAttnProcessor())
    x = torch.randn(20, 8, 32)
    seen = []

    def backend(gm, inputs):  # record the traced ops, run the graph as traced
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op in ("call_function", "call_method"))
        return gm.forward

    compiled = torch.compile(attn, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(x), attn(x), atol=1e-5, rtol=1e-5)
    assert not any("matmul" in t for t in seen) and any("sum" in t for t in seen)


@torch.no_grad()
def test_reference_attention_records_and_caches_every_self_attention(cfg, unet):
    ref_unet = build_component("reference_unet", cfg).eval()
    ra = ReferenceAttention(ref_unet, unet.unet)
    assert ra.names == self_attention_names(ref_unet) and len(ra.names) > 0
    ref_unet(torch.randn(1, 4, 8, 8), 0, encoder_hidden_states=torch.randn(1, 1, 32))
    assert set(ra.bank) == set(ra.names)
    cache = ra.cache_from_bank()
    assert not ra.bank and set(cache.kv) == set(ra.names)
    k, v = cache.kv[ra.names[0]]
    assert k.shape == v.shape and k.shape[:2] == (1, 64)  # one portrait, 8 x 8 latent tokens
    x = torch.randn(1, 2, 4, 3, 8, 8)
    ehs = torch.randn(1, 1, 32)
    ra.activate(None)
    plain = unet(x, torch.tensor(10), ehs)
    ra.activate(cache)
    joined = unet(x, torch.tensor(10), ehs)
    ra.activate(None)
    assert not torch.allclose(plain, joined)


@torch.no_grad()
def test_view_module_mixes_views_and_motion_module_mixes_frames(unet):
    torch.manual_seed(2)
    x = torch.randn(1, 2, 4, 2, 8, 8)  # N, V, C, F, h, w
    ehs, t = torch.randn(1, 1, 32), torch.tensor(100)
    base = unet(x, t, ehs)
    assert base.shape == x.shape
    y = x.clone()
    y[0, 1] += 1.0  # change view 1 only
    out = unet(y, t, ehs)
    assert not torch.allclose(out[0, 0], base[0, 0])  # view 0 sees view 1
    z = x.clone()
    z[0, :, :, 1] += 1.0  # change frame 1 only
    out = unet(z, t, ehs)
    assert not torch.allclose(out[0, :, :, 0], base[0, :, :, 0])  # frame 0 sees frame 1
    unet._skip_views = True
    try:
        alone = unet(y, t, ehs)
    finally:
        unet._skip_views = False
    assert torch.allclose(alone[0, 0], _without_views(unet, x, t, ehs)[0, 0])  # without views, view 0 ignores view 1


def _without_views(unet, x, t, ehs):
    unet._skip_views = True
    try:
        return unet(x, t, ehs)
    finally:
        unet._skip_views = False


@torch.no_grad()
def test_single_view_skips_the_view_module(unet):
    x = torch.randn(1, 1, 4, 2, 8, 8)
    ehs = torch.randn(1, 1, 32)
    calls = []
    handle = unet.view_module.down_blocks[0].motion_modules[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        unet(x, torch.tensor(5), ehs)
        assert not calls
        unet(torch.randn(1, 2, 4, 2, 8, 8), torch.tensor(5), ehs)
        assert calls
    finally:
        handle.remove()


@torch.no_grad()
def test_condition_is_added_after_conv_in(unet):
    x = torch.randn(1, 2, 4, 2, 8, 8)
    ehs = torch.randn(1, 1, 32)
    cond = torch.randn(1, 2, 32, 2, 8, 8)
    a = unet(x, torch.tensor(5), ehs)
    b = unet(x, torch.tensor(5), ehs, condition=cond)
    assert not torch.allclose(a, b)
    assert unet._condition is None  # never leaks into the next call
    torch.testing.assert_close(unet(x, torch.tensor(5), ehs), a)


def test_view_and_motion_modules_share_layout(cfg, unet):
    names = motion_module_names(unet.unet)
    assert names and sorted(names) == sorted(motion_module_names(unet.view_module))
    assert "mid_block.motion_modules.0" in names


def test_flame_encoder_shape_and_aniportrait_names():
    enc = FlameEncoder(out_channels=32, channels=(3, 4, 8, 8, 16)).eval()
    out = enc(torch.rand(5, 3, 64, 64))
    assert out.shape == (5, 32, 8, 8)
    keys = set(enc.state_dict())
    assert {"conv_layers.0.weight", "conv_layers.1.running_mean", "conv_layers.21.weight", "final_proj.weight", "scale"} <= keys
