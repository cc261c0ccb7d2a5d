"""``flamecast serve``: the server, a local generator worker and the links between them.

Settings come from defaults, then an optional TOML file (``--config``), then the flags given;
they are parsed once, here. Ctrl-C or SIGTERM ends every session, closes every peer
connection and stops the worker. A local worker that dies is restarted (with backoff) on the
same ports and keys; the sessions are opened on it again and their viewers see video resume.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from flamecast.plugins import Command, CommandError

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.2  # seconds between checks that the local worker is alive

# flags of the local worker (Settings.worker, a [worker] table in the config file)
WORKER_FLAGS = ("device", "weights_dir", "allow_random_weights", "compile", "warm", "max_batch", "compile_cache")

# flag dest -> Settings field, for flags that map one to one
FLAG_FIELDS = ("host", "port", "token", "generator", "size", "max_sessions", "max_viewers", "max_upload_bytes", "open_timeout",
               "viewer_timeout", "idle_timeout", "default_driver")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE.toml", help="settings file (keys named like the flags, e.g. max_sessions = 8)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--token", help="API access token (required off loopback; generated when missing)")
    p.add_argument("--generator", help="generator backend for the local worker and for sessions (default portrait; mesh is the preview)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where the local worker renders (default cpu)")
    p.add_argument("--size", type=int, help="video side in pixels for sessions that do not ask")
    p.add_argument("--max-sessions", type=int, help="sessions at once (default 4)")
    p.add_argument("--max-viewers", type=int, help="peer connections per session (default 8)")
    p.add_argument("--max-upload-bytes", type=int, help="largest portrait upload (default 8 MiB)")
    p.add_argument("--open-timeout", type=float, help="seconds to wait for the worker to open a session (default 30)")
    p.add_argument("--viewer-timeout", type=float, help="seconds without RTCP before a viewer counts as gone (default 10)")
    p.add_argument("--idle-timeout", type=float, help="seconds without any client before a session ends (default 30)")
    p.add_argument("--default-driver", help="driver for sessions that name none (default idle)")
    p.add_argument("--weights-dir", metavar="DIR", help="model weights folder for the local worker (see docs/weights.md)")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="let the local worker run neural generators without weights (benchmarks only; the output is noise)")
    p.add_argument("--compile", choices=("default", "reduce-overhead", "max-autotune"),
                   help="torch.compile the local worker's neural generator at start (the first start takes minutes, "
                   "later ones load the compiled calls from --compile-cache)")
    p.add_argument("--warm", metavar="PROFILES", help="profiles the local worker's neural generator compiles at start, "
                   "comma separated, with any option overrides (live,hq:steps=2; default: live); a compiled worker serves "
                   "only these")
    p.add_argument("--max-batch", type=int, metavar="N",
                   help="sessions of one profile the local worker batches through one model call (default 4)")
    p.add_argument("--compile-cache", metavar="DIR", help="where the local worker keeps compiled kernels and calls across "
                   "restarts (default $FLAMECAST_COMPILE_CACHE or ~/.cache/flamecast/compile)")
    p.add_argument("--data-dir", metavar="DIR", help="where uploaded portraits are kept across restarts "
                   "(default $FLAMECAST_DATA_DIR or ~/.local/share/flamecast)")
    p.add_argument("--worker-input", metavar="ENDPOINT", help="use a running worker: its flame endpoint")
    p.add_argument("--worker-output", metavar="ENDPOINT", help="use a running worker: its video endpoint")
    p.add_argument("--worker-keys", metavar="DIR", help="that worker's CURVE key folder (flamecast generator --make-keys)")
    p.add_argument("--worker-insecure", action="store_true",
                   help="talk to that worker in plain text, without keys (trusted hosts only)")
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help="a web origin (https://studio.example:8443) whose pages may use the API (repeatable)")


def build_settings(args: argparse.Namespace):
    """Defaults < config file < flags. Raises CommandError naming the bad setting."""
    from flamecast.server.settings import SettingsError, load_toml, settings_from

    try:
        values = load_toml(Path(args.config)) if args.config else {}
        values.update({k: getattr(args, k) for k in FLAG_FIELDS if getattr(args, k) is not None})
        if bool(args.worker_input) != bool(args.worker_output):
            raise CommandError("give both --worker-input and --worker-output (or neither, to start a local worker)")
        if args.worker_input:
            values.update(worker_input=args.worker_input, worker_output=args.worker_output)
        if args.worker_keys:
            values["worker_keys"] = args.worker_keys
        if args.worker_insecure:
            values["worker_insecure"] = True
        if args.allow_origin:
            values["allowed_origins"] = tuple(values.get("allowed_origins", ())) + tuple(args.allow_origin)
        worker = dict(values.get("worker") or {})
        worker.update({k: getattr(args, k) for k in WORKER_FLAGS if getattr(args, k) not in (None, False)})
        if worker:
            values["worker"] = worker
        if args.data_dir:
            values["data_dir"] = args.data_dir
        settings = settings_from(values)
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    if not settings.loopback_only and not settings.token:
        from flamecast.server.security import new_token

        settings = settings.replace(token=new_token())
    if settings.data_dir is None:
        from flamecast.server.outputs import data_dir

        settings = settings.replace(data_dir=str(data_dir()))
    return settings


def check_worker_keys(settings, external: bool) -> None:
    """An external worker needs its key folder, or an explicit choice of plain text."""
    if not external:
        return
    if settings.worker_keys and settings.worker_insecure:
        raise CommandError("give --worker-keys or --worker-insecure, not both")
    if not settings.worker_keys and not settings.worker_insecure:
        raise CommandError("an external worker needs --worker-keys DIR (the folder `flamecast generator --make-keys` "
                           "made, copied here), or --worker-insecure for plain text on a trusted host")
    if settings.worker_keys:
        from flamecast.plugins.publish import KeyFolderError, load_keys

        try:
            load_keys(settings.worker_keys, "server")
        except KeyFolderError as exc:
            raise CommandError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    external = bool(args.worker_input or (args.config and "worker_input" in _config_keys(args.config)))
    check_worker_keys(settings, external)
    return asyncio.run(serve(settings, device=settings.worker.device, start_worker=not external,
                             worker_args=settings.worker.args()))


def worker_args(args: argparse.Namespace) -> tuple[str, ...]:
    """Flags handed to the local ``flamecast generator`` process (config file and flags)."""
    return build_settings(args).worker.args()


def _config_keys(path: str) -> set[str]:
    from flamecast.server.settings import load_toml

    return set(load_toml(Path(path)))


async def serve(settings, *, device: str = "cpu", start_worker: bool = True, worker_args: tuple[str, ...] = ()) -> int:
    from aiohttp import web

    from flamecast.server.app import create_app
    from flamecast.server.security import QuietAccessLogger
    from flamecast.server.worker_proc import WorkerProcess, WorkerStartError

    worker = WorkerProcess(settings.generator, device=device, extra_args=worker_args) if start_worker else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    try:
        if worker is not None:
            print(f"flamecast: starting the {settings.generator} generator worker...", flush=True)
            endpoints = await _wait_or_stop(worker.start(), stop)
            if endpoints is None:
                return 130
            settings = settings.replace(worker_input=endpoints["input"], worker_output=endpoints["output"],
                                        worker_keys=str(worker.key_folder), worker_insecure=False)
        runner = web.AppRunner(create_app(settings), handle_signals=False, shutdown_timeout=5.0,
                               access_log_class=QuietAccessLogger)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            raise CommandError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}; "
                             "pick another --port (0 = any free one)") from None
        _announce(settings, runner)
        watchdog = asyncio.create_task(_supervise_worker(worker, stop)) if worker is not None else None
        await stop.wait()
        print("flamecast: shutting down", flush=True)
        if watchdog is not None:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
    except WorkerStartError as exc:
        raise CommandError(str(exc)) from None
    finally:
        if runner is not None:
            await runner.cleanup()
        if worker is not None:
            worker.stop()
    return 0


async def _supervise_worker(worker, stop: asyncio.Event) -> None:
    """Restart the local worker whenever it exits, on the same ports, waiting longer after each
    quick failure (``Backoff``); the worker link then opens every session on it again."""
    from flamecast.plugins.runtime import Backoff
    from flamecast.server.worker_proc import WorkerStartError

    backoff = Backoff(initial=0.2, maximum=10.0, reset_after=30.0)
    loop = asyncio.get_running_loop()
    up_since = loop.time()
    while not stop.is_set():
        status = worker.exited
        if status is None:
            await asyncio.sleep(WATCH_INTERVAL)
            continue
        delay = backoff.next_delay(loop.time() - up_since)
        print(f"flamecast: the generator worker exited (status {status}); its messages are above. Restarting it in "
              f"{delay:g} s", file=sys.stderr, flush=True)
        if await _wait_or_stop(asyncio.sleep(delay), stop) is None and stop.is_set():
            return
        try:
            await _wait_or_stop(worker.start(), stop)
            up_since = loop.time()
            print(f"flamecast: the generator worker is back (pid {worker.pid})", file=sys.stderr, flush=True)
        except WorkerStartError as exc:
            print(f"flamecast: restarting the generator worker failed: {exc}", file=sys.stderr, flush=True)


async def _wait_or_stop(coro, stop: asyncio.Event):
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task in done:
        return task.result()
    task.cancel()
    return None


def _announce(settings, runner) -> None:
    port = next(iter(runner.addresses))[1] if runner.addresses else settings.port
    host = settings.host
    if host in ("0.0.0.0", "::"):  # every interface: print one that opens here, say so
        print(f"flamecast: listening on every interface ({host}), port {port}", flush=True)
        host = "127.0.0.1"
    host = host if ":" not in host else f"[{host}]"
    url = f"http://{host}:{port}/"
    if settings.token:
        print(f"flamecast: API token: {settings.token}", flush=True)
        print(f"flamecast: serving on {url}#token={settings.token}", flush=True)
    else:
        print(f"flamecast: serving on {url}", flush=True)
    print("flamecast: press Ctrl-C to stop", flush=True)
    sys.stdout.flush()


COMMAND = Command(
    path=("serve",),
    help="run the server with a local generator worker",
    description=(
        "Serve the browser client, the HTTP API and WebRTC video. Starts a generator worker "
        "process unless --worker-input/--worker-output point at one already running. Binds 127.0.0.1 by "
        "default; any other address needs an API token (--token, or one is generated and printed)."
    ),
    configure=configure,
    run=run,
)
