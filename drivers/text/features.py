"""Clips <-> the models' feature sequences, the data smoothing window and batching."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rotation import IDENTITY_6D, axis_angle_to_6d, sixd_to_axis_angle

MOTION_FEATURES = 12  # head 6D + jaw 6D, as offsets from the identity
EMOTION_FEATURES_BUILTIN = 16


def smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over time (axis 0) with edge replication; window 1 = identity."""
    if window <= 1:
        return x
    pad = window // 2
    padded = np.concatenate([np.repeat(x[:1], pad, 0), x, np.repeat(x[-1:], window - 1 - pad, 0)])
    kernel = np.ones(window) / window
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, padded).astype(x.dtype)


def decimate(x: np.ndarray, factor: int) -> np.ndarray:
    """Every ``factor``-th frame (after smoothing, which low-passes the data first)."""
    return x[::factor] if factor > 1 else x


def motion_features(head: np.ndarray, jaw: np.ndarray) -> np.ndarray:
    """(T, 3) + (T, 3) axis-angle -> (T, 12)."""
    return np.concatenate([axis_angle_to_6d(head) - IDENTITY_6D, axis_angle_to_6d(jaw) - IDENTITY_6D], axis=-1)


def motion_from_features(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 12) -> head (T, 3), jaw (T, 3) axis-angle."""
    return sixd_to_axis_angle(f[:, :6] + IDENTITY_6D), sixd_to_axis_angle(f[:, 6:] + IDENTITY_6D)


@dataclass
class Sequences:
    """Variable-length feature sequences of one model with the embeddings of their captions
    (several per sequence when the captions were paraphrased)."""

    features: list[np.ndarray]  # each (T_i, F)
    text: np.ndarray  # (N, K, D): K captions per sequence
    tokens: list[list[np.ndarray]] | None = None  # [N][K] token states (L, D), when the models use them

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and std over all frames; tiny stds are floored so that nearly
        constant 6D entries do not blow up."""
        allf = np.concatenate(self.features)
        mean, std = allf.mean(0), allf.std(0)
        return mean, np.maximum(std, 0.05 * std.max() + 1e-6)

    def batch(self, idx: np.ndarray, mean: np.ndarray, std: np.ndarray, caption: np.ndarray | None = None):
        """Padded normalised batch: x (B, T, F), text (B, D), pad (B, T) True on padding.
        ``caption`` (B,) picks which of each sequence's captions to use (default the first); (B, K)
        weights mix them instead (the weighted sum of the embeddings, made unit length again)."""
        lengths = [self.features[i].shape[0] for i in idx]
        t = max(lengths)
        f = self.features[idx[0]].shape[1]
        x = np.zeros((len(idx), t, f), np.float32)
        pad = np.ones((len(idx), t), bool)
        for j, i in enumerate(idx):
            x[j, : lengths[j]] = (self.features[i] - mean) / std
            pad[j, : lengths[j]] = False
        caption = np.zeros(len(idx), int) if caption is None else caption
        if caption.ndim == 1:
            return x, self.text[idx, caption], pad
        text = np.einsum("bk,bkd->bd", caption, self.text[idx])
        return x, (text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-6)).astype(np.float32), pad
