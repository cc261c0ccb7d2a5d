"""docs/plugins.md's tutorial is a working plugin: its code blocks marked ``file=PATH`` are
written out, installed as a distribution, listed by ``flamecast plugins``, run from the CLI and
tested with their own tests (pytest-asyncio auto mode, as the tutorial's pyproject sets)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
BLOCK = re.compile(r"^```\w+ file=(\S+)\n(.*?)^```", re.S | re.M)


def doc_files() -> dict[str, str]:
    return {path: body for path, body in BLOCK.findall(DOC.read_text())}


def test_the_tutorial_has_every_file_of_a_plugin():
    files = doc_files()
    assert set(files) == {"pyproject.toml", "flamecast_nod/__init__.py", "flamecast_nod/driver.py", "tests/test_nod.py"}
    assert 'asyncio_mode = "auto"' in files["pyproject.toml"]
    assert "[project.entry-points.flamecast]" in files["pyproject.toml"]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("flamecast-nod")
    for path, body in doc_files().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(body)
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(root)], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return root, env


def _flamecast(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flamecast.cli", *args], env=env, capture_output=True, text=True)


def test_the_tutorial_plugin_installs_lists_and_runs(plugin, tmp_path):
    root, env = plugin
    listed = _flamecast(env, "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert "nod" in {p["name"] for p in data["plugins"]}
    nod = next(d for d in data["drivers"] if d["name"] == "nod")
    assert nod["channels"] == ["emotion", "eyes", "head"] and "speed" in nod["options"]["properties"]
    assert "eval nod" in {c["name"] for c in data["commands"]}
    out = tmp_path / "nod.npz"
    ran = _flamecast(env, "driver", "nod", "-o", "speed=2", "-o", "fps=50", "--seconds", "1", "--out", str(out))
    assert ran.returncode == 0, ran.stderr
    pose = np.load(out)["pose"]
    assert pose.shape == (50, 15) and np.ptp(pose[:, 3]) > 0.2  # the neck pitch swings
    assert "pitch from" in _flamecast(env, "eval", "nod", "--seconds", "1").stdout
    bad = _flamecast(env, "eval", "nod", "--seconds", "0")
    assert bad.returncode == 2 and "--seconds must be in (0, 60]" in bad.stderr


def test_the_tutorial_tests_pass(plugin):
    root, env = plugin
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                            env=env, cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
