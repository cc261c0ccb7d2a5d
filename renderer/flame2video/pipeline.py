"""FLAME2VideoPipeline: check inputs, encode (portrait, FLAME renderings), prepare latents,
denoise a window, decode.

The pipeline is stateless across sessions: per-session state (the CLIP embedding, the
portrait latent and the reference keys/values) is a ``ReferenceState`` the caller keeps and
passes back; streaming state lives in ``stream.WindowStream``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .attention import ReferenceAttention, ReferenceCache, use_single_token_cross_attention
from .carry import CachedContextCarry, Carry, RenoiseCarry
from .components import Components
from .config import SCHEDULER_CLASSES, SCHEDULER_CONFIG, Profile
from .unet import MultiViewUNet

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _EmptyFp32ListFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("There are modules in") and "should be kept in float32: []." in message)


@contextmanager
def quiet_empty_fp32_warnings():
    """Drop diffusers' warning that a cast model has modules that "should be kept in float32"
    when it has none: diffusers 0.42's ``ModelMixin.to`` logs it at every cast to a dtype, even
    for an empty list, so building one pipeline printed nine untrue warnings. The warning for a
    model that does list such modules still shows."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    quiet = _EmptyFp32ListFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def make_scheduler(name: str):
    """A diffusers scheduler for SD1.5's noise schedule: "ddim" (trailing), "lcm" or "tcd"."""
    import diffusers

    if name not in SCHEDULER_CLASSES:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_CLASSES)}")
    return getattr(diffusers, SCHEDULER_CLASSES[name])(**SCHEDULER_CONFIG)


@contextmanager
def _cudnn_autotuning(on: bool):
    """``torch.backends.cudnn.benchmark`` set to ``on`` inside, what it was after."""
    was = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = was


@dataclass
class StageTimer:
    """Accumulated wall time per stage; synchronises the device around each stage when on."""

    enabled: bool = False
    device: torch.device | None = None
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str):
        """Time a stage; it is also a ``flame2video.<name>`` range in ``torch.profiler`` traces."""
        with torch.profiler.record_function(f"flame2video.{name}"):
            if not self.enabled:
                yield
                return
            self._sync()
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self._sync()
                self.seconds[name] += time.perf_counter() - t0
                self.counts[name] += 1

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {k: {"total_s": v, "calls": self.counts[k], "mean_ms": 1e3 * v / max(1, self.counts[k])}
                for k, v in self.seconds.items()}


@dataclass
class ReferenceState:
    """What a session computes once from its portrait."""

    image_embeds: torch.Tensor  # (1, 1, D) CLIP image embedding for cross-attention
    latent: torch.Tensor  # (1, 4, h, w) portrait latent (scaled)
    cache: ReferenceCache  # reference keys/values per self-attention layer


@dataclass
class WindowJob:
    """One session's window in a (batched) denoising call."""

    cond: torch.Tensor  # (F, V, C, h, w) FLAME features of the frames to denoise
    reference: ReferenceState
    carry: Carry  # the session's carried frames (carry.py)
    generator: torch.Generator | None = None


class FLAME2VideoPipeline:
    """All FLAME2Video modules on one device, sampling windows of one profile."""

    def __init__(self, components: Components, profile: Profile, *,
                 device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> None:
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float32 if self.device.type == "cpu" else getattr(torch, profile.dtype))
        self.profile = profile
        with quiet_empty_fp32_warnings():  # diffusers' casts, here and in from_unet2d
            self._place_modules(components, profile)
        self._schedulers = [make_scheduler(profile.scheduler)]
        self.timer = StageTimer(device=self.device)
        self.reference_runs = 0
        self._model_timesteps: torch.Tensor | None = None  # the schedule on the device, for the UNet
        self._compiled = self._cudagraphs = False
        self._unet_calls = self._decoder_calls = None  # compiled ahead of time (precompile.py)

    def _place_modules(self, components: Components, profile: Profile) -> None:
        """Every module on the device in the pipeline's dtype, eval mode, no gradients."""
        # The UNet with its motion modules is a new model filled from the 2D UNet and the motion
        # module, which are not kept afterwards. Built where they are, on the device, its random
        # initialisation (which their weights then replace) takes a GPU moment instead of the
        # host's 10-20 s for SD1.5's size.
        for m in (components.denoising_unet, components.motion_module, components.view_module):
            m.to(device=self.device, dtype=self.dtype)
        with torch.device(self.device):
            self.unet = MultiViewUNet.build(components.denoising_unet, components.motion_module, components.view_module)
        self.reference_unet = components.reference_unet
        self.reference = ReferenceAttention(self.reference_unet, self.unet.unet)
        for unet in (self.unet.unet, self.reference_unet):  # the CLIP embedding is one token
            use_single_token_cross_attention(unet)
        self.flame_encoder = components.flame_encoder
        self.image_encoder = components.image_encoder
        self.vae = components.vae
        self.decoder = components.tiny_vae if profile.decoder == "tiny" else components.vae
        if self.decoder is None:
            raise ValueError("profile wants the tiny decoder but no tiny_vae is loaded")
        for m in self.modules():  # one .to() per module: each tensor is cast as it moves
            m.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)

    def compile(self, mode: str | None = None, *, backend: str = "inductor", precompiled: str | Path | None = None) -> None:
        """Speed the denoising UNet up: fused QKV projections, cuDNN autotuning, and torch.compile
        (``mode``: None/"default", "reduce-overhead" for CUDA graphs,
        "max-autotune-no-cudagraphs") of the UNet and of the tiny decoder. Compilation happens on
        the first call of each shape: ``FLAME2VideoGenerator.warm_up`` makes those calls before
        any session opens. A ``cache``-mode session's first window (W frames, once per session)
        runs the UNet eagerly instead of costing a graph of its own. ``backend``: torch.compile's
        (tests use Dynamo's "eager", or AOTAutograd's "aot_eager" for calls compiled ahead of
        time: neither generates kernels, both guard and count as Inductor does).

        ``precompiled``: a folder for calls compiled ahead of time (precompile.py): each call
        shape is compiled once and written there, and a later process loads it instead of
        tracing again. Without it the modules are compiled in place and traced in every process."""
        from .attention import fuse_self_attention_projections

        mode = None if mode in (None, "default", True) else mode
        # every call a step of its own for the CUDA-graph trees: each compiled graph is recorded
        # once, as a root, whatever ran before it (another batch size, another session's first
        # window), instead of once per path through the calls
        self._cudagraphs = mode == "reduce-overhead"
        self._compiled = True
        # one graph per batch size and window kind, for each profile of the process
        dynamo = torch._dynamo.config
        for name, at_least in (("recompile_limit", 64), ("accumulated_recompile_limit", 1024)):
            if hasattr(dynamo, name):
                setattr(dynamo, name, max(getattr(dynamo, name), at_least))
        fuse_self_attention_projections(self.unet)  # one QKV matmul instead of three
        torch.backends.cudnn.benchmark = True
        torch._inductor.config.conv_1x1_as_mm = True  # SD1.5's 1x1 proj_in/out convolutions
        if precompiled is not None:
            self._precompile(Path(precompiled), mode, backend)
            return
        # compile the UNetMotionModel in place (its hooks are traced with it); the wrapper that
        # sets the per-call view count and condition stays eager
        self.unet.unet.compile(backend=backend, mode=mode, dynamic=False)
        if self.decoder is not self.vae:  # the tiny decoder runs once per window on fixed shapes
            self.decoder.decoder.compile(backend=backend, mode=mode, dynamic=False)

    def _precompile(self, root: Path, mode: str | None, backend: str) -> None:
        """The UNet's and the tiny decoder's calls compiled ahead of time, in folders named after
        the modules' layouts, the traced code and the compile settings."""
        from . import attention, short_attention, temporal, unet
        from .precompile import PrecompiledCalls, call_module, module_signature, source_digest

        options = dict(torch._inductor.list_mode_options(mode)) if mode else {}
        # with Triton the short attention is one opaque op in the UNet's graph, without it products
        settings = repr((backend, sorted(options.items()), str(self.dtype), short_attention.triton_installed()))

        def folder(module: torch.nn.Module, *sources) -> Path:
            digest = hashlib.sha256(f"{module_signature(module)}|{source_digest(*sources)}|{settings}".encode())
            return root / digest.hexdigest()[:16]

        self._unet_calls = PrecompiledCalls(unet.call_unet, folder(self.unet, unet, attention, temporal),
                                           state=self.unet.call_state, backend=backend, options=options)
        if self.decoder is not self.vae:
            self._decoder_calls = PrecompiledCalls(call_module, folder(self.decoder.decoder, call_module),
                                                   backend=backend, options=options)

    def precompiled_stats(self) -> dict[str, dict[str, float]]:
        """Per precompiled function: files loaded and calls compiled (and written), with seconds."""
        calls = {"unet": self._unet_calls, "decoder": self._decoder_calls}
        return {name: dict(c.stats) for name, c in calls.items() if c is not None}

    @contextmanager
    def _eager_unet(self):
        """Run the UNet's calls eagerly, whichever way it was compiled, and without cuDNN's
        autotuning: an eager window (a session's first) comes in batch sizes warm-up may not have
        run, and autotuning each new convolution shape would stall it, and every session in the
        batch, for seconds."""
        calls, self._unet_calls = self._unet_calls, None
        try:
            with torch.compiler.set_stance("force_eager"), _cudnn_autotuning(False):
                yield
        finally:
            self._unet_calls = calls

    def modules(self) -> list[torch.nn.Module]:
        mods = [self.unet, self.reference_unet, self.flame_encoder, self.image_encoder, self.vae, self.decoder]
        return list({id(m): m for m in mods}.values())

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def latent_side(self) -> int:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if self.profile.size % (8 * factor):
            raise ValueError(f"size {self.profile.size} must be a multiple of {8 * factor}")
        return self.profile.size // factor

    # ---- encode -------------------------------------------------------------------------
    @torch.no_grad()
    def prepare_reference(self, portrait: torch.Tensor) -> ReferenceState:
        """portrait: (3, H, W) float in [0, 1]. Runs the CLIP encoder, the VAE encoder and the
        reference UNet once; returns the session's reference state."""
        if portrait.ndim != 3 or portrait.shape[0] != 3:
            raise ValueError(f"portrait must be (3, H, W); got {tuple(portrait.shape)}")
        x = portrait.to(self.device, self.dtype)[None]
        clip_side = self.image_encoder.config.image_size
        clip_in = F.interpolate(x, size=(clip_side, clip_side), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(CLIP_MEAN, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        embeds = self.image_encoder(pixel_values=(clip_in - mean) / std).image_embeds[:, None]
        side = self.profile.size
        vae_in = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False) * 2 - 1
        latent = self.vae.encode(vae_in).latent_dist.mode() * self.latent_scale
        cache = self.run_reference(latent, embeds)
        return ReferenceState(image_embeds=embeds, latent=latent, cache=cache)

    @torch.no_grad()
    def run_reference(self, latent: torch.Tensor, embeds: torch.Tensor) -> ReferenceCache:
        """The reference UNet on the portrait latent (t = 0); returns the projected K/V cache."""
        self.reference_runs += 1
        t = torch.zeros((), device=self.device, dtype=torch.long)
        self.reference_unet(latent, t, encoder_hidden_states=embeds)
        return self.reference.cache_from_bank()

    @torch.no_grad()
    def encode_conditions(self, renders: torch.Tensor) -> torch.Tensor:
        """renders (F, V, 3, H, W) in [0, 1] -> FLAME features (F, V, C, h, w)."""
        f, v = renders.shape[:2]
        with self.timer.stage("flame_encoder"):
            feats = self.flame_encoder(renders.to(self.device, self.dtype).flatten(0, 1))
        return feats.view(f, v, *feats.shape[1:])

    # ---- denoise ------------------------------------------------------------------------
    def schedulers(self, n: int) -> list:
        """``n`` schedulers of the profile (one per session in a batched call: some keep a
        step index)."""
        while len(self._schedulers) < n:
            self._schedulers.append(make_scheduler(self.profile.scheduler))
        return self._schedulers[:n]

    @property
    def scheduler(self):
        return self.schedulers(1)[0]

    @torch.no_grad()
    def denoise_windows(self, jobs: Sequence[WindowJob]) -> list[torch.Tensor]:
        """Denoise one window of each job's session, the sessions batched through every UNet call.

        Each job's ``cond`` (F, V, C, h, w) holds the FLAME features of the frames its window
        denoises (``carry.window_condition``); all jobs have the same F and the same kind of
        temporal context. Each session keeps its own noise, scheduler state, reference
        keys/values and carried frames, so a batched window equals the session's window run
        alone. Returns each window's final latents (F, V, 4, h, w); ``carry.finish`` says which
        of them are new frames.
        """
        frames = {job.cond.shape[0] for job in jobs}
        if len(frames) != 1:
            raise ValueError(f"a batched call needs windows of one length; got {sorted(frames)}")
        scheds = self.schedulers(len(jobs))
        latents = []
        for job, sched in zip(jobs, scheds):
            # timesteps on the host: the schedulers' arithmetic on them (``alphas_cumprod[t]``,
            # ``t >= 0``) would otherwise wait at every step for the GPU to finish that step's
            # UNet call, and the GPU would then wait for the host to queue the next one
            sched.set_timesteps(self.profile.steps)
            x = torch.randn((job.cond.shape[0], job.cond.shape[1], 4, self.latent_side, self.latent_side),
                            generator=job.generator, device=self.device, dtype=torch.float32)
            latents.append(x * sched.init_noise_sigma)
            job.carry.start(latents[-1], len(sched.timesteps))
        self._activate([job.reference.cache for job in jobs])
        if self._model_timesteps is None:  # the profile's schedule, the same every window
            self._model_timesteps = scheds[0].timesteps.to(self.device)
        try:
            for i, t in enumerate(scheds[0].timesteps):
                latents = self._step(jobs, scheds, latents, i, t, self._model_timesteps[i])
        finally:
            self.unet.temporal.end()
        return latents

    def _step(self, jobs: Sequence[WindowJob], scheds: list, latents: list[torch.Tensor], i: int,
              t: torch.Tensor, t_model: torch.Tensor) -> list[torch.Tensor]:
        """Step ``i``: ``t`` the timestep on the host (for the schedulers), ``t_model`` the same
        on the device (for the UNet and the carried frames' noise)."""
        for job, sched, x in zip(jobs, scheds, latents):
            job.carry.before_step(x, t_model, sched)
        contexts = [job.carry.temporal_context(i) for job in jobs]
        if contexts[0] is not False:
            self.unet.temporal.begin_rows(self.profile.stride, contexts)
        if self.profile.rerun_reference:
            with self.timer.stage("reference_unet"):
                self._activate([self.run_reference(j.reference.latent, j.reference.image_embeds) for j in jobs])
        # a session's first window (cache mode: all W frames, recording the context) runs once per
        # session: eagerly, so that no graph is compiled or captured for it
        eager = self._compiled and contexts[0] is None
        with self.timer.stage("unet"), self._eager_unet() if eager else nullcontext():
            eps = self._model_output_rows(latents, t_model, [j.reference for j in jobs], [j.cond for j in jobs])
        if contexts[0] is not False:
            for job, recorded in zip(jobs, self.unet.temporal.take_rows()):
                job.carry.after_step(i, recorded)
        return [sched.step(e, t, x, generator=job.generator).prev_sample
                for job, sched, e, x in zip(jobs, scheds, eps, latents)]

    def _activate(self, caches: list[ReferenceCache]) -> None:
        self.reference.activate(caches, repeat=2 if self.profile.guidance > 1 else 1)

    @torch.no_grad()
    def denoise(self, cond: torch.Tensor, ref: ReferenceState, carry: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Denoise one window in the ``renoise`` carry mode (``carry.RenoiseCarry``).

        cond: (W, V, C, h, w) FLAME features of the window's frames. carry: (K, V, 4, h, w)
        final latents of the window's first K frames (from the previous window), or None.
        Returns the window's final latents (W, V, 4, h, w); the first K equal ``carry``.
        """
        strategy = RenoiseCarry(cond.shape[0], cond.shape[0] - (0 if carry is None else carry.shape[0]))
        strategy.latents = carry
        (latents,) = self.denoise_windows([WindowJob(cond, ref, strategy, generator)])
        strategy.finish(latents, cond)
        return latents

    @torch.no_grad()
    def denoise_cached(self, cond: torch.Tensor, ref: ReferenceState, context: list | None = None,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, list]:
        """Denoise the frames of ``cond`` (F, V, C, h, w) next to the carried frames' cached
        temporal context (the ``cache`` carry mode, ``carry.CachedContextCarry``).

        ``context`` is what the previous call returned (one entry per step), or None for a
        window without a past: then ``cond`` is the whole window. Returns the frames' final
        latents (F, V, 4, h, w) and the context for the next window.
        """
        strategy = CachedContextCarry(self.profile.window, self.profile.stride)
        strategy.context = context
        (latents,) = self.denoise_windows([WindowJob(cond, ref, strategy, generator)])
        strategy.finish(latents, cond)
        return latents, strategy.context

    def _model_output(self, latents: torch.Tensor, t: torch.Tensor, ref: ReferenceState,
                      cond: torch.Tensor) -> torch.Tensor:
        """The guided model output for one session's window (W, V, 4, h, w)."""
        return self._model_output_rows([latents], t, [ref], [cond])[0]

    def _model_output_rows(self, latents: list[torch.Tensor], t: torch.Tensor, refs: list[ReferenceState],
                           conds: list[torch.Tensor]) -> list[torch.Tensor]:
        # each (W, V, 4, h, w) -> one row (V, 4, W, h, w) of (N, V, 4, W, h, w); with guidance
        # each session is two rows in a row (unconditional, conditional)
        g = self.profile.guidance
        reps = 2 if g > 1 else 1
        x = torch.stack([lat.to(self.dtype).permute(1, 2, 0, 3, 4) for lat in latents for _ in range(reps)])
        c = torch.stack([cond.permute(1, 2, 0, 3, 4) for cond in conds for _ in range(reps)])
        embeds = torch.cat([e for r in refs for e in ((torch.zeros_like(r.image_embeds), r.image_embeds)
                                                       if reps == 2 else (r.image_embeds,))])
        self._mark_step()
        out = self.unet(x, t, embeds, condition=c, calls=self._unet_calls).float()
        if reps == 2:
            out = out[0::2] + g * (out[1::2] - out[0::2])
        return [o.permute(2, 0, 1, 3, 4) for o in out]

    def _mark_step(self) -> None:
        if self._cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()

    # ---- decode -------------------------------------------------------------------------
    @torch.no_grad()
    def decode_rows(self, rows: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each session's latents (F, V, 4, h, w) -> its uint8 views (F, V, H, W, 3) on the CPU.

        One decoder call per session (the shape the decoder was compiled for), and one copy of
        all their views to the host at the end: the host waits for the GPU once per batched
        window, not once per session."""
        with self.timer.stage("decode"):
            views = [self._decode_on_device(x) for x in rows]
            host = torch.cat(views).cpu() if len(views) > 1 else views[0].cpu()
        return list(host.split([v.shape[0] for v in views]))

    def _decode_on_device(self, latents: torch.Tensor) -> torch.Tensor:
        f, v = latents.shape[:2]
        z = latents.flatten(0, 1).to(self.dtype)
        if self.decoder is self.vae:
            z = z / self.latent_scale
        self._mark_step()
        if self._decoder_calls is not None and not (self.decoder.use_slicing or self.decoder.use_tiling):
            images = self._decoder_calls(self.decoder.decoder, z)  # what AutoencoderTiny.decode runs
        else:
            images = self.decoder.decode(z).sample
        # to uint8 at once: a CUDA-graph replay of the next session's decoder call reuses the
        # memory of this one's output
        images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).reshape(f, v, *images.shape[2:], 3)
