"""``flamecast train microphone`` and ``flamecast eval microphone``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flamecast.plugins import Command, CommandError

DEFAULT_OUT = "microphone-weights"


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=3000, help="optimiser steps (default 3000, as the shipped weights)")
    p.add_argument("--utterances", type=int, default=800, help="espeak-ng utterances to synthesise (default 800)")
    p.add_argument("--batch", type=int, default=24, help="crops per batch (default 24)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 3e-3)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default ./{DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0, help="seed of the speech, the weights and the batches")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1)")


def _train(args: argparse.Namespace) -> int:
    if min(args.steps, args.utterances, args.batch, args.threads) <= 0 or args.utterances < 20:
        raise CommandError("--steps, --batch and --threads must be positive and --utterances at least 20")
    import torch

    from .speech import SpeechError
    from .train import CHECKPOINT, TrainSettings, train

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.resume and not (out / CHECKPOINT).is_file():
        raise CommandError(f"--resume: no checkpoint at {out / CHECKPOINT}; start without --resume")
    settings = TrainSettings(out=out, steps=args.steps, utterances=args.utterances, batch=args.batch, lr=args.lr,
                             seed=args.seed, resume=args.resume)
    try:
        info = train(settings)
    except SpeechError as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps(info, indent=1))
    print(f"wrote {out}/config.json and {out}/visemenet.safetensors; use them with "
          f"`flamecast eval microphone --weights {out}` or copy them into the package's weights/ folder")
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="DIR", help="model folder (default: the shipped weights)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    p.add_argument("--limit", type=int, help="evaluate this many held-out utterances (default: all 150)")
    p.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1: the CPU figure is per core)")


def _eval(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit <= 0:
        raise CommandError("--limit must be positive")
    if args.weights and not Path(args.weights).is_dir():
        raise CommandError(f"--weights {args.weights}: no such folder")
    import torch

    from .evaluate import EvalSettings, evaluate
    from .speech import SpeechError

    torch.set_num_threads(max(1, args.threads))
    try:
        result = evaluate(EvalSettings(weights=Path(args.weights) if args.weights else None, fps=args.fps, limit=args.limit))
    except (SpeechError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


TRAIN_COMMAND = Command(
    path=("train", "microphone"), help="train the microphone driver's VisemeNet on speech espeak-ng makes",
    description="Synthesise speech with espeak-ng (varied voices, speeds, pitches; phoneme timings), augment it "
    "(level, clipping, noise, band limits, 8-bit) and train VisemeNet to give jaw and mouth shapes per 10 ms. "
    "Writes config.json, visemenet.safetensors and loss.json to --out.",
    configure=_train_args, run=_train)
EVAL_COMMAND = Command(
    path=("eval", "microphone"), help="lip-sync correlation, latency and CPU cost on held-out speech",
    description="Synthesise held-out sentences with held-out voices and compare the jaw opening with the "
    "open (vowels) / closed (pauses, p/b/m, hums) timeline of their phonemes.",
    configure=_eval_args, run=_eval)
