"""Float8 matrix products in the denoising UNet: a batched window's time, and how far the
frames move from bfloat16 (random weights).

    python bench/flame2video_fp8.py --profile live --batch 4 --device cuda --json out.json
    python bench/flame2video_fp8.py --layers --profile live --batch 4 --json layers.json

For each variant, one generator in this process, compiled (``reduce-overhead``) and warmed up
for windows of ``--batch`` sessions only:

* ``bf16``: the generator as it serves, its calls loaded from (or compiled into) the compile
  cache (``$FLAMECAST_COMPILE_CACHE``);
* ``fp8``: the same, with every linear layer of the denoising UNet (motion and view modules,
  the spatial transformers' projections and feed-forwards; not the time embedding or the
  one-token cross-attention) quantized by torchao to float8 weights with float8 activations
  scaled per row at run time (``Float8DynamicActivationFloat8WeightConfig``). The convolutions
  stay bfloat16. The UNet is compiled in place (its calls are not written to the cache).

``--layers`` compiles no UNet: it records the shape of every call of those linear layers over
one steady batched window (eager, QKV fused as when compiled), then times each shape on its own
with CUDA events: the bfloat16 product with its bias, the float8 product with scales per row
(``torch._scaled_mm``, what torchao's per-row float8 runs), and the activation's quantization to
float8 (compiled, one kernel per shape). Summed over the window's calls, the bfloat16 total is
the linear layers' share of a window's UNet time and the float8 totals bound what float8 can
save: the product alone if the quantization fused into the layer before it, product and
quantization if it did not.

``--trace N`` ends each variant with N batched windows under the PyTorch profiler and reports
the GPU's kernel time per window by kind (Inductor's fused kernels, cuDNN's attention and
convolutions, cuBLAS's matrix products, copies) and the longest kernels.

Both variants build the same random weights (seed 0). Reported per variant: warm-up seconds (compiling
included), the wall time of ``--windows`` batched windows back to back (the GPU synchronised
once, at the end) and per-session frames/s from it, each stage's time in a pass with stages
timed, and, against the first variant, the frames' PSNR and mean absolute difference over the
same windows of the same sessions. Float8 needs a GPU of compute capability 8.9 or later
(H100, H200). A GPU machine without network gets torchao as a wheel in ``.whl/``, which
``bench/flame2video_device.sh`` installs with the others:

    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 -d .whl torchao==0.17.0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from typing import Any

VARIANTS = ("bf16", "fp8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="live")
    ap.add_argument("--batch", type=int, default=4, help="sessions batched into each window")
    ap.add_argument("--windows", type=int, default=16, help="batched windows timed back to back")
    ap.add_argument("--compare-windows", type=int, default=4, help="windows whose frames are compared")
    ap.add_argument("--variants", default="bf16,fp8", help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile", default="reduce-overhead", help="torch.compile mode ('' for eager)")
    ap.add_argument("--trace", type=int, default=0, metavar="N",
                    help="then N batched windows under the profiler: GPU kernel time by kind")
    ap.add_argument("--layers", action="store_true",
                    help="time the linear layers' shapes alone, bf16 against float8 (no UNet compiled)")
    ap.add_argument("--reps", type=int, default=50, help="--layers: timed repetitions of each shape")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    wrong = sorted(set(args.variant_list) - set(VARIANTS))
    if wrong or not args.variant_list:
        ap.error(f"--variants: choose from {', '.join(VARIANTS)}; got {args.variants!r}")
    if args.batch < 1 or args.windows < 1 or args.compare_windows < 1 or args.reps < 1 or args.trace < 0:
        ap.error("--batch, --windows, --compare-windows and --reps must be at least 1, --trace at least 0")
    return args


def fp8_filter(module: Any, name: str) -> bool:
    """Linear layers worth float8: not the time embedding (one row per sample) nor the
    cross-attention on the portrait's one CLIP token, and with both sides multiples of 16
    (float8 matrix products need them)."""
    import torch

    if not isinstance(module, torch.nn.Linear) or "time_emb" in name or ".attn2." in f".{name}.":
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def quantize_fp8(module: Any) -> int:
    """Quantize ``module``'s linear layers (``fp8_filter``) in place; returns how many."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    names = [n for n, m in module.named_modules() if fp8_filter(m, n)]
    quantize_(module, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=fp8_filter)
    return len(names)


@contextlib.contextmanager
def fp8_build(counts: list[int]):
    """While building a pipeline: quantize its denoising UNet right after the QKV projections
    are fused (so the fused layer is quantized too), and compile it in place instead of into
    the cache's ahead-of-time calls."""
    from flamecast.renderer.flame2video import attention
    from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline

    fuse, compile_ = attention.fuse_self_attention_projections, FLAME2VideoPipeline.compile

    def fuse_then_quantize(module):
        n = fuse(module)
        counts.append(quantize_fp8(module))
        return n

    def compile_in_place(self, mode=None, *, backend="inductor", precompiled=None):
        return compile_(self, mode, backend=backend)

    attention.fuse_self_attention_projections = fuse_then_quantize
    FLAME2VideoPipeline.compile = compile_in_place
    try:
        yield
    finally:
        attention.fuse_self_attention_projections, FLAME2VideoPipeline.compile = fuse, compile_


def open_sessions(gen, options, n: int) -> list:
    from flamecast.plugins import GeneratorSessionSpec

    return [gen.open_session(GeneratorSessionSpec(f"fp8-{i}", None, options.model_copy(update={"seed": i})))
            for i in range(n)]


def first_windows(gen, sessions) -> None:
    """Every session's first window (W frames, run eagerly), batched: after it, windows are steady."""
    from flamecast.renderer.flame2video.generator import warm_frames

    first = warm_frames(sessions[0].stream.window, gen.head.n_expression)
    gen.step_sessions([(s, first) for s in sessions])


def drive_windows(gen, sessions, windows: int, start: int) -> list:
    """``windows`` windows of every session, batched; returns each window's frames (a list per
    session of (V, H, W, 3) arrays)."""
    from flamecast.renderer.flame2video.generator import warm_frames

    stride, out = sessions[0].stream.stride, []
    for w in range(windows):
        frames = warm_frames(stride, gen.head.n_expression, start + w * stride)
        out.append([[r.views for r in rendered] for rendered in gen.step_sessions([(s, frames) for s in sessions])])
    return out


# what a kernel's name says it is, first match wins: Inductor's own kernels first (their names
# carry the ops they fused, "convolution" or "cudnn_attention" among them), then cuDNN's
# attention and convolutions (whose names say "gemm" too), then cuBLAS's matrix products
KERNEL_KINDS = (
    ("inductor", ("triton",)),
    ("attention", ("sdpa", "flash", "fmha")),
    ("convolution", ("fprop", "conv", "winograd")),
    ("matrix product", ("nvjet", "gemm", "cutlass", "xmma")),
    ("copy", ("memcpy", "memset")),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, marks in KERNEL_KINDS if any(m in low for m in marks)), "other")


def kernel_time(gen, sessions, windows: int, start: int, top: int = 25) -> dict[str, Any]:
    """``windows`` batched windows under the profiler: GPU kernel milliseconds per window, in
    all, by ``kernel_kind`` and for the ``top`` kernels (none where there is no GPU)."""
    from collections import defaultdict

    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if gen.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        drive_windows(gen, sessions, windows, start)
        if gen.device.type == "cuda":
            torch.cuda.synchronize()
    by_name: dict[str, float] = defaultdict(float)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.startswith("flame2video."):
            by_name[e.name] += e.time_range.elapsed_us() / 1e3 / windows
    kinds: dict[str, float] = defaultdict(float)
    for name, ms in by_name.items():
        kinds[kernel_kind(name)] += ms
    return {"kernel_ms_per_window": round(sum(by_name.values()), 2),
            "by_kind_ms_per_window": {k: round(v, 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top_kernels_ms_per_window": [[n[:100], round(ms, 3)] for n, ms in
                                          sorted(by_name.items(), key=lambda kv: -kv[1])[:top]]}


def frame_distance(a: list, b: list) -> dict[str, float]:
    """PSNR (dB) and mean absolute difference (of 255) between two runs' frames."""
    import numpy as np

    x = np.stack([v for window in a for session in window for v in session]).astype(np.float64)
    y = np.stack([v for window in b for session in window for v in session]).astype(np.float64)
    mse = float(((x - y) ** 2).mean())
    return {"psnr_db": math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse), "mad": float(np.abs(x - y).mean())}


def run_variant(variant: str, args: argparse.Namespace) -> tuple[dict[str, Any], list]:
    import torch

    from flamecast.renderer.flame2video import FLAME2VideoGenerator
    from flamecast.renderer.flame2video.generator import warm_options

    settings = {"device": args.device, "compile": args.compile or None, "allow_random_weights": True,
                "detect_face": False, "warm_profiles": args.profile, "max_batch": args.batch,
                "compile_cache_dir": os.environ.get("FLAMECAST_COMPILE_CACHE")}
    counts: list[int] = []
    t0 = time.perf_counter()
    with fp8_build(counts) if variant == "fp8" else contextlib.nullcontext():
        gen = FLAME2VideoGenerator(settings)
        gen.warm_up(batches=[args.batch])
    report: dict[str, Any] = {"warm_up_s": round(time.perf_counter() - t0, 1)}
    if counts:
        report["fp8_linears"] = counts[0]
    options = warm_options(args.profile)
    sessions = open_sessions(gen, options, args.batch)
    sync = torch.cuda.synchronize if gen.device.type == "cuda" else (lambda: None)
    try:
        stream = sessions[0].stream
        first_windows(gen, sessions)
        frames = drive_windows(gen, sessions, args.compare_windows, stream.window)
        start = stream.window + args.compare_windows * stream.stride
        sync()
        t1 = time.perf_counter()
        drive_windows(gen, sessions, args.windows, start)
        sync()
        window_ms = (time.perf_counter() - t1) * 1e3 / args.windows
        sessions[0].enable_stage_timing()
        drive_windows(gen, sessions, args.windows, start + args.windows * stream.stride)
        stages = {k: round(t["total_s"] * 1e3 / args.windows, 2) for k, t in sessions[0].stage_times().items()}
        sessions[0].enable_stage_timing(False)
        if args.trace:
            trace = kernel_time(gen, sessions, args.trace, start + 2 * args.windows * stream.stride)
    finally:
        for s in sessions:
            s.close()
    report.update(window_ms=round(window_ms, 2), fps_per_session=round(stream.stride * 1e3 / window_ms, 2),
                  stage_ms_per_window=stages, compile=gen.compile_report().get("recompiles"))
    if args.trace:
        report["trace"] = trace
    gen.close()
    return report, frames


Shape = tuple[int, int, int, bool]  # rows, in features, out features, bias


def linear_calls(args: argparse.Namespace) -> tuple[dict[Shape, int], int, int]:
    """Every call of the denoising UNet's float8-eligible linear layers (``fp8_filter``) over
    one steady window of ``--batch`` sessions batched, eager, with the QKV projections fused as
    a compiled UNet has them: (rows, in, out, bias) -> calls; how many such layers there are,
    and how many of them were called (the separate Q, K and V projections stay beside the
    fused ones for the reference features, computed once per session)."""
    from collections import Counter

    from flamecast.renderer.flame2video import FLAME2VideoGenerator
    from flamecast.renderer.flame2video.attention import fuse_self_attention_projections
    from flamecast.renderer.flame2video.generator import warm_options

    gen = FLAME2VideoGenerator({"device": args.device, "compile": None, "allow_random_weights": True,
                                "detect_face": False, "max_batch": args.batch})
    sessions = open_sessions(gen, warm_options(args.profile), args.batch)
    calls: Counter = Counter()
    called: set[int] = set()

    def count(module, positional, keywords, _output) -> None:
        x = positional[0] if positional else keywords["input"]
        called.add(id(module))
        calls[(x.numel() // x.shape[-1], module.in_features, module.out_features, module.bias is not None)] += 1

    try:
        stream = sessions[0].stream
        unet = stream.pipeline.unet
        fuse_self_attention_projections(unet)
        first_windows(gen, sessions)
        layers = [m for n, m in unet.named_modules() if fp8_filter(m, n)]
        hooks = [m.register_forward_hook(count, with_kwargs=True) for m in layers]
        try:
            drive_windows(gen, sessions, 1, stream.window)
        finally:
            for h in hooks:
                h.remove()
    finally:
        for s in sessions:
            s.close()
        gen.close()
    return dict(calls), len(layers), len(called)


def rowwise_fp8(t: Any) -> tuple[Any, Any]:
    """``t`` (rows, k) as float8 (e4m3) with one float32 scale per row: (values, scales (rows, 1))."""
    import torch

    top = torch.finfo(torch.float8_e4m3fn).max
    scale = t.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / top
    return (t.float() / scale).clamp(-top, top).to(torch.float8_e4m3fn), scale


def timed_ms(fn, reps: int, device: str) -> float:
    """Mean milliseconds of ``fn`` over ``reps`` calls after three untimed: on the GPU's clock
    (CUDA events), or the host's where there is no GPU."""
    import torch

    for _ in range(3):
        fn()
    if not device.startswith("cuda"):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) * 1e3 / reps
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def time_shape(shape: Shape, reps: int, quantize, device: str = "cuda") -> dict[str, Any]:
    """One linear shape timed alone: bf16 product with bias, float8 product (per-row scales,
    the bias in the product), and the activation's quantization (``quantize``, compiled)."""
    import torch

    rows, k, n, bias = shape
    x = torch.randn(rows, k, device=device, dtype=torch.bfloat16)
    w = (torch.randn(n, k, device=device) * k ** -0.5).to(torch.bfloat16)
    b = torch.randn(n, device=device, dtype=torch.bfloat16) if bias else None
    x8, sx = quantize(x)
    w8, sw = rowwise_fp8(w)
    wt, swt = w8.t(), sw.reshape(1, n).contiguous()

    def fp8() -> Any:
        return torch._scaled_mm(x8, wt, scale_a=sx, scale_b=swt, bias=b, out_dtype=torch.bfloat16)

    exact = torch.nn.functional.linear(x, w, b).float()
    err = ((fp8().float() - exact).norm() / exact.norm()).item()
    return {"rows": rows, "in": k, "out": n, "bias": bias,
            "bf16_ms": timed_ms(lambda: torch.nn.functional.linear(x, w, b), reps, device),
            "fp8_product_ms": timed_ms(fp8, reps, device),
            "fp8_quantize_ms": timed_ms(lambda: quantize(x), reps, device),
            "fp8_relative_error": err}


def layers_report(args: argparse.Namespace) -> dict[str, Any]:
    """``--layers``: the window's linear calls, each shape timed alone, and the per-window sums
    (the quantization compiled on a GPU, eager elsewhere)."""
    import torch

    calls, layers, called = linear_calls(args)
    gpu = args.device.startswith("cuda")
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)  # one graph a shape
    quantize = torch.compile(rowwise_fp8, dynamic=False) if gpu else rowwise_fp8
    shapes = []
    for shape, count in sorted(calls.items()):
        row = {**time_shape(shape, args.reps, quantize, args.device), "calls": count}
        shapes.append(row)
        print(json.dumps(row), flush=True)
    total = {key: round(sum(r[key] * r["calls"] for r in shapes), 2)
             for key in ("bf16_ms", "fp8_product_ms", "fp8_quantize_ms")}
    total["fp8_product_and_quantize_ms"] = round(total["fp8_product_ms"] + total["fp8_quantize_ms"], 2)
    return {"linears": layers, "linears_called": called, "calls_per_window": sum(calls.values()), "per_window": total, "shapes": shapes}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if "fp8" in args.variant_list or args.layers:
        ok = args.device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)
        if not ok:
            print("fp8 needs a CUDA GPU of compute capability 8.9 or later (H100, H200): use --variants bf16 without --layers here",
                  file=sys.stderr)
            return 2
    report: dict[str, Any] = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "torch": torch.__version__, "batch": args.batch}
    if torch.cuda.is_available():
        report["device"] = torch.cuda.get_device_name()
    if args.layers:
        report.update(profile=args.profile, **layers_report(args))
        print("per window: " + json.dumps(report["per_window"]), flush=True)
        if args.json_out:
            with open(args.json_out, "w") as fh:
                json.dump(report, fh, indent=2)
        return 0
    report.update(windows=args.windows, variants={})
    baseline = None
    for variant in args.variant_list:
        result, frames = run_variant(variant, args)
        if baseline is None:
            baseline = (variant, frames)
        else:
            result[f"against_{baseline[0]}"] = frame_distance(baseline[1], frames)
        report["variants"][variant] = result
        print(f"{variant}: " + json.dumps(result), flush=True)
        if args.json_out:
            with open(args.json_out, "w") as fh:
                json.dump(report, fh, indent=2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
