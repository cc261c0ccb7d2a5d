"""VisemeNet, its features and its training data; the train/eval commands on tiny settings."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from flamecast.drivers.microphone import flamecast_register_commands
from flamecast.drivers.microphone.audio import AudioFormatError, Resampler, resample_once, to_float_mono
from flamecast.drivers.microphone.features import StreamingLogMel, log_mel
from flamecast.drivers.microphone.model import VisemeConfig, VisemeNet, VisemeStream, shipped_weights_dir
from flamecast.drivers.microphone.speech import Speaker, Voice
from flamecast.drivers.microphone.targets import classify, frame_targets, label_timeline
from flamecast.plugins import CommandError

torch.set_num_threads(1)


def test_streaming_equals_the_whole_sequence():
    torch.manual_seed(0)
    model = VisemeNet(VisemeConfig(n_mels=8, channels=6, hidden=5)).eval()
    mel = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    whole = model(torch.from_numpy(mel)[None])[0].detach().numpy()
    stream = VisemeStream(model)
    parts = np.concatenate([stream.push(mel[i:i + 3]) for i in range(0, 50, 3)])
    assert parts.shape == (50 - model.config.lookahead, 3 + 3)
    np.testing.assert_allclose(parts, whole[: parts.shape[0]], atol=1e-5)


def test_streaming_features_and_resampling_equal_batch():
    x = np.random.default_rng(1).normal(scale=0.1, size=48000).astype(np.float32)
    r = Resampler()
    y = np.concatenate([r(x[i:i + 441], 48000) for i in range(0, x.size, 441)])
    np.testing.assert_allclose(y, resample_once(x, 48000)[: y.size], atol=1e-6)
    s = StreamingLogMel(40)
    mel = np.concatenate([s.push(y[i:i + 333])[0] for i in range(0, y.size, 333)])
    np.testing.assert_allclose(mel, log_mel(y, 40)[: mel.shape[0]], atol=1e-4)


def test_pcm_formats():
    assert to_float_mono(np.array([[0, 32767], [-32768, 0]], np.int16)).tolist() == pytest.approx([0.5, -0.5], abs=1e-4)
    assert to_float_mono(np.array([128, 255, 0], np.uint8)).tolist() == pytest.approx([0, 0.9921875, -1])
    assert to_float_mono(np.array([2.0, np.nan], np.float32)).tolist() == [1.0, 0.0]
    with pytest.raises(AudioFormatError, match="int16, float32"):
        to_float_mono(np.zeros(4, np.complex64))


def test_phoneme_targets_close_on_bilabials_and_open_on_vowels():
    u = Speaker().say("map [[mmmmm]]", Voice("en-us+m1"))
    kinds = [classify(p) for _, p in u.phonemes]
    assert "vowel" in kinds and "closed" in kinds
    times = np.arange(0, u.audio.size / u.rate, 0.01)
    targets, labels = frame_targets(u.phonemes, u.audio.size, u.rate, times), label_timeline(u.phonemes, u.audio.size, u.rate, times)
    assert targets[labels == 1, 0].mean() > 0.5 > targets[labels == 0, 0].mean()
    starts = {p: s for s, p in u.phonemes}
    hum = (times * u.rate > starts["m"] + 0.05 * u.rate) & (labels == 0)
    assert hum.any() and targets[hum, 1].max() > 0.8  # lips pressed through the hum


def test_shipped_weights_load_and_are_small():
    model = VisemeNet.from_pretrained(shipped_weights_dir())
    size = sum(p.stat().st_size for p in shipped_weights_dir().iterdir())
    assert size < 1_000_000
    assert model.config.latency_s <= 0.060


def _commands():
    found = {}
    flamecast_register_commands(register=lambda c: found.setdefault(c.path, c))
    return found


def _run(command, argv):
    parser = argparse.ArgumentParser()
    command.configure(parser)
    return command.run(parser.parse_args(argv))


def test_train_then_eval_commands(tmp_path, capsys):
    commands = _commands()
    assert set(commands) == {("train", "microphone"), ("eval", "microphone")}
    out = tmp_path / "w"
    train = commands[("train", "microphone")]
    assert _run(train, ["--steps", "3", "--utterances", "20", "--batch", "2", "--out", str(out)]) == 0
    assert (out / "config.json").is_file() and (out / "visemenet.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["training"]["steps"] == 3
    result = tmp_path / "eval.json"
    assert _run(commands[("eval", "microphone")], ["--weights", str(out), "--limit", "2", "--json", str(result)]) == 0
    figures = json.loads(result.read_text())
    assert figures["utterances"] == 2 and figures["latency_ms"] <= 60
    with pytest.raises(CommandError, match="--resume"):
        _run(train, ["--resume", "--out", str(tmp_path / "none")])
