"""Where a FLAME2Video denoising step spends its time on a GPU (random SD1.5-size weights).

Times one UNet call (W frames x V views, CUDA events, median of repeats) with parts switched
off or changed, and prints the top CUDA kernels of the baseline:

    python bench/flame2video_profile.py --size 256 --json out.json
"""

from __future__ import annotations

import argparse
import json

import torch

from flamecast.renderer.flame2video.components import random_components
from flamecast.renderer.flame2video.config import MODEL_CONFIGS, get_profile
from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline


def timed(fn, repeats: int = 10) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--json")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    profile = get_profile("live").replace(size=args.size)
    pipe = FLAME2VideoPipeline(random_components(MODEL_CONFIGS["sd15"](), device="cuda"), profile, device="cuda")
    g = torch.Generator("cuda").manual_seed(0)
    w, v, side = profile.window, profile.views, args.size // 8
    x = torch.randn(w, v, 4, side, side, device="cuda", generator=g)
    cond = pipe.encode_conditions(torch.rand(w, v, 3, args.size, args.size, device="cuda", generator=g))
    ref = pipe.prepare_reference(torch.rand(3, 256, 256, device="cuda", generator=g))
    t = torch.tensor(500, device="cuda")

    def step():
        with torch.no_grad():
            pipe._model_output(x, t, ref, cond)

    res = {"size": args.size}
    pipe.reference.activate(ref.cache)
    res["baseline_ms"] = timed(step)
    pipe.reference.activate(None)
    res["no_reference_join_ms"] = timed(step)
    pipe.reference.activate(ref.cache)
    pipe.unet._skip_views = True
    res["no_view_module_ms"] = timed(step)
    pipe.unet._skip_views = False
    pipe.unet.to(memory_format=torch.channels_last)
    res["channels_last_ms"] = timed(step)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.top, max_name_column_width=60)
    print(table)
    res["cpu_total_ms"] = sum(e.cpu_time_total for e in prof.key_averages() if e.key.startswith("aten::")) / 1e3
    print(json.dumps(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh)


if __name__ == "__main__":
    main()
