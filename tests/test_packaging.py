"""``pip install .`` (not only editable) installs every folder as flamecast.<folder>."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("plugins", "drivers", "renderer", "server", "client_demo")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
                   check=True)
    (wheel,) = out.glob("flamecast-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_every_package_and_shipped_file_is_in_the_wheel(wheel_names):
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*"):
            if "__pycache__" in path.parts or path.is_dir():
                continue
            if path.suffix in (".py", ".html", ".js", ".css", ".json", ".safetensors", ".npz", ".png", ".jpg"):
                rel = path.relative_to(ROOT).as_posix()
                assert f"flamecast/{rel}" in wheel_names, f"{rel} is not installed by `pip install .`"


def test_the_wheel_declares_the_console_script_and_builtin_entry_points(wheel_names):
    (entry_points,) = [n for n in wheel_names if n.endswith(".dist-info/entry_points.txt")]
    assert entry_points
