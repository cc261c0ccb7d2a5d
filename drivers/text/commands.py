"""The text driver's commands: ``flamecast train text`` (MotionDM and EmotionDM) and
``flamecast eval text`` (accuracy and jitter on held-out paraphrases)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flamecast.plugins import Command, CommandError

DEFAULT_OUT = "text-weights"


def configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=6000, help="optimiser steps (default 6000)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default ./{DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus, the initial weights and the batches")
    p.add_argument("--clips", type=int, default=6000, help="procedural clips to generate (default 6000)")
    p.add_argument("--paraphrases", type=int, default=1,
                   help="captions per procedural clip: its own plus K-1 paraphrases of what it shows (default 1)")
    p.add_argument("--caption-mix", action="store_true",
                   help="train on random blends of two of a clip's caption embeddings")
    p.add_argument("--text-noise", type=float, default=0.5, metavar="L",
                   help="add Gaussian noise of length L to each unit text embedding in training "
                        "(default 0.5, as the shipped weights; 0 = none)")
    p.add_argument("--text-tokens", type=int, default=32, metavar="N",
                   help="the models also attend to up to N token states of the caption "
                        "(default 32, as the shipped weights; 0 = the pooled embedding only)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--smoothing", type=int, default=3, help="smoothing window on the data in frames (1 = none)")
    p.add_argument("--celebv", metavar="DIR", help="train on CelebV-Text-style data (docs/text-driver.md)")
    p.add_argument("--encoder", choices=["minilm", "clip"], default="minilm", help="text encoder (default minilm)")
    p.add_argument("--clip-path", metavar="DIR", help="local CLIP ViT-B/32 folder (with --encoder clip)")
    p.add_argument("--device", default="cpu", help="where the models train: cpu (default) or cuda (a GPU)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1: fastest on a shared CPU)")


def run_train(args: argparse.Namespace) -> int:
    if args.steps <= 0 or args.clips <= 0 or args.batch <= 0 or args.paraphrases <= 0:
        raise CommandError("--steps, --clips, --paraphrases and --batch must be positive")
    if not 0 <= args.text_noise <= 4:
        raise CommandError("--text-noise must be between 0 (none) and 4")
    if not 0 <= args.text_tokens <= 128:
        raise CommandError("--text-tokens must be between 0 (pooled embedding only) and 128")
    if args.smoothing < 1:
        raise CommandError("--smoothing must be at least 1 (1 = no smoothing)")
    import torch

    from flamecast.drivers.text.encoder import EncoderError
    from flamecast.drivers.text.train import CHECKPOINT, TrainSettings, train

    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        raise CommandError(f"--device {args.device}: no such device here (torch sees no GPU); use --device cpu")
    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    if args.resume and not (out / CHECKPOINT).is_file():
        raise CommandError(f"--resume: no checkpoint at {out / CHECKPOINT}; start without --resume")
    if args.celebv and not Path(args.celebv).is_dir():
        raise CommandError(f"--celebv {args.celebv}: no such folder")
    settings = TrainSettings(out=out, steps=args.steps, seed=args.seed, resume=args.resume, clips=args.clips,
                             paraphrases=args.paraphrases, caption_mix=args.caption_mix,
                             text_noise=args.text_noise, text_tokens=args.text_tokens, device=args.device,
                             batch=args.batch,
                             lr=args.lr, encoder=args.encoder, clip_path=args.clip_path,
                             smoothing=args.smoothing, celebv=Path(args.celebv) if args.celebv else None)
    try:
        summary = train(settings)
    except (EncoderError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps(summary, indent=1))
    print(f"weights in {out}/ (use them with --option weights={out})")
    return 0


TRAIN = Command(
    path=("train", "text"),
    help="the text driver's MotionDM + EmotionDM",
    description=(
        "Train the text driver's diffusion models on the procedural corpus (default) or on "
        "CelebV-Text-style data (--celebv DIR). Seeded, with checkpoints; --resume continues a run. "
        "Writes config.json, motion/emotion .safetensors, bank.safetensors, loss.json and loss.png to --out."
    ),
    configure=configure_train,
    run=run_train,
)


def configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="DIR", help="weights folder (default: the shipped weights)")
    p.add_argument("--cases", type=int, default=240, help="held-out captions (default 240)")
    p.add_argument("--seconds", type=float, default=4.0, help="clip length (default 4)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    p.add_argument("--guidance", type=float, default=2.5, help="guidance scale (default 2.5)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the held-out captions")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument("--failures", type=int, default=0, metavar="N", help="list N failed captions")


def run_eval(args: argparse.Namespace) -> int:
    if args.cases <= 0 or args.steps <= 0 or not 0 < args.seconds <= 10:
        raise CommandError("--cases and --steps must be positive and --seconds in (0, 10]")
    import torch

    from flamecast.drivers.text.evaluate import evaluate, heldout_cases
    from flamecast.drivers.text.pipeline import Text2Flame, WeightsError

    torch.set_num_threads(max(1, args.threads))
    try:
        pipe = Text2Flame.load(args.weights)
    except WeightsError as exc:
        raise CommandError(str(exc)) from None
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


EVAL = Command(
    path=("eval", "text"),
    help="the text driver's models on held-out paraphrases",
    description=(
        "Generate a clip for each held-out caption (paraphrases and modifiers the training never "
        "saw) and report motion accuracy, emotion accuracy, jitter with and without smoothing, and the "
        "weak-match flag on held-out and nonsense prompts."
    ),
    configure=configure_eval,
    run=run_eval,
)
