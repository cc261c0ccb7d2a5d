"""The training loop of every phase, on accelerate (``accelerate launch`` spreads it over GPUs).

One run trains one phase and writes, under ``out``::

    weights/flame2video/<component>/     the export: flamecast's weights layout (serve it with
                                         --weights-dir OUT/weights); the next phase starts here
    phase-<p>/checkpoints/step-NNNNNN/   accelerate state (models, optimiser, scheduler, RNG) +
                                         trainer.json; --resume continues from the newest
    phase-<p>/validation/step-NNNNNN-<clip>.mp4   every view, sample above ground truth
    phase-<p>/history.json, loss.png, summary.json

Exact resume: the data order, the noise and the timesteps of step k come from generators
seeded with (seed, k), and the optimiser, scheduler and EMA target come back from the
checkpoint, so a run stopped and resumed takes the steps an uninterrupted run takes.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .models import PHASES, Batch, Flame2VideoTrainingModel, phase_shape
from .validate import (RECORD, ValidationSettings, autoencoder_psnr, fit_to_dataset, record_validation, reused_validation,
                       validate, validation_key)

log = logging.getLogger(__name__)
PHASE_LR = {"vae": 2e-4, "1": 1e-4, "2": 1e-4, "3": 1e-4, "distill": 2e-5}


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says which settings to change."""


@dataclass
class TrainSettings:
    """Everything a run needs (parsed once by the command, or built by tests)."""

    data: Path
    out: Path
    phase: str
    init: Path | None = None  # weights folder to start from; default: OUT/weights when present
    random_init: bool = False
    model: str = "small"  # configuration for components built at random
    steps: int = 1000
    batch: int = 4
    lr: float | None = None  # default per phase (PHASE_LR)
    warmup: int = 50
    window: int = 8
    views: int = 4
    seed: int = 0
    mixed_precision: str = "no"  # "no" or "bf16"
    gradient_checkpointing: bool = False
    optimizer_8bit: bool = False
    cpu: bool = False
    workers: int = 2
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    val_every: int = 250
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    resume: bool = False
    max_minutes: float | None = None
    progress: bool = True
    ema_decay: float = 0.95
    drop_image: float = 0.1
    probe_batches: int = 1

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}; got {self.phase!r}")
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError("mixed_precision must be 'no' or 'bf16'")
        if min(self.steps, self.batch, self.window, self.views) < 1:
            raise ValueError("steps, batch, window and views must be at least 1")

    @property
    def phase_dir(self) -> Path:
        return Path(self.out) / f"phase-{self.phase}"

    @property
    def weights_dir(self) -> Path:
        return Path(self.out) / "weights"

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else PHASE_LR[self.phase]


def oom_message(s: TrainSettings) -> str:
    frames, views = phase_shape(s.phase, s.window, s.views)
    tips = [f"--batch (now {s.batch})"]
    if frames > 1:
        tips.append(f"--window (now {s.window})")
    if views > 1:
        tips.append(f"--views (now {s.views})")
    if not s.gradient_checkpointing:
        tips.append("add --gradient-checkpointing")
    if s.mixed_precision == "no":
        tips.append("add --mixed-precision bf16")
    if not s.optimizer_8bit:
        tips.append("add --optimizer-8bit (needs bitsandbytes)")
    tips.append("a smaller dataset --size")
    return f"out of GPU memory in phase {s.phase}; lower the load: " + ", ".join(tips)


def make_optimizer(params: list, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer_8bit:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise TrainingError("--optimizer-8bit needs bitsandbytes (pip install bitsandbytes; it needs a "
                                "CUDA GPU); run without --optimizer-8bit to keep 32-bit optimizer states") from None
        return bnb.optim.AdamW8bit(params, lr=s.learning_rate, weight_decay=1e-2)
    return torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=1e-2)


def resolve_init(s: TrainSettings) -> Path | None:
    if s.init is not None:
        return Path(s.init)
    return s.weights_dir if (s.weights_dir / "flame2video").is_dir() else None


def latest_checkpoint(s: TrainSettings) -> Path | None:
    found = sorted((s.phase_dir / "checkpoints").glob("step-*"))
    return found[-1] if found else None


def step_generator(s: TrainSettings, step: int, device: torch.device, rank: int) -> torch.Generator:
    """The generator of one step's noise, timesteps and dropout: seeded by (seed, step, rank)."""
    seed = (s.seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63)
    return torch.Generator(device=device).manual_seed(seed)


class Trainer:
    """One phase of training (see the module docstring).

    ``seconds`` says where the phase's time went (summary.json): ``checks``, ``setup`` (models,
    optimiser, accelerate), ``decode`` and ``render`` (clips' videos decoded and FLAME conditions
    drawn, in this process, wherever first needed), ``data`` (probe batches and the batches the
    loop waited for, less decoding and rendering), ``training`` (the steps), ``validation`` (less
    decoding and rendering), ``checkpoints``, ``export`` (weights, history, plot) and ``total``
    (from the start of ``__init__``)."""

    def __init__(self, s: TrainSettings) -> None:
        self.t0 = time.perf_counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        with self.timed("setup"):
            self._build(s)
        self.seconds["setup"] -= self.seconds["checks"]

    @contextmanager
    def timed(self, part: str):
        """Add the time the block takes to ``seconds[part]`` (decoding and rendering apart)."""
        t0, clips = time.perf_counter(), self._clip_seconds()
        try:
            yield
        finally:
            self._account(part, t0, clips)

    def _clip_seconds(self) -> float:
        cache = getattr(self, "cache", None)
        return 0.0 if cache is None else sum(cache.seconds.values())

    def _account(self, part: str, t0: float, clips: float) -> None:
        self.seconds[part] += time.perf_counter() - t0 - (self._clip_seconds() - clips)

    def _build(self, s: TrainSettings) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        from ..weights import flame2video_root
        from .checks import check_dataset
        from .models import noise_scheduler
        from .setup import initial_components

        self.s = s
        frames, views = phase_shape(s.phase, s.window, s.views)
        self.frames, self.views = frames, views
        with self.timed("checks"):
            self.manifest = check_dataset(s.data, min_frames=frames, min_views=views)
        self.val, why_not = fit_to_dataset(s.validation, self.manifest)  # what validation samples
        if why_not:
            log.warning("phase %s: %s", s.phase, why_not)
        self.acc = Accelerator(mixed_precision=s.mixed_precision, cpu=s.cpu,
                               kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        init = resolve_init(s)
        components, self.random = initial_components(init, random_init=s.random_init, model=s.model, seed=s.seed)
        self.init = None if init is None else flame2video_root(init)
        self.model = Flame2VideoTrainingModel(components)
        self.params = self.model.trainable(s.phase)
        if s.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.sched = noise_scheduler()
        self.teacher = self.target = None
        if s.phase == "distill":
            self._distill_networks()
        self.optimizer = make_optimizer(self.params, s)
        warm = max(1, s.warmup)
        self.lr_sched = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda k: min(1.0, (k + 1) / warm))
        self.model, self.optimizer, self.lr_sched = self.acc.prepare(self.model, self.optimizer, self.lr_sched)
        self.step, self.history, self.validations = 0, [], []
        self.train_seconds, self.train_steps = 0.0, 0
        from .data import ClipCache

        # decoded clips and renderings, shared by the loader (without workers), probe and validation
        self.cache = ClipCache(s.data, self.manifest.size, device=self.acc.device if s.workers == 0 else "cpu")

    def _distill_networks(self) -> None:
        from .distill import make_target

        self.teacher = make_target(self.model.denoiser).to(self.acc.device).eval()
        self.target = make_target(self.model.denoiser).to(self.acc.device).eval()
        self.acc.register_for_checkpointing(self.teacher)  # a resumed run keeps its teacher
        self.acc.register_for_checkpointing(self.target)

    @property
    def core(self) -> Flame2VideoTrainingModel:
        return self.acc.unwrap_model(self.model)

    # ---- data ---------------------------------------------------------------------------
    def loader(self, start: int):
        from .data import Flame2VideoDataset, Sampling

        s, world = self.s, self.acc.num_processes
        per_step = s.batch * world
        ds = Flame2VideoDataset(s.data, self.manifest, Sampling(self.frames, self.views), split="train",
                                length=max(0, s.steps - start) * per_step, seed=s.seed, offset=start * per_step,
                                cache=self.cache)
        dl = torch.utils.data.DataLoader(ds, batch_size=s.batch, shuffle=False, num_workers=s.workers,
                                         persistent_workers=False, drop_last=True)
        return self.acc.prepare(dl)

    def probe(self, split: str = "train") -> list[Batch]:
        """Fixed batches of ``split`` (no augmentation) whose loss is tracked at validations: the
        training clips' (the probe loss) and the held-out clips' (none when no held-out clip has
        the phase's frames and views)."""
        from .data import Flame2VideoDataset, Sampling

        try:
            ds = Flame2VideoDataset(self.s.data, self.manifest, Sampling(self.frames, self.views, augment=False),
                                    split=split, length=self.s.batch * self.s.probe_batches, seed=self.s.seed + 1,
                                    cache=self.cache)
        except ValueError:
            if split == "train":
                raise
            return []
        items = [ds[i] for i in range(len(ds))]
        out = []
        for b in range(self.s.probe_batches):
            chunk = items[b * self.s.batch:(b + 1) * self.s.batch]
            coll = torch.utils.data.default_collate(chunk)
            out.append(Batch.of(coll, self.acc.device))
        return out

    # ---- one step -----------------------------------------------------------------------
    def loss(self, batch: Batch, gen: torch.Generator, model=None, target=None) -> torch.Tensor:
        model = model or self.model
        return model(batch, self.s.phase, gen=gen, sched=self.sched, teacher=self.teacher,
                     target=target or self.target, drop_image=self.s.drop_image)

    def train_step(self, item: dict) -> float:
        s = self.s
        batch = Batch.of(item, self.acc.device)
        gen = step_generator(s, self.step, self.acc.device, self.acc.process_index)
        with self.acc.autocast():
            loss = self.loss(batch, gen)
        if not torch.isfinite(loss):
            raise TrainingError(f"phase {s.phase} step {self.step}: the loss is {float(loss)}; lower --lr "
                                f"(now {s.learning_rate})" + (" or train in float32" if s.mixed_precision != "no" else ""))
        self.acc.backward(loss)
        if self.acc.sync_gradients:
            self.acc.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.lr_sched.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.target is not None:
            from .distill import ema_update

            ema_update(self.target, self.core.denoiser, s.ema_decay)
        return float(loss.detach())

    # ---- the loop ----------------------------------------------------------------------
    def run(self) -> dict:
        from tqdm import tqdm

        s = self.s
        self._set_modes()
        if s.resume:
            with self.timed("checkpoints"):
                self.restore()
        with self.timed("data"):
            self.probes, self.held_out = self.probe(), self.probe("val")
        if self.step == 0:
            self.evaluate(samples=bool(s.val_every))
        deadline = None if s.max_minutes is None else time.monotonic() + 60 * s.max_minutes
        bar = tqdm(total=s.steps, initial=self.step, desc=f"phase {s.phase}", disable=not (s.progress and self.acc.is_main_process))
        if self.acc.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.acc.device)
        try:
            waited, clips = time.perf_counter(), self._clip_seconds()
            for item in self.loader(self.step):
                self._account("data", waited, clips)
                t0 = time.perf_counter()
                loss = self.train_step(item)
                self._sync()
                self.train_seconds += time.perf_counter() - t0
                self.train_steps += 1
                self.history.append({"step": self.step, "loss": loss, "lr": self.lr_sched.get_last_lr()[0]})
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if self._after_step(deadline):
                    break
                waited, clips = time.perf_counter(), self._clip_seconds()
        except torch.OutOfMemoryError:
            raise TrainingError(oom_message(s)) from None
        finally:
            bar.close()
        return self.finish()

    def _after_step(self, deadline: float | None) -> bool:
        s = self.s
        done = self.step >= s.steps or (deadline is not None and time.monotonic() > deadline)
        due = bool(s.val_every) and self.step % s.val_every == 0
        if (due or done) and (not self.validations or self.validations[-1]["step"] != self.step):
            self.evaluate(samples=bool(s.val_every))
        if s.checkpoint_every and (self.step % s.checkpoint_every == 0 or done):
            with self.timed("checkpoints"):
                self.save_checkpoint()
        return done

    def _sync(self) -> None:
        if self.acc.device.type == "cuda":
            torch.cuda.synchronize(self.acc.device)

    def _set_modes(self) -> None:
        """Train mode for the modules this phase trains; eval mode (BatchNorm statistics frozen,
        no dropout) for the frozen ones."""
        core = self.core
        core.train()
        for m in (core.reference_unet, core.flame_encoder, core.image_encoder, core.vae, core.tiny_vae,
                  core.denoiser):
            if m is not None and not any(p.requires_grad for p in m.parameters()):
                m.eval()

    # ---- validation, checkpoints, export -----------------------------------------------
    @torch.no_grad()
    def probe_loss(self, batches: list[Batch] | None = None) -> float | None:
        """The loss on fixed batches (default the probe) with fixed noise; None without batches."""
        batches = self.probes if batches is None else batches
        if not batches:
            return None
        core = self.core
        core.eval()
        try:
            total = 0.0
            for i, batch in enumerate(batches):
                gen = step_generator(self.s, -1 - i, self.acc.device, 0)
                with self.acc.autocast():
                    # distillation: the student's own consistency along the teacher's ODE (the
                    # EMA target is a moving goal, its loss need not fall)
                    total += float(self.loss(batch, gen, model=core, target=core.denoiser))
            return total / len(batches)
        finally:
            self._set_modes()

    def evaluate(self, samples: bool = True) -> None:
        """Probe loss, and held-out PSNR: of sampled videos (written, every view), or in the
        autoencoder phase of the frames encoded and decoded by the tiny decoder."""
        if not self.acc.is_main_process:
            return
        with self.timed("validation"):
            self._evaluate(samples)

    def _evaluate(self, samples: bool) -> None:
        entry = {"step": self.step, "probe_loss": self.probe_loss(), "held_out_loss": self.probe_loss(self.held_out)}
        if not samples:
            self.validations.append(entry)
            return
        if self.s.phase == "vae":
            entry.update(autoencoder_psnr(self.export_components(), self.s.data, self.manifest, self.val,
                                          device=self.acc.device, cache=self.cache))
        else:
            entry.update(self._sampled_validation())
        self.validations.append(entry)
        log.info("phase %s step %d: %s", self.s.phase, self.step, entry)

    def _sampled_validation(self) -> dict:
        """Sampled videos of the held-out clips; at step 0, the result the weights' previous phase
        recorded when sampling would read exactly what it read (validate.py)."""
        s = self.s
        s.phase_dir.joinpath("validation").mkdir(parents=True, exist_ok=True)
        prefix = self.video_prefix()
        if self.step == 0 and self.init is not None:
            reused = reused_validation(self.init, self.validation_key(self.init), prefix)
            if reused is not None:
                return reused
        return validate(self.export_components(), s.data, self.manifest, self.val, device=self.acc.device,
                        dtype=self.validation_dtype(), video_prefix=prefix, cache=self.cache)

    def video_prefix(self) -> Path:
        return self.s.phase_dir / "validation" / f"step-{self.step:06d}"

    def validation_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.s.mixed_precision == "bf16" and self.acc.device.type == "cuda" else torch.float32

    def validation_key(self, weights: Path) -> str:
        return validation_key(weights, self.s.data, self.manifest, self.val, dtype=self.validation_dtype(),
                              device=self.acc.device, cache=self.cache)

    def _record_validation(self, root: Path) -> None:
        """Leave the final sampled validation beside the exported weights ``root`` for the next phase."""
        (root / RECORD).unlink(missing_ok=True)
        last = self.validations[-1] if self.validations else {}
        if self.s.phase != "vae" and last.get("step") == self.step and last.get("psnr") is not None:
            measured = last.get("reused") or f"phase {self.s.phase} step {self.step}"
            record_validation(root, self.validation_key(root), last, self.video_prefix(), measured)

    def export_components(self):
        core = self.core
        if self.s.phase == "vae":
            core.vae.register_to_config(scaling_factor=float(1.0 / core.latent_std.clamp_min(1e-4)))
        return core.export()

    def save_checkpoint(self) -> None:
        path = self.s.phase_dir / "checkpoints" / f"step-{self.step:06d}"
        self.acc.save_state(str(path))
        if self.acc.is_main_process:
            (path / "trainer.json").write_text(json.dumps({"step": self.step, "history": self.history,
                                                           "validations": self.validations}))
            for old in sorted((self.s.phase_dir / "checkpoints").glob("step-*"))[: -self.s.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)

    def restore(self) -> None:
        path = latest_checkpoint(self.s)
        if path is None:
            raise TrainingError(f"--resume: no checkpoint under {self.s.phase_dir / 'checkpoints'}; start without --resume")
        self.acc.load_state(str(path))
        state = json.loads((path / "trainer.json").read_text())
        self.step, self.history, self.validations = state["step"], state["history"], state["validations"]

    def finish(self) -> dict:
        from ..components import save_components
        from ..weights import flame2video_root

        s = self.s
        t0 = time.perf_counter()
        summary = self.summary()
        if self.acc.is_main_process:
            root = flame2video_root(s.weights_dir)
            save_components(self.export_components(), root)
            self._record_validation(root)
            phases = _done_phases(root) + [s.phase]
            (root / "training.json").write_text(json.dumps({"phases": phases, "last": summary}, indent=1))
            s.phase_dir.mkdir(parents=True, exist_ok=True)
            (s.phase_dir / "history.json").write_text(json.dumps({"history": self.history, "validations": self.validations}))
            from .plots import plot_phase

            plot_phase(self.history, self.validations, s.phase_dir / "loss.png", title=f"phase {s.phase}")
        self.seconds["export"] += time.perf_counter() - t0
        summary["seconds"] = self.times()
        if self.acc.is_main_process:
            (s.phase_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        self.acc.wait_for_everyone()
        return summary

    def times(self) -> dict[str, float]:
        """``seconds`` (see the class docstring), rounded to milliseconds."""
        seconds = {**self.seconds, **self.cache.seconds, "training": self.train_seconds}
        parts = ("checks", "setup", "decode", "render", "data", "training", "validation", "checkpoints", "export")
        out = {k: round(seconds.get(k, 0.0), 3) for k in parts}
        out["total"] = round(time.perf_counter() - self.t0, 3)
        return out

    def summary(self) -> dict:
        s = self.s
        losses = [h["loss"] for h in self.history]
        k = max(1, len(losses) // 10)
        per_step = s.batch * self.acc.num_processes
        sps = per_step * self.train_steps / self.train_seconds if self.train_seconds else None
        peak = torch.cuda.max_memory_allocated(self.acc.device) / 2**30 if self.acc.device.type == "cuda" else None
        return {
            "phase": s.phase, "steps": self.step, "batch": s.batch, "processes": self.acc.num_processes,
            "frames": self.frames, "views": self.views, "size": self.manifest.size,
            "mixed_precision": s.mixed_precision, "gradient_checkpointing": s.gradient_checkpointing,
            "device": str(self.acc.device), "trainable_params": sum(p.numel() for p in self.params),
            "built_at_random": self.random, "init": None if self.init is None else str(self.init),
            "samples_per_s": sps, "view_frames_per_s": None if sps is None else sps * self.frames * self.views,
            "peak_memory_gib": peak,
            "loss_first": sum(losses[:k]) / k if losses else None, "loss_last": sum(losses[-k:]) / k if losses else None,
            "validation": asdict(self.val),
            "validations": [{k2: v for k2, v in e.items() if k2 != "clips"} for e in self.validations],
        }


def _done_phases(root: Path) -> list[str]:
    path = root / "training.json"
    try:
        return [p for p in json.loads(path.read_text())["phases"]]
    except (OSError, ValueError, KeyError):
        return []


def train(s: TrainSettings) -> dict:
    """Train one phase; return its summary (also written to OUT/phase-<p>/summary.json). Its models,
    optimiser and clips are freed on return, so that phases can follow each other in one process."""
    trainer = Trainer(s)
    try:
        return trainer.run()
    finally:
        trainer.acc.free_memory()
        del trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


