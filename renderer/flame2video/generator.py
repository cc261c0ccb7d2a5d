"""The ``flame2video`` generator backend: FLAME frames -> multi-view portrait video.

Each session: decode the portrait (``flamecast.renderer.portrait``), crop it around the face,
compute the CLIP embedding and reference keys/values once, then stream sliding windows: FLAME
renderings of the built-in head from every view (``flamecast.renderer.head`` +
``flamecast.renderer.raster``, grey Lambert) -> FLAME encoder -> few-step denoising -> decoder.

Generator settings (from the worker or ``flamecast bench``): ``device`` ("cpu", "cuda",
"auto"), ``weights_dir`` (else $FLAMECAST_WEIGHTS, else ~/.cache/flamecast/weights),
``allow_random_weights`` (benchmarks only), ``compile`` (a torch.compile mode for the
denoising UNet), ``compile_cache_dir`` (where compiled kernels and calls are kept, compile_cache.py
and precompile.py),
``warm_profiles`` (profiles ``warm_up`` builds and compiles; default the ``live`` profile when
``compile`` is set, none otherwise), ``max_batch`` (sessions per batched UNet call, default 4),
``detect_face`` (default True; False only decodes and centre-crops the portrait, for benchmark
machines without mediapipe).

Several sessions of one profile render together through ``step_sessions``: their windows go
through the UNet in one call, padded to a batch size that ``warm_up`` compiled (1, 2, 4, ...
up to ``max_batch``), so no batch size is compiled while serving.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import Field, ValidationError

from flamecast.plugins import (FlameFrame, Generator, GeneratorOptions, GeneratorSession, GeneratorSessionSpec, OptionsRefused,
                               RenderedFrame, split_spec)
from flamecast.plugins.driver import format_validation_error

from .config import CarryMode, ProfileName, SchedulerName

log = logging.getLogger(__name__)


class FLAME2VideoOptions(GeneratorOptions):
    """Per-session options. ``size`` and ``views`` default to the profile's."""

    profile: ProfileName = Field("live", description="sampling profile (docs/flame2video.md); when not given, "
                                                     "the worker's first warm profile, else live")
    steps: int | None = Field(None, ge=1, le=50, description="denoising steps (default: the profile's)")
    window: int | None = Field(None, ge=1, le=24, description="W: frames denoised together")
    stride: int | None = Field(None, ge=1, le=24, description="S: new frames per window (<= W)")
    scheduler: SchedulerName | None = Field(None, description="few-step scheduler")
    carry_mode: CarryMode | None = Field(
        None, description="how carried frames join a window: re-noised and recomputed, or cached context")
    seed: int = Field(0, description="noise seed")


def resolve_profile(options: FLAME2VideoOptions):
    """The Profile a session samples with: the named profile with the options' overrides."""
    from .config import get_profile

    base = get_profile(options.profile)
    views = len(options.views) if options.views else None
    size = options.size if "size" in options.model_fields_set else None
    return base.replace(size=size, views=views, steps=options.steps, window=options.window,
                        stride=options.stride, scheduler=options.scheduler, carry_mode=options.carry_mode)


def warm_options(spec: str) -> FLAME2VideoOptions:
    """A ``warm_profiles`` entry as session options: a profile name, with option overrides after
    colons if sessions will ask for them (``"live"``, ``"hq:steps=2:size=384"``)."""
    try:
        name, overrides = split_spec(spec)
    except ValueError as exc:
        raise ValueError(f"warm profile {exc}") from None
    try:
        return FLAME2VideoOptions.model_validate_strings({**overrides, "profile": name})
    except ValidationError as exc:
        raise ValueError(f"warm profile {spec!r}: {format_validation_error(exc)}") from None


def portrait_tensor(data: bytes | None, *, detect_face: bool = True):
    """Decode a portrait and crop a square around its face: (3, S, S) float in [0, 1].

    With ``detect_face`` False (benchmarks on machines without mediapipe) the image is only
    decoded and its centre square taken.
    """
    import torch

    from flamecast.renderer import portrait as portraits

    if detect_face:
        p = portraits.load_portrait(data)
        img, box = p.image, _face_box(p.landmarks)
    else:
        img = portraits.default_portrait_image() if data is None else portraits.decode_image(data)
        side = min(img.shape[:2])
        box = ((img.shape[1] - side) // 2, (img.shape[0] - side) // 2, side)
    crop = _crop(img, *box)
    # converted on the NumPy side: a new, writable array (the default portrait's pixels are read-only)
    return torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32)).permute(2, 0, 1) / 255.0


def _face_box(landmarks: np.ndarray) -> tuple[int, int, int]:
    """A square twice the face's extent (hair, neck and margin), centred on the face."""
    lo, hi = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    center, half = (lo + hi) / 2, float(max(hi - lo))
    return int(round(center[0] - half)), int(round(center[1] - half)), int(round(2 * half))


def _crop(img: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        img = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        x0, y0 = x0 + pad, y0 + pad
    return img[y0:y0 + side, x0:x0 + side]


class FlameConditioner:
    """FlameFrames -> grey Lambert renderings of the built-in head, (n, V, 3, H, W) in [0, 1]."""

    def __init__(self, views: Sequence[Any], size: int, device) -> None:
        from flamecast.renderer.head import load_head
        from flamecast.renderer.raster import make_cameras

        self.device = device
        self.head = load_head("builtin").to(device)
        self.cameras = make_cameras(views, self.head.center.detach().cpu(), float(self.head.radius), size, device=device)
        self.view_ids = tuple(self.cameras.view_ids) if hasattr(self.cameras, "view_ids") else None

    def __call__(self, frames: Sequence[FlameFrame]):
        import torch

        from flamecast.renderer.raster import render_views

        n_expr = self.head.n_expression
        pose = torch.from_numpy(np.stack([f.pose for f in frames])).to(self.device)
        expr = np.zeros((len(frames), n_expr), np.float32)
        for i, f in enumerate(frames):
            k = min(n_expr, f.expression.shape[0])
            expr[i, :k] = f.expression[:k]
        kwargs = {}
        if all(f.eyelids is not None for f in frames):
            kwargs["eyelids"] = torch.from_numpy(np.stack([f.eyelids for f in frames])).to(self.device)
        if all(f.translation is not None for f in frames):
            kwargs["translation"] = torch.from_numpy(np.stack([f.translation for f in frames])).to(self.device)
        with torch.no_grad():
            out = self.head(pose=pose, expression=torch.from_numpy(expr).to(self.device), **kwargs)
            img = render_views(out.vertices, self.head.faces, self.cameras, mode="lambert")
        return img.permute(0, 1, 4, 2, 3).float()


class FLAME2VideoSession(GeneratorSession):
    """One portrait's streaming state; ``step`` returns S frames each time a window completes."""

    def __init__(self, stream, view_ids: tuple[str, ...], on_close: Any = None) -> None:
        self.stream, self.view_ids = stream, view_ids
        self._on_close = on_close

    def step(self, frames: Sequence[FlameFrame]) -> list[RenderedFrame]:
        t0 = time.perf_counter_ns()
        done = self.stream.push(list(frames))
        dt = time.perf_counter_ns() - t0
        return [RenderedFrame(source=f, views=views.numpy(), view_ids=self.view_ids, render_ns=dt // max(1, len(done)))
                for f, views in done]

    def stage_times(self) -> dict[str, Any]:
        """Accumulated per-stage wall times (rasterize, flame_encoder, unet, decode, ...)."""
        return self.stream.pipeline.timer.as_dict()

    def enable_stage_timing(self, on: bool = True) -> None:
        """Time each stage (synchronising the GPU around each: costs a little overlap)."""
        timer = self.stream.pipeline.timer
        timer.enabled = on
        timer.seconds.clear()
        timer.counts.clear()

    def describe(self) -> dict[str, Any]:
        import dataclasses

        p = self.stream.pipeline
        return {**dataclasses.asdict(p.profile), "dtype": str(p.dtype), "device": str(p.device),
                "reference_runs": p.reference_runs, "windows": self.stream.windows}

    def close(self) -> None:
        if self.stream is not None and self._on_close is not None:
            self._on_close()
        self.stream = None


def batch_sizes(max_batch: int) -> tuple[int, ...]:
    """The batch sizes a batched UNet call is padded to: powers of two below ``max_batch``, and it."""
    sizes = [1]
    while sizes[-1] * 2 < max_batch:
        sizes.append(sizes[-1] * 2)
    return tuple(sorted(set(sizes) | {max(1, max_batch)}))


def warm_frames(n: int, n_expression: int, start: int = 0) -> list[FlameFrame]:
    """Driving frames for warm-up: a small head turn and jaw motion."""
    out = []
    for i in range(start, start + n):
        pose = np.zeros(15, np.float32)
        pose[1], pose[6] = 0.2 * np.sin(i / 5), 0.1 * (1 + np.sin(i / 3))
        out.append(FlameFrame(session_id="warm-up", seq=i, capture_ns=0, pose=pose,
                              expression=np.zeros(n_expression, np.float32)))
    return out


def random_frames(rng: np.random.Generator, n: int, n_expression: int, start: int = 0,
                  extras: bool = False) -> list[FlameFrame]:
    """``n`` random driving frames from ``start`` (checks and benchmarks: motion unlike warm-up's):
    pose and expression, and with ``extras`` eyelids and translation, as a webcam or a plugin
    may send them."""
    return [FlameFrame(session_id="random", seq=start + i, capture_ns=0,
                       pose=rng.normal(0, 0.2, 15).astype(np.float32),
                       expression=rng.normal(0, 1, n_expression).astype(np.float32),
                       eyelids=rng.uniform(0, 1, 2).astype(np.float32) if extras else None,
                       translation=rng.normal(0, 0.01, 3).astype(np.float32) if extras else None)
            for i in range(n)]


def without_bytecode(*modules) -> list[str]:
    """The names of ``modules`` whose source has no byte-code where Python looks for it (next to
    it, or under ``PYTHONPYCACHEPREFIX``): each process compiles such a package's sources again
    as it imports them."""
    import importlib.util
    import os

    missing = []
    for module in modules:
        source = getattr(module, "__file__", None)
        if source and source.endswith(".py") and not os.path.exists(importlib.util.cache_from_source(source)):
            missing.append(module.__name__)
    return missing


def _warn_without_bytecode(*modules) -> None:
    missing = without_bytecode(*modules)
    if missing:
        log.warning("%s %s no byte-code (a read-only environment, or PYTHONDONTWRITEBYTECODE set): every start "
                    "compiles their sources again, seconds of the time to ready; compile it once (docs/generator.md, "
                    "'Byte-code')", ", ".join(missing), "has" if len(missing) == 1 else "have")


class _PartClock:
    """Seconds between laps, written into ``parts`` (the device's queued work included)."""

    def __init__(self, parts: dict[str, float]) -> None:
        self.parts, self.t = parts, time.perf_counter()

    def lap(self, name: str, device=None) -> None:
        if device is not None and device.type == "cuda":
            import torch

            torch.cuda.synchronize(device)
        now = time.perf_counter()
        self.parts[name] = round(now - self.t, 3)
        self.t = now


class FLAME2VideoGenerator(Generator):
    name = "flame2video"
    description = "FLAME2Video (MVPortrait): diffusion UNet with motion + view attention, streamed in sliding windows"
    Options = FLAME2VideoOptions

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        super().__init__(settings)
        self._pipelines: dict[Any, Any] = {}
        self._warm: dict[Any, str] = {}  # the profiles warm-up built (and compiled): their warm_profiles entry
        self._users: dict[Any, int] = {}  # open sessions per profile
        self._lock = threading.Lock()
        self._conditioning = None  # ConditioningStage, on a GPU
        # FlameConditioner per (views, size, device) and the open sessions using it: sessions
        # that share one have their frames drawn together (conditioning.draw_together)
        self._conditioners: dict[tuple, list] = {}
        self.draw_ahead = True  # False: FLAME renderings drawn in line, between windows (benchmarks)
        self.warm_counts = None  # CompileCounts after warm_up (compiled runs)
        self.warm_up_s: float | None = None
        self.cache_folder: Path | None = None  # where compiled kernels and calls are kept (compiled runs)
        self.warm_up_parts: dict[str, dict[str, float]] = {}  # per profile: where warm-up went (seconds)
        # per profile: where building its pipeline went (imports, the CUDA context, loading or
        # making the models, the pipeline around them, setting compilation up), in seconds
        self.build_parts: dict[str, dict[str, float]] = {}

    @property
    def max_batch(self) -> int:
        return max(1, int(self.settings.max_batch))

    @property
    def device(self):
        import torch

        dev = self.settings.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(dev)

    def _components(self, profile):
        from .components import random_components
        from .config import MODEL_CONFIGS
        from .weights import MissingWeightsError, load_components, weights_root

        root = weights_root(self.settings.weights_dir)
        try:
            return load_components(root, profile)
        except MissingWeightsError:
            if not self.settings.allow_random_weights:
                raise
            log.warning("FLAME2Video runs with RANDOM weights (allow_random_weights): output is noise")
            import torch

            dtype = torch.float32 if self.device.type == "cpu" else getattr(torch, profile.dtype)
            return random_components(MODEL_CONFIGS[profile.model](), device=self.device, dtype=dtype)

    def pipeline(self, profile):
        """The pipeline for ``profile`` (built once, shared by sessions of that profile). An
        uncompiled generator first lets go of the pipelines that no session uses and warm-up did
        not build, so that sessions asking for other settings, one after another, do not pile
        up models in memory."""
        with self._lock:
            pipe = self._pipelines.get(profile)
            if pipe is None:
                if not self.settings.compile:
                    for idle in [p for p in self._pipelines if not self._users.get(p) and p not in self._warm]:
                        del self._pipelines[idle]
                pipe = self._pipelines[profile] = self._build(profile)
            return pipe

    def _build(self, profile):
        """Build (and set compilation up for) ``profile``'s pipeline; ``build_parts`` gets where
        the time went."""
        clock = _PartClock(self.build_parts.setdefault(profile.name, {}))
        import diffusers  # the first build imports diffusers and transformers
        import torch

        from .pipeline import FLAME2VideoPipeline

        clock.lap("imports")
        _warn_without_bytecode(torch, diffusers)
        if self.device.type == "cuda":  # the CUDA context, on its own
            torch.empty(1, device=self.device)
        clock.lap("device", self.device)
        components = self._components(profile)
        clock.lap("models", self.device)
        pipe = FLAME2VideoPipeline(components, profile, device=self.device)
        clock.lap("pipeline", self.device)
        if self.settings.compile:
            from .compile_cache import CompileCounts, use_compile_cache

            folder = self.cache_folder = use_compile_cache(self.settings.compile_cache_dir)
            CompileCounts.now()  # counts CUDA-graph recordings from here on
            pipe.compile(self.settings.compile, precompiled=folder / "precompiled")
            clock.lap("compile_setup", self.device)
        return pipe

    # ---- ready before the first session -------------------------------------------------
    def warm_profiles(self) -> tuple[str, ...]:
        names = self.settings.warm_profiles
        if names is None:
            names = ("live",) if self.settings.compile else ()
        return tuple(n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip())

    def warm_up(self, batches: Sequence[int] | None = None) -> None:
        """Build the pipelines of ``warm_profiles`` and run every compiled shape once (windows
        batched 1, 2, 4, ... up to ``max_batch`` sessions, after each session's first window,
        which runs eagerly), so that compilation and CUDA-graph capture happen here, before the
        worker reports ready, and never on a session's window. Does nothing without
        ``warm_profiles`` or ``compile``. ``batches``: only these of the batch sizes (processes
        that each compile a part of the cache, ``flamecast generator --prepare --jobs``)."""
        sizes = self.warm_batches(batches)
        t0 = time.perf_counter()
        for spec in self.warm_profiles():
            self.warm_up_profile(warm_options(spec), spec, sizes)
        if self.settings.compile:
            from .compile_cache import CompileCounts

            self.warm_counts = CompileCounts.now()
        self.warm_up_s = time.perf_counter() - t0

    def warm_batches(self, batches: Sequence[int] | None = None) -> tuple[int, ...]:
        """The batch sizes warm-up runs: ``batches`` (each one this generator pads to, else a
        ValueError naming those), or all of them."""
        sizes = batch_sizes(self.max_batch)
        if batches is None:
            return sizes
        wrong = sorted(set(batches) - set(sizes))
        if wrong or not batches:
            raise ValueError(f"batch size(s) {', '.join(map(str, wrong)) or 'none'} not served: with max_batch "
                             f"{self.max_batch} windows are batched {', '.join(map(str, sizes))} at a time")
        return tuple(sorted(set(batches)))

    def warm_up_profile(self, options: FLAME2VideoOptions, spec: str | None = None,
                        sizes: Sequence[int] | None = None) -> None:
        """Run the windows of sessions with ``options`` in every batch size this generator uses
        (or ``sizes`` of them); ``warm_up_parts[profile]`` says where the time went: ``build``
        (loading the models), ``open`` (a session's portrait and reference pass),
        ``first_windows`` (its first window; the other warm-up sessions start from its state) and
        ``batch_N`` (compiling, capturing and running the windows of N sessions). ``spec``: the
        ``warm_profiles`` entry the options came from (``warm_options``)."""
        sizes = self.warm_batches(sizes)
        profile = resolve_profile(options)
        parts = self.warm_up_parts.setdefault(spec or profile.name, {})
        clock = _PartClock(parts)
        pipe = self.pipeline(profile)
        self._warm[profile] = spec or profile.name
        clock.lap("build")
        log.info("warming up flame2video profile %s (batch sizes %s)", profile.name, sizes)
        first = self._open(GeneratorSessionSpec("warm-up", None, options), detect_face=False)
        clock.lap("open", pipe.device)
        n_expr, seq = self.head.n_expression, 0
        # one first window (eager in cache mode: nothing of it is compiled); the other warm-up
        # sessions start from its state, since what warm-up needs is every compiled shape run,
        # not other portraits
        self.step_sessions([(first, warm_frames(profile.stride, n_expr))])
        sessions = [first] + [self._twin(first, seed) for seed in range(1, max(sizes))]
        clock.lap("first_windows", pipe.device)
        for size in sizes:
            for _ in range(3):  # warm-up run, CUDA-graph recording, a replay
                seq += profile.stride
                self.step_sessions([(s, warm_frames(profile.stride, n_expr, seq)) for s in sessions[:size]])
            clock.lap(f"batch_{size}", pipe.device)
        for session in sessions:
            session.close()

    def compile_report(self) -> dict[str, Any]:
        """Compilations and CUDA-graph recordings since ``warm_up`` (all zero in a healthy
        service), with the counts at warm-up, where warm-up went and the process's compile time
        per phase (``compile_cache.compile_phases``) and, per profile, the compiled calls loaded
        from the cache or compiled and written to it (``precompiled``) and the cache's folder
        (``cache_folder``); empty when nothing is compiled."""
        if self.warm_counts is None:
            return {}
        from .compile_cache import CompileCounts, compile_phases

        since = CompileCounts.now() - self.warm_counts
        return {"at_warm_up": self.warm_counts.as_dict(), "since_warm_up": since.as_dict(),
                "recompiles": since.graphs, "cudagraph_rerecords": since.cudagraph_recordings,
                "warm_up_s": self.warm_up_s, "warm_up_parts": self.warm_up_parts, "build_parts": self.build_parts,
                "compile_phases_s": compile_phases(), "cache_folder": str(self.cache_folder),
                "precompiled": {name: self._pipelines[p].precompiled_stats() for p, name in self._warm.items()
                                if p in self._pipelines}}

    # ---- sessions -------------------------------------------------------------------------
    def open_session(self, spec: GeneratorSessionSpec) -> FLAME2VideoSession:
        return self._open(spec, detect_face=self.settings.detect_face)

    def _open(self, spec: GeneratorSessionSpec, *, detect_face: bool) -> FLAME2VideoSession:
        from flamecast.renderer.raster import DEFAULT_VIEWS

        options = spec.options if isinstance(spec.options, FLAME2VideoOptions) else FLAME2VideoOptions.model_validate(
            spec.options.model_dump() if hasattr(spec.options, "model_dump") else dict(spec.options or {}))
        options = self.session_options(options)
        profile = resolve_profile(options)
        self._check_served(profile)
        pipe = self.pipeline(profile)  # first: missing weights are reported before any portrait work
        portrait = portrait_tensor(spec.portrait, detect_face=detect_face)
        views = options.views or tuple(v.id for v in DEFAULT_VIEWS[: profile.views])
        if len(views) != profile.views:
            raise ValueError(f"profile {profile.name} renders {profile.views} views; give that many view ids")
        return self._session(pipe, pipe.prepare_reference(portrait), tuple(views), options.seed)

    def session_options(self, options: FLAME2VideoOptions) -> FLAME2VideoOptions:
        """A session that names no profile gets the worker's first ``warm_profiles`` entry, with
        that entry's overrides (``live:steps=1``) and the session's own options on top: what the
        worker was started to serve, not a profile it would refuse. Without warm profiles, or
        with a profile named, the options stay as they are."""
        warm = self.warm_profiles()
        if "profile" in options.model_fields_set or not warm:
            return options
        return warm_options(warm[0]).model_copy(update={k: getattr(options, k) for k in options.model_fields_set})

    def _session(self, pipe, reference, views: tuple[str, ...], seed: int) -> FLAME2VideoSession:
        """A session streaming ``reference`` (a portrait's, prepared) from ``views``."""
        from .stream import WindowStream

        key = (views, pipe.profile.size, str(pipe.device))
        conditioner = self._conditioner(key)
        try:
            stream = WindowStream(pipe, reference, conditioner, seed=seed, stage=self._stage(pipe.device))
        except BaseException:
            self._release_conditioner(key)
            raise
        self._count_user(pipe.profile, 1)

        def closed() -> None:
            self._count_user(pipe.profile, -1)
            self._release_conditioner(key)

        return FLAME2VideoSession(stream, views, on_close=closed)

    def _twin(self, session: FLAME2VideoSession, seed: int) -> FLAME2VideoSession:
        """A session in ``session``'s state after its windows so far: its portrait's reference
        and its carried frames, without a portrait or a first window of its own (warm-up)."""
        twin = self._session(session.stream.pipeline, session.stream.reference, session.view_ids, seed)
        # a carry's tensors are replaced by each window, never written into: sharing them is safe
        twin.stream.carry = copy.copy(session.stream.carry)
        twin.stream.windows = session.stream.windows
        return twin

    def _count_user(self, profile, n: int) -> None:
        with self._lock:
            self._users[profile] = self._users.get(profile, 0) + n

    def _conditioner(self, key: tuple) -> FlameConditioner:
        """The conditioner for (views, size, device), shared by the open sessions that use it."""
        with self._lock:
            entry = self._conditioners.get(key)
            if entry is None:
                entry = self._conditioners[key] = [FlameConditioner(list(key[0]), key[1], key[2]), 0]
            entry[1] += 1
            return entry[0]

    def _release_conditioner(self, key: tuple) -> None:
        with self._lock:
            entry = self._conditioners.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._conditioners[key]

    def _check_served(self, profile) -> None:
        """A worker that compiled its profiles at start serves those, as they were compiled: a
        session with another profile, or with options that change one (window, stride, steps,
        size, view count, ...), would compile new graphs on the render thread and stall every
        session for minutes. ``OptionsRefused`` says what is served and how to serve more."""
        if not self.settings.compile or not self._warm or profile in self._warm:
            return
        import dataclasses

        served, warm = ", ".join(self._warm.values()), ",".join(self._warm.values())
        same = next((p for p in self._warm if p.name == profile.name), None)
        if same is None:
            why = f"profile {profile.name!r} was not (start the worker with --warm {warm},{profile.name})"
        else:
            fields = [f.name for f in dataclasses.fields(profile) if getattr(profile, f.name) != getattr(same, f.name)]
            changed = ", ".join(f"{k} {getattr(profile, k)} (compiled: {getattr(same, k)})" for k in fields)
            why = f"these options change {profile.name!r}: {changed}; open the session without them"
            overrides = [k for k in fields if k in FLAME2VideoOptions.model_fields and k != "views"]
            if overrides == fields:  # all of them can be warmed too
                spec = ":".join([profile.name] + [f"{k}={getattr(profile, k)}" for k in overrides])
                why += f", or start the worker with --warm {warm},{spec}"
        raise OptionsRefused(f"this worker serves the profiles it compiled at start ({served}) as they were "
                             f"compiled; {why}")

    def _stage(self, device):
        """The generator's conditioning stage (FLAME renderings drawn as frames arrive, beside
        the denoising: conditioning.py), on a GPU; None on a CPU, where drawing in line costs
        the same and a second thread would only compete for its cores."""
        if device.type != "cuda" or not self.draw_ahead:
            return None
        with self._lock:
            if self._conditioning is None:
                from .conditioning import ConditioningStage

                self._conditioning = ConditioningStage(device)
            return self._conditioning

    def step_sessions(self, work: Sequence[tuple[FLAME2VideoSession, Sequence[FlameFrame]]]) -> list[list[RenderedFrame]]:
        """``session.step(frames)`` for several sessions at once: the frames of sessions that
        share views and size are drawn together; windows of sessions that share a profile go
        through the FLAME encoder and the UNet together (padded to a compiled batch size) and
        are copied to the host together; first windows of sessions that opened together run
        together too, eagerly in ``cache`` mode. Returns each session's finished frames, in
        order."""
        from .conditioning import draw_together
        from .stream import run_windows

        t0 = time.perf_counter_ns()
        done: dict[int, list] = {id(s): [] for s, _ in work}
        added = [(s.stream, list(frames)) for s, frames in work if s.stream is not None]
        for (stream, frames), drawing in zip(added, draw_together([(st.renders, f) for st, f in added])):
            stream.add(frames, drawing)
        while ready := [s for s, _ in work if s.stream is not None and s.stream.ready()]:
            for group in self._batches(ready):
                outs = run_windows([s.stream for s in group], rows=self._padded(group))
                for s, out in zip(group, outs):
                    done[id(s)].extend(out)
        dt = time.perf_counter_ns() - t0
        return [[RenderedFrame(source=f, views=v.numpy(), view_ids=s.view_ids, render_ns=dt // max(1, len(done[id(s)])))
                 for f, v in done[id(s)]] for s, _ in work]

    def _batches(self, sessions: list[FLAME2VideoSession]) -> list[list[FLAME2VideoSession]]:
        groups: dict[tuple, list] = {}
        for s in sessions:
            groups.setdefault(s.stream.batch_key(), []).append(s)
        m = self.max_batch
        return [g[i:i + m] for g in groups.values() for i in range(0, len(g), m)]

    def _padded(self, group: list[FLAME2VideoSession]) -> int:
        """The batch size ``group``'s windows run at: a compiled one, unless they run eagerly
        (no ``compile``, or first windows in ``cache`` mode, which record the carried context)."""
        n = len(group)
        if not self.settings.compile or group[0].stream.batch_key()[-1] == "record":
            return n  # eager: any batch size costs nothing extra
        return next(b for b in batch_sizes(self.max_batch) if b >= n)

    def close(self) -> None:
        if self._conditioning is not None:
            self._conditioning.close()
            self._conditioning = None
        self._pipelines.clear()
