"""The procedural corpus: captions paired with clips in the built-in head's space.

A clip is ``head`` (T, 3) and ``jaw`` (T, 3) axis-angle plus ``expression`` (T, 16) over the
built-in head's named channels, at ``CORPUS_FPS``. Axes follow the FlameFrame: x = pitch
(positive looks down), y = yaw (positive turns to the avatar's own left), z = roll (positive
raises the avatar's left ear, so a tilt to its own left is a negative roll). The jaw opens with
a positive pitch.

Every clip is drawn from a seeded generator with natural variation: amplitude, tempo, onset,
cross-axis leakage, slow drift and per-frame tracker noise like that of a face tracker.
Oscillations start the same way (a nod goes down first, a shake to the avatar's left, a wag
raises the left ear), so a caption's clips share a phase that the models can learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flamecast.plugins import BUILTIN_EXPRESSION_NAMES

from . import vocabulary as V

CORPUS_FPS = 25.0
MIN_SECONDS, MAX_SECONDS = 2.0, 10.0
AXIS = {"pitch": 0, "yaw": 1, "roll": 2}

# name: (axis, amplitude rad, frequency Hz, centre offset as a fraction of the amplitude)
OSCILLATION = {"nod": ("pitch", 0.16, 1.3, 0.3), "shake": ("yaw", 0.26, 1.6, 0.0),
               "wag": ("roll", 0.16, 0.9, 0.0), "bob": ("pitch", 0.09, 2.1, 0.3)}
# name: (axis, signed target angle rad)
DIRECTION = {"tilt_left": ("roll", -0.26), "tilt_right": ("roll", 0.26), "turn_left": ("yaw", 0.45),
             "turn_right": ("yaw", -0.45), "look_up": ("pitch", -0.3), "look_down": ("pitch", 0.3)}

EMOTION_MIX: dict[str, dict[str, float]] = {
    "happy": {"smile": 0.7, "eye_squint": 0.3, "brow_raise": 0.1},
    "smiling": {"smile": 0.55, "eye_squint": 0.15},
    "laughing": {"smile": 0.9, "eye_squint": 0.5, "mouth_stretch": 0.25},
    "sad": {"frown": 0.6, "brow_inner_raise": 0.55, "lip_press": 0.2},
    "angry": {"brow_furrow": 0.75, "lip_press": 0.45, "sneer": 0.25, "eye_squint": 0.15},
    "surprised": {"brow_raise": 0.8, "eye_wide": 0.65, "mouth_funnel": 0.3},
    "disgusted": {"sneer": 0.7, "upper_lip_raise": 0.6, "brow_furrow": 0.3, "frown": 0.2},
    "fearful": {"brow_inner_raise": 0.7, "mouth_stretch": 0.6, "eye_wide": 0.45, "brow_raise": 0.15},
    "neutral": {},
}
# The channels that must dominate for an emotion to count as expressed (evaluation).
EMOTION_KEYS: dict[str, tuple[str, ...]] = {
    "happy": ("smile", "eye_squint", "brow_raise"),
    "smiling": ("smile", "eye_squint", "brow_raise"),
    "laughing": ("smile", "eye_squint", "mouth_stretch"),
    "sad": ("frown", "brow_inner_raise", "lip_press"),
    "angry": ("brow_furrow", "lip_press", "sneer"),
    "surprised": ("brow_raise", "eye_wide", "mouth_funnel"),
    "disgusted": ("sneer", "upper_lip_raise", "brow_furrow"),
    "fearful": ("brow_inner_raise", "mouth_stretch", "eye_wide"),
    "neutral": (),
}


@dataclass(frozen=True)
class Spec:
    """What a caption asks for: a motion and/or an emotion with their modifiers."""

    motion: str | None = None
    emotion: str | None = None
    tempo: float = 1.0
    amplitude: float = 1.0
    count: int | None = None
    intensity: float = 1.0


@dataclass
class Clip:
    caption: str
    spec: Spec
    head: np.ndarray  # (T, 3)
    jaw: np.ndarray  # (T, 3)
    expression: np.ndarray  # (T, 16)
    fps: float = CORPUS_FPS
    extra: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return self.head.shape[0]


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _envelope(t: np.ndarray, start: float, end: float, ramp: float) -> np.ndarray:
    return smoothstep((t - start) / ramp) * smoothstep((end - t) / ramp)


def oscillation(name: str, t: np.ndarray, spec: Spec, rng: np.random.Generator) -> np.ndarray:
    axis, amp, freq, offset = OSCILLATION[name]
    amp *= spec.amplitude * rng.uniform(0.8, 1.2)
    freq *= spec.tempo * rng.uniform(0.93, 1.07)  # tempo varies little: a clip keeps its phase
    start = rng.uniform(0.0, 0.1)
    end = t[-1] - rng.uniform(0.1, 0.3)
    if spec.count is not None:
        end = min(end, start + spec.count / freq + 0.15)
    env = _envelope(t, start, end, 0.15)
    wave = np.sin(2 * np.pi * freq * (t - start)) + offset
    head = np.zeros((t.size, 3))
    head[:, AXIS[axis]] = amp * wave * env
    for other in set(range(3)) - {AXIS[axis]}:  # a little leakage into the other axes
        head[:, other] = 0.1 * amp * rng.uniform(-1, 1) * np.sin(2 * np.pi * freq * (t - start) + rng.uniform(0, 6)) * env
    return head


def direction(name: str, t: np.ndarray, spec: Spec, rng: np.random.Generator) -> np.ndarray:
    axis, target = DIRECTION[name]
    target *= spec.amplitude * rng.uniform(0.8, 1.2)
    ease = rng.uniform(0.45, 0.75) / spec.tempo
    duration = t[-1]
    if spec.count is None:
        starts = [rng.uniform(0.0, 0.3)]
        hold = max(0.3, duration - starts[0] - 2 * ease - rng.uniform(0.1, 0.4))
    else:
        hold = rng.uniform(0.25, 0.5) / spec.tempo
        period = max(duration / spec.count, 2 * ease + hold + 0.1)
        starts = [i * period + rng.uniform(0.0, 0.15) for i in range(spec.count)]
    signal = np.zeros_like(t)
    for s in starts:
        rise = smoothstep((t - s) / ease)
        fall = smoothstep((t - s - ease - hold) / ease)
        signal = np.maximum(signal, rise - fall)
    head = np.zeros((t.size, 3))
    head[:, AXIS[axis]] = target * signal
    leak_axis = rng.choice([a for a in range(3) if a != AXIS[axis]])
    head[:, leak_axis] = 0.12 * abs(target) * rng.uniform(-1, 1) * signal
    return head


def talking_jaw(t: np.ndarray, spec: Spec, rng: np.random.Generator, rate: float = 4.0) -> np.ndarray:
    """Syllable-like jaw openings: bumps at about ``rate`` per second with pauses."""
    jaw = np.zeros_like(t)
    s = rng.uniform(0.0, 0.3)
    while s < t[-1] - 0.2:
        width = rng.uniform(0.12, 0.22) / spec.tempo
        height = rng.uniform(0.08, 0.22) * spec.amplitude
        jaw = np.maximum(jaw, height * np.sin(np.pi * np.clip((t - s) / width, 0, 1)) ** 2)
        s += width + rng.exponential(0.1) / spec.tempo + (rng.uniform(0.3, 0.6) if rng.random() < 0.12 else 0)
    return jaw


def motion_clip(spec: Spec, t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Head and jaw axis-angle (T, 3) each for ``spec.motion`` (and emotion side effects)."""
    head = np.zeros((t.size, 3))
    jaw = np.zeros((t.size, 3))
    m = spec.motion
    if m in OSCILLATION:
        head = oscillation(m, t, spec, rng)
    elif m in DIRECTION:
        head = direction(m, t, spec, rng)
    elif m == "talk":
        jaw[:, 0] = talking_jaw(t, spec, rng)
        head[:, 0] = 0.02 * np.sin(2 * np.pi * rng.uniform(0.5, 1.2) * t + rng.uniform(0, 6))
        head[:, 1] = 0.02 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 6))
    if m is None and spec.emotion == "laughing":
        jaw[:, 0] = talking_jaw(t, Spec(tempo=1.3, amplitude=1.2), rng, rate=5.0)
        head[:, 0] = 0.04 * np.abs(np.sin(2 * np.pi * 2.5 * t))
    elif m is None and spec.emotion == "surprised":
        onset = smoothstep((t - rng.uniform(0.1, 0.4)) / 0.25)
        jaw[:, 0] = 0.14 * onset
        head[:, 0] = -0.06 * onset
    head += _drift(t, rng, 0.012)
    jaw[:, 0] += 0.02 + _drift(t, rng, 0.006)[:, 0]
    return head, jaw


def _drift(t: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    freqs = rng.uniform(0.05, 0.4, size=(2, 3))
    phases = rng.uniform(0, 2 * np.pi, size=(2, 3))
    return scale * np.sin(2 * np.pi * t[:, None, None] * freqs + phases).sum(axis=1) / 2


def expression_clip(spec: Spec, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Expression channels (T, 16) for ``spec.emotion`` (zeros when there is none)."""
    expr = np.zeros((t.size, len(BUILTIN_EXPRESSION_NAMES)))
    mix = EMOTION_MIX.get(spec.emotion or "neutral", {})
    if not mix:
        return expr
    onset = smoothstep((t - rng.uniform(0.0, 0.4)) / rng.uniform(0.3, 0.7))
    offset = smoothstep((t[-1] - t) / rng.uniform(0.3, 0.6))
    envelope = onset * offset * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6)))
    for name, level in mix.items():
        value = level * spec.intensity * rng.uniform(0.85, 1.15)
        expr[:, BUILTIN_EXPRESSION_NAMES.index(name)] = np.clip(value, 0, 1) * envelope
    if spec.emotion == "laughing":
        shake = 1 + 0.12 * np.sin(2 * np.pi * 5.0 * t)
        for name in ("smile", "eye_squint"):
            expr[:, BUILTIN_EXPRESSION_NAMES.index(name)] *= shake
    return np.clip(expr, 0, 1)


def tracker_noise(clip_len: int, rng: np.random.Generator, head: float = 0.006, expr: float = 0.012):
    """Per-frame noise like that of a face tracker (what the smoothing window removes)."""
    return (rng.normal(0, head, (clip_len, 3)), rng.normal(0, head / 2, (clip_len, 3)),
            rng.normal(0, expr, (clip_len, len(BUILTIN_EXPRESSION_NAMES))))


def render_clip(caption: str, spec: Spec, seconds: float, rng: np.random.Generator, noise: bool = True) -> Clip:
    n = max(2, int(round(seconds * CORPUS_FPS)))
    t = np.arange(n) / CORPUS_FPS
    head, jaw = motion_clip(spec, t, rng)
    expr = expression_clip(spec, t, rng)
    if noise:
        nh, nj, ne = tracker_noise(n, rng)
        head, jaw, expr = head + nh, jaw + nj, np.clip(expr + ne, -0.05, 1.0)
    return Clip(caption, spec, head.astype(np.float32), jaw.astype(np.float32), expr.astype(np.float32))


# --- captions ------------------------------------------------------------------------------

def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


@dataclass(frozen=True)
class Words:
    """The phrase tables to draw captions from (training or held-out)."""

    motions: dict
    emotions: dict
    tempo: dict
    amplitude: dict
    repeat: dict
    subjects: tuple
    joiners: tuple


TRAIN_WORDS = Words(V.MOTION_PHRASES, V.EMOTION_PHRASES, {k: m.words for k, m in V.TEMPO.items()},
                    {k: m.words for k, m in V.AMPLITUDE.items()}, {k: m.words for k, m in V.REPEAT.items()},
                    V.SUBJECTS, V.JOINERS)
HELDOUT_WORDS = Words(V.MOTION_HELDOUT, V.EMOTION_HELDOUT, V.TEMPO_HELDOUT, V.AMPLITUDE_HELDOUT,
                      V.REPEAT_HELDOUT, V.HELDOUT_SUBJECTS, V.HELDOUT_JOINERS)


def motion_phrase(motion: str, words: Words, rng: np.random.Generator) -> tuple[str, dict]:
    """A motion phrase with random modifiers; returns the phrase and the Spec fields it sets."""
    phrase = _pick(rng, words.motions[motion])
    fields: dict = {}
    adverbs = []
    if motion not in ("still",) and rng.random() < 0.45:
        key = _pick(rng, sorted(words.tempo))
        fields["tempo"] = V.TEMPO[key].tempo
        adverbs.append(_pick(rng, words.tempo[key]))
    if motion not in ("still",) and rng.random() < 0.35:
        key = _pick(rng, sorted(words.amplitude))
        fields["amplitude"] = V.AMPLITUDE[key].amplitude
        adverbs.append(_pick(rng, words.amplitude[key]))
    if (motion in V.OSCILLATING or motion in V.DIRECTED) and rng.random() < 0.3:
        key = _pick(rng, sorted(words.repeat))
        fields["count"] = key
        adverbs.append(_pick(rng, words.repeat[key]))
    rng.shuffle(adverbs)
    return " ".join([phrase, *adverbs]), fields


def _intensifiable(phrase: str) -> bool:
    """"looks ..."/"is ..."/"seems ..." phrases take an intensity word after their verb."""
    first, _, rest = phrase.partition(" ")
    return bool(rest) and first in ("looks", "is", "seems")


def _intensify(phrase: str, word: str) -> str:
    first, _, rest = phrase.partition(" ")
    return f"{first} {word} {rest}"


def emotion_phrase(emotion: str, words: Words, rng: np.random.Generator) -> tuple[str, dict]:
    """An emotion phrase; "looks ..."/"is ..." phrases may get an intensity word."""
    phrase = _pick(rng, words.emotions[emotion])
    if emotion != "neutral" and _intensifiable(phrase) and rng.random() < 0.35:
        key = _pick(rng, sorted(V.INTENSITY))
        return _intensify(phrase, _pick(rng, V.INTENSITY[key].words)), {"intensity": V.INTENSITY[key].amplitude}
    return phrase, {}


def _sentence(parts: list[str], words: Words, rng: np.random.Generator) -> str:
    """One caption from a motion and/or an emotion phrase: in either order, joined, with a subject."""
    if len(parts) == 2 and rng.random() < 0.4:
        parts.reverse()
    caption = _pick(rng, words.joiners).join(parts) if len(parts) == 2 else parts[0]
    return (_pick(rng, words.subjects) + caption).strip()


def caption_for(spec_kind: tuple[str | None, str | None], words: Words, rng: np.random.Generator) -> tuple[str, Spec]:
    """A caption for a motion and/or an emotion, and the Spec it describes."""
    motion, emotion = spec_kind
    parts, fields = [], {}
    if motion is not None:
        text, f = motion_phrase(motion, words, rng)
        parts.append(text)
        fields.update(f)
    if emotion is not None:
        text, f = emotion_phrase(emotion, words, rng)
        parts.append(text)
        fields.update(f)
    return _sentence(parts, words, rng), Spec(motion=motion, emotion=emotion, **fields)


def _key_of(table: dict, attr: str, value) -> object | None:
    """The modifier key whose ``attr`` equals ``value`` (None for the neutral value)."""
    return next((k for k, m in table.items() if getattr(m, attr) == value), None)


def paraphrase(spec: Spec, words: Words, rng: np.random.Generator) -> str:
    """Another caption for ``spec``: a random phrase for its motion and emotion with the words
    of its modifiers. Training gives each clip several of these so that the models learn what
    the captions of a clip share rather than one caption's wording."""
    parts = []
    if spec.motion is not None:
        adverbs = []
        for table, attr, value, choices in ((V.TEMPO, "tempo", spec.tempo, words.tempo),
                                            (V.AMPLITUDE, "amplitude", spec.amplitude, words.amplitude),
                                            (V.REPEAT, "count", spec.count, words.repeat)):
            key = _key_of(table, attr, value)
            if key is not None:
                adverbs.append(_pick(rng, choices[key]))
        rng.shuffle(adverbs)
        parts.append(" ".join([_pick(rng, words.motions[spec.motion]), *adverbs]))
    if spec.emotion is not None:
        key = _key_of(V.INTENSITY, "amplitude", spec.intensity)
        phrases = words.emotions[spec.emotion]
        if key is None:
            parts.append(_pick(rng, phrases))
        else:
            phrase = _pick(rng, [p for p in phrases if _intensifiable(p)])
            parts.append(_intensify(phrase, _pick(rng, V.INTENSITY[key].words)))
    return _sentence(parts, words, rng)


def draw_kind(rng: np.random.Generator) -> tuple[str | None, str | None]:
    """Motion only (45%), emotion only (25%) or both (30%)."""
    r = rng.random()
    motion = _pick(rng, V.MOTIONS) if r < 0.75 else None
    emotion = _pick(rng, V.EMOTIONS) if r >= 0.45 else None
    return motion, emotion


def draw_seconds(rng: np.random.Generator, low: float, high: float) -> float:
    """Clip lengths: 70% between ``low`` and the middle of the range (prompts ask for a few
    seconds most of the time), 30% up to ``high``."""
    mid = min(high, max(low, 6.0))
    return float(rng.uniform(low, mid) if rng.random() < 0.7 else rng.uniform(mid, high))


def generate(n: int, seed: int, words: Words = TRAIN_WORDS, seconds: tuple[float, float] = (MIN_SECONDS, MAX_SECONDS),
             noise: bool = True) -> list[Clip]:
    """``n`` seeded (caption, clip) pairs."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n):
        caption, spec = caption_for(draw_kind(rng), words, rng)
        clips.append(render_clip(caption, spec, draw_seconds(rng, *seconds), rng, noise=noise))
    return clips
