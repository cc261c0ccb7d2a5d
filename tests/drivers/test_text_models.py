"""MotionDM/EmotionDM: rotations, the diffusion model, training (the loss falls), checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamecast.drivers.text import rotation
from flamecast.drivers.text.features import motion_features, motion_from_features, smooth
from flamecast.drivers.text.model import DMConfig, TextDM, ddim_timesteps, load_models
from flamecast.drivers.text.train import CHECKPOINT, TrainSettings, Trainer, build_data, train, with_noise

from .text_fakes import HashEncoder

TINY = {"latent": 32, "ff": 64, "heads": 2}


def test_6d_round_trip():
    rng = np.random.default_rng(0)
    aa = rng.uniform(-1.2, 1.2, (50, 3))
    back = rotation.sixd_to_axis_angle(rotation.axis_angle_to_6d(aa))
    assert np.allclose(back, aa, atol=1e-5)
    assert np.allclose(rotation.axis_angle_to_6d(np.zeros(3)), rotation.IDENTITY_6D)


def test_motion_features_round_trip():
    rng = np.random.default_rng(1)
    head, jaw = rng.uniform(-0.5, 0.5, (20, 3)), rng.uniform(0, 0.3, (20, 3))
    f = motion_features(head, jaw)
    assert f.shape == (20, 12)
    h2, j2 = motion_from_features(f)
    assert np.allclose(h2, head, atol=1e-5) and np.allclose(j2, jaw, atol=1e-5)


def test_smoothing_window_3_averages_neighbours():
    x = np.array([[0.0], [3.0], [0.0], [0.0]])
    assert np.allclose(smooth(x, 3)[:, 0], [1.0, 1.0, 1.0, 0.0])
    assert smooth(x, 1) is x


def test_ddim_timesteps_descend_to_zero():
    ts = ddim_timesteps(1000, 20)
    assert len(ts) == 20 and ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)


def test_sample_shape_and_guidance_batch():
    torch.manual_seed(0)
    model = TextDM(DMConfig(kind="motion", features=12, text_dim=8, mean=[0] * 12, std=[1] * 12, **TINY)).eval()
    out = model.sample(torch.randn(3, 8), 17, steps=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 17, 12) and torch.isfinite(out).all()


def _settings(tmp_path, steps, **kw):
    return TrainSettings(out=tmp_path, steps=steps, clips=96, batch=16, lr=3e-3, progress=False, checkpoint_every=10,
                         bank_size=50, model=TINY, seed=0, **kw)


def test_training_loss_falls_and_artefacts_load(tmp_path):
    torch.set_num_threads(1)
    summary = train(_settings(tmp_path, 100), encoder=HashEncoder())
    assert summary["steps"] == 100
    for kind in ("motion", "emotion"):
        assert summary["last_loss"][kind] < 0.7 * summary["first_loss"][kind], summary
    for name in ("config.json", "motion.safetensors", "emotion.safetensors", "bank.safetensors", "loss.png"):
        assert (tmp_path / name).is_file(), name
    models, config = load_models(tmp_path)
    assert models["motion"].cfg.features == 12 and models["emotion"].cfg.features == 16
    assert models["motion"].cfg.latent == 32 and config["encoder"] == "hash"
    assert config["models"]["motion"]["smoothing"] == 3 and config["models"]["motion"]["diffusion_steps"] == 1000


def test_each_clip_trains_on_its_caption_and_its_paraphrases(tmp_path):
    enc = HashEncoder()
    data = build_data(_settings(tmp_path, 1, paraphrases=3), enc)
    n = len(data.clips)
    assert data.motion.text.shape == (n, 3, enc.dim)
    assert np.allclose(data.motion.text[:, 0], enc.encode([c.caption for c in data.clips]))
    assert len(data.captions) > n  # the paraphrases add captions
    mean, std = data.motion.stats()
    idx = np.array([0, 1, 2])
    _, text, _ = data.motion.batch(idx, mean, std, caption=np.array([2, 0, 1]))
    assert np.array_equal(text, data.motion.text[idx, [2, 0, 1]])
    single = build_data(_settings(tmp_path, 1, paraphrases=1), enc)
    assert single.motion.text.shape == (n, 1, enc.dim)
    trainer = Trainer(_settings(tmp_path, 1), single, {})
    state = trainer.rng.bit_generator.state
    assert np.array_equal(trainer.draw_captions(5), np.zeros(5, int))
    assert trainer.rng.bit_generator.state == state  # one caption a clip draws nothing: old runs replay exactly


def test_caption_mix_blends_two_captions_of_a_clip(tmp_path):
    s = _settings(tmp_path, 1, paraphrases=4, caption_mix=True)
    data = build_data(s, HashEncoder())
    weights = Trainer(s, data, {}).draw_captions(500)
    assert weights.shape == (500, 4) and np.allclose(weights.sum(1), 1.0)
    assert ((weights > 0).sum(1) <= 2).all() and ((weights > 0).sum(1) == 2).mean() > 0.5
    mean, std = data.motion.stats()
    idx = np.array([3, 4])
    w = np.array([[0.25, 0.0, 0.75, 0.0], [0.0, 1.0, 0.0, 0.0]], np.float32)
    _, text, _ = data.motion.batch(idx, mean, std, caption=w)
    blend = 0.25 * data.motion.text[3, 0] + 0.75 * data.motion.text[3, 2]
    assert np.allclose(text[0], blend / np.linalg.norm(blend), atol=1e-6)
    assert np.allclose(text[1], data.motion.text[4, 1], atol=1e-6)
    plain = Trainer(_settings(tmp_path, 1, paraphrases=4), data, {}).draw_captions(50)
    assert plain.shape == (50,) and plain.max() < 4


def test_text_noise_moves_embeddings_by_its_length_and_keeps_them_unit(tmp_path):
    data = build_data(_settings(tmp_path, 1), HashEncoder())
    off = Trainer(_settings(tmp_path, 1), data, {})
    state = off.rng.bit_generator.state
    assert off.draw_text_noise(4, 384) is None and off.rng.bit_generator.state == state  # off: no draw
    dim = data.motion.text.shape[-1]
    noise = Trainer(_settings(tmp_path, 1, text_noise=0.8), data, {}).draw_text_noise(2000, dim)
    assert noise.shape == (2000, dim) and abs(np.linalg.norm(noise, axis=1).mean() - 0.8) < 0.02
    text = torch.from_numpy(data.motion.text[:, 0])
    moved = with_noise(text, torch.from_numpy(noise[: len(text)]))
    assert torch.allclose(moved.norm(dim=-1), torch.ones(len(text)), atol=1e-5)
    cos = (moved * text).sum(-1)
    assert (cos < 0.99).all() and cos.mean() > 0.6  # moved, but mostly still the caption
    torch.set_num_threads(1)
    summary = train(_settings(tmp_path / "n", 3, text_noise=0.8), encoder=HashEncoder())
    assert summary["text_noise"] == 0.8 and np.isfinite(summary["last_loss"]["motion"])


def test_token_states_condition_the_models_and_guidance_drops_them(tmp_path):
    from flamecast.drivers.text.model import Tokens
    from flamecast.drivers.text.pipeline import Text2Flame

    torch.set_num_threads(1)
    enc = HashEncoder()
    summary = train(_settings(tmp_path, 60, text_tokens=6), encoder=enc)
    assert summary["text_tokens"] == 6 and summary["last_loss"]["motion"] < 0.8 * summary["first_loss"]["motion"]
    models, config = load_models(tmp_path)
    model = models["motion"]
    assert model.cfg.text_tokens == 6 and "token_proj.weight" in {k.split("denoiser.")[-1] for k in model.state_dict()}
    tokens = Tokens.stack(enc.encode_tokens(["she nods slowly three times and smiles broadly today"]), 6)
    assert tokens.states.shape == (1, 6, enc.dim) and not tokens.pad.any()  # cut to the limit
    x, step, text = torch.randn(1, 10, 12), torch.tensor([500]), torch.from_numpy(enc.encode(["she nods"]))
    with torch.no_grad():
        with_tokens = model.denoiser(x, step, text, None, tokens)
        other = model.denoiser(x, step, text, None, Tokens.stack(enc.encode_tokens(["he turns right"]), 6))
        dropped = model.denoiser(x, step, text, None, tokens.dropped(torch.zeros(1)))
        none = model.denoiser(x, step, text, None, None)
    assert not torch.allclose(with_tokens, other)  # the words reach the output
    assert torch.allclose(dropped, none, atol=1e-5)  # no tokens and all tokens masked are the same
    pipe = Text2Flame(models, config, enc, None)
    a, b = pipe.generate("she nods", seconds=1.0, steps=3), pipe.generate("he turns right", seconds=1.0, steps=3)
    assert a.head.shape == b.head.shape and not np.allclose(a.head, b.head)


@pytest.mark.gpu
def test_training_on_a_gpu_writes_cpu_weights(tmp_path):
    summary = train(_settings(tmp_path, 30, text_tokens=4, text_noise=0.5, device="cuda"), encoder=HashEncoder())
    assert summary["device"] == "cuda" and summary["last_loss"]["motion"] < summary["first_loss"]["motion"]
    models, _ = load_models(tmp_path)
    assert all(p.device.type == "cpu" for m in models.values() for p in m.parameters())


def test_batches_are_full_with_fewer_clips_than_four_batches(tmp_path):
    s = _settings(tmp_path, 1, paraphrases=2)
    data = build_data(TrainSettings(**{**s.__dict__, "clips": 56}), HashEncoder())
    trainer = Trainer(s, data, {})
    for _ in range(20):
        idx = trainer.draw_batch()
        assert len(idx) == s.batch == len(set(idx.tolist())) and idx.max() < 56


def test_resume_continues_to_the_same_weights(tmp_path):
    torch.set_num_threads(1)
    enc = HashEncoder()
    straight, resumed = tmp_path / "a", tmp_path / "b"
    train(_settings(straight, 20), encoder=enc)
    train(_settings(resumed, 20, stop_at=10), encoder=enc)
    assert (resumed / CHECKPOINT).is_file()
    summary = train(_settings(resumed, 20, resume=True), encoder=enc)
    assert summary["steps"] == 20
    a, _ = load_models(straight)
    b, _ = load_models(resumed)
    for kind in ("motion", "emotion"):
        for (name, p), q in zip(a[kind].state_dict().items(), b[kind].state_dict().values()):
            assert torch.allclose(p, q, atol=1e-6), (kind, name)


def test_positions_are_clip_time_and_old_configs_keep_mdm_layout():
    from flamecast.drivers.text.model import time_positions

    pos = time_positions(50, 64, fps=12.5)
    assert pos.shape == (51, 64) and torch.all(pos[0] == 0)
    assert torch.allclose(pos[1, :32], torch.zeros(32)) and torch.allclose(pos[1, 32:], torch.ones(32))
    same_time = time_positions(100, 64, fps=25.0)
    assert torch.allclose(pos[1 + 10], same_time[1 + 20], atol=1e-5)  # 0.8 s is 0.8 s at any rate
    old = DMConfig.from_dict({"kind": "motion", "features": 12})
    assert old.positions == "index" and old.broadcast_cond is False
    assert DMConfig(kind="motion", features=12).positions == "seconds"
