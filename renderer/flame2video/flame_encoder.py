"""The FLAME encoder: an AniPortrait-style pose guider over the multi-view FLAME renderings.

A small convolutional net maps each (3, H, W) rendering in [0, 1] to a (C, H/8, W/8) feature
that is added to the denoising UNet's input features (after ``conv_in``). Parameter names
follow AniPortrait's ``PoseGuider`` (``conv_layers.N``, ``final_proj``, ``scale``) so its
``pose_guider.pth`` loads directly; its multi-scale cross-attention branch
(``conv_layers_1..4``, ``cross_attn1..4``) is not part of this encoder and is reported as
unused by the loader.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]


class FlameEncoder(ModelMixin, ConfigMixin):
    """Renderings (N, 3, H, W) in [0, 1] -> features (N, out_channels, H/8, W/8)."""

    @register_to_config
    def __init__(self, out_channels: int = 320, channels: tuple[int, ...] = (3, 16, 32, 64, 128)) -> None:
        super().__init__()
        c = list(channels)
        layers: list[nn.Module] = []
        for i in range(len(c) - 1):
            last = i == len(c) - 2
            layers += _conv_bn_relu(c[i], c[i], 3, 1)
            # three stride-2 4x4 convolutions (to 1/8), then a 3x3 stride-1 one, as AniPortrait
            layers += _conv_bn_relu(c[i], c[i + 1], 3, 1) if last else _conv_bn_relu(c[i], c[i + 1], 4, 2)
        self.conv_layers = nn.Sequential(*layers)
        self.final_proj = nn.Conv2d(c[-1], out_channels, kernel_size=1)
        self.scale = nn.Parameter(torch.ones(1) * 2)

    def forward(self, renders: torch.Tensor) -> torch.Tensor:
        return self.final_proj(self.conv_layers(renders)) * self.scale
