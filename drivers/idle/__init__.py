"""Built-in idle driver plugin (entry point ``idle`` in the ``flamecast`` group)."""

from flamecast.plugins import hookimpl

from .driver import IdleDriver, IdleOptions


@hookimpl
def flamecast_register_drivers(register):
    register(IdleDriver)


__all__ = ["IdleDriver", "IdleOptions"]
