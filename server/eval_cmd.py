"""``flamecast eval text``: accuracy and jitter of the text models on held-out paraphrases."""

from __future__ import annotations

import argparse
import json

from .cli import UsageError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="evaluate a driver's models (text: held-out paraphrases)",
        description="Generate a clip for each held-out caption (paraphrases and modifiers the training never "
        "saw) and report motion accuracy, emotion accuracy, jitter with and without smoothing, and the "
        "weak-match flag on held-out and nonsense prompts.",
    )
    p.add_argument("what", choices=["text"], help="what to evaluate")
    p.add_argument("--weights", metavar="DIR", help="weights folder (default: the shipped weights)")
    p.add_argument("--cases", type=int, default=240, help="held-out captions (default 240)")
    p.add_argument("--seconds", type=float, default=4.0, help="clip length (default 4)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    p.add_argument("--guidance", type=float, default=2.5, help="guidance scale (default 2.5)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the held-out captions")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument("--failures", type=int, default=0, metavar="N", help="list N failed captions")
    return p


def run(args: argparse.Namespace) -> int:
    if args.cases <= 0 or args.steps <= 0 or not 0 < args.seconds <= 10:
        raise UsageError("--cases and --steps must be positive and --seconds in (0, 10]")
    import torch

    from flamecast.drivers.text.evaluate import evaluate, heldout_cases
    from flamecast.drivers.text.pipeline import Text2Flame, WeightsError

    torch.set_num_threads(max(1, args.threads))
    try:
        pipe = Text2Flame.load(args.weights)
    except WeightsError as exc:
        raise UsageError(str(exc)) from None
    report = evaluate(pipe, heldout_cases(args.cases, args.seed), seconds=args.seconds, steps=args.steps,
                      guidance=args.guidance, smoothing=int(pipe.motion.cfg.smoothing) or 3, progress=True)
    s = report.summary()
    if args.json:
        print(json.dumps(s, indent=1))
    else:
        print(f"motion accuracy   {s['motion_accuracy']:.1%} ({s['motion_cases']} captions)")
        print(f"emotion accuracy  {s['emotion_accuracy']:.1%} ({s['emotion_cases']} captions)")
        print(f"pose jitter       {s['pose_jitter']:.5f} rad/frame^2 raw, {s['pose_jitter_smoothed']:.5f} smoothed")
        print(f"data pose jitter  {s['data_pose_jitter']:.5f} rad/frame^2 raw, {s['data_pose_jitter_smoothed']:.5f} "
              "smoothed (the corpus clips of the same captions, for reference)")
        print(f"expression jitter {s['expression_jitter']:.5f} /frame^2 raw, {s['expression_jitter_smoothed']:.5f} smoothed")
        print(f"weak match: {s['weak_match_heldout']} of {len(report.pose_jitter)} held-out captions, "
              f"{s['weak_match_nonsense']} nonsense/other-language prompts")
        print("per label: " + ", ".join(f"{k} {v}" for k, v in s["per_label"].items()))
    for label, caption, got in report.failures[: args.failures]:
        print(f"FAIL {label}: {caption!r} -> {got}")
    return 0
