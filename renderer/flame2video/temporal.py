"""Carried frames as cached temporal context (the ``cache`` carry mode).

In a sliding window of W frames with stride S, the first K = W - S frames were already
denoised by the previous window. The ``renoise`` mode runs them through the whole UNet again at
every step (their final latents re-noised) so that the new frames' motion modules can attend
to them: half of every step's work for live's W = 8, S = 4, and its output is thrown away.

The ``cache`` mode runs the UNet on the S new frames only. The only layers that look across
frames are the motion modules; each keeps what the carried frames contributed to it when they
were denoised at the same step of the previous window:

* every temporal attention keeps the carried frames' input (after the block's norm) and
  attends from the new frames over [carried, new], with the sinusoidal positions of the
  frames' places in the current window (the carried frames at 0..K-1, the new at K..W-1);
* the motion module's GroupNorm, whose statistics span all frames of the window, keeps the
  carried frames' per-frame mean and variance and combines them with the new frames' own.

For one layer this is exact: the new frames' outputs equal that layer's outputs for the
whole window (tests check it). What differs from ``renoise``: the carried frames' states are
the ones they had on their own denoising trajectory (at the same noise level), not those of
their final latents re-noised with fresh noise, and they no longer see the new frames (a
key/value cache, like causal streaming video models). The first window has no context: it
runs all W frames and records.

Per-session state is the list of per-step contexts that ``TemporalCarry.take`` returns; a
session hands it back for its next window, so sessions sharing one UNet never mix.
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from .attention import FixedBuffers, ShortSequenceAttnProcessor, _qkv

Mode = Literal["off", "record", "use"]
Context = dict[str, tuple[torch.Tensor, ...]]


class TemporalCarry:
    """Mode and per-step context shared by the motion modules' carry layers.

    The layers read each call's context from ``FixedBuffers``: torch.compile treats tensors
    reached through a module as static, and CUDA graphs would be recorded again whenever one
    moved."""

    def __init__(self) -> None:
        self.mode: Mode = "off"
        self.stride = 0
        self.rows = 1
        self.context: Context = {}
        self.recorded: Context = {}
        self._fixed = FixedBuffers()

    def begin(self, stride: int, context: Context | None) -> None:
        """Before a UNet call: record only (``context`` None, a window without a past) or use
        ``context`` and record; ``stride`` new frames per window."""
        self.begin_rows(stride, [context])

    def begin_rows(self, stride: int, contexts: list[Context | None]) -> None:
        """``begin`` for a call that batches several sessions (in the batch's order): all of
        them record only, or all use their own context, which the layers read concatenated."""
        if any(c is None for c in contexts) and not all(c is None for c in contexts):
            raise ValueError("a batched call mixes windows with and without carried context")
        self.stride, self.rows = stride, len(contexts)
        first = contexts[0] or {}
        self.context = {k: tuple(self._fixed.hold_rows((k, i), [c[k][i] for c in contexts])  # type: ignore[index]
                                 for i in range(len(v))) for k, v in first.items()}
        self.mode = "use" if first else "record"
        self.recorded = {}

    def take(self) -> Context:
        """After a UNet call: what the next window needs at this step (copied out of any
        CUDA-graph memory that the next call would overwrite)."""
        return self.take_rows()[0]

    def take_rows(self) -> list[Context]:
        """``take`` for a batched call: one context per session, split along the batch."""
        out: list[Context] = [{} for _ in range(self.rows)]
        for k, v in self.recorded.items():
            parts = [t.chunk(self.rows) for t in v]
            for r in range(self.rows):
                out[r][k] = tuple(p[r].clone() for p in parts)
        self.recorded = {}
        return out

    def end(self) -> None:
        self.mode, self.context, self.recorded = "off", {}, {}


def _positions(pos_embed: nn.Module | None, like: torch.Tensor) -> torch.Tensor | None:
    pe = getattr(pos_embed, "pe", None)
    return None if pe is None else pe.to(like.dtype)


class CarryAttnProcessor(ShortSequenceAttnProcessor):
    """Temporal self-attention that attends over cached carried frames as well."""

    def __init__(self, carry: TemporalCarry, key: str, pos_embed: nn.Module | None) -> None:
        super().__init__()
        self.carry, self.key, self.pos_embed = carry, key, pos_embed

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        c = self.carry
        if c.mode == "off" or encoder_hidden_states is not None:
            return super().__call__(attn, hidden_states, encoder_hidden_states)
        f = hidden_states.shape[1]
        pe = _positions(self.pos_embed, hidden_states)
        z = hidden_states
        if c.mode == "use":
            (ctx,) = c.context[self.key]
            k = ctx.shape[1]
            if pe is not None:  # the block added positions 0..f-1; these frames sit at k..k+f-1
                z = z + (pe[:, k:k + f] - pe[:, :f])
            z = torch.cat([ctx, z], dim=1)
        w, s = z.shape[1], c.stride
        keep = z[:, s:]
        if pe is not None:  # the kept frames move to positions 0..w-s-1 of the next window
            keep = keep + (pe[:, : w - s] - pe[:, s:w])
        c.recorded[self.key] = (keep,)
        query, key, value = _qkv(attn, z)  # queries from the new frames, keys/values from all
        return self.attend(attn, query[:, w - f:], key, value)


class CarryGroupNorm(nn.GroupNorm):
    """The motion module's GroupNorm over (C, F, H, W) with the carried frames' statistics.

    Same parameters and state-dict keys as ``nn.GroupNorm``; with the carry off it is one."""

    carry: TemporalCarry | None = None
    key: str = ""

    @classmethod
    def replacing(cls, norm: nn.GroupNorm, carry: TemporalCarry, key: str) -> CarryGroupNorm:
        new = cls(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine)
        new.load_state_dict(norm.state_dict())
        new.to(device=norm.weight.device if norm.affine else None, dtype=norm.weight.dtype if norm.affine else None)
        new.carry, new.key = carry, key
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.carry
        if c is None or c.mode == "off" or x.ndim != 5:
            return super().forward(x)
        b, ch, f = x.shape[:3]
        g = self.num_groups
        xs = x.float().reshape(b, g, ch // g, f, -1)
        var, mean = torch.var_mean(xs, dim=(2, 4), unbiased=False)  # per frame: (b, g, f)
        if c.mode == "use":
            ctx_mean, ctx_var = c.context[self.key]
            mean, var = torch.cat([ctx_mean, mean], -1), torch.cat([ctx_var, var], -1)
        c.recorded[self.key] = (mean[..., c.stride:], var[..., c.stride:])
        # equal counts per frame: the window's mean and (population) variance
        m = mean.mean(-1)
        v = var.mean(-1) + ((mean - m[..., None]) ** 2).mean(-1)
        y = (xs - m[:, :, None, None, None]) * torch.rsqrt(v + self.eps)[:, :, None, None, None]
        y = y.reshape(x.shape)
        if self.affine:
            shape = (1, ch) + (1,) * (x.ndim - 2)
            y = y * self.weight.float().view(shape) + self.bias.float().view(shape)
        return y.to(x.dtype)


def install_temporal_carry(motion_modules: dict[str, nn.Module], carry: TemporalCarry) -> int:
    """Give every motion module (``name -> AnimateDiffTransformer3D``) carry-aware temporal
    attention and GroupNorm. Returns the number of attention layers changed."""
    n = 0
    for name, module in motion_modules.items():
        norm = getattr(module, "norm", None)
        if isinstance(norm, nn.GroupNorm) and not isinstance(norm, CarryGroupNorm):
            module.norm = CarryGroupNorm.replacing(norm, carry, f"{name}.norm")
        for i, block in enumerate(getattr(module, "transformer_blocks", ())):
            pos = getattr(block, "pos_embed", None)
            for attr in ("attn1", "attn2"):
                attn = getattr(block, attr, None)
                if isinstance(attn, Attention):
                    attn.set_processor(CarryAttnProcessor(carry, f"{name}.{i}.{attr}", pos))
                    n += 1
    return n
