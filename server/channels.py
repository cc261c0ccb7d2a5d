"""Named channels: a stable name ("main") that points at whichever session holds it now.

A session takes a name when it is created with ``"channel": "main"`` or later (PATCH
/api/sessions/ID); the newest claim wins and the session that held the name before keeps
running, unnamed. The OBS page (``obs.html?channel=main``) asks ``GET /api/channels/main``
which session to show, and asks again when its stream ends, so an OBS source outlives Stop and
Start in the client, new sessions and server restarts.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class BadChannel(ValueError):
    """A channel name that is not 1-32 letters, digits, '-' or '_'."""


def parse_channel(value: object) -> str | None:
    """A channel name, or None for "no channel" (None or ""); BadChannel otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _NAME.match(value):
        raise BadChannel(f"field 'channel' must be 1-32 letters, digits, '-' or '_' (like \"main\"); got {value!r}")
    return value


class ChannelRegistry:
    """Channel name -> session id (one session per name, several names per session)."""

    def __init__(self) -> None:
        self._holders: dict[str, str] = {}

    def claim(self, name: str, session_id: str) -> str | None:
        """Give ``name`` to ``session_id``; returns the session that held it before (or None)."""
        previous = self._holders.get(name)
        self._holders[name] = session_id
        return previous if previous != session_id else None

    def release(self, session_id: str, name: str | None = None) -> list[str]:
        """Take ``name`` (every name when None) away from ``session_id``; returns those freed."""
        freed = [n for n, sid in self._holders.items() if sid == session_id and name in (None, n)]
        for n in freed:
            del self._holders[n]
        return freed

    def holder(self, name: str) -> str | None:
        return self._holders.get(name)

    def names_of(self, session_id: str) -> list[str]:
        return sorted(n for n, sid in self._holders.items() if sid == session_id)

    def as_dict(self) -> dict[str, str]:
        return dict(sorted(self._holders.items()))
