"""Where a streamed FLAME2Video window's wall time goes on a GPU (random weights).

Opens a session the way ``flamecast bench`` does, warms it up, then feeds frames back to back
(the throughput pass) under ``torch.profiler`` and reports, per window: wall time, GPU busy
time (union of kernel intervals) and, for each pipeline stage (``StageTimer`` names: window,
rasterize, flame_encoder, unet, decode), the host time spent in it, the span of its GPU
annotation and the kernel time inside that span (span minus kernel time: gaps between
kernels). Also the top CUDA kernels per window.

    python bench/flame2video_trace.py --profile live --compile reduce-overhead --json trace.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict


def union_ms(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Total length (ms) of the union of (start, end) µs intervals clipped to [lo, hi]."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted((max(s, lo), min(e, hi)) for s, e in intervals if e > lo and s < hi):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total / 1e3


def main() -> None:
    import torch

    from flamecast.plugins import GeneratorSessionSpec
    from flamecast.renderer.flame2video.generator import FLAME2VideoGenerator
    from flamecast.cli.bench import _options, synthetic_frames, throughput_pass

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="live")
    ap.add_argument("--compile", default="reduce-overhead")
    ap.add_argument("--warmup", type=int, default=12, help="driving frames before measuring")
    ap.add_argument("--frames", type=int, default=64, help="frames of the untraced throughput pass")
    ap.add_argument("--traced", type=int, default=16, help="frames fed under the profiler")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                    help="set torch._inductor.config.KEY (Python literal) before compiling; repeatable")
    ap.add_argument("--json")
    ap.add_argument("--chrome", help="also write the chrome trace here")
    args = ap.parse_args()

    import ast

    import torch._inductor.config

    for kv in args.inductor:
        key, _, value = kv.partition("=")
        *path, last = key.split(".")
        target = torch._inductor.config
        for part in path:
            target = getattr(target, part)
        getattr(target, last)  # an unknown key fails here, before the long compile
        setattr(target, last, ast.literal_eval(value))
    gen = FLAME2VideoGenerator({"device": args.device, "allow_random_weights": True, "compile": args.compile or None,
                                "detect_face": False})
    session = gen.open_session(GeneratorSessionSpec("trace", None, _options(FLAME2VideoGenerator, args.profile, None)))
    n_expr = gen.head.n_expression
    seq = 0

    def feed(n: int) -> dict:
        """Frames back to back, as ``flamecast bench``'s throughput pass."""
        nonlocal seq
        frames = synthetic_frames(n, n_expr, seq)
        seq += n
        return throughput_pass(session, frames, math.inf)

    res: dict = {"profile": args.profile, "compile": args.compile, "inductor": args.inductor,
                 "warmup_s": feed(args.warmup)["seconds"]}
    res["throughput_fps"] = feed(args.frames)["fps"]
    print(f"warmup {res['warmup_s']:.0f} s; throughput {res['throughput_fps']:.2f} frames/s", flush=True)

    cuda = args.device.startswith("cuda")
    act = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=act) as prof:
        res["traced_fps"] = feed(args.traced)["fps"]
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    cuda_type = torch.autograd.DeviceType.CUDA
    kernels, host, gpu = [], defaultdict(list), defaultdict(list)
    for e in events:
        span = (e.time_range.start, e.time_range.end)
        if e.name.startswith("flame2video."):  # StageTimer ranges: on the host and, as annotations, on the GPU
            (gpu if e.device_type == cuda_type else host)[e.name.split(".", 1)[1]].append(span)
        elif e.device_type == cuda_type:
            kernels.append(span)
    windows = sorted(host.get("window", []))
    res["windows"] = [{"wall_ms": (hi - lo) / 1e3, "kernel_busy_ms": union_ms(kernels, lo, hi)} for lo, hi in windows]
    n = max(1, len(windows))
    stages = {}
    for name in sorted(set(host) | set(gpu)):
        spans = gpu.get(name, [])
        stages[name] = {
            "host_ms": sum(e - s for s, e in host.get(name, [])) / 1e3 / n,
            "gpu_span_ms": sum(e - s for s, e in spans) / 1e3 / n,
            "gpu_kernel_busy_ms": sum(union_ms(kernels, s, e) for s, e in spans) / n,
            "kernels": sum(1 for k in kernels for s, e in spans if s <= k[0] < e) / n,
        }
    res["stages_per_window"] = stages
    by_name = defaultdict(float)
    for e in events:
        if e.device_type == cuda_type and not e.name.startswith("flame2video."):
            by_name[e.name[:90]] += e.time_range.elapsed_us() / 1e3 / n
    res["top_kernels_ms_per_window"] = sorted(by_name.items(), key=lambda kv: -kv[1])[: args.top]
    res["kernel_ms_per_window"] = sum(by_name.values())
    for w in res["windows"]:
        print(f"window: wall {w['wall_ms']:.1f} ms, GPU kernels busy {w['kernel_busy_ms']:.1f} ms")
    for name, st in stages.items():
        print(f"{name:>14}: host {st['host_ms']:6.1f} ms, GPU span {st['gpu_span_ms']:6.1f} ms, "
              f"kernels busy {st['gpu_kernel_busy_ms']:6.1f} ms ({st['kernels']:.0f} kernels) per window")
    print(f"kernel time per window: {res['kernel_ms_per_window']:.1f} ms")
    for name, ms in res["top_kernels_ms_per_window"]:
        print(f"{ms:8.2f} ms  {name}")
    if args.chrome:
        prof.export_chrome_trace(args.chrome)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    session.close()
    gen.close()


if __name__ == "__main__":
    main()
