"""``flamecast generator``: the ready file, signals and flags reaching the worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from .helpers import TIMEOUT, Client

FLAMECAST = [sys.executable, "-m", "flamecast.cli"]


def test_ready_file_and_cli_signal(tmp_path):
    from flamecast.plugins.publish import load_keys, make_key_folder

    keys = make_key_folder(tmp_path / "keys")
    ready = tmp_path / "worker.json"
    env = {**os.environ, "FLAMECAST_PLUGINS_ALLOW": "none"}
    proc = subprocess.Popen(
        [*FLAMECAST, "generator", "--input", "tcp://127.0.0.1:0",
         "--output", "tcp://127.0.0.1:0", "--ready-file", str(ready), "--keys", str(keys)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["pid"] == proc.pid
        assert info["input"].startswith("tcp://127.0.0.1:") and not info["input"].endswith(":0")
        assert info["public_key"] == load_keys(keys, "worker").public.decode()
        c = Client(info, keys=load_keys(keys, "server"))
        try:  # no backends registered: a clear error, and the process keeps serving
            status = c.open("s", generator="mesh")
            assert "unknown generator 'mesh'" in status.meta["error"]
        finally:
            c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_needs_keys_or_insecure(tmp_path):
    proc = subprocess.run([*FLAMECAST, "generator", "--input", "tcp://127.0.0.1:0", "--output", "tcp://127.0.0.1:0"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and "--keys DIR" in proc.stderr and "--insecure" in proc.stderr
    (tmp_path / "k").mkdir()
    proc = subprocess.run([*FLAMECAST, "generator", "--make-keys", str(tmp_path / "k")], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert oct((tmp_path / "k" / "worker.key_secret").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "k").stat().st_mode & 0o777) == "0o700"
    (tmp_path / "k" / "worker.key_secret").chmod(0o644)
    proc = subprocess.run([*FLAMECAST, "generator", "--keys", str(tmp_path / "k")], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 2 and "chmod 600" in proc.stderr


def test_cli_rejects_unknown_backend():
    proc = subprocess.run(
        [*FLAMECAST, "generator", "--backend", "nope",
         "--input", "tcp://127.0.0.1:0", "--output", "tcp://127.0.0.1:0"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert proc.returncode == 2 and "unknown --backend nope" in proc.stderr


def test_generator_flags_reach_every_generator():
    from flamecast.cli import build_parser
    from flamecast.cli.generator import settings_from_args

    args = build_parser().parse_args(["generator", "--weights-dir", "/w", "--allow-random-weights", "--compile",
                                      "reduce-overhead", "--insecure"])
    from flamecast.plugins import GeneratorSettings

    extra = settings_from_args(args).generator_settings
    assert extra == GeneratorSettings(weights_dir="/w", allow_random_weights=True, compile="reduce-overhead")
    plain = settings_from_args(build_parser().parse_args(["generator", "--insecure", "--warm", "live,hq"])).generator_settings
    assert plain == GeneratorSettings(warm_profiles=("live", "hq"))


def test_the_worker_freezes_the_heap_after_warm_up_unless_told_not_to():
    from flamecast.cli import build_parser
    from flamecast.cli.generator import settings_from_args

    parse = build_parser().parse_args
    assert settings_from_args(parse(["generator", "--insecure"])).gc_freeze is True
    assert settings_from_args(parse(["generator", "--insecure", "--no-gc-freeze"])).gc_freeze is False
