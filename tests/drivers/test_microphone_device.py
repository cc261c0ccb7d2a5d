"""The device source: missing PortAudio, no device, and a device that disappears mid-stream."""

from __future__ import annotations

import builtins
import sys
import types

import numpy as np
import pytest

from flamecast.drivers.microphone import MicrophoneDriver
from flamecast.drivers.microphone.sources import SourceError, find_device, import_sounddevice
from flamecast.plugins import OptionsError, pose_slice
from flamecast.plugins.testing import DriverHarness


def test_missing_portaudio_names_the_fix(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(SourceError, match="apt install libportaudio2"):
        import_sounddevice()
    with pytest.raises(OptionsError, match="apt install libportaudio2"):
        MicrophoneDriver.parse_options({"source": "device"})


class FakeStream:
    """Stands in for sounddevice.InputStream: the test plays PortAudio's thread."""

    opened: list["FakeStream"] = []

    def __init__(self, *, device, samplerate, channels, dtype, blocksize, callback, finished_callback):
        self.rate, self.channels, self.callback, self.finished = samplerate, channels, callback, finished_callback
        FakeStream.opened.append(self)

    def start(self):
        pass

    def abort(self):
        pass

    def close(self):
        pass

    def deliver(self, block):
        self.callback(block, len(block), None, None)


def fake_sounddevice(devices):
    module = types.ModuleType("sounddevice")
    module.query_devices = lambda: list(devices)
    module.default = types.SimpleNamespace(device=[0, 0])
    module.InputStream = FakeStream
    return module


MIC = {"name": "USB Mic", "max_input_channels": 2, "default_samplerate": 44100.0}
SPEAKER = {"name": "Speakers", "max_input_channels": 0, "default_samplerate": 48000.0}


def test_device_by_index_or_name_and_clear_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice([SPEAKER, MIC]))
    assert find_device("usb")[0] == 1 and find_device("1")[0] == 1 and find_device(None)[0] == 1
    with pytest.raises(SourceError, match="device=NAME"):
        find_device("webcam mic")
    with pytest.raises(SourceError, match="no input device with index 0"):
        find_device("0")
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice([SPEAKER]))
    with pytest.raises(OptionsError, match="no audio input device found"):
        MicrophoneDriver.parse_options({"device": "usb"})


async def test_a_device_that_disappears_leaves_an_idle_avatar_and_tells_the_clients(monkeypatch):
    devices = [MIC]
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice(devices))
    FakeStream.opened.clear()
    harness = DriverHarness(MicrophoneDriver, {"source": "device", "device": "usb"})
    frames = await harness.collect(1)
    stream = FakeStream.opened[-1]
    assert stream.rate == 44100 and stream.channels == 2
    t = np.arange(1764) / 44100
    for i in range(25):  # a loud vowel-like buzz, 40 ms per frame
        buzz = (0.3 * np.sign(np.sin(2 * np.pi * 140 * (t + i * 0.04))) * np.sin(2 * np.pi * 700 * (t + i * 0.04)))
        stream.deliver(np.repeat(buzz.astype(np.float32)[:, None], 2, axis=1))
        frames += await harness.collect(1)
    assert harness.events == []
    stream.finished()  # unplugged
    devices.clear()
    frames += await harness.collect(100)  # 4 s: one retry finds no device
    harness.check(frames)
    states = [e["state"] for e in harness.events]
    assert states[:2] == ["lost", "unavailable"]
    assert "USB Mic" in harness.events[0]["reason"] and "no audio input device" in harness.events[1]["reason"]
    jaw = np.array([f.pose[pose_slice("jaw")][0] for f in frames[-20:]])
    assert jaw.max() < 0.03  # idle, mouth closed
    devices.append(MIC)  # plugged back in
    frames = await harness.collect(80)
    FakeStream.opened[-1].deliver(np.zeros((441, 2), np.float32))
    await harness.collect(1)
    assert harness.events[-1]["state"] == "resumed"
    await harness.close()
