"""``GeneratorWorker``: owns the ZeroMQ sockets and the threads, and runs the socket loop."""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from flamecast.plugins import protocol as wire
from flamecast.plugins.publish import secure_server, start_authenticator

from .handoff import Handoff
from .heap import CollectionTimer
from .inbox import Inbox
from .lifecycle import Jobs, Lifecycle
from .render import RenderLoop
from .settings import HANDOFF_HWM, INPUT_RCVHWM, POLL_MS, WorkerSettings
from .table import SessionTable

log = logging.getLogger(__name__)


class GeneratorWorker:
    """A generator worker; ``run()`` blocks, ``start()`` runs it in a thread (tests).

    Example::

        worker = GeneratorWorker(WorkerSettings(input="tcp://127.0.0.1:0", output="tcp://127.0.0.1:0"))
        worker.start()                      # returns once both sockets are bound
        print(worker.endpoints)             # {"input": "tcp://127.0.0.1:41234", "output": ...}
        ...
        worker.stop()
    """

    def __init__(self, settings: WorkerSettings | None = None, *, host=None) -> None:
        self.settings = settings or WorkerSettings()
        self._host = host
        self._ctx = zmq.Context()
        self._handoff = Handoff(self._ctx)
        self._jobs = Jobs()
        self.table = SessionTable(depth=self.settings.queue_depth, max_sessions=self.settings.max_sessions,
                                  on_retired=self._jobs.close)
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self.endpoints: dict[str, str] = {}
        self.instance = secrets.token_hex(8)  # new for each start: the server sees a restart
        self.thread_restarts = 0
        self._threads: dict[str, list] = {}
        self._gc = CollectionTimer()

    def start(self, timeout: float = 30.0) -> dict[str, str]:
        """Run in a background thread; return the bound endpoints once ready."""
        self._thread = threading.Thread(target=self._run_guarded, name="flamecast-worker", daemon=True)
        self._thread.start()
        if not self._bound.wait(timeout):
            raise TimeoutError("generator worker did not bind its sockets")
        if self._start_error is not None:
            raise self._start_error
        return self.endpoints

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every thread to finish; joins the background thread when ``start`` made one."""
        self._stop.set()
        self.table.shutdown()
        self._jobs.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> GeneratorWorker:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """A snapshot: global counters, the process's garbage-collection pauses since the last
        generator was ready (``heap.CollectionTimer.summary``) and per-session counters."""
        return {**self.table.snapshot(), **self._gc.summary()}

    def run(self) -> None:
        """Bind, serve until ``stop()``, then close everything."""
        auth = None
        try:
            registry = self._plugin_host().generators  # before any thread needs it
            if self.settings.keys is not None:
                auth = start_authenticator(self._ctx, self.settings.keys)
            sockets = _bind(self._ctx, self.settings, self._handoff)
        except BaseException:
            if auth is not None:
                auth.stop()
            self._ctx.term()
            raise
        self._announce(*sockets[:2])
        self._gc.start()
        lifecycle = Lifecycle(self.settings, self.table, self._jobs, registry, self._handoff, self._gc)
        self._threads = {"lifecycle": [lifecycle.run, _thread(lifecycle.run, "lifecycle")],
                         "render": [RenderLoop(self.table, self._handoff).run, None]}
        self._threads["render"][1] = _thread(self._threads["render"][0], "render")
        lifecycle.preload()
        try:
            self._serve(*sockets, Inbox(self.settings, self.table, self._jobs, registry))
        finally:
            self.stop()
            for _, t in self._threads.values():
                t.join(10.0)
            log.info("generator worker stopping; %s", self._stats_line())
            self._gc.stop()
            lifecycle.close_all(self.table.drain())
            for s in sockets:
                s.close(linger=0)
            if auth is not None:
                auth.stop()
            self._ctx.term()

    def _supervise(self) -> None:
        """Restart a lifecycle or render thread that ended while the worker runs (their loops
        catch every error, so this is the last line: the worker never renders nothing)."""
        for name, entry in self._threads.items():
            target, thread = entry
            if not thread.is_alive() and not self._stop.is_set():
                self.thread_restarts += 1
                log.error("generator worker: the %s thread ended; restarting it (%d restarts)", name,
                          self.thread_restarts)
                entry[1] = _thread(target, name)

    def _heartbeat(self, pub: zmq.Socket) -> None:
        if self._stop.is_set():  # stopping: the threads end on purpose
            return
        snap = self.table.snapshot()
        live = sum(s["state"] in ("opening", "ready") for s in snap["sessions"].values())
        pub.send_multipart(wire.worker_status_message(
            self.instance, sessions=live, malformed=snap["malformed"], thread_restarts=self.thread_restarts,
            warming=self._jobs.warming(),
            threads={name: entry[1].is_alive() for name, entry in self._threads.items()}))

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # surfaced to start()
            self._start_error = exc
            self._bound.set()
            if not isinstance(exc, zmq.ZMQError):
                log.exception("generator worker failed")

    def _announce(self, sub: zmq.Socket, pub: zmq.Socket) -> None:
        """Both sockets are bound: say where (ready file, log) and let ``start`` return."""
        self.endpoints = {"input": sub.getsockopt_string(zmq.LAST_ENDPOINT),
                          "output": pub.getsockopt_string(zmq.LAST_ENDPOINT)}
        if self.settings.ready_file is not None:
            keys = self.settings.keys
            public = {"public_key": keys.public.decode()} if keys is not None else {}
            _write_ready_file(self.settings.ready_file, {**self.endpoints, "pid": os.getpid(), **public})
        log.info("generator worker: flame in on %s, video out on %s", self.endpoints["input"], self.endpoints["output"])
        self._bound.set()

    def _serve(self, sub: zmq.Socket, pub: zmq.Socket, pull: zmq.Socket, inbox: Inbox) -> None:
        """The socket loop: forward what the other threads made, take what arrived."""
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        next_log = time.monotonic() + self.settings.stats_interval_s
        next_beat = time.monotonic()
        while not self._stop.is_set():
            ready = dict(poller.poll(POLL_MS))
            if pull in ready:
                _forward(pull, pub)
            if sub in ready:
                _drain(sub, pub, inbox)
            if time.monotonic() >= next_beat:
                self._supervise()
                self._heartbeat(pub)
                next_beat = time.monotonic() + self.settings.heartbeat_s
            if self.settings.stats_interval_s and time.monotonic() >= next_log:
                log.info("generator worker: %s", self._stats_line())
                next_log = time.monotonic() + self.settings.stats_interval_s

    def _plugin_host(self):
        if self._host is None:
            from flamecast.plugins.manager import make_plugin_host

            self._host = make_plugin_host()
            for failure in self._host.failures:
                log.warning("plugin %s failed to load: %s", failure.name, failure.error)
        return self._host

    def _stats_line(self) -> str:
        snap = self.stats()
        sessions = snap.pop("sessions")
        return f"{len(sessions)} sessions, " + ", ".join(f"{k}={v}" for k, v in snap.items())


def _bind(ctx: zmq.Context, settings: WorkerSettings, handoff: Handoff) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket]:
    """The SUB (input), PUB (output) and hand-off PULL sockets, bound; a clear error if not."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, INPUT_RCVHWM)
    sub.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE_BYTES)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, settings.video_hwm)
    pub.setsockopt(zmq.LINGER, 200)
    for sock in (sub, pub):
        secure_server(sock, settings.keys)
    try:
        sub.bind(settings.input)
        pub.bind(settings.output)
    except zmq.ZMQError as exc:
        for sock in (sub, pub):
            sock.close(linger=0)
        raise zmq.ZMQError(exc.errno, f"cannot bind {settings.input} / {settings.output}: {exc.strerror}") from None
    return sub, pub, handoff.bind_pull()


def _thread(target, name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=f"flamecast-worker-{name}", daemon=True)
    thread.start()
    return thread


def _forward(pull: zmq.Socket, pub: zmq.Socket) -> None:
    """Publish what the other threads produced (PUB never blocks; past its HWM it drops)."""
    for _ in range(HANDOFF_HWM):
        try:
            frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        pub.send_multipart(frames, copy=False)


def _drain(sub: zmq.Socket, pub: zmq.Socket, inbox: Inbox) -> None:
    for _ in range(256):  # bounded, so outgoing video keeps flowing under a flood
        try:
            frames = sub.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        for reply in inbox.handle(frames):
            pub.send_multipart(reply, copy=False)


def _write_ready_file(path: Path, info: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)
