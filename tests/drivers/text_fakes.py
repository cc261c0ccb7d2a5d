"""Shared helpers of the text driver tests: a tiny deterministic text encoder."""

from __future__ import annotations

import hashlib

import numpy as np


class HashEncoder:
    """Bag of words hashed into a unit vector: same words, same embedding. No model files."""

    name = "hash"

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                out[i, h % self.dim] += 1.0 if (h >> 8) % 2 else -1.0
            out[i] /= max(np.linalg.norm(out[i]), 1e-6)
        return out
