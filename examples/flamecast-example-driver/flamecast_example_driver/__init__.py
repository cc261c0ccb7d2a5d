"""flamecast plugin: registers the ``lookaround`` driver."""

from flamecast.plugins import hookimpl

from .driver import LookAroundDriver, LookAroundOptions

__all__ = ["LookAroundDriver", "LookAroundOptions"]


@hookimpl
def flamecast_register_drivers(register):
    register(LookAroundDriver)


@hookimpl
def flamecast_register_commands(register):
    from .commands import EVAL

    register(EVAL)
