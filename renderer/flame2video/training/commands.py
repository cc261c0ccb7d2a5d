"""``flamecast train flame2video`` and ``flamecast data flame2video``: Command objects for the
``flamecast_register_commands`` hook. Heavy imports happen inside ``run``.

    flamecast data flame2video bake-avatars --out avatars/            (photos -> textured heads; mediapipe)
    flamecast data flame2video make-synthetic --out data/ [--avatars avatars/] --clips 12 --size 128
    flamecast data flame2video build --multiview CAPTURES/ --out data/   (<clip>/<view>.mp4 + <clip>/flame.npz)
    flamecast data flame2video build --single-view VIDEOS/ --out data/  (<name>.mp4 + <name>.npz)
    flamecast data flame2video check data/
    flamecast train flame2video --phase vae|1|2|3|distill --data data/ --out run/ [...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flamecast.plugins import HEAD_NAMES, Command, CommandError

DATA_ACTIONS = ("bake-avatars", "make-synthetic", "build", "check")


def configure_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=DATA_ACTIONS, help="what to do (see docs/training.md)")
    p.add_argument("folder", nargs="?", help="check: the dataset folder")
    p.add_argument("--out", help="output folder (dataset, or avatars for bake-avatars)")
    p.add_argument("--multiview", metavar="DIR", help="build: <clip>/<view id>.mp4 videos + <clip>/flame.npz")
    p.add_argument("--single-view", metavar="DIR", help="build: <name>.mp4 talking-head videos + <name>.npz FLAME files")
    p.add_argument("--no-track", action="store_true",
                   help="build: fail on clips without a FLAME file instead of tracking their video")
    p.add_argument("--track-view", default="front", metavar="VIEW",
                   help="build: the view whose video is tracked when a clip has no FLAME file (default front)")
    p.add_argument("--track-head", default="builtin", choices=HEAD_NAMES,
                   help="build: head space of tracked sequences (FLAME: DECA's expressions when its weights are present)")
    p.add_argument("--track-option", action="append", default=[], metavar="KEY=VALUE",
                   help="build: webcam tracker option for tracked clips (tracker=deca, weights_dir=..., repeatable)")
    p.add_argument("--photos", nargs="*", metavar="IMAGE",
                   help="bake-avatars / make-synthetic: photographs (default: the astronaut and Grace Hopper)")
    p.add_argument("--avatars", metavar="DIR", help="make-synthetic: avatars baked earlier (no mediapipe needed)")
    p.add_argument("--clips", type=int, default=12, help="make-synthetic: clips (default 12)")
    p.add_argument("--frames", type=int, default=32, help="make-synthetic: frames per clip (default 32)")
    p.add_argument("--views", type=int, default=4, help="make-synthetic: views per clip (default 4)")
    p.add_argument("--vary-views", action="store_true", help="make-synthetic: draw views other than front at random")
    p.add_argument("--size", type=int, default=256, help="side of the dataset's frames in pixels (default 256)")
    p.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    p.add_argument("--val-every", type=int, default=4, help="hold out every N-th clip for validation (0: none)")
    p.add_argument("--seed", type=int, default=0)


def run_data(args: argparse.Namespace) -> int:
    from .layout import DatasetError

    try:
        return {"bake-avatars": _bake, "make-synthetic": _synthetic, "build": _build, "check": _check}[args.action](args)
    except DatasetError as exc:
        raise CommandError(str(exc)) from None


def _need(args, name: str, flag: str) -> Path:
    value = getattr(args, name)
    if not value:
        raise CommandError(f"{args.action} needs {flag}")
    return Path(value)


def _photos(args) -> dict[str, bytes]:
    from .synthetic import offline_photos

    if not args.photos:
        return offline_photos()
    missing = [p for p in args.photos if not Path(p).is_file()]
    if missing:
        raise CommandError(f"--photos: no such file {missing[0]}")
    return {Path(p).stem: Path(p).read_bytes() for p in args.photos}


def _bake(args) -> int:
    from .synthetic import bake_avatar

    out = _need(args, "out", "--out DIR")
    try:
        for name, photo in _photos(args).items():
            print(f"baked {bake_avatar(name, photo).save(out)}")
    except RuntimeError as exc:
        raise CommandError(str(exc)) from None
    return 0


def _synthetic(args) -> int:
    from .synthetic import Avatar, SyntheticSettings, bake_avatar, make_synthetic

    out = _need(args, "out", "--out DIR")
    if args.avatars:
        avatars = [Avatar.load(p) for p in sorted(Path(args.avatars).glob("*.npz"))]
        if not avatars:
            raise CommandError(f"--avatars {args.avatars}: no <name>.npz avatars (make them with bake-avatars)")
    else:
        try:
            avatars = [bake_avatar(n, b) for n, b in _photos(args).items()]
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
    if args.size % 64:
        raise CommandError(f"--size {args.size}: use a multiple of 64 (the network's latent grid)")
    s = SyntheticSettings(out=out, clips=args.clips, frames=args.frames, views=args.views, size=args.size,
                          fps=args.fps, seed=args.seed, val_every=args.val_every, vary_views=args.vary_views)
    manifest = make_synthetic(s, avatars)
    print(f"{len(manifest.clips)} clips ({len(manifest.split('val'))} held out) in {out}")
    return 0


def _build(args) -> int:
    from .build import build_dataset, multiview_sources, single_view_sources

    out = _need(args, "out", "--out DIR")
    if bool(args.multiview) == bool(args.single_view):
        raise CommandError("build needs exactly one of --multiview DIR or --single-view DIR")
    src = Path(args.multiview or args.single_view)
    if not src.is_dir():
        raise CommandError(f"{src}: no such folder")
    sources = multiview_sources(src) if args.multiview else single_view_sources(src)
    if not args.no_track:
        from .tracking import track_missing

        tracked = track_missing(sources, view=args.track_view, head=args.track_head, options=args.track_option)
        if tracked:
            print(f"tracked {len(tracked)} clip(s) with the webcam tracker")
    manifest = build_dataset(out, sources, size=args.size, fps=args.fps, val_every=args.val_every)
    print(f"{len(manifest.clips)} clips in {out}")
    return 0


def _check(args) -> int:
    from .checks import check_dataset

    folder = Path(args.folder or args.out or "")
    if not args.folder and not args.out:
        raise CommandError("check needs the dataset folder")
    manifest = check_dataset(folder)
    views = sorted({len(c.views) for c in manifest.clips})
    print(f"{folder}: {len(manifest.clips)} clips OK ({len(manifest.split('val'))} held out), "
          f"{manifest.size}x{manifest.size}, views per clip {views}")
    return 0


# ---- training ---------------------------------------------------------------------------

def configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--phase", required=True, choices=("vae", "1", "2", "3", "distill"),
                   help="1: FLAME encoder + reference UNet + 2D layers; 2: motion module; 3: view module; "
                        "distill: 4-step latent consistency distillation; vae: autoencoder (no pretrained VAE)")
    p.add_argument("--data", required=True, help="dataset folder (flamecast data flame2video ...)")
    p.add_argument("--out", required=True, help="run folder: OUT/weights is the export, OUT/phase-P the logs")
    p.add_argument("--init", help="weights folder to start from (default: OUT/weights when present)")
    p.add_argument("--random-init", action="store_true",
                   help="build components missing from --init at random (pipeline proofs only)")
    p.add_argument("--model", default="small", choices=("tiny", "small", "sd15"),
                   help="configuration of components built with --random-init (default small)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=4, help="samples per GPU per step")
    p.add_argument("--lr", type=float, help="learning rate (default per phase)")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    p.add_argument("--window", type=int, default=8, help="W: frames per sample (phases 2, 3, distill)")
    p.add_argument("--views", type=int, default=4, help="V: views per sample (phase 3, distill)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed-precision", default="no", choices=("no", "bf16"))
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--optimizer-8bit", action="store_true", help="8-bit AdamW states (bitsandbytes)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    p.add_argument("--workers", type=int, default=2, help="data loader processes")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--val-every", type=int, default=250, help="validation videos and PSNR every N steps (0: ends only)")
    p.add_argument("--val-clips", type=int, default=2)
    p.add_argument("--val-frames", type=int, default=16)
    p.add_argument("--val-steps", type=int, default=4, help="denoising steps of validation samples")
    p.add_argument("--val-scheduler", default=None, choices=("ddim", "lcm", "tcd"),
                   help="validation sampler (default: ddim; lcm after distillation)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of this phase")
    p.add_argument("--max-minutes", type=float, help="stop (checkpoint, validate, export) after this long")
    p.add_argument("--no-progress", action="store_true")


def settings_from_args(args: argparse.Namespace):
    from .trainer import TrainSettings
    from .validate import ValidationSettings

    if not Path(args.data).is_dir():
        raise CommandError(f"--data {args.data}: no such folder")
    frames = min(args.window, 8)
    val = ValidationSettings(clips=args.val_clips, frames=args.val_frames, views=args.views, window=frames,
                             stride=max(1, frames // 2), steps=args.val_steps,
                             scheduler=args.val_scheduler or ("lcm" if args.phase == "distill" else "ddim"))
    try:
        return TrainSettings(
            data=Path(args.data), out=Path(args.out), phase=args.phase, init=Path(args.init) if args.init else None,
            random_init=args.random_init, model=args.model, steps=args.steps, batch=args.batch, lr=args.lr,
            warmup=args.warmup, window=args.window, views=args.views, seed=args.seed,
            mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
            optimizer_8bit=args.optimizer_8bit, cpu=args.cpu, workers=args.workers,
            checkpoint_every=args.checkpoint_every, val_every=args.val_every, validation=val, resume=args.resume,
            max_minutes=args.max_minutes, progress=not args.no_progress)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def run_train(args: argparse.Namespace) -> int:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise CommandError("training needs accelerate: pip install accelerate") from None
    from .layout import DatasetError
    from .trainer import TrainingError, train

    s = settings_from_args(args)
    try:
        summary = train(s)
    except (DatasetError, TrainingError, FileNotFoundError) as exc:
        raise CommandError(str(exc)) from None
    print(json.dumps({k: v for k, v in summary.items() if k != "validations"}, indent=1))
    sec = summary["seconds"]
    outside = ", ".join(f"{k} {v:.1f}" for k, v in sec.items() if k not in ("training", "total"))
    print(f"phase {s.phase}: {sec['total']:.1f} s, of which training steps {sec['training']:.1f} s; "
          f"outside them (s): {outside}")
    for v in summary["validations"]:  # also in OUT/phase-P/summary.json; printed so a cut-off log keeps them
        psnr = "" if v.get("psnr") is None else f"  held-out PSNR {v['psnr']:.2f} dB"
        psnr += f" (sampled at the end of {v['reused']}, from the same weights)" if v.get("reused") else ""
        held = "" if v.get("held_out_loss") is None else f", held-out loss {v['held_out_loss']:.4f}"
        print(f"validation phase {s.phase} step {v['step']}: probe loss {v['probe_loss']:.4f}{held}{psnr}")
    print(f"weights: {s.weights_dir} (flamecast serve --generator flame2video --weights-dir {s.weights_dir})")
    return 0


def commands() -> list[Command]:
    """The commands this package adds to ``flamecast``."""
    return [
        Command(path=("train", "flame2video"), help="train FLAME2Video (phases vae, 1, 2, 3, distill)",
                configure=configure_train, run=run_train,
                description="Train one phase of FLAME2Video with accelerate; export to flamecast's weights layout."),
        Command(path=("data", "flame2video"), help="build, synthesise or check FLAME2Video training data",
                configure=configure_data, run=run_data,
                description="Datasets for FLAME2Video: bake-avatars, make-synthetic, build, check (docs/training.md)."),
    ]
