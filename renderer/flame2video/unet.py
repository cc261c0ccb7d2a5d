"""The denoising UNet: SD1.5's 2D UNet + motion module (attention over frames) + view module
(the same architecture, attention over views), built from diffusers' ``UNetMotionModel`` and
two ``MotionAdapter``s.

diffusers' ``UNetMotionModel`` runs each motion module right after each resnet/attention
layer. The view module is a second ``MotionAdapter`` whose module at the same position runs
right after that motion module (a forward hook), on the same features regrouped so that the
sequence axis is the views instead of the frames. No block is copied or forked; the state-dict
keys of the UNet, the motion module and the view module stay diffusers' own.

The motion modules' temporal attention and GroupNorm can also take the frames a sliding window
carries over from a cache instead of recomputing them (``temporal.py``).

The FLAME encoder's features are added to the output of ``conv_in`` (AnimateAnyone/AniPortrait
add the pose guider's features to the noisy latents' first features the same way).

Layout: ``sample`` is (N, V, C, F, h, w): N the batch (2 with classifier-free guidance), V
views, F frames.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from torch import nn

from .attention import FixedBuffers, ReferenceJoinProcessor, use_short_sequence_attention
from .temporal import TemporalCarry, install_temporal_carry


def motion_module_names(model: nn.Module) -> list[str]:
    """``down_blocks.i.motion_modules.j``, ``mid_block.motion_modules.0``, ``up_blocks.i.motion_modules.j``."""
    names = []
    for name, mod in model.named_modules():
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] == "motion_modules" and parts[-1].isdigit():
            names.append(name)
    return names


def call_unet(unet: nn.Module, sample: torch.Tensor, timestep: torch.Tensor,
              encoder_hidden_states: torch.Tensor) -> torch.Tensor:
    """One call of the UNetMotionModel (the function ``precompile.PrecompiledCalls`` compiles)."""
    return unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


class MultiViewUNet(nn.Module):
    """UNetMotionModel with a view module after every motion module and an additive condition."""

    def __init__(self, unet: UNetMotionModel, view_module: MotionAdapter) -> None:
        super().__init__()
        self.unet = unet
        self.view_module = view_module
        self._views = 1
        self._frames = 1
        self._skip_views = False  # profiling only: run without the view module
        self._condition: torch.Tensor | None = None
        self._fixed = FixedBuffers()
        self._join = None
        views = dict(view_module.named_modules())
        self._pairs = []
        for name in motion_module_names(unet):
            if name not in views:
                raise ValueError(f"view module has no layer {name}; it must have the motion module's layout")
            motion = unet.get_submodule(name)
            motion.register_forward_hook(self._view_hook(views[name]))
            self._pairs.append(name)
        unet.conv_in.register_forward_hook(self._condition_hook)
        # attention over frames and over views: short sequences; over frames it can also take
        # the carried frames from a cache (temporal.py, off unless a window asks for it)
        self.temporal = TemporalCarry()
        install_temporal_carry({name: unet.get_submodule(name) for name in self._pairs}, self.temporal)
        for name in self._pairs:
            use_short_sequence_attention(views[name])

    @classmethod
    def build(cls, unet2d: UNet2DConditionModel, motion: MotionAdapter, view: MotionAdapter) -> MultiViewUNet:
        return cls(UNetMotionModel.from_unet2d(unet2d, motion), view)

    def _view_hook(self, view: nn.Module):
        def hook(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
            v, f = self._views, self._frames
            if v == 1 or self._skip_views:
                return output
            nvf, c, h, w = output.shape
            n = nvf // (v * f)
            x = output.view(n, v, f, c, h, w).transpose(1, 2).reshape(n * f * v, c, h, w)
            x = view(x, num_frames=v)
            return x.view(n, f, v, c, h, w).transpose(1, 2).reshape(nvf, c, h, w)

        return hook

    def _condition_hook(self, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        return output if self._condition is None else output + self._condition

    def call_state(self) -> tuple:
        """What a call's graph depends on besides its arguments' shapes (hashable): the temporal
        carry's mode and context shapes, the condition's shape and the reference keys/values'
        shapes."""
        t = self.temporal
        context = tuple(sorted((k, tuple(tuple(x.shape) for x in v)) for k, v in t.context.items()))
        if self._join is None:  # the processors are installed after the UNet is built
            self._join = next((m.processor for m in self.unet.modules()
                               if isinstance(getattr(m, "processor", None), ReferenceJoinProcessor)), False)
        kv = tuple(tuple(x.shape) for x in self._join.kv) if self._join and self._join.kv is not None else ()
        condition = None if self._condition is None else tuple(self._condition.shape)
        return t.mode, t.stride, t.rows, context, condition, kv, self._views, self._frames, self._skip_views

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                condition: torch.Tensor | None = None, calls: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
        """sample (N, V, C, F, h, w); encoder_hidden_states (N, L, D); condition
        (N, V, C', F, h, w) added after conv_in. Returns the model output, shaped like sample.

        ``calls``: runs ``call_unet``'s call instead of it (the calls compiled ahead of time,
        precompile.py). It is passed per call, not kept: Dynamo saves what the traced code can
        reach from the UNet along with a compiled call, and compiled calls cannot be saved."""
        n, v, c, f, h, w = sample.shape
        self._views, self._frames = v, f
        if condition is not None:
            # the hook reads it from a module attribute: a static input to torch.compile, so it is
            # held at a fixed address (one buffer per shape: each compiled graph keeps its own)
            flat = condition.permute(0, 1, 3, 2, 4, 5).reshape(n * v * f, -1, h, w)
            # in training the condition passes straight through: a held buffer would chain each
            # step's autograd graph to the previous one
            self._condition = flat if torch.is_grad_enabled() else self._fixed.hold(tuple(flat.shape), flat)
        ehs = encoder_hidden_states.repeat_interleave(v * f, dim=0)
        args = (sample.reshape(n * v, c, f, h, w), timestep, ehs)
        try:
            out = (calls or call_unet)(self.unet, *args)
        finally:
            self._condition = None
        return out.view(n, v, c, f, h, w)
