"""Evaluation of the text models on held-out paraphrases (``flamecast eval text``).

* Motion accuracy: the dominant rotation axis of the generated head motion and its direction
  (a signed hold, or an oscillation through rest) match the prompt; "hold still" must keep every
  axis under ``STILL_RMS`` (rad, root mean square) and "talk" must move the jaw (standard
  deviation of its opening at least ``TALK_JAW_STD`` and more than half the head's largest RMS).
* Emotion accuracy: the two strongest expression channels (mean over the clip) are among the
  emotion's key channels; "neutral" must keep every channel under ``NEUTRAL_MAX``.
* Jitter: mean absolute frame-to-frame acceleration (second difference) of the head and jaw
  axis-angle (rad/frame^2) and of the expression channels, at the models' frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flamecast.plugins import BUILTIN_EXPRESSION_NAMES

from . import corpus
from . import vocabulary as V
from .features import smooth

AXES = ("pitch", "yaw", "roll")
STILL_RMS = 0.03
TALK_JAW_STD = 0.015
NEUTRAL_MAX = 0.15
EXPECTED = {
    "nod": ("pitch", "osc"), "bob": ("pitch", "osc"), "shake": ("yaw", "osc"), "wag": ("roll", "osc"),
    "turn_left": ("yaw", "+"), "turn_right": ("yaw", "-"), "look_up": ("pitch", "-"), "look_down": ("pitch", "+"),
    "tilt_left": ("roll", "-"), "tilt_right": ("roll", "+"), "still": ("still", ""), "talk": ("talk", ""),
}
NONSENSE = ("asdf qwerty zxcv", "the quarterly tax report is due on friday", "purple elephant algorithm banana",
            "lorem ipsum dolor sit amet", "xkcd 927 vs rfc 2119", "il pleut des cordes ce matin",
            "今日はいい天気ですね", "der Zug fährt um acht Uhr ab", "1234567890", "%%%% ####")


def motion_signature(head: np.ndarray, jaw: np.ndarray) -> tuple[str, str]:
    """(axis, direction) of a head motion: direction "+"/"-" for a hold to one side, "osc"
    for a motion through rest; ("still", "") or ("talk", "") for those."""
    rms = np.sqrt(np.mean(head**2, axis=0))
    jaw_std = float(np.std(jaw[:, 0]))
    if jaw_std >= TALK_JAW_STD and jaw_std > 0.5 * rms.max():
        return "talk", ""
    if rms.max() < STILL_RMS:
        return "still", ""
    a = int(np.argmax(rms))
    s = head[:, a]
    hi, lo = float(s.max()), float(s.min())
    span = hi - lo
    if hi > 0.2 * span and lo < -0.2 * span:
        return AXES[a], "osc"
    return AXES[a], "+" if abs(hi) >= abs(lo) else "-"


def motion_correct(head: np.ndarray, jaw: np.ndarray, motion: str) -> bool:
    return motion_signature(head, jaw) == EXPECTED[motion]


def emotion_correct(expression: np.ndarray, emotion: str, names=BUILTIN_EXPRESSION_NAMES) -> bool:
    mean = expression.mean(axis=0)
    if emotion == "neutral":
        return bool(mean.max() < NEUTRAL_MAX)
    keys = {names.index(n) for n in corpus.EMOTION_KEYS[emotion]}
    top = np.argsort(mean)[::-1][:2]
    return bool(mean[top[0]] > 0.1 and set(top.tolist()) <= keys)


def jitter(x: np.ndarray) -> float:
    """Mean absolute second difference over time (axis 0) and channels."""
    if x.shape[0] < 3:
        return 0.0
    return float(np.mean(np.abs(x[2:] - 2 * x[1:-1] + x[:-2])))


@dataclass
class Case:
    caption: str
    spec: corpus.Spec


def heldout_cases(n: int, seed: int = 1234) -> list[Case]:
    """``n`` held-out captions (paraphrases and modifiers the training never used), each
    motion and each emotion equally often."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        r = i % 3
        motion = V.MOTIONS[(i // 3) % len(V.MOTIONS)] if r < 2 else None
        emotion = V.EMOTIONS[(i // 3) % len(V.EMOTIONS)] if r > 0 else None
        caption, spec = corpus.caption_for((motion, emotion), corpus.HELDOUT_WORDS, rng)
        cases.append(Case(caption, spec))
    return cases


@dataclass
class Report:
    motion_total: int = 0
    motion_ok: int = 0
    emotion_total: int = 0
    emotion_ok: int = 0
    pose_jitter: list[float] = field(default_factory=list)
    pose_jitter_smoothed: list[float] = field(default_factory=list)
    expr_jitter: list[float] = field(default_factory=list)
    expr_jitter_smoothed: list[float] = field(default_factory=list)
    data_pose_jitter: list[float] = field(default_factory=list)
    data_pose_jitter_smoothed: list[float] = field(default_factory=list)
    weak_heldout: int = 0
    weak_nonsense: int = 0
    nonsense_total: int = 0
    per_label: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)

    def add(self, label: str, ok: bool, caption: str, got=None) -> None:
        t, k = self.per_label.get(label, (0, 0))
        self.per_label[label] = (t + 1, k + int(ok))
        if not ok:
            self.failures.append((label, caption, got))

    def summary(self) -> dict:
        mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
        return {
            "motion_accuracy": self.motion_ok / max(1, self.motion_total), "motion_cases": self.motion_total,
            "emotion_accuracy": self.emotion_ok / max(1, self.emotion_total), "emotion_cases": self.emotion_total,
            "pose_jitter": mean(self.pose_jitter), "pose_jitter_smoothed": mean(self.pose_jitter_smoothed),
            "expression_jitter": mean(self.expr_jitter), "expression_jitter_smoothed": mean(self.expr_jitter_smoothed),
            "data_pose_jitter": mean(self.data_pose_jitter), "data_pose_jitter_smoothed": mean(self.data_pose_jitter_smoothed),
            "weak_match_heldout": self.weak_heldout, "weak_match_nonsense": f"{self.weak_nonsense}/{self.nonsense_total}",
            "per_label": {k: f"{ok}/{t}" for k, (t, ok) in sorted(self.per_label.items())},
        }


def evaluate(pipeline, cases: list[Case], *, seconds: float = 4.0, steps: int = 20, guidance: float = 2.5,
             smoothing: int = 3, progress: bool = False) -> Report:
    """Generate a clip per case and score it; also checks the weak-match flag on NONSENSE."""
    from tqdm import tqdm

    report = Report()
    for i, case in enumerate(tqdm(cases, desc="eval text", disable=not progress)):
        clip = pipeline.generate(case.caption, seconds=seconds, steps=steps, guidance=guidance, seed=i)
        report.weak_heldout += int(clip.match.weak)
        score_clip(report, case, clip, smoothing)
        data_jitter(report, case, seconds, smoothing, np.random.default_rng(i))
    for text in NONSENSE:
        report.nonsense_total += 1
        report.weak_nonsense += int(pipeline.generate(text, seconds=seconds, steps=steps).match.weak)
    return report


def data_jitter(report: Report, case: Case, seconds: float, smoothing: int, rng: np.random.Generator) -> None:
    """Jitter of the corpus clip for the case at the models' rate, with tracker noise, raw and
    smoothed: the reference for the models' figures."""
    c = corpus.render_clip(case.caption, case.spec, seconds, rng)
    pose = np.concatenate([c.head, c.jaw], axis=1)
    report.data_pose_jitter.append(jitter(pose[::2]))
    report.data_pose_jitter_smoothed.append(jitter(smooth(pose, smoothing)[::2]))


def score_clip(report: Report, case: Case, clip, smoothing: int) -> None:
    spec = case.spec
    if spec.motion is not None:
        ok = motion_correct(clip.head, clip.jaw, spec.motion)
        report.motion_total += 1
        report.motion_ok += int(ok)
        report.add(f"motion:{spec.motion}", ok, case.caption, motion_signature(clip.head, clip.jaw))
    if spec.emotion is not None:
        ok = emotion_correct(clip.expression, spec.emotion)
        report.emotion_total += 1
        report.emotion_ok += int(ok)
        report.add(f"emotion:{spec.emotion}", ok, case.caption)
    pose = np.concatenate([clip.head, clip.jaw], axis=1)
    report.pose_jitter.append(jitter(pose))
    report.pose_jitter_smoothed.append(jitter(smooth(pose, smoothing)))
    report.expr_jitter.append(jitter(clip.expression))
    report.expr_jitter_smoothed.append(jitter(smooth(clip.expression, smoothing)))
