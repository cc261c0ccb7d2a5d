"""The browser client's files (``flamecast.client_demo``), served from one folder only.

Only plain file names directly inside that folder with a known suffix are served; anything
with a separator, a leading dot or a path that resolves outside the folder is a 404.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import web

TYPES = {
    ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png",
    ".jpg": "image/jpeg", ".svg": "image/svg+xml", ".ico": "image/x-icon",
}


def client_root() -> Path:
    return Path(str(resources.files("flamecast.client_demo"))).resolve()


def safe_file(root: Path, name: str) -> Path | None:
    """The file ``name`` inside ``root``, or None when it is not a servable client file."""
    if not name or name.startswith(".") or any(c in name for c in "/\\\x00") or ".." in name:
        return None
    path = (root / name).resolve()
    if path.parent != root or path.suffix not in TYPES or not path.is_file():
        return None
    return path


def make_handler(root: Path):
    async def serve(request: web.Request) -> web.FileResponse:
        name = request.match_info.get("name", "index.html")
        path = safe_file(root, name)
        if path is None:
            raise web.HTTPNotFound(text=f"no client file {name!r}")
        return web.FileResponse(path, headers={"Content-Type": TYPES[path.suffix], "Cache-Control": "no-cache"})

    return serve
