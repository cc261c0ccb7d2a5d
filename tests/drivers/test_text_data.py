"""The procedural corpus, the held-out set, the evaluation metrics and the CelebV-Text loader."""

from __future__ import annotations

import numpy as np
import pytest

from flamecast.drivers.text import corpus, evaluate as E, vocabulary as V
from flamecast.drivers.text.celebv import CAPTIONED, CelebVError, load_celebv
from flamecast.drivers.text.features import smooth
from flamecast.plugins import BUILTIN_EXPRESSION_NAMES

T = np.arange(100) / 25.0


def test_corpus_is_seeded_and_in_the_head_space():
    a, b = corpus.generate(20, seed=3), corpus.generate(20, seed=3)
    assert [c.caption for c in a] == [c.caption for c in b]
    assert all(np.array_equal(x.head, y.head) for x, y in zip(a, b))
    for c in a:
        assert c.head.shape == c.jaw.shape == (c.frames, 3) and c.expression.shape == (c.frames, 16)
        assert corpus.MIN_SECONDS * 25 - 1 <= c.frames <= corpus.MAX_SECONDS * 25 + 1
        assert np.isfinite(c.head).all() and np.abs(c.head).max() < 1.2


def test_heldout_phrases_are_never_training_phrases():
    for train, held in ((V.MOTION_PHRASES, V.MOTION_HELDOUT), (V.EMOTION_PHRASES, V.EMOTION_HELDOUT)):
        for key in train:
            assert not set(train[key]) & set(held[key]), key
    train_captions = {c.caption for c in corpus.generate(3000, seed=0)}
    held = {c.caption for c in E.heldout_cases(200)}
    assert not train_captions & held


def _says(caption: str, phrases) -> bool:
    return any(p in caption for p in phrases)


def test_paraphrases_describe_the_same_spec_in_training_words():
    rng = np.random.default_rng(0)
    held_phrases = [p for table in (V.MOTION_HELDOUT, V.EMOTION_HELDOUT) for ps in table.values() for p in ps]
    distinct = 0
    for clip in corpus.generate(300, seed=5):
        spec = clip.spec
        captions = {corpus.paraphrase(spec, corpus.TRAIN_WORDS, rng) for _ in range(6)}
        distinct += len(captions) > 1
        for caption in captions:
            if spec.motion is not None:
                assert _says(caption, V.MOTION_PHRASES[spec.motion]), (caption, spec)
            if spec.emotion is not None:
                stems = [p.split(" ", 1)[-1] for p in V.EMOTION_PHRASES[spec.emotion]]
                assert _says(caption, stems), (caption, spec)
            for table, value in ((V.TEMPO, spec.tempo), (V.AMPLITUDE, spec.amplitude), (V.REPEAT, spec.count)):
                for key, mod in table.items():
                    wanted = value == (mod.tempo if table is V.TEMPO else mod.amplitude if table is V.AMPLITUDE else mod.count)
                    if wanted:
                        assert _says(caption, mod.words), (caption, spec)
            if spec.intensity != 1.0:
                key = next(k for k, m in V.INTENSITY.items() if m.amplitude == spec.intensity)
                assert _says(caption, [f" {w} " for w in V.INTENSITY[key].words]), (caption, spec)
            assert not _says(caption, held_phrases), caption
    assert distinct > 200


def _head(axis: int, signal: np.ndarray) -> np.ndarray:
    h = np.zeros((signal.size, 3))
    h[:, axis] = signal
    return h


def test_motion_signature_on_known_clips():
    still_jaw = np.zeros((100, 3))
    osc = 0.2 * np.sin(2 * np.pi * 1.2 * T)
    hold = 0.4 * corpus.smoothstep(T / 0.5)
    assert E.motion_signature(_head(0, osc + 0.05), still_jaw) == ("pitch", "osc")
    assert E.motion_signature(_head(1, osc), still_jaw) == ("yaw", "osc")
    assert E.motion_signature(_head(1, hold), still_jaw) == ("yaw", "+")
    assert E.motion_signature(_head(0, -hold), still_jaw) == ("pitch", "-")
    assert E.motion_signature(_head(2, -hold), still_jaw) == ("roll", "-")
    assert E.motion_signature(_head(0, 0.005 * np.sin(T)), still_jaw) == ("still", "")
    jaw = _head(0, 0.1 * np.abs(np.sin(2 * np.pi * 3 * T)))
    assert E.motion_signature(_head(0, 0.01 * np.sin(T)), jaw) == ("talk", "")
    assert E.motion_correct(_head(1, hold), still_jaw, "turn_left")
    assert not E.motion_correct(_head(1, -hold), still_jaw, "turn_left")


def test_emotion_correct_on_known_clips():
    def clip(**levels):
        x = np.zeros((50, 16))
        for name, v in levels.items():
            x[:, BUILTIN_EXPRESSION_NAMES.index(name)] = v
        return x

    assert E.emotion_correct(clip(smile=0.7, eye_squint=0.3), "happy")
    assert not E.emotion_correct(clip(smile=0.7, eye_squint=0.3), "sad")
    assert E.emotion_correct(clip(frown=0.6, brow_inner_raise=0.5), "sad")
    assert not E.emotion_correct(clip(frown=0.6, brow_inner_raise=0.5), "fearful")  # frown is no fear channel
    assert E.emotion_correct(clip(smile=0.05), "neutral")
    assert not E.emotion_correct(clip(smile=0.5), "neutral")


def test_jitter_of_known_signals():
    assert E.jitter(np.linspace(0, 1, 50)[:, None]) == pytest.approx(0.0, abs=1e-12)
    zigzag = np.array([0.0, 1.0] * 10)[:, None]
    assert E.jitter(zigzag) == pytest.approx(2.0)
    noisy = np.random.default_rng(0).normal(0, 0.01, (200, 3))
    assert E.jitter(smooth(noisy, 3)) < 0.5 * E.jitter(noisy)


def test_corpus_clips_pass_their_own_metrics():
    """The metrics are calibrated: the data itself scores (nearly) perfectly."""
    rng = np.random.default_rng(5)
    cases = E.heldout_cases(150)
    ok = total = 0
    for case in cases:
        c = corpus.render_clip(case.caption, case.spec, 4.0, rng)
        if case.spec.motion:
            total += 1
            ok += E.motion_correct(smooth(c.head, 3)[::2], smooth(c.jaw, 3)[::2], case.spec.motion)
        if case.spec.emotion:
            total += 1
            ok += E.emotion_correct(c.expression, case.spec.emotion)
    assert ok / total >= 0.97


# --- CelebV-Text loader ------------------------------------------------------------------

def _write_sample(root, clip_id: str, seconds: float, fps: float, captions: list[str], yaw0: float = 0.4):
    (root / "captions").mkdir(parents=True, exist_ok=True)
    (root / "flame").mkdir(exist_ok=True)
    (root / "captions" / f"{clip_id}.txt").write_text("\n".join(captions) + "\n\n", encoding="utf-8")
    n = int(seconds * fps)
    t = np.arange(n) / fps
    pose = np.zeros((n, 6))
    pose[:, 1] = yaw0  # the subject faces the camera at an angle
    pose[:, 0] = 0.2 * np.sin(2 * np.pi * t)  # and nods
    pose[:, 3] = 0.1
    exp = np.tile(np.linspace(-1, 1, 50), (n, 1)).astype(np.float32)
    np.savez(root / "flame" / f"{clip_id}.npz", pose=pose, exp=exp, fps=np.array(fps))


def test_celebv_loader_reads_the_documented_format(tmp_path):
    _write_sample(tmp_path, "a", 4.0, 30.0, ["A man nods.", "He nods his head."])
    _write_sample(tmp_path, "b", 12.0, 25.0, ["A woman is nodding."])
    _write_sample(tmp_path, "c", 1.0, 25.0, ["Too short."])
    (tmp_path / "captions" / "orphan.txt").write_text("no flame file\n")
    clips = load_celebv(tmp_path)
    by = {}
    for c in clips:
        by.setdefault(c.extra["clip_id"], []).append(c)
    assert sorted(by) == ["a", "b"]
    assert [c.caption for c in by["a"]] == ["A man nods.", "He nods his head."]
    assert [c.frames for c in by["b"]] == [250, 50]  # 12 s at 25 fps: a 10 s window and a 2 s one
    a = by["a"][0]
    assert a.frames == pytest.approx(100, abs=1)  # 30 fps resampled to 25
    assert a.expression.shape == (a.frames, 50) and a.spec.motion == CAPTIONED
    assert abs(np.median(a.head[:, 1])) < 0.02  # the camera angle is removed
    assert np.std(a.head[:, 0]) > 0.1  # the nod stays
    assert np.allclose(a.jaw[:, 0], 0.1, atol=1e-5)


def test_training_on_celebv_data_makes_flame_expression_models(tmp_path):
    from flamecast.drivers.text.model import load_models
    from flamecast.drivers.text.train import TrainSettings, train

    from .text_fakes import HashEncoder

    data = tmp_path / "data"
    _write_sample(data, "a", 4.0, 25.0, ["A man nods."])
    _write_sample(data, "b", 3.0, 25.0, ["Someone nods slowly."])
    out = tmp_path / "out"
    summary = train(TrainSettings(out=out, steps=3, batch=2, celebv=data, progress=False, bank_size=10,
                                  model={"latent": 16, "ff": 32, "heads": 2}), encoder=HashEncoder())
    assert summary["data"] == "celebv" and summary["clips"] == 2
    models, config = load_models(out)
    assert models["emotion"].cfg.features == 50 and config["expression_names"] is None


def test_celebv_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(CelebVError, match="captions/ and flame/"):
        load_celebv(tmp_path)
    (tmp_path / "captions").mkdir()
    (tmp_path / "flame").mkdir()
    (tmp_path / "captions" / "a.txt").write_text("a caption\n")
    np.savez(tmp_path / "flame" / "a.npz", pose=np.zeros((60, 6)))
    with pytest.raises(CelebVError, match="'exp'"):
        load_celebv(tmp_path)
    np.savez(tmp_path / "flame" / "a.npz", pose=np.zeros((60, 3)), exp=np.zeros((60, 50)))
    with pytest.raises(CelebVError, match=r"\(T, 6\)"):
        load_celebv(tmp_path)
