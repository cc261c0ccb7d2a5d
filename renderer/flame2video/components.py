"""The FLAME2Video components: build them at random, save and load flamecast's layout.

flamecast's layout is one folder per component holding ``config.json`` and a
``.safetensors`` file, written by the component's own ``save_pretrained`` (diffusers or
transformers), so each folder is also an ordinary diffusers/transformers model folder::

    <weights>/flame2video/
        reference_unet/   UNet2DConditionModel      (SD1.5 UNet, or AniPortrait's reference_unet)
        denoising_unet/   UNet2DConditionModel      (2D part of the denoising UNet)
        motion_module/    MotionAdapter             (AnimateDiff motion module)
        view_module/      MotionAdapter             (view module; same architecture)
        flame_encoder/    FlameEncoder              (AniPortrait-style pose guider)
        image_encoder/    CLIPVisionModelWithProjection
        vae/              AutoencoderKL             (SD VAE)
        tiny_vae/         AutoencoderTiny           (TAESD)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ModelConfig

COMPONENTS: tuple[str, ...] = (
    "reference_unet",
    "denoising_unet",
    "motion_module",
    "view_module",
    "flame_encoder",
    "image_encoder",
    "vae",
    "tiny_vae",
)


def component_class(name: str) -> type:
    """The class that loads and saves component ``name``."""
    from diffusers import AutoencoderKL, AutoencoderTiny, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPVisionModelWithProjection

    from .flame_encoder import FlameEncoder

    return {
        "reference_unet": UNet2DConditionModel,
        "denoising_unet": UNet2DConditionModel,
        "motion_module": MotionAdapter,
        "view_module": MotionAdapter,
        "flame_encoder": FlameEncoder,
        "image_encoder": CLIPVisionModelWithProjection,
        "vae": AutoencoderKL,
        "tiny_vae": AutoencoderTiny,
    }[name]


@dataclass
class Components:
    """Every FLAME2Video module, as loaded (float32, CPU, eval mode) or built at random."""

    reference_unet: nn.Module
    denoising_unet: nn.Module
    motion_module: nn.Module
    view_module: nn.Module
    flame_encoder: nn.Module
    image_encoder: nn.Module
    vae: nn.Module
    tiny_vae: nn.Module | None

    def items(self) -> list[tuple[str, nn.Module | None]]:
        return [(name, getattr(self, name)) for name in COMPONENTS]


def build_component(name: str, config: ModelConfig) -> nn.Module:
    """One component with fresh (random) weights, from ``config``."""
    cls = component_class(name)
    if name == "image_encoder":
        from transformers import CLIPVisionConfig

        return cls(CLIPVisionConfig(**config.image_encoder))
    args: dict[str, Any] = {
        "reference_unet": config.unet,
        "denoising_unet": config.unet,
        "motion_module": config.motion,
        "view_module": config.motion,
        "flame_encoder": config.flame_encoder,
        "vae": config.vae,
        "tiny_vae": config.tiny_vae,
    }[name]
    return cls(**args)


def random_components(config: ModelConfig, *, seed: int = 0, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> Components:
    """All components with random weights (tests, and benchmarks with --allow-random-weights).

    Built directly on ``device`` in ``dtype`` so that SD-size models initialise in seconds on a
    GPU without a float32 copy.
    """
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            parts = {name: build_component(name, config) for name in COMPONENTS}
    finally:
        torch.set_default_dtype(previous)
    return Components(**{k: v.eval() for k, v in parts.items()})


def component_dir(root: Path, name: str) -> Path:
    return Path(root) / name


def save_components(components: Components, root: Path, names: tuple[str, ...] | None = None) -> list[Path]:
    """Write each component (or those in ``names``) in flamecast's layout under ``root``."""
    written = []
    for name, module in components.items():
        if module is None or (names is not None and name not in names):
            continue
        save_component(module, root, name)
        written.append(component_dir(root, name))
    return written


def save_component(module: nn.Module, root: Path, name: str) -> Path:
    path = component_dir(root, name)
    path.mkdir(parents=True, exist_ok=True)
    module.save_pretrained(str(path), safe_serialization=True)
    return path


def load_component(root: Path, name: str) -> nn.Module:
    """Load one component from flamecast's layout (float32, CPU, eval mode)."""
    cls = component_class(name)
    return cls.from_pretrained(str(component_dir(root, name))).eval()
