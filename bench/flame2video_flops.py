"""What a streamed FLAME2Video window costs in floating-point operations, counted, not timed.

    python bench/flame2video_flops.py --profile live --json flops.json

Runs one session of the profile eagerly on the CPU with random weights (the count depends on
shapes, not on weights, dtype or device), steps its first window, then counts the next (steady)
window with ``torch.utils.flop_counter.FlopCounterMode``: the UNet's operations per denoising
step and per window, the rest (FLAME encoder, decoder), and what a number of sessions at a
frame rate needs per second. The window is run with one denoising step, so that a CPU counts it
in a minute or two; the UNet's count is multiplied by the profile's steps. Divide by a measured
window time to get what a GPU sustained. Attention written as broadcast products and sums
(the motion and view modules' short attention, when compiled) is not counted as matrix work;
eagerly it runs as matrix products, which are.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="live")
    ap.add_argument("--fps", type=float, default=30.0, help="frames per second per session, for the rate needed")
    ap.add_argument("--sessions", default="1,2,4,8", help="session counts, for the rate needed")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", dest="json_out")
    return ap.parse_args(argv)


def count_window(profile: str) -> dict[str, Any]:
    """Operations of one steady window of ``profile`` at one denoising step, by part."""
    from torch.utils.flop_counter import FlopCounterMode

    from flamecast.plugins import GeneratorSessionSpec
    from flamecast.renderer.flame2video import FLAME2VideoGenerator, FLAME2VideoOptions
    from flamecast.renderer.flame2video.generator import warm_frames

    gen = FLAME2VideoGenerator({"device": "cpu", "allow_random_weights": True, "detect_face": False})
    session = gen.open_session(GeneratorSessionSpec("flops", None, FLAME2VideoOptions(profile=profile, steps=1)))
    stream, n_expr = session.stream, gen.head.n_expression
    try:
        session.step(warm_frames(stream.window, n_expr))  # the first window: all W frames, recording the context
        with FlopCounterMode(display=False) as counter:
            out = session.step(warm_frames(stream.stride, n_expr, stream.window))
        counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    finally:
        session.close()
        gen.close()
    return {"frames": len(out), "views": len(out[0].view_ids) if out else None, "total": counts.get("Global", 0),
            "unet": counts.get("MultiViewUNet", 0)}


def summarize(counted: dict[str, Any], steps: int, fps: float, sessions: list[int]) -> dict[str, Any]:
    """Per window and per second, from ``count_window``'s one-step counts (FLOP, TFLOP)."""
    unet_step = counted["unet"]
    rest = counted["total"] - unet_step
    window = unet_step * steps + rest
    frames = counted["frames"]
    return {
        "frames_per_window": frames, "views": counted["views"], "steps": steps,
        "unet_tflop_per_step": unet_step / 1e12, "unet_tflop_per_window": unet_step * steps / 1e12,
        "other_tflop_per_window": rest / 1e12, "tflop_per_window": window / 1e12,
        "tflop_per_frame": window / frames / 1e12,
        "tflop_per_s_needed": {str(k): window / frames * fps * k / 1e12 for k in sessions},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from flamecast.renderer.flame2video.config import get_profile

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    counted = count_window(args.profile)
    sessions = [int(x) for x in args.sessions.split(",") if x.strip()]
    report = {"profile": args.profile, "fps": args.fps,
              **summarize(counted, get_profile(args.profile).steps, args.fps, sessions),
              "seconds": time.perf_counter() - t0}
    print(f"{args.profile}: {report['frames_per_window']} frames x {report['views']} views a window, "
          f"{report['steps']} steps: UNet {report['unet_tflop_per_step']:.2f} TFLOP a step, "
          f"{report['unet_tflop_per_window']:.2f} a window; the rest {report['other_tflop_per_window']:.2f}; "
          f"{report['tflop_per_frame']:.2f} TFLOP a frame")
    for k, need in report["tflop_per_s_needed"].items():
        print(f"  {k} session(s) at {args.fps:g} frames/s: {need:.0f} TFLOP/s")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
