"""The example third-party plugin installs as a separate distribution and shows up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flamecast-example-driver"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def _flamecast(env, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flamecast.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, check=True)


def test_plugin_list_shows_the_example_with_its_version(installed):
    data = json.loads(_flamecast(installed, "plugins", "--json").stdout)
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins["lookaround"]["version"] == "0.1.0"
    assert plugins["lookaround"]["hooks"] == ["flamecast_register_commands", "flamecast_register_drivers"]
    assert "idle" in plugins
    assert {"lookaround", "idle"} <= {d["name"] for d in data["drivers"]}


def test_the_example_driver_runs_from_the_cli(installed, tmp_path):
    out = tmp_path / "look.npz"
    _flamecast(installed, "driver", "lookaround", "-o", "period=0.5", "--seconds", "2", "--out", str(out))
    pose = np.load(out)["pose"]
    assert pose.shape == (50, 15) and np.ptp(pose[:, 4]) > 0.05  # the neck yaw moves


def test_the_examples_command_is_listed_and_runs(installed):
    assert "lookaround" in _flamecast(installed, "eval", "--help").stdout
    report = json.loads(_flamecast(installed, "eval", "lookaround", "--seconds", "4").stdout)
    assert report["frames"] == 100 and report["yaw_max"] - report["yaw_min"] > 0.05
    bad = subprocess.run([sys.executable, "-m", "flamecast.cli", "eval", "lookaround", "--seconds", "0"],
                         env=installed, capture_output=True, text=True)
    assert bad.returncode == 2 and "--seconds must be in (0, 600]" in bad.stderr


def test_blocking_the_example_hides_it(installed):
    env = {**installed, "FLAMECAST_PLUGINS_BLOCK": "lookaround"}
    data = json.loads(_flamecast(env, "plugins", "--json").stdout)
    assert "lookaround" not in {p["name"] for p in data["plugins"]}
    assert "eval lookaround" not in {c["name"] for c in data["commands"]}


def test_the_examples_own_tests_pass(installed):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                            env=installed, cwd=EXAMPLE, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
