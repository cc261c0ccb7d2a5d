"""Control messages for a session's driver, whichever way they come (POST /input, the events
WebSocket, the data channel).

``apply_control(target, body, drivers)`` checks a message, hands it to the session's driver (or
switches the driver) and returns a typed reply; everything that can go wrong is a
``ControlError`` whose ``status`` says whose fault it is and whose message says what to fix. Each
transport turns the reply or the error into its own answer in a few lines.
"""

from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import ValidationError

from flamecast.plugins import Control, ControlNotSupported, Driver, DriverOptions, OptionsError
from flamecast.plugins.driver import MAX_PROMPT_CHARS, format_validation_error
from flamecast.plugins.stack import UnknownLayer

log = logging.getLogger(__name__)

SWITCH_FIELDS = {"kind", "driver", "options"}


class SessionPhase(enum.StrEnum):
    """Where a server-side session is in its life (``Session.state``, ``state`` in the API)."""

    OPENING = "opening"  # the worker is opening it; not listed, takes no messages yet
    RUNNING = "running"
    CLOSED = "closed"


# --- errors ---------------------------------------------------------------------------------


class ControlError(Exception):
    """A control message that was not carried out; ``status`` is the HTTP-style status."""

    status: ClassVar[int] = 500


class BadControl(ControlError):
    """The message is well-formed JSON but its content is invalid (unknown kind, field, driver,
    option, or a value the driver rejects)."""

    status = 422


class MalformedControl(BadControl):
    """Not JSON, or not a JSON object."""

    status = 400


class ControlTooLarge(BadControl):
    """A text over the prompt limit."""

    status = 413


class NotSupported(ControlError):
    """The session's driver does not take this kind of message (now)."""

    status = 409


class SessionGone(ControlError):
    """The session ended before the message reached it."""

    status = 404


class NoSuchLayer(ControlError):
    """A message or layer action for a layer the session does not have."""

    status = 404


class DriverFailed(ControlError):
    """The driver raised something it should not have; the session goes on."""

    status = 500


# --- replies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriverReply:
    """The driver took the message; ``reply`` is what it answered (may be empty)."""

    reply: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"ok": True, "reply": self.reply}


@dataclass(frozen=True)
class DriverSwitched:
    """The session now runs driver ``driver``."""

    driver: str

    def as_json(self) -> dict[str, Any]:
        return {"ok": True, "driver": self.driver}


@dataclass(frozen=True)
class LayerChanged:
    """A layer was added, removed, moved, muted or unmuted."""

    reply: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return self.reply


ControlReply = DriverReply | DriverSwitched | LayerChanged


# --- what control needs ---------------------------------------------------------------------


class ControlTarget(Protocol):
    """What a session offers to control: its state, its driver, and a way to switch it."""

    id: str

    @property
    def state(self) -> str: ...

    @property
    def driver_name(self) -> str: ...

    async def driver_control(self, message: Control) -> Any:
        """The running driver's ``control(message)`` (ControlNotSupported when none runs)."""

    def switch_driver(self, driver_cls: type[Driver], options: DriverOptions) -> None: ...

    async def layer_action(self, body: dict[str, Any]) -> dict[str, Any]:
        """Carry out a ``{"kind": "layer", ...}`` message (see server/layers.py)."""


class DriverCatalog(Protocol):
    """The installed drivers by name (``PluginHost.drivers``)."""

    def get(self, name: str) -> type:
        """The driver class ``name``; KeyError whose message lists the available names."""


# --- the entry point ------------------------------------------------------------------------


def parse_text(text: str | bytes) -> Any:
    """The JSON of a socket message; MalformedControl when it is not JSON."""
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise MalformedControl("malformed JSON: the message is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MalformedControl(f"malformed JSON: {exc.msg}") from None


async def apply_control(target: ControlTarget, body: Any, drivers: DriverCatalog) -> ControlReply:
    """Check ``body`` (a decoded JSON value), carry it out on ``target`` and say how it went.

    Raises a ControlError subclass for anything that was not carried out."""
    if target.state != SessionPhase.RUNNING:
        raise SessionGone(f"session {target.id} is {target.state}, not running; create one with POST /api/sessions")
    if not isinstance(body, dict):
        raise MalformedControl("the body must be a JSON object like {\"kind\": \"prompt\", \"text\": \"...\"}")
    text = body.get("text")
    if isinstance(text, str) and len(text) > MAX_PROMPT_CHARS:
        raise ControlTooLarge(f"the text is {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
    if body.get("kind") == "driver":
        return _switch_driver(target, body, drivers)
    if body.get("kind") == "layer":
        return LayerChanged(await target.layer_action(body))
    return DriverReply(await _call_driver(target, validate(body)))


def validate(body: dict[str, Any]) -> Control:
    """The body as a ``Control``; BadControl naming each bad field."""
    try:
        return Control.model_validate(body)
    except ValidationError as exc:
        raise BadControl(format_validation_error(exc, what="field")) from None


def resolve_driver(drivers: DriverCatalog, name: Any, options: Any) -> tuple[type[Driver], DriverOptions]:
    """The driver class ``name`` and its validated ``options``; BadControl saying what is wrong."""
    if not isinstance(name, str):
        raise BadControl("field 'driver' must be a driver name (see GET /api/plugins)")
    try:
        driver_cls: type[Driver] = drivers.get(name)
    except KeyError as exc:
        raise BadControl(exc.args[0]) from None
    if options is not None and not isinstance(options, dict):
        raise BadControl("field 'options' must be a JSON object of the driver's options")
    try:
        return driver_cls, driver_cls.parse_options(options or {})
    except OptionsError as exc:
        raise BadControl(f"driver {name!r}: {exc}") from None


def _switch_driver(target: ControlTarget, body: dict[str, Any], drivers: DriverCatalog) -> DriverSwitched:
    extra = sorted(set(body) - SWITCH_FIELDS)
    if extra:
        raise BadControl(f"unknown field(s) {', '.join(extra)} for kind 'driver'")
    driver_cls, options = resolve_driver(drivers, body.get("driver"), body.get("options"))
    target.switch_driver(driver_cls, options)
    return DriverSwitched(driver_cls.name)


async def _call_driver(target: ControlTarget, message: Control) -> dict[str, Any]:
    """The driver's reply; its exceptions become ControlErrors (never a traceback to a client)."""
    name = target.driver_name
    try:
        reply = await target.driver_control(message)
    except UnknownLayer as exc:
        raise NoSuchLayer(str(exc)) from None
    except (ControlNotSupported, NotImplementedError) as exc:
        raise NotSupported(str(exc) or f"driver {name!r} does not accept {message.kind!r} messages") from None
    except (ValueError, TypeError) as exc:  # OptionsError and pydantic's ValidationError are ValueErrors
        raise BadControl(f"driver {name!r} rejected the {message.kind!r} message: {exc}; "
                         "check its 'text' and the values in 'data' against the driver's documentation") from None
    except Exception as exc:
        log.error("driver %s of session %s failed on a %r message", name, target.id, message.kind, exc_info=True)
        raise DriverFailed(_failure(name, message.kind, exc)) from None
    return _checked_reply(name, message.kind, reply)


def _checked_reply(name: str, kind: str, reply: Any) -> dict[str, Any]:
    if reply is None:
        return {}
    if not isinstance(reply, dict):
        raise DriverFailed(_failure(name, kind, TypeError(f"control() returned a {type(reply).__name__}, not a dict")))
    try:
        json.dumps(reply)
    except (TypeError, ValueError) as exc:
        raise DriverFailed(_failure(name, kind, exc)) from None
    return reply


def _failure(name: str, kind: str, exc: BaseException) -> str:
    return (f"driver {name!r} failed on the {kind!r} message ({exc.__class__.__name__}: {exc}); the session goes "
            "on with it. This is a bug in the driver plugin: report it to its authors (the server log has the "
            "traceback)")
