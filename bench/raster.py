"""Time the built-in rasterizer on the built-in head: ms per frame, all views together.

    python bench/raster.py [--device cpu|cuda] [--views 4] [--size 256] [--batch 1 8]
                           [--threads N] [--repeat 50] [--keep-freed-memory] [--json OUT]

Two figures per batch size: rasterize alone (projection + fragments) and rasterize + grey
Lambert (the FLAME rendering, uint8 frames). Head poses vary from frame to frame. Wall-clock
median / p10 / min, and the process CPU time (on a shared machine the wall clock includes
time spent waiting for other jobs; with one thread the CPU time is the work itself). On CUDA it
also checks the GPU fragments against the CPU ones on the same input, and with pytorch3d
installed it times pytorch3d's rasterizer on the same screen-space input.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import torch


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--views", type=int, default=4, help="first N of the default views")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, nargs="+", help="frames per call (cpu: 1; cuda: 1 8 32)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--json", help="write the results here as JSON")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="call flamecast.renderer.raster.memory.keep_freed_memory() first")
    return ap.parse_args()


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def load_mesh(device: str):
    """The built-in head and a function giving the vertices of B frames with varied poses."""
    from flamecast.renderer.head import load_head

    head = load_head("builtin").to(device)
    gen = torch.Generator().manual_seed(0)
    poses = (torch.randn(64, 15, generator=gen) * 0.15).to(device)

    def frames(batch: int, step: int) -> torch.Tensor:
        idx = torch.arange(step * batch, (step + 1) * batch) % poses.shape[0]
        with torch.no_grad():
            return head(pose=poses[idx.to(device)]).vertices

    return head, frames


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, device: str, repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU milliseconds of ``fn(step)`` over ``repeat`` calls."""
    for step in range(3):
        fn(step)
    sync(device)
    wall, cpu = [], []
    for step in range(repeat):
        sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(step)
        sync(device)
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return wall, cpu


def summary(times: tuple[list[float], list[float]], batch: int) -> dict:
    wall, cpu = sorted(times[0]), sorted(times[1])
    return {
        "median_ms_per_frame": statistics.median(wall) / batch,
        "p10_ms_per_frame": wall[len(wall) // 10] / batch,
        "min_ms_per_frame": wall[0] / batch,
        "cpu_median_ms_per_frame": statistics.median(cpu) / batch,
    }


def bench_batch(head, frames, cams, batch: int, args) -> dict:
    from flamecast.renderer.raster import project, rasterize, render_views

    faces = head.faces
    verts = [frames(batch, step) for step in range(8)]

    def raster(step: int):
        return rasterize(project(verts[step % 8], cams), faces, cams.size, cull_backfaces=True)

    def lambert(step: int):
        return render_views(verts[step % 8], faces, cams, mode="lambert", uint8=True)

    row = {"batch": batch}
    row["rasterize"] = summary(time_ms(raster, args.device, args.repeat), batch)
    row["rasterize_lambert"] = summary(time_ms(lambert, args.device, args.repeat), batch)
    covered = raster(0).mask.float().mean().item()
    row["covered_fraction"] = round(covered, 4)
    if _has_pytorch3d():
        def p3d(step: int):
            screen = project(verts[step % 8], cams)
            return rasterize(screen, faces, cams.size, backend="pytorch3d", cull_backfaces=True)

        row["pytorch3d_rasterize"] = summary(time_ms(p3d, args.device, args.repeat), batch)
    return row


def _has_pytorch3d() -> bool:
    from flamecast.renderer.raster.pytorch3d_backend import available

    return available()


def cuda_check(head, frames, cams) -> dict:
    """Agreement of CUDA and CPU fragments on the same screen-space input."""
    from flamecast.renderer.raster import project, rasterize

    screen = project(frames(2, 0), cams)
    gpu = rasterize(screen, head.faces, cams.size, cull_backfaces=True)
    cpu = rasterize(screen.cpu(), head.faces.cpu(), cams.size, cull_backfaces=True)
    same = gpu.face_idx.cpu() == cpu.face_idx
    both = same & cpu.mask
    return {
        "face_agreement": same.float().mean().item(),
        "bary_max_abs_diff": (gpu.bary.cpu()[both] - cpu.bary[both]).abs().max().item(),
        "depth_max_rel_diff": ((gpu.depth.cpu()[both] / cpu.depth[both]) - 1).abs().max().item(),
    }


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        from flamecast.renderer.raster.memory import keep_freed_memory

        if not keep_freed_memory():
            print("keep_freed_memory(): not glibc, nothing changed")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    from flamecast.renderer.raster import DEFAULT_VIEWS, make_cameras

    head, frames = load_mesh(args.device)
    views = [v.id for v in DEFAULT_VIEWS[: args.views]]
    cams = make_cameras(views, head.center, head.radius, args.size, device=args.device)
    batches = args.batch or ([1] if args.device == "cpu" else [1, 8, 32])
    out = {
        "device": device_name(args.device),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "mesh": {"name": "builtin head", "vertices": int(head.v_template.shape[0]),
                 "faces": int(head.faces.shape[0])},
        "views": views,
        "size": args.size,
        "threads": torch.get_num_threads(),
        "keep_freed_memory": args.keep_freed_memory,
        "load_average_at_start": os.getloadavg()[0],
        "results": [bench_batch(head, frames, cams, b, args) for b in batches],
    }
    if args.device == "cuda":
        out["cuda_vs_cpu"] = cuda_check(head, frames, cams)
    print_table(out)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


def print_table(out: dict) -> None:
    print(f"{out['device']}, torch {out['torch']}, {out['mesh']['faces']} faces, "
          f"views {','.join(out['views'])}, {out['size']}x{out['size']}, "
          f"load average {out['load_average_at_start']:.1f}")
    for row in out["results"]:
        for key in ("rasterize", "rasterize_lambert", "pytorch3d_rasterize"):
            if key in row:
                r = row[key]
                print(f"batch {row['batch']:3d} {key:18s} median {r['median_ms_per_frame']:8.3f}"
                      f"  p10 {r['p10_ms_per_frame']:8.3f}  min {r['min_ms_per_frame']:8.3f}"
                      f"  (process CPU median {r['cpu_median_ms_per_frame']:8.3f}) ms per frame")
    if "cuda_vs_cpu" in out:
        print("cuda vs cpu:", out["cuda_vs_cpu"])
    assert all(math.isfinite(r["rasterize"]["median_ms_per_frame"]) for r in out["results"])


if __name__ == "__main__":
    main()
