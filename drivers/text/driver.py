"""The text driver: prompts become clips of head motion and expression on top of idle motion.

Streaming behaviour:

* A prompt (control kind "prompt", or the ``prompt`` option at start) makes a clip of
  ``seconds`` (default 4, at most 10) that plays at the session rate. The sentence drives the
  motion; when it also names an emotion (its nearest training caption has one, or EmotionDM's
  clip moves a channel past EMOTION_PRESENT) it drives the expression too. Control kind "emotion"
  changes only the expression.
* A new prompt cross-fades from the running clip within ``crossfade`` seconds (0.3).
* At the end of a clip the avatar eases back to idle over ``ease`` seconds, or the clip loops
  when ``loop`` is set.
* "interrupt" returns to idle at once (a 0.1 s fade, so nothing pops).
* The idle driver's breathing, blinks and sway keep running underneath; head rotations add to
  it, the jaw and the expression channels blend over it (blinks stay).
* The head rotation a clip carries is split between the global (40%) and neck (60%) joints,
  as the idle driver does.

Sampling runs in a worker thread (``asyncio.to_thread``), never on the event loop. A reply
carries the prompt's match similarity; under ``WEAK_MATCH`` the reply says the match was weak
and the avatar makes a calm motion instead of guessing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Literal

import numpy as np
from pydantic import Field, field_validator

from flamecast.drivers.idle import IdleDriver
from flamecast.plugins import Control, ControlNotSupported, Driver, DriverOptions, FlameFrame, pose_slice

from .bank import WEAK_MATCH
from .prompts import MAX_PROMPT_CHARS, MAX_SECONDS, check_prompt

if TYPE_CHECKING:
    from .pipeline import Generated

INTERRUPT_FADE = 0.1
EMOTION_PRESENT = 0.08
HEAD_SPLIT = {"global": 0.4, "neck": 0.6}
RUNTIME_OPTIONS = ("seconds", "loop", "crossfade", "ease", "steps", "guidance")


class TextOptions(DriverOptions):
    """Options of the text driver."""

    fps: float = Field(25.0, gt=0, le=120, description="Frames per second.")
    prompt: str | None = Field(None, description=f"A first prompt to play at start (at most {MAX_PROMPT_CHARS} characters).")
    emotion: str | None = Field(None, description="A first emotion prompt to play at start.")
    seconds: float = Field(4.0, gt=0, le=MAX_SECONDS, description=f"Clip length in seconds (at most {MAX_SECONDS:g}).")
    loop: bool = Field(False, description="Loop each clip instead of easing back to idle at its end.")
    crossfade: float = Field(0.3, ge=0, le=2, description="Seconds a new clip takes to replace the running one.")
    ease: float = Field(0.5, ge=0, le=3, description="Seconds to ease back to idle at the end of a clip.")
    steps: int = Field(20, ge=1, le=200, description="DDIM sampling steps.", json_schema_extra={"advanced": True})
    guidance: float = Field(2.5, ge=0, le=10, description="Classifier-free guidance scale.",
                            json_schema_extra={"advanced": True})
    weights: str | None = Field(None, description="Folder with config.json + motion/emotion .safetensors (default: shipped).",
                                json_schema_extra={"server_only": True, "advanced": True})
    encoder: Literal["minilm", "clip"] | None = Field(None, description="Text encoder (default: the one the weights were trained with).",
                                                      json_schema_extra={"advanced": True})
    clip_path: str | None = Field(None, description="Local folder of the CLIP ViT-B/32 text encoder (encoder=clip).",
                                  json_schema_extra={"server_only": True, "advanced": True})

    @field_validator("prompt", "emotion")
    @classmethod
    def _prompt(cls, value: str | None) -> str | None:
        return None if value is None else check_prompt(value)


@dataclass
class Layer:
    """One clip playing from ``start`` (driver time, seconds) with its fades."""

    values: np.ndarray  # (T, C) at ``fps``
    fps: float
    start: float
    fade_in: float
    loop: bool
    ease: float
    retire_at: float | None = None
    retire_for: float = 0.0

    @property
    def seconds(self) -> float:
        return self.values.shape[0] / self.fps

    def value(self, t: float) -> np.ndarray:
        rel = max(0.0, t - self.start)
        if self.loop:
            rel %= self.seconds
        pos = min(rel * self.fps, self.values.shape[0] - 1)
        i = int(pos)
        j = min(i + 1, self.values.shape[0] - 1)
        return self.values[i] + (pos - i) * (self.values[j] - self.values[i])

    def gain(self, t: float) -> float:
        rel = t - self.start
        g = _ramp(rel / self.fade_in) if self.fade_in > 0 else float(rel >= 0)
        if not self.loop:
            over = rel - self.seconds
            g *= 1.0 - (_ramp(over / self.ease) if self.ease > 0 else float(over >= 0))
        if self.retire_at is not None:
            g *= 1.0 - (_ramp((t - self.retire_at) / self.retire_for) if self.retire_for > 0 else 1.0)
        return g

    def done(self, t: float) -> bool:
        if self.retire_at is not None and t >= self.retire_at + self.retire_for:
            return True
        return not self.loop and t - self.start >= self.seconds + self.ease


def carries_emotion(expression: np.ndarray) -> bool:
    """Whether EmotionDM made an expression: it was trained to leave every channel at rest for
    captions that name no emotion, so a channel whose clip mean passes EMOTION_PRESENT means
    the sentence asked for one."""
    return bool(expression.size and np.clip(expression, 0, 1).mean(axis=0).max() > EMOTION_PRESENT)


def check_head(pipeline, head) -> None:
    """ValueError when the weights' expression space is not the session head's."""
    names, n = pipeline.expression_names, pipeline.emotion.cfg.features
    if n != head.n_expression or (names is not None and tuple(names) != tuple(head.expression_names or ())):
        raise ValueError(f"the text weights make {n} expression values ({'named' if names else 'FLAME'} channels); "
                         f"head {head.name!r} has {head.n_expression}: use weights trained for this head")


def _ramp(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


class Track:
    """The layers of one kind (motion or emotion): the newest plays, older ones fade out."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []

    def play(self, layer: Layer, t: float, crossfade: float) -> None:
        for old in self.layers:
            if old.retire_at is None:
                old.retire_at, old.retire_for = t, crossfade
        self.layers.append(layer)

    def clear(self, t: float, fade: float) -> None:
        """Fade everything out within ``fade`` seconds (layers already fading are dropped)."""
        self.layers = [layer for layer in self.layers if layer.retire_at is None]
        for layer in self.layers:
            layer.retire_at, layer.retire_for = t, fade

    def mix(self, t: float) -> tuple[np.ndarray | None, float]:
        """Weighted value of the layers and their total weight (0 = idle only)."""
        self.layers = [layer for layer in self.layers if not layer.done(t)]
        total, acc = 0.0, None
        for layer in self.layers:
            g = layer.gain(t)
            if g <= 0:
                continue
            v = g * layer.value(t)
            acc = v if acc is None else acc + v
            total += g
        return acc, total


class TextDriver(Driver):
    name = "text"
    description = "Text2FLAME: type what the head should do ('nods slowly and smiles')."
    rate = 25.0
    Options = TextOptions

    def __init__(self, options: TextOptions, context) -> None:
        super().__init__(options, context)
        self.rate = options.fps
        self.idle = IdleDriver(IdleDriver.parse_options({"fps": options.fps, "seed": options.seed}), context)
        self.motion, self.emotion = Track(), Track()
        self._t = 0.0  # time of the next frame
        self._seed = options.seed
        self._pipeline = None
        self._lock = asyncio.Lock()

    # --- model ---------------------------------------------------------------------------

    async def pipeline(self):
        if self._pipeline is None:
            from .pipeline import shared_pipeline

            o = self.options
            self._pipeline = await asyncio.to_thread(shared_pipeline, o.weights, o.encoder, o.clip_path)
            check_head(self._pipeline, self.context.head)
        return self._pipeline

    async def _generate(self, text: str, *, motion: bool, emotion: bool, seconds: float | None) -> "Generated":
        pipe = await self.pipeline()
        self._seed += 2
        o = self.options
        async with self._lock:
            return await asyncio.to_thread(pipe.generate, text, seconds=seconds or o.seconds, motion=motion,
                                           emotion=emotion, steps=o.steps, guidance=o.guidance, seed=self._seed)

    def _layer(self, values: np.ndarray, fps: float, loop: bool | None) -> Layer:
        o = self.options
        return Layer(values.astype(np.float32), fps, self._t, o.crossfade, o.loop if loop is None else loop, o.ease)

    async def apply_prompt(self, text: str, *, kind: str = "prompt", seconds: float | None = None,
                           loop: bool | None = None) -> dict[str, Any]:
        text = check_prompt(text, kind)
        emotion_only = kind == "emotion"
        clip = await self._generate(text, motion=not emotion_only, emotion=True, seconds=seconds)
        m = clip.match
        if not emotion_only:
            self.motion.play(self._layer(np.concatenate([clip.head, clip.jaw], 1), clip.fps, loop), self._t, self.options.crossfade)
        sets_emotion = not m.weak and (emotion_only or m.emotion is not None or carries_emotion(clip.expression))
        if sets_emotion:
            self.emotion.play(self._layer(np.clip(clip.expression, 0, 1), clip.fps, loop), self._t, self.options.crossfade)
        return self._reply(clip, kind, sets_emotion)

    def _reply(self, clip, kind: str, sets_emotion: bool) -> dict[str, Any]:
        m = clip.match
        reply = {"ok": True, "kind": kind, "similarity": round(m.similarity, 3), "weak_match": m.weak,
                 "threshold": WEAK_MATCH, "matched": m.caption, "seconds": round(clip.seconds, 2),
                 "emotion_changed": sets_emotion}
        if m.weak:
            reply["message"] = (f"weak match (similarity {m.similarity:.2f} < {WEAK_MATCH}): the prompt is far from "
                                "what the model knows (English head motions and emotions); playing a calm motion")
        return reply

    # --- control -------------------------------------------------------------------------

    async def control(self, message: Control) -> dict[str, Any]:
        data = message.data
        if message.kind in ("prompt", "emotion"):
            seconds = data.get("seconds")
            if seconds is not None and not (0 < float(seconds) <= MAX_SECONDS):
                raise ValueError(f"seconds must be between 0 and {MAX_SECONDS:g}")
            return await self.apply_prompt(message.text, kind=message.kind, seconds=seconds, loop=data.get("loop"))
        if message.kind == "interrupt":
            self.motion.clear(self._t, INTERRUPT_FADE)
            self.emotion.clear(self._t, INTERRUPT_FADE)
            return {"ok": True, "kind": "interrupt"}
        if message.kind == "option":
            return self._set_options(data)
        raise ControlNotSupported(f"driver 'text' does not accept {message.kind!r} messages")

    def _set_options(self, data: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(data) - set(RUNTIME_OPTIONS))
        if unknown:
            raise ValueError(f"options {unknown} cannot change while running; these can: {', '.join(RUNTIME_OPTIONS)}")
        self.options = self.parse_options({**self.options.model_dump(), **data})
        return {"ok": True, "kind": "option", "options": {k: getattr(self.options, k) for k in data}}

    # --- frames --------------------------------------------------------------------------

    def compose(self, i: int) -> FlameFrame:
        """Frame ``i``: idle plus the playing motion and emotion layers at t = i / rate."""
        t = i / self.rate
        self._t = (i + 1) / self.rate  # clips started from now on begin with the next frame
        base = self.idle.frame_at(i)
        pose = base.pose.copy()
        expr = base.expression.copy()
        motion, wm = self.motion.mix(t)
        if motion is not None:
            head, jaw = motion[:3], motion[3:6] / wm
            for joint, share in HEAD_SPLIT.items():
                pose[pose_slice(joint)] += share * head
            w = min(wm, 1.0)
            pose[pose_slice("jaw")] = (1 - w) * pose[pose_slice("jaw")] + w * jaw
        emotion, we = self.emotion.mix(t)
        if emotion is not None and emotion.shape[0] == expr.shape[0]:
            w = min(we, 1.0)
            blended = (1 - w) * expr + w * (emotion / we)
            names = self.context.head.expression_names or ()
            for blink in ("eye_blink_left", "eye_blink_right"):
                if blink in names:
                    k = names.index(blink)
                    blended[k] = max(expr[k], blended[k])
            expr = np.clip(blended, 0.0, 1.0)
        return FlameFrame(pose=np.clip(pose, -3.0, 3.0), expression=expr, eyelids=base.eyelids)

    async def frames(self) -> AsyncIterator[FlameFrame]:
        o = self.options
        if o.prompt:
            await self.apply_prompt(o.prompt)
        if o.emotion:
            await self.apply_prompt(o.emotion, kind="emotion")
        i = 0
        while True:
            yield self.compose(i)
            i += 1
