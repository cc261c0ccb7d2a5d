"""The text driver's streaming behaviour, on a stand-in pipeline with known clips, and once
end to end with the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest

from flamecast.drivers.idle import IdleDriver
from flamecast.drivers.text import TextDriver
from flamecast.drivers.text.bank import Match
from flamecast.drivers.text.driver import INTERRUPT_FADE
from flamecast.drivers.text.pipeline import Generated
from flamecast.plugins import BUILTIN_EXPRESSION_NAMES, OptionsError, pose_slice
from flamecast.plugins.testing import DriverHarness

RATE = 25.0
SMILE = BUILTIN_EXPRESSION_NAMES.index("smile")
FROWN = BUILTIN_EXPRESSION_NAMES.index("frown")


class _Cfg:
    features = 16


class _Emotion:
    cfg = _Cfg()


class FakePipeline:
    """'left' holds yaw +0.5, 'right' holds -0.5 (rad); 'smile'/'frown' set that channel to 0.8;
    'zzz' is a weak match."""

    expression_names = BUILTIN_EXPRESSION_NAMES
    emotion = _Emotion()
    fps = 12.5

    def __init__(self):
        self.calls = []

    def generate(self, text, *, seconds=4.0, motion=True, emotion=True, steps=20, guidance=2.5, seed=0):
        self.calls.append(text)
        n = int(round(seconds * self.fps))
        head = np.zeros((n, 3), np.float32)
        head[:, 1] = 0.5 if "left" in text else -0.5 if "right" in text else 0.0
        expr = np.zeros((n, 16), np.float32)
        emo = None
        for word, ch in (("smile", SMILE), ("frown", FROWN)):
            if word in text:
                expr[:, ch], emo = 0.8, word
        weak = "zzz" in text
        match = Match(0.1 if weak else 0.9, text, None, emo)
        return Generated(self.fps, head, np.full((n, 3), 0.0, np.float32), expr, match)


def harness(**options) -> DriverHarness:
    h = DriverHarness(TextDriver, {"fps": RATE, **options})
    h.driver._pipeline = FakePipeline()
    return h


def yaw(frame) -> float:
    return float(frame.pose[pose_slice("global")][1] + frame.pose[pose_slice("neck")][1])


def idle_yaw(i: int) -> float:
    idle = IdleDriver(IdleDriver.parse_options({"fps": RATE}), DriverHarness(IdleDriver).context)
    f = idle.frame_at(i)
    return float(f.pose[pose_slice("global")][1] + f.pose[pose_slice("neck")][1])


async def test_initial_prompt_option_plays_at_once():
    h = harness(prompt="turn left")
    frames = await h.collect(50)
    h.check(frames)
    assert abs(yaw(frames[0]) - idle_yaw(0)) < 1e-6  # fades in from idle
    assert yaw(frames[int(0.3 * RATE) + 1]) - idle_yaw(int(0.3 * RATE) + 1) == pytest.approx(0.5, abs=1e-4)


async def test_prompt_reply_and_crossfade_within_300ms():
    h = harness()
    await h.collect(5)
    reply = await h.control("prompt", "turn left")
    assert reply["ok"] and reply["similarity"] == pytest.approx(0.9) and reply["weak_match"] is False
    await h.collect(20)
    reply = await h.control("prompt", "turn right")
    frames = await h.collect(12)
    offsets = [yaw(f) - idle_yaw(25 + i) for i, f in enumerate(frames)]
    assert offsets[0] == pytest.approx(0.5, abs=1e-3)
    assert offsets[int(0.3 * RATE) + 1] == pytest.approx(-0.5, abs=1e-3)
    assert all(b <= a + 1e-6 for a, b in zip(offsets, offsets[1:])), "the cross-fade is not monotonic"


async def test_clip_end_eases_back_to_idle():
    h = harness(seconds=1.0, ease=0.5)
    await h.control("prompt", "turn left")
    frames = await h.collect(60)
    offsets = [yaw(f) - idle_yaw(i) for i, f in enumerate(frames)]
    assert offsets[20] == pytest.approx(0.5, abs=1e-3)  # 0.8 s: playing
    assert 0.0 < offsets[31] < 0.5  # 1.24 s: easing out
    assert all(abs(o) < 1e-6 for o in offsets[40:])  # after 1.5 s: idle


async def test_loop_keeps_playing():
    h = harness(seconds=1.0, loop=True)
    await h.control("prompt", "turn left")
    frames = await h.collect(100)
    assert all(yaw(f) - idle_yaw(i) == pytest.approx(0.5, abs=1e-3) for i, f in enumerate(frames) if i > 10)


async def test_interrupt_returns_to_idle_at_once():
    h = harness(loop=True)
    await h.control("prompt", "turn left and smile")
    await h.collect(30)
    reply = await h.control("interrupt")
    assert reply["ok"]
    frames = await h.collect(10)
    n = int(INTERRUPT_FADE * RATE) + 1
    for i, f in enumerate(frames[n:], start=30 + n):
        assert yaw(f) == pytest.approx(idle_yaw(i), abs=1e-6)
        assert f.expression[SMILE] < 0.3


async def test_emotion_separately_and_prompt_without_emotion_keeps_it():
    h = harness(loop=True)
    reply = await h.control("emotion", "frown")
    assert reply["emotion_changed"] is True
    await h.control("prompt", "turn left")  # names no emotion: the frown stays
    frames = await h.collect(30)
    assert frames[-1].expression[FROWN] == pytest.approx(0.8, abs=1e-3)
    assert yaw(frames[-1]) - idle_yaw(29) == pytest.approx(0.5, abs=1e-3)
    await h.control("prompt", "turn right and smile")  # one sentence: both change
    frames = await h.collect(30)
    assert frames[-1].expression[SMILE] > 0.75 and frames[-1].expression[FROWN] < 0.05
    assert yaw(frames[-1]) - idle_yaw(59) == pytest.approx(-0.5, abs=1e-3)


async def test_weak_match_says_so_and_keeps_the_emotion():
    h = harness()
    await h.control("emotion", "smile")
    reply = await h.control("prompt", "zzz blorp")
    assert reply["weak_match"] is True and "weak match" in reply["message"] and reply["emotion_changed"] is False


async def test_bad_input_is_rejected_with_a_message():
    h = harness()
    with pytest.raises(ValueError, match="empty"):
        await h.control("prompt", "   ")
    with pytest.raises(ValueError, match="limit is 500"):
        await h.driver.apply_prompt("nod " * 130)
    with pytest.raises(OptionsError, match="empty"):
        TextDriver.parse_options({"prompt": ""})
    with pytest.raises(OptionsError, match="500"):
        TextDriver.parse_options({"prompt": "x" * 501})
    with pytest.raises(ValueError, match="seconds"):
        await h.control("prompt", "turn left", seconds=30)
    with pytest.raises(ValueError, match="cannot change"):
        await h.control("option", weights="/elsewhere")
    assert (await h.control("option", loop=True))["options"] == {"loop": True}
    assert h.driver._pipeline.calls == []


async def test_options_parse_from_strings():
    opts = TextDriver.parse_options({"prompt": "nods", "seconds": "6", "loop": "true"}, from_strings=True)
    assert opts.seconds == 6.0 and opts.loop is True
    with pytest.raises(OptionsError, match="seconds"):
        TextDriver.parse_options({"seconds": "11"}, from_strings=True)


# --- end to end with the shipped weights and the packaged MiniLM encoder ---------------------

def test_driver_command_writes_a_clip_offline(tmp_path, monkeypatch):
    """`flamecast driver text --option prompt=... --seconds 4 --out clip.npz` with no network."""
    import socket

    from flamecast.cli import main

    def no_network(*args, **kwargs):
        raise AssertionError("the text driver tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    out = tmp_path / "clip.npz"
    assert main(["driver", "text", "--option", "prompt=turns the head to the left", "--seconds", "4", "--out", str(out)]) == 0
    data = np.load(out)
    assert data["pose"].shape == (100, 15) and list(data["expression_names"]) == list(BUILTIN_EXPRESSION_NAMES)
    yaw_track = data["pose"][:, 4] + data["pose"][:, 1]  # neck + global yaw
    assert yaw_track[40:70].mean() > 0.15  # turned to the avatar's own left


def test_minilm_pooled_embedding_and_token_states_come_from_one_pass(monkeypatch):
    from flamecast.drivers.text.encoder import CachedEncoder, MiniLMEncoder

    enc = MiniLMEncoder()
    calls = []
    forward = enc.model.forward
    monkeypatch.setattr(enc.model, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    cached = CachedEncoder(enc)
    pooled = cached.encode(["tilts the head to the right"])[0]
    tokens = cached.encode_tokens(["tilts the head to the right"])[0]
    assert len(calls) == 1 and tokens.shape[1] == 384 and tokens.shape[0] >= 7  # words + [CLS] + [SEP]
    mean = tokens.mean(0)
    assert np.allclose(pooled, mean / np.linalg.norm(mean), atol=1e-5)
    cached.encode_tokens(["nods"])
    assert len(calls) == 2  # another prompt runs the encoder again


async def test_shipped_models_flag_nonsense_as_weak():
    h = DriverHarness(TextDriver, {})
    reply = await h.control("prompt", "der Zug fährt um acht Uhr ab")
    assert reply["weak_match"] is True
    reply = await h.control("prompt", "nods slowly and smiles")
    assert reply["weak_match"] is False and reply["emotion_changed"] is True
    h.check(await h.collect(30))
    await h.close()


CONCURRENT_LOAD = """
import sys, threading
from flamecast.drivers.text import pipeline
target = getattr(pipeline, sys.argv[1])
barrier, results, errors = threading.Barrier(4), [], []
def load():
    barrier.wait()
    try:
        results.append(target(None, None, None))
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=load) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
assert not errors, errors
assert len({id(r) for r in results}) == 1, "each caller got its own pipeline"
print("ok")
"""


def test_sessions_loading_the_pipeline_at_once_share_one_load():
    """Two sessions (or a prompt option and a first control message) load at the same time in
    a fresh process; transformers' lazy imports must not race."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", CONCURRENT_LOAD, "shared_pipeline"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
