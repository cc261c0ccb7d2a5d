"""Where a training run starts from: the components of an existing weights folder, or (only
with ``random_init``) fresh ones; plus the model configurations training can build.

``small`` is a configuration between ``tiny`` (CPU tests) and ``sd15`` (the real size): SD1.5's
architecture at widths that train in minutes on one GPU, for pipeline proofs at 128-256 px.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..components import COMPONENTS, Components, build_component, load_component
from ..config import MODEL_CONFIGS, ModelConfig, sd15_config
from ..weights import flame2video_root, status
from .models import zero_init_temporal


def small_config() -> ModelConfig:
    """SD1.5's layout at a quarter of its widths (about 50M UNet parameters)."""
    base = sd15_config()
    widths = [64, 128, 256, 256]
    return ModelConfig(
        name="small",
        unet={**base.unet, "block_out_channels": widths, "layers_per_block": 1, "cross_attention_dim": 256,
              "attention_head_dim": 8, "sample_size": 32},
        motion={**base.motion, "block_out_channels": widths, "motion_layers_per_block": 1,
                "motion_num_attention_heads": 4},
        vae={**base.vae, "block_out_channels": [32, 64, 128, 128], "layers_per_block": 1, "sample_size": 256},
        tiny_vae={"encoder_block_out_channels": [32, 32, 32, 32], "decoder_block_out_channels": [32, 32, 32, 32]},
        image_encoder={"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                       "num_attention_heads": 4, "image_size": 112, "patch_size": 16, "projection_dim": 256},
        flame_encoder={"out_channels": 64, "channels": [3, 16, 32, 64, 128]},
    )


TRAINING_CONFIGS = {**MODEL_CONFIGS, "small": small_config}


def model_config(name: str) -> ModelConfig:
    if name not in TRAINING_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(TRAINING_CONFIGS)}")
    return TRAINING_CONFIGS[name]()


def initial_components(init: Path | None, *, random_init: bool, model: str, seed: int) -> tuple[Components, list[str]]:
    """Components from the weights folder ``init`` (flamecast's layout, ``<init>/flame2video/``);
    with ``random_init``, those it lacks are built at random from ``model`` (motion and view
    modules start as the identity). Returns them and the names built at random."""
    present = set() if init is None else {r.name for r in status(init) if r.present}
    missing = [n for n in COMPONENTS if n not in present]
    if missing and not random_init:
        where = f"{flame2video_root(init)}" if init is not None else "(no --init weights folder given)"
        raise FileNotFoundError(
            f"the run starts from weights it does not have: {', '.join(missing)} missing under {where}. "
            "Import them (`flamecast weights import ...`, docs/weights.md), pass --init with a trained "
            "folder, or --random-init to build the missing ones at random (pipeline proofs only).")
    config = model_config(model)
    torch.manual_seed(seed)
    parts = {}
    for name in COMPONENTS:
        if name in present:
            parts[name] = load_component(flame2video_root(init), name)
        else:
            parts[name] = build_component(name, config)
            if name in ("motion_module", "view_module"):
                zero_init_temporal(parts[name])
    return Components(**parts), missing
