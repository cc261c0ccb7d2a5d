"""Driver layers: which FLAME channels each driver owns, and how a stack of them is combined.

A session runs a stack of drivers, bottom first. Every driver declares the channel groups it
drives (``Driver.channels``); a layer may narrow that. Each frame, for every group, the highest
active layer that owns the group wins, with a short cross-fade when the winner changes, so the
face never jumps. Emotion is additive by default: a layer that drives only emotion (text or
hotkeys set to emotion) adds its emotion channels on top of what the layers below show, so
lip-sync mouth shapes keep moving under a smile and a tracked face can look sadder than it is. Every value is clamped to the head's range.

The groups:

* ``head``: global and neck rotation, translation.
* ``jaw``: the jaw joint.
* ``mouth``: mouth expression channels (pucker, funnel, stretch, lip press, ...).
* ``eyes``: the eye joints (gaze), eyelids and the blink, wide and squint channels.
* ``emotion``: brows and emotion channels (smile, frown, brow raise, sneer, ...).

For a head whose expression channels are unnamed PCA components (FLAME), every expression
channel belongs to ``mouth`` and to ``emotion``; emotion layers add to the mouth layer's vector.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from .frame import EYELIDS_SIZE, POSE_SIZE, TRANSLATION_SIZE, FlameFrame, pose_slice
from .head import HeadSpace


class Channel(str, enum.Enum):
    """A group of FLAME channels that one layer owns at a time."""

    HEAD = "head"
    JAW = "jaw"
    MOUTH = "mouth"
    EYES = "eyes"
    EMOTION = "emotion"


ALL_CHANNELS: frozenset[Channel] = frozenset(Channel)

# Named channels of the built-in head, by group (the rest of a named head goes to emotion).
MOUTH_NAMES = frozenset({"mouth_pucker", "mouth_stretch", "cheek_puff", "lip_press", "mouth_funnel", "upper_lip_raise"})
EYE_NAMES = frozenset({"eye_blink_left", "eye_blink_right", "eye_wide", "eye_squint"})

# Clamping: radians per joint axis, expression and eyelid ranges.
HEAD_LIMIT = 1.2
JAW_RANGE = (-0.05, 0.6)
EYE_LIMIT = 0.6
TRANSLATION_LIMIT = 0.5
NAMED_EXPRESSION_RANGE = (-1.0, 1.5)
PCA_EXPRESSION_RANGE = (-4.0, 4.0)

DEFAULT_FADE_S = 0.25


class EmotionMode(str, enum.Enum):
    """How an emotion-only layer combines with the layers below it."""

    ADD = "add"
    OVERRIDE = "override"


def parse_channels(values: Iterable[str]) -> frozenset[Channel]:
    """Channel groups from their names; ValueError naming the unknown ones."""
    names = list(values)
    known = {c.value for c in Channel}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown channel group(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return frozenset(Channel(n) for n in names)


@dataclass(frozen=True)
class ChannelMap:
    """Where each group's values sit in a frame, for one head space.

    ``pose``, ``expression``, ``eyelids`` and ``translation`` map each group to the indices it
    owns in that array. For unnamed heads the expression indices of ``mouth`` and ``emotion``
    are the same (every channel)."""

    head: HeadSpace
    pose: Mapping[Channel, np.ndarray]
    expression: Mapping[Channel, np.ndarray]
    eyelids: Mapping[Channel, np.ndarray]
    translation: Mapping[Channel, np.ndarray]

    @classmethod
    def for_head(cls, head: HeadSpace) -> ChannelMap:
        empty = np.zeros(0, np.int64)
        pose = {c: empty for c in Channel}
        pose[Channel.HEAD] = np.r_[np.arange(POSE_SIZE)[pose_slice("global")], np.arange(POSE_SIZE)[pose_slice("neck")]]
        pose[Channel.JAW] = np.arange(POSE_SIZE)[pose_slice("jaw")]
        pose[Channel.EYES] = np.r_[np.arange(POSE_SIZE)[pose_slice("eye_left")], np.arange(POSE_SIZE)[pose_slice("eye_right")]]
        expression = {c: empty for c in Channel}
        if head.expression_names is None:
            everything = np.arange(head.n_expression)
            expression[Channel.MOUTH] = expression[Channel.EMOTION] = everything
        else:
            for group, names in _named_groups(head.expression_names).items():
                expression[group] = np.array([head.expression_names.index(n) for n in names], np.int64)
        eyelids = {c: (np.arange(EYELIDS_SIZE) if c is Channel.EYES else empty) for c in Channel}
        translation = {c: (np.arange(TRANSLATION_SIZE) if c is Channel.HEAD else empty) for c in Channel}
        return cls(head, pose, expression, eyelids, translation)

    @property
    def shared_expression(self) -> bool:
        """Whether mouth and emotion share expression channels (unnamed heads)."""
        return self.head.expression_names is None


def _named_groups(names: Sequence[str]) -> dict[Channel, list[str]]:
    groups: dict[Channel, list[str]] = {Channel.MOUTH: [], Channel.EYES: [], Channel.EMOTION: []}
    for name in names:
        group = Channel.MOUTH if name in MOUTH_NAMES else Channel.EYES if name in EYE_NAMES else Channel.EMOTION
        groups[group].append(name)
    return groups


@dataclass
class LayerInput:
    """One layer's contribution to a frame: its newest frame, the groups it owns now and
    whether it is active (running, not muted, input alive)."""

    key: str
    frame: FlameFrame | None
    channels: frozenset[Channel]
    active: bool
    fade_in: float | None = None  # seconds this layer takes to take a group over (None: the mixer's fade)


@dataclass
class Mixer:
    """Combines the layers' frames, frame by frame, with cross-fades.

    ``step(layers, dt)`` takes the layers bottom first and returns the combined frame (or None
    when no layer has produced a frame yet). Weights per (layer, group) move toward 1 for the
    group's winner and toward 0 for the others at ``dt / fade`` per frame; values are the
    weight-normalised blend, so a hand-over is a straight cross-fade."""

    head: HeadSpace
    fade: float = DEFAULT_FADE_S
    emotion: EmotionMode = EmotionMode.ADD
    _map: ChannelMap = field(init=False)
    _weights: dict[tuple[str, Channel], float] = field(default_factory=dict, init=False)
    _last: dict[str, FlameFrame] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._map = ChannelMap.for_head(self.head)

    def forget(self, key: str) -> None:
        """Drop a removed layer's weights and held frame."""
        self._last.pop(key, None)
        for k in [k for k in self._weights if k[0] == key]:
            del self._weights[k]

    def winners(self) -> dict[str, str | None]:
        """The layer with the largest weight per group (for stats)."""
        out: dict[str, str | None] = {}
        for group in Channel:
            best = max(((w, k) for (k, g), w in self._weights.items() if g is group and w > 0), default=None)
            out[group.value] = best[1] if best else None
        return out

    def step(self, layers: Sequence[LayerInput], dt: float) -> FlameFrame | None:
        for layer in layers:
            if layer.frame is not None:
                self._last[layer.key] = layer.frame
        known = [layer for layer in layers if layer.key in self._last]
        if not known:
            return None
        rate = self._rate(dt)
        adders = self._emotion_adders(known)
        pose = np.zeros(POSE_SIZE, np.float32)
        expression = np.zeros(self.head.n_expression, np.float32)
        eyelids = np.zeros(EYELIDS_SIZE, np.float32)
        translation = np.zeros(TRANSLATION_SIZE, np.float32)
        have_eyelids = have_translation = False
        for group in Channel:
            owners = [layer for layer in known if group in layer.channels and layer.key not in adders.get(group, ())]
            blend = self._fade_group(group, owners, dt, skip=adders.get(group, set()))
            for key, w in blend:
                frame = self._last[key]
                self._add(pose, frame.pose, self._map.pose[group], w)
                if not (group is Channel.EMOTION and self._map.shared_expression):
                    self._add(expression, _fit(frame.expression, self.head.n_expression), self._map.expression[group], w)
                if frame.eyelids is not None and len(self._map.eyelids[group]):
                    self._add(eyelids, frame.eyelids, self._map.eyelids[group], w)
                    have_eyelids = True
                if frame.translation is not None and len(self._map.translation[group]):
                    self._add(translation, frame.translation, self._map.translation[group], w)
                    have_translation = True
        self._add_emotion(expression, known, adders, rate)
        return FlameFrame(pose=_clamp_pose(pose), expression=self._clamp_expression(expression),
                          eyelids=np.clip(eyelids, 0.0, 1.0) if have_eyelids else None,
                          translation=np.clip(translation, -TRANSLATION_LIMIT, TRANSLATION_LIMIT) if have_translation else None)

    def _emotion_adders(self, layers: Sequence[LayerInput]) -> dict[Channel, set[str]]:
        """Layers that add emotion on top instead of competing for it: they drive only emotion,
        and some layer below them drives the emotion channels."""
        if self.emotion is EmotionMode.OVERRIDE:
            return {}
        adders: set[str] = set()
        below_has_emotion = False
        for layer in layers:  # bottom first
            if layer.channels == {Channel.EMOTION} and below_has_emotion:
                adders.add(layer.key)
            if Channel.EMOTION in layer.channels:
                below_has_emotion = True
        return {Channel.EMOTION: adders}

    def _rate(self, dt: float, fade: float | None = None) -> float:
        fade = self.fade if fade is None else fade
        return 1.0 if fade <= 0 else min(1.0, dt / fade)

    def _fade_group(self, group: Channel, owners: Sequence[LayerInput], dt: float,
                    skip: set[str]) -> list[tuple[str, float]]:
        active = [layer for layer in owners if layer.active]
        winner = active[-1].key if active else None
        if winner is None:  # nobody active: hold the highest owner's last frame
            winner = owners[-1].key if owners else None
        blend: list[tuple[str, float]] = []
        fresh = not any(self._weights.get((layer.key, group), 0.0) > 0 for layer in owners)
        rate = self._rate(dt)
        taking_over = next((layer for layer in owners if layer.key == winner), None)
        rate_in = self._rate(dt, taking_over.fade_in) if taking_over is not None else rate
        if rate_in > rate:  # the winner comes in faster than the fade: the others make way as fast
            rate = rate_in
        for layer in owners:
            key = (layer.key, group)
            target = 1.0 if layer.key == winner else 0.0
            w = target if fresh else self._weights.get(key, 0.0)
            w = min(target, w + rate_in) if target > w else max(target, w - rate)
            self._weights[key] = w
            if w > 0:
                blend.append((layer.key, w))
        current = {o.key for o in owners} | skip
        for key in [k for k in self._weights if k[1] is group and k[0] not in current]:
            self._weights[key] = max(0.0, self._weights[key] - rate)  # a layer that stopped owning the group
        total = sum(w for _, w in blend)
        return [(k, w / total) for k, w in blend] if total > 0 else []

    def _add_emotion(self, expression: np.ndarray, layers: Sequence[LayerInput], adders: dict[Channel, set[str]],
                     rate: float) -> None:
        """Emotion adders fade in and out on their own; shared heads also add the emotion winner."""
        idx = self._map.expression[Channel.EMOTION]
        for layer in layers:
            if layer.key not in adders.get(Channel.EMOTION, ()):
                continue
            key = (layer.key, Channel.EMOTION)
            target = 1.0 if layer.active else 0.0
            w = self._weights.get(key, 0.0)
            w = min(target, w + rate) if target > w else max(target, w - rate)
            self._weights[key] = w
            if w > 0:
                self._add(expression, _fit(self._last[layer.key].expression, self.head.n_expression), idx, w)

    @staticmethod
    def _add(out: np.ndarray, values: np.ndarray, idx: np.ndarray, weight: float) -> None:
        if len(idx):
            out[idx] += weight * values[idx]

    def _clamp_expression(self, expression: np.ndarray) -> np.ndarray:
        lo, hi = PCA_EXPRESSION_RANGE if self.head.expression_names is None else NAMED_EXPRESSION_RANGE
        return np.clip(expression, lo, hi)


def _fit(values: np.ndarray, n: int) -> np.ndarray:
    """A driver's expression vector cut or zero-padded to the head's channel count."""
    if values.shape[0] == n:
        return values
    out = np.zeros(n, np.float32)
    out[: min(n, values.shape[0])] = values[:n]
    return out


def _clamp_pose(pose: np.ndarray) -> np.ndarray:
    out = pose.copy()
    for joint in ("global", "neck"):
        out[pose_slice(joint)] = np.clip(out[pose_slice(joint)], -HEAD_LIMIT, HEAD_LIMIT)
    out[pose_slice("jaw")] = np.clip(out[pose_slice("jaw")], *JAW_RANGE)
    for joint in ("eye_left", "eye_right"):
        out[pose_slice(joint)] = np.clip(out[pose_slice(joint)], -EYE_LIMIT, EYE_LIMIT)
    return out
