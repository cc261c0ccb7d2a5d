"""GPU correctness check of FLAME2Video at real (SD1.5) size with random weights.

Runs one denoising-UNet call (4 views x 8 frames, reference K/V joined) in float32 and in
bfloat16 on the same inputs and prints the relative error ||bf16 - fp32|| / ||fp32||, plus the
same for the reference-attention join against concatenated-key attention.

    python bench/flame2video_check.py --size 256 --json out.json
"""

from __future__ import annotations

import argparse
import json

import torch

from flamecast.renderer.flame2video.components import random_components
from flamecast.renderer.flame2video.config import MODEL_CONFIGS, get_profile
from flamecast.renderer.flame2video.pipeline import FLAME2VideoPipeline


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def unet_output(pipe: FLAME2VideoPipeline, x, cond, portrait, t) -> torch.Tensor:
    ref = pipe.prepare_reference(portrait)
    pipe.reference.activate(ref.cache)
    with torch.no_grad():
        return pipe._model_output(x, t, ref, pipe.encode_conditions(cond))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--model", default="sd15")
    ap.add_argument("--json")
    args = ap.parse_args()
    profile = get_profile("live").replace(size=args.size)
    torch.manual_seed(0)
    comps = random_components(MODEL_CONFIGS[args.model](), device="cuda")
    gen = torch.Generator("cuda").manual_seed(1)
    w, v, side = profile.window, profile.views, args.size // 8
    x = torch.randn(w, v, 4, side, side, device="cuda", generator=gen)
    cond = torch.rand(w, v, 3, args.size, args.size, device="cuda", generator=gen)
    portrait = torch.rand(3, 300, 300, device="cuda", generator=gen)
    t = torch.tensor(500, device="cuda")
    out = {}
    p32 = FLAME2VideoPipeline(comps, profile.replace(dtype="float32"), device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref32 = unet_output(p32, x, cond, portrait, t)
    del p32
    comps16 = comps  # the pipeline casts in place: build bf16 last
    p16 = FLAME2VideoPipeline(comps16, profile, device="cuda")
    o16 = unet_output(p16, x, cond, portrait, t)
    out["unet_bf16_vs_fp32_rel"] = rel(o16, ref32)
    out["finite"] = bool(torch.isfinite(o16).all())
    out["size"] = args.size
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh)


if __name__ == "__main__":
    main()
