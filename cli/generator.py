"""``flamecast generator``: run a generator worker (FLAME frames in, multi-view video out)."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from flamecast.plugins import Command, CommandError

DEVICES = ("cpu", "cuda")


def configure(p: argparse.ArgumentParser) -> None:
    from flamecast.renderer.worker import DEFAULT_INPUT, DEFAULT_OUTPUT, VIDEO_SNDHWM

    p.add_argument("--input", default=DEFAULT_INPUT, metavar="ENDPOINT", help=f"flame/session endpoint to bind (default {DEFAULT_INPUT})")
    p.add_argument("--output", default=DEFAULT_OUTPUT, metavar="ENDPOINT", help=f"video/status endpoint to bind (default {DEFAULT_OUTPUT})")
    p.add_argument("--backend", action="append", default=[], metavar="NAME",
                   help="generator backend to serve and load at start (repeatable; default: every registered "
                   "backend, loaded on first use; the first one is the default for a session.open naming none)")
    p.add_argument("--device", default="cpu", choices=DEVICES, help="where generators run (default cpu)")
    p.add_argument("--ready-file", metavar="FILE", help='write {"input", "output", "pid"} as JSON once bound')
    p.add_argument("--queue", type=int, default=4, metavar="N", help="frames buffered per session, newest wins (default 4)")
    p.add_argument("--max-sessions", type=int, default=32, metavar="N", help="open sessions at most (default 32)")
    p.add_argument("--video-hwm", type=int, default=VIDEO_SNDHWM, metavar="N",
                   help=f"send high-water mark of the video socket in messages (default {VIDEO_SNDHWM})")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch intra-op threads (default 1: a worker renders one frame at a time; 0: torch's choice)")
    p.add_argument("--weights-dir", metavar="DIR", help="model weights folder (default $FLAMECAST_WEIGHTS or ~/.cache/flamecast/weights)")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="run neural generators with random weights when files are missing (benchmarks only; the output is noise)")
    p.add_argument("--compile", choices=("default", "reduce-overhead", "max-autotune"),
                   help="torch.compile neural generators at start (reduce-overhead adds CUDA graphs; the first start takes "
                   "minutes, later ones load the compiled calls from --compile-cache)")
    p.add_argument("--warm", metavar="PROFILES", help="profiles a neural generator builds and compiles before the "
                   "worker reports ready (comma list, each a profile with any option overrides its sessions use, "
                   "e.g. live,hq:steps=2:size=384; default: live when --compile is given)")
    p.add_argument("--max-batch", type=int, default=4, metavar="N",
                   help="sessions of one profile a neural generator batches through one model call (default 4)")
    p.add_argument("--compile-cache", metavar="DIR", help="where compiled kernels and calls are kept across runs "
                   "(default $FLAMECAST_COMPILE_CACHE or ~/.cache/flamecast/compile)")
    p.add_argument("--prepare", action="store_true",
                   help="compile what --warm names into --compile-cache and exit, binding nothing: run it once per machine "
                   "with the worker's --device, --compile, --warm and --max-batch, and every start after it loads the "
                   "compiled calls instead of compiling for minutes")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="with --prepare: compile in N processes at once, one per --warm profile and batch size (each "
                   "loads the models, so N times the memory; docs/generator.md)")
    p.add_argument("--prepare-batch", type=int, help=argparse.SUPPRESS)  # one job's share of --prepare --jobs
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="leave Python's garbage collector walking every object warm-up made (by default they are frozen "
                   "after warm-up, so that its full collections do not pause rendering; docs/generator.md)")
    p.add_argument("--stats-interval", type=float, default=30.0, metavar="S", help="log statistics every S seconds (0: never)")
    p.add_argument("--keys", metavar="DIR", help="CURVE key folder: the worker uses worker.key_secret and admits only "
                   "the server holding server.key_secret (docs/generator.md, Authentication)")
    p.add_argument("--make-keys", metavar="DIR", help="create a key folder (a worker and a server key pair) and exit; "
                   "copy the folder to the server's machine and pass it to both sides")
    p.add_argument("--insecure", action="store_true",
                   help="no keys: plain-text sockets that any process reaching the endpoints can drive (trusted hosts only)")


def settings_from_args(args: argparse.Namespace):
    from flamecast.renderer.worker import WorkerSettings

    for name in ("queue", "max_sessions", "video_hwm"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
    if args.stats_interval < 0:
        raise CommandError("--stats-interval must not be negative")
    if args.threads < 0:
        raise CommandError("--threads must not be negative")
    backends = tuple(dict.fromkeys(args.backend))
    keys = _keys(args)
    return WorkerSettings(
        input=args.input, output=args.output, backends=backends,
        default_backend=backends[0] if backends else "portrait", device=args.device,
        ready_file=Path(args.ready_file) if args.ready_file else None, queue_depth=args.queue,
        max_sessions=args.max_sessions, video_hwm=args.video_hwm, stats_interval_s=args.stats_interval,
        threads=args.threads, generator_settings=_generator_settings(args), keys=keys,
        gc_freeze=not args.no_gc_freeze,
    )


def _keys(args: argparse.Namespace):
    """The worker's CURVE keys from ``--keys``; None with ``--insecure``; an error without either."""
    from flamecast.plugins.publish import KeyFolderError, load_keys

    if args.keys and args.insecure:
        raise CommandError("give --keys or --insecure, not both")
    if args.insecure:
        return None
    if not args.keys:
        raise CommandError("the worker needs --keys DIR (make one with `flamecast generator --make-keys DIR`), or "
                           "--insecure for plain-text sockets on a trusted host")
    try:
        return load_keys(args.keys, "worker")
    except KeyFolderError as exc:
        raise CommandError(str(exc)) from None


def _generator_settings(args: argparse.Namespace):
    from flamecast.plugins import GeneratorSettings

    if args.max_batch < 1:
        raise CommandError("--max-batch must be at least 1")
    warm = tuple(n.strip() for n in args.warm.split(",") if n.strip()) if args.warm is not None else None
    return GeneratorSettings(device=args.device, weights_dir=args.weights_dir,
                             allow_random_weights=args.allow_random_weights, compile=args.compile,
                             compile_cache_dir=args.compile_cache, warm_profiles=warm, max_batch=args.max_batch)


def _make_keys(folder: str) -> int:
    from flamecast.plugins.publish import make_key_folder

    path = make_key_folder(folder)
    print(f"key folder {path}: worker.key(_secret) and server.key(_secret). Run `flamecast generator --keys {path}` "
          f"here and `flamecast serve --worker-keys {path}` on the server (copy the folder there; keep it private)")
    return 0


def _check_backends_named(backends: tuple[str, ...], host) -> None:
    unknown = [b for b in backends if b not in host.generators]
    if unknown:
        available = ", ".join(host.generators.names()) or "none"
        raise CommandError(f"unknown --backend {', '.join(unknown)}; available: {available}")


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CommandError("--device cuda, but torch sees no CUDA GPU: use --device cpu or install a CUDA build of torch")


def run(args: argparse.Namespace) -> int:
    # Idle OpenMP threads sleep instead of spinning: on a CPU shared with the server and the
    # drivers, spinning threads made every small torch op up to 10x slower. Must be set
    # before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import zmq

    from flamecast.plugins.manager import make_plugin_host
    from flamecast.renderer.worker import GeneratorWorker

    if args.make_keys:
        return _make_keys(args.make_keys)
    host = make_plugin_host()
    _check_backends_named(tuple(args.backend), host)
    if args.prepare:
        from .prepare import prepare

        return prepare(args, host)
    if args.jobs != 1:
        raise CommandError("--jobs splits the compiling of --prepare; a worker compiles in its own process")
    settings = settings_from_args(args)
    _check_device(settings.device)
    worker = GeneratorWorker(settings, host=host)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: worker.stop())
    try:
        worker.run()
    except zmq.ZMQError as exc:
        raise CommandError(f"{exc}: pick other endpoints (--input/--output) or stop the process using them") from None
    return 0


COMMAND = Command(
    path=("generator",),
    help="run a generator worker",
    description=(
        "Run a generator worker: it binds a SUB socket for flame frames and session messages "
        "and a PUB socket for video and session status (wire protocol v1, docs/protocol.md). "
        "Port 0 binds a random port; --ready-file tells which. Both sockets speak CURVE with the "
        "keys of --keys (see --make-keys); --insecure turns that off."
    ),
    configure=configure,
    run=run,
)
