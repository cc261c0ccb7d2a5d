"""A multi-view talking-head dataset that flamecast draws itself.

Avatars: real photographs (scikit-image's astronaut and matplotlib's Grace Hopper, both on disk
with those packages, or your own) are fitted and baked into a UV texture on the built-in head,
exactly as the ``mesh`` generator does (``generators.fitting`` + ``generators.texture``; it needs
mediapipe's FaceMesh). A baked avatar is saved as ``<name>.npz`` so a machine without mediapipe
can render from it (``--avatars DIR``).

Clips: random smooth FLAME motion (head turns, nods, jaw, expressions, blinks, a little
translation), rendered from V of flamecast's cameras at once with the textured head. Per clip
augmentations: background colour, texture colour gain, identity (shape) jitter, the views
drawn from a pool. The FLAME condition later drawn for training (``data.py``) uses the same
cameras, so the dataset is aligned by construction. It is a pipeline-proof dataset: a textured
mesh has no hair motion, no teeth, no lighting changes.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np

from .layout import FLAME_FILE, ClipEntry, FlameSequence, Manifest, view_camera, write_flame, write_manifest, write_video

VIEW_POOL = ("front", "left30", "right30", "up15", "left15", "right15", "down10", "left45", "right45")


@dataclass
class Avatar:
    """A photograph baked onto the built-in head."""

    name: str
    texture: np.ndarray  # (T, T, 3) uint8 UV atlas
    flat: np.ndarray  # (F,) bool: faces drawn in one flat colour
    flat_color: np.ndarray  # (F, 3) float in [0, 1]
    shape: np.ndarray  # (S,) fitted identity

    def save(self, folder: Path) -> Path:
        path = Path(folder) / f"{self.name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, texture=self.texture, flat=self.flat, flat_color=self.flat_color, shape=self.shape)
        return path

    @classmethod
    def load(cls, path: Path) -> Avatar:
        with np.load(path, allow_pickle=False) as d:
            return cls(Path(path).stem, d["texture"], d["flat"], d["flat_color"], d["shape"])


def offline_photos() -> dict[str, bytes]:
    """The real photographs every flamecast install has on disk: name -> encoded image."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buf, format="PNG")
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = f.read()
    return {"astronaut": buf.getvalue(), "grace_hopper": hopper}


def bake_avatar(name: str, photo: bytes, head=None, texture_size: int = 512) -> Avatar:
    """Fit the built-in head to the photo's face and bake its texture (needs mediapipe)."""
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        raise RuntimeError("baking an avatar needs mediapipe (FaceMesh); bake on a machine that has it with "
                           "`flamecast data flame2video bake-avatars --out DIR` and pass --avatars DIR") from None
    from flamecast.renderer.generators.fitting import fit_portrait
    from flamecast.renderer.generators.texture import bake_texture
    from flamecast.renderer.head import load_head
    from flamecast.renderer.portrait import load_portrait

    head = head or load_head("builtin").eval()
    portrait = load_portrait(photo)
    fit = fit_portrait(head, portrait.landmarks)
    tex = bake_texture(head, fit, portrait, size=texture_size)
    return Avatar(name, (tex.image.numpy() * 255 + 0.5).astype(np.uint8), tex.flat.numpy(),
                  tex.flat_color.numpy().astype(np.float32), fit.shape.detach().numpy().astype(np.float32))


def _smooth(rng: np.random.Generator, t: np.ndarray, amp: float, fmin: float = 0.1, fmax: float = 0.7,
            terms: int = 3) -> np.ndarray:
    """A smooth random signal: a sum of ``terms`` sinusoids with random frequency and phase."""
    out = np.zeros_like(t)
    for _ in range(terms):
        f, ph = rng.uniform(fmin, fmax), rng.uniform(0, 2 * math.pi)
        out += np.sin(2 * math.pi * f * t + ph)
    return (amp / terms) * out


def random_motion(rng: np.random.Generator, frames: int, fps: float, n_expression: int = 16) -> FlameSequence:
    """Random smooth head motion, speech-like jaw, a few expressions, blinks, small translation."""
    t = np.arange(frames) / fps
    pose = np.zeros((frames, 15), np.float32)
    head = np.stack([_smooth(rng, t, 0.35), _smooth(rng, t, 0.9), _smooth(rng, t, 0.2)], -1)  # pitch, yaw, roll
    pose[:, 0:3], pose[:, 3:6] = head * 0.6, head * 0.4
    pose[:, 6] = np.clip(0.12 + _smooth(rng, t, 0.3, 1.5, 4.0), 0.0, 0.35)  # jaw opens about x
    gaze = np.stack([_smooth(rng, t, 0.1), _smooth(rng, t, 0.2), np.zeros_like(t)], -1)
    pose[:, 9:12] = pose[:, 12:15] = gaze
    expr = np.zeros((frames, n_expression), np.float32)
    for ch in rng.choice(n_expression, size=3, replace=False):
        expr[:, ch] = np.clip(_smooth(rng, t, 1.2, 0.1, 0.4) + rng.uniform(-0.2, 0.3), 0.0, 0.8)
    eyelids = np.zeros((frames, 2), np.float32)
    for start in np.flatnonzero(rng.random(frames) < 1.0 / (2.5 * fps)):
        eyelids[start:start + 4] = [1.0, 1.0]
    translation = np.stack([_smooth(rng, t, 0.01), _smooth(rng, t, 0.01), _smooth(rng, t, 0.01)], -1)
    return FlameSequence(pose, expr, eyelids, translation.astype(np.float32), fps=fps)


def render_avatar(head, avatar: Avatar, seq: FlameSequence, views: Sequence[str], size: int,
                  background: tuple[int, int, int], gain: np.ndarray, shape_jitter: np.ndarray,
                  batch: int = 16) -> np.ndarray:
    """(T, V, size, size, 3) uint8: the textured avatar from flamecast's cameras for ``views``
    (the cameras FLAME conditions are drawn with: the whole head framed, 20 degree field of view)."""
    import torch

    from flamecast.renderer.generators.mesh import MeshOptions, MeshSession
    from flamecast.renderer.generators.texture import BakedTexture

    image = torch.from_numpy(np.clip(avatar.texture.astype(np.float32) / 255.0 * gain, 0, 1))
    flat_color = torch.from_numpy(np.clip(avatar.flat_color * gain, 0, 1).astype(np.float32))
    texture = BakedTexture(image, flat_color[0], flat_color[0], torch.from_numpy(avatar.flat), flat_color)
    fit = SimpleNamespace(shape=torch.from_numpy(avatar.shape + shape_jitter))
    options = MeshOptions(views=tuple(views), size=size, framing="full", background=background)
    session = MeshSession(head, fit, texture, options)
    out = []
    for s in range(0, len(seq), batch):
        part = seq.slice(slice(s, s + batch))
        out.append(session.render_arrays(part.pose, part.expression, part.eyelids, part.translation).cpu().numpy())
    return np.concatenate(out)


@dataclass
class SyntheticSettings:
    out: Path
    clips: int = 8
    frames: int = 32
    views: int = 4
    size: int = 128
    fps: float = 25.0
    seed: int = 0
    val_every: int = 4  # every 4th clip is held out
    vary_views: bool = False  # draw each clip's views beyond "front" from VIEW_POOL


def clip_views(rng: np.random.Generator, s: SyntheticSettings) -> list[str]:
    if not s.vary_views:
        return list(VIEW_POOL[: s.views])
    others = rng.choice(len(VIEW_POOL) - 1, size=s.views - 1, replace=False) + 1
    return ["front"] + [VIEW_POOL[i] for i in sorted(others)]


def make_synthetic(s: SyntheticSettings, avatars: Sequence[Avatar], progress: bool = True) -> Manifest:
    """Render ``s.clips`` clips of random motion of the avatars into a dataset folder."""
    from tqdm import tqdm

    from flamecast.renderer.head import load_head

    if not avatars:
        raise ValueError("no avatars to render")
    head = load_head("builtin").eval()
    rng = np.random.default_rng(s.seed)
    entries = []
    for i in tqdm(range(s.clips), desc="synthetic clips", disable=not progress):
        avatar = avatars[i % len(avatars)]
        views = clip_views(rng, s)
        seq = random_motion(rng, s.frames, s.fps, head.n_expression)
        background = tuple(int(c) for c in rng.integers(0, 256, 3))
        gain = rng.uniform(0.85, 1.15, 3).astype(np.float32)
        jitter = rng.normal(0, 0.3, avatar.shape.shape).astype(np.float32)
        video = render_avatar(head, avatar, seq, views, s.size, background, gain, jitter)
        cid = f"c{i:04d}"
        cams = []
        for v, view_id in enumerate(views):
            write_video(s.out / cid / f"{view_id}.mp4", video[:, v], s.fps)
            cams.append(view_camera(view_id, f"{cid}/{view_id}.mp4"))
        write_flame(s.out / cid / FLAME_FILE, seq)
        split = "val" if s.val_every and i % s.val_every == s.val_every - 1 else "train"
        entries.append(ClipEntry(cid, s.frames, f"{cid}/{FLAME_FILE}", tuple(cams), split))
    manifest = Manifest(size=s.size, fps=s.fps, clips=entries)
    write_manifest(s.out, manifest)
    return manifest
