"""GET /metrics: the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

from .control import SessionPhase
from .sessions import SessionManager
from .worker_link import WorkerLink

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + body + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._declared: set[str] = set()

    def metric(self, name: str, kind: str, help_: str, value: float | None, **labels: str) -> None:
        if name not in self._declared:
            self._declared.add(name)
            self.lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        if value is not None:
            self.lines.append(f"{name}{_labels(**labels)} {float(value):g}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(manager: SessionManager, link: WorkerLink) -> str:
    w = _Writer()
    sessions = [s for s in manager.sessions.values() if s.state == SessionPhase.RUNNING]
    w.metric("flamecast_sessions", "gauge", "Sessions running.", len(sessions))
    w.metric("flamecast_sessions_limit", "gauge", "Most sessions at once.", manager.settings.max_sessions)
    for reason, count in sorted(manager.ended.items()) or [("deleted", 0)]:
        w.metric("flamecast_sessions_ended_total", "counter", "Sessions ended, by reason.", count, reason=reason)
    w.metric("flamecast_worker_bad_messages_total", "counter", "Malformed messages from the worker (dropped).",
             link.bad_messages)
    for s in sessions:
        _session(w, s)
    return w.text()


def _session(w: _Writer, s) -> None:
    d = s.describe()["stats"]
    sid = s.id
    w.metric("flamecast_session_fps_out", "gauge", "Frames per second sent to WebRTC.", d["fps_out"], session=sid)
    w.metric("flamecast_session_fps_in", "gauge", "Frames per second received from the worker.", d["fps_in"], session=sid)
    _quantiles(w, "flamecast_session_latency_ms", "Driver capture to WebRTC send, ms.", d["latency_ms"], sid)
    _quantiles(w, "flamecast_session_client_latency_ms", "Driver capture to client decode (client reports), ms.",
               d["client_latency_ms"], sid)
    w.metric("flamecast_session_dropped_frames_total", "counter", "Frames replaced before they were sent.",
             d["dropped"], session=sid)
    w.metric("flamecast_session_driver_restarts_total", "counter", "Driver crashes restarted.", d["driver_restarts"],
             session=sid)
    w.metric("flamecast_session_viewers", "gauge", "Peer connections watching.", len(s.viewers), session=sid)


def _quantiles(w: _Writer, name: str, help_: str, summary: dict, sid: str) -> None:
    for q, key in (("0.5", "p50"), ("0.95", "p95")):
        w.metric(name, "gauge", help_, summary.get(key), session=sid, quantile=q)

