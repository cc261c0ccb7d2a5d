"""Window time of the two carry modes under torch.compile on the tiny configuration (GPU).

A quick check that a compiled pipeline replays its CUDA graphs in both carry modes and with two
sessions taking turns: a graph recorded again on every call shows up as windows that cost many
times the steady state.

    python bench/flame2video_carry_check.py --compile reduce-overhead --windows 30 --modes cache --sessions 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from flamecast.renderer.flame2video.components import random_components
from flamecast.renderer.flame2video.config import get_profile, tiny_config
from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline
from flamecast.renderer.flame2video.stream import WindowStream


def run(mode: str, compile_mode: str | None, windows: int, sessions: int, device: str) -> dict:
    profile = get_profile("tiny").replace(carry_mode=mode, dtype="bfloat16")
    pipe = FLAME2VideoPipeline(random_components(tiny_config(), seed=0, device=device), profile, device=device)
    if compile_mode:
        pipe.compile(compile_mode)
    g = torch.Generator().manual_seed(0)
    streams = [WindowStream(pipe, pipe.prepare_reference(torch.rand(3, 64, 64, generator=g)),
                            lambda items: torch.rand(len(items), profile.views, 3, 64, 64), seed=i)
               for i in range(sessions)]
    times = []
    for w in range(windows):
        for s in streams:
            t0 = time.perf_counter()
            s.push(list(range(profile.stride)))
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(1e3 * (time.perf_counter() - t0))
    steady = sorted(times[len(times) // 2:])
    return {"carry_mode": mode, "compile": compile_mode, "sessions": sessions, "first_ms": times[:4],
            "steady_median_ms": steady[len(steady) // 2], "steady_max_ms": steady[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compile", default="reduce-overhead")
    p.add_argument("--windows", type=int, default=30)
    p.add_argument("--device", default="cuda")
    p.add_argument("--modes", default="renoise,cache", help="carry modes to run (comma list)")
    p.add_argument("--sessions", default="1,2", help="session counts to run (comma list)")
    p.add_argument("--json")
    a = p.parse_args()
    rows = [run(mode, a.compile or None, a.windows, int(n), a.device)
            for mode in a.modes.split(",") for n in a.sessions.split(",")]
    for r in rows:
        print(json.dumps(r))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
