"""Benchmark the ``mesh`` generator: session open (fit + bake) and frames per second.

    python bench/mesh_generator.py [--views 4] [--size 256] [--batch 8] [--frames 96] [--threads N]

Frames are rendered through ``MeshSession.step`` exactly as the worker calls it, with a
moving head (yaw sweep, jaw and smile), in batches of ``--batch`` frames. Prints one line per
figure and a markdown row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `flamecast generator` does

import numpy as np  # noqa: E402
import torch  # noqa: E402

from flamecast.plugins import FlameFrame, GeneratorSessionSpec  # noqa: E402
from flamecast.renderer.generators.mesh import MeshGenerator, MeshOptions  # noqa: E402
from flamecast.renderer.raster import DEFAULT_VIEWS  # noqa: E402

N_EXPR = 16


def frames(n: int) -> list[FlameFrame]:
    out = []
    for i in range(n):
        t = i / 25.0
        pose = np.zeros(15, np.float32)
        pose[1] = 0.5 * np.sin(t)  # yaw
        pose[6] = 0.15 * max(0.0, np.sin(3 * t))  # jaw
        expr = np.zeros(N_EXPR, np.float32)
        expr[0] = 0.5 + 0.5 * np.sin(t)  # smile
        out.append(FlameFrame(session_id="bench", seq=i, capture_ns=i, pose=pose, expression=expr))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", type=int, default=4, help="number of default views (1-4)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=96)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    views = tuple(v.id for v in DEFAULT_VIEWS[: args.views])
    gen = MeshGenerator({"device": "cpu"})
    opts = MeshOptions(views=views, size=args.size, batch=args.batch)
    t0 = time.perf_counter()
    gen.head_model
    t_load = time.perf_counter() - t0
    gen.open_session(GeneratorSessionSpec("warm", None, opts))  # first open pays the imports
    t0 = time.perf_counter()
    session = gen.open_session(GeneratorSessionSpec("bench", None, opts))
    t_open = time.perf_counter() - t0
    work = frames(args.frames)
    session.step(work[: args.batch])  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(work), args.batch):
        out = session.step(work[start:start + args.batch])
        assert out[0].views.shape == (len(views), args.size, args.size, 3)
    elapsed = time.perf_counter() - t0
    cpu_ms = (time.process_time() - c0) / len(work) * 1000
    fps = len(work) / elapsed
    print(f"head load {t_load:.2f} s; session open (decode, FaceMesh, fit, bake) {t_open:.2f} s")
    print(f"{len(views)} views x {args.size}^2, batch {args.batch}, torch threads {torch.get_num_threads()}: "
          f"{fps:.1f} frames/s ({1000 / fps:.1f} ms/frame wall, {cpu_ms:.1f} ms/frame of CPU time)")
    load = os.getloadavg()[0]
    print(f"load average before the run: {load0:.1f}, after: {load:.1f} (other processes share the CPU)")
    print(f"| mesh generator, {len(views)} views {args.size}², batch {args.batch}, {torch.get_num_threads()} threads "
          f"| {fps:.1f} frames/s ({1000 / fps:.1f} ms/frame wall, {cpu_ms:.1f} ms CPU); open {t_open:.2f} s | {platform.processor() or platform.machine()} |")


if __name__ == "__main__":
    main()
