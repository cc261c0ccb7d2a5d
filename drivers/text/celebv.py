"""A loader for CelebV-Text-style data: captions plus per-frame FLAME parameters from DECA.

On-disk format (one folder)::

    ROOT/
      captions/<clip_id>.txt   UTF-8, one caption a line; every non-empty line is a training caption
      flame/<clip_id>.npz      the clip's per-frame DECA parameters:
                                 pose (T, 6)  float  DECA codedict["pose"]: global axis-angle (3) + jaw axis-angle (3)
                                 exp  (T, n)  float  DECA codedict["exp"]: FLAME expression coefficients (n = 50)
                                 fps  ()      float  optional, frames per second (default 25)

A clip is used when both files exist. The head rotation is taken relative to the clip's median
pose (real videos start at any angle to the camera); clips are resampled to 25 fps and cut into
windows of at most 10 s, each paired with every caption of the clip. The expression stays in
FLAME's coefficient space, so models trained on it drive a FLAME head (n expression values), not
the built-in head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .corpus import CORPUS_FPS, MAX_SECONDS, MIN_SECONDS, Clip, Spec
from .rotation import axis_angle_to_matrix, matrix_to_axis_angle

CAPTIONED = "captioned"  # the label of real captions (they may name a motion, an emotion or both)


class CelebVError(ValueError):
    """The data folder does not follow the format; the message names the file and the problem."""


def read_captions(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_flame(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    with np.load(path) as data:
        for key in ("pose", "exp"):
            if key not in data:
                raise CelebVError(f"{path}: missing array {key!r} (need pose (T, 6) and exp (T, n))")
        pose, exp = data["pose"].astype(np.float64), data["exp"].astype(np.float32)
        fps = float(data["fps"]) if "fps" in data else CORPUS_FPS
    if pose.ndim != 2 or pose.shape[1] != 6 or exp.ndim != 2 or exp.shape[0] != pose.shape[0]:
        raise CelebVError(f"{path}: pose must be (T, 6) and exp (T, n) with the same T; got {pose.shape} and {exp.shape}")
    if not (np.isfinite(pose).all() and np.isfinite(exp).all()):
        raise CelebVError(f"{path}: contains NaN or infinite values")
    return pose, exp, fps


def relative_head(global_aa: np.ndarray) -> np.ndarray:
    """Head rotation relative to the clip's median pose: R_ref^T R_t as axis-angle."""
    ref = axis_angle_to_matrix(np.median(global_aa, axis=0))
    return matrix_to_axis_angle(ref.T[None] @ axis_angle_to_matrix(global_aa)).astype(np.float32)


def resample(x: np.ndarray, fps: float, target: float = CORPUS_FPS) -> np.ndarray:
    if abs(fps - target) < 1e-6:
        return x
    t_src = np.arange(x.shape[0]) / fps
    t_dst = np.arange(int(t_src[-1] * target) + 1) / target
    return np.stack([np.interp(t_dst, t_src, x[:, c]) for c in range(x.shape[1])], axis=1).astype(x.dtype)


def windows(n: int, fps: float = CORPUS_FPS) -> list[slice]:
    """Consecutive windows of at most MAX_SECONDS; a tail shorter than MIN_SECONDS is dropped."""
    size = int(MAX_SECONDS * fps)
    out = [slice(s, min(n, s + size)) for s in range(0, n, size)]
    return [w for w in out if (w.stop - w.start) >= MIN_SECONDS * fps]


def load_celebv(root: Path) -> list[Clip]:
    """Every (caption, window) pair of the folder; CelebVError when nothing usable is there."""
    root = Path(root)
    cap_dir, flame_dir = root / "captions", root / "flame"
    if not cap_dir.is_dir() or not flame_dir.is_dir():
        raise CelebVError(f"{root} needs the folders captions/ and flame/ (see docs/text-driver.md)")
    clips = []
    for cap_path in sorted(cap_dir.glob("*.txt")):
        flame_path = flame_dir / f"{cap_path.stem}.npz"
        captions = read_captions(cap_path)
        if not flame_path.is_file() or not captions:
            continue
        pose, exp, fps = read_flame(flame_path)
        head = resample(relative_head(pose[:, :3]), fps)
        jaw = resample(pose[:, 3:].astype(np.float32), fps)
        exp = resample(exp, fps)
        for w in windows(head.shape[0]):
            for caption in captions:
                clips.append(Clip(caption, Spec(motion=CAPTIONED, emotion=CAPTIONED), head[w], jaw[w], exp[w],
                                  extra={"clip_id": cap_path.stem}))
    if not clips:
        raise CelebVError(f"{root}: no clip has both captions/<id>.txt and flame/<id>.npz with at least {MIN_SECONDS:g} s")
    return clips
