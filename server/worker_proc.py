"""A local generator worker as a child process (``flamecast generator``), started and stopped
by ``flamecast serve``. The child dies with its parent even when the parent is killed
(Linux ``PR_SET_PDEATHSIG``), so no worker is left behind."""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
FLAMECAST = (sys.executable, "-m", "flamecast.cli")
READY_POLL = 0.1


class WorkerStartError(RuntimeError):
    """The worker exited or did not bind in time; the message says which and where to look."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class WorkerProcess:
    """``flamecast generator`` on random loopback ports; ``endpoints`` once started."""

    def __init__(self, backend: str, *, device: str = "cpu", extra_args: tuple[str, ...] = ()) -> None:
        self.backend = backend
        self.device = device
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.endpoints: dict[str, str] = {}
        self._dir = tempfile.TemporaryDirectory(prefix="flamecast-worker-")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self, ready: Path) -> list[str]:
        return [*FLAMECAST, "generator", "--input", "tcp://127.0.0.1:0",
                "--output", "tcp://127.0.0.1:0", "--backend", self.backend, "--device", self.device,
                "--ready-file", str(ready), *self.extra_args]

    async def start(self, timeout: float = 180.0) -> dict[str, str]:
        ready = Path(self._dir.name) / "ready.json"
        self.proc = subprocess.Popen(self.command(ready), preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise WorkerStartError(f"the generator worker exited with status {self.proc.returncode} before it "
                                       "was ready; its messages are above")
            if loop.time() > deadline:
                self.stop()
                raise WorkerStartError(f"the generator worker did not bind within {timeout:g} s")
            await asyncio.sleep(READY_POLL)
        info = json.loads(ready.read_text())
        self.endpoints = {"input": info["input"], "output": info["output"]}
        log.info("generator worker %s (pid %d): in %s, out %s", self.backend, self.proc.pid,
                 self.endpoints["input"], self.endpoints["output"])
        return self.endpoints

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaps the child."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("generator worker %d ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait()
        self._dir.cleanup()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
