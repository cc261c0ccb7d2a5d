"""The application's typed state: ``web.AppKey`` entries set by ``create_app``."""

from __future__ import annotations

from aiohttp import web

from flamecast.plugins.manager import PluginHost

from .portraits import PortraitStore
from .sessions import SessionManager
from .settings import Settings
from .worker_link import WorkerLink

SETTINGS = web.AppKey("settings", Settings)
HOST = web.AppKey("plugin_host", PluginHost)
LINK = web.AppKey("worker_link", WorkerLink)
SESSIONS = web.AppKey("sessions", SessionManager)
PORTRAITS = web.AppKey("portraits", PortraitStore)
