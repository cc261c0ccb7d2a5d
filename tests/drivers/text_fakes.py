"""Shared helpers of the text driver tests: a tiny deterministic text encoder."""

from __future__ import annotations

import hashlib

import numpy as np


class HashEncoder:
    """Bag of words hashed into a unit vector: same words, same embedding. No model files."""

    name = "hash"

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim

    def _word(self, word: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        h = int(hashlib.md5(word.encode()).hexdigest(), 16)
        v[h % self.dim] = 1.0 if (h >> 8) % 2 else -1.0
        return v

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i] += self._word(word)
            out[i] /= max(np.linalg.norm(out[i]), 1e-6)
        return out

    def encode_tokens(self, texts):
        """One state a word: its hashed one-hot vector."""
        return [np.stack([self._word(w) for w in text.lower().split()] or [np.zeros(self.dim, np.float32)])
                for text in texts]
