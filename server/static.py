"""The browser client's files (``flamecast.client_demo``), served from one folder only.

Only plain file names directly inside that folder with a known suffix are served; anything
with a separator, a leading dot, an over-long name or a path that resolves outside the folder
is a 404. Pages carry a Content-Security-Policy that allows their own inline scripts (by hash)
and nothing injected, and forbids framing (an OBS browser source is a browser, not a frame).
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from pathlib import Path

from aiohttp import web

MAX_NAME = 128
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)
_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,300}$")

TYPES = {
    ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png",
    ".jpg": "image/jpeg", ".svg": "image/svg+xml", ".ico": "image/x-icon",
}


def client_root() -> Path:
    return Path(str(resources.files("flamecast.client_demo"))).resolve()


def safe_file(root: Path, name: str) -> Path | None:
    """The file ``name`` inside ``root``, or None when it is not a servable client file."""
    if not name or len(name) > MAX_NAME or name.startswith(".") or any(c in name for c in "/\\\x00") or ".." in name:
        return None
    try:
        path = (root / name).resolve()
        if path.parent != root or path.suffix not in TYPES or not path.is_file():
            return None
    except (OSError, ValueError):  # a name the file system refuses
        return None
    return path


def page_policy(html: bytes, host: str) -> str:
    """The CSP of one page: its own files, its inline scripts by hash, WebSockets to this host."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(m).digest()).decode()}'"
                      for m in _INLINE_SCRIPT.findall(html))
    sockets = f" ws://{host} wss://{host}" if _HOST.match(host) else ""
    return ("default-src 'self'; "
            f"script-src 'self'{' ' + hashes if hashes else ''}; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
            f"connect-src 'self'{sockets}; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


def make_handler(root: Path):
    async def serve(request: web.Request) -> web.FileResponse:
        name = request.match_info.get("name", "index.html")
        path = safe_file(root, name)
        if path is None:
            raise web.HTTPNotFound(text=f"no client file {name!r}")
        headers = {"Content-Type": TYPES[path.suffix], "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if path.suffix == ".html":
            headers["Content-Security-Policy"] = page_policy(path.read_bytes(), request.headers.get("Host", ""))
            headers["X-Frame-Options"] = "DENY"
        return web.FileResponse(path, headers=headers)

    return serve
