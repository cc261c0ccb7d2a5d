"""The aiohttp application: ``create_app(settings)`` builds it; ``flamecast serve`` runs it.

State lives in ``web.AppKey`` entries (server/state.py); the worker link and the session reaper
run in cleanup contexts; shutdown ends every session, which closes its peer connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator

from aiohttp import web

from flamecast.plugins.manager import PluginHost, make_plugin_host

from . import api, security, static
from .portraits import PortraitStore
from .sessions import SessionManager
from .settings import Settings
from .state import HOST, LINK, PORTRAITS, SESSIONS, SETTINGS
from .worker_link import WorkerLink

log = logging.getLogger(__name__)

# (method, path, handler): the whole HTTP API; docs/api.md documents each (a test checks).
ROUTES = (
    ("GET", "/healthz", api.healthz),
    ("GET", "/metrics", api.get_metrics),
    ("GET", "/api/plugins", api.get_plugins),
    ("GET", "/api/portraits", api.list_portraits),
    ("POST", "/api/portraits", api.post_portrait),
    ("GET", "/api/portraits/{pid}", api.get_portrait),
    ("GET", "/api/sessions", api.list_sessions),
    ("POST", "/api/sessions", api.create_session),
    ("GET", "/api/sessions/{id}", api.get_session_info),
    ("DELETE", "/api/sessions/{id}", api.delete_session),
    ("POST", "/api/sessions/{id}/offer", api.post_offer),
    ("POST", "/api/sessions/{id}/input", api.post_input),
    ("GET", "/api/sessions/{id}/layers", api.get_layers),
    ("POST", "/api/sessions/{id}/layers", api.post_layer),
    ("PATCH", "/api/sessions/{id}/layers/{name}", api.patch_layer),
    ("DELETE", "/api/sessions/{id}/layers/{name}", api.delete_layer),
    ("GET", "/api/sessions/{id}/events", api.events),
    ("GET", "/api/sessions/{id}/audio", api.audio_socket),
    ("PATCH", "/api/sessions/{id}", api.patch_session),
    ("GET", "/api/sessions/{id}/outputs", api.list_outputs),
    ("POST", "/api/sessions/{id}/outputs", api.post_output),
    ("DELETE", "/api/sessions/{id}/outputs/{name}", api.delete_output),
    ("GET", "/api/channels", api.list_channels),
    ("GET", "/api/channels/{name}", api.get_channel),
)
PROTECTED_PREFIXES = ("/api/", "/metrics")


def create_app(settings: Settings, *, host: PluginHost | None = None) -> web.Application:
    """The application for ``settings``; ``host`` defaults to the installed plugins."""
    app = web.Application(
        middlewares=[errors_middleware, security.make_security_middleware(PROTECTED_PREFIXES), security.make_auth_middleware(PROTECTED_PREFIXES)],
        client_max_size=settings.max_upload_bytes + 1024 * 1024,
    )
    app[SETTINGS] = settings
    app[HOST] = host or make_plugin_host()
    app[LINK] = WorkerLink(settings.worker_input, settings.worker_output, keys=worker_keys(settings),
                           key_folder=settings.worker_keys)
    app.on_response_prepare.append(security.add_security_headers)
    app[SESSIONS] = SessionManager(settings, app[HOST], app[LINK])
    app[PORTRAITS] = portrait_store(settings)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    serve = static.make_handler(static.client_root())
    app.router.add_get("/", serve)
    app.router.add_get("/{name}", serve)
    app.cleanup_ctx.append(_worker_link)
    app.cleanup_ctx.append(_reaper)
    app.on_shutdown.append(_end_sessions)
    return app


def portrait_store(settings: Settings) -> PortraitStore:
    """Uploaded portraits: kept on disk in ``data_dir/portraits`` when there is a data folder."""
    if settings.data_dir is None:
        return PortraitStore(settings.max_portraits, settings.max_upload_bytes)
    from pathlib import Path

    from .portrait_store import PersistentPortraitStore

    return PersistentPortraitStore(settings.max_portraits, settings.max_upload_bytes, Path(settings.data_dir) / "portraits")


async def _worker_link(app: web.Application) -> AsyncIterator[None]:
    app[LINK].restart_listeners.append(lambda: asyncio.ensure_future(_heal_now(app)))
    await app[LINK].start()
    yield
    await app[LINK].close()


async def _reaper(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[SESSIONS].reap_forever(), name="session-reaper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await app[SESSIONS].close_all("shutdown")


async def _end_sessions(app: web.Application) -> None:
    await app[SESSIONS].close_all("shutdown")


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Unexpected errors become a JSON 500 (logged); the process and other sessions go on."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 413 and exc.content_type != "application/json":
            return api.error_response(413, f"the request body is too large (limit {request.app[SETTINGS].max_upload_bytes} bytes)")
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("error in %s %s", request.method, request.path)
        return api.error_response(500, "internal error; the server log has the details")


async def _heal_now(app: web.Application) -> None:
    """A restarted worker lost every session: offer each to it now rather than after
    REOPEN_AFTER seconds without video (the link also repeats its own offers until answered)."""
    from .sessions import REOPEN_AFTER

    for session in list(app[SESSIONS].sessions.values()):
        session.last_video = session.last_reopen = min(session.last_video, session.last_reopen) - REOPEN_AFTER
        await session.heal()


def worker_keys(settings: Settings):
    """The server's CURVE keys for the worker link (None: plain text)."""
    if settings.worker_keys is None:
        return None
    from flamecast.plugins.publish import load_keys

    return load_keys(settings.worker_keys, "server")
