"""Training MotionDM and EmotionDM: data, the loop, checkpoints, and the shipped artefacts.

``flamecast train text`` calls ``train(TrainSettings(...))``. The run is seeded; a checkpoint
(models, optimisers, step, random state, loss history) is written every ``checkpoint_every``
steps and at the end, and ``resume`` continues from it. At the end the weights, config.json, the
caption bank used for match similarity and the loss curve are written to ``out``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from . import corpus
from .bank import CaptionBank
from .encoder import load_encoder
from .features import Sequences, decimate, motion_features, smooth
from .model import DMConfig, TextDM, Tokens, save_models

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainSettings:
    out: Path
    steps: int = 6000
    seed: int = 0
    resume: bool = False
    clips: int = 6000
    paraphrases: int = 1  # captions per procedural clip: its own and paraphrases of its Spec
    caption_mix: bool = False  # train on a random blend of two of a clip's caption embeddings
    text_noise: float = 0.0  # length of the Gaussian noise added to each unit text embedding
    text_tokens: int = 0  # the models also attend to up to this many token states of the caption
    device: str = "cpu"  # where the models train ("cuda" on a GPU); the data stays on the CPU
    batch: int = 64
    lr: float = 1e-3
    encoder: str = "minilm"
    clip_path: str | None = None
    smoothing: int = 3
    decimate: int = 2  # the models run at the data rate / decimate (12.5 fps for the corpus)
    celebv: Path | None = None
    checkpoint_every: int = 500
    bank_size: int = 1500
    progress: bool = True
    stop_at: int | None = None  # end this run early at this step (the schedule still spans ``steps``)
    model: dict = field(default_factory=dict)  # DMConfig overrides (tests use tiny ones)


@dataclass
class Data:
    motion: Sequences
    emotion: Sequences
    captions: list[str]
    clips: list[corpus.Clip]


def load_clips(s: TrainSettings) -> list[corpus.Clip]:
    if s.celebv is not None:
        from .celebv import load_celebv

        return load_celebv(s.celebv)
    return corpus.generate(s.clips, s.seed)


def clip_captions(s: TrainSettings, clips: list[corpus.Clip]) -> list[list[str]]:
    """Each clip's captions: its own, then ``paraphrases - 1`` more for its Spec (procedural
    clips only; CelebV-Text clips keep their one caption per window)."""
    if s.celebv is not None or s.paraphrases <= 1:
        return [[c.caption] for c in clips]
    rng = np.random.default_rng([s.seed, 1])
    return [[c.caption] + [corpus.paraphrase(c.spec, corpus.TRAIN_WORDS, rng) for _ in range(s.paraphrases - 1)]
            for c in clips]


def build_data(s: TrainSettings, encoder) -> Data:
    clips = load_clips(s)
    per_clip = clip_captions(s, clips)
    captions = sorted({c for group in per_clip for c in group})
    log.info("encoding %d captions of %d clips with %s", len(captions), len(clips), encoder.name)
    emb, states = {}, {}
    for i in range(0, len(captions), 256):  # one encoder pass a chunk gives both (the encoder keeps it)
        chunk = captions[i : i + 256]
        emb.update(zip(chunk, encoder.encode(chunk)))
        if s.text_tokens > 0:
            states.update(zip(chunk, (t[: s.text_tokens].astype(np.float32) for t in encoder.encode_tokens(chunk))))
    text = np.stack([np.stack([emb[c] for c in group]) for group in per_clip]).astype(np.float32)
    tokens = [[states[c] for c in group] for group in per_clip] if s.text_tokens > 0 else None
    w, k = s.smoothing, s.decimate
    motion = [decimate(motion_features(smooth(c.head, w), smooth(c.jaw, w)), k) for c in clips]
    emotion = [decimate(smooth(c.expression, w), k) for c in clips]
    return Data(Sequences(motion, text, tokens), Sequences(emotion, text, tokens), captions, clips)


def make_models(s: TrainSettings, data: Data, text_dim: int) -> dict[str, TextDM]:
    models = {}
    for kind, seqs in (("motion", data.motion), ("emotion", data.emotion)):
        mean, std = seqs.stats()
        cfg = DMConfig(kind=kind, features=seqs.features[0].shape[1], text_dim=text_dim, smoothing=s.smoothing,
                       text_tokens=s.text_tokens,
                       fps=data.clips[0].fps / s.decimate, max_frames=max(128, max(len(f) for f in seqs.features)),
                       mean=mean.tolist(), std=std.tolist())
        models[kind] = TextDM(replace(cfg, **s.model))
    return models


def with_noise(text: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The text embeddings moved by ``noise`` and made unit length again (condition
    augmentation: nearby wordings the corpus does not have should mean the same)."""
    return torch.nn.functional.normalize(text + noise, dim=-1)


class Trainer:
    def __init__(self, s: TrainSettings, data: Data, models: dict[str, TextDM]) -> None:
        self.s, self.data, self.models = s, data, models
        self.opts = {k: torch.optim.AdamW(m.parameters(), lr=s.lr, weight_decay=1e-4) for k, m in models.items()}
        self.step = 0
        self.history: list[dict] = []
        self.rng = np.random.default_rng(s.seed)
        self.gen = torch.Generator().manual_seed(s.seed)
        self.elapsed = 0.0
        self.by_length = np.argsort([len(f) for f in data.motion.features], kind="stable")

    def draw_batch(self) -> np.ndarray:
        """A batch of clips of similar length (little padding): a random window of the clips
        sorted by length, shuffled."""
        n, b = len(self.by_length), min(self.s.batch, len(self.by_length))
        start = int(self.rng.integers(0, n - b + 1))
        window = self.by_length[start : start + 4 * b] if start + 4 * b <= n else self.by_length[max(0, n - 4 * b) :]
        return self.rng.choice(window, b, replace=False)

    def draw_captions(self, b: int) -> np.ndarray:
        """Which caption of each clip to train on, (b,); with ``caption_mix`` the (b, K) weights
        of a blend of two of them (lam and 1 - lam, lam uniform)."""
        k = self.data.motion.text.shape[1]
        if k == 1:  # no draw: one caption a clip trains exactly as before paraphrases existed
            return np.zeros(b, int)
        first = self.rng.integers(0, k, b)
        if not self.s.caption_mix:
            return first
        weights = np.zeros((b, k), np.float32)
        lam = self.rng.uniform(0.0, 1.0, b).astype(np.float32)
        np.add.at(weights, (np.arange(b), first), lam)
        np.add.at(weights, (np.arange(b), self.rng.integers(0, k, b)), 1 - lam)
        return weights

    def draw_text_noise(self, b: int, dim: int) -> np.ndarray | None:
        """(b, dim) isotropic Gaussian noise of length about ``text_noise`` (None when off:
        no draw, so runs without it replay exactly)."""
        if self.s.text_noise <= 0:
            return None
        return (self.rng.standard_normal((b, dim)) * (self.s.text_noise / np.sqrt(dim))).astype(np.float32)

    def tokens(self, seqs: Sequences, idx: np.ndarray, caption: np.ndarray) -> Tokens | None:
        """The token states of the captions the batch trains on (the heavier caption of a blend)."""
        if seqs.tokens is None:
            return None
        pick = caption if caption.ndim == 1 else caption.argmax(1)
        return Tokens.stack([seqs.tokens[i][k] for i, k in zip(idx, pick)], self.s.text_tokens)

    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / 200)
        return self.s.lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, step / max(1, self.s.steps)))))

    def train_step(self) -> dict:
        idx = self.draw_batch()
        caption = self.draw_captions(len(idx))
        noise = self.draw_text_noise(len(idx), self.data.motion.text.shape[-1])
        tokens = self.tokens(self.data.motion, idx, caption)  # both models train on the same captions
        tokens = tokens.to(self.s.device) if tokens is not None else None
        row = {"step": self.step}
        for kind, seqs in (("motion", self.data.motion), ("emotion", self.data.emotion)):
            model, opt = self.models[kind], self.opts[kind]
            x, text, pad = (torch.from_numpy(a) for a in seqs.batch(idx, np.array(model.cfg.mean, np.float32),
                                                                     np.array(model.cfg.std, np.float32), caption))
            if noise is not None:
                text = with_noise(text, torch.from_numpy(noise))
            dev = self.s.device
            x, text, pad = x.to(dev), text.to(dev), pad.to(dev)
            for group in opt.param_groups:
                group["lr"] = self.lr_at(self.step)
            model.train()
            loss, parts = model.loss(x, text, pad, self.gen, tokens)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            row[kind] = loss.item()
        self.step += 1
        return row

    def run(self) -> list[dict]:
        from tqdm import tqdm

        bar = tqdm(total=self.s.steps, initial=self.step, desc="train text", disable=not self.s.progress)
        start = time.monotonic() - self.elapsed
        end = min(self.s.steps, self.s.stop_at or self.s.steps)
        while self.step < end:
            row = self.train_step()
            self.history.append(row)
            bar.update(1)
            if self.step % 20 == 0:
                bar.set_postfix(motion=f"{row['motion']:.4f}", emotion=f"{row['emotion']:.4f}")
            self.elapsed = time.monotonic() - start
            if self.step % self.s.checkpoint_every == 0 or self.step == end:
                self.save_checkpoint()
        bar.close()
        return self.history

    # --- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        state = {
            "step": self.step, "elapsed": self.elapsed, "history": self.history,
            "models": {k: m.state_dict() for k, m in self.models.items()},
            "opts": {k: o.state_dict() for k, o in self.opts.items()},
            "rng": self.rng.bit_generator.state, "gen": self.gen.get_state(), "torch": torch.get_rng_state(),
        }
        path = self.s.out / CHECKPOINT
        torch.save(state, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)

    def load_checkpoint(self) -> None:
        state = torch.load(self.s.out / CHECKPOINT, weights_only=False, map_location="cpu")
        self.step, self.elapsed, self.history = state["step"], state["elapsed"], state["history"]
        for k in self.models:
            self.models[k].load_state_dict(state["models"][k])
            self.opts[k].load_state_dict(state["opts"][k])
        self.rng.bit_generator.state = state["rng"]
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch"])


def train(s: TrainSettings, encoder=None) -> dict:
    """Train both models; returns a summary (steps, seconds, first and last losses)."""
    torch.manual_seed(s.seed)
    s.out.mkdir(parents=True, exist_ok=True)
    encoder = encoder or load_encoder(s.encoder, s.clip_path)
    data = build_data(s, encoder)
    models = {k: m.to(s.device) for k, m in make_models(s, data, encoder.dim).items()}
    trainer = Trainer(s, data, models)
    if s.resume and (s.out / CHECKPOINT).is_file():
        trainer.load_checkpoint()
        log.info("resumed at step %d", trainer.step)
    history = trainer.run()
    summary = finish(s, trainer, data, encoder)
    return summary


def finish(s: TrainSettings, trainer: Trainer, data: Data, encoder) -> dict:
    history = trainer.history
    w = max(1, min(50, len(history) // 4))
    summary = {
        "steps": trainer.step, "seconds": round(trainer.elapsed, 1), "clips": len(data.clips),
        "captions": len(data.captions), "paraphrases": data.motion.text.shape[1],
        "caption_mix": s.caption_mix, "text_noise": s.text_noise, "text_tokens": s.text_tokens,
        "device": s.device, "seed": s.seed,
        "batch": s.batch, "lr": s.lr,
        "data": "celebv" if s.celebv else "procedural",
        "first_loss": {k: float(np.mean([h[k] for h in history[:w]])) for k in ("motion", "emotion")} if history else {},
        "last_loss": {k: float(np.mean([h[k] for h in history[-w:]])) for k in ("motion", "emotion")} if history else {},
    }
    meta = {"encoder": encoder.name, "text_dim": encoder.dim, "training": summary,
            "expression_names": list(corpus.BUILTIN_EXPRESSION_NAMES) if data.emotion.features[0].shape[1] == 16 else None}
    save_models(s.out, trainer.models, meta)
    CaptionBank.from_clips(data.clips, encoder, s.bank_size, s.seed).save(s.out / "bank.safetensors")
    (s.out / "loss.json").write_text(json.dumps(history))
    plot_loss(history, s.out / "loss.png")
    return summary


def plot_loss(history: list[dict], path: Path) -> bool:
    """Loss curves of both models (running mean over 50 steps) as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for kind in ("motion", "emotion"):
        y = np.array([h[kind] for h in history])
        k = min(50, max(1, len(y)))
        ax.plot(np.convolve(y, np.ones(k) / k, mode="valid"), label=f"{kind} (mean of {k})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (simple + 0.5 velocity)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
