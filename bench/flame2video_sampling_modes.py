"""Held-out PSNR of FLAME2Video weights sampled several ways: does a phase's effect on the
samples depend on how serving streams them?

    python bench/flame2video_sampling_modes.py --data data run/weights-1 run/weights-2 \
        --views 2 --window 4 --json modes.json

For each weights folder (flamecast's layout, e.g. copies of a training run's ``OUT/weights``
taken after each phase), the held-out clips are sampled through ``training.validate`` (the
pipeline and ``WindowStream`` a session uses; 4 DDIM steps unless told) in windows of W frames:

* ``cache``: stride W/2, the carried frames as cached temporal context (``live``, ``hq``);
* ``renoise``: stride W/2, the carried frames re-noised and denoised again;
* ``no carry``: stride W, every window on its own (as training sees windows);
* ``single frame``: W = 1, the motion module sees one frame at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path


def modes(window: int) -> dict[str, dict]:
    half = max(1, window // 2)
    return {"cache": {"carry_mode": "cache", "stride": half}, "renoise": {"carry_mode": "renoise", "stride": half},
            "no carry": {"stride": window}, "single frame": {"window": 1, "stride": 1}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", nargs="+", help="weights folders")
    ap.add_argument("--data", required=True, help="the dataset folder (its held-out clips are sampled)")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--frames", type=int, default=16, help="frames per held-out clip")
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--scheduler", default="ddim", choices=("ddim", "lcm", "tcd"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)

    import torch

    from flamecast.renderer.flame2video.training.layout import read_manifest
    from flamecast.renderer.flame2video.training.setup import initial_components
    from flamecast.renderer.flame2video.training.validate import ValidationSettings, fit_to_dataset, validate

    data = Path(args.data)
    manifest = read_manifest(data)
    base = ValidationSettings(clips=args.clips, frames=args.frames, views=args.views, window=args.window,
                              stride=max(1, args.window // 2), steps=args.steps, scheduler=args.scheduler)
    report: dict[str, dict[str, float | None]] = {}
    for folder in args.weights:
        components, _ = initial_components(Path(folder), random_init=False, model="tiny", seed=0)
        row = {}
        for name, change in modes(args.window).items():
            settings, why_not = fit_to_dataset(replace(base, **change), manifest)
            if why_not:
                print(f"{folder}: {name}: {why_not}", file=sys.stderr)
            row[name] = validate(components, data, manifest, settings, device=torch.device(args.device))["psnr"]
        report[folder] = row
        print(folder, "  ".join(f"{k} {v:.2f} dB" if v is not None else f"{k} -" for k, v in row.items()), flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
