"""Validation: held-out clips sampled the way serving samples them, PSNR against their frames.

The current weights are exported (fresh copies) into a ``FLAME2VideoPipeline`` and streamed
through ``WindowStream`` in sliding windows, conditioned on the clip's FLAME renderings; the
reference portrait is the clip's first frame of its first view. Each call can write one video
per clip with every view side by side, the sample above the ground truth.

A phase that ends with a sampled validation leaves ``validation.json`` beside its exported
weights (``record_validation``): the result, its videos, and a key of everything sampling read
(the weights files' sizes and times, the settings, dtype and device type, the held-out frames
and renderings). The next phase starts from those files; when its key is the same, its step-0
validation is that result (``reused_validation``) instead of the same sampling run again.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..components import Components
from ..config import Profile
from .data import ClipCache
from .layout import Manifest, file_key, write_atomic, write_video

RECORD = "validation.json"


@dataclass(frozen=True)
class ValidationSettings:
    clips: int = 2  # held-out clips sampled
    frames: int = 16  # frames per clip
    views: int = 4
    window: int = 8
    stride: int = 4
    steps: int = 4
    scheduler: str = "ddim"
    carry_mode: str = "cache"  # as the live and hq profiles
    seed: int = 0


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    mse = float(np.mean((pred.astype(np.float64) - truth.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def held_out_clips(manifest: Manifest):
    """The clips validation draws from: the held-out split, or the training clips without one."""
    return manifest.split("val") or manifest.split("train")


def validation_clips(manifest: Manifest, s: ValidationSettings):
    return [c for c in held_out_clips(manifest) if len(c.views) >= s.views and c.frames >= s.window][: s.clips]


def fit_to_dataset(s: ValidationSettings, manifest: Manifest) -> tuple[ValidationSettings, str | None]:
    """``s`` with its views lowered to the most that the held-out clips have (a phase 1 or 2 run
    with the default ``--views 4`` on single-view data validates its one view), and why no clip
    can be validated, when none can (None when some can)."""
    clips = held_out_clips(manifest)
    most = max((len(c.views) for c in clips), default=0)
    if 0 < most < s.views:
        s = replace(s, views=most)
    if validation_clips(manifest, s):
        return s, None
    if not clips:
        return s, "the dataset has no clips to validate on"
    return s, (f"no held-out clip has {s.window} frames (the longest has {max(c.frames for c in clips)}); "
               "held-out PSNR is not measured, only the losses: add longer held-out clips or lower --window")


def validate(components: Components, root: Path, manifest: Manifest, s: ValidationSettings, *,
             device: torch.device, dtype: torch.dtype = torch.float32, video_prefix: Path | None = None,
             cache: ClipCache | None = None) -> dict:
    """Sample every validation clip; return per-clip and mean PSNR (dB)."""
    from ..pipeline import FLAME2VideoPipeline
    from ..stream import WindowStream

    clips = validation_clips(manifest, s)
    if not clips:
        return {"psnr": None, "clips": {}}
    profile = Profile("validation", model="trained", size=manifest.size, views=s.views, window=s.window,
                      stride=s.stride, steps=s.steps, scheduler=s.scheduler, carry_mode=s.carry_mode,
                      decoder="tiny" if components.tiny_vae is not None else "vae", dtype=str(dtype).split(".")[-1])
    pipe = FLAME2VideoPipeline(components, profile, device=device, dtype=dtype)
    cache = cache or ClipCache(root, manifest.size)
    scores = {}
    for clip in clips:
        frames, renders = cache.get(clip)
        n = min(s.frames, clip.frames) // s.stride * s.stride
        views = list(range(s.views))
        ref = torch.from_numpy(frames[0, 0]).permute(2, 0, 1).float() / 255
        stream = WindowStream(pipe, pipe.prepare_reference(ref), lambda idx: renders[idx][:, views].float(), seed=s.seed)
        done = stream.push(list(range(n)))
        pred = np.stack([views_.numpy() for _, views_ in done])  # (n, V, H, W, 3)
        truth = frames[[i for i, _ in done]][:, views]
        scores[clip.id] = psnr(pred, truth)
        if video_prefix is not None:
            mosaic = np.concatenate([np.concatenate(list(pred.transpose(1, 0, 2, 3, 4)), 2),
                                     np.concatenate(list(truth.transpose(1, 0, 2, 3, 4)), 2)], 1)
            write_video(Path(f"{video_prefix}-{clip.id}.mp4"), mosaic, manifest.fps)
    return {"psnr": float(np.mean(list(scores.values()))), "clips": scores}


def validation_key(weights: Path, root: Path, manifest: Manifest, s: ValidationSettings, *, dtype: torch.dtype,
                   device: torch.device, cache: ClipCache | None = None) -> str:
    """A digest of what ``validate`` reads: the component files under ``weights`` (a flame2video
    weights folder; size, modification and change time), the settings, dtype, device type, and
    the held-out frames and renderings."""
    weights = Path(weights)
    h = hashlib.sha256(json.dumps({"settings": asdict(s), "dtype": str(dtype),
                                   "device": torch.device(device).type}).encode())
    for path in sorted(p for p in weights.rglob("*") if p.is_file() and p.parent != weights):
        h.update(f"{path.relative_to(weights)} {file_key(path)}\n".encode())
    cache = cache or ClipCache(root, manifest.size)
    for clip in validation_clips(manifest, s):
        frames, renders = cache.get(clip)
        h.update(clip.id.encode())
        h.update(frames[: s.frames, : s.views].tobytes())
        h.update(renders[: s.frames, : s.views].numpy().tobytes())
    return h.hexdigest()


def record_validation(weights: Path, key: str, entry: dict, video_prefix: Path, measured: str) -> None:
    """Keep a sampled validation ``entry`` (its videos ``video_prefix-<clip>.mp4``) beside ``weights``."""
    videos = {clip: str(Path(f"{video_prefix}-{clip}.mp4").resolve()) for clip in entry["clips"]}
    record = {"key": key, "measured": measured, "psnr": entry["psnr"], "clips": entry["clips"], "videos": videos}
    write_atomic(Path(weights) / RECORD, json.dumps(record, indent=1).encode())


def reused_validation(weights: Path, key: str, video_prefix: Path) -> dict | None:
    """The validation recorded beside ``weights`` under ``key`` (its videos copied to
    ``video_prefix-<clip>.mp4``), or None."""
    try:
        record = json.loads((Path(weights) / RECORD).read_text())
        if record["key"] != key or not all(Path(v).is_file() for v in record["videos"].values()):
            return None
        for clip, video in record["videos"].items():
            shutil.copyfile(video, f"{video_prefix}-{clip}.mp4")
        return {"psnr": record["psnr"], "clips": record["clips"], "reused": record["measured"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@torch.no_grad()
def autoencoder_psnr(components: Components, root: Path, manifest: Manifest, s: ValidationSettings, *,
                     device: torch.device, cache: ClipCache | None = None) -> dict:
    """PSNR of held-out frames encoded by the VAE (scaled latents) and decoded by the tiny decoder
    (or the VAE when there is none): the decoder path the live profiles use."""
    vae = components.vae.to(device).eval()
    decoder = components.tiny_vae.to(device).eval() if components.tiny_vae is not None else None
    scale = float(vae.config.scaling_factor)
    cache = cache or ClipCache(root, manifest.size)
    scores = {}
    for clip in validation_clips(manifest, s):
        frames = cache.get(clip)[0][: s.frames, : s.views]
        x = torch.from_numpy(frames).flatten(0, 1).permute(0, 3, 1, 2).float().to(device) / 127.5 - 1
        z = vae.encode(x).latent_dist.mode() * scale
        y = decoder.decode(z).sample if decoder is not None else vae.decode(z / scale).sample
        pred = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        scores[clip.id] = psnr(pred, frames.reshape(pred.shape))
    return {"psnr": float(np.mean(list(scores.values()))) if scores else None, "clips": scores}
