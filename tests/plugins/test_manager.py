"""The plugin host: entry points, allow/block lists, failures reported and skipped."""

from __future__ import annotations

import importlib.metadata as md

import pytest

from flamecast.plugins import SessionInfo
from flamecast.plugins import manager as M

PKG = "tests.plugins.fake_plugins"


def _eps(*pairs):
    return [md.EntryPoint(name, value, M.ENTRY_POINT_GROUP) for name, value in pairs]


@pytest.fixture
def entry_points(monkeypatch):
    def set_(*pairs):
        monkeypatch.setattr(M, "_entry_points", lambda: _eps(*pairs))

    return set_


def test_builtin_idle_is_found_through_entry_points():
    host = M.make_plugin_host(filter=M.PluginFilter())
    assert "idle" in host.drivers
    assert host.drivers.owners["idle"] == "idle"
    info = {p.name: p for p in host.plugins}["idle"]
    assert info.version and info.hooks == ["flamecast_register_drivers"]


def test_broken_plugins_are_reported_and_skipped(entry_points):
    entry_points(("good", f"{PKG}.good"), ("broken", f"{PKG}.broken_import"), ("typo", f"{PKG}.typo"),
                 ("idle", "flamecast.drivers.idle"), ("clash", f"{PKG}.clash"))
    host = M.make_plugin_host(filter=M.PluginFilter())
    assert host.drivers.names() == ["idle", "still"]
    assert host.drivers.owners["idle"] == "idle"
    errors = {f.name: f.error for f in host.failures}
    assert "not installed" in errors["broken"]
    assert "flamecast_register_driverz" in errors["typo"]
    assert "already registered" in errors["clash"] or "not a Driver" in errors["clash"]
    assert sorted(p.name for p in host.plugins) == ["clash", "good", "idle"]


def test_allow_and_block_lists(entry_points):
    entry_points(("good", f"{PKG}.good"), ("idle", "flamecast.drivers.idle"))
    only_good = M.make_plugin_host(filter=M.PluginFilter.from_env({M.ALLOW_ENV: "good"}))
    assert only_good.drivers.names() == ["still"]
    no_good = M.make_plugin_host(filter=M.PluginFilter.from_env({M.BLOCK_ENV: " good , other"}))
    assert no_good.drivers.names() == ["idle"]


def test_unknown_driver_lists_available():
    host = M.make_plugin_host(filter=M.PluginFilter())
    with pytest.raises(KeyError, match="unknown driver 'nope'; available: .*idle"):
        host.drivers.get("nope")


def test_lifecycle_hooks_reach_observers_and_a_raising_observer_is_contained(entry_points):
    from tests.plugins.fake_plugins import good

    entry_points(("good", f"{PKG}.good"), ("clash", f"{PKG}.clash"))
    host = M.make_plugin_host(filter=M.PluginFilter())
    good.SEEN.clear()
    info = SessionInfo(id="s1", driver="still", generator="mesh")
    host.notify("flamecast_session_started", session=info)
    host.notify("flamecast_session_ended", session=info, reason="deleted")
    assert good.SEEN == [("started", "s1"), ("ended", "s1", "deleted")]


def test_as_dict_is_json_ready():
    import json

    summary = M.make_plugin_host(filter=M.PluginFilter()).as_dict()
    data = json.loads(json.dumps(summary))
    idle = [d for d in data["drivers"] if d["name"] == "idle"][0]
    assert idle["options"]["properties"]["fps"]["type"] == "number"


def test_generator_settings_are_typed_and_mappings_are_checked():
    from flamecast.plugins import GeneratorSettings

    s = GeneratorSettings.of({"device": "cuda", "warm_profiles": "live, hq", "max_batch": 2})
    assert (s.device, s.warm_profiles, s.max_batch, s.detect_face) == ("cuda", ("live", "hq"), 2, True)
    assert GeneratorSettings.of(None) == GeneratorSettings() and GeneratorSettings.of(s) is s
    with pytest.raises(TypeError, match="unknown generator setting.*weight_dir"):
        GeneratorSettings.of({"weight_dir": "/w"})
