"""Every clip of a dataset checked before training starts.

A clip is refused, with its id and the reason, when a view's video is missing or unreadable,
a video's frame count or picture size differs from the manifest, the FLAME file is missing,
malformed, of another length or holds NaN/inf values, or a view id is unknown. ``check_dataset``
raises one ``DatasetError`` listing every refused clip (so a run never dies hours in).

Every clip is checked every time. Only the decoding is remembered: a video's frame count and
picture size are kept in ``DATASET/.cache/videos.json`` with the file's size and modification
and change times (``VideoFacts``); a video written since is decoded again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .layout import (ClipEntry, DatasetError, Manifest, cache_dir, file_key, read_flame, read_manifest, read_video,
                     write_atomic)

FACTS = "videos.json"


@dataclass(frozen=True)
class ClipProblem:
    clip: str
    reason: str

    def __str__(self) -> str:
        return f"clip {self.clip}: {self.reason}"


class VideoFacts:
    """Frame count, height and width of a dataset's videos, decoded once and remembered under each
    file's ``file_key`` in ``DATASET/.cache/videos.json`` (only the videos asked about since
    loading are written back)."""

    def __init__(self, root: Path) -> None:
        self.root, self.path = Path(root), cache_dir(root) / FACTS
        try:
            known = json.loads(self.path.read_text())
        except (OSError, ValueError):
            known = {}
        self.known: dict[str, dict] = known if isinstance(known, dict) else {}
        self.seen: dict[str, dict] = {}

    def shape(self, video: str) -> tuple[int, int, int]:
        """(frames, height, width) of ``root/video``; decodes it when the file is new or changed
        (and raises what decoding raises)."""
        key = file_key(self.root / video)
        entry = self.known.get(video)
        if not (isinstance(entry, dict) and entry.get("key") == key and len(entry.get("shape", ())) == 3):
            entry = {"key": key, "shape": list(read_video(self.root / video).shape[:3])}
        self.seen[video] = entry
        return tuple(entry["shape"])

    def save(self) -> None:
        if self.seen != self.known:
            write_atomic(self.path, json.dumps(self.seen).encode())


def check_clip(root: Path, clip: ClipEntry, size: int, *, decode: bool = True,
               facts: VideoFacts | None = None) -> list[ClipProblem]:
    """What is wrong with one clip (empty when it is usable); ``facts`` remembers decoded videos."""
    problems = [ClipProblem(clip.id, r) for r in _flame_problems(root, clip)]
    if not clip.views:
        problems.append(ClipProblem(clip.id, "has no views"))
    for view in clip.views:
        reason = _view_problem(root, clip, view, size, decode, facts)
        if reason:
            problems.append(ClipProblem(clip.id, f"view {view.id}: {reason}"))
    return problems


def _flame_problems(root: Path, clip: ClipEntry) -> list[str]:
    path = Path(root) / clip.flame
    if not path.is_file():
        return [f"FLAME file {path} is missing"]
    try:
        seq = read_flame(path)
    except Exception as exc:  # a broken file of any kind is the clip's problem, not a crash
        return [f"FLAME file {path} is unreadable: {exc}"]
    out = []
    if len(seq) != clip.frames:
        out.append(f"FLAME file has {len(seq)} frames, the manifest says {clip.frames}")
    for name, values in seq.arrays():
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.argwhere(bad)[0][0]) if values.ndim > 1 else 0
            out.append(f"FLAME {name} holds NaN/inf values (first at frame {first})")
    return out


def _view_problem(root: Path, clip: ClipEntry, view, size: int, decode: bool, facts: VideoFacts | None) -> str | None:
    from flamecast.renderer.raster import view_from_id

    try:
        view_from_id(view.id)
    except ValueError as exc:
        return str(exc)
    path = Path(root) / view.video
    if not path.is_file():
        return f"video {path} is missing"
    if not decode:
        return None
    try:
        n, height, width = facts.shape(view.video) if facts is not None else read_video(path).shape[:3]
    except Exception as exc:
        return f"video {path} is unreadable ({exc.__class__.__name__}: {exc})"
    if n != clip.frames:
        return f"video {path} has {n} frames, the manifest says {clip.frames}"
    if (height, width) != (size, size):
        return f"video {path} is {width}x{height}, the dataset's size is {size}x{size}"
    return None


def check_dataset(root: Path, *, min_frames: int = 1, min_views: int = 1, decode: bool = True) -> Manifest:
    """Read and check the whole dataset; DatasetError lists every refused clip and the reason.

    ``min_frames`` (the training window) and ``min_views`` (the views a phase needs) refuse
    clips too short or with too few views for the run."""
    manifest = read_manifest(root)
    problems: list[ClipProblem] = []
    ids = [c.id for c in manifest.clips]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(ClipProblem(dup, "appears more than once in the manifest"))
    facts = VideoFacts(root)
    for clip in manifest.clips:
        problems += check_clip(root, clip, manifest.size, decode=decode, facts=facts)
        if clip.frames < min_frames:
            problems.append(ClipProblem(clip.id, f"has {clip.frames} frames; the run needs windows of {min_frames}"))
        if len(clip.views) < min_views:
            problems.append(ClipProblem(clip.id, f"has {len(clip.views)} views; the run needs {min_views}"))
    facts.save()
    if not manifest.clips:
        raise DatasetError(f"{root}: the manifest lists no clips")
    if problems:
        lines = [f"{root}: {len(problems)} problem(s); fix or remove these clips:"] + [f"  - {p}" for p in problems]
        raise DatasetError("\n".join(lines))
    return manifest
