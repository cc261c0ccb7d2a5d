"""Reference attention as swappable diffusers attention processors (no weight changes).

The reference UNet runs on the portrait's latent with ``RecordProcessor`` on every spatial
self-attention: it stores the hidden states entering that attention (AnimateAnyone's "bank").
The denoising UNet's matching self-attentions get ``ReferenceJoinProcessor``: keys and values
of the recorded states are projected once per session with the denoising UNet's own
``to_k``/``to_v`` and concatenated to the frame's own keys and values at every step.

Per-session state lives in a ``ReferenceCache`` (name -> (k, v)); ``activate`` points the
processors at one session's cache before that session's denoising, so several sessions share
one UNet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from . import short_attention


def _qkv(attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query, key and value of a self-attention: one matmul when the projections are fused."""
    if getattr(attn, "fused_projections", False) and hasattr(attn, "to_qkv"):
        return attn.to_qkv(x).chunk(3, dim=-1)
    return attn.to_q(x), attn.to_k(x), attn.to_v(x)


class FixedBuffers:
    """Tensors copied into buffers that keep their addresses from call to call.

    torch.compile treats tensors reached through a module as static inputs, and CUDA graphs are
    recorded again whenever such an address changes; per-call or per-session data therefore
    enter the compiled UNet through these buffers.

    One buffer is kept per key and shape: sessions batched together (several rows) read from
    other buffers than one session alone, and neither moves when the other is used."""

    def __init__(self) -> None:
        self._held: dict = {}

    def _buffer(self, key, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        full = (key, tuple(shape), like.dtype, like.device)
        buf = self._held.get(full)
        if buf is None:
            buf = self._held[full] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def hold(self, key, x: torch.Tensor) -> torch.Tensor:
        buf = self._buffer(key, tuple(x.shape), x)
        buf.copy_(x)
        return buf

    def hold_rows(self, key, parts: list[torch.Tensor]) -> torch.Tensor:
        """``torch.cat(parts)`` (along the first axis) written straight into a held buffer."""
        if len(parts) == 1:
            return self.hold(key, parts[0])
        rows = sum(p.shape[0] for p in parts)
        buf = self._buffer(key, (rows, *parts[0].shape[1:]), parts[0])
        torch.cat(parts, out=buf)
        return buf


def fuse_self_attention_projections(module: nn.Module) -> int:
    """Fuse to_q/to_k/to_v into one linear layer (``Attention.fuse_projections``) for every
    attention under ``module`` whose processor is one of ours; the separate weights stay (the
    reference K/V cache projects with them). Returns how many were fused."""
    n = 0
    for mod in module.modules():
        if isinstance(mod, Attention) and isinstance(mod.processor, (ReferenceJoinProcessor, ShortSequenceAttnProcessor)):
            if not mod.is_cross_attention:
                mod.fuse_projections()
                mod.to_qkv.requires_grad_(False)
                n += 1
    return n


def self_attention_names(unet: nn.Module) -> list[str]:
    """Names of the spatial self-attention modules (``...attentions.N.transformer_blocks.M.attn1``)."""
    return [
        name
        for name, mod in unet.named_modules()
        if isinstance(mod, Attention) and name.endswith("attn1") and ".attentions." in name
    ]


class RecordProcessor:
    """Runs ordinary SDPA attention and records its input hidden states under ``key``."""

    def __init__(self, bank: dict[str, torch.Tensor], key: str) -> None:
        self.bank, self.key, self.inner = bank, key, AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        self.bank[self.key] = hidden_states
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceJoinProcessor:
    """Self-attention whose keys/values also cover the cached reference tokens.

    ``kv`` holds R rows of reference keys/values (one per session in a batched call); the
    batch's entries are R consecutive groups, each attending over its own row."""

    def __init__(self) -> None:
        self.kv: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        query, key, value = _qkv(attn, hidden_states)
        if self.kv is not None:
            ref_k, ref_v = (_rows_over_batch(t, batch) for t in self.kv)
            key = torch.cat([key, ref_k], dim=1)
            value = torch.cat([value, ref_v], dim=1)
        heads = attn.heads
        head_dim = query.shape[-1] // heads
        query, key, value = (t.view(batch, -1, heads, head_dim).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value)
        out = out.transpose(1, 2).reshape(batch, length, heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def _rows_over_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    """(R, L, D) -> (batch, L, D): row r for the r-th of R equal groups of the batch."""
    rows = x.shape[0]
    if rows == 1:
        return x.expand(batch, -1, -1)
    return x.unsqueeze(1).expand(rows, batch // rows, *x.shape[1:]).reshape(batch, *x.shape[1:])


class ShortSequenceAttnProcessor:
    """Self-attention over a short axis (frames or views: a few to a few dozen tokens) written
    as two batched matrix products and a softmax.

    The motion and view modules attend over sequences of W frames or V views for every latent
    pixel: hundreds of thousands of sequences of length 4-16. Flash-style SDPA kernels tile
    64-128 queries and waste most of their work on such sequences; explicit scores are tiny
    (L x L per head) and the products stay memory-bound. Same function as AttnProcessor2_0.

    On a GPU with Triton installed, inference runs one kernel instead (``short_attention.py``):
    it reads the queries, keys and values once, where the fused projection left them.
    """

    def __init__(self) -> None:
        self.kernel = short_attention.triton_installed()
        if self.kernel:  # defined before any compiled call that runs it is traced or loaded
            short_attention.register()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None:
            query, key, value = _qkv(attn, hidden_states)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        return self.attend(attn, query, key, value)

    def attend(self, attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Projected (B, Lq, D) queries over (B, Lk, D) keys/values, then ``attn``'s output layer."""
        if self.kernel and short_attention.applies(query, key, value):
            out = short_attention.short_attention(query, key, value, attn.heads)
        else:
            out = attend_heads(query, key, value, attn.heads)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def attend_heads(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, Lq, C) queries over (B, Lk, C) keys/values in ``heads`` heads, without the kernel:
    broadcast products when compiling, batched matrix products eagerly. Returns (B, Lq, C)."""
    batch, length, _ = query.shape
    head_dim = query.shape[-1] // heads
    q = query.reshape(batch, length, heads, head_dim).transpose(1, 2)
    k = key.view(batch, -1, heads, head_dim).transpose(1, 2)
    v = value.view(batch, -1, heads, head_dim).transpose(1, 2)
    short = short_attention_products if torch.compiler.is_compiling() else short_attention_matmul
    return short(q, k, v).transpose(1, 2).reshape(batch, length, heads * head_dim)


def short_attention_matmul(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √d) v for (..., L, d) tensors as two batched matrix products (eager)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    probs = scores.float().softmax(dim=-1).to(v.dtype)
    return torch.matmul(probs, v)


def short_attention_products(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same as broadcast products summed over the short axes, for torch.compile.

    Batched GEMMs with L = 4-16 run on tiles of 64+ rows and waste most of their work
    (cuBLAS picks misaligned WMMA kernels for them); written as products and sums, Inductor
    fuses scores, softmax and the weighted sum into a few memory-bound kernels that read q, k
    and v once. Never run eagerly: eagerly it would materialise (..., Lq, Lk, d)."""
    scores = (q.float().unsqueeze(-2) * k.float().unsqueeze(-3)).sum(-1) * (q.shape[-1] ** -0.5)
    probs = scores.softmax(dim=-1)
    return (probs.unsqueeze(-1) * v.float().unsqueeze(-3)).sum(-2).to(v.dtype)


def use_short_sequence_attention(module: nn.Module) -> int:
    """Give every attention layer under ``module`` the ShortSequenceAttnProcessor; returns how many."""
    n = 0
    for mod in module.modules():
        if isinstance(mod, Attention):
            mod.set_processor(ShortSequenceAttnProcessor())
            n += 1
    return n


class SingleTokenCrossAttnProcessor(AttnProcessor2_0):
    """Cross-attention whose context is one token (the portrait's CLIP image embedding).

    A softmax over one key is 1 for every query, so the output is that token's value, the same
    for every query: ``to_out(to_v(context))``, broadcast. The query and key projections and the
    attention kernel are skipped; the result is exact. Other inputs (longer contexts, masks,
    spatial or group norms) go through ``AttnProcessor2_0``."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        ctx = encoder_hidden_states
        if (ctx is None or ctx.shape[1] != 1 or attention_mask is not None or hidden_states.ndim != 3
                or attn.spatial_norm is not None or attn.group_norm is not None
                or ctx.shape[0] != hidden_states.shape[0]):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if attn.norm_cross:
            ctx = attn.norm_encoder_hidden_states(ctx)
        out = attn.to_out[1](attn.to_out[0](attn.to_v(ctx))).expand(-1, hidden_states.shape[1], -1)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def use_single_token_cross_attention(module: nn.Module) -> int:
    """Give every cross-attention under ``module`` that still has a stock diffusers processor
    the SingleTokenCrossAttnProcessor; returns how many."""
    n = 0
    for mod in module.modules():
        if isinstance(mod, Attention) and mod.is_cross_attention and type(mod.processor) is AttnProcessor2_0:
            mod.set_processor(SingleTokenCrossAttnProcessor())
            n += 1
    return n


@dataclass
class ReferenceCache:
    """One session's reference keys/values per denoising-UNet self-attention layer."""

    kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.kv.values())


class ReferenceAttention:
    """Installs the processors on a (reference, denoising) UNet pair and moves state between them."""

    def __init__(self, reference_unet: nn.Module, denoising_unet: nn.Module) -> None:
        self.names = self_attention_names(reference_unet)
        dn_names = set(self_attention_names(denoising_unet))
        missing = [n for n in self.names if n not in dn_names]
        if missing:
            raise ValueError(f"denoising UNet lacks self-attention layers {missing[:3]}...")
        self.bank: dict[str, torch.Tensor] = {}
        self._fixed = FixedBuffers()
        ref_modules = dict(reference_unet.named_modules())
        dn_modules = dict(denoising_unet.named_modules())
        self.joins: dict[str, tuple[Attention, ReferenceJoinProcessor]] = {}
        for name in self.names:
            ref_modules[name].set_processor(RecordProcessor(self.bank, name))
            proc = ReferenceJoinProcessor()
            dn_modules[name].set_processor(proc)
            self.joins[name] = (dn_modules[name], proc)

    @torch.no_grad()
    def cache_from_bank(self) -> ReferenceCache:
        """Project the recorded reference states with the denoising UNet's to_k/to_v."""
        cache = ReferenceCache()
        for name, (attn, _) in self.joins.items():
            states = self.bank[name]
            cache.kv[name] = (attn.to_k(states), attn.to_v(states))
        self.bank.clear()
        return cache

    def activate(self, cache: ReferenceCache | None | list[ReferenceCache], repeat: int = 1) -> None:
        """Give every join processor ``cache``'s keys/values (None: plain self-attention); a
        list of caches gives one row per session for a batched call, each repeated ``repeat``
        times (classifier-free guidance runs every session twice).

        They are copied into ``FixedBuffers``, so another session's cache does not move them."""
        caches = cache if isinstance(cache, list) else [cache]
        for name, (_, proc) in self.joins.items():
            if caches[0] is None:
                proc.kv = None
                continue
            proc.kv = tuple(self._fixed.hold_rows((name, i), [c.kv[name][i] for c in caches for _ in range(repeat)])
                            for i in (0, 1))
