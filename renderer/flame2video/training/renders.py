"""FLAME renderings of whole clips, drawn once per dataset and kept in its ``.cache`` folder.

Every phase conditions on the same pictures (``generator.FlameConditioner``: built-in head, grey
Lambert, the views' cameras), so they are drawn once and read back by later phases and runs::

    DATASET/.cache/renders/<renderer>/<flame>.npz

``<flame>`` is the SHA-256 of the clip's FLAME file; ``<renderer>`` a digest of the picture size,
the views' cameras, the device type and a probe: what the conditioner draws, now, for a fixed
FLAME frame. A changed FLAME file, other views, another device or a renderer that draws anything
differently finds no file and draws again; nothing stale is read. A file holds the float16
renderings exactly as training uses them (one channel where the three are equal), compressed.
The folder stops growing at ``budget`` bytes: clips beyond it are drawn every time, as before.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .layout import FlameSequence, cache_dir, write_atomic

BUDGET = 2 * 2**30  # bytes of renderings one dataset keeps


def probe_sequence() -> FlameSequence:
    """A fixed FLAME frame that moves every input the conditioner reads (pose, jaw, eyes,
    expression, eyelids, translation)."""
    rng = np.random.default_rng(20261204)
    return FlameSequence(pose=rng.uniform(-0.25, 0.25, (1, 15)).astype(np.float32),
                         expression=rng.uniform(-1.5, 1.5, (1, 50)).astype(np.float32),
                         eyelids=np.array([[0.4, 0.2]], np.float32),
                         translation=np.array([[0.01, -0.015, 0.02]], np.float32))


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class RenderStore:
    """The stored renderings of one conditioner (one set of views at one size on one device)."""

    def __init__(self, root: Path, conditioner: Callable, views: tuple, size: int, device: torch.device,
                 budget: int = BUDGET) -> None:
        probe = conditioner(probe_sequence().frames()).to(torch.float16).cpu().numpy()
        ident = json.dumps({"size": size, "device": torch.device(device).type,
                            "views": [[v.id, float(v.yaw_deg), float(v.pitch_deg)] for v in views],
                            "probe": hashlib.sha256(probe.tobytes()).hexdigest()})
        self.folder = cache_dir(root) / "renders" / hashlib.sha256(ident.encode()).hexdigest()[:20]
        self.budget = budget
        self.used = sum(p.stat().st_size for p in cache_dir(root).glob("renders/*/*.npz"))

    def path(self, flame_digest: str) -> Path:
        return self.folder / f"{flame_digest}.npz"

    def load(self, flame_digest: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        """The renderings (T, V, 3, H, W) float16 stored for this FLAME file, or None."""
        try:
            with np.load(self.path(flame_digest), allow_pickle=False) as f:
                out = f["renders"]
        except (OSError, ValueError, KeyError):
            return None
        if out.dtype != np.float16 or out.ndim != 5 or out.shape[2] not in (1, 3):
            return None
        out = np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out
        return torch.from_numpy(out) if out.shape == tuple(shape) else None

    def save(self, flame_digest: str, renders: torch.Tensor) -> bool:
        """Keep ``renders`` (T, V, 3, H, W) float16 unless the folder is at its budget."""
        a = renders.numpy()
        if (a.view(np.uint16)[:, :, :1] == a.view(np.uint16)).all():  # bit for bit
            a = a[:, :, :1]
        buf = io.BytesIO()
        np.savez_compressed(buf, renders=a)
        data = buf.getvalue()
        if self.used + len(data) > self.budget:
            return False
        self.used += len(data)
        return write_atomic(self.path(flame_digest), data)
