"""Float8 matrix products in the denoising UNet: a batched window's time, and how far the
frames move from bfloat16 (random weights).

    python bench/flame2video_fp8.py --profile live --batch 4 --device cuda --json out.json

For each variant, one generator in this process, compiled (``reduce-overhead``) and warmed up
for windows of ``--batch`` sessions only:

* ``bf16``: the generator as it serves, its calls loaded from (or compiled into) the compile
  cache (``$FLAMECAST_COMPILE_CACHE``);
* ``fp8``: the same, with every linear layer of the denoising UNet (motion and view modules,
  the spatial transformers' projections and feed-forwards; not the time embedding or the
  one-token cross-attention) quantized by torchao to float8 weights with float8 activations
  scaled per row at run time (``Float8DynamicActivationFloat8WeightConfig``). The convolutions
  stay bfloat16. The UNet is compiled in place (its calls are not written to the cache).

Both build the same random weights (seed 0). Reported per variant: warm-up seconds (compiling
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
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    wrong = sorted(set(args.variant_list) - set(VARIANTS))
    if wrong or not args.variant_list:
        ap.error(f"--variants: choose from {', '.join(VARIANTS)}; got {args.variants!r}")
    if args.batch < 1 or args.windows < 1 or args.compare_windows < 1:
        ap.error("--batch, --windows and --compare-windows must be at least 1")
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


def drive_windows(gen, sessions, windows: int, start: int) -> list:
    """``windows`` windows of every session, batched; returns each window's frames (a list per
    session of (V, H, W, 3) arrays)."""
    from flamecast.renderer.flame2video.generator import warm_frames

    stride, out = sessions[0].stream.stride, []
    for w in range(windows):
        frames = warm_frames(stride, gen.head.n_expression, start + w * stride)
        out.append([[r.views for r in rendered] for rendered in gen.step_sessions([(s, frames) for s in sessions])])
    return out


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
    from flamecast.renderer.flame2video.generator import warm_frames, warm_options

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
        first = warm_frames(stream.window, gen.head.n_expression)  # the first windows, eagerly
        gen.step_sessions([(s, first) for s in sessions])
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
    finally:
        for s in sessions:
            s.close()
    report.update(window_ms=round(window_ms, 2), fps_per_session=round(stream.stride * 1e3 / window_ms, 2),
                  stage_ms_per_window=stages, compile=gen.compile_report().get("recompiles"))
    gen.close()
    return report, frames


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if "fp8" in args.variant_list:
        ok = args.device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)
        if not ok:
            print("fp8 needs a CUDA GPU of compute capability 8.9 or later (H100, H200): use --variants bf16 here",
                  file=sys.stderr)
            return 2
    report: dict[str, Any] = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "torch": torch.__version__, "batch": args.batch, "windows": args.windows, "variants": {}}
    if torch.cuda.is_available():
        report["device"] = torch.cuda.get_device_name()
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
