"""The training Dataset: the paper's sampling over a checked dataset folder.

A sample is one clip's reference frame, a window of W consecutive frames seen from V of its
views, and the FLAME condition of those frames and views:

* ``reference`` (3, H, W) in [0, 1]: a random frame of the clip's first view (``front`` in
  flamecast's datasets), shifted and scaled a little on its own (the portrait a session starts
  from is never framed exactly like the video);
* ``target`` (W, V, 3, H, W) in [-1, 1]: the frames;
* ``renders`` (W, V, 3, H, W) in [0, 1]: the FLAME renderings of those frames, drawn by
  ``generator.FlameConditioner``, the object serving conditions with (built-in head, grey
  Lambert, flamecast's cameras for the views), so training and serving see the same pictures.

Augmentation: one colour jitter for the reference and the target (brightness, contrast,
saturation) and one small shift/scale applied to the target and its renderings together (so
they stay aligned). Sample ``i`` is drawn from a generator seeded with (seed, i): the sequence
is the same whatever the number of workers, and a resumed run continues it exactly.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .layout import ClipEntry, Manifest, read_flame, read_video


@dataclass(frozen=True)
class Sampling:
    """What one sample holds and how it is augmented."""

    frames: int = 8  # W
    views: int = 4  # V
    augment: bool = True
    color: float = 0.1  # colour jitter amplitude
    shift: float = 0.03  # fraction of the side
    scale: float = 0.05


class ClipCache:
    """Decoded frames and FLAME renderings of recently used clips (per worker process); the
    renderings are read from the dataset's ``renders.RenderStore`` where it has them (``store``:
    False draws every time). ``seconds`` holds the time spent decoding and rendering."""

    def __init__(self, root: Path, size: int, capacity: int = 64, device: str | torch.device = "cpu",
                 store: bool = True) -> None:
        self.root, self.size, self.capacity, self.store = Path(root), size, capacity, store
        self.device = torch.device(device)  # where the renderings are drawn (cuda: main process only)
        self._items: OrderedDict[str, tuple[np.ndarray, torch.Tensor]] = OrderedDict()
        self._conditioners: dict = {}
        self._stores: dict = {}
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def get(self, clip: ClipEntry) -> tuple[np.ndarray, torch.Tensor]:
        """(T, V, H, W, 3) uint8 frames and (T, V, 3, H, W) float16 renders of ``clip``."""
        if clip.id in self._items:
            self._items.move_to_end(clip.id)
            return self._items[clip.id]
        t0 = time.perf_counter()
        frames = np.stack([read_video(self.root / v.video) for v in clip.views], 1)
        t1 = time.perf_counter()
        renders = self.stored_render(clip)
        self.seconds["decode"] += t1 - t0
        self.seconds["render"] += time.perf_counter() - t1
        self._items[clip.id] = (frames, renders)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return frames, renders

    def stored_render(self, clip: ClipEntry) -> torch.Tensor:
        """``render(clip)`` in float16, read from the dataset's render store when it holds it."""
        if not self.store:
            return self.render(clip).to(torch.float16)
        from .renders import RenderStore, file_digest

        key = tuple(v.spec() for v in clip.views)
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = RenderStore(self.root, self.conditioner(key), key, self.size, self.device)
        digest = file_digest(self.root / clip.flame)
        renders = store.load(digest, (clip.frames, len(key), 3, self.size, self.size))
        if renders is None:
            renders = self.render(clip).to(torch.float16)
            store.save(digest, renders)
        return renders

    def conditioner(self, views: tuple):
        from ..generator import FlameConditioner

        cond = self._conditioners.get(views)
        if cond is None:
            cond = self._conditioners[views] = FlameConditioner(list(views), self.size, self.device)
        return cond

    def render(self, clip: ClipEntry, batch: int = 32) -> torch.Tensor:
        """FLAME renderings of every frame and view of ``clip``, as serving draws them."""
        cond = self.conditioner(tuple(v.spec() for v in clip.views))
        frames = read_flame(self.root / clip.flame).frames()
        return torch.cat([cond(frames[s:s + batch]).cpu() for s in range(0, len(frames), batch)])

    def __getstate__(self) -> dict:  # a worker process starts empty, rendering on the CPU
        return {**self.__dict__, "_items": OrderedDict(), "_conditioners": {}, "_stores": {},
                "device": torch.device("cpu"), "seconds": defaultdict(float)}


def _color_jitter(x: torch.Tensor, bcs: list[float]) -> torch.Tensor:
    """x (..., 3, H, W) in [0, 1]: brightness, contrast and saturation factors ``bcs``."""
    b, c, s = bcs
    grey = x.mean(-3, keepdim=True)
    x = grey + (x - grey) * s
    mean = x.mean((-3, -2, -1), keepdim=True)
    return ((x - mean) * c + mean) * b


def _affine(x: torch.Tensor, scale: float, dx: float, dy: float) -> torch.Tensor:
    """Zoom by ``scale`` and shift by (dx, dy) (fractions of the side) images (N, C, H, W)."""
    theta = torch.tensor([[1 / scale, 0, -2 * dx], [0, 1 / scale, -2 * dy]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Flame2VideoDataset(torch.utils.data.Dataset):
    """``length`` samples drawn from the clips of one split (see the module docstring)."""

    def __init__(self, root: Path, manifest: Manifest, sampling: Sampling, *, split: str = "train",
                 length: int = 1000, seed: int = 0, offset: int = 0, cache: ClipCache | None = None) -> None:
        self.root, self.manifest, self.sampling = Path(root), manifest, sampling
        self.clips = [c for c in manifest.split(split) if c.frames >= sampling.frames
                      and len(c.views) >= sampling.views]
        if not self.clips:
            raise ValueError(f"no {split} clip has {sampling.frames} frames and {sampling.views} views")
        self.length, self.seed, self.offset = length, seed, offset
        self.cache = cache or ClipCache(root, manifest.size)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.offset + i])
        s = self.sampling
        clip = self.clips[int(rng.integers(len(self.clips)))]
        frames, renders = self.cache.get(clip)
        views = np.sort(rng.choice(len(clip.views), size=s.views, replace=False))
        start = int(rng.integers(clip.frames - s.frames + 1))
        ref_t = int(rng.integers(clip.frames))
        target = torch.from_numpy(frames[start:start + s.frames, views]).permute(0, 1, 4, 2, 3).float() / 255
        cond = renders[start:start + s.frames, views].float()
        reference = torch.from_numpy(frames[ref_t, 0]).permute(2, 0, 1).float() / 255
        if s.augment:
            reference, target, cond = self._augment(rng, reference, target, cond)
        return {"reference": reference, "target": target * 2 - 1, "renders": cond,
                "clip": clip.id, "start": start, "views": ",".join(clip.views[v].id for v in views)}

    def _augment(self, rng, reference, target, cond):
        s = self.sampling
        bcs = (1 + rng.uniform(-s.color, s.color, 3)).tolist()  # one jitter for the reference and the window
        reference, target = _color_jitter(reference, bcs).clamp(0, 1), _color_jitter(target, bcs).clamp(0, 1)
        fw, v = target.shape[:2]
        zoom, dx, dy = 1 + rng.uniform(-s.scale, s.scale), *rng.uniform(-s.shift, s.shift, 2)
        flat = torch.cat([target, cond]).flatten(0, 1)
        flat = _affine(flat, zoom, dx, dy).view(2 * fw, v, *target.shape[2:])
        ref_zoom, rdx, rdy = 1 + rng.uniform(-s.scale, s.scale), *rng.uniform(-s.shift, s.shift, 2)
        reference = _affine(reference[None], ref_zoom, rdx, rdy)[0]
        return reference, flat[:fw], flat[fw:]
