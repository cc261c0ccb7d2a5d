"""``flamecast eval lookaround``: how far the head turns over a few seconds of the driver.

A plugin's own command, registered through ``flamecast_register_commands``: the host lists it
under ``flamecast eval`` and parses its arguments; imports that take time belong in ``run``.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from flamecast.plugins import Command, CommandError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=6.0, help="how much driver time to run (default 6)")
    parser.add_argument("--period", type=float, default=1.0, help="the driver's period option (default 1)")


def run(args: argparse.Namespace) -> int:
    if not 0 < args.seconds <= 600:
        raise CommandError("--seconds must be in (0, 600]")
    from flamecast.plugins import OptionsError, pose_slice
    from flamecast.plugins.testing import DriverHarness

    from .driver import LookAroundDriver

    async def go():
        try:
            harness = DriverHarness(LookAroundDriver, {"period": args.period})
        except OptionsError as exc:
            raise CommandError(str(exc)) from None
        frames = await harness.collect(round(args.seconds * harness.context.rate))
        await harness.close()
        return frames

    frames = asyncio.run(go())
    yaw = [float(f.pose[pose_slice("neck")][1]) for f in frames]
    print(json.dumps({"frames": len(frames), "yaw_min": min(yaw), "yaw_max": max(yaw)}))
    return 0


EVAL = Command(path=("eval", "lookaround"), help="how far the lookaround driver turns the head",
               configure=configure, run=run)
