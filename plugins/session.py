"""SessionInfo: the read-only view of a session that lifecycle hooks receive."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SessionInfo:
    """A session as plugins see it.

    Attributes:
        id: the session id (also the ZeroMQ topic of its frames).
        driver: the driver's name.
        generator: the generator backend's name.
        views: the view ids streamed.
        profile: the generator profile ("" when the generator has none).
        created_ns: wall-clock creation time.
        options: the driver's validated options as a dict.
    """

    id: str
    driver: str
    generator: str
    views: tuple[str, ...] = ()
    profile: str = ""
    created_ns: int = 0
    options: dict[str, Any] = field(default_factory=dict)
