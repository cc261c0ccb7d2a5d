"""Driver layers: channel ownership, additive emotion, cross-fades, crashes and stalls."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from flamecast.drivers.idle import IdleDriver
from flamecast.plugins import Channel, Control, ControlNotSupported, Driver, FlameFrame, HeadSpace, pose_slice
from flamecast.plugins.layers import JAW_RANGE, ChannelMap, LayerInput, Mixer, parse_channels
from flamecast.plugins.head import builtin_head_space
from flamecast.plugins.stack import LayerError, layer_channels
from flamecast.plugins.testing import StackHarness

HEAD = builtin_head_space()
YAW = pose_slice("neck").start + 1
JAW = pose_slice("jaw").start


def _expr(**channels: float) -> np.ndarray:
    out = np.zeros(HEAD.n_expression, np.float32)
    for name, value in channels.items():
        out[HEAD.index(name)] = value
    return out


class FakeVideo(Driver):
    """A webcam stand-in: turns the head, opens the jaw a little, smiles; loses the face on demand."""

    name = "fake-video"
    channels = frozenset(Channel)
    needs_video = True

    def __init__(self, options, context) -> None:
        super().__init__(options, context)
        self.face = True

    @property
    def active(self) -> bool:
        return self.face

    async def frames(self):
        while True:
            pose = np.zeros(15, np.float32)
            pose[YAW] = 0.5
            pose[JAW] = 0.1
            yield FlameFrame(pose=pose, expression=_expr(smile=0.4, mouth_funnel=0.1), eyelids=np.array([0.2, 0.2]))

    async def control(self, message: Control):
        if message.kind == "option":
            self.face = bool(message.data.get("face", True))
            return {"face": self.face}
        return await super().control(message)


class FakeAudio(Driver):
    """A microphone stand-in: jaw and mouth shapes that follow a fed level; silent when fed 0."""

    name = "fake-audio"
    channels = frozenset({Channel.JAW, Channel.MOUTH})
    needs_audio = True

    def __init__(self, options, context) -> None:
        super().__init__(options, context)
        self.level = 0.0

    @property
    def active(self) -> bool:
        return self.level > 0

    async def frames(self):
        while True:
            while not self.context.audio_in.empty():
                self.level = float(self.context.audio_in.get_nowait())
            pose = np.zeros(15, np.float32)
            pose[JAW] = 0.5 * self.level
            yield FlameFrame(pose=pose, expression=_expr(mouth_funnel=self.level, smile=0.9))


class Emotion(Driver):
    """Text/hotkey stand-in: an emotion set by control, nothing else."""

    name = "emotion"
    channels = frozenset({Channel.EMOTION})

    def __init__(self, options, context) -> None:
        super().__init__(options, context)
        self.value = _expr()

    async def frames(self):
        while True:
            yield FlameFrame(expression=self.value, pose=np.full(15, 0.3, np.float32))

    async def control(self, message: Control):
        if message.kind != "emotion":
            return await super().control(message)
        self.value = _expr(**{message.text: 1.0})
        return {"emotion": message.text}


class Crashy(Driver):
    name = "crashy"
    channels = frozenset({Channel.HEAD})

    async def frames(self):
        for _ in range(10):
            pose = np.zeros(15, np.float32)
            pose[YAW] = -0.6
            yield FlameFrame(pose=pose, expression=_expr())
        raise RuntimeError("camera unplugged")


class Silent(Driver):
    """Waits for input that never comes (a stopped browser track)."""

    name = "silent"
    channels = frozenset({Channel.HEAD})

    async def frames(self):
        pose = np.zeros(15, np.float32)
        pose[YAW] = 0.7
        yield FlameFrame(pose=pose, expression=_expr())
        await asyncio.Event().wait()
        yield FlameFrame(expression=_expr())


def _max_step(frames, index) -> float:
    values = np.array([f.pose[index] for f in frames])
    return float(np.abs(np.diff(values)).max())


async def test_each_group_comes_from_its_highest_active_owner():
    h = StackHarness(IdleDriver)
    h.add("webcam", FakeVideo, channels=["head", "eyes", "emotion"])
    mic = h.add("mic", FakeAudio)
    await mic.audio_in.put(0.8)
    frames = await h.collect(30)
    h.check(frames)
    last = frames[-1]
    assert last.pose[YAW] == pytest.approx(0.5, abs=1e-5)           # head from the webcam
    assert last.pose[JAW] == pytest.approx(0.4, abs=1e-5)           # jaw from the microphone
    assert last.expression[HEAD.index("mouth_funnel")] == pytest.approx(0.8, abs=1e-5)
    assert last.expression[HEAD.index("smile")] == pytest.approx(0.4, abs=1e-5)  # emotion from the webcam, not the mic
    assert last.eyelids is not None and last.eyelids[0] == pytest.approx(0.2, abs=1e-5)
    owners = h.stack.stats().owners
    assert owners["head"] == "webcam" and owners["jaw"] == "mic" and owners["mouth"] == "mic"
    await h.close()


async def test_emotion_layer_adds_on_top_of_mouth_shapes():
    h = StackHarness()
    mic = h.add("mic", FakeAudio)
    h.add("text", Emotion)
    await mic.audio_in.put(1.0)
    await h.collect(1)
    await h.control("emotion", "frown")
    frames = await h.collect(20)
    last = frames[-1]
    assert last.expression[HEAD.index("mouth_funnel")] == pytest.approx(1.0, abs=1e-5)  # lip-sync stays
    assert last.expression[HEAD.index("frown")] == pytest.approx(1.0, abs=1e-5)          # the emotion shows
    assert last.pose[YAW] == pytest.approx(0.0, abs=1e-6), "an emotion layer must not move the head"
    await h.close()


async def test_emotion_override_mode_replaces_instead_of_adding():
    h = StackHarness(emotion="override")
    h.add("webcam", FakeVideo)
    h.add("text", Emotion)
    with pytest.raises(ControlNotSupported, match="not running"):
        await h.control("emotion", "frown", layer="text")  # its driver starts on the first frame
    await h.collect(1)
    await h.control("emotion", "frown", layer="text")
    last = (await h.collect(20))[-1]
    assert last.expression[HEAD.index("smile")] == pytest.approx(0.0, abs=1e-5)
    assert last.expression[HEAD.index("frown")] == pytest.approx(1.0, abs=1e-5)
    assert last.expression[HEAD.index("mouth_funnel")] == pytest.approx(0.1, abs=1e-5)  # mouth still the webcam's
    await h.close()


async def test_hand_overs_cross_fade_without_jumps():
    h = StackHarness(fade=0.25)
    h.add("webcam", FakeVideo)
    frames = await h.collect(20)
    await h.control("option", layer="webcam", face=False)  # face lost: the base takes the head back
    frames += await h.collect(20)
    await h.control("option", layer="webcam", face=True)
    frames += await h.collect(20)
    yaw = np.array([f.pose[YAW] for f in frames])
    assert yaw[19] == pytest.approx(0.5, abs=1e-5) and yaw[39] == pytest.approx(0.0, abs=1e-5)
    assert yaw[59] == pytest.approx(0.5, abs=1e-5)
    # 0.5 rad over a 0.25 s fade at 25 fps: at most a sixth of it per frame
    assert _max_step(frames, YAW) <= 0.5 / (0.25 * 25) + 1e-5
    assert 0.02 < yaw[22] < 0.48, "the hand-over is a fade, not a cut"
    await h.close()


async def test_a_crashing_layer_is_taken_over_by_the_one_below_and_clients_are_told():
    h = StackHarness(fade=0.2)
    h.add("webcam", FakeVideo, channels=["head"])
    h.add("tracker", Crashy)
    frames = await h.collect(40)
    assert frames[9].pose[YAW] == pytest.approx(-0.6, abs=1e-5)
    assert frames[-1].pose[YAW] == pytest.approx(0.5, abs=1e-5)  # the webcam below took the head back
    assert _max_step(frames[10:], YAW) <= 1.1 / (0.2 * 25) + 1e-5
    crashed = [e for e in h.events if e.get("layer") == "tracker" and e.get("state") == "crashed"]
    assert crashed and "camera unplugged" in crashed[0]["error"]
    stats = {layer["name"]: layer for layer in h.stack.stats().layers}
    assert stats["tracker"]["restarts"] >= 1 and stats["tracker"]["last_error"] == "RuntimeError: camera unplugged"
    await h.close()


async def test_a_layer_whose_input_stops_drops_out():
    h = StackHarness(stale_after=0.5)
    h.add("browser-cam", Silent)
    frames = await h.collect(60)
    assert frames[0].pose[YAW] == pytest.approx(0.7, abs=1e-5)
    assert frames[-1].pose[YAW] == pytest.approx(0.0, abs=1e-5)
    assert any(e.get("state") == "stalled" for e in h.events)
    await h.close()


async def test_inactive_driver_and_muted_layer_drop_out():
    h = StackHarness(fade=0.0)
    h.add("webcam", FakeVideo)
    await h.collect(2)
    await h.control("option", layer="webcam", face=False)
    assert (await h.collect(2))[-1].pose[YAW] == 0.0
    await h.control("option", layer="webcam", face=True)
    assert (await h.collect(2))[-1].pose[YAW] == pytest.approx(0.5)
    h.stack.mute("webcam", True)
    assert (await h.collect(2))[-1].pose[YAW] == 0.0
    await h.close()


async def test_layers_are_added_moved_and_removed_while_running():
    h = StackHarness(fade=0.0)
    h.add("webcam", FakeVideo, channels=["head"])
    h.add("tracker", Crashy)
    assert [layer.name for layer in h.stack.layers] == ["base", "webcam", "tracker"]
    assert (await h.collect(2))[-1].pose[YAW] == pytest.approx(-0.6)
    h.stack.move("tracker", 1)  # below the webcam now
    assert (await h.collect(2))[-1].pose[YAW] == pytest.approx(0.5)
    await h.stack.remove("webcam")
    assert (await h.collect(2))[-1].pose[YAW] == pytest.approx(-0.6)
    with pytest.raises(LayerError, match="base layer"):
        await h.stack.remove("base")
    with pytest.raises(LayerError, match="no layer 'nope'"):
        h.stack.mute("nope", True)
    with pytest.raises(LayerError, match="already in the stack"):
        h.add("tracker", Crashy)
    await h.close()


async def test_controls_reach_the_named_layer_or_the_highest_that_takes_them():
    h = StackHarness()
    h.add("webcam", FakeVideo)
    h.add("text", Emotion)
    await h.collect(1)
    assert (await h.control("emotion", "smile"))["layer"] == "text"
    assert (await h.control("option", face=False))["layer"] == "webcam"
    with pytest.raises(ControlNotSupported):
        await h.control("prompt", "nod", layer="webcam")
    await h.close()


def test_layer_channels_must_be_among_what_the_driver_drives():
    assert layer_channels(FakeAudio, None) == {Channel.JAW, Channel.MOUTH}
    assert layer_channels(FakeAudio, ["jaw"]) == {Channel.JAW}
    with pytest.raises(ValueError, match="does not drive head"):
        layer_channels(FakeAudio, ["head"])
    with pytest.raises(ValueError, match="unknown channel group"):
        parse_channels(["nose"])


def test_values_are_clamped_to_the_heads_range():
    mixer = Mixer(HEAD, fade=0.0)
    pose = np.zeros(15, np.float32)
    pose[JAW] = 3.0
    pose[YAW] = -3.0
    out = mixer.step([LayerInput("a", FlameFrame(pose=pose, expression=np.full(16, 9.0)), frozenset(Channel), True)], 0.04)
    assert out.pose[JAW] == pytest.approx(JAW_RANGE[1]) and out.pose[YAW] == pytest.approx(-1.2)
    assert out.expression.max() == pytest.approx(1.5)


def test_unnamed_heads_add_emotion_vectors_to_the_mouth_vector():
    flame = HeadSpace(name="flame2020", n_expression=4, expression_names=None)
    assert ChannelMap.for_head(flame).shared_expression
    mixer = Mixer(flame, fade=0.0)
    mouth = LayerInput("mic", FlameFrame(expression=np.array([1.0, 0, 0, 0])), frozenset({Channel.JAW, Channel.MOUTH}), True)
    base = LayerInput("base", FlameFrame(expression=np.zeros(4)), frozenset(Channel), True)
    emotion = LayerInput("text", FlameFrame(expression=np.array([0, 0.5, 0, 0])), frozenset({Channel.EMOTION}), True)
    out = mixer.step([base, mouth, emotion], 0.04)
    np.testing.assert_allclose(out.expression, [1.0, 0.5, 0, 0], atol=1e-6)


async def test_idle_text_audio_and_video_compose():
    """The built-in idle and text drivers with a fake microphone and a fake camera: head from the
    camera, lips from the microphone, a sad face from text on top, blinks from the camera's eyes."""
    from flamecast.drivers.text import TextDriver

    h = StackHarness(IdleDriver)
    h.add("webcam", FakeVideo, channels=["head", "eyes"])
    mic = h.add("mic", FakeAudio)
    h.add("text", TextDriver, {"steps": 4}, channels=["emotion"])
    await mic.audio_in.put(0.6)
    await h.collect(1)
    reply = await h.control("emotion", "looks very sad", layer="text")
    assert reply["layer"] == "text"
    frames = await h.collect(75)
    h.check(frames)
    last = frames[-1]
    assert last.pose[YAW] == pytest.approx(0.5, abs=1e-5)
    assert last.pose[JAW] == pytest.approx(0.3, abs=1e-5)
    assert last.expression[HEAD.index("mouth_funnel")] == pytest.approx(0.6, abs=1e-5)
    sad = max(last.expression[HEAD.index(n)] for n in ("frown", "brow_inner_raise", "brow_furrow"))
    assert sad > 0.15, "the text layer's sad face shows on top of the lip-sync"
    await h.close()


async def test_a_layer_with_a_short_fade_in_takes_over_at_once():
    class Lips(FakeAudio):
        fade_in = 0.04  # a frame at 25 fps

    h = StackHarness(fade=0.25)
    mic = h.add("mic", Lips)
    await mic.audio_in.put(0.0)
    await h.collect(5)
    await mic.audio_in.put(1.0)
    frames = await h.collect(2)
    assert frames[0].pose[JAW] == pytest.approx(0.5, abs=1e-5), "the first syllable opens the mouth fully"
    await h.close()
