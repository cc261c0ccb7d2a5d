"""The webcam plugin's commands: ``flamecast track`` and ``flamecast eval webcam``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flamecast.plugins import HEAD_NAMES, Command, CommandError, OptionsError, named_head_space


def _configure_track(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file (anything PyAV decodes)")
    p.add_argument("--out", required=True, metavar="FLAME.npz", help="where to write the sequence")
    p.add_argument("--head", choices=HEAD_NAMES, default="builtin",
                   help="head space of the sequence (FLAME: DECA's expressions when its weights are present)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="webcam driver option (tracker, weights_dir, min_cutoff, beta, ...; repeatable)")


def _run_track(args: argparse.Namespace) -> int:
    from .driver import WebcamDriver
    from .sources import SourceError
    from .track import track_video, write_sequence

    pairs = dict(p.split("=", 1) for p in args.option if "=" in p)
    if len(pairs) != len(args.option):
        raise CommandError("--option takes KEY=VALUE")
    try:
        options = WebcamDriver.parse_options({**pairs, "source": "file", "file": args.video}, from_strings=True)
    except OptionsError as exc:
        raise CommandError(str(exc)) from None
    try:
        seq, tracker = track_video(args.video, options, named_head_space(args.head))
        write_sequence(args.out, seq, tracker)
    except (SourceError, FileNotFoundError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    faces = sum(seq.face)
    print(f"tracked {len(seq.t)} frames ({faces} with a face) with {tracker.name} to {args.out}")
    return 0


def track_command() -> Command:
    return Command(
        path=("track",), help="turn a video of a face into a FLAME sequence file",
        description="Track every frame of a video with the webcam driver's tracker (FaceMesh landmarks "
        "fitted on the head's space, DECA when its weights and a FLAME head are chosen) and write "
        "t, pose, expression, eyelids, face, ... to an .npz (docs/webcam.md).",
        configure=_configure_track, run=_run_track,
    )


def _configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--photo-frames", type=int, default=150, help="frames of the moved photograph")
    p.add_argument("--render-frames", type=int, default=150, help="frames of head renders")
    p.add_argument("--size", type=int, default=480, help="side of the head renders in pixels")
    p.add_argument("--motion", type=int, default=0, metavar="N",
                   help="0: the documented motion; another number: a motion drawn from that seed")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def _run_eval(args: argparse.Namespace) -> int:
    from .evaluate import TARGETS, evaluate

    if min(args.photo_frames, args.render_frames) < 20:
        raise CommandError("--photo-frames and --render-frames need at least 20 frames")
    figures = evaluate(args.photo_frames, args.render_frames, args.size, motion=args.motion)
    failed = []
    for key, value in figures.items():
        target = TARGETS.get(key)
        mark = ""
        if target is not None:
            ok = value >= target if key.endswith("correlation") else value <= target
            mark = f"  (target {'>=' if key.endswith('correlation') else '<='} {target:g}: {'ok' if ok else 'MISSED'})"
            failed += [] if ok else [key]
        print(f"{key:32s} {value:8.3f}{mark}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 1 if failed else 0


def eval_command() -> Command:
    return Command(
        path=("eval", "webcam"), help="webcam tracking error on a moved photograph and on head renders",
        description="Run the webcam driver on inputs with known motion: the astronaut photograph moved and "
        "rotated in-plane (roll error) and renders of the textured built-in head with known yaw, pitch, "
        "roll, jaw and blinks. Exits 1 when a target is missed.",
        configure=_configure_eval, run=_run_eval,
    )
