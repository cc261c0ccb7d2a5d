"""FLAME2Video in training form: the same modules serving runs, with gradients through the
reference attention, the parameters each phase trains, and export to flamecast's weights layout.

The denoising UNet is ``unet.MultiViewUNet`` (diffusers' ``UNetMotionModel`` built from the
2D UNet and the motion module, the view module hooked after each motion module). Reference
attention uses ``attention.RecordProcessor`` / ``ReferenceJoinProcessor`` as serving does, but
the reference keys/values are projected with gradients (serving projects them once, without).
Export splits the motion UNet back into ``denoising_unet`` (its 2D layers) and
``motion_module`` (its ``motion_modules``): the key names are diffusers' own on both sides.

Phases (as the paper trains them; ``vae`` and ``distill`` are flamecast's):

* ``vae``: the SD VAE and the tiny decoder, for data that has no pretrained autoencoder (the
  synthetic pipeline proof); real runs import sd-vae-ft-mse and TAESD instead.
* ``1``: FLAME encoder + reference UNet + the denoising UNet's 2D layers, on single frames of
  one view (W = V = 1).
* ``2``: the motion module, on windows of W frames of one view.
* ``3``: the view module, on windows of W frames of V views; everything else frozen.
* ``distill``: latent consistency distillation of the whole denoising UNet (``distill.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import RecordProcessor, ReferenceJoinProcessor, self_attention_names
from ..components import Components
from ..config import SCHEDULER_CONFIG
from ..unet import MultiViewUNet

PHASES = ("vae", "1", "2", "3", "distill")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def phase_shape(phase: str, window: int, views: int) -> tuple[int, int]:
    """(frames, views) per sample in ``phase``."""
    return {"vae": (1, 1), "1": (1, 1), "2": (window, 1), "3": (window, views), "distill": (window, views)}[phase]


def fresh(module: nn.Module) -> nn.Module:
    """A new module of the same class and config holding a copy of ``module``'s weights (no
    hooks, no swapped attention processors): what export writes and validation samples with."""
    cls = type(module)
    new = cls.from_config(module.config) if hasattr(cls, "from_config") else cls(module.config)
    new.load_state_dict(module.state_dict())
    return new.eval()


class ReferenceBank:
    """Records the hidden states entering the reference UNet's spatial self-attentions."""

    def __init__(self, reference_unet: nn.Module) -> None:
        self.names = self_attention_names(reference_unet)
        self.states: dict[str, torch.Tensor] = {}
        modules = dict(reference_unet.named_modules())
        for name in self.names:
            modules[name].set_processor(RecordProcessor(self.states, name))
        self.unet = reference_unet

    def run(self, latent: torch.Tensor, embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """latent (N, 4, h, w), embeds (N, 1, D): the states, per layer (N, L, C), at t = 0."""
        t = torch.zeros(latent.shape[0], device=latent.device, dtype=torch.long)
        self.states.clear()
        self.unet(latent, t, encoder_hidden_states=embeds)
        return dict(self.states)


class ReferenceJoins:
    """The denoising UNet's self-attentions, joined to the reference states (with gradients)."""

    def __init__(self, denoising: nn.Module, names: list[str]) -> None:
        modules = dict(denoising.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"denoising UNet lacks self-attention layers {missing[:3]}")
        self.joins = []
        for name in names:
            proc = ReferenceJoinProcessor()
            modules[name].set_processor(proc)
            self.joins.append((name, modules[name], proc))

    def set(self, states: dict[str, torch.Tensor], repeats: int) -> None:
        """Project ``states`` with each layer's own to_k/to_v; every sample's keys/values are
        repeated for its ``repeats`` (views x frames) rows of the UNet batch."""
        for name, attn, proc in self.joins:
            s = states[name]
            proc.kv = (attn.to_k(s).repeat_interleave(repeats, 0), attn.to_v(s).repeat_interleave(repeats, 0))


class Denoiser(nn.Module):
    """A MultiViewUNet with its reference joins: the student, the teacher or the EMA target."""

    def __init__(self, unet2d: nn.Module, motion: nn.Module, view: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.unet = MultiViewUNet.build(unet2d, motion, view)
        self.joins = ReferenceJoins(self.unet.unet, names)
        self.unet2d_config = dict(unet2d.config)
        self.motion_config = dict(motion.config)

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, cond: torch.Tensor,
                states: dict[str, torch.Tensor]) -> torch.Tensor:
        """noisy (N, V, 4, F, h, w), t (N,), embeds (N, 1, D), cond (N, V, C, F, h, w)."""
        n, v, _, f = noisy.shape[:4]
        self.joins.set(states, v * f)
        return self.unet(noisy, t.repeat_interleave(v), embeds, condition=cond)

    def split(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """(UNet2DConditionModel, motion MotionAdapter, view MotionAdapter), fresh modules."""
        from diffusers import MotionAdapter, UNet2DConditionModel

        sd = self.unet.unet.state_dict()
        unet2d = UNet2DConditionModel.from_config(self.unet2d_config)
        unet2d.load_state_dict({k: v for k, v in sd.items() if ".motion_modules." not in k})
        motion = MotionAdapter.from_config(self.motion_config)
        motion.load_state_dict({k: v for k, v in sd.items() if ".motion_modules." in k})
        return unet2d.eval(), motion.eval(), fresh(self.unet.view_module)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.unet.enable_gradient_checkpointing()


def zero_init_temporal(adapter: nn.Module) -> int:
    """Zero every motion/view module's output projection (AnimateDiff's initialisation): a new
    module starts as the identity. Returns how many were zeroed."""
    n = 0
    for name, mod in adapter.named_modules():
        if name.endswith("proj_out") and ".motion_modules." in f".{name}" and isinstance(mod, nn.Linear):
            nn.init.zeros_(mod.weight)
            nn.init.zeros_(mod.bias)
            n += 1
    return n


class Flame2VideoTrainingModel(nn.Module):
    """Every FLAME2Video component, wired for training."""

    def __init__(self, components: Components) -> None:
        super().__init__()
        self.reference_unet = components.reference_unet
        self.bank = ReferenceBank(self.reference_unet)
        self.denoiser = Denoiser(components.denoising_unet, components.motion_module, components.view_module,
                                 self.bank.names)
        self.flame_encoder = components.flame_encoder
        self.image_encoder = components.image_encoder
        self.vae = components.vae
        self.tiny_vae = components.tiny_vae
        self.register_buffer("latent_std", torch.ones(()))  # vae phase: running std of raw latents

    def forward(self, batch: Batch, phase: str, *, gen: torch.Generator | None = None, sched=None,
                teacher=None, target=None, drop_image: float = 0.1) -> torch.Tensor:
        """The loss of ``phase`` on ``batch`` (a forward, so that DDP sees every step)."""
        if phase == "vae":
            return vae_loss(self, batch, gen)
        if phase == "distill":
            from .distill import lcd_loss

            return lcd_loss(self, teacher, target, sched, batch, gen)
        return diffusion_loss(self, sched, batch, phase, gen, drop_image)

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    def trainable(self, phase: str) -> list[nn.Parameter]:
        """Turn gradients on for what ``phase`` trains (off for the rest); return those parameters."""
        self.requires_grad_(False)
        chosen: list[nn.Module | tuple] = {
            "vae": [self.vae] + ([self.tiny_vae] if self.tiny_vae is not None else []),
            "1": [self.flame_encoder, self.reference_unet],
            "2": [],
            "3": [self.denoiser.unet.view_module],
            "distill": [self.denoiser.unet],
        }[phase]
        for m in chosen:
            m.requires_grad_(True)
        if phase in ("1", "2"):  # the motion UNet's 2D layers (1) or its motion modules (2)
            for name, p in self.denoiser.unet.unet.named_parameters():
                p.requires_grad_((".motion_modules." in name) == (phase == "2"))
        return [p for p in self.parameters() if p.requires_grad]

    def enable_gradient_checkpointing(self) -> None:
        self.denoiser.enable_gradient_checkpointing()
        self.reference_unet.enable_gradient_checkpointing()

    # ---- encoders (frozen in phases 1-3 and distill) ------------------------------------
    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """images (..., 3, H, W) in [-1, 1] -> scaled latents (..., 4, h, w): drawn from the
        VAE's posterior with ``gen`` (every draw of a step comes from its own generator, so a
        resumed run repeats it), or its mode without."""
        lead = images.shape[:-3]
        dist = self.vae.encode(images.flatten(0, len(lead) - 1)).latent_dist
        z = dist.mode() if gen is None else _draw(dist, gen)
        return (z * self.latent_scale).view(*lead, *z.shape[1:])

    @torch.no_grad()
    def clip_embeds(self, reference: torch.Tensor) -> torch.Tensor:
        """reference (N, 3, H, W) in [0, 1] -> (N, 1, D) CLIP image embeddings (as serving)."""
        side = self.image_encoder.config.image_size
        x = F.interpolate(reference, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        mean = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
        return self.image_encoder(pixel_values=(x - mean) / std).image_embeds[:, None]

    def conditions(self, renders: torch.Tensor) -> torch.Tensor:
        """renders (N, F, V, 3, H, W) in [0, 1] -> FLAME features (N, V, C, F, h, w)."""
        n, f, v = renders.shape[:3]
        feats = self.flame_encoder(renders.flatten(0, 2))
        return feats.view(n, f, v, *feats.shape[1:]).permute(0, 2, 3, 1, 4, 5)

    def reference_states(self, reference: torch.Tensor, embeds: torch.Tensor, grad: bool) -> dict:
        """The reference UNet's recorded states for the reference images (N, 3, H, W) in [0, 1]."""
        latent = self.encode_images(reference * 2 - 1)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return self.bank.run(latent, embeds)

    # ---- export ---------------------------------------------------------------------------
    def export(self) -> Components:
        """Fresh copies of every component, ready for ``save_components`` or a pipeline."""
        unet2d, motion, view = self.denoiser.split()
        vae = fresh(self.vae)
        return Components(reference_unet=fresh(self.reference_unet), denoising_unet=unet2d, motion_module=motion,
                          view_module=view, flame_encoder=fresh(self.flame_encoder),
                          image_encoder=fresh(self.image_encoder), vae=vae,
                          tiny_vae=None if self.tiny_vae is None else fresh(self.tiny_vae))


def noise_scheduler():
    """The training noise schedule: SD1.5's, with zero terminal SNR and v-prediction (what
    flamecast's samplers are configured with, ``config.SCHEDULER_CONFIG``)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULER_CONFIG)


@dataclass
class Batch:
    """A batch on the device: reference (N, 3, H, W) [0, 1], target (N, F, V, 3, H, W) [-1, 1],
    renders (N, F, V, 3, H, W) [0, 1]."""

    reference: torch.Tensor
    target: torch.Tensor
    renders: torch.Tensor

    @classmethod
    def of(cls, item: dict, device) -> Batch:
        return cls(item["reference"].to(device), item["target"].to(device), item["renders"].to(device))


def diffusion_inputs(model: Flame2VideoTrainingModel, batch: Batch, gen: torch.Generator, drop_image: float):
    """Latents (N, V, 4, F, h, w), CLIP embeddings (zeroed with probability ``drop_image``, for
    classifier-free guidance) and the noise for a batch."""
    x0 = model.encode_images(batch.target, gen).permute(0, 2, 3, 1, 4, 5)  # (N, F, V, 4, h, w) -> (N, V, 4, F, h, w)
    embeds = model.clip_embeds(batch.reference)
    keep = (torch.rand(embeds.shape[0], generator=gen, device=gen.device) >= drop_image).to(embeds.device)
    embeds = embeds * keep.view(-1, 1, 1).to(embeds.dtype)
    noise = torch.randn(x0.shape, generator=gen, device=gen.device).to(x0.device)
    return x0, embeds, noise


def diffusion_loss(model: Flame2VideoTrainingModel, sched, batch: Batch, phase: str, gen: torch.Generator,
                   drop_image: float = 0.1) -> torch.Tensor:
    """The v-prediction loss of phases 1-3 at random timesteps."""
    x0, embeds, noise = diffusion_inputs(model, batch, gen, drop_image)
    n = x0.shape[0]
    t = torch.randint(0, sched.config.num_train_timesteps, (n,), generator=gen, device=gen.device).to(x0.device)
    return v_loss(model, sched, batch, phase, x0, embeds, noise, t)


def v_loss(model, sched, batch: Batch, phase: str, x0, embeds, noise, t) -> torch.Tensor:
    shape = (-1,) + (1,) * (x0.ndim - 1)
    a = sched.alphas_cumprod.to(x0.device)[t].view(shape).float()
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
    target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v
    states = model.reference_states(batch.reference, embeds, grad=phase == "1")
    cond = model.conditions(batch.renders)
    out = model.denoiser(noisy, t, embeds, cond, states)
    return F.mse_loss(out.float(), target.float())


def _draw(dist, gen: torch.Generator) -> torch.Tensor:
    """A sample of a diffusers DiagonalGaussianDistribution from ``gen``."""
    eps = torch.randn(dist.mean.shape, generator=gen, device=gen.device).to(dist.mean)
    return dist.mean + dist.std * eps


def vae_loss(model: Flame2VideoTrainingModel, batch: Batch, gen: torch.Generator, kl_weight: float = 1e-6) -> torch.Tensor:
    """Autoencoder phase: SD VAE reconstruction (+ a small KL) and the tiny autoencoder taught
    to encode to, and decode from, the VAE's scaled latents."""
    x = batch.target.flatten(0, 2)
    dist = model.vae.encode(x).latent_dist
    z = _draw(dist, gen)
    recon = model.vae.decode(z).sample
    loss = F.mse_loss(recon.float(), x.float()) + 0.5 * F.l1_loss(recon.float(), x.float())
    loss = loss + kl_weight * dist.kl().mean()
    with torch.no_grad():
        if model.training:  # running std of the latents: 1/std becomes the VAE's scaling factor
            model.latent_std.mul_(0.9).add_(0.1 * dist.mean.float().std())
        scaled = dist.mean.detach() / model.latent_std
    if model.tiny_vae is not None:
        decoded = model.tiny_vae.decode(scaled).sample
        encoded = model.tiny_vae.encode(x).latents
        loss = loss + F.mse_loss(decoded.float(), x.float()) + F.mse_loss(encoded.float(), scaled.float())
    return loss
