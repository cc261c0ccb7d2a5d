"""FLAME sequences for dataset clips that come without one: the webcam driver's tracker, run as
``flamecast track`` (FaceMesh landmarks fitted on the head's space, or DECA when its weights are
present and a FLAME head is asked for).

The tracker belongs to the webcam driver plugin, which the renderer does not import; the data
command reaches it the way a user would, through the command line, in a child process. Without
the plugin the command says what to install.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

from .build import SourceClip
from .layout import DatasetError

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def track_argv(video: Path, out: Path, head: str, options: Sequence[str]) -> list[str]:
    """The ``flamecast track`` command line for one video."""
    argv = [sys.executable, "-m", "flamecast.cli", "track", str(video), "--out", str(out), "--head", head]
    for option in options:
        argv += ["--option", option]
    return argv


def track_missing(sources: Sequence[SourceClip], *, view: str = "front", head: str = "builtin",
                  options: Sequence[str] = (), run: Runner = _run, progress=print) -> list[str]:
    """Write the FLAME file of every clip that has none, tracked on its ``view`` video (the
    first view when it has no such view). Returns the ids of the clips tracked; raises
    DatasetError listing the clips whose tracking failed, with the tracker's message."""
    tracked, problems = [], []
    for clip in sources:
        if clip.flame.is_file() or not clip.videos:
            continue
        video = clip.videos.get(view) or next(iter(clip.videos.values()))
        progress(f"tracking {clip.id}: {video.name} -> {clip.flame.name}")
        done = run(track_argv(video, clip.flame, head, options))
        if done.returncode != 0:
            message = (done.stderr or done.stdout or "").strip().splitlines()
            reason = message[-1] if message else f"exit status {done.returncode}"
            if "invalid choice: 'track'" in (done.stderr or ""):
                reason = "the webcam driver plugin (flamecast track) is not installed"
            problems.append(f"  {clip.id}: {video}: {reason}")
            continue
        tracked.append(clip.id)
    if problems:
        raise DatasetError("\n".join([f"tracking failed for {len(problems)} clip(s):"] + problems))
    return tracked
