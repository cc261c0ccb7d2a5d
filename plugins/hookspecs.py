"""Every flamecast hook, in one place.

Hooks register things and observe the session lifecycle. Per-frame work never happens in a
hook: it lives in driver, generator and output objects. Hooks are called with keyword
arguments; a hook may gain arguments in a later version, never lose them.
"""

from __future__ import annotations

from typing import Callable

import pluggy

PROJECT = "flamecast"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def flamecast_register_drivers(register: Callable[[type], None]) -> None:
    """Register driver classes.

    Parameters:
        register: call ``register(DriverClass)`` once per ``flamecast.plugins.Driver``
            subclass the plugin provides. A name clash or a class that is not a Driver is
            reported and skipped.

    Returns: nothing.

    Called once when the host builds its plugin registry (server start, ``flamecast
    plugins``, ``flamecast driver``).
    """


@hookspec
def flamecast_register_generators(register: Callable[[type], None]) -> None:
    """Register generator backends.

    Parameters:
        register: call ``register(GeneratorClass)`` once per ``flamecast.plugins.Generator``
            subclass the plugin provides.

    Returns: nothing.

    Called once when a generator worker or the host builds its registry.
    """


@hookspec
def flamecast_register_outputs(register: Callable[[type], None]) -> None:
    """Register output sinks (recorders, virtual cameras, ...).

    Parameters:
        register: call ``register(OutputClass)`` once per ``flamecast.plugins.Output``
            subclass the plugin provides.

    Returns: nothing.

    Called once when the server builds its registry.
    """


@hookspec
def flamecast_register_commands(register: Callable[[object], None]) -> None:
    """Register command-line commands.

    Parameters:
        register: call ``register(Command(...))`` once per ``flamecast.plugins.Command`` the
            plugin provides: ``("train", "text")`` becomes ``flamecast train text``,
            ``("doctor",)`` becomes ``flamecast doctor``. A path another plugin or the host
            already uses is reported and skipped.

    Returns: nothing.

    Called once when ``flamecast`` builds its argument parser. Keep the plugin module's import
    light: a command's heavy imports belong inside its ``run``.
    """


@hookspec
def flamecast_session_started(session) -> None:
    """Observe a session that has started.

    Parameters:
        session: a ``flamecast.plugins.SessionInfo`` (id, driver, generator, views, profile,
            created time). Read-only.

    Returns: nothing.

    Called once per session, after its driver is running. An exception is logged and does
    not affect the session.
    """


@hookspec
def flamecast_session_ended(session, reason: str) -> None:
    """Observe a session that has ended.

    Parameters:
        session: the ``SessionInfo`` given to ``flamecast_session_started``.
        reason: why it ended: "deleted", "client-gone", "shutdown" or "error: ...".

    Returns: nothing.

    Called once per session, after its driver has stopped. An exception is logged and does
    not affect the host.
    """
