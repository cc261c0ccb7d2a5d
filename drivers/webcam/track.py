"""``flamecast track VIDEO --out flame.npz``: a video's face as a FLAME parameter sequence.

Every decoded frame is tracked (no frame is dropped; as fast as the CPU goes) with the same
tracker and smoothing as the live driver; frames without a usable face follow the face-lost
behaviour and are marked in ``face``. The file (numpy ``.npz``) holds:

- ``t`` (N,) float64: frame times in seconds from the video's timestamps;
- ``pose`` (N, 15) float32: global, neck, jaw, eye_left, eye_right axis-angle (radians);
- ``expression`` (N, E) float32 on the head space (``expression_names`` when named);
- ``eyelids`` (N, 2) float32: closure of the left and right eye, 0..1;
- ``face`` (N,) bool: a face was tracked in that frame;
- ``raw_pose`` (N, 15) float32: the unsmoothed fit (zeros where there is no face);
- ``head`` (str): the head space; ``tracker`` (str): "landmarks" or "deca+landmarks";
- ``fps`` (float): the video's mean frame rate; ``size`` (2,) int: width and height.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flamecast.plugins import HeadSpace

from .motion import Motion
from .options import WebcamOptions
from .sources import FileSource
from .tracker import FaceTracker


@dataclass
class Sequence:
    t: list[float] = field(default_factory=list)
    params: list[np.ndarray] = field(default_factory=list)
    raw: list[np.ndarray] = field(default_factory=list)
    face: list[bool] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)


def track_video(path: str | Path, options: WebcamOptions, head: HeadSpace, *, progress=None) -> tuple[Sequence, FaceTracker]:
    source = FileSource(str(path), start_ns=0)
    tracker = FaceTracker(options, head)
    motion = Motion(tracker.layout.size, min_cutoff=options.min_cutoff, beta=options.beta, d_cutoff=options.d_cutoff,
                    hold_seconds=options.hold_seconds, ease_seconds=options.ease_seconds)
    seq = Sequence()
    try:
        while True:
            item = source.next_frame()
            if item is None:
                break
            image, t = item
            measured = tracker.process(image)
            seq.t.append(t)
            seq.params.append(motion.update(measured, t))
            seq.raw.append(measured if measured is not None else np.zeros(tracker.layout.size))
            seq.face.append(measured is not None)
            seq.size = (image.shape[1], image.shape[0])
            if progress is not None:
                progress(len(seq.t))
    finally:
        source.close()
        tracker.close()
    return seq, tracker


def write_sequence(out: str | Path, seq: Sequence, tracker: FaceTracker) -> None:
    if not seq.t:
        raise ValueError("the video has no decodable frames")
    layout = tracker.layout
    parts = [layout.split(p) for p in seq.params]
    t = np.array(seq.t, np.float64)
    arrays = {
        "t": t - t[0],
        "pose": np.stack([p[0] for p in parts]).astype(np.float32),
        "expression": np.stack([p[1] for p in parts]).astype(np.float32),
        "eyelids": np.clip(np.stack([p[2] for p in parts]), 0, 1).astype(np.float32),
        "face": np.array(seq.face, bool),
        "raw_pose": np.stack([layout.split(p)[0] for p in seq.raw]).astype(np.float32),
        "head": np.array(tracker.head.name),
        "tracker": np.array(tracker.name),
        "fps": np.array((len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0),
        "size": np.array(seq.size, np.int64),
    }
    if tracker.head.expression_names is not None:
        arrays["expression_names"] = np.array(tracker.head.expression_names)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
