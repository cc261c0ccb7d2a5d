"""The lifecycle thread: loads generators, builds sessions and closes retired ones.

Decoding a portrait and fitting the avatar take a second or more; here they stall neither the
sockets nor the other sessions' rendering. Jobs arrive on an unbounded queue (session.open
and close are rare, and each one must be done); the answers go out through the hand-off.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from typing import Any

from flamecast.plugins import Generator, GeneratorSessionSpec, GeneratorUnavailable, OptionsRefused, PortraitError
from flamecast.plugins.protocol import RefusalCode, SessionState

from . import heap
from .handoff import Handoff, send
from .settings import WorkerSettings
from .table import Session, SessionTable, StatusReport

log = logging.getLogger(__name__)


class Job(enum.Enum):
    LOAD = "load"  # load (and warm up) a generator: arg = its name
    OPEN = "open"  # build an opening session: arg = the Session
    CLOSE = "close"  # close a retired session's generator session: arg = the Session


class Jobs:
    """The lifecycle thread's queue; the table's ``on_retired`` is ``Jobs.close``."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Job, Any] | None] = queue.Queue()
        self._stopped = False
        self._loading: set[str] = set()
        self._loading_lock = threading.Lock()

    def load(self, name: str) -> None:
        self.loading(name, True)
        self._queue.put((Job.LOAD, name))

    def loading(self, name: str, on: bool) -> None:
        """Mark a generator as being loaded and warmed up (``on``) or done with it."""
        with self._loading_lock:
            (self._loading.add if on else self._loading.discard)(name)

    def warming(self) -> list[str]:
        """The generators queued for loading or being loaded and warmed up now."""
        with self._loading_lock:
            return sorted(self._loading)

    def open(self, session: Session) -> None:
        self._queue.put((Job.OPEN, session))

    def close(self, session: Session) -> None:
        self._queue.put((Job.CLOSE, session))

    def stop(self) -> None:
        self._stopped = True
        self._queue.put(None)

    def next(self) -> tuple[Job, Any] | None:
        """The next job; None once stopped (jobs still queued are left for ``leftovers``)."""
        job = self._queue.get()
        if not self._stopped:
            return job
        if job is not None:
            self._queue.put(job)  # for leftovers
        return None

    def leftovers(self) -> list[Session]:
        """The retired sessions still waiting to be closed (at shutdown)."""
        jobs = []
        while not self._queue.empty():
            jobs.append(self._queue.get_nowait())
        return [job[1] for job in jobs if job is not None and job[0] is Job.CLOSE]


class Lifecycle:
    """Runs the jobs; owns the loaded generators."""

    def __init__(self, settings: WorkerSettings, table: SessionTable, jobs: Jobs, registry, handoff: Handoff,
                 gc_timer: heap.CollectionTimer | None = None) -> None:
        self.settings = settings
        self.table = table
        self.jobs = jobs
        self.registry = registry
        self.handoff = handoff
        self.gc_timer = gc_timer  # started over once each generator is ready: a load's collections are its own
        self._generators: dict[str, Generator] = {}

    def preload(self) -> None:
        """Set torch's threads and queue loading the generators the settings name."""
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        for name in self.settings.backends:
            self.jobs.load(name)

    def run(self) -> None:
        """The thread's body: run jobs until ``Jobs.stop``; a failing job never ends it."""
        push = self.handoff.connect_push()
        try:
            while (job := self.jobs.next()) is not None:
                try:
                    self._run_job(*job, push)
                except Exception:
                    log.exception("generator worker: %s job failed", job[0].value)
        finally:
            push.close(linger=0)

    def close_all(self, sessions: list[Session]) -> None:
        """At shutdown: close ``sessions``, the retired ones still queued, then the generators."""
        for session in sessions + self.jobs.leftovers():
            close_session(session)
        for gen in self._generators.values():
            try:
                gen.close()
            except Exception:
                log.exception("closing a generator failed")

    def _run_job(self, kind: Job, arg: Any, push) -> None:
        if kind is Job.OPEN:
            self._open(arg, push)
        elif kind is Job.CLOSE:
            close_session(arg)
        elif kind is Job.LOAD:
            self._load(arg)

    def _load(self, name: str) -> Generator:
        gen = self._generators.get(name)
        if gen is not None:
            self.jobs.loading(name, False)
            return gen
        self.jobs.loading(name, True)
        try:
            log.info("loading generator %r on %s", name, self.settings.device)
            t0 = time.perf_counter()
            gen = self.registry.get(name)(self.settings.generator_settings.replace(device=self.settings.device))
            warm_up = getattr(gen, "warm_up", None)
            if callable(warm_up):  # optional: load models now rather than on the first open
                warm_up()
            log.info("generator %r ready in %.1f s", name, time.perf_counter() - t0)
            if self.settings.gc_freeze:
                self._freeze_heap()
            if self.gc_timer is not None:
                self.gc_timer.reset()
        finally:
            self.jobs.loading(name, False)
        self._generators[name] = gen
        return gen

    def _freeze_heap(self) -> None:
        """Freeze what warm-up made (``heap.freeze``), unless sessions are rendering already (a
        generator loaded on first use): their objects would be frozen too, and a reference cycle
        among them never freed once they close."""
        ready = [sid for sid, s in self.table.snapshot()["sessions"].items() if s["state"] == "ready"]
        if ready:
            log.info("heap not frozen: %d sessions were open when the generator finished loading", len(ready))
            return
        frozen = heap.freeze()
        log.info("froze %d objects: full collections skip them (one took %.0f ms)", frozen.objects, frozen.collect_ms)

    def _open(self, session: Session, push) -> None:
        if session.state is not SessionState.OPENING:  # closed or replaced while queued
            return
        t0 = time.perf_counter()
        try:
            gen = self._load(session.generator)
            gsession = gen.open_session(GeneratorSessionSpec(session.id, session.request.portrait, session.options))
        except Exception as exc:  # a generator bug must not take the worker down
            message, code = refusal(session, exc)
            log.info("session %s: %s", session.id, message)
            report = self.table.fail(session, message, code)
        else:
            report = self._activate(session, gen, gsession, t0)
        if report is not None:
            send(push, report.message())

    def _activate(self, session: Session, gen: Generator, gsession, t0: float) -> StatusReport | None:
        view_ids = tuple(getattr(gsession, "view_ids", None) or session.options.views or ())
        head = getattr(gsession, "head_space", None) or gen.head  # the head the session's frames speak
        batches = getattr(gen, "batches_sessions", None)
        batcher = gen if callable(batches) and batches() else None
        report = self.table.activate(session, gsession, head, view_ids, batcher)
        if report is None:  # closed or replaced while it was being built
            _close_quietly(session.id, gsession)
        else:
            log.info("session %s ready (%s, %.2f s)", session.id, session.generator, time.perf_counter() - t0)
        return report


def refusal(session: Session, exc: Exception) -> tuple[str, RefusalCode]:
    """What to tell the client when opening ``session`` raised ``exc``, and whose fault it is."""
    if isinstance(exc, PortraitError):
        return f"portrait: {exc}", RefusalCode.PORTRAIT
    if isinstance(exc, OptionsRefused):
        return f"generator {session.generator!r}: {exc}", RefusalCode.OPTIONS
    if isinstance(exc, GeneratorUnavailable):
        return f"generator {session.generator!r} cannot run here: {exc}", RefusalCode.UNAVAILABLE
    log.error("session %s: generator %r failed to open", session.id, session.generator, exc_info=exc)
    return f"generator {session.generator!r} failed to open the session: {exc}", RefusalCode.INTERNAL


def close_session(session: Session) -> None:
    """Close a retired session's generator session (once; the render thread is done with it)."""
    gen, session.gen = session.gen, None
    if gen is not None:
        _close_quietly(session.id, gen)


def _close_quietly(session_id: str, gen) -> None:
    try:
        gen.close()
    except Exception:
        log.exception("closing session %s failed", session_id)
