"""``flamecast plugins`` and ``flamecast driver`` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from flamecast.cli import main


def test_driver_idle_out_writes_five_seconds(tmp_path, capsys):
    out = tmp_path / "x.npz"
    assert main(["driver", "idle", "--seconds", "5", "--out", str(out)]) == 0
    data = np.load(out)
    assert data["t"].shape == (125,) and np.all(np.diff(data["t"]) > 0)
    np.testing.assert_allclose(data["t"][-1], 124 / 25)
    assert data["pose"].shape == (125, 15) and data["expression"].shape[0] == 125
    assert data["eyelids"].shape == (125, 2) and data["eyelids"].max() > 0.5
    assert list(data["expression_names"][:2]) == ["smile", "frown"]


def test_driver_speaks_the_head_it_is_given(tmp_path):
    out = tmp_path / "flame.npz"
    assert main(["driver", "idle", "--head", "flame2023", "--seconds", "1", "--out", str(out)]) == 0
    data = np.load(out)
    assert data["expression"].shape == (25, 100) and "expression_names" not in data.files


def test_driver_options_from_strings(tmp_path):
    out = tmp_path / "x.npz"
    assert main(["driver", "idle", "-o", "fps=50", "-o", "seed=2", "--seconds", "1", "--out", str(out)]) == 0
    assert np.load(out)["t"].shape == (50,)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["driver", "nope", "--out", "x.npz"], "unknown driver 'nope'; available: .*idle"),
        (["driver", "idle", "-o", "fps=fast", "--out", "x.npz"], "option 'fps': Input should be a valid number"),
        (["driver", "idle", "-o", "fps", "--out", "x.npz"], "not KEY=VALUE"),
        (["driver", "idle", "-o", "volume=3", "--out", "x.npz"], "option 'volume': unknown option"),
        (["driver", "idle", "--connect", "tcp://127.0.0.1:1"], "--connect needs --session"),
    ],
)
def test_bad_command_lines_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    import re

    assert re.search(message, capsys.readouterr().err)


def test_plugins_json_in_a_subprocess():
    out = subprocess.run([sys.executable, "-m", "flamecast.cli", "plugins", "--json"],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert any(p["name"] == "idle" and p["version"] for p in data["plugins"])
    assert any(d["name"] == "idle" for d in data["drivers"])


async def test_driver_connect_publishes_to_a_zeromq_endpoint(tmp_path):
    import asyncio

    import zmq
    import zmq.asyncio

    from flamecast.plugins import protocol as wire

    ctx = zmq.asyncio.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flamecast.cli", "driver", "idle", "--connect", f"tcp://127.0.0.1:{port}",
        "--session", "abc", "--seconds", "3", stdout=asyncio.subprocess.PIPE)
    frames = []
    try:
        while len(frames) < 20:
            env = wire.unpack(await asyncio.wait_for(sub.recv_multipart(), 20))
            frames.append(wire.frame_from_envelope(env))
    finally:
        await proc.wait()
        sub.close()
        ctx.term()
    assert all(f.session_id == "abc" for f in frames)
    seqs = [f.seq for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert proc.returncode == 0
