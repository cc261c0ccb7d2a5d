"""The motion and view modules' short attention alone, at a profile's shapes: Inductor's
products against the Triton kernel (``renderer/flame2video/short_attention.py``) and SDPA.

    python bench/short_attention.py --profile live --batch 4 --json out.json

For each attention shape of one UNet call of ``--batch`` sessions in a steady window (cached
carry: the motion modules' queries are the S new frames, their keys and values the W frames of
the window; the view modules attend over the V views of each new frame), with the queries, keys
and values where the fused QKV projection leaves them, it times (median of CUDA-graph replays,
``triton.testing.do_bench_cudagraph``; compiling and warm-up before):

* ``products``: ``attention.attend_heads`` (``short_attention_products`` with the layout
  changes around it), compiled by Inductor (what the compiled UNet runs without the kernel);
* ``products_cdt``: the same with Inductor's coordinate-descent tuning;
* ``kernel``: the Triton kernel, compiled in the same function through its registered op;
* ``sdpa``: ``F.scaled_dot_product_attention`` on the same tensors (PyTorch's choice of backend).

Each shape's count in a UNet call comes from the model's layout (``sd15_config``: motion modules
per level, a mid block, two attentions per module), so the sums are a window's time for that
attention at the profile's steps. Reported too: each variant's error against float64 and the
bytes the kernel must move (queries, keys, values read, output written) over its time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

VARIANTS = ("products", "products_cdt", "kernel", "sdpa")


def variants(text: str) -> list[str]:
    """``--variants``: comma-separated names of VARIANTS, at least one."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names or not set(names) <= set(VARIANTS):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(VARIANTS)}; got {text!r}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="live")
    ap.add_argument("--batch", type=int, default=1, help="sessions batched into each UNet call")
    ap.add_argument("--variants", dest="variant_list", type=variants, default=list(VARIANTS),
                    help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rep", type=int, default=200, help="milliseconds of replays per timing")
    ap.add_argument("--sweep", action="store_true",
                    help="also time the kernel at other blocks of sequences per program and warps (largest level)")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.rep < 1:
        ap.error("--batch and --rep must be at least 1")
    return args


def attention_shapes(profile: Any, model: Any, batch: int) -> list[dict[str, int]]:
    """Every short-attention shape of one steady UNet call and how often it runs: per UNet
    level, motion modules (down: ``motion_layers_per_block``, up: one more, the mid block's at
    the lowest level), two attentions each, over frames and, as many again, over views."""
    unet, motion = model.unet, model.motion
    heads = motion["motion_num_attention_heads"]
    latent = profile.size // 8
    levels = len(motion["block_out_channels"])
    shapes = []
    for level, channels in enumerate(motion["block_out_channels"]):
        side = latent // 2 ** level
        modules = motion["motion_layers_per_block"] + unet["layers_per_block"] + 1
        if level == levels - 1 and motion.get("use_motion_mid_block"):
            modules += 1
        pixels = side * side
        common = {"level": level, "side": side, "channels": channels, "heads": heads, "count": 2 * modules}
        shapes.append({**common, "axis": "frames", "rows": batch * profile.views * pixels,
                       "lq": profile.stride, "lk": profile.window})
        shapes.append({**common, "axis": "views", "rows": batch * profile.stride * pixels,
                       "lq": profile.views, "lk": profile.views})
    return shapes


def qkv_input(shape: dict[str, int], device: str, dtype: Any) -> Any:
    """What the fused QKV projection leaves: (rows, Lk, 3C), queries from the last Lq tokens."""
    import torch

    return torch.randn(shape["rows"], shape["lk"], 3 * shape["channels"], device=device, dtype=dtype)


def split(qkv: Any, lq: int) -> tuple[Any, Any, Any]:
    q, k, v = qkv.chunk(3, dim=-1)
    return q[:, qkv.shape[1] - lq:], k, v


def heads_first(t: Any, heads: int) -> Any:
    b, length, c = t.shape
    return t.reshape(b, length, heads, c // heads).transpose(1, 2)


def heads_last(t: Any) -> Any:
    b, h, length, d = t.shape
    return t.transpose(1, 2).reshape(b, length, h * d)


def variant_fn(variant: str, lq: int, heads: int) -> Callable[[Any], Any]:
    import torch
    import torch.nn.functional as F

    from flamecast.renderer.flame2video.attention import attend_heads
    from flamecast.renderer.flame2video.short_attention import short_attention

    def products(qkv):
        return attend_heads(*split(qkv, lq), heads)

    def kernel(qkv):
        return short_attention(*split(qkv, lq), heads)

    def sdpa(qkv):
        q, k, v = (heads_first(t, heads) for t in split(qkv, lq))
        return heads_last(F.scaled_dot_product_attention(q, k, v))

    if variant == "products":
        return torch.compile(products, dynamic=False)
    if variant == "products_cdt":
        return torch.compile(products, dynamic=False, options={"coordinate_descent_tuning": True})
    if variant == "kernel":
        return torch.compile(kernel, dynamic=False)
    return sdpa


def reference(qkv: Any, lq: int, heads: int) -> Any:
    """The attention in float64, eagerly (batched matrix products)."""
    from flamecast.renderer.flame2video.attention import attend_heads

    return attend_heads(*(t.double() for t in split(qkv, lq)), heads)


def moved_bytes(shape: dict[str, int], itemsize: int) -> int:
    """Queries, keys and values read once, the output written once."""
    c = shape["channels"]
    return itemsize * shape["rows"] * c * (2 * shape["lq"] + 2 * shape["lk"])


def time_shape(shape: dict[str, int], variants: list[str], device: str, rep: int,
               sweep: bool = False) -> dict[str, Any]:
    import torch
    import triton.testing

    torch._dynamo.reset()  # each shape's functions are compiled afresh (no recompile limit)
    qkv = qkv_input(shape, device, torch.bfloat16)
    sample = qkv[: min(256, qkv.shape[0])]
    ref = reference(sample, shape["lq"], shape["heads"])
    row: dict[str, Any] = dict(shape)
    for variant in variants:
        fn = variant_fn(variant, shape["lq"], shape["heads"])
        t0 = time.perf_counter()
        out = fn(qkv)
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        got = out[: sample.shape[0]].double()
        error = float((got - ref).norm() / ref.norm())
        ms = triton.testing.do_bench_cudagraph(lambda: fn(qkv), rep=rep, return_mode="median")
        row[variant] = {"ms": round(ms, 4), "error": error, "first_call_s": round(compile_s, 2),
                        "gb_per_s": round(moved_bytes(shape, 2) / ms / 1e6, 1)}
    if sweep and shape["level"] == 0:
        row["sweep"] = sweep_kernel(shape, qkv, rep)
    return row


def sweep_kernel(shape: dict[str, int], qkv: Any, rep: int) -> list[dict[str, Any]]:
    """The kernel (called directly) at other blocks of sequences per program and warps."""
    import triton.testing

    from flamecast.renderer.flame2video.short_attention import launch

    q, k, v = split(qkv, shape["lq"])
    found = []
    for block in (4, 8, 16, 32):
        for warps in (2, 4, 8):
            def run(block=block, warps=warps):
                return launch(q, k, v, shape["heads"], block=block, num_warps=warps)
            try:
                run()
                ms = triton.testing.do_bench_cudagraph(run, rep=max(20, rep // 4), return_mode="median")
            except Exception as e:  # a block too large for the registers
                found.append({"block": block, "warps": warps, "error": f"{type(e).__name__}"})
                continue
            found.append({"block": block, "warps": warps, "ms": round(ms, 4),
                          "gb_per_s": round(moved_bytes(shape, 2) / ms / 1e6, 1)})
    return sorted(found, key=lambda r: r.get("ms", float("inf")))[:6]


def summary(rows: list[dict[str, Any]], variants: list[str], steps: int) -> dict[str, float]:
    """Milliseconds a window spends in the short attention, per variant (count x steps)."""
    return {v: round(sum(r[v]["ms"] * r["count"] * steps for r in rows), 2) for v in variants}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from flamecast.renderer.flame2video.config import PROFILES, sd15_config

    if args.profile not in PROFILES:
        print(f"unknown profile {args.profile!r}; choose from {', '.join(PROFILES)}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("bench/short_attention.py needs a CUDA GPU", file=sys.stderr)
        return 2
    from flamecast.renderer.flame2video.short_attention import register

    register()
    profile = PROFILES[args.profile]
    shapes = attention_shapes(profile, sd15_config(), args.batch)
    rows = []
    for shape in shapes:
        row = time_shape(shape, args.variant_list, args.device, args.rep, args.sweep)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "command": " ".join(["python", "bench/short_attention.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "profile": args.profile,
        "batch": args.batch,
        "shapes": rows,
        "ms_per_window": summary(rows, args.variant_list, profile.steps),
    }
    print(json.dumps(report["ms_per_window"]))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
