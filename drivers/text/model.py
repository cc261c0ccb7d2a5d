"""MotionDM and EmotionDM: MDM-style transformer-encoder diffusion over a clip of frames.

One model family, two instances: MotionDM (12 features a frame: the head's and the jaw's 6D
rotations, as offsets from the identity) and EmotionDM (one feature per expression channel).
The denoiser is MDM's: the noisy frames are projected to the latent width, a condition token
(diffusion-step embedding + projected text embedding) is prepended (and, by default, also added
to every frame token), sinusoidal positions are added (by default of the clip time in seconds over
the motion band, see ``time_positions``), a transformer encoder runs over the sequence and a
linear layer predicts the clean clip (x0). Training: cosine noise schedule over 1000 steps, the simple loss on x0 plus 0.5 x the
velocity loss, the text dropped 10% of the time for classifier-free guidance. Sampling: DDIM
(eta 0) on a strided subset of the 1000 steps with guidance.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn


@dataclass
class DMConfig:
    """Everything needed to rebuild one model; saved in config.json beside its weights."""

    kind: str  # "motion" | "emotion"
    features: int
    text_dim: int = 384
    latent: int = 64
    layers: int = 1
    heads: int = 4
    ff: int = 256
    dropout: float = 0.1
    max_frames: int = 256
    diffusion_steps: int = 1000
    cond_drop: float = 0.1
    velocity_weight: float = 0.5
    smoothing: int = 3
    fps: float = 25.0
    time_head: bool = True  # add a text-chosen mix of the position sinusoids to the output
    broadcast_cond: bool = True  # also add the condition to every frame token (one layer needs it)
    positions: str = "seconds"  # "seconds": sinusoids over the motion band in clip time; "index": MDM's
    text_tokens: int = 0  # also attend to up to this many of the encoder's token states (0: pooled only)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> DMConfig:
        d = {"positions": "index", "broadcast_cond": False, "time_head": False, **d}  # configs from before the option used MDM's positions
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) -> (N, dim) sinusoidal embedding (Transformer positions, diffusion steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    args = positions.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


BAND_HZ = (0.05, 8.0)


def time_positions(frames: int, dim: int, fps: float) -> torch.Tensor:
    """(frames + 1, dim): zeros for the condition token, then sin/cos of the clip time in seconds
    at dim/2 frequencies log-spaced over BAND_HZ, the band head motion lives in. Dense
    frequencies let one layer read out oscillations at any tempo (MDM's index positions spend
    most of 64 channels on periods of hundreds of frames)."""
    freqs = torch.logspace(math.log10(BAND_HZ[0]), math.log10(BAND_HZ[1]), dim // 2)
    t = torch.arange(frames, dtype=torch.float32)[:, None] / fps
    args = 2 * math.pi * t * freqs[None]
    return torch.cat([torch.zeros(1, dim), torch.cat([torch.sin(args), torch.cos(args)], dim=-1)])


class Denoiser(nn.Module):
    """Predicts the clean clip x0 from a noisy clip, its diffusion step and a text embedding."""

    def __init__(self, cfg: DMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.latent
        self.input = nn.Linear(cfg.features, d)
        self.step_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.text = nn.Linear(cfg.text_dim, d)
        if cfg.text_tokens > 0:  # token states: normalised, projected, marked as text by a learned offset
            self.token_norm = nn.LayerNorm(cfg.text_dim)
            self.token_proj = nn.Linear(cfg.text_dim, d)
            self.token_type = nn.Parameter(torch.zeros(d))
        layer = nn.TransformerEncoderLayer(d, cfg.heads, cfg.ff, cfg.dropout, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.output = nn.Linear(d, cfg.features)
        if cfg.time_head:
            self.time_head = nn.Linear(d, cfg.features * d)
            nn.init.zeros_(self.time_head.weight)
            nn.init.zeros_(self.time_head.bias)
        if cfg.positions == "seconds":
            positions = time_positions(cfg.max_frames, d, cfg.fps)
        else:
            positions = sinusoid(torch.arange(cfg.max_frames + 1), d)
        self.register_buffer("positions", positions, persistent=False)

    def forward(self, x: torch.Tensor, step: torch.Tensor, text: torch.Tensor, pad: torch.Tensor | None = None,
                tokens: Tokens | None = None) -> torch.Tensor:
        """x (B, T, F), step (B,), text (B, text_dim; zeros = no text), pad (B, T) True where
        padding, tokens: the caption's token states (with ``text_tokens``; all masked = no text)."""
        b, t, _ = x.shape
        cond = self.step_mlp(sinusoid(step, self.cfg.latent)) + self.text(text)
        frames = self.input(x) + cond[:, None] if self.cfg.broadcast_cond else self.input(x)
        h = torch.cat([cond[:, None], frames], dim=1) + self.positions[: t + 1]
        mask = None
        if pad is not None:
            mask = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device), pad], dim=1)
        if self.cfg.text_tokens > 0:
            tokens = tokens if tokens is not None else Tokens.empty(b, self.cfg.text_dim, x.device)
            words = self.token_proj(self.token_norm(tokens.states)) + self.token_type
            mask = torch.zeros(b, t + 1, dtype=torch.bool, device=x.device) if mask is None else mask
            h, mask = torch.cat([h, words], dim=1), torch.cat([mask, tokens.pad], dim=1)
        h = self.encoder(h, src_key_padding_mask=mask)
        out = self.output(h[:, 1 : t + 1])
        if self.cfg.time_head:  # (B, F, d) coefficients of the (T, d) position sinusoids
            coef = self.time_head(cond).view(b, self.cfg.features, self.cfg.latent)
            out = out + torch.einsum("td,bfd->btf", self.positions[1 : t + 1], coef)
        return out


@dataclass
class Tokens:
    """A batch of token states (B, L, text_dim) with its padding mask (B, L), True = absent."""

    states: torch.Tensor
    pad: torch.Tensor

    @classmethod
    def empty(cls, b: int, dim: int, device: torch.device | str = "cpu") -> Tokens:
        return cls(torch.zeros(b, 1, dim, device=device), torch.ones(b, 1, dtype=torch.bool, device=device))

    @classmethod
    def stack(cls, rows: list, limit: int) -> Tokens:
        """Pads a list of (L_i, dim) arrays, each cut to ``limit`` tokens."""
        rows = [torch.as_tensor(r[:limit], dtype=torch.float32) for r in rows]
        n = max(1, max(len(r) for r in rows))
        states = torch.zeros(len(rows), n, rows[0].shape[-1])
        pad = torch.ones(len(rows), n, dtype=torch.bool)
        for i, r in enumerate(rows):
            states[i, : len(r)], pad[i, : len(r)] = r, False
        return cls(states, pad)

    def to(self, device: torch.device | str) -> Tokens:
        return Tokens(self.states.to(device), self.pad.to(device))

    def dropped(self, keep: torch.Tensor) -> Tokens:
        """Rows where ``keep`` is 0 lose all their tokens (classifier-free guidance's no-text)."""
        return Tokens(self.states, self.pad | (keep.view(-1, 1) == 0))

    def twice(self) -> Tokens:
        """This batch (with text) followed by the same rows without text."""
        return Tokens(torch.cat([self.states, self.states]), torch.cat([self.pad, torch.ones_like(self.pad)]))


def cosine_alphas_cumprod(steps: int, s: float = 0.008) -> torch.Tensor:
    """The cosine schedule (Nichol & Dhariwal 2021), betas capped at 0.999."""
    x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
    f = torch.cos(((x / steps) + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0).float()


class TextDM(nn.Module):
    """A denoiser with its noise schedule, losses and DDIM sampler (one of MotionDM/EmotionDM)."""

    def __init__(self, cfg: DMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.denoiser = Denoiser(cfg)
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(cfg.diffusion_steps), persistent=False)

    # --- training ------------------------------------------------------------------------

    def loss(self, x0: torch.Tensor, text: torch.Tensor, pad: torch.Tensor, generator: torch.Generator | None = None,
             tokens: Tokens | None = None):
        """Simple loss on x0 + velocity_weight x velocity loss, both masked to real frames."""
        b, device = x0.shape[0], x0.device  # random numbers are drawn on the CPU: the same on any device
        step = torch.randint(0, self.cfg.diffusion_steps, (b,), generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        a = self.alphas_cumprod[step].view(b, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        keep = (torch.rand(b, generator=generator) >= self.cfg.cond_drop).float()[:, None].to(device)
        pred = self.denoiser(xt, step, text * keep, pad, tokens.dropped(keep) if tokens is not None else None)
        real = (~pad).float()[..., None]
        simple = ((pred - x0) ** 2 * real).sum() / (real.sum() * x0.shape[-1])
        vreal = real[:, 1:] * real[:, :-1]
        vel = ((pred[:, 1:] - pred[:, :-1]) - (x0[:, 1:] - x0[:, :-1])) ** 2
        velocity = (vel * vreal).sum() / (vreal.sum() * x0.shape[-1]).clamp(min=1)
        return simple + self.cfg.velocity_weight * velocity, {"simple": simple.item(), "velocity": velocity.item()}

    # --- sampling ------------------------------------------------------------------------

    @torch.inference_mode()
    def sample(self, text: torch.Tensor, frames: int, *, steps: int = 20, guidance: float = 2.5,
               generator: torch.Generator | None = None, tokens: Tokens | None = None) -> torch.Tensor:
        """DDIM (eta 0) with classifier-free guidance; returns normalised clips (B, frames, F)."""
        b = text.shape[0]
        x = torch.randn((b, frames, self.cfg.features), generator=generator)
        both = torch.cat([text, torch.zeros_like(text)])
        both_tokens = tokens.twice() if tokens is not None else None
        timesteps = ddim_timesteps(self.cfg.diffusion_steps, steps)
        for i, t in enumerate(timesteps):
            step = torch.full((2 * b,), int(t), dtype=torch.long)
            cond, uncond = self.denoiser(torch.cat([x, x]), step, both, None, both_tokens).chunk(2)
            x0 = uncond + guidance * (cond - uncond)
            if i + 1 == len(timesteps):
                return x0
            a_t, a_prev = self.alphas_cumprod[t], self.alphas_cumprod[timesteps[i + 1]]
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        return x

    # --- feature normalisation -----------------------------------------------------------

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - torch.tensor(self.cfg.mean)) / torch.tensor(self.cfg.std)

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tensor(self.cfg.std) + torch.tensor(self.cfg.mean)


def ddim_timesteps(total: int, steps: int) -> list[int]:
    """``steps`` evenly spaced diffusion steps from total-1 down to 0."""
    steps = max(1, min(steps, total))
    return sorted({int(round(v)) for v in torch.linspace(total - 1, 0, steps).tolist()}, reverse=True)


# --- saving ------------------------------------------------------------------------------

def save_models(folder: Path, models: dict[str, TextDM], meta: dict) -> None:
    """``<kind>.safetensors`` per model plus one config.json with every config and ``meta``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for kind, model in models.items():
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / f"{kind}.safetensors"))
    config = dict(meta, models={kind: asdict(m.cfg) for kind, m in models.items()})
    (folder / "config.json").write_text(json.dumps(config, indent=1))


def load_models(folder: Path) -> tuple[dict[str, TextDM], dict]:
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    models = {}
    for kind, cfg in config["models"].items():
        model = TextDM(DMConfig.from_dict(cfg))
        model.load_state_dict(load_file(str(folder / f"{kind}.safetensors")))
        models[kind] = model.eval()
    return models, config
