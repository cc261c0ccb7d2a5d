"""`flamecast serve` as a user runs it: a real process with its worker child."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flamecast.cli import build_parser
from flamecast.cli.serve import build_settings
from flamecast.plugins import CommandError
from flamecast.server.state import SESSIONS
from flamecast.server.worker_proc import FLAMECAST, alive

START_TIMEOUT = 120.0


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_the_local_workers_settings_come_from_a_worker_table_and_flags(tmp_path):
    config = tmp_path / "flamecast.toml"
    config.write_text('[worker]\ndevice = "cpu"\nweights-dir = "/models"\ncompile = "default"\n')
    settings = build_settings(_args("--config", str(config), "--compile", "reduce-overhead", "--data-dir", str(tmp_path)))
    assert (settings.worker.device, settings.worker.weights_dir, settings.worker.compile) == ("cpu", "/models", "reduce-overhead")
    assert settings.worker.args() == ("--weights-dir", "/models", "--compile", "reduce-overhead")
    assert settings.data_dir == str(tmp_path)
    config.write_text('[worker]\ndevise = "gpu"\n')
    with pytest.raises(CommandError, match="unknown worker setting.*devise"):
        build_settings(_args("--config", str(config)))
    config.write_text('[worker]\ncompile = "fast"\n')
    with pytest.raises(CommandError, match="worker.compile must be one of"):
        build_settings(_args("--config", str(config)))
    # what a compiled worker warms, batches and caches: the table, then flags over it
    config.write_text('[worker]\ncompile = "reduce-overhead"\nwarm = "live"\nmax_batch = 2\n')
    settings = build_settings(_args("--config", str(config), "--warm", "live,hq", "--compile-cache", "/cache"))
    assert settings.worker.args() == ("--compile", "reduce-overhead", "--warm", "live,hq", "--max-batch", "2",
                                      "--compile-cache", "/cache")
    config.write_text('[worker]\nmax_batch = 0\n')
    with pytest.raises(CommandError, match="worker.max_batch must be at least 1"):
        build_settings(_args("--config", str(config)))


def test_uploaded_portraits_survive_a_restart_in_the_data_folder(tmp_path):
    from flamecast.server.app import portrait_store
    from flamecast.server.settings import Settings

    from tests.server.conftest import face_png

    first = portrait_store(Settings(data_dir=str(tmp_path)))
    kept = first.add(face_png())
    again = portrait_store(Settings(data_dir=str(tmp_path)))
    assert again.get(kept.id).data == kept.data
    assert not hasattr(portrait_store(Settings()), "folder"), "no data folder: memory only"


def test_settings_come_from_defaults_then_config_then_flags(tmp_path):
    config = tmp_path / "flamecast.toml"
    config.write_text('max_sessions = 8\nidle_timeout = 5.5\ngenerator = "swatch"\n')
    settings = build_settings(_args("--config", str(config), "--max-sessions", "2"))
    assert (settings.max_sessions, settings.idle_timeout, settings.generator, settings.port) == (2, 5.5, "swatch", 8080)
    assert settings.token is None, "loopback needs no token"


@pytest.mark.parametrize("text,needle", [("max_sesions = 3", "unknown setting"), ("port = 'x'", "port"),
                                         ("port = [", "not valid TOML"), ("max_sessions = 0", "at least 1")])
def test_bad_config_is_a_usage_error(tmp_path, text, needle):
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(CommandError, match=needle):
        build_settings(_args("--config", str(config)))


def test_off_loopback_gets_a_token_unless_given():
    assert build_settings(_args("--host", "0.0.0.0")).token
    assert build_settings(_args("--host", "0.0.0.0", "--token", "abc")).token == "abc"


def test_a_generated_token_is_taken_as_a_value_on_a_command_line():
    # a token that started with "-" would read as an option: `flamecast record --token -x...` fails
    tokens = {build_settings(_args("--host", "0.0.0.0")).token for _ in range(200)}
    assert len(tokens) == 200 and all(re.fullmatch(r"[0-9a-f]{48}", t) for t in tokens)
    token = tokens.pop()
    assert build_parser().parse_args(["record", "--token", token, "out.mp4"]).token == token


def test_generator_flags_are_handed_to_the_local_worker():
    from flamecast.cli.serve import worker_args

    assert worker_args(_args()) == ()
    args = _args("--weights-dir", "/w", "--allow-random-weights", "--compile", "reduce-overhead")
    assert worker_args(args) == ("--weights-dir", "/w", "--allow-random-weights", "--compile", "reduce-overhead")
    # and `flamecast generator` accepts exactly those flags
    build_parser().parse_args(["generator", *worker_args(args)])


class Served:
    """A running `flamecast serve`: its URL, token and worker pid, read from its output."""

    def __init__(self, *argv: str) -> None:
        cmd = [*FLAMECAST, "serve", "--port", "0", *argv]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.url = self.token = None
        self.worker_pid = None
        deadline = time.monotonic() + START_TIMEOUT
        while self.url is None:
            line = self.proc.stdout.readline()
            assert line or self.proc.poll() is None, "serve exited:\n" + "".join(self.lines)
            assert time.monotonic() < deadline, "serve did not start:\n" + "".join(self.lines)
            self.lines.append(line)
            if m := re.search(r"generator worker \S+ \(pid (\d+)\)", line):
                self.worker_pid = int(m.group(1))
            if m := re.search(r"API token: (\S+)", line):
                self.token = m.group(1)
            if m := re.search(r"serving on (http://\S+?/)", line):
                self.url = m.group(1).replace("0.0.0.0", "127.0.0.1")

    def get(self, path: str, token: str | None = None):
        req = urllib.request.Request(self.url + path.lstrip("/"))
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_healthy(self, timeout: float = 60.0) -> int:
        """/healthz's status once it is not "warming" (a generator still warming up) any more."""
        deadline = time.monotonic() + timeout
        while True:
            code, body = self.get("/healthz")
            if code == 200 or json.loads(body)["worker"]["state"] != "warming" or time.monotonic() > deadline:
                return code
            time.sleep(0.2)

    def post(self, path: str, body: dict):
        req = urllib.request.Request(self.url + path.lstrip("/"), data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_serve_off_loopback_needs_the_token_and_sigterm_leaves_nothing_behind():
    served = Served("--host", "0.0.0.0", "--max-sessions", "2")
    try:
        assert served.worker_pid and alive(served.worker_pid)
        assert not served.url.endswith(":0/"), "the real port is printed"
        assert served.wait_healthy() == 200  # after the portrait generator's warm-up
        assert served.get("/api/plugins")[0] == 401
        status, body = served.get("/api/plugins", token=served.token)
        assert status == 200 and "idle" in body.decode()
        assert json.loads(served.get("/healthz")[1])["max_sessions"] == 2
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 0
        assert _wait_gone(served.worker_pid), "the worker outlived the server"
    finally:
        served.kill()
        if served.worker_pid and alive(served.worker_pid):
            os.kill(served.worker_pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_its_sessions_come_back():
    served = Served("--generator", "mesh")
    try:
        status, body = served.post("/api/sessions", {"driver": "idle", "size": 64})
        assert status == 201, body
        sid = json.loads(body)["id"]
        old = served.worker_pid
        os.kill(old, signal.SIGKILL)
        t0 = time.monotonic()
        deadline = t0 + 60
        while time.monotonic() < deadline:  # healthz goes 503 while it is down, then ok on the new worker
            code, body = served.get("/healthz")
            if code == 200 and json.loads(body)["worker"]["restarts"] >= 1:
                break
            time.sleep(0.2)
        assert code == 200, body
        assert served.proc.poll() is None, "the server keeps running"
        frames = 0
        while time.monotonic() < deadline and frames < 5:
            info = json.loads(served.get(f"/api/sessions/{sid}")[1])
            frames = info["stats"]["frames_in"]
            time.sleep(0.2)
        assert frames >= 1, info
    finally:
        served.kill()


def test_external_workers_need_keys_or_a_choice_of_plain_text(tmp_path):
    from flamecast.cli.serve import check_worker_keys
    from flamecast.plugins.publish import make_key_folder

    ext = ("--worker-input", "tcp://10.0.0.2:5555", "--worker-output", "tcp://10.0.0.2:5556")
    with pytest.raises(CommandError, match="--worker-keys DIR"):
        check_worker_keys(build_settings(_args(*ext)), external=True)
    check_worker_keys(build_settings(_args(*ext, "--worker-insecure")), external=True)
    keys = make_key_folder(tmp_path / "k")
    check_worker_keys(build_settings(_args(*ext, "--worker-keys", str(keys))), external=True)
    (keys / "server.key_secret").chmod(0o644)
    with pytest.raises(CommandError, match="chmod 600"):
        check_worker_keys(build_settings(_args(*ext, "--worker-keys", str(keys))), external=True)
    settings = build_settings(_args("--allow-origin", "https://studio.example:8443"))
    assert settings.allowed_origins == ("https://studio.example:8443",)
    with pytest.raises(CommandError, match="is not an origin"):
        build_settings(_args("--allow-origin", "studio.example"))


@pytest.mark.slow
def test_a_killed_server_takes_its_worker_down():
    served = Served()
    try:
        assert served.token is None and served.url.startswith("http://127.0.0.1:")
        assert served.get("/api/plugins")[0] == 200
        served.proc.kill()  # no chance to clean up: the worker must still go
        served.proc.wait()
        assert _wait_gone(served.worker_pid), "orphaned worker"
    finally:
        served.kill()
        if served.worker_pid and alive(served.worker_pid):
            os.kill(served.worker_pid, signal.SIGKILL)


def test_busy_port_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([*FLAMECAST, "serve", "--port", str(port),
                               "--worker-input", "tcp://127.0.0.1:9", "--worker-output", "tcp://127.0.0.1:9",
                               "--worker-insecure"],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "cannot listen" in proc.stderr and "--port" in proc.stderr


def test_record_writes_an_mp4(worker, tmp_path):
    import asyncio

    from flamecast.cli.record import RecordCommand, record

    from tests.server.conftest import running_app, settings_for

    async def go():
        async with running_app(settings_for(worker)) as http:
            cmd = RecordCommand(tmp_path / "out.mp4", str(http.make_url("/")), 2.0, "mosaic", None, None, {}, None)
            counts = await record(cmd)
            assert not http.app[SESSIONS].sessions
            return counts

    counts = asyncio.run(go())["frames"]
    assert counts["mosaic"] >= 30
    import av

    with av.open(str(tmp_path / "out.mp4")) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    assert (stream.width, stream.height) == (128, 64)
    assert len(frames) == counts["mosaic"]
    assert Path(tmp_path / "out.mp4").stat().st_size > 1000
