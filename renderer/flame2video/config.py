"""Model configurations and sampling profiles of FLAME2Video.

A ``ModelConfig`` holds the constructor arguments of every component (diffusers / transformers
config dicts, so the same dicts are what ``config.json`` files hold). ``sd15_config()`` is the
real size (Stable Diffusion 1.5 UNets, AnimateDiff v2 motion and view modules, the SD VAE,
TAESD, CLIP ViT-L/14 image encoder); ``tiny_config()`` is the same architecture with tiny
widths, which runs on a CPU in seconds and is what the tests use.

A ``Profile`` says how to sample: resolution, views, window W and stride S, steps, scheduler,
decoder, guidance and whether the reference UNet is re-run at every step (the paper baseline).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

# Every name a profile, scheduler, decoder or carry mode can take, defined here once: the
# Literal types are what settings and options validate against, the tuples what code lists.
ProfileName = Literal["tiny", "live", "hq", "paper"]
SchedulerName = Literal["ddim", "lcm", "tcd"]
DecoderName = Literal["vae", "tiny"]
CarryMode = Literal["renoise", "cache"]
PROFILE_NAMES: tuple[str, ...] = get_args(ProfileName)
SCHEDULERS: tuple[str, ...] = get_args(SchedulerName)
DECODERS: tuple[str, ...] = get_args(DecoderName)
CARRY_MODES: tuple[str, ...] = get_args(CarryMode)
# the diffusers scheduler class of each scheduler name
SCHEDULER_CLASSES: dict[str, str] = dict(zip(SCHEDULERS, ("DDIMScheduler", "LCMScheduler", "TCDScheduler")))

# SD1.5's noise schedule with the zero-terminal-SNR / v-prediction / trailing-timestep
# settings that AniPortrait and Moore-AnimateAnyone sample with.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "steps_offset": 1,
    "clip_sample": False,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}


@dataclass(frozen=True)
class ModelConfig:
    """Constructor arguments of every component.

    Attributes:
        unet: ``UNet2DConditionModel`` config (shared by the reference and denoising UNets).
        motion: ``MotionAdapter`` config (the motion module; the view module has the same).
        vae: ``AutoencoderKL`` config.
        tiny_vae: ``AutoencoderTiny`` config.
        image_encoder: ``transformers.CLIPVisionConfig`` arguments.
        flame_encoder: ``FlameEncoder`` config.
        latent_scale: the VAE latent scaling factor.
    """

    name: str
    unet: dict[str, Any]
    motion: dict[str, Any]
    vae: dict[str, Any]
    tiny_vae: dict[str, Any]
    image_encoder: dict[str, Any]
    flame_encoder: dict[str, Any]
    latent_scale: float = 0.18215

    @property
    def latent_factor(self) -> int:
        """Pixels per latent cell (8 for SD)."""
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**data)


def sd15_config() -> ModelConfig:
    """Real sizes: SD1.5 UNet, AnimateDiff v2 modules, SD VAE, TAESD, CLIP ViT-L/14."""
    return ModelConfig(
        name="sd15",
        unet={
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": [320, 640, 1280, 1280],
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            "layers_per_block": 2,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        },
        motion={
            "block_out_channels": [320, 640, 1280, 1280],
            "motion_layers_per_block": 2,
            "motion_num_attention_heads": 8,
            "motion_norm_num_groups": 32,
            "motion_max_seq_length": 32,
            "use_motion_mid_block": True,
        },
        vae={
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2,
            "latent_channels": 4,
            "norm_num_groups": 32,
            "sample_size": 512,
        },
        tiny_vae={},  # AutoencoderTiny's defaults are TAESD's
        image_encoder={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
        },
        flame_encoder={"out_channels": 320, "channels": [3, 16, 32, 64, 128]},
    )


def tiny_config() -> ModelConfig:
    """The same architecture at toy widths: every component runs on a CPU in milliseconds."""
    return ModelConfig(
        name="tiny",
        unet={
            "sample_size": 8,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": [32, 64],
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "layers_per_block": 1,
            "cross_attention_dim": 32,
            "attention_head_dim": 4,
            "norm_num_groups": 8,
        },
        motion={
            "block_out_channels": [32, 64],
            "motion_layers_per_block": 1,
            "motion_num_attention_heads": 2,
            "motion_norm_num_groups": 8,
            "motion_max_seq_length": 32,
            "use_motion_mid_block": True,
        },
        vae={
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [8, 8, 8, 8],
            "layers_per_block": 1,
            "latent_channels": 4,
            "norm_num_groups": 4,
            "sample_size": 64,
        },
        tiny_vae={
            "encoder_block_out_channels": [8, 8, 8, 8],
            "decoder_block_out_channels": [8, 8, 8, 8],
            "num_encoder_blocks": [1, 1, 1, 1],
            "num_decoder_blocks": [1, 1, 1, 1],
        },
        image_encoder={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 32,
        },
        flame_encoder={"out_channels": 32, "channels": [3, 4, 8, 8, 16]},
    )


MODEL_CONFIGS = {"sd15": sd15_config, "tiny": tiny_config}


@dataclass(frozen=True)
class Profile:
    """How to sample.

    Attributes:
        name: profile name.
        model: which ModelConfig ("sd15" or "tiny").
        size: output side in pixels (square).
        views: number of views.
        window: W, frames denoised together.
        stride: S, new frames per window (the first W - S frames carry over).
        steps: denoising steps per window.
        scheduler: "ddim" (trailing spacing), "lcm" or "tcd".
        decoder: "vae" (full SD VAE) or "tiny" (AutoencoderTiny).
        guidance: classifier-free guidance scale (1 = off; > 1 doubles the UNet batch).
        rerun_reference: run the reference UNet at every step (the paper's baseline) instead
            of once per session.
        carry_mode: how the W - S carried frames take part in a window: "renoise" (their final
            latents re-noised to every step's level and run through the UNet with the new
            frames) or "cache" (the UNet runs on the new frames only; the motion modules attend
            over the carried frames' cached inputs from the previous window, temporal.py).
        dtype: "bfloat16" or "float32" on a GPU (CPU always runs float32).
    """

    name: str
    model: str = "sd15"
    size: int = 256
    views: int = 4
    window: int = 8
    stride: int = 4
    steps: int = 4
    scheduler: SchedulerName = "ddim"
    decoder: DecoderName = "tiny"
    guidance: float = 1.0
    rerun_reference: bool = False
    carry_mode: CarryMode = "renoise"
    dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        if not 0 < self.stride <= self.window:
            raise ValueError(f"stride must be in 1..window ({self.window}); got {self.stride}")
        if self.steps < 1:
            raise ValueError("steps must be at least 1")
        if self.views < 1:
            raise ValueError("views must be at least 1")
        for field_name, choices in (("scheduler", SCHEDULERS), ("decoder", DECODERS), ("carry_mode", CARRY_MODES)):
            value = getattr(self, field_name)
            if value not in choices:
                raise ValueError(f"{field_name} must be one of {', '.join(choices)}; got {value!r}")

    @property
    def carry(self) -> int:
        """Frames carried over from one window to the next (W - S)."""
        return self.window - self.stride

    def replace(self, **changes: Any) -> Profile:
        """A copy with ``changes`` applied (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


PROFILES: dict[ProfileName, Profile] = {
    "tiny": Profile("tiny", model="tiny", size=64, views=2, window=4, stride=2, steps=2, decoder="tiny", dtype="float32"),
    "live": Profile("live", size=256, views=4, window=8, stride=4, steps=4, decoder="tiny", carry_mode="cache"),
    "hq": Profile("hq", size=512, views=4, window=8, stride=4, steps=4, decoder="tiny", carry_mode="cache"),
    "paper": Profile(
        "paper", size=512, views=4, window=8, stride=4, steps=25, decoder="vae", guidance=3.5, rerun_reference=True
    ),
}


def get_profile(name: str) -> Profile:
    """The named profile; ValueError listing the choices."""
    try:
        return PROFILES[name]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}") from None
