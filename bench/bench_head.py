"""Time the built-in head's forward pass (LBS + blendshapes + landmarks).

    python bench/bench_head.py [--device cpu|cuda] [--batch 1 4 16] [--repeat 50] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from flamecast.renderer.head import load_head

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    head = load_head("builtin").to(args.device)
    print(f"builtin head: {head.v_template.shape[0]} vertices, {head.faces.shape[0]} triangles, device {args.device}, {torch.get_num_threads()} CPU threads")
    g = torch.Generator().manual_seed(0)
    for batch in args.batch:
        inputs = dict(
            pose=(torch.randn(batch, 15, generator=g) * 0.1).to(args.device),
            expression=torch.rand(batch, head.n_expression, generator=g).to(args.device),
            shape=torch.randn(batch, head.n_shape, generator=g).to(args.device),
        )
        with torch.no_grad():
            for _ in range(5):
                head(**inputs)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.repeat):
                head(**inputs)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
        ms = (time.perf_counter() - start) / args.repeat * 1e3
        print(f"batch {batch:3d}: {ms:7.3f} ms per call, {ms / batch:7.3f} ms per frame")


if __name__ == "__main__":
    main()
