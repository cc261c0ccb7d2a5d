"""A local generator worker as a child process (``flamecast generator``), started, restarted and
stopped by ``flamecast serve``. The child dies with its parent even when the parent is killed
(Linux ``PR_SET_PDEATHSIG``), so no worker is left behind.

The link between them is CURVE-authenticated: a key folder made for this run (0700, secret files
0600, removed at exit) holds the worker's and the server's key pairs. A restarted worker binds
the same ports with the same keys, so the server's sockets simply reconnect."""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
FLAMECAST = (sys.executable, "-m", "flamecast.cli")
READY_POLL = 0.1


# What mediapipe's TensorFlow Lite and absl print on every start, straight to the worker's
# stderr from C++ (no Python logger to turn down): dropped from the worker's output.
NOISE = re.compile(r"^(INFO: Created TensorFlow Lite XNNPACK delegate|WARNING: All log messages before "
                   r"absl::InitializeLog|W0000 .*inference_feedback_manager\.cc)")


def quiet_environment() -> dict[str, str]:
    """The worker's environment, with glog and TensorFlow's own logging turned down to errors;
    a value the user set is kept."""
    env = dict(os.environ)
    env.setdefault("GLOG_minloglevel", "2")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def forward_stderr(stream, out=None) -> None:
    """Copy the worker's stderr lines to ours, without the start-up noise (runs in a thread)."""
    out = out or sys.stderr
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        if not NOISE.match(line):
            out.write(line)
            out.flush()
    stream.close()


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
        from flamecast.plugins.publish import make_key_folder

        self.backend = backend
        self.device = device
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.endpoints: dict[str, str] = {}
        self.starts = 0
        self._dir = tempfile.TemporaryDirectory(prefix="flamecast-worker-")
        self.key_folder = make_key_folder(Path(self._dir.name) / "keys")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self, ready: Path) -> list[str]:
        """The first start binds random ports; a restart binds the same ones again."""
        bind_in = self.endpoints.get("input", "tcp://127.0.0.1:0")
        bind_out = self.endpoints.get("output", "tcp://127.0.0.1:0")
        return [*FLAMECAST, "generator", "--input", bind_in, "--output", bind_out, "--backend", self.backend,
                "--device", self.device, "--ready-file", str(ready), "--keys", str(self.key_folder), *self.extra_args]

    @property
    def exited(self) -> int | None:
        """The exit status once the child ended; None while it runs (or before it started)."""
        if self.proc is None:  # never started, or ended by a failed start (-1)
            return -1 if self.starts else None
        return self.proc.poll()

    async def start(self, timeout: float = 180.0) -> dict[str, str]:
        ready = Path(self._dir.name) / "ready.json"
        ready.unlink(missing_ok=True)
        self.starts += 1
        self.proc = subprocess.Popen(self.command(ready), env=quiet_environment(), stderr=subprocess.PIPE,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        threading.Thread(target=forward_stderr, args=(self.proc.stderr,), name="worker-stderr", daemon=True).start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise WorkerStartError(f"the generator worker exited with status {self.proc.returncode} before it "
                                       "was ready; its messages are above")
            if loop.time() > deadline:
                self._end_child(10.0)
                raise WorkerStartError(f"the generator worker did not bind within {timeout:g} s")
            await asyncio.sleep(READY_POLL)
        info = json.loads(ready.read_text())
        self.endpoints = {"input": info["input"], "output": info["output"]}
        log.info("generator worker %s (pid %d): in %s, out %s", self.backend, self.proc.pid,
                 self.endpoints["input"], self.endpoints["output"])
        return self.endpoints

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaps the child (and removes
        the key folder)."""
        self._end_child(timeout)
        self._dir.cleanup()

    def _end_child(self, timeout: float) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("generator worker %d ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
