"""Datasets from videos you have: synchronized multi-view captures, or ordinary talking-head
videos (one view, for phases 1 and 2), each with its per-frame FLAME sequence file.

Every frame is centre-cropped to a square and resized to the dataset's size; the FLAME file
must have the video's frame count (``flamecast track VIDEO --out flame.npz`` writes one per
video). The head should fill the square as it fills flamecast's own views (the head centred,
the crown and the chin inside the frame), since the FLAME condition is drawn with flamecast's
cameras. Clips that fail are reported together, with the reason.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .checks import check_dataset
from .layout import (FLAME_FILE, ClipEntry, DatasetError, Manifest, read_flame, read_video, view_camera,
                     write_flame, write_manifest, write_video)


@dataclass(frozen=True)
class SourceClip:
    """One clip to import: its id, one video per view id, and the FLAME sequence file."""

    id: str
    videos: dict[str, Path]
    flame: Path


def square_resize(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of (T, H, W, 3) frames, resized to (T, size, size, 3) (area filter)."""
    import cv2

    t, h, w = frames.shape[:3]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = frames[:, y0:y0 + side, x0:x0 + side]
    if side == size:
        return np.ascontiguousarray(crop)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in crop])


def import_clip(out: Path, src: SourceClip, size: int, fps: float, split: str) -> ClipEntry:
    """Write one clip into the dataset folder; ValueError says what does not fit."""
    seq = read_flame(src.flame)
    if not src.videos:
        raise ValueError("no videos given")
    views = []
    for view_id, video in src.videos.items():
        try:
            frames = read_video(video)
        except Exception as exc:
            raise ValueError(f"video {video} is unreadable ({exc.__class__.__name__}: {exc})") from None
        if frames.shape[0] != len(seq):
            raise ValueError(f"video {video} has {frames.shape[0]} frames, {src.flame} has {len(seq)}")
        rel = f"{src.id}/{view_id}.mp4"
        write_video(out / rel, square_resize(frames, size), fps)
        views.append(view_camera(view_id, rel))
    if not np.all(np.isfinite(seq.pose)) or not np.all(np.isfinite(seq.expression)):
        raise ValueError(f"{src.flame} holds NaN/inf values")
    write_flame(out / src.id / FLAME_FILE, seq)
    return ClipEntry(src.id, len(seq), f"{src.id}/{FLAME_FILE}", tuple(views), split)


def build_dataset(out: Path, sources: Sequence[SourceClip], *, size: int = 256, fps: float = 25.0,
                  val_every: int = 10, progress: bool = True) -> Manifest:
    """Import ``sources`` into ``out`` (every ``val_every``-th clip held out for validation; 0 = none).

    Clips that cannot be imported are reported together in one DatasetError; the others are
    written first, so fixing the listed ones and re-running completes the folder."""
    from tqdm import tqdm

    out = Path(out)
    entries, problems = [], []
    for i, src in enumerate(tqdm(sources, desc="clips", disable=not progress)):
        split = "val" if val_every and i % val_every == val_every - 1 else "train"
        try:
            entries.append(import_clip(out, src, size, fps, split))
        except (ValueError, OSError) as exc:
            shutil.rmtree(out / src.id, ignore_errors=True)
            problems.append(f"  - clip {src.id}: {exc}")
    manifest = Manifest(size=size, fps=fps, clips=entries)
    write_manifest(out, manifest)
    if problems:
        raise DatasetError("\n".join([f"{len(problems)} clip(s) not imported (the rest are in {out}):"] + problems))
    check_dataset(out)
    return manifest


def multiview_sources(folder: Path) -> list[SourceClip]:
    """Clips from a folder of synchronized captures: ``folder/<clip>/<view id>.<ext>`` videos
    and ``folder/<clip>/flame.npz`` (view ids name flamecast's cameras: front, left30, ...)."""
    sources = []
    for clip_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        videos = {p.stem: p for p in sorted(clip_dir.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES}
        sources.append(SourceClip(clip_dir.name, videos, clip_dir / FLAME_FILE))
    if not sources:
        raise DatasetError(f"{folder} has no clip folders (<clip>/<view>.mp4 + <clip>/flame.npz)")
    return sources


def single_view_sources(folder: Path) -> list[SourceClip]:
    """Clips from ordinary talking-head videos: ``folder/<name>.<ext>`` with ``folder/<name>.npz``
    (its FLAME sequence); each becomes a one-view clip seen by the ``front`` camera."""
    sources = []
    for video in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
        sources.append(SourceClip(video.stem, {"front": video}, video.with_suffix(".npz")))
    if not sources:
        raise DatasetError(f"{folder} has no videos (<name>.mp4 with <name>.npz FLAME files)")
    return sources


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
