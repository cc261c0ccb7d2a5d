"""The whole microphone path: speech from a WAV file pushed to the server, the microphone layer
moving the mouth with it, and the sound arriving at an aiortc client as the session's audio track."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import numpy as np
import pytest

from flamecast.plugins import pose_slice
from flamecast.server.api_client import FlamecastClient
from flamecast.server.state import SESSIONS

from .conftest import running_app, settings_for

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (CI installs it)")


def _speech(path) -> np.ndarray:
    """espeak-ng's speech read from its WAV file as int16 mono at 16 kHz."""
    import av

    subprocess.run(["espeak-ng", "-s", "140", "-w", str(path), "Hello. Mama made a pie. Open wide, ah."],
                   check=True, capture_output=True)
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        return np.concatenate([f.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
                               for f in resampler.resample(frame)])


async def test_a_wav_file_moves_the_mouth_and_reaches_the_client_as_sound(mesh_worker, tmp_path):
    pcm = _speech(tmp_path / "speech.wav")
    settings = settings_for(mesh_worker, generator="mesh", size=64, open_timeout=120)
    async with running_app(settings) as http, FlamecastClient(str(http.make_url("/"))) as client:
        info = await client.create_session(views=["front"], layers=[{"driver": "microphone", "options": {"source": "client"}}])
        session = http.app[SESSIONS].get(info["id"])
        async with await client.connect(info["id"], tracks=["front"], audio=True) as conn:
            push = asyncio.ensure_future(client.push_audio(info["id"], pcm, rate=16000))
            jaws, sound = [], []
            async with asyncio.timeout(60):
                while not push.done() or len(sound) < 50:
                    frame = await conn.recv_audio(timeout=10)
                    sound.append(float(np.abs(frame.to_ndarray()).mean()))
                    if session.stack.last_frame is not None:
                        jaws.append(float(session.stack.last_frame.pose[pose_slice("jaw").start]))
            await push
    assert max(sound) > 300, "the speech did not come through as the session's audio track"
    assert max(jaws) > 0.1 and np.std(jaws) > 0.03, "the mouth did not move with the speech"
    assert min(jaws) < 0.03, "the mouth never closed (pauses, m, p)"
