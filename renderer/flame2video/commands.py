"""``flamecast weights``: which model weights are present, where they go, how to import them.

    flamecast weights status [--weights-dir DIR] [--json]
    flamecast weights import sd15 ~/models/stable-diffusion-v1-5
    flamecast weights import animatediff ~/models/mm_sd_v15_v2.ckpt
    flamecast weights import aniportrait ~/models/AniPortrait   (denoising_unet.pth, reference_unet.pth, ...)
    flamecast weights import image-encoder ~/models/sd-image-variations-diffusers/image_encoder
    flamecast weights import vae ~/models/sd-vae-ft-mse
    flamecast weights import tiny-vae ~/models/taesd

Weights are never downloaded; see docs/weights.md.
"""

from __future__ import annotations

import argparse
import json

from flamecast.plugins import Command, CommandError

KINDS = ("sd15", "animatediff", "aniportrait", "image-encoder", "vae", "tiny-vae", "flamecast")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights-dir", help="weights directory (default: $FLAMECAST_WEIGHTS or ~/.cache/flamecast/weights)")
    verbs = p.add_subparsers(dest="weights_verb", metavar="VERB", required=True)
    st = verbs.add_parser("status", help="each component, the folder it is expected in, and whether it is there")
    st.add_argument("--json", action="store_true", help="print JSON")
    im = verbs.add_parser("import", help="convert weights you have on disk into flamecast's layout")
    im.add_argument("kind", choices=KINDS, help="what SOURCE is (see docs/weights.md)")
    im.add_argument("source", help="folder or checkpoint file to import")
    im.add_argument("--model", default="sd15", choices=("sd15", "tiny"),
                    help="architecture for settings a checkpoint does not carry (heads, norm groups)")
    im.add_argument("--no-view-init", action="store_true",
                    help="animatediff: import the motion module only, leaving the view module as it is")


def run(args: argparse.Namespace) -> int:
    from flamecast.renderer.flame2video import weights

    root = weights.weights_root(args.weights_dir)
    if args.weights_verb == "status":
        return _status(root, args.json)
    return _import(root, args)


def _status(root, as_json: bool) -> int:
    from flamecast.renderer.flame2video import weights

    rows = weights.status(root)
    if as_json:
        print(json.dumps({"weights_dir": str(root), "flame2video": [r.as_dict() for r in rows]}, indent=2))
        return 0
    print(f"weights directory: {root}  (set with --weights-dir or ${weights.ENV})")
    print("flame2video:")
    for r in rows:
        mark = "present" if r.present else "MISSING"
        print(f"  {r.name:<15} {mark:<8} {r.path}")
        if not r.present:
            print(f"  {'':<15} {r.what}; import with: {r.how}")
    return 0


def _import(root, args: argparse.Namespace) -> int:
    from pathlib import Path

    from flamecast.renderer.flame2video import weights

    source = Path(args.source).expanduser()
    if not source.exists():
        raise CommandError(f"{source} does not exist; give the folder or checkpoint file to import")
    kwargs = {}
    if args.kind in ("animatediff", "aniportrait"):
        kwargs["model"] = args.model
    if args.kind == "animatediff":
        kwargs["view"] = not args.no_view_init
    try:
        done = weights.IMPORTERS[args.kind](root, source, **kwargs)
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(f"cannot import {source} as {args.kind}: {exc}") from None
    for name in done:
        print(f"imported {name} -> {weights.flame2video_root(root) / name}")
    return 0


COMMAND = Command(
    path=("weights",),
    help="list model weights and import them into flamecast's layout",
    configure=configure,
    run=run,
)
