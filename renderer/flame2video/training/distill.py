"""Latent consistency distillation (LCD, Luo et al. 2023) for the few-step ``live``/``hq`` samplers.

As diffusers' ``train_lcm_distill_sd_wds.py``, on FLAME2Video's windows: the teacher (the
model as phases 1-3 left it) takes one DDIM step over a skip of ``k`` timesteps on the
50-step skeleton that ``LCMScheduler`` samples from (t = 19, 39, ..., 999); the student, at
the noisier timestep, must land where an EMA copy of itself lands from the teacher's result,
both read through the consistency boundary condition (``c_skip``, ``c_out``, the scalings
``LCMScheduler.step`` applies). The student keeps v-prediction, so its weights load into the
same UNet and ``LCMScheduler`` (``scheduler: lcm``) samples it in 4 steps; the DDIM profiles
sample it too. Reference states and FLAME features come from the frozen reference UNet and
FLAME encoder; each network projects the reference keys/values with its own layers.
"""

from __future__ import annotations

import torch

from .models import Batch, Denoiser, Flame2VideoTrainingModel, diffusion_inputs

SKELETON = 50  # LCMScheduler's original_inference_steps
TIMESTEP_SCALING = 10.0
SIGMA_DATA = 0.5


def boundary_scalings(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """c_skip, c_out at integer timesteps ``t`` (LCMScheduler's discrete boundary condition)."""
    s = t.float() * TIMESTEP_SCALING
    c_skip = SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2)
    c_out = s / (s**2 + SIGMA_DATA**2) ** 0.5
    return c_skip, c_out


def x0_eps_from_v(v: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
    """Predicted clean latents and noise from a v-prediction."""
    return alpha * x_t - sigma * v, alpha * v + sigma * x_t


def make_target(denoiser: Denoiser) -> Denoiser:
    """The EMA target network: a copy of the student, frozen (updated by ``ema_update``)."""
    unet2d, motion, view = denoiser.split()
    target = Denoiser(unet2d, motion, view, [name for name, _, _ in denoiser.joins.joins])
    return target.requires_grad_(False)


@torch.no_grad()
def ema_update(target: Denoiser, student: Denoiser, decay: float) -> None:
    for t, s in zip(target.unet.parameters(), student.unet.parameters()):
        t.lerp_(s.detach().to(t.dtype), 1 - decay)


def lcd_loss(model: Flame2VideoTrainingModel, teacher: Denoiser, target: Denoiser, sched, batch: Batch,
             gen: torch.Generator, skip: int = 20, huber_c: float = 0.001) -> torch.Tensor:
    """One LCD step's loss (pseudo-Huber between student and EMA-target consistency outputs)."""
    x0, embeds, noise = diffusion_inputs(model, batch, gen, drop_image=0.0)
    n = x0.shape[0]
    step = sched.config.num_train_timesteps // SKELETON
    index = torch.randint(0, SKELETON, (n,), generator=gen, device=gen.device).to(x0.device)
    t = (index + 1) * step - 1
    t_prev = (t - skip).clamp(min=0)
    ac = sched.alphas_cumprod.to(x0.device)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    a_t, a_p = ac[t].view(shape).float(), ac[t_prev].view(shape).float()
    alpha, sigma = a_t.sqrt(), (1 - a_t).sqrt()
    x_t = alpha * x0 + sigma * noise
    with torch.no_grad():
        states = model.reference_states(batch.reference, embeds, grad=False)
        cond = model.conditions(batch.renders)
    c_skip, c_out = (c.view(shape) for c in boundary_scalings(t))
    v = model.denoiser(x_t, t, embeds, cond, states).float()
    student = c_skip * x_t + c_out * x0_eps_from_v(v, x_t, alpha, sigma)[0]
    with torch.no_grad():
        tx0, teps = x0_eps_from_v(teacher(x_t, t, embeds, cond, states).float(), x_t, alpha, sigma)
        x_prev = a_p.sqrt() * tx0 + (1 - a_p).sqrt() * teps  # DDIM (eta 0) from t to t_prev
        p_skip, p_out = (c.view(shape) for c in boundary_scalings(t_prev))
        pv = target(x_prev, t_prev, embeds, cond, states).float()
        goal = p_skip * x_prev + p_out * x0_eps_from_v(pv, x_prev, a_p.sqrt(), (1 - a_p).sqrt())[0]
    return (torch.sqrt((student - goal) ** 2 + huber_c**2) - huber_c).mean()
