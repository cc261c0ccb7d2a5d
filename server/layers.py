"""Driver layers of a session, as clients ask for them: parsing layer specs and carrying out
layer actions (add, remove, move, mute), whichever way they come (session creation, the
``/layers`` routes, a ``{"kind": "layer"}`` control message).

Errors are ``control.BadControl`` (422) or ``control.NoSuchLayer`` (404) with a message that says
what to fix; every transport translates them like any other control error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from flamecast.plugins import Channel, Driver, DriverOptions
from flamecast.plugins.layers import EmotionMode
from flamecast.plugins.stack import BASE_LAYER, layer_channels

from .control import BadControl, DriverCatalog, resolve_driver

MAX_LAYERS = 6
LAYER_FIELDS = {"name", "driver", "options", "channels", "muted"}
ACTION_FIELDS = {"kind", "action", "name", "driver", "options", "channels", "muted", "index"}
ACTIONS = ("add", "remove", "move", "mute", "unmute")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class LayerRequest:
    """One validated layer: a name unique in the session, a driver, its options and the channel
    groups it owns."""

    name: str
    driver_cls: type[Driver]
    options: DriverOptions
    channels: frozenset[Channel]
    muted: bool = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "driver": self.driver_cls.name, "options": self.options.model_dump(),
                "channels": sorted(c.value for c in self.channels), "muted": self.muted}


class LayerTarget(Protocol):
    """What a session offers for layer actions."""

    def layer_names(self) -> list[str]: ...

    def add_layer(self, layer: LayerRequest, index: int | None) -> None: ...

    async def remove_layer(self, name: str) -> None: ...

    def move_layer(self, name: str, index: int) -> None: ...

    def mute_layer(self, name: str, muted: bool) -> None: ...


def parse_layer(drivers: DriverCatalog, spec: Any, taken: Sequence[str] = ()) -> LayerRequest:
    """One layer spec ``{"driver": ..., "options": {...}, "channels": [...], "name": ..., "muted": ...}``."""
    if not isinstance(spec, dict):
        raise BadControl('a layer must be a JSON object like {"driver": "microphone", "channels": ["jaw", "mouth"]}')
    extra = sorted(set(spec) - LAYER_FIELDS - {"kind", "action", "index"})
    if extra:
        raise BadControl(f"unknown layer field(s) {', '.join(extra)}; known: {', '.join(sorted(LAYER_FIELDS))}")
    driver_cls, options = resolve_driver(drivers, spec.get("driver"), spec.get("options"))
    name = spec.get("name", driver_cls.name)
    if not isinstance(name, str) or not _NAME.match(name) or name == BASE_LAYER:
        raise BadControl(f"layer name {name!r} must be 1-32 letters, digits, '-' or '_' (and not {BASE_LAYER!r})")
    if name in taken:
        raise BadControl(f"the session already has a layer named {name!r}; give this one another 'name'")
    channels = spec.get("channels")
    if channels is not None and (not isinstance(channels, list) or not all(isinstance(c, str) for c in channels)):
        raise BadControl("field 'channels' must be a list of channel groups: head, jaw, mouth, eyes, emotion")
    try:
        owned = layer_channels(driver_cls, channels)
    except ValueError as exc:
        raise BadControl(f"layer {name!r}: {exc}") from None
    muted = spec.get("muted", False)
    if not isinstance(muted, bool):
        raise BadControl("field 'muted' must be true or false")
    return LayerRequest(name, driver_cls, options, owned, muted)


def parse_layers(drivers: DriverCatalog, value: Any) -> tuple[LayerRequest, ...]:
    """The ``layers`` field of a new session: a list of layer specs, bottom first."""
    if not isinstance(value, list) or not value:
        raise BadControl("field 'layers' must be a non-empty list of layers, bottom first")
    if len(value) > MAX_LAYERS:
        raise BadControl(f"a session has at most {MAX_LAYERS} layers; got {len(value)}")
    layers: list[LayerRequest] = []
    for spec in value:
        layers.append(parse_layer(drivers, spec, [layer.name for layer in layers]))
    return tuple(layers)


def parse_emotion_mode(value: Any) -> EmotionMode:
    try:
        return EmotionMode(value if value is not None else EmotionMode.ADD.value)
    except ValueError:
        raise BadControl(f"field 'emotion' must be one of {', '.join(m.value for m in EmotionMode)}") from None


async def apply_layer_action(target: LayerTarget, body: dict[str, Any], drivers: DriverCatalog) -> dict[str, Any]:
    """Carry out ``{"kind": "layer", "action": ..., ...}``; returns the reply for the client."""
    extra = sorted(set(body) - ACTION_FIELDS)
    if extra:
        raise BadControl(f"unknown field(s) {', '.join(extra)} for kind 'layer'")
    action = body.get("action")
    if action not in ACTIONS:
        raise BadControl(f"field 'action' must be one of {', '.join(ACTIONS)}")
    if action == "add":
        names = target.layer_names()
        if len(names) - 1 >= MAX_LAYERS:
            raise BadControl(f"a session has at most {MAX_LAYERS} layers; remove one first")
        layer = parse_layer(drivers, body, names)
        target.add_layer(layer, _index(body, required=False))
        return {"ok": True, "action": "add", "layer": layer.describe()}
    name = _name(body)
    if action == "remove":
        await target.remove_layer(name)
    elif action == "move":
        target.move_layer(name, _index(body, required=True))
    else:
        target.mute_layer(name, action == "mute")
    return {"ok": True, "action": action, "name": name}


def _name(body: dict[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise BadControl("field 'name' must name a layer (GET /api/sessions/ID/layers lists them)")
    return name


def _index(body: dict[str, Any], *, required: bool) -> int | None:
    index = body.get("index")
    if index is None and not required:
        return None
    if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= MAX_LAYERS:
        raise BadControl(f"field 'index' must be a position from 1 (just above the base layer) to {MAX_LAYERS}")
    return index
