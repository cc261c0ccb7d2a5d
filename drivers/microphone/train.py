"""Training VisemeNet on speech that espeak-ng makes (``flamecast train microphone``).

Seeded: the corpus (texts, voices, speeds, pitches), the initial weights and every batch come
from ``seed``. Each step takes random crops of the training stream, augments them (level,
clipping, noise, band limits, 8-bit), computes log-mel and regresses the per-frame mouth
targets. Checkpoints every ``checkpoint_every`` steps; ``resume`` continues one.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import corpus
from .data import NoiseBank, Stream, augment, band_tilt, crop, synthesize
from .features import log_mel
from .model import VisemeConfig, VisemeNet

CHECKPOINT = "checkpoint.pt"
WARMUP_FRAMES = 20  # the GRU's first frames of a crop are not scored
JAW_WEIGHT = 3.0


@dataclass(frozen=True)
class TrainSettings:
    out: Path
    steps: int = 3000
    utterances: int = 800
    batch: int = 24
    crop_frames: int = 240
    lr: float = 3e-3
    seed: int = 0
    resume: bool = False
    checkpoint_every: int = 500
    channels: int = 64
    hidden: int = 64
    lookahead: int = 3
    progress: bool = True


def training_items(n: int, rng: np.random.Generator):
    names = corpus.TRAIN_VOICE_NAMES
    return [(corpus.training_text(rng), corpus.voice_variant(names[i % len(names)], rng)) for i in range(n)]


def build_stream(s: TrainSettings) -> Stream:
    from tqdm import tqdm

    rng = np.random.default_rng(s.seed)
    items = training_items(s.utterances, rng)
    with tqdm(total=len(items), desc="synthesise speech", disable=not s.progress) as bar:
        return synthesize(items, rng, progress=bar)


def mel_stats(stream: Stream, n_mels: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of augmented log-mel over a sample of crops."""
    mels, noise = [], NoiseBank(rng, 5.0)
    for _ in range(64):
        start = int(rng.integers(0, stream.frames - 400))
        audio, _ = crop(stream, start, 400)
        mels.append(log_mel(augment(audio, rng, noise), n_mels))
    m = np.concatenate(mels)
    return m.mean(0), m.std(0) + 1e-3


class Trainer:
    def __init__(self, s: TrainSettings, stream: Stream) -> None:
        self.s, self.stream = s, stream
        torch.manual_seed(s.seed)
        self.rng = np.random.default_rng(s.seed + 1)
        self.noise = NoiseBank(self.rng)
        config = VisemeConfig(channels=s.channels, hidden=s.hidden, lookahead=s.lookahead)
        self.model = VisemeNet(config)
        mean, std = mel_stats(stream, config.n_mels, self.rng)
        self.model.mel_mean.copy_(torch.from_numpy(mean))
        self.model.mel_std.copy_(torch.from_numpy(std))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=s.lr, weight_decay=1e-4)
        w = torch.ones(len(config.outputs))
        w[0] = JAW_WEIGHT
        self.weights = w
        self.step = 0
        self.history: list[dict] = []

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        s, n = self.s, self.s.crop_frames
        mels, targets = [], []
        for _ in range(s.batch):
            start = int(self.rng.integers(0, self.stream.frames - n))
            audio, target = crop(self.stream, start, n)
            n_mels = self.model.config.n_mels
            mels.append(log_mel(augment(audio, self.rng, self.noise), n_mels) + band_tilt(n_mels, self.rng))
            targets.append(target)
        return torch.from_numpy(np.stack(mels)), torch.from_numpy(np.stack(targets))

    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / 100)
        return self.s.lr * warm * 0.5 * (1 + np.cos(np.pi * min(1.0, step / self.s.steps)))

    def train_step(self) -> float:
        mel, target = self.batch()
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        pred = self.model(mel)
        la = self.model.config.lookahead
        sl = slice(WARMUP_FRAMES, target.shape[1] - la)
        loss = (((pred[:, sl] - target[:, sl]) ** 2) * self.weights).mean()
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        return float(loss.detach())

    def run(self) -> None:
        from tqdm import tqdm

        bar = tqdm(total=self.s.steps, initial=self.step, desc="train microphone", disable=not self.s.progress)
        while self.step < self.s.steps:
            loss = self.train_step()
            if self.step % 50 == 0 or self.step == 1:
                self.history.append({"step": self.step, "loss": loss})
                bar.set_postfix(loss=f"{loss:.4f}")
            if self.step % self.s.checkpoint_every == 0:
                self.save_checkpoint()
            bar.update(1)
        bar.close()

    def save_checkpoint(self) -> None:
        self.s.out.mkdir(parents=True, exist_ok=True)
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                 "history": self.history, "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
        torch.save(state, self.s.out / CHECKPOINT)

    def load_checkpoint(self) -> None:
        state = torch.load(self.s.out / CHECKPOINT, weights_only=False, map_location="cpu")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.history = state["step"], state["history"]
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])


def train(s: TrainSettings) -> dict:
    """Train and write ``config.json`` + ``visemenet.safetensors`` (+ ``loss.json``) to ``s.out``."""
    t0 = time.perf_counter()
    stream = build_stream(s)
    trainer = Trainer(s, stream)
    if s.resume and (s.out / CHECKPOINT).is_file():
        trainer.load_checkpoint()
    trainer.run()
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items() if k not in ("out", "resume", "progress")}
    info.update(seconds=round(time.perf_counter() - t0, 1), speech_minutes=round(stream.audio.size / 16000 / 60, 1),
                first_loss=trainer.history[0]["loss"] if trainer.history else None,
                last_loss=trainer.history[-1]["loss"] if trainer.history else None)
    model = VisemeNet(VisemeConfig(**{**asdict(trainer.model.config), "training": info}))
    model.load_state_dict(trainer.model.state_dict())
    model.save_pretrained(s.out)
    (s.out / "loss.json").write_text(json.dumps(trainer.history) + "\n")
    return info
