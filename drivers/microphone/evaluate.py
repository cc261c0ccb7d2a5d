"""``flamecast eval microphone``: lip-sync accuracy, latency and CPU cost on held-out speech.

The speech is synthesised with voices and sentences that training never used. Its phoneme
timings give the ground truth: mouth open during vowels, closed during pauses, p/b/m and hums.
The model runs as the driver runs it (16-40 ms chunks at espeak-ng's 22.05 kHz, resampled on
the fly) and the jaw opening is compared with that timeline at the frame rate:

* ``correlation``: Pearson correlation of jaw opening and the open/closed timeline over frames
  labelled open or closed (other consonants are left out);
* ``correlation_speech``: the same without pauses (vowels against p/b/m and hums only);
* ``correlation_loud``: the audio 20 dB louder, clipped;
* ``lag_ms``: the shift of the jaw against the timeline that correlates best (0 = aligned);
* ``latency_ms``: algorithmic latency (lookahead + one feature hop), by construction;
* ``cpu_ms_per_frame``: CPU time (this thread's, so other load on the machine does not count)
  to process one frame's audio and build the frame, torch on one thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import corpus
from .audio import to_float_mono
from .features import HOP
from .model import VisemeNet, shipped_weights_dir
from .speech import Speaker, Voice
from .targets import label_timeline
from .tracker import MouthTracker

PAD_S = 0.4


@dataclass(frozen=True)
class EvalSettings:
    weights: Path | None = None
    fps: float = 25.0
    limit: int | None = None      # utterances (None: every sentence x voice)
    chunk_ms: float = 20.0
    gain_db: float = 20.0
    seed: int = 123


def eval_items(limit: int | None, seed: int) -> list[tuple[str, Voice]]:
    rng = np.random.default_rng(seed)
    texts = list(corpus.EVAL_SENTENCES) + list(corpus.EVAL_HUMS)
    items = [(t, corpus.voice_variant(v, rng)) for v in corpus.EVAL_VOICE_NAMES for t in texts]
    if limit is not None:
        order = rng.permutation(len(items))[:limit]
        items = [items[i] for i in sorted(order)]
    return items


def run_tracker(model: VisemeNet, audio: np.ndarray, rate: int, chunk_ms: float, fps: float):
    """Rows (t, jaw) at 100/s as the driver's tracker makes them, and the CPU time per video
    frame (the audio of one frame pushed, then the frame's state read)."""
    from .driver import MicrophoneOptions, build_frame
    from .prosody import Prosody
    from flamecast.plugins import builtin_head_space

    tracker, prosody, head = MouthTracker(model), Prosody(fps, 0), builtin_head_space()
    options = MicrophoneOptions.model_construct(**{k: f.default for k, f in MicrophoneOptions.model_fields.items()})
    step = max(1, int(rate / fps))
    times, rows, seen = [], [], 0.0
    for start in range(0, audio.size, step):
        t0 = time.thread_time()
        for s in range(start, min(start + step, audio.size), max(1, int(rate * chunk_ms / 1000))):
            tracker.push(audio[s:min(s + int(rate * chunk_ms / 1000), start + step)], rate)
        state = tracker.latest()
        build_frame(head, state, prosody.step(state.level_db if state else -100, state.f0 if state else 0), options)
        times.append(time.thread_time() - t0)
        for t, values, *_ in tracker._rows:
            if t > seen:
                rows.append((t, values[0]))
        seen = rows[-1][0] if rows else seen
    return np.array(rows), np.array(times[5:]) * 1e3


def frame_jaw(rows: np.ndarray, frame_times: np.ndarray, span: float = 0.02) -> np.ndarray:
    """The jaw a frame shows at each time: mean of the rows in (t - span, t] (as the driver)."""
    t, jaw = rows[:, 0], rows[:, 1]
    out = np.zeros(frame_times.size, np.float32)
    for i, ft in enumerate(frame_times):
        sel = (t > ft - span) & (t <= ft + 1e-9)
        out[i] = jaw[sel].mean() if sel.any() else jaw[np.argmin(np.abs(t - ft))]
    return out


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    ok = ~np.isnan(y)
    if ok.sum() < 3 or np.std(y[ok]) == 0 or np.std(x[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def evaluate(s: EvalSettings, progress: bool = True) -> dict:
    from tqdm import tqdm

    model = VisemeNet.from_pretrained(s.weights or shipped_weights_dir())
    speaker = Speaker()
    jaw, labels, speech, loud, cpu = [], [], [], [], []
    rows_all, lag_labels = [], []
    for text, voice in tqdm(eval_items(s.limit, s.seed), desc="eval microphone", disable=not progress):
        u = speaker.say(text, voice)
        pad = np.zeros(int(PAD_S * u.rate), np.float32)
        audio = np.concatenate([pad, u.audio, pad])
        n_frames = int((audio.size / u.rate - 0.2) * s.fps)
        frame_t = (np.arange(n_frames) + 0.5) / s.fps
        rows, times = run_tracker(model, audio, u.rate, s.chunk_ms, s.fps)
        utt_t = frame_t - PAD_S
        jaw.append(frame_jaw(rows, frame_t))
        labels.append(label_timeline(u.phonemes, u.audio.size, u.rate, utt_t))
        speech.append(label_timeline(u.phonemes, u.audio.size, u.rate, utt_t, pauses=False))
        cpu.append(times)
        rows_all.append(rows)
        lag_labels.append(label_timeline(u.phonemes, u.audio.size, u.rate, rows[:, 0] - PAD_S) if rows.size else np.zeros(0))
        loud_audio = np.clip(to_float_mono(audio) * 10 ** (s.gain_db / 20), -1, 1)
        loud.append(frame_jaw(run_tracker(model, loud_audio, u.rate, s.chunk_ms, s.fps)[0], frame_t))
    return summarise(model, s, jaw, labels, speech, loud, cpu, rows_all, lag_labels)


def best_lag_ms(rows_all, lag_labels, max_ms: int = 150) -> float:
    """The shift (ms, rows of 10 ms) of the jaw against the label timeline that correlates best;
    positive = the jaw moves after the sound."""
    best, best_c = 0, -2.0
    for k in range(-max_ms // 10, max_ms // 10 + 1):
        xs, ys = [], []
        for rows, lab in zip(rows_all, lag_labels):
            jaw = rows[:, 1]
            if k >= 0:
                xs.append(jaw[k:]), ys.append(lab[: lab.size - k])
            else:
                xs.append(jaw[:k]), ys.append(lab[-k:])
        c = _corr(np.concatenate(xs), np.concatenate(ys))
        if c > best_c:
            best, best_c = k, c
    return float(best * HOP / 16)


def summarise(model, s, jaw, labels, speech, loud, cpu, rows_all, lag_labels) -> dict:
    jaw, labels, speech, loud, cpu = (np.concatenate(x) for x in (jaw, labels, speech, loud, cpu))
    vowel, closed_speech = speech == 1, speech == 0
    pause = (labels == 0) & np.isnan(speech)
    c = model.config
    return {
        "utterances": len(rows_all),
        "frames": int(jaw.size),
        "labelled_frames": int((~np.isnan(labels)).sum()),
        "correlation": round(_corr(jaw, labels), 3),
        "correlation_speech": round(_corr(jaw, speech), 3),
        "correlation_loud": round(_corr(loud, labels), 3),
        "jaw_mean": {"vowels": round(float(jaw[vowel].mean()), 3), "p_b_m_hums": round(float(jaw[closed_speech].mean()), 3),
                     "pauses": round(float(jaw[pause].mean()), 3),
                     "p_b_m_hums_loud": round(float(loud[closed_speech].mean()), 3),
                     "vowels_loud": round(float(loud[vowel].mean()), 3)},
        "lag_ms": best_lag_ms(rows_all, lag_labels),
        "latency_ms": round(c.latency_s * 1e3, 1),
        "lookahead_ms": round(c.lookahead_s * 1e3, 1),
        "cpu_ms_per_frame": {"mean": round(float(cpu.mean()), 3), "p95": round(float(np.percentile(cpu, 95)), 3)},
        "fps": s.fps,
        "voices": list(corpus.EVAL_VOICE_NAMES),
    }
