"""The Triton kernel of ``short_attention.py`` (this module imports Triton; that one does not)."""

from __future__ import annotations

from typing import Callable

import triton
import triton.language as tl


def build() -> Callable:
    """A fresh ``triton.jit`` of the kernel: whether Triton interprets it (``TRITON_INTERPRET``,
    the CPU tests) is decided when it is made."""
    return triton.jit(short_attention_kernel)


def short_attention_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, rows,
    sq_b, sq_l, sk_b, sk_l, sv_b, sv_l, so_b, so_l,
    scale,
    LQ: tl.constexpr, LK: tl.constexpr, HEAD_DIM: tl.constexpr,
    LQ_PAD: tl.constexpr, D_PAD: tl.constexpr, BLOCK: tl.constexpr,
):
    """softmax(q kᵀ · scale) v for BLOCK sequences and one head (program ids: head, block of
    sequences): the queries and the output in registers, the keys walked one at a time with an
    online softmax, so every input element is read once."""
    # the heads of a block of sequences are neighbouring programs: they read the same
    # cache lines of the interleaved heads' channels, so a line leaves memory once
    b = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    channel = tl.program_id(0) * HEAD_DIM + tl.arange(0, D_PAD)
    i = tl.arange(0, LQ_PAD)
    b_ok = b < rows
    d_ok = tl.arange(0, D_PAD) < HEAD_DIM
    b64 = b.to(tl.int64)
    q_mask = b_ok[:, None, None] & (i < LQ)[None, :, None] & d_ok[None, None, :]
    q = tl.load(q_ptr + b64[:, None, None] * sq_b + i[None, :, None] * sq_l + channel[None, None, :],
                mask=q_mask, other=0.0).to(tl.float32) * scale
    kv_mask = b_ok[:, None] & d_ok[None, :]
    m = tl.full((BLOCK, LQ_PAD), float("-inf"), tl.float32)
    total = tl.zeros((BLOCK, LQ_PAD), tl.float32)
    acc = tl.zeros((BLOCK, LQ_PAD, D_PAD), tl.float32)
    for j in tl.static_range(LK):
        k = tl.load(k_ptr + b64[:, None] * sk_b + j * sk_l + channel[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_ptr + b64[:, None] * sv_b + j * sv_l + channel[None, :], mask=kv_mask, other=0.0)
        s = tl.sum(q * k.to(tl.float32)[:, None, :], axis=2)
        m_new = tl.maximum(m, s)
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        total = total * alpha + p
        acc = acc * alpha[:, :, None] + p[:, :, None] * v.to(tl.float32)[:, None, :]
        m = m_new
    out = acc / total[:, :, None]
    tl.store(o_ptr + b64[:, None, None] * so_b + i[None, :, None] * so_l + channel[None, None, :],
             out.to(o_ptr.dtype.element_ty), mask=q_mask)
