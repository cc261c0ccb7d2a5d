"""Benchmark the ``portrait`` generator: session open and CPU time per frame on one core.

    python bench/portrait_generator.py [--views 4] [--size 256] [--frames 60] [--portrait FILE]

Frames go through ``PortraitSession.step`` as the worker calls it, with a moving head (yaw and
pitch sweeps, jaw, blinks, smile). torch runs on one thread. Warm-up (the first open, which pays
the imports and model loads, and the first frames) is reported on its own lines.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from flamecast.plugins import FlameFrame, GeneratorSessionSpec  # noqa: E402
from flamecast.renderer.generators.portrait import PortraitGenerator, PortraitOptions  # noqa: E402
from flamecast.renderer.raster import DEFAULT_VIEWS  # noqa: E402


def frames(n: int, base_pose: np.ndarray, n_expr: int) -> list[FlameFrame]:
    out = []
    for i in range(n):
        t = i / 25.0
        pose = base_pose.astype(np.float32).copy()
        pose[1] += 0.4 * np.sin(t)
        pose[0] += 0.15 * np.sin(0.7 * t)
        pose[6] = 0.2 * max(0.0, np.sin(3 * t))
        expr = np.zeros(n_expr, np.float32)
        expr[0] = 0.5 + 0.5 * np.sin(t)
        lids = np.full(2, 1.0 if i % 40 < 4 else 0.0, np.float32)
        out.append(FlameFrame(session_id="bench", seq=i, capture_ns=i, pose=pose, expression=expr, eyelids=lids))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", type=int, default=4, help="number of default views (1-4)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--portrait", default=None, help="portrait file (default: the built-in portrait)")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = open(args.portrait, "rb").read() if args.portrait else None
    views = tuple(v.id for v in DEFAULT_VIEWS[: args.views])
    gen = PortraitGenerator()
    opts = PortraitOptions(views=views, size=args.size)
    t0 = time.perf_counter()
    gen.warm_up()
    print(f"warm-up (head, FaceMesh, segmentation, torch first use): {time.perf_counter() - t0:.2f} s")
    opens = []
    for _ in range(2):
        t0 = time.perf_counter()
        session = gen.open_session(GeneratorSessionSpec("bench", data, opts))
        opens.append(time.perf_counter() - t0)
    work = frames(args.frames, session.fit.pose.numpy(), gen.head_model.n_expression)
    session.step(work[:5])  # first frames
    t0, c0 = time.perf_counter(), time.process_time()
    for f in work:
        out = session.step([f])
        assert out[0].views.shape == (len(views), args.size, args.size, 3)
    wall = (time.perf_counter() - t0) / len(work) * 1000
    cpu = (time.process_time() - c0) / len(work) * 1000
    print(f"session open (decode, FaceMesh, fit, segmentation, scene): {opens[0]:.2f} s, {opens[1]:.2f} s")
    print(f"{len(views)} views x {args.size}^2, one thread: {cpu:.1f} ms CPU per frame "
          f"({1000 / cpu:.1f} frames/s of one core), {wall:.1f} ms wall per frame")
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
