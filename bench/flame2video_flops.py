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
        with FlopCounterMode(display=False, depth=None) as counter:
            out = session.step(warm_frames(stream.stride, n_expr, stream.window))
        counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    finally:
        session.close()
        gen.close()
    return {"frames": len(out), "views": len(out[0].view_ids) if out else None, "total": counts.get("Global", 0),
            "unet": counts.get("MultiViewUNet", 0), "unet_parts": unet_parts(counts)}


# the UNet's parts, by the first of these words in a module's path
UNET_PARTS = (("view_module", "view modules"), ("motion_modules", "motion modules"),
              ("attentions", "spatial transformers"), ("resnets", "ResNet blocks"),
              ("samplers", "up- and downsampling"))


def unet_parts(counts: dict[str, int]) -> dict[str, int]:
    """The UNet's operations by part: the innermost modules' counts (the layers: convolutions,
    projections), summed by ``UNET_PARTS``. A module's count includes whatever ran inside its
    call, hooks of other modules too, so only modules with no listed module inside their path
    are summed; what the UNet counted outside them (attention products in a module that also
    holds layers) is "other"."""
    names = [n for n in counts if n.startswith("MultiViewUNet.")]
    parts: dict[str, int] = {}
    for name in names:
        if any(other.startswith(name + ".") for other in names):
            continue
        words = name.split(".")
        label = next((label for key, label in UNET_PARTS if any(key in w for w in words)), "other")
        parts[label] = parts.get(label, 0) + counts[name]
    parts["other"] = parts.get("other", 0) + counts.get("MultiViewUNet", 0) - sum(parts.values())
    return parts


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
        "unet_tflop_per_step_by_part": {k: v / 1e12 for k, v in counted.get("unet_parts", {}).items()},
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
    for part, tflop in sorted(report["unet_tflop_per_step_by_part"].items(), key=lambda kv: -kv[1]):
        print(f"  UNet step, {part}: {tflop:.2f} TFLOP ({tflop / report['unet_tflop_per_step']:.0%})")
    for k, need in report["tflop_per_s_needed"].items():
        print(f"  {k} session(s) at {args.fps:g} frames/s: {need:.0f} TFLOP/s")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
