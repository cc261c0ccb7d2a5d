"""Control messages without sockets: ``apply_control`` against real drivers, and the domain
error each kind of bad message or misbehaving driver becomes."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from flamecast.plugins import Control, Driver, DriverContext, DriverOptions, hookimpl
from flamecast.plugins.driver import MAX_PROMPT_CHARS
from flamecast.plugins.manager import make_plugin_host
from flamecast.server.control import (
    BadControl,
    ControlError,
    ControlTooLarge,
    DriverFailed,
    DriverReply,
    DriverSwitched,
    MalformedControl,
    NotSupported,
    SessionGone,
    apply_control,
    parse_text,
)


class BuggyDriver(Driver):
    """A plugin whose control() has a bug (a KeyError) or returns something not JSON-able."""

    name = "buggy"

    async def frames(self):
        raise NotImplementedError
        yield

    async def control(self, message: Control) -> Any:
        if message.kind == "prompt":
            return {"mood": message.data["mood"]}  # KeyError when 'mood' is missing
        if message.kind == "emotion":
            return {"when": object()}
        if message.kind == "option":
            return "done"
        return None


class _BuggyPlugin:
    @hookimpl
    def flamecast_register_drivers(self, register):
        register(BuggyDriver)


@pytest.fixture(scope="module")
def drivers():
    return make_plugin_host(extra_plugins=[("buggy", _BuggyPlugin())]).drivers


class Target:
    """A session as control sees it (``control.ControlTarget``), around one real driver."""

    def __init__(self, drivers, name: str, options: dict[str, Any] | None = None) -> None:
        self.id, self.state, self.switched = "s1", "running", []
        cls = drivers.get(name)
        self.driver = cls(cls.parse_options(options or {}), DriverContext(session_id=self.id))

    @property
    def driver_name(self) -> str:
        return self.driver.name

    async def driver_control(self, message: Control) -> Any:
        return await self.driver.control(message)

    def switch_driver(self, driver_cls: type[Driver], options: DriverOptions) -> None:
        self.switched.append((driver_cls.name, options))


async def _error(target: Target, body: Any, drivers) -> ControlError:
    with pytest.raises(ControlError) as info:
        await apply_control(target, body, drivers)
    return info.value


async def test_bad_values_in_data_are_a_422_that_names_the_driver_and_the_kind(drivers):
    target = Target(drivers, "text")
    exc = await _error(target, {"kind": "prompt", "text": "nod", "data": {"seconds": [1]}}, drivers)
    assert isinstance(exc, BadControl) and exc.status == 422
    assert "driver 'text'" in str(exc) and "'prompt'" in str(exc) and "list" in str(exc)
    exc = await _error(target, {"kind": "prompt", "text": "nod", "data": {"seconds": 99}}, drivers)
    assert exc.status == 422 and "seconds must be between" in str(exc)
    exc = await _error(target, {"kind": "option", "data": {"weights": "x"}}, drivers)
    assert exc.status == 422 and "cannot change while running" in str(exc)


async def test_a_driver_bug_becomes_a_500_with_the_reason_and_is_logged(drivers, caplog):
    target = Target(drivers, "buggy")
    with caplog.at_level(logging.ERROR, logger="flamecast.server.control"):
        exc = await _error(target, {"kind": "prompt", "text": "hi"}, drivers)
    assert isinstance(exc, DriverFailed) and exc.status == 500
    assert "driver 'buggy'" in str(exc) and "KeyError" in str(exc) and "mood" in str(exc)
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


@pytest.mark.parametrize("kind", ["emotion", "option"])
async def test_a_reply_that_is_no_json_object_is_a_driver_failure(drivers, kind):
    exc = await _error(Target(drivers, "buggy"), {"kind": kind}, drivers)
    assert isinstance(exc, DriverFailed) and "buggy" in str(exc)


async def test_replies_are_typed_and_keep_their_json_shape(drivers):
    reply = await apply_control(Target(drivers, "buggy"), {"kind": "interrupt"}, drivers)
    assert reply == DriverReply({}) and reply.as_json() == {"ok": True, "reply": {}}
    reply = await apply_control(Target(drivers, "text"), {"kind": "interrupt"}, drivers)
    assert reply.as_json() == {"ok": True, "reply": {"ok": True, "kind": "interrupt"}}


async def test_a_driver_that_takes_no_such_kind_is_409(drivers):
    exc = await _error(Target(drivers, "idle"), {"kind": "interrupt"}, drivers)
    assert isinstance(exc, NotSupported) and exc.status == 409 and "idle" in str(exc)


@pytest.mark.parametrize("body,cls,status,needle", [
    ([1, 2], MalformedControl, 400, "JSON object"),
    ("prompt", MalformedControl, 400, "JSON object"),
    ({"kind": "prompt", "text": "x" * (MAX_PROMPT_CHARS + 1)}, ControlTooLarge, 413, str(MAX_PROMPT_CHARS)),
    ({"kind": "dance"}, BadControl, 422, "'kind'"),
    ({"kind": "prompt", "txt": "hi"}, BadControl, 422, "'txt'"),
    ({"kind": "prompt", "data": 3}, BadControl, 422, "'data'"),
    ({"kind": "driver", "driver": "nope"}, BadControl, 422, "available"),
    ({"kind": "driver", "driver": 7}, BadControl, 422, "driver name"),
    ({"kind": "driver", "driver": "idle", "options": {"fps": -1}}, BadControl, 422, "'fps'"),
    ({"kind": "driver", "driver": "idle", "options": []}, BadControl, 422, "JSON object"),
    ({"kind": "driver", "driver": "idle", "text": "hi"}, BadControl, 422, "text"),
])
async def test_bad_messages_never_reach_the_driver(drivers, body, cls, status, needle):
    target = Target(drivers, "buggy")
    exc = await _error(target, body, drivers)
    assert type(exc) is cls and exc.status == status and needle in str(exc)
    assert target.switched == []


async def test_switching_the_driver(drivers):
    target = Target(drivers, "idle")
    reply = await apply_control(target, {"kind": "driver", "driver": "idle", "options": {"fps": 30}}, drivers)
    assert reply == DriverSwitched("idle") and reply.as_json() == {"ok": True, "driver": "idle"}
    assert [(name, options.fps) for name, options in target.switched] == [("idle", 30)]


async def test_a_session_that_ended_is_404(drivers):
    target = Target(drivers, "idle")
    target.state = "closed"
    exc = await _error(target, {"kind": "driver", "driver": "idle"}, drivers)
    assert isinstance(exc, SessionGone) and exc.status == 404 and "POST /api/sessions" in str(exc)
    assert target.switched == []


@pytest.mark.parametrize("text,needle", [("{broken", "malformed JSON"), (b"\xff", "UTF-8")])
def test_socket_text_that_is_not_json_is_400(text, needle):
    with pytest.raises(MalformedControl, match=needle) as info:
        parse_text(text)
    assert info.value.status == 400
    assert parse_text('{"kind": "interrupt"}') == {"kind": "interrupt"}


def test_every_control_error_status_is_in_the_api_docs():
    import flamecast.server.control as control

    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    table = doc[doc.index("## Control"):doc.index("### `GET /api/sessions/{id}/events`")]
    documented = {int(s) for s in re.findall(r"^\| `(\d{3})` \|", table, flags=re.M)}
    errors = [c for c in vars(control).values() if isinstance(c, type) and issubclass(c, ControlError)]
    assert {c.status for c in errors} == documented
