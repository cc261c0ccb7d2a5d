"""How a worker runs: its typed settings and the socket limits chosen on purpose."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flamecast.plugins import GeneratorSettings
from flamecast.plugins.publish import CurveKeys

DEFAULT_INPUT = "tcp://127.0.0.1:5555"
DEFAULT_OUTPUT = "tcp://127.0.0.1:5556"

# Video is worthless once stale: a subscriber that falls more than a few frames behind loses
# the oldest instead of building seconds of latency (4 views x 256^2 is 786 KB a message).
VIDEO_SNDHWM = 8
# Flame frames are tiny and the socket loop drains them at once; session.open can carry a
# portrait of several MB. This mark only matters while the loop is busy.
INPUT_RCVHWM = 1000
# The inproc hand-off from the render and lifecycle threads to the socket loop.
HANDOFF_HWM = 64
POLL_MS = 100
HEARTBEAT_S = 0.5  # how often the worker publishes its worker.status
# How far a session's flame seq may jump ahead of the last one accepted: about ten hours at
# 30 fps. A frame beyond it (a forged or corrupted seq) is rejected, so it cannot move the
# session's clock.
MAX_SEQ_JUMP = 1 << 20


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs; parsed once by the CLI (or built by tests).

    Attributes:
        input: endpoint the SUB socket binds for flame frames and session messages
            (``tcp://HOST:0`` binds a random port).
        output: endpoint the PUB socket binds for video and session.status.
        backends: the generator backends this worker serves (empty = every registered one);
            the listed ones are loaded at start.
        default_backend: used when a session.open names no generator.
        device: "cpu" or "cuda", passed to each generator as ``GeneratorSettings.device``.
        ready_file: where to write {"input", "output", "pid"} once both sockets are bound.
        queue_depth: frames buffered per session, newest wins (older ones are dropped and counted).
        max_sessions: open sessions at most; further opens get an error status.
        video_hwm: send high-water mark of the video PUB socket, in messages.
        stats_interval_s: how often the statistics are logged (0 = never).
        threads: torch intra-op threads for the process (0 = leave torch's default).
        generator_settings: the ``GeneratorSettings`` every generator gets (its ``device`` is
            replaced by ``device``): weights folder, random weights, compile mode, warm-up.
        keys: CURVE keys (``flamecast.plugins.publish.load_keys(folder, "worker")``): both
            sockets then speak CURVE and admit only ``keys.allowed`` clients. None = plain
            text, which any process that reaches the endpoints can drive (tests, trusted hosts).
        heartbeat_s: seconds between worker.status messages (the server's health check).
        gc_freeze: after each generator's warm-up, collect once and freeze the objects alive
            (``heap.freeze``), so that Python's full collections no longer walk them and pause
            rendering. ``flamecast generator`` turns it on; off here for workers started inside
            another process (tests), whose objects it would freeze too.
    """

    input: str = DEFAULT_INPUT
    output: str = DEFAULT_OUTPUT
    backends: tuple[str, ...] = ()
    default_backend: str = "portrait"
    device: str = "cpu"
    ready_file: Path | None = None
    queue_depth: int = 4
    max_sessions: int = 32
    video_hwm: int = VIDEO_SNDHWM
    stats_interval_s: float = 30.0
    threads: int = 0
    generator_settings: GeneratorSettings = GeneratorSettings()
    keys: CurveKeys | None = None
    heartbeat_s: float = HEARTBEAT_S
    gc_freeze: bool = False
