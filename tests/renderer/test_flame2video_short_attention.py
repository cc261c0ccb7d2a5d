"""The short-sequence attention kernel (Triton), run on this CPU by Triton's interpreter: the
same function as softmax attention, on the strided views the fused QKV projection leaves."""

from __future__ import annotations

import os

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

pytest.importorskip("triton")

from flamecast.renderer.flame2video import short_attention as sa  # noqa: E402
from flamecast.renderer.flame2video.attention import ShortSequenceAttnProcessor, attend_heads  # noqa: E402


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def interpreted():
    """Triton's interpreter for the kernel where there is no GPU (tests/conftest.py sets it)."""
    if not torch.cuda.is_available():
        assert os.environ.get("TRITON_INTERPRET") == "1"


def _reference(q, k, v, heads):
    return attend_heads(q.double(), k.double(), v.double(), heads)


def _relative(a, b):
    return float((a.double() - b).norm() / b.norm())


@pytest.mark.parametrize(
    "rows,lq,lk,channels,heads",
    [
        (37, 4, 8, 320, 8),  # live's motion modules at the top level: 4 new frames over 8
        (20, 4, 4, 64, 2),  # views over views
        (9, 3, 6, 80, 2),  # lengths and a head size that are no powers of 2
        (5, 8, 8, 40, 1),
        (3, 1, 1, 16, 2),  # one token: the output is the value
    ],
)
def test_kernel_equals_softmax_attention_on_the_fused_projections_views(rows, lq, lk, channels, heads):
    torch.manual_seed(rows)
    qkv = torch.randn(rows, lk, 3 * channels, device=DEVICE) * 3  # large scores: the softmax must be stable
    q, k, v = qkv.chunk(3, dim=-1)
    q = q[:, lk - lq:]  # queries from the last tokens, as the carried frames' attention takes them
    assert not q.is_contiguous()
    out = sa.launch(q, k, v, heads)
    assert out.shape == (rows, lq, channels) and out.is_contiguous()
    assert torch.isfinite(out).all()
    assert _relative(out, _reference(q, k, v, heads)) < 1e-5


@pytest.mark.parametrize("block,warps", [(1, 1), (4, 2), (32, 8)])
def test_every_block_size_covers_every_row(block, warps):
    torch.manual_seed(block)
    q, k, v = (torch.randn(11, 4, 24, device=DEVICE) for _ in range(3))
    out = sa.launch(q, k, v, 3, block=block, num_warps=warps)
    assert _relative(out, _reference(q, k, v, 3)) < 1e-5


def test_the_registered_op_runs_the_kernel_and_its_fake_gives_the_shape():
    op = sa.register()
    torch.manual_seed(0)
    q, k, v = (torch.randn(6, 4, 32, device=DEVICE) for _ in range(3))
    torch.testing.assert_close(sa.short_attention(q, k, v, 4), sa.launch(q, k, v, 4))
    assert op is sa.register()  # defined once per process
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = mode.from_tensor(torch.empty(6, 8, 96))
        out = torch.ops.flamecast.short_attention(fake[:, 4:, :32], fake[:, :, 32:64], fake[:, :, 64:], 4)
    assert out.shape == (6, 4, 32) and out.is_contiguous()


def test_bad_shapes_get_a_clear_error():
    q = torch.randn(2, 4, 30)
    with pytest.raises(ValueError, match="do not split into 4 heads"):
        sa.launch(q, q, q, 4)
    with pytest.raises(ValueError, match="keys and values"):
        sa.launch(q, torch.randn(2, 5, 30), torch.randn(2, 6, 30), 2)
    with pytest.raises(ValueError, match="contiguous channels"):
        sa.launch(q, q, torch.randn(2, 4, 60)[..., ::2], 2)


def test_the_kernel_serves_inference_on_a_gpu_only():
    q = torch.randn(2, 4, 16)
    assert not sa.applies(q, q, q)  # a CPU tensor
    if torch.cuda.is_available():
        g = q.cuda()
        assert sa.applies(g, g, g)
        assert not sa.applies(g, g, g.new_zeros(2, 4, 32)[..., ::2])  # strided channels
        assert not sa.applies(g, g.new_zeros(2, sa.MAX_KEYS + 1, 16), g.new_zeros(2, sa.MAX_KEYS + 1, 16))
    w = torch.randn(2, 4, 16, requires_grad=True, device=DEVICE)
    assert not sa.applies(w, w, w)


@torch.no_grad()
def test_processor_with_the_kernel_equals_sdpa(monkeypatch):
    """The processor's kernel branch (taken on a GPU), here on the CPU through the interpreter."""
    torch.manual_seed(1)
    attn = Attention(32, heads=4, dim_head=8).eval().to(DEVICE)
    x = torch.randn(30, 6, 32, device=DEVICE)
    expected = AttnProcessor2_0()(attn, x)
    proc = ShortSequenceAttnProcessor()
    assert proc.kernel
    monkeypatch.setattr(sa, "applies", lambda q, k, v: True)
    attn.set_processor(proc)
    attn.fuse_projections()
    torch.testing.assert_close(proc(attn, x), expected, atol=1e-5, rtol=1e-5)


class _Projection(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return sa.short_attention(q[:, 2:], k, v, 4)


def attend(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A compiled call's function (module level: a loaded call finds it by name)."""
    return module(x) * 2


@torch.no_grad()
def test_a_compiled_call_holding_the_op_is_written_and_loaded(tmp_path):
    """The op inside a call compiled ahead of time (Inductor; on this CPU C++ around the op),
    written to a file and loaded by a second ``PrecompiledCalls`` without tracing."""
    from flamecast.renderer.flame2video.precompile import PrecompiledCalls

    sa.register()
    torch.manual_seed(0)
    module = _Projection().to(DEVICE).eval()
    x = torch.randn(7, 6, 16, device=DEVICE)
    expected = attend(module, x)
    first = PrecompiledCalls(attend, tmp_path)
    torch.testing.assert_close(first(module, x), expected)
    assert first.stats["compiled"] == 1 and first.stats["saved"] == 1 and first.stats["in_process"] == 0
    again = PrecompiledCalls(attend, tmp_path)
    torch.testing.assert_close(again(module, x), expected)
    assert again.stats["loaded"] == 1 and again.stats["compiled"] == 0
