"""docs/api.md and the router agree: every route is documented, every documented route exists,
and the documented limits are the code's."""

from __future__ import annotations

import re
from pathlib import Path

from flamecast.plugins.driver import MAX_PROMPT_CHARS
from flamecast.server import api, rtc
from flamecast.server.app import create_app
from flamecast.server.settings import MiB, Settings

from .conftest import plugin_host

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def documented_routes() -> set[tuple[str, str]]:
    return set(re.findall(r"^### `(GET|POST|PUT|PATCH|DELETE) (/\S*)`", DOC.read_text(), flags=re.M))


def router_routes() -> set[tuple[str, str]]:
    app = create_app(Settings(port=0), host=plugin_host())
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}


def test_every_route_is_documented_and_every_documented_route_exists():
    documented, routed = documented_routes(), router_routes()
    assert routed - documented == set(), "routes missing from docs/api.md"
    assert documented - routed == set(), "docs/api.md documents routes the server does not have"


def test_documented_limits_are_the_codes():
    text = DOC.read_text()
    assert Settings().max_upload_bytes == 8 * MiB and "| portrait upload | 8 MiB" in text
    assert api.MAX_JSON_BYTES == 256 * 1024 and "| JSON body, form field | 256 KiB" in text
    assert f"| prompt / control text | {MAX_PROMPT_CHARS} characters" in text
    assert rtc.MAX_SDP_BYTES == 64 * 1024 and "| SDP offer | 64 KiB" in text
    assert f"| sessions at once | {Settings().max_sessions} " in text
    assert f"| peer connections per session | {Settings().max_viewers} " in text
    assert f"| tracks per peer connection | {rtc.MAX_TRACKS} |" in text
    assert f"default {Settings().idle_timeout:g}" in text and f"(default {Settings().viewer_timeout:g}" in text
