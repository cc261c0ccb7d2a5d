"""Render the pictures of docs/portrait.md: the same portraits and poses through the ``mesh``
and ``portrait`` generators, side by side.

    python bench/render_generator_docs.py [--out docs/images] [--size 192]

Writes ``generator_astronaut.png`` (the default portrait) and ``generator_grace_hopper.png``
(matplotlib's sample photo). Rows: mesh, portrait. Columns: the photo's own pose (front view),
head turned 20 degrees to its left, 30 degrees to its right, jaw open with a frown, blink with a
glance, and the views left30, right30 and up15 at the photo's pose.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flamecast.plugins import FlameFrame, GeneratorSessionSpec
from flamecast.plugins import BUILTIN_EXPRESSION_NAMES as NAMES
from flamecast.renderer.generators.mesh import MeshGenerator, MeshOptions
from flamecast.renderer.generators.portrait import PortraitGenerator, PortraitOptions
from flamecast.renderer.portrait import encode_png


def grace_hopper() -> bytes:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return encode_png(np.asarray(Image.open(f).convert("RGB")))


def drives(pose0: np.ndarray, expr0: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    turn = pose0.copy()
    turn[1] += np.radians(20)
    away = pose0.copy()
    away[1] -= np.radians(30)
    sad = pose0.copy()
    sad[6] = 0.3
    frown = np.zeros_like(expr0)
    frown[NAMES.index("frown")] = 1.0
    frown[NAMES.index("brow_inner_raise")] = 0.8
    glance = pose0.copy()
    glance[10] = glance[13] = 0.35
    closed = np.array([0.7, 0.7], np.float32)
    open_ = np.zeros(2, np.float32)
    return [(pose0, expr0, open_), (turn, expr0, open_), (away, expr0, open_), (sad, frown, open_),
            (glance, expr0, closed)]


def row(session, pose0, expr0) -> np.ndarray:
    tiles = []
    for pose, expr, lids in drives(pose0, expr0):
        frame = FlameFrame(session_id="d", seq=0, capture_ns=0, pose=pose.astype(np.float32),
                           expression=expr.astype(np.float32), eyelids=lids)
        tiles.append(session.step([frame])[0].views[0])
    frame = FlameFrame(session_id="d", seq=0, capture_ns=0, pose=pose0.astype(np.float32),
                       expression=expr0.astype(np.float32))
    tiles.extend(session.step([frame])[0].views[1:])
    return np.concatenate(tiles, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/images")
    p.add_argument("--size", type=int, default=192)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    portrait_gen, mesh_gen = PortraitGenerator(), MeshGenerator()
    for name, data in (("astronaut", None), ("grace_hopper", grace_hopper())):
        ps = portrait_gen.open_session(GeneratorSessionSpec(name, data, PortraitOptions(size=args.size)))
        ms = mesh_gen.open_session(GeneratorSessionSpec(name, data, MeshOptions(size=args.size)))
        pose0, expr0 = ps.fit.pose.numpy(), ps.fit.expression.numpy()
        grid = np.concatenate([row(ms, pose0, expr0), row(ps, pose0, expr0)], 0)
        Image.fromarray(grid).save(out / f"generator_{name}.png", optimize=True)
        print(out / f"generator_{name}.png")


if __name__ == "__main__":
    main()
