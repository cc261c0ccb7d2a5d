"""Validation of what arrives on the worker's input socket.

``wire.unpack`` and ``wire.frame_from_envelope`` check the envelope and a flame frame's layout;
this module checks a ``session.open``: the generator is one this worker serves, the options are
valid for it, the portrait is a byte buffer. A request that fails says what to fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from flamecast.plugins import Generator
from flamecast.plugins import protocol as wire
from flamecast.plugins.driver import format_validation_error


class OpenRefused(Exception):
    """A session.open that cannot be served; the message goes back to the session."""


@dataclass(frozen=True)
class OpenRequest:
    """A valid session.open. Two requests with the same ``key`` open the same session."""

    generator: str
    options: Any  # the generator's Options model
    portrait: bytes | None  # an encoded image file; None = the default portrait

    @cached_property
    def key(self) -> tuple[str, str, str | None]:
        options = json.dumps(self.options.model_dump(mode="json"), sort_keys=True)
        portrait = None if self.portrait is None else hashlib.sha256(self.portrait).hexdigest()
        return self.generator, options, portrait


def read_open(env: wire.Envelope, *, default: str, served: tuple[str, ...], registry) -> OpenRequest:
    """The request in a session.open envelope; ``OpenRefused`` says what is wrong with it.

    ``served`` limits the generators to those names (empty: every one in ``registry``).
    """
    name = env.meta.get("generator") or default
    raw_options = env.meta.get("options", {})
    if not isinstance(name, str) or not isinstance(raw_options, dict):
        raise OpenRefused("session.open meta needs generator (a name) and options (a map)")
    options = _options(generator_class(name, served, registry), name, raw_options)
    problem = wire.view_request_error(getattr(options, "views", None), getattr(options, "size", None))
    if problem is not None:  # the session could make video the wire refuses
        raise OpenRefused(f"generator {name!r}: {problem}")
    return OpenRequest(name, options, _portrait(env))


def generator_class(name: str, served: tuple[str, ...], registry) -> type[Generator]:
    if (served and name not in served) or name not in registry:
        names = ", ".join(served or registry.names()) or "none"
        raise OpenRefused(f"unknown generator {name!r}; this worker serves: {names}")
    return registry.get(name)


def _options(cls: type[Generator], name: str, raw: dict) -> Any:
    from pydantic import ValidationError

    problem = wire.view_request_error(raw.get("views"), None)  # before the generator parses ids
    if problem is not None:
        raise OpenRefused(f"generator {name!r}: {problem}")
    try:
        return cls.Options.model_validate(raw)
    except ValidationError as exc:
        raise OpenRefused(f"generator {name!r}: {format_validation_error(exc)}") from None


def _portrait(env: wire.Envelope) -> bytes | None:
    portrait = env.buffers.get("portrait")
    if portrait is None:
        return None
    if portrait.dtype != np.uint8 or portrait.ndim != 1:
        raise OpenRefused("the portrait buffer must be the encoded image file as 1-D uint8 bytes")
    return portrait.tobytes()
