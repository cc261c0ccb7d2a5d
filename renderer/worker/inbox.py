"""What the socket loop does with each incoming message: validate it, change the session table,
and say what to answer at once.

Flame frames are filed into their session's buffer; a session.open becomes a session for the
lifecycle thread to build (or an answer now: a repeat, a refusal); a session.close closes.
Malformed input is counted and dropped, never fatal; other message types are counted as ignored.
"""

from __future__ import annotations

import logging
from typing import Sequence

from flamecast.plugins import protocol as wire
from flamecast.plugins.protocol import RefusalCode

from .lifecycle import Jobs
from .settings import WorkerSettings
from .table import SessionTable
from .validation import OpenRefused, read_open

log = logging.getLogger(__name__)


class Inbox:
    def __init__(self, settings: WorkerSettings, table: SessionTable, jobs: Jobs, registry) -> None:
        self.settings = settings
        self.table = table
        self.jobs = jobs
        self.registry = registry

    def handle(self, frames: Sequence[bytes]) -> list[list[bytes]]:
        """Take one message; the messages to publish in reply. Never raises: whatever goes
        wrong with one message is counted as malformed and the socket loop goes on."""
        try:
            return self._handle(frames)
        except Exception as exc:
            log.exception("generator worker: a message could not be handled")
            self._malformed(f"dropped a message that failed: {exc.__class__.__name__}: {exc}")
            return []

    def _handle(self, frames: Sequence[bytes]) -> list[list[bytes]]:
        try:
            env = wire.unpack(frames)
        except wire.ProtocolError as exc:
            self._malformed(f"dropped a malformed message: {exc}")
            return []
        if env.type == wire.FLAME:
            self._on_flame(env)
        elif env.type == wire.SESSION_OPEN:
            return self._on_open(env)
        elif env.type == wire.SESSION_CLOSE:
            return self._on_close(env)
        else:
            self.table.count("ignored")
        return []

    def _malformed(self, why: str) -> None:
        n = self.table.count("malformed")
        if n & (n - 1) == 0:  # log the 1st, 2nd, 4th, 8th, ... so a flood cannot flood the log
            log.warning("%s (%d malformed so far)", why, n)

    def _on_flame(self, env: wire.Envelope) -> None:
        try:
            frame = wire.frame_from_envelope(env)
        except wire.ProtocolError as exc:
            self._malformed(f"dropped a flame frame for {env.topic!r}: {exc}")
            return
        self.table.file_frame(frame)

    def _on_open(self, env: wire.Envelope) -> list[list[bytes]]:
        sid = env.topic
        if not sid:
            self._malformed("dropped a session.open without a session id (topic)")
            return []
        try:
            request = read_open(env, default=self.settings.default_backend, served=self.settings.backends,
                                registry=self.registry)
        except OpenRefused as exc:
            log.info("session %s: %s", sid, exc)
            return [self.table.refuse(sid, str(exc), RefusalCode.OPTIONS).message()]
        outcome = self.table.open(sid, request)
        if outcome.build is not None:
            self.jobs.open(outcome.build)
        if outcome.answer is None:
            return []
        if outcome.answer.code is RefusalCode.BUSY:
            log.info("session %s: %s", sid, outcome.answer.error)
        return [outcome.answer.message()]

    def _on_close(self, env: wire.Envelope) -> list[list[bytes]]:
        report = self.table.close(env.topic)
        if report is None:
            return []
        log.info("session %s closed (%s); %s", env.topic, env.meta.get("reason", "closed"), report.meta["stats"])
        return [report.message()]
