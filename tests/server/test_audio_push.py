"""Audio pushed over the session's audio socket: formats decode to int16 PCM, bad input is refused
with a reason, and the chunks reach the layers that take audio."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from flamecast.plugins import Driver, FlameFrame, hookimpl
from flamecast.server.audio_push import AudioPush, AudioPushError, PushFormat, decode_pcm, mulaw_to_int16
from flamecast.server.api_client import FlamecastClient
from flamecast.server.state import SESSIONS

from .conftest import plugin_host, running_app, settings_for


def test_formats_decode_to_int16_frames():
    stereo = np.array([[1000, -1000], [32767, -32768]], np.int16)
    np.testing.assert_array_equal(decode_pcm(stereo.tobytes(), PushFormat(16000, 2, "s16le")), stereo)
    f32 = np.array([0.5, -1.5, np.nan], np.float32)
    np.testing.assert_array_equal(decode_pcm(f32.tobytes(), PushFormat(16000, 1, "f32le"))[:, 0], [16383, -32767, 0])
    np.testing.assert_array_equal(decode_pcm(bytes([128, 255, 0]), PushFormat(8000, 1, "u8"))[:, 0], [0, 32512, -32768])
    # G.711: 0xFF and 0x7F are the two zeros, 0x00 the most negative, 0x80 the most positive
    np.testing.assert_array_equal(mulaw_to_int16(np.array([0xFF, 0x7F, 0x00, 0x80], np.uint8)), [0, 0, -32124, 32124])
    with pytest.raises(AudioPushError, match="whole number"):
        decode_pcm(b"\x00\x01\x02", PushFormat(16000, 1, "s16le"))


@pytest.mark.parametrize("query,needle", [({"rate": "100"}, "rate must be"), ({"channels": "0"}, "channels must be"),
                                          ({"encoding": "mp3"}, "encoding must be"), ({"rate": "x"}, "integers")])
def test_bad_formats_are_refused_with_the_fix(query, needle):
    with pytest.raises(AudioPushError, match=needle):
        PushFormat.parse(query)


def test_telephony_media_events_and_format_changes():
    push = AudioPush("s", PushFormat(8000, 1, "mulaw"))
    chunk, reply = push.text('{"event": "media", "media": {"payload": "/3+AAA=="}}')
    assert chunk.samples.shape == (4, 1) and chunk.sample_rate == 8000 and reply is None
    chunk, reply = push.text('{"type": "format", "rate": 24000, "encoding": "f32le"}')
    assert chunk is None and reply == {"type": "format", "rate": 24000, "channels": 1, "encoding": "f32le"}
    assert push.text('{"event": "start"}') == (None, None)
    for bad in ("not json", "[1]", '{"event": "media", "media": {"payload": "@@"}}', '{"kind": "x"}'):
        with pytest.raises(AudioPushError):
            push.text(bad)


class Ear(Driver):
    """Counts the audio it hears."""

    name = "ear"
    needs_audio = True
    heard: dict[str, int] = {}

    async def frames(self):
        while True:
            while not self.context.audio_in.empty():
                chunk = self.context.audio_in.get_nowait()
                Ear.heard[self.context.session_id] = Ear.heard.get(self.context.session_id, 0) + chunk.samples.shape[0]
            yield FlameFrame(expression=np.zeros(self.context.head.n_expression, np.float32))


class EarPlugin:
    @hookimpl
    def flamecast_register_drivers(self, register):
        register(Ear)


async def test_pushed_audio_reaches_the_layer_that_hears(worker):
    async with running_app(settings_for(worker), host=plugin_host(("ear", EarPlugin()))) as http:
        async with FlamecastClient(str(http.make_url("/"))) as client:
            deaf = await client.create_session(driver="idle")
            with pytest.raises(Exception, match="no layer that takes audio"):
                await client.push_audio(deaf["id"], np.zeros(1600, np.int16))
            info = await client.create_session(layers=[{"driver": "ear", "channels": ["jaw", "mouth"]}])
            tone = (0.3 * np.sin(np.arange(8000) / 16000 * 2 * np.pi * 220)).astype(np.float32)
            sent = await client.push_audio(info["id"], tone, rate=16000, realtime=False)
            assert sent == 8000 * 4
            async with asyncio.timeout(10):
                while Ear.heard.get(info["id"], 0) < 8000:
                    await asyncio.sleep(0.02)
            assert Ear.heard[info["id"]] == 8000
            assert http.app[SESSIONS].get(deaf["id"]).inputs_dropped == 0
