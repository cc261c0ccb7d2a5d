"""``flamecast driver NAME``: run one driver on its own, to a file or to a generator worker."""

from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flamecast.plugins import (
    HEAD_NAMES, Driver, DriverContext, FakeClock, FlameFrame, HeadSpace, OptionsError, builtin_head_space,
    named_head_space,
)
from flamecast.plugins.manager import make_plugin_host
from flamecast.plugins.publish import FramePublisher
from flamecast.plugins.runtime import DriverRuntime

from flamecast.plugins import Command, CommandError

DEFAULT_OUT_SECONDS = 10.0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="driver name (see `flamecast plugins`)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE", help="driver option (repeatable)")
    p.add_argument("--seconds", type=float, default=None,
                   help=f"how long to run (default: {DEFAULT_OUT_SECONDS:g} with --out, until Ctrl-C with --connect)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="FILE.npz", help="write t, pose, expression, eyelids, expression_names")
    target.add_argument("--connect", metavar="ENDPOINT", help="generator worker flame endpoint, e.g. tcp://127.0.0.1:5555")
    p.add_argument("--session", help="session id to publish as (with --connect): the 'session' of the session's "
                   "'external' field in the API")
    p.add_argument("--head", choices=HEAD_NAMES, default="builtin",
                   help="head space the frames are in: the session's 'head' (builtin, or FLAME's 100 components "
                   "for a session that renders FLAME)")
    p.add_argument("--keys", metavar="DIR", help="CURVE key folder of the worker link (with --connect; the 'keys' "
                   "of the session's 'external' field, or the folder given to flamecast serve --worker-keys)")


def run(args: argparse.Namespace) -> int:
    return run_driver_command(DriverCommand.from_args(args))


@dataclass(frozen=True)
class DriverCommand:
    name: str
    options: dict[str, str]
    seconds: float | None
    out: Path | None
    connect: str | None
    session: str | None
    keys: Path | None = None
    head: HeadSpace = field(default_factory=builtin_head_space)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DriverCommand:
        if args.connect and not args.session:
            raise CommandError("--connect needs --session ID (the session the worker has open)")
        if args.seconds is not None and args.seconds <= 0:
            raise CommandError("--seconds must be positive")
        if args.keys and not args.connect:
            raise CommandError("--keys goes with --connect")
        return cls(args.name, parse_option_pairs(args.option), args.seconds,
                   Path(args.out) if args.out else None, args.connect, args.session,
                   Path(args.keys) if args.keys else None, named_head_space(getattr(args, "head", "builtin")))


def parse_option_pairs(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--option {pair!r} is not KEY=VALUE")
        options[key.strip()] = value
    return options


def _resolve(cmd: DriverCommand) -> tuple[type[Driver], object]:
    host = make_plugin_host()
    try:
        driver_cls = host.drivers.get(cmd.name)
    except KeyError as exc:
        raise CommandError(exc.args[0]) from None
    try:
        options = driver_cls.parse_options(cmd.options, from_strings=True)
    except OptionsError as exc:
        raise CommandError(f"driver {cmd.name!r}: {exc}") from None
    return driver_cls, options


def run_driver_command(cmd: DriverCommand) -> int:
    driver_cls, options = _resolve(cmd)
    if cmd.out is not None:
        frames = asyncio.run(_record(driver_cls, options, cmd.seconds or DEFAULT_OUT_SECONDS, cmd.head))
        write_npz(cmd.out, frames, cmd.head.expression_names)
        print(f"wrote {len(frames)} frames ({frames[-1].seq + 1} at {driver_cls.rate_for(options):g} fps) to {cmd.out}")
        return 0
    return asyncio.run(_publish(driver_cls, options, cmd))


async def _record(driver_cls: type[Driver], options, seconds: float,
                  head: HeadSpace | None = None) -> list[FlameFrame]:
    """Run as fast as possible on a fake clock; a failing driver stops the command."""
    rate = driver_cls.rate_for(options)
    clock = FakeClock()
    driver = driver_cls(options, DriverContext(session_id="local", rate=rate, clock=clock,
                                               head=head or builtin_head_space()))
    frames: list[FlameFrame] = []
    n = max(1, round(seconds * rate))
    try:
        async for frame in driver.frames():
            frames.append(frame.stamped(session_id="local", seq=len(frames), capture_ns=clock.now_ns()))
            if len(frames) >= n:
                break
            await clock.sleep_until(len(frames) / rate)
    finally:
        await driver.aclose()
    if not frames:
        raise CommandError(f"driver {driver_cls.name!r} produced no frames")
    return frames


def write_npz(path: Path, frames: list[FlameFrame], names: tuple[str, ...] | None) -> None:
    t0 = frames[0].capture_ns
    arrays = {
        "t": np.array([(f.capture_ns - t0) / 1e9 for f in frames], np.float64),
        "pose": np.stack([f.pose for f in frames]),
        "expression": np.stack([f.expression for f in frames]),
    }
    if all(f.eyelids is not None for f in frames):
        arrays["eyelids"] = np.stack([f.eyelids for f in frames])
    if names is not None and arrays["expression"].shape[1] == len(names):
        arrays["expression_names"] = np.array(names)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def _keys(folder: Path | None):
    """The server side's CURVE keys from a key folder (None: plain text, for an --insecure worker)."""
    if folder is None:
        return None
    from flamecast.plugins.publish import KeyFolderError, load_keys

    try:
        return load_keys(folder, "server")
    except KeyFolderError as exc:
        raise CommandError(str(exc)) from None


async def _publish(driver_cls: type[Driver], options, cmd: DriverCommand) -> int:
    from flamecast.drivers.idle import IdleDriver  # the fallback while a driver restarts

    rate = driver_cls.rate_for(options)
    context = DriverContext(session_id=cmd.session, rate=rate, head=cmd.head)
    publisher = FramePublisher(cmd.connect, keys=_keys(cmd.keys))
    runtime = DriverRuntime(
        lambda: driver_cls(options, context), publisher.send, session_id=cmd.session, rate=rate,
        fallback=lambda: IdleDriver(IdleDriver.parse_options({}), context),
        max_frames=round(cmd.seconds * rate) if cmd.seconds else None,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runtime.stop)
    try:
        await runtime.run()
    finally:
        publisher.close()
    s = runtime.stats
    print(f"published {s.frames} frames to {cmd.connect} (session {cmd.session}); restarts: {s.restarts}")
    return 0


COMMAND = Command(
    path=("driver",),
    help="run one driver on its own",
    description=(
        "Run one driver: write its frames to an .npz file as fast as possible (--out) "
        "or publish them in real time to a generator worker (--connect ENDPOINT --session ID)."
    ),
    configure=configure,
    run=run,
)
