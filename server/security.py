"""What keeps a request, a message or a web page from doing more than it may.

* ``loads``: JSON parsing bounded in size, depth, integer digits and float range, for every
  entry (HTTP bodies, the events WebSocket, the data channel): a hostile document is a 400/413
  with a reason, never a RecursionError.
* ``security_middleware``: the Host header must name this server when it listens on loopback
  (no DNS rebinding), an ``Origin`` must be the server's own, a loopback one or an allowed one
  (no page elsewhere drives a local server), state-changing requests carry JSON (415; the
  documented uploads excepted); every response gets ``nosniff`` and the pages their CSP.
* ``auth_middleware``: the token comes from ``Authorization: Bearer`` or the HttpOnly cookie the
  server sets once a request was authenticated by the header (for WebSockets, which cannot send
  headers) — never from the URL, so no token lands in an access log.
* ``QuietAccessLogger``: access log lines without query strings.
* ``client_option_error``: driver options marked ``server_only`` cannot come from clients.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import secrets
from itertools import accumulate
from typing import Any, Iterator
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

MAX_JSON_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 20  # an int64 and then some; larger integers are refused
TOKEN_COOKIE = "flamecast_token"
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The documented uploads that are not JSON: route -> content types it takes besides JSON.
UPLOADS = {
    ("POST", "/api/portraits"): ("multipart/form-data", "image/png", "image/jpeg", "image/webp",
                                 "application/octet-stream"),
    ("POST", "/api/sessions"): ("multipart/form-data",),
}
LOOPBACK_NAMES = ("localhost",)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


class JSONRejected(ValueError):
    """A JSON document that is not taken; ``status`` is 400 (malformed) or 413 (too large)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --- JSON -----------------------------------------------------------------------------------


def loads(text: str | bytes, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON within bounds; JSONRejected (400/413) saying what is wrong otherwise."""
    if len(text) > max_bytes:
        raise JSONRejected(413, f"the JSON is larger than {max_bytes} bytes")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise JSONRejected(400, "malformed JSON: not UTF-8") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise JSONRejected(400, f"the JSON nests {depth} levels deep; the limit is {max_depth}")
    try:
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise JSONRejected(400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise JSONRejected(400, f"malformed JSON: {exc}") from None


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in ``text`` (strings skipped), without recursion."""
    brackets = _BRACKET.findall(_STRING.sub('""', text))
    if not brackets:
        return 0
    return max(0, max(accumulate(1 if b in "[{" else -1 for b in brackets)))


def _int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(digits)} digits; at most {MAX_INT_DIGITS} are taken")
    return int(digits)


def _float(text: str) -> float:
    if len(text) > 64:
        raise ValueError("a number of more than 64 characters")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# --- driver options a client may not set ----------------------------------------------------


def server_only(options_cls: Any) -> set[str]:
    """The fields of a DriverOptions model marked ``json_schema_extra={"server_only": True}``."""
    out = set()
    for name, info in getattr(options_cls, "model_fields", {}).items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("server_only"):
            out.add(name)
    return out


def client_option_error(drivers: Any, body: Any) -> str | None:
    """Why ``body`` (a session, layer or control message) may not be taken from a client: it
    sets a server-only driver option (a file path). None when it sets none."""
    for driver, options in _option_sets(body):
        names = _server_only_names(drivers, driver)
        taken = sorted(set(options) & names)
        if taken:
            which = f"driver {driver!r}" if isinstance(driver, str) else "the driver"
            return (f"option(s) {', '.join(taken)} of {which} name files on the server and are set by its operator "
                    "(`flamecast driver` or the server's plugin settings), not by clients; leave them out")
    return None


def _option_sets(body: Any) -> Iterator[tuple[Any, dict]]:
    if not isinstance(body, dict):
        return
    if isinstance(body.get("options"), dict):
        yield body.get("driver"), body["options"]
    if isinstance(body.get("layers"), list):
        for spec in body["layers"]:
            if isinstance(spec, dict) and isinstance(spec.get("options"), dict):
                yield spec.get("driver"), spec["options"]
    if body.get("kind") == "option" and isinstance(body.get("data"), dict):
        yield None, body["data"]


def _server_only_names(drivers: Any, name: Any) -> set[str]:
    if isinstance(name, str) and name in drivers:
        return server_only(drivers.get(name).Options)
    names: set[str] = set()
    for other in drivers.names():  # unknown or unnamed: every driver's server-only fields
        names |= server_only(drivers.get(other).Options)
    return names


# --- hosts and origins ----------------------------------------------------------------------


def is_loopback_name(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str | None:
    """The name in a Host header (``[::1]:8080`` -> ``::1``); None when it is not one."""
    m = _HOST.match(value.strip())
    return m.group(1).strip("[]").lower() if m else None


def host_allowed(settings: Any, host_header: str) -> bool:
    """On a loopback server only loopback names and allowed origins' hosts (DNS rebinding);
    a server on another address needs its token instead, so any name reaches it."""
    name = host_name(host_header)
    if name is None:
        return False
    if not settings.loopback_only:
        return True
    return is_loopback_name(name) or name in {urlsplit(o).hostname for o in settings.allowed_origins}


def origin_allowed(settings: Any, origin: str, host_header: str) -> bool:
    """The server's own origin, a loopback one, or one in ``allowed_origins``."""
    origin = origin.strip().rstrip("/")
    if origin in {o.rstrip("/") for o in settings.allowed_origins}:
        return True
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        return False
    own = parts.netloc.lower() == host_header.strip().lower()
    return own or (is_loopback_name(parts.hostname) and (port is None or 0 < port < 65536))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_security_middleware(protected: tuple[str, ...]):
    @web.middleware
    async def security_middleware(request: web.Request, handler) -> web.StreamResponse:
        """Host and Origin checks on the API (``protected`` paths) and on every state-changing
        request; JSON only in state-changing bodies. The pages themselves are public."""
        from .state import SETTINGS

        settings = request.app[SETTINGS]
        if request.path.startswith(protected) or request.method in STATE_CHANGING:
            refused = _refused_origin(settings, request)
            if refused is not None:
                return refused
        if request.method in STATE_CHANGING and request.body_exists:
            allowed = ("application/json", *UPLOADS.get((request.method, request.path), ()))
            if request.content_type not in allowed:
                return _error(415, f"send the body as application/json (got {request.content_type[:60]!r})"
                              + ("; uploads may also be " + ", ".join(allowed[1:]) if len(allowed) > 1 else ""))
        return await handler(request)

    return security_middleware


def _refused_origin(settings: Any, request: web.Request) -> web.Response | None:
    host = request.headers.get("Host", "")
    if not host_allowed(settings, host):
        return _error(403, f"this server does not answer to host {host[:100]!r}; open it as http://127.0.0.1:PORT/ "
                           "or add the name's origin to allowed_origins")
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(settings, origin, host):
        return _error(403, f"pages from {origin[:100]!r} may not use this server; add the origin to "
                           "allowed_origins (flamecast serve --allow-origin) if it should")
    return None


# --- the token ------------------------------------------------------------------------------


def new_token() -> str:
    """A secret the server hands out (API token, a session's wire token): 48 hex digits, so it
    never starts with ``-`` and a command line takes it as a value (``--token``, ``--session``)."""
    return secrets.token_hex(24)


def given_token(request: web.Request) -> tuple[str | None, bool]:
    """The token a request carries and whether it came in the Authorization header."""
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        return (value.strip() if scheme.lower() == "bearer" else None), True
    return request.cookies.get(TOKEN_COOKIE), False


def make_auth_middleware(protected: tuple[str, ...]):
    @web.middleware
    async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
        """With a token set, ``protected`` paths need ``Authorization: Bearer TOKEN`` (or the
        cookie the server set after one such request); the pages themselves are public."""
        from .state import SETTINGS

        token = request.app[SETTINGS].token
        if not token or not request.path.startswith(protected):
            return await handler(request)
        given, from_header = given_token(request)
        if given is None or not secrets.compare_digest(given.encode(), token.encode()):
            return _error(401, "this server needs its access token: send 'Authorization: Bearer TOKEN' (the token "
                               "`flamecast serve` printed); tokens in the URL are not taken")
        response = await handler(request)
        if from_header and request.cookies.get(TOKEN_COOKIE) != token and not response.prepared:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response

    return auth_middleware


# --- response headers -----------------------------------------------------------------------


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: nosniff and no referrer everywhere; pages that set no policy
    of their own get one that forbids framing."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.content_type == "text/html":
        response.headers.setdefault("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
        response.headers.setdefault("X-Frame-Options", "DENY")


# --- access log -----------------------------------------------------------------------------


class QuietAccessLogger(AbstractAccessLogger):
    """One line per request: address, method, path (no query string: it may carry secrets),
    status, bytes and seconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %s %s %.3f', request.remote, request.method, request.path,
                         response.status, response.body_length, time)
