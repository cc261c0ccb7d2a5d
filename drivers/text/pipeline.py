"""Text2FLAME: a prompt in, a clip of head/jaw pose and expression channels out.

Fixed shape: check the prompt, encode it (cached), match it against the caption bank, sample
MotionDM and EmotionDM with DDIM + classifier-free guidance, decode the features. Sampling is
synchronous CPU work: the driver calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .bank import WEAK_MATCH, CaptionBank, Match
from .encoder import CachedEncoder, TextEncoder, load_encoder
from .features import motion_from_features
from .model import TextDM, Tokens, load_models
from .prompts import CALM_PROMPT, MAX_PROMPT_CHARS, MAX_SECONDS, check_prompt

DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 2.5


class WeightsError(FileNotFoundError):
    """The text models' files are missing; the message names them and where they go."""


def default_weights() -> Path:
    return Path(__file__).resolve().parent / "weights"


@dataclass
class Generated:
    """A generated clip at ``fps``: head and jaw axis-angle (T, 3), expression (T, n)."""

    fps: float
    head: np.ndarray
    jaw: np.ndarray
    expression: np.ndarray
    match: Match

    @property
    def seconds(self) -> float:
        return self.head.shape[0] / self.fps


class Text2Flame:
    def __init__(self, models: dict[str, TextDM], config: dict, encoder: TextEncoder, bank: CaptionBank | None) -> None:
        self.motion, self.emotion = models["motion"], models["emotion"]
        self.config = config
        self.encoder = encoder if isinstance(encoder, CachedEncoder) else CachedEncoder(encoder)
        self.bank = bank
        self.fps = float(self.motion.cfg.fps)
        self.expression_names = config.get("expression_names")
        self._lock = threading.Lock()
        if encoder.dim != self.motion.cfg.text_dim:
            raise WeightsError(f"the text models expect {self.motion.cfg.text_dim}-d text embeddings "
                               f"(encoder {config.get('encoder')!r}); encoder {encoder.name!r} gives {encoder.dim}")

    @classmethod
    def load(cls, folder: Path | None = None, encoder: str | None = None, clip_path: str | None = None) -> Text2Flame:
        folder = Path(folder) if folder else default_weights()
        missing = [n for n in ("config.json", "motion.safetensors", "emotion.safetensors") if not (folder / n).is_file()]
        if missing:
            raise WeightsError(f"text driver weights missing in {folder}: {', '.join(missing)}. Train them with "
                               f"`flamecast train text --out {folder}` or point the weights option at a folder that has them")
        models, config = load_models(folder)
        bank = CaptionBank.load(folder / "bank.safetensors") if (folder / "bank.safetensors").is_file() else None
        return cls(models, config, load_encoder(encoder or config.get("encoder", "minilm"), clip_path), bank)

    def embed(self, text: str) -> tuple[np.ndarray, Match]:
        emb = self.encoder.encode([text])[0]
        if self.bank is None:
            return emb, Match(1.0, text, None, None)
        return emb, self.bank.match(emb)

    def _sample(self, model: TextDM, text: str, frames: int, steps: int, guidance: float, seed: int) -> np.ndarray:
        gen = torch.Generator().manual_seed(seed)
        emb = self.encoder.encode([text])[0]  # cached
        limit = model.cfg.text_tokens
        tokens = Tokens.stack(self.encoder.encode_tokens([text]), limit) if limit > 0 else None
        x = model.sample(torch.from_numpy(emb[None]).float(), frames, steps=steps, guidance=guidance, generator=gen,
                         tokens=tokens)
        return model.denormalise(x)[0].numpy()

    def frames_for(self, seconds: float) -> int:
        seconds = min(max(seconds, 0.5), MAX_SECONDS)
        return max(2, min(int(round(seconds * self.fps)), self.motion.cfg.max_frames))

    def generate(self, text: str, *, seconds: float = 4.0, motion: bool = True, emotion: bool = True,
                 steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE, seed: int = 0) -> Generated:
        """A clip for ``text``. A weak match plays the calm prompt's motion and no emotion."""
        text = check_prompt(text)
        with self._lock:
            match = self.embed(text)[1]
            said = CALM_PROMPT if match.weak else text
            n = self.frames_for(seconds)
            feats = self._sample(self.motion, said, n, steps, guidance, seed) if motion else None
            expr = self._sample(self.emotion, said, n, steps, guidance, seed + 1) if emotion and not match.weak else None
        head, jaw = motion_from_features(feats) if feats is not None else (np.zeros((n, 3), np.float32),) * 2
        if expr is None:
            expr = np.zeros((n, self.emotion.cfg.features), np.float32)
        return Generated(self.fps, head, jaw, expr.astype(np.float32), match)


_LOAD_LOCK = threading.Lock()


def shared_pipeline(folder: str | None, encoder: str | None, clip_path: str | None) -> Text2Flame:
    """One loaded pipeline per (weights, encoder) in a process, shared by sessions (models are
    only read; sampling is serialised by the pipeline's lock).

    Loading is single-flight: sessions that ask at the same time wait for one load. Two
    concurrent first imports of transformers' lazy modules fail with an ImportError.
    """
    with _LOAD_LOCK:
        return _load_pipeline(folder, encoder, clip_path)


@functools.lru_cache(maxsize=2)
def _load_pipeline(folder: str | None, encoder: str | None, clip_path: str | None) -> Text2Flame:
    return Text2Flame.load(Path(folder) if folder else None, encoder, clip_path)


__all__ = ["CALM_PROMPT", "Generated", "MAX_PROMPT_CHARS", "Text2Flame", "WEAK_MATCH", "WeightsError", "check_prompt"]
