"""The microphone driver through the public harness: files, pushed audio, silence, clipping."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from flamecast.drivers.microphone import MicrophoneDriver
from flamecast.drivers.microphone.speech import Speaker, Voice, write_wav
from flamecast.drivers.microphone.targets import label_timeline
from flamecast.plugins import BUILTIN_EXPRESSION_NAMES, OptionsError, pose_slice
from flamecast.plugins.protocol import AudioChunk
from flamecast.plugins.testing import DriverHarness

torch.set_num_threads(1)
TEXT = "Bob bought a map of the park. Mama made apple pie."
PAD = 0.3


@pytest.fixture(scope="module")
def speech():
    u = Speaker().say(TEXT, Voice("en-us+m3", speed=170))
    pad = np.zeros(int(PAD * u.rate), np.float32)
    return u, np.concatenate([pad, u.audio, pad])


@pytest.fixture(scope="module")
def speech_wav(speech, tmp_path_factory):
    u, audio = speech
    path = tmp_path_factory.mktemp("mic") / "speech.wav"
    write_wav(path, audio, u.rate)
    return path


def _jaw(frames):
    return np.array([f.pose[pose_slice("jaw")][0] for f in frames])


async def _run_file(options, n=None):
    harness = DriverHarness(MicrophoneDriver, options)
    frames = []
    async for frame in harness.driver.frames():
        frames.append(frame)
        if n is not None and len(frames) >= n:
            break
    await harness.close()
    return harness, frames


async def test_file_moves_the_mouth_with_the_vowels_and_passes_the_audio_on(speech, speech_wav):
    u, audio = speech
    harness, frames = await _run_file({"file": str(speech_wav)})
    assert abs(len(frames) / 25 - audio.size / u.rate) < 0.1  # the file's length, then the stream ends
    jaw = _jaw(frames)
    t = (np.arange(len(frames)) + 0.5) / 25 - PAD
    labels = label_timeline(u.phonemes, u.audio.size, u.rate, t)
    ok = ~np.isnan(labels)
    assert np.corrcoef(jaw[ok], labels[ok])[0, 1] > 0.5
    assert jaw[labels == 1].mean() > 2 * jaw[labels == 0].mean()
    chunks = harness.audio_out
    assert all(isinstance(c, AudioChunk) and c.samples.dtype == np.int16 for c in chunks)
    sent = sum(c.samples.shape[0] for c in chunks)
    assert sent == pytest.approx(audio.size, abs=u.rate * 0.1)
    assert chunks[0].sample_rate == u.rate


async def test_runs_in_the_harness_with_stamps_and_bounds(speech_wav):
    harness = DriverHarness(MicrophoneDriver, {"file": str(speech_wav), "loop": True})
    frames = await harness.collect(120)
    harness.check(frames)
    passed = harness.audio_out
    assert [c.capture_ns for c in passed] == sorted(c.capture_ns for c in passed)
    assert set(c.capture_ns for c in passed) <= set(f.capture_ns for f in frames)  # stamped with the frame showing it
    await harness.close()


async def test_silence_closes_the_mouth_and_keeps_an_idle_head(tmp_path):
    path = tmp_path / "silence.wav"
    write_wav(path, np.zeros(16000 * 3, np.float32), 16000)
    _, frames = await _run_file({"file": str(path)})
    jaw = _jaw(frames)
    assert jaw.max() < 0.03
    expr = np.stack([f.expression for f in frames])
    for name in ("lip_press", "mouth_pucker", "mouth_funnel", "mouth_stretch"):
        assert expr[:, BUILTIN_EXPRESSION_NAMES.index(name)].max() < 0.05
    neck = np.stack([f.pose[pose_slice("neck")] for f in frames])
    assert np.ptp(neck, axis=0).max() > 0.002  # the head still sways


async def test_loud_clipped_speech_stays_bounded_and_closes_on_bilabials(speech, tmp_path):
    u, audio = speech
    path = tmp_path / "loud.wav"
    write_wav(path, np.clip(audio * 30, -1, 1), u.rate)
    _, frames = await _run_file({"file": str(path)})
    jaw = _jaw(frames)
    assert np.all(np.isfinite(jaw)) and jaw.max() <= 0.01 + 0.25 + 1e-6
    expr = np.stack([f.expression for f in frames])
    assert expr.min() >= 0 and expr.max() <= 1
    t = (np.arange(len(frames)) + 0.5) / 25 - PAD
    labels = label_timeline(u.phonemes, u.audio.size, u.rate, t, pauses=False)
    assert jaw[labels == 1].mean() > jaw[labels == 0].mean() + 0.03  # vowels open, m/b/p close, even loud


@pytest.mark.parametrize("fmt", ["stereo48k", "uint8_8k", "float32_44k"])
async def test_sample_formats(speech, tmp_path, fmt):
    import av

    u, audio = speech
    path = tmp_path / f"{fmt}.wav"
    rate, layout, codec, conv = {
        "stereo48k": (48000, "stereo", "pcm_s16le", lambda x: (x * 32767).astype(np.int16)),
        "uint8_8k": (8000, "mono", "pcm_u8", lambda x: (x * 127 + 128).astype(np.uint8)),
        "float32_44k": (44100, "mono", "pcm_f32le", lambda x: x.astype(np.float32)),
    }[fmt]
    from flamecast.drivers.microphone.audio import resample_once

    x = resample_once(audio, u.rate, rate)
    channels = 2 if layout == "stereo" else 1
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        fmt_name = {"pcm_s16le": "s16", "pcm_u8": "u8", "pcm_f32le": "flt"}[codec]
        data = np.repeat(conv(x)[:, None], channels, axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format=fmt_name, layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    _, frames = await _run_file({"file": str(path)})
    jaw = _jaw(frames)
    t = (np.arange(len(frames)) + 0.5) / 25 - PAD
    labels = label_timeline(u.phonemes, u.audio.size, u.rate, t)
    ok = ~np.isnan(labels)
    assert np.corrcoef(jaw[ok], labels[ok])[0, 1] > 0.4


def test_a_file_that_is_not_audio_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("these are not samples\n" * 50)
    with pytest.raises(OptionsError, match="not an audio file"):
        MicrophoneDriver.parse_options({"file": str(bad)})
    with pytest.raises(OptionsError, match="does not exist"):
        MicrophoneDriver.parse_options({"file": str(tmp_path / "missing.wav")})
    with pytest.raises(OptionsError, match="file=PATH"):
        MicrophoneDriver.parse_options({"source": "file"})


def _chunks(audio, rate, ms=20, dtype="int16", channels=1):
    step = int(rate * ms / 1000)
    for i in range(0, audio.size - step + 1, step):
        x = audio[i:i + step]
        if dtype == "int16":
            x = (x * 32767).astype(np.int16)
        yield AudioChunk("test", i, 0, rate, np.repeat(x[:, None], channels, axis=1))


async def test_pushed_audio_drives_the_mouth_and_a_stop_is_reported(speech):
    u, audio = speech
    harness = DriverHarness(MicrophoneDriver, {"stall_seconds": 0.5})
    chunks = list(_chunks(audio, u.rate, dtype="float32", channels=2))
    frames = []
    for i in range(0, len(chunks), 2):  # 40 ms of audio per 40 ms frame, as a live client sends it
        for c in chunks[i:i + 2]:
            await harness.feed_audio(c)
        frames += await harness.collect(1)
    jaw = _jaw(frames)
    assert jaw.max() > 0.08 and jaw[:5].max() < 0.03
    assert [e["state"] for e in harness.events] == []
    silent = await harness.collect(30)  # the client stops sending
    assert _jaw(silent[-10:]).max() < 0.03
    assert [e["state"] for e in harness.events] == ["lost"] and "no audio" in harness.events[0]["reason"]
    await harness.feed_audio(next(_chunks(audio, u.rate)))
    await harness.collect(1)
    assert harness.events[-1]["state"] == "resumed"
    assert len(harness.audio_out) > 0
    await harness.close()


async def test_bad_pushed_chunks_are_dropped_and_reported():
    harness = DriverHarness(MicrophoneDriver, {})
    await harness.feed_audio({"samples": np.zeros((160, 1), np.int16), "sample_rate": 100})
    await harness.feed_audio((np.zeros((160, 1), np.complex64), 16000))
    frames = await harness.collect(2)
    harness.check(frames)
    assert harness.events[0]["state"] == "bad-chunk" and "2 audio chunk(s)" in harness.events[0]["reason"]
    await harness.close()


async def test_the_layer_is_active_while_there_is_sound_and_drops_out_in_silence(tmp_path):
    """In a stack, the microphone layer owns the mouth while someone speaks; in silence the layers
    below take it back."""
    from flamecast.plugins import Channel
    from flamecast.plugins.testing import StackHarness

    rate = 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)).astype(np.float32)
    pcm = np.concatenate([tone, np.zeros(2 * rate, np.float32)])
    harness = StackHarness()
    ctx = harness.add("mic", MicrophoneDriver, {"source": "client", "passthrough": False})
    owners = []
    for i in range(0, pcm.size, rate // 25):
        await ctx.audio_in.put((pcm[i:i + rate // 25, None], rate))
        await harness.collect(1)
        owners.append(harness.stack.stats().owners[Channel.JAW.value])
    await harness.close()
    assert "mic" in owners[5:25], "the microphone drives the jaw while there is sound"
    assert owners[-1] == "base", "in silence the base takes the jaw back"
