"""The FLAME2Video dataset folder: a manifest, and per clip V view videos and one FLAME sequence.

::

    DATASET/
        manifest.json
        <clip>/flame.npz            per-frame FLAME parameters (FlameSequence)
        <clip>/<view>.mp4           one video per view, all with the clip's frame count

``manifest.json``::

    {"format": "flamecast-flame2video-dataset", "version": 1, "size": 128, "fps": 25,
     "clips": [{"id": "c000", "frames": 48, "split": "train", "flame": "c000/flame.npz",
                "views": [{"id": "front", "yaw_deg": 0.0, "pitch_deg": 0.0, "video": "c000/front.mp4"},
                          {"id": "left30", "yaw_deg": 30.0, "pitch_deg": 0.0, "video": "c000/left30.mp4"}]}]}

A view's camera is flamecast's own (``renderer.raster.cameras``): a direction around the head
centre (yaw toward the avatar's own left, pitch up), looking at the centre with a 20 degree
field of view, exactly the cameras serving renders the FLAME condition with. Its ``id`` is a
view id (``front``, ``left30``, ``right45up15``). ``split`` is ``train`` or ``val`` (held out
for validation). Single-view clips (phases 1 and 2) have one view.

``flame.npz`` holds ``pose`` (T, 15) axis-angle (global, neck, jaw, eyes), ``expression``
(T, E), and optionally ``eyelids`` (T, 2), ``translation`` (T, 3), ``shape`` (S,) or (T, S)
and ``fps`` (scalar): the file ``flamecast track VIDEO --out flame.npz`` writes.

``DATASET/.cache/`` holds what training works out from the files and keeps for the next run
(``checks.VideoFacts``, ``renders.RenderStore``); each entry names the files it came from, so a
changed file is never served stale, and deleting the folder only costs the time to redo it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

FORMAT = "flamecast-flame2video-dataset"
VERSION = 1
MANIFEST = "manifest.json"
FLAME_FILE = "flame.npz"
SPLITS = ("train", "val")
CACHE = ".cache"
log = logging.getLogger(__name__)


def cache_dir(root: Path) -> Path:
    """Where a dataset keeps what training derives from its files (see the module docstring)."""
    return Path(root) / CACHE


def file_key(path: Path) -> list[int]:
    """Size, modification and change time (ns) of ``path``: any write to the file changes it."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def write_atomic(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` through a temporary file and a rename (readers and concurrent
    writers see a whole file); False, with a warning, where the folder is not writable."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.warning("cannot write %s (%s); it will be worked out again next time", path, exc)
        tmp.unlink(missing_ok=True)
        return False


class DatasetError(ValueError):
    """The dataset cannot be used; the message names each refused clip and why."""


@dataclass(frozen=True)
class ViewCamera:
    """One view of a clip: flamecast's camera direction and the view's video file."""

    id: str
    yaw_deg: float
    pitch_deg: float
    video: str

    def spec(self):
        from flamecast.renderer.raster import ViewSpec

        return ViewSpec(self.id, self.yaw_deg, self.pitch_deg)


@dataclass(frozen=True)
class ClipEntry:
    id: str
    frames: int
    flame: str
    views: tuple[ViewCamera, ...]
    split: str = "train"

    @property
    def view_ids(self) -> tuple[str, ...]:
        return tuple(v.id for v in self.views)


@dataclass
class Manifest:
    size: int
    fps: float = 25.0
    clips: list[ClipEntry] = field(default_factory=list)

    def split(self, name: str) -> list[ClipEntry]:
        return [c for c in self.clips if c.split == name]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "size": self.size, "fps": self.fps,
                "clips": [asdict(c) for c in self.clips]}


def view_camera(view_id: str, video: str) -> ViewCamera:
    """The camera a view id names (``left30`` -> yaw 30 degrees), with its video path."""
    from flamecast.renderer.raster import view_from_id

    spec = view_from_id(view_id)
    return ViewCamera(spec.id, spec.yaw_deg, spec.pitch_deg, video)


def read_manifest(root: Path) -> Manifest:
    """Parse ``root/manifest.json``; DatasetError says what is wrong with it."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{path} not found: a dataset folder holds manifest.json "
                           "(make one with `flamecast data flame2video build|make-synthetic`)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not JSON: {exc}") from None
    if raw.get("format") != FORMAT:
        raise DatasetError(f"{path}: format is {raw.get('format')!r}, expected {FORMAT!r}")
    try:
        clips = [_clip(c) for c in raw["clips"]]
        return Manifest(size=int(raw["size"]), fps=float(raw.get("fps", 25.0)), clips=clips)
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: malformed entry ({exc.__class__.__name__}: {exc})") from None


def _clip(c: dict) -> ClipEntry:
    views = tuple(ViewCamera(str(v["id"]), float(v["yaw_deg"]), float(v["pitch_deg"]), str(v["video"]))
                  for v in c["views"])
    split = str(c.get("split", "train"))
    if split not in SPLITS:
        raise ValueError(f"clip {c.get('id')}: split must be one of {SPLITS}")
    return ClipEntry(str(c["id"]), int(c["frames"]), str(c["flame"]), views, split)


def write_manifest(root: Path, manifest: Manifest) -> Path:
    path = Path(root) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest.to_dict(), indent=1))
    return path


# ---- FLAME sequences -------------------------------------------------------------------

@dataclass
class FlameSequence:
    """Per-frame FLAME parameters of one clip."""

    pose: np.ndarray  # (T, 15)
    expression: np.ndarray  # (T, E)
    eyelids: np.ndarray | None = None  # (T, 2)
    translation: np.ndarray | None = None  # (T, 3)
    shape: np.ndarray | None = None  # (S,) or (T, S)
    fps: float | None = None

    def __len__(self) -> int:
        return int(self.pose.shape[0])

    def arrays(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in ("pose", "expression", "eyelids", "translation", "shape"):
            value = getattr(self, name)
            if value is not None:
                yield name, value

    def slice(self, idx) -> FlameSequence:
        """The frames ``idx`` (a slice or an index array)."""
        def take(a):
            return None if a is None else (a if a.ndim == 1 and a is self.shape else a[idx])

        return FlameSequence(self.pose[idx], self.expression[idx], take(self.eyelids), take(self.translation),
                             take(self.shape), self.fps)

    def frames(self, idx=None) -> list:
        """FlameFrames (what drivers send and the generator conditions on) for frames ``idx``."""
        from flamecast.plugins import FlameFrame

        seq = self if idx is None else self.slice(idx)
        out = []
        for i in range(len(seq)):
            out.append(FlameFrame(seq=i, pose=seq.pose[i], expression=seq.expression[i],
                                  eyelids=None if seq.eyelids is None else seq.eyelids[i],
                                  translation=None if seq.translation is None else seq.translation[i]))
        return out


def read_flame(path: Path) -> FlameSequence:
    """Read a FLAME sequence file; ValueError on a missing or malformed array."""
    with np.load(Path(path), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    for key in ("pose", "expression"):
        if key not in arrays:
            raise ValueError(f"has no '{key}' array (arrays: {', '.join(sorted(arrays)) or 'none'})")
    pose = arrays["pose"].astype(np.float32)
    if pose.ndim != 2 or pose.shape[1] != 15:
        raise ValueError(f"pose has shape {pose.shape}; expected (frames, 15)")
    expr = arrays["expression"].astype(np.float32)
    if expr.ndim != 2 or expr.shape[0] != pose.shape[0]:
        raise ValueError(f"expression has shape {expr.shape}; expected ({pose.shape[0]}, E)")
    opt = {}
    for key, width in (("eyelids", 2), ("translation", 3)):
        if key in arrays:
            a = arrays[key].astype(np.float32)
            if a.shape != (pose.shape[0], width):
                raise ValueError(f"{key} has shape {a.shape}; expected ({pose.shape[0]}, {width})")
            opt[key] = a
    if "shape" in arrays:
        opt["shape"] = arrays["shape"].astype(np.float32)
    fps = float(arrays["fps"]) if "fps" in arrays else None
    return FlameSequence(pose, expr, fps=fps, **opt)


def write_flame(path: Path, seq: FlameSequence) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if seq.fps is None else {"fps": np.float32(seq.fps)}
    np.savez_compressed(path, **dict(seq.arrays()), **extra)
    return path


# ---- videos ----------------------------------------------------------------------------

def read_video(path: Path) -> np.ndarray:
    """All frames of a video as (T, H, W, 3) uint8 RGB (PyAV)."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError("holds no video frames")
    return np.stack(frames)


def write_video(path: Path, frames: np.ndarray, fps: float = 25.0, crf: int = 12) -> Path:
    """(T, H, W, 3) uint8 RGB -> H.264 mp4 (yuv444p at ``crf``: near-lossless, small)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
