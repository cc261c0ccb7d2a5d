"""HTTP handlers of the API (documented in docs/api.md). Errors are JSON ``{"error": "..."}``
with a status that says whose fault it is and a message that says what to fix."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web
from pydantic import ValidationError

from flamecast.plugins.driver import format_validation_error

from flamecast.plugins import protocol as wire

from . import metrics, security
from .audio_push import MAX_MESSAGE_BYTES as MAX_PUSH_BYTES
from .audio_push import AudioPush, AudioPushError, PushFormat
from .channels import BadChannel, parse_channel
from .control import SessionPhase, ControlError, resolve_driver
from .media import Background
from .outputs import OutputError
from .portraits import NotAnImage, PortraitTooLarge
from .rtc import OfferError, Viewer, parse_offer, pending_viewers
from .layers import LayerRequest, parse_emotion_mode, parse_layers
from .sessions import EventQueue, Session, SessionLimit, SessionRequest
from .state import HOST, LINK, PORTRAITS, SESSIONS, SETTINGS
from .worker_link import PortraitRejected, WorkerUnavailable

log = logging.getLogger(__name__)

MAX_JSON_BYTES = security.MAX_JSON_BYTES
STATS_INTERVAL = 1.0
SESSION_FIELDS = {"driver", "options", "layers", "emotion", "generator", "generator_options", "views", "size", "profile",
                  "portrait_id", "background", "channel", "outputs", "external"}


def error(status: int, message: str) -> web.HTTPException:
    """An HTTP error with a JSON body; raise it."""
    cls = web.HTTPException
    exc = cls(text=json.dumps({"error": message}), content_type="application/json")
    exc.set_status(status)
    return exc


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def read_json(request: web.Request, limit: int = MAX_JSON_BYTES) -> Any:
    """The body as JSON, bounded in size (413), depth and number sizes (400)."""
    if request.content_length is not None and request.content_length > limit:
        raise error(413, f"the JSON body is larger than {limit} bytes")
    raw = await _read_limited(request.content.read, limit, "the JSON body")
    try:
        return security.loads(raw, max_bytes=limit)
    except security.JSONRejected as exc:
        raise error(exc.status, str(exc)) from None


def check_client_options(request: web.Request, body: Any) -> None:
    """422 when ``body`` sets a driver option only the server's operator may set."""
    problem = security.client_option_error(request.app[HOST].drivers, body)
    if problem is not None:
        raise error(422, problem)


def get_session(request: web.Request) -> Session:
    sid = request.match_info["id"]
    try:
        return request.app[SESSIONS].get(sid)
    except KeyError:
        raise error(404, f"no session {sid!r} (it ended, or never existed); create one with POST /api/sessions") from None


# --- service --------------------------------------------------------------------------------


HEALTH_WAIT = 2.0  # seconds /healthz waits for a worker that was not heard from yet


async def healthz(request: web.Request) -> web.Response:
    """``ok`` only when the worker's heartbeat is fresh and its threads run; 503 otherwise."""
    manager, link = request.app[SESSIONS], request.app[LINK]
    if link.last_heartbeat is None:
        await link.wait_heard(HEALTH_WAIT)
    worker = link.health()
    ok = worker["state"] == "ok"
    return web.json_response({"status": "ok" if ok else "unavailable", "worker": worker,
                              "sessions": len(manager.sessions), "max_sessions": request.app[SETTINGS].max_sessions},
                             status=200 if ok else 503)


async def get_metrics(request: web.Request) -> web.Response:
    text = metrics.render(request.app[SESSIONS], request.app[LINK])
    return web.Response(text=text, headers={"Content-Type": metrics.CONTENT_TYPE})


async def get_plugins(request: web.Request) -> web.Response:
    return web.json_response(request.app[HOST].as_dict(), dumps=lambda o: json.dumps(o, default=str))


# --- portraits ------------------------------------------------------------------------------


async def post_portrait(request: web.Request) -> web.Response:
    data = await _read_portrait_body(request)
    portrait = _store_portrait(request, data)
    return web.json_response(portrait.describe(), status=201)


async def list_portraits(request: web.Request) -> web.Response:
    return web.json_response({"portraits": [p.describe() for p in request.app[PORTRAITS].list()]})


async def get_portrait(request: web.Request) -> web.Response:
    try:
        portrait = request.app[PORTRAITS].get(request.match_info["pid"])
    except KeyError:
        raise error(404, "no such portrait; upload it again with POST /api/portraits") from None
    return web.Response(body=portrait.data, content_type=portrait.content_type)


def _store_portrait(request: web.Request, data: bytes):
    try:
        return request.app[PORTRAITS].add(data)
    except PortraitTooLarge as exc:
        raise error(413, str(exc)) from None
    except NotAnImage as exc:
        raise error(422, str(exc)) from None


async def _read_portrait_body(request: web.Request) -> bytes:
    if request.content_type.startswith("multipart/"):
        fields = await read_multipart(request)
        data = fields.get("portrait")
        if not isinstance(data, bytes):
            raise error(400, "the multipart body needs a file field named 'portrait'")
        return data
    return await _read_limited(request.content.read, request.app[SETTINGS].max_upload_bytes)


async def _read_limited(read, limit: int, what: str = "the portrait") -> bytes:
    """Read a body or multipart part in chunks with ``read(n)``; 413 past ``limit`` bytes."""
    chunks, size = [], 0
    while chunk := await read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise error(413, f"{what} is larger than the {limit}-byte limit; send a smaller one")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_multipart(request: web.Request) -> dict[str, Any]:
    """Form fields as str, file fields as bytes (each file within max_upload_bytes)."""
    limit = request.app[SETTINGS].max_upload_bytes
    try:
        reader = await request.multipart()
        fields: dict[str, Any] = {}
        while (part := await reader.next()) is not None:
            if len(fields) >= 32:
                raise error(400, "too many multipart fields")
            if part.filename:
                fields[part.name or ""] = await _read_limited(part.read_chunk, limit, "the portrait")
            else:
                raw = await _read_limited(part.read_chunk, MAX_JSON_BYTES, f"form field {part.name!r}")
                fields[part.name or ""] = raw.decode("utf-8", "replace")
        return fields
    except (ValueError, AssertionError) as exc:
        raise error(400, f"malformed multipart body: {exc}") from None


# --- sessions -------------------------------------------------------------------------------


# How a worker's refusal reaches the client: its own mistakes are 422, the server's are 503.
# the worker's refusal codes as HTTP statuses: the client's to fix, the operator's, a bug
REFUSAL_STATUS = {wire.RefusalCode.PORTRAIT: 422, wire.RefusalCode.OPTIONS: 422, wire.RefusalCode.BUSY: 503,
                  wire.RefusalCode.UNAVAILABLE: 503, wire.RefusalCode.INTERNAL: 500}


async def create_session(request: web.Request) -> web.Response:
    body, portrait = await _session_body(request)
    session_request = _session_request(request, body, portrait)
    try:
        session = await request.app[SESSIONS].create(session_request)
    except SessionLimit as exc:
        raise error(429, str(exc)) from None
    except PortraitRejected as exc:
        raise error(REFUSAL_STATUS.get(exc.code, 500), str(exc)) from None
    except WorkerUnavailable as exc:
        raise error(503, str(exc)) from None
    except OutputError as exc:
        raise error(exc.status, str(exc)) from None
    return web.json_response(_with_links(session), status=201)


def _with_links(session: Session) -> dict[str, Any]:
    base = f"/api/sessions/{session.id}"
    return {**session.describe(), "links": {"self": base, "offer": f"{base}/offer", "input": f"{base}/input",
                                            "events": f"{base}/events", "layers": f"{base}/layers",
                                            "outputs": f"{base}/outputs"}}


async def _session_body(request: web.Request) -> tuple[dict[str, Any], bytes | None]:
    if request.content_type.startswith("multipart/"):
        fields = await read_multipart(request)
        portrait = fields.pop("portrait", None)
        if portrait is not None and not isinstance(portrait, bytes):
            raise error(400, "field 'portrait' must be a file upload (use 'portrait_id' for an uploaded one)")
        return {k: _form_value(k, v) for k, v in fields.items()}, portrait
    body = await read_json(request) if request.can_read_body else {}
    if not isinstance(body, dict):
        raise error(400, "the body must be a JSON object")
    return body, None


def _form_value(key: str, value: str) -> Any:
    if key == "external":
        return value.strip().lower() in ("1", "true", "yes", "on")
    if key in ("options", "generator_options", "layers", "outputs"):
        try:
            return security.loads(value) if value.strip() else {}
        except security.JSONRejected as exc:
            raise error(exc.status, f"form field {key!r} must be JSON: {exc}") from None
    if key == "views":
        return [v.strip() for v in value.split(",") if v.strip()]
    if key == "size":
        try:
            return int(value)
        except ValueError:
            raise error(422, f"form field 'size' must be an integer, got {value!r}") from None
    return value


def _session_request(request: web.Request, body: dict[str, Any], portrait: bytes | None) -> SessionRequest:
    unknown = sorted(set(body) - SESSION_FIELDS - {"portrait"})
    if unknown:
        raise error(422, f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(SESSION_FIELDS))}")
    if "portrait" in body:
        raise error(422, "send the portrait as a multipart file field, or upload it first and pass 'portrait_id'")
    check_client_options(request, body)
    settings, host = request.app[SETTINGS], request.app[HOST]
    layers = _layers(host, settings, body)
    generator = _string(body, "generator", settings.generator)
    gen_options = _generator_options(host, settings, generator, body)
    if portrait is not None:
        portrait = _store_portrait(request, portrait).data
    elif body.get("portrait_id"):
        try:
            portrait = request.app[PORTRAITS].get(str(body["portrait_id"])).data
        except KeyError:
            raise error(404, f"no portrait {body['portrait_id']!r}; upload it with POST /api/portraits") from None
    return SessionRequest(layers, generator, gen_options, _string(body, "profile", ""), portrait,
                          _control_value(parse_emotion_mode, body.get("emotion")), _background(body.get("background")),
                          _channel(body.get("channel")), _outputs(request, body.get("outputs")),
                          _flag(body, "external"))


def _layers(host, settings, body: dict[str, Any]) -> tuple[LayerRequest, ...]:
    """``layers`` (bottom first), or the single-driver form ``driver`` + ``options``."""
    if body.get("layers") is not None:
        if "driver" in body or "options" in body:
            raise error(422, "give either 'layers' or 'driver' (with 'options'), not both")
        return _control_value(parse_layers, host.drivers, body["layers"])
    driver_cls, options = _driver_and_options(host, body.get("driver", settings.default_driver), body.get("options"))
    if driver_cls.name == "idle" and not body.get("options"):
        return ()  # the idle base layer drives alone
    return (LayerRequest(driver_cls.name, driver_cls, options, frozenset(driver_cls.channels)),)


def _control_value(parse, *args):
    try:
        return parse(*args)
    except ControlError as exc:
        raise error(exc.status, str(exc)) from None


def _string(body: dict[str, Any], key: str, default: str) -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > 64:
        raise error(422, f"field {key!r} must be a string (at most 64 characters)")
    return value


def _driver_and_options(host, name: Any, options: Any):
    try:
        return resolve_driver(host.drivers, name, options)
    except ControlError as exc:
        raise error(exc.status, str(exc)) from None


def _generator_options(host, settings, generator: str, body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("generator_options") or {}
    if not isinstance(options, dict):
        raise error(422, "field 'generator_options' must be a JSON object")
    options = dict(options)
    if body.get("views") is not None:
        views = body["views"]
        if not isinstance(views, list) or not views or not all(isinstance(v, str) for v in views):
            raise error(422, "field 'views' must be a non-empty list of view ids (strings)")
        options["views"] = views
    if body.get("size") is not None:
        options["size"] = body["size"]
    elif "size" not in options and settings.size is not None:
        options["size"] = settings.size
    problem = wire.view_request_error(options.get("views"), options.get("size"))
    if problem is not None:  # bounded before the generator parses anything
        raise error(422, f"generator {generator!r}: {problem}")
    if generator in host.generators:
        try:
            host.generators.get(generator).Options.model_validate(options)
        except ValidationError as exc:
            raise error(422, f"generator {generator!r}: {format_validation_error(exc)}") from None
    return options


async def list_sessions(request: web.Request) -> web.Response:
    manager = request.app[SESSIONS]
    return web.json_response({"sessions": [s.describe() for s in manager.sessions.values() if s.state == SessionPhase.RUNNING]})


async def get_session_info(request: web.Request) -> web.Response:
    return web.json_response(_with_links(get_session(request)))


async def delete_session(request: web.Request) -> web.Response:
    session = get_session(request)
    await request.app[SESSIONS].end(session.id, "deleted")
    return web.json_response({"id": session.id, "state": SessionPhase.CLOSED})


# --- WebRTC ---------------------------------------------------------------------------------


async def post_offer(request: web.Request) -> web.Response:
    session = get_session(request)
    body = await read_json(request)
    if isinstance(body, dict) and "tracks" not in body and request.query.get("tracks"):
        body = {**body, "tracks": request.query["tracks"]}
    if isinstance(body, dict) and "codec" not in body and request.query.get("codec"):
        body = {**body, "codec": request.query["codec"]}
    try:
        offer = parse_offer(body, session.video.track_names)
    except OfferError as exc:
        raise error(400, str(exc)) from None
    settings = request.app[SETTINGS]
    if len(session.viewers) >= settings.max_viewers:
        raise error(429, f"session {session.id} has {settings.max_viewers} viewers already (the limit); "
                         "close one or raise --max-viewers")
    if pending_viewers(session.viewers) >= max(1, settings.max_viewers // 2):
        raise error(429, f"session {session.id} has {pending_viewers(session.viewers)} connections still negotiating; "
                         "wait for them to connect or time out")
    viewer = Viewer(session, settings.ice_servers, settings.viewer_timeout)
    try:
        answer = await viewer.answer(offer)
    except Exception as exc:  # aiortc raises ValueError/InvalidStateError etc. on odd SDP
        await viewer.close()
        raise error(400, f"the offer cannot be answered: {exc.__class__.__name__}: {exc}") from None
    if session.state == SessionPhase.CLOSED:  # ended while we negotiated
        await viewer.close()
        raise error(404, f"session {session.id} ended meanwhile")
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "tracks": list(offer.tracks),
                              "pts_epoch_ns": session.video.epoch_ns, "pts_clock_hz": 90000})


# --- control --------------------------------------------------------------------------------


async def post_input(request: web.Request) -> web.Response:
    session = get_session(request)
    body = await read_json(request)
    check_client_options(request, body)
    try:
        reply = await session.control(body)
    except ControlError as exc:
        raise error(exc.status, str(exc)) from None
    return web.json_response(reply.as_json())


# --- layers ---------------------------------------------------------------------------------


async def get_layers(request: web.Request) -> web.Response:
    session = get_session(request)
    return web.json_response({"layers": session.describe_layers(), "emotion": session.request.emotion.value,
                              "owners": session.describe()["stats"]["channel_owners"]})


async def post_layer(request: web.Request) -> web.Response:
    session = get_session(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise error(400, "the body must be a JSON layer object like {\"driver\": \"text\", \"channels\": [\"emotion\"]}")
    check_client_options(request, body)
    reply = await _layer_action(session, {**body, "kind": "layer", "action": "add"})
    return web.json_response(reply, status=201)


async def patch_layer(request: web.Request) -> web.Response:
    session = get_session(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not body or set(body) - {"index", "muted"}:
        raise error(422, "the body must be a JSON object with 'index' (a position, 1 = just above the base) "
                         "and/or 'muted' (true or false)")
    name = request.match_info["name"]
    reply: dict[str, Any] = {"ok": True, "name": name}
    if "muted" in body:
        if not isinstance(body["muted"], bool):
            raise error(422, "field 'muted' must be true or false")
        await _layer_action(session, {"kind": "layer", "action": "mute" if body["muted"] else "unmute", "name": name})
    if "index" in body:
        await _layer_action(session, {"kind": "layer", "action": "move", "name": name, "index": body["index"]})
    return web.json_response({**reply, "layers": session.describe_layers()})


async def delete_layer(request: web.Request) -> web.Response:
    session = get_session(request)
    return web.json_response(await _layer_action(
        session, {"kind": "layer", "action": "remove", "name": request.match_info["name"]}))


async def _layer_action(session: Session, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return (await session.control(body)).as_json()
    except ControlError as exc:
        raise error(exc.status, str(exc)) from None


# --- events ---------------------------------------------------------------------------------


async def events(request: web.Request) -> web.WebSocketResponse:
    session = get_session(request)
    ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=MAX_JSON_BYTES)
    await ws.prepare(request)
    queue = EventQueue()
    session.add_listener(queue)
    sender = asyncio.create_task(_send_events(ws, session, queue))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_json(await _socket_reply(session, msg.data, request.app[HOST].drivers))
    finally:
        session.remove_listener(queue)
        sender.cancel()
    return ws


async def audio_socket(request: web.Request) -> web.WebSocketResponse:
    """PCM an integrator pushes to the session's audio-driven layers (server/audio_push.py)."""
    session = get_session(request)
    try:
        push = AudioPush(session.id, PushFormat.parse(request.query))
    except AudioPushError as exc:
        raise error(422, str(exc)) from None
    if not session.wants_audio:
        raise error(409, f"session {session.id} has no layer that takes audio; add one, e.g. "
                         '{"driver": "microphone", "channels": ["jaw", "mouth"]}, with POST /api/sessions/ID/layers')
    ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=MAX_PUSH_BYTES)
    await ws.prepare(request)
    await ws.send_json({"type": "ready", "rate": push.fmt.rate, "channels": push.fmt.channels,
                        "encoding": push.fmt.encoding})
    async for msg in ws:
        try:
            reply = None
            if msg.type == WSMsgType.BINARY:
                chunk = push.binary(msg.data)
            elif msg.type == WSMsgType.TEXT:
                chunk, reply = push.text(msg.data)
            else:
                continue
        except AudioPushError as exc:
            await ws.send_json({"type": "error", "error": str(exc)})
            continue
        if chunk is not None:
            session.feed_audio(chunk)
        if reply is not None:
            await ws.send_json(reply)
    return ws


async def _socket_reply(session: Session, text: str, drivers) -> dict[str, Any]:
    """A control message from the events socket and its answer (docs/api.md, events)."""
    try:
        body = security.loads(text)
    except security.JSONRejected as exc:
        return {"type": "reply", "status": exc.status, "ok": False, "error": str(exc)}
    problem = security.client_option_error(drivers, body)
    if problem is not None:
        return {"type": "reply", "status": 422, "ok": False, "error": problem}
    try:
        reply = await session.control(body)
    except ControlError as exc:
        return {"type": "reply", "status": exc.status, "ok": False, "error": str(exc)}
    return {"type": "reply", "status": 200, **reply.as_json()}


async def _send_events(ws: web.WebSocketResponse, session: Session, queue: EventQueue) -> None:
    try:
        await _event_loop(ws, session, queue)
    except (ConnectionError, RuntimeError):  # the socket closed under us
        pass


async def _event_loop(ws: web.WebSocketResponse, session: Session, queue: EventQueue) -> None:
    loop = asyncio.get_running_loop()
    next_stats = loop.time()
    while not ws.closed:
        if loop.time() >= next_stats:
            await ws.send_json({"type": "stats", "session": session.id, **session.describe()})
            next_stats = loop.time() + STATS_INTERVAL
        try:
            async with asyncio.timeout(max(0.0, next_stats - loop.time())):
                event = await queue.get()
        except TimeoutError:
            continue
        await ws.send_json(event)
        if event.get("type") == "closed":
            await ws.close()


# --- background, channel, external, outputs ----------------------------------------------------

PATCH_FIELDS = {"background", "channel", "external"}


def _background(value: Any) -> Background:
    try:
        return Background.parse(value)
    except ValueError as exc:
        raise error(422, str(exc)) from None


def _channel(value: Any) -> str | None:
    try:
        return parse_channel(value)
    except BadChannel as exc:
        raise error(422, str(exc)) from None


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise error(422, f"field {key!r} must be true or false")
    return value


def _outputs(request: web.Request, value: Any) -> tuple[tuple[str, dict], ...]:
    """``[{"name": "virtualcam", "options": {...}}, ...]`` (or plain names) at session creation."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise error(422, "field 'outputs' must be a list like [{\"name\": \"virtualcam\"}]")
    out = []
    for item in value:
        item = {"name": item} if isinstance(item, str) else item
        out.append(_output_spec(request, item))
    return tuple(out)


def _output_spec(request: web.Request, item: Any) -> tuple[str, dict]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or set(item) - {"name", "options"}:
        raise error(422, "an output is {\"name\": NAME, \"options\": {...}}; the names are in GET /api/plugins (outputs)")
    if item["name"] not in request.app[HOST].outputs:
        available = ", ".join(request.app[HOST].outputs.names()) or "none installed"
        raise error(422, f"unknown output {item['name']!r}; available: {available}")
    options = item.get("options") or {}
    if not isinstance(options, dict):
        raise error(422, "field 'options' of an output must be a JSON object")
    return item["name"], options


async def patch_session(request: web.Request) -> web.Response:
    """Change a running session: ``background``, ``channel`` (null: unpublish), ``external``."""
    session = get_session(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not body or set(body) - PATCH_FIELDS:
        raise error(422, f"the body must be a JSON object with any of {', '.join(sorted(PATCH_FIELDS))}")
    background = _background(body["background"]) if "background" in body else None
    channel = _channel(body.get("channel"))
    external = _flag(body, "external") if "external" in body else None
    if background is not None:
        session.set_background(background)
    if "channel" in body:
        request.app[SESSIONS].publish(session, channel)
    if external is not None:
        session.set_external(external)
    return web.json_response(_with_links(session))


async def list_outputs(request: web.Request) -> web.Response:
    session = get_session(request)
    return web.json_response({"outputs": session.outputs.describe(),
                              "available": request.app[HOST].outputs.names()})


async def post_output(request: web.Request) -> web.Response:
    session = get_session(request)
    name, options = _output_spec(request, await read_json(request))
    try:
        described = await session.attach_output(name, options)
    except OutputError as exc:
        raise error(exc.status, str(exc)) from None
    return web.json_response(described, status=201)


async def delete_output(request: web.Request) -> web.Response:
    session = get_session(request)
    try:
        described = await session.outputs.detach(request.match_info["name"])
    except OutputError as exc:
        raise error(exc.status, str(exc)) from None
    return web.json_response(described)


async def list_channels(request: web.Request) -> web.Response:
    return web.json_response({"channels": request.app[SESSIONS].channels.as_dict()})


async def get_channel(request: web.Request) -> web.Response:
    """Which session holds a channel now: ``{"channel", "session": ID or null, ...}`` (never 404:
    a page that follows a channel waits for a session to take it)."""
    name = _channel(request.match_info["name"])
    manager = request.app[SESSIONS]
    sid = manager.channels.holder(name)
    session = manager.sessions.get(sid) if sid else None
    if session is None or session.state != SessionPhase.RUNNING:
        return web.json_response({"channel": name, "session": None, "live": False})
    return web.json_response({"channel": name, "session": session.id, "live": True, "views": list(session.view_ids),
                              "tracks": list(session.video.track_names) if session.video else [],
                              "background": session.request.background.value})
