"""Benchmark: how long the text driver takes to make a clip from a prompt (CPU).

Measures Text2Flame.generate (prompt embedding from the LRU cache or fresh, MotionDM + EmotionDM
DDIM sampling with classifier-free guidance, decoding) for a clip of --seconds, and prints the
median and 90th percentile over --repeats prompts, with the machine's load average, since the
machine may be shared.

    python bench/text_driver.py --seconds 4 --steps 20 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

PROMPTS = ("nods slowly and smiles", "shakes the head no", "turns to the left", "looks up and looks surprised",
           "tilts the head to the right", "talks while smiling", "looks sad", "bobs the head to the beat")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--weights", default=None)
    args = p.parse_args()

    import torch

    from flamecast.drivers.text.pipeline import Text2Flame

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pipe = Text2Flame.load(args.weights)
    load_s = time.perf_counter() - t0
    pipe.generate(PROMPTS[0], seconds=args.seconds, steps=args.steps)  # warm-up

    def timed(text: str, seed: int) -> float:
        t = time.perf_counter()
        pipe.generate(text, seconds=args.seconds, steps=args.steps, seed=seed)
        return time.perf_counter() - t

    fresh = [timed(f"{PROMPTS[i % len(PROMPTS)]} number {i}", i) for i in range(args.repeats // 4)]
    cached = [timed(PROMPTS[i % len(PROMPTS)], i) for i in range(args.repeats)]
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; torch {torch.__version__}, {args.threads} thread(s)")
    print(f"model load (encoder + both models): {load_s:.2f} s")
    for name, xs in (("cached prompt", cached), ("new prompt (encoder runs)", fresh)):
        xs = sorted(xs)
        p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
        print(f"{args.seconds:g} s clip, {args.steps} DDIM steps, {name}: median {1000 * statistics.median(xs):.1f} ms, "
              f"p90 {1000 * p90:.1f} ms over {len(xs)} runs")


if __name__ == "__main__":
    main()
