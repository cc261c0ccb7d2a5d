"""Registers a second driver named "idle", a non-driver, and then raises."""

from flamecast.plugins import hookimpl
from flamecast.plugins.driver import Driver


class OtherIdle(Driver):
    name = "idle"

    async def frames(self):
        yield


@hookimpl
def flamecast_register_drivers(register):
    register(OtherIdle)
    register(object)


@hookimpl
def flamecast_session_started(session):
    raise RuntimeError("observer bug")
