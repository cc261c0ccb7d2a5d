"""The plugin manager: built by a factory, never at import time.

Plugins are found through the ``flamecast`` entry-point group; built-ins are registered there
too. ``FLAMECAST_PLUGINS_ALLOW`` (comma-separated names) loads only those plugins;
``FLAMECAST_PLUGINS_BLOCK`` skips the named ones. A plugin that fails to import, or whose hook
raises, is reported with its name and error and skipped; the host keeps running.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Generic, Iterable, Mapping, TypeVar

import pluggy

from . import hookspecs
from .commands import Command
from .driver import Driver
from .generator import Generator, Output

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "flamecast"
ALLOW_ENV = "FLAMECAST_PLUGINS_ALLOW"
BLOCK_ENV = "FLAMECAST_PLUGINS_BLOCK"

T = TypeVar("T")


@dataclass(frozen=True)
class PluginFilter:
    """Which plugins to load: ``allow`` None means all; ``block`` names are skipped."""

    allow: frozenset[str] | None = None
    block: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PluginFilter:
        env = os.environ if environ is None else environ

        def names(key: str) -> frozenset[str]:
            return frozenset(n.strip() for n in env.get(key, "").split(",") if n.strip())

        allow = names(ALLOW_ENV)
        return cls(allow=allow or None, block=names(BLOCK_ENV))

    def admits(self, name: str) -> bool:
        return name not in self.block and (self.allow is None or name in self.allow)


@dataclass(frozen=True)
class PluginFailure:
    name: str
    error: str


@dataclass
class PluginInfo:
    name: str
    version: str | None
    hooks: list[str] = field(default_factory=list)


class Registry(Generic[T]):
    """Name -> class registry for one kind of thing (drivers, generators, outputs)."""

    def __init__(self, kind: str, base: type) -> None:
        self.kind, self.base = kind, base
        self._items: dict[str, type] = {}
        self.owners: dict[str, str] = {}

    def register_for(self, plugin: str):
        def register(cls: type) -> None:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"{cls!r} is not a {self.base.__name__} subclass")
            name = getattr(cls, "name", None)
            if not isinstance(name, str) or not name:
                raise TypeError(f"{cls.__name__} has no name")
            if name in self._items and self._items[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self.owners[name]!r}")
            self._items[name] = cls
            self.owners[name] = plugin

        return register

    def get(self, name: str) -> type:
        """The class registered as ``name``; KeyError listing the available names."""
        try:
            return self._items[name]
        except KeyError:
            available = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; available: {available}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def items(self) -> Iterable[tuple[str, type]]:
        return sorted(self._items.items())


class CommandRegistry:
    """Command path -> ``Command``, with the plugin that registered each."""

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        self._items: dict[tuple[str, ...], Command] = {}
        self.owners: dict[tuple[str, ...], str] = {}
        self.reserved = frozenset(reserved)

    def register_for(self, plugin: str):
        def register(command: object) -> None:
            if not isinstance(command, Command):
                raise TypeError(f"{command!r} is not a flamecast.plugins.Command")
            if command.path in self._items:
                raise ValueError(f"command {command.name!r} is already registered by {self.owners[command.path]!r}")
            if len(command.path) == 1 and command.path[0] in self.reserved:
                raise ValueError(f"command {command.name!r} is one of flamecast's own commands")
            self._items[command.path] = command
            self.owners[command.path] = plugin

        return register

    def items(self) -> list[tuple[tuple[str, ...], Command]]:
        return sorted(self._items.items())

    def names(self) -> list[str]:
        return [c.name for _, c in self.items()]


@dataclass
class PluginHost:
    """The loaded plugin manager with its registries and what failed to load."""

    pm: pluggy.PluginManager
    plugins: list[PluginInfo]
    failures: list[PluginFailure]
    drivers: Registry[Driver]
    generators: Registry[Generator]
    outputs: Registry[Output]
    commands: CommandRegistry = field(default_factory=CommandRegistry)

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call an observer hook on every plugin; a plugin that raises is logged, not fatal."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:  # a plugin must not take the host down
                log.warning("plugin %s failed in %s: %s", impl.plugin_name, hook, exc)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary for ``flamecast plugins --json`` and ``GET /api/plugins``."""
        return {
            "plugins": [vars(p) for p in self.plugins],
            "failures": [vars(f) for f in self.failures],
            "drivers": [
                {**cls.describe(), "plugin": self.drivers.owners[name]} for name, cls in self.drivers.items()
            ],
            "generators": [
                {"name": name, "description": cls.description, "plugin": self.generators.owners[name],
                 "options": cls.Options.model_json_schema()}
                for name, cls in self.generators.items()
            ],
            "outputs": [
                {"name": name, "description": cls.description, "plugin": self.outputs.owners[name]}
                for name, cls in self.outputs.items()
            ],
            "commands": [
                {"name": cmd.name, "help": cmd.help, "plugin": self.commands.owners[path]}
                for path, cmd in self.commands.items()
            ],
        }


def _entry_points() -> list[md.EntryPoint]:
    return sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _load_entry_points(pm: pluggy.PluginManager, filt: PluginFilter) -> tuple[list[PluginInfo], list[PluginFailure]]:
    infos, failures, seen = [], [], set()
    for ep in _entry_points():
        if ep.name in seen or not filt.admits(ep.name):
            continue
        seen.add(ep.name)
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # any import-time failure: report and skip
            failures.append(PluginFailure(ep.name, f"{exc.__class__.__name__}: {exc}"))
            log.warning("plugin %s failed to load: %s", ep.name, exc)
            continue
        version = ep.dist.version if ep.dist is not None else None
        infos.append(PluginInfo(ep.name, version))
    return infos, failures


def _collect(pm: pluggy.PluginManager, hook: str, registry: Registry, failures: list[PluginFailure]) -> None:
    for impl in getattr(pm.hook, hook).get_hookimpls():
        register = registry.register_for(impl.plugin_name)

        def safe_register(cls: type, _register=register, _name=impl.plugin_name) -> None:
            try:
                _register(cls)
            except (TypeError, ValueError) as exc:
                failures.append(PluginFailure(_name, f"{hook}: {exc}"))

        try:
            impl.function(register=safe_register)
        except Exception as exc:
            failures.append(PluginFailure(impl.plugin_name, f"{hook}: {exc.__class__.__name__}: {exc}"))


def _check_pending(pm: pluggy.PluginManager, failures: list[PluginFailure]) -> None:
    """Unregister plugins that implement hooks no spec defines (typos), reporting each."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            failures.append(PluginFailure(name, str(exc)))
            pm.unregister(exc.plugin)


def make_plugin_host(
    *,
    filter: PluginFilter | None = None,
    extra_plugins: Iterable[tuple[str, object]] = (),
    load_entry_points: bool = True,
    reserved_commands: Iterable[str] = (),
) -> PluginHost:
    """Build the plugin manager, load entry points, check hook signatures, fill registries.

    ``extra_plugins`` are ``(name, module_or_object)`` pairs registered besides the entry
    points (tests use this). ``reserved_commands`` are the host's own one-word commands, which
    no plugin may take.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    filt = filter if filter is not None else PluginFilter.from_env()
    infos, failures = _load_entry_points(pm, filt) if load_entry_points else ([], [])
    for name, plugin in extra_plugins:
        pm.register(plugin, name=name)
        infos.append(PluginInfo(name, None))
    _check_pending(pm, failures)
    for info in infos:
        plugin = pm.get_plugin(info.name)
        if plugin is not None:
            info.hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
    infos = [i for i in infos if pm.get_plugin(i.name) is not None]
    host = PluginHost(pm, infos, failures, Registry("driver", Driver), Registry("generator", Generator),
                      Registry("output", Output), CommandRegistry(reserved_commands))
    _collect(pm, "flamecast_register_drivers", host.drivers, failures)
    _collect(pm, "flamecast_register_generators", host.generators, failures)
    _collect(pm, "flamecast_register_outputs", host.outputs, failures)
    _collect(pm, "flamecast_register_commands", host.commands, failures)
    return host
