"""The caption bank: embeddings of training captions with what each caption asked for.

The driver compares a prompt with the bank: the best cosine similarity is the match score
(below ``WEAK_MATCH`` the match is weak and the driver plays a calm motion instead), and the
nearest caption tells whether the prompt asked for an emotion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WEAK_MATCH = 0.5


@dataclass
class Match:
    similarity: float
    caption: str
    motion: str | None
    emotion: str | None

    @property
    def weak(self) -> bool:
        return self.similarity < WEAK_MATCH


@dataclass
class CaptionBank:
    embeddings: np.ndarray  # (N, D) unit rows
    captions: list[str]
    motions: list[str | None]
    emotions: list[str | None]

    @classmethod
    def from_clips(cls, clips, encoder, size: int, seed: int = 0) -> CaptionBank:
        by_caption = {c.caption: c for c in clips}
        names = sorted(by_caption)
        rng = np.random.default_rng(seed)
        if len(names) > size:
            names = sorted(rng.choice(names, size, replace=False).tolist())
        emb = np.concatenate([encoder.encode(names[i : i + 256]) for i in range(0, len(names), 256)])
        spec = [by_caption[n].spec for n in names]
        return cls(emb.astype(np.float32), names, [s.motion for s in spec], [s.emotion for s in spec])

    def match(self, embedding: np.ndarray) -> Match:
        sims = self.embeddings @ embedding.astype(np.float32)
        i = int(np.argmax(sims))
        return Match(float(sims[i]), self.captions[i], self.motions[i], self.emotions[i])

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        meta = {"captions": json.dumps(self.captions), "motions": json.dumps(self.motions),
                "emotions": json.dumps(self.emotions)}
        save_file({"embeddings": self.embeddings.astype(np.float16)}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> CaptionBank:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata()
            emb = f.get_tensor("embeddings").astype(np.float32)
        return cls(emb, json.loads(meta["captions"]), json.loads(meta["motions"]), json.loads(meta["emotions"]))

