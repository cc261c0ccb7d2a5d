"""Attention over short sequences (a few frames or views per latent pixel) as one Triton kernel.

The motion and view modules attend, for every latent pixel, over W frames or V views: hundreds
of thousands of sequences of 4-16 tokens, 40-160 channels per head. Flash-style kernels (SDPA)
tile 64-128 queries per program and waste most of each tile on them; the same function written
as products and sums (``attention.short_attention_products``) and compiled by Inductor moved
its bytes at 0.3-1.6 TB/s on an H100, this kernel at 2.3-2.5 (``bench/short_attention.py``).
Each program takes a block of sequences and one head, keeps the queries and the output in
registers, and walks the keys one at a time with an online softmax: queries, keys and values
are read once, the output written once.

It reads the queries, keys and values where the fused QKV projection left them (any row and
token strides, channels contiguous), and writes the output as (B, Lq, heads x head_dim), the
layout the output projection takes. Inference only: it has no backward.

``short_attention`` is an opaque custom operator (``flamecast::short_attention``):
``torch.compile`` calls it as it stands, in its graph and its CUDA graphs. (Registered as a
``triton_op``, whose kernel Inductor takes into its own code, it ran about five times slower in a
compiled function than launched directly, on one H100: docs/benchmarks.md.) ``register``
defines it once per process, when the attention processors that use it are made (before a
compiled call that uses it is traced or loaded).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Callable

import torch

MAX_KEYS = 64  # longer sequences take the products (the kernel unrolls its loop over the keys)


@functools.cache
def triton_installed() -> bool:
    """Whether Triton can be imported (looked up once; every attention processor asks)."""
    return importlib.util.find_spec("triton") is not None


def applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the kernel serves these projected queries, keys and values: on a GPU, without
    gradients (it has no backward), channels contiguous, at most ``MAX_KEYS`` keys (Triton must
    be installed; the caller checks that once)."""
    if not q.is_cuda or (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))):
        return False
    return k.shape[1] <= MAX_KEYS and all(t.stride(-1) == 1 for t in (q, k, v))


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def block_rows(lq: int, d_pad: int) -> int:
    """Sequences per program: about 4096 query elements in registers (and as many for the sum)."""
    return max(1, min(64, 4096 // (_next_pow2(lq) * d_pad)))


@functools.cache
def _kernel() -> Callable:
    """The jitted kernel (``short_attention_kernel.py``, which imports Triton), built on first use."""
    from . import short_attention_kernel

    return short_attention_kernel.build()


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> None:
    if q.ndim != 3 or k.shape != v.shape or k.ndim != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"short_attention takes (B, Lq, C) queries over (B, Lk, C) keys and values; "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[2] % heads:
        raise ValueError(f"{q.shape[2]} channels do not split into {heads} heads")
    if any(t.stride(2) != 1 for t in (q, k, v)):
        raise ValueError("short_attention needs contiguous channels")


def launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
           block: int | None = None, num_warps: int = 4) -> torch.Tensor:
    """softmax(q kᵀ / √d) v per head for (B, Lq, C) queries and (B, Lk, C) keys/values whose
    channels are contiguous; returns (B, Lq, C), contiguous. ``block`` (sequences per program,
    a power of 2) and ``num_warps`` override the defaults (for tuning)."""
    _check(q, k, v, heads)
    rows, lq, channels = q.shape
    lk = k.shape[1]
    head_dim = channels // heads
    d_pad = _next_pow2(head_dim)
    block = block or block_rows(lq, d_pad)
    out = torch.empty((rows, lq, channels), dtype=q.dtype, device=q.device)
    grid = (heads, -(-rows // block))
    _kernel()[grid](
        q, k, v, out, rows,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        head_dim ** -0.5,
        LQ=lq, LK=lk, HEAD_DIM=head_dim, LQ_PAD=_next_pow2(lq), D_PAD=d_pad, BLOCK=block,
        num_warps=num_warps,
    )
    return out


@functools.cache
def register() -> Callable[..., torch.Tensor]:
    """Define ``flamecast::short_attention`` (once per process) and return it."""

    @torch.library.custom_op("flamecast::short_attention", mutates_args=())
    def short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        return launch(q, k, v, heads)

    @short_attention.register_fake
    def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        _check(q, k, v, heads)
        return q.new_empty(q.shape)

    return short_attention


def short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """The registered op: (B, Lq, C) queries over (B, Lk, C) keys/values, ``heads`` heads.
    The op is defined by ``register``, eagerly: the processors call it when they are made."""
    return torch.ops.flamecast.short_attention(q, k, v, heads)
