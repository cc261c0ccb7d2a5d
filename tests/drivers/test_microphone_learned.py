"""The learned-model slot: a tiny FaceFormer checkpoint in FaceFormer's own layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from flamecast.drivers.microphone import MicrophoneDriver
from flamecast.drivers.microphone.faceformer import load_faceformer
from flamecast.drivers.microphone.learned import LearnedModelError, find_learned, load_tracker
from flamecast.drivers.microphone.speech import write_wav
from flamecast.plugins import BUILTIN_EXPRESSION_NAMES, pose_slice
from flamecast.plugins.testing import DriverHarness

torch.set_num_threads(1)
N_VERTS, FEATURE_DIM, SUBJECTS = 12, 16, 3
UPPER, LOWER, LEFT, RIGHT = [0, 1], [2, 3], [4], [5]


class ReferenceFaceformer(nn.Module):
    """The attribute layout of FaceFormer's ``Faceformer.__init__`` (faceformer.py), built here
    independently of the loader, with a tiny transformers Wav2Vec2Model."""

    def __init__(self):
        super().__init__()
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                             conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), conv_bias=False,
                             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
        self.audio_encoder = Wav2Vec2Model(cfg)
        self.audio_feature_map = nn.Linear(32, FEATURE_DIM)
        self.vertice_map = nn.Linear(N_VERTS * 3, FEATURE_DIM)
        pe = torch.zeros(1, 30 * (600 // 30 + 1), FEATURE_DIM)
        self.PPE = nn.Module()
        self.PPE.register_buffer("pe", pe)
        layer = nn.TransformerDecoderLayer(d_model=FEATURE_DIM, nhead=4, dim_feedforward=2 * FEATURE_DIM, batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(layer, num_layers=1)
        self.vertice_map_r = nn.Linear(FEATURE_DIM, N_VERTS * 3)
        self.obj_vector = nn.Linear(SUBJECTS, FEATURE_DIM, bias=False)


def legacy_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """As FaceFormer's released .pth files store it: weight norm as weight_g / weight_v."""
    out = {}
    for k, v in model.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        out[k] = v
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    ref = ReferenceFaceformer()
    with torch.no_grad():  # FaceFormer's output layer: offsets; open the lips by 1 cm, always
        ref.vertice_map_r.weight.zero_()
        bias = torch.zeros(N_VERTS, 3)
        bias[UPPER, 1], bias[LOWER, 1] = 0.005, -0.005
        ref.vertice_map_r.bias.copy_(bias.reshape(-1))
    folder = tmp_path_factory.mktemp("learned")
    state = legacy_state_dict(ref)
    assert "audio_encoder.encoder.pos_conv_embed.conv.weight_g" in state
    torch.save(state, folder / "faceformer.pth")
    config = {"format": "faceformer", "checkpoint": "faceformer.pth", "dataset": "vocaset", "period": 30,
              "encoder_config": {"num_attention_heads": 2, "conv_stride": [5, 2]},
              "mouth": {"upper": UPPER, "lower": LOWER, "left": LEFT, "right": RIGHT, "open": 0.01, "wide": 0.005},
              "window_s": 1.0, "hop_s": 0.2, "lookahead_s": 0.1}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, ref


def test_loads_the_layout_and_matches_the_reference_encoder(checkpoint):
    folder, ref = checkpoint
    model = load_faceformer(folder / "faceformer.pth", encoder_overrides={"num_attention_heads": 2, "conv_stride": [5, 2]})
    assert model.config.vertice_dim == N_VERTS * 3 and model.config.n_subjects == SUBJECTS
    audio = torch.randn(1, 16000)
    with torch.no_grad():
        ours = model.audio_encoder(audio).last_hidden_state
        theirs = ref.eval().audio_encoder(audio).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-5)
    offsets = model.predict(audio)
    assert offsets.shape[0] in (29, 30) and offsets.shape[1] == N_VERTS * 3  # 1 s at 30 fps (vocaset)
    assert torch.allclose(offsets.reshape(-1, N_VERTS, 3)[:, LOWER, 1], torch.tensor(-0.005), atol=1e-5)


def test_a_checkpoint_in_another_layout_is_a_clear_error(tmp_path, checkpoint):
    folder, _ = checkpoint
    state = torch.load(folder / "faceformer.pth", weights_only=True)
    state["decoder.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="unexpected"):
        load_faceformer(tmp_path / "other.pth", encoder_overrides={"num_attention_heads": 2, "conv_stride": [5, 2]})
    (tmp_path / "config.json").write_text(json.dumps({"format": "faceformer", "checkpoint": "other.pth"}))
    with pytest.raises(LearnedModelError, match="mouth"):
        load_tracker(find_learned(tmp_path))


async def test_the_driver_uses_the_learned_model_when_present(checkpoint, tmp_path):
    folder, _ = checkpoint
    wav = tmp_path / "tone.wav"
    t = np.arange(16000 * 2) / 16000
    write_wav(wav, 0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32), 16000)
    harness = DriverHarness(MicrophoneDriver, {"file": str(wav), "learned_dir": str(folder)})
    frames = [f async for f in harness.driver.frames()]
    await harness.close()
    jaw = np.array([f.pose[pose_slice("jaw")][0] for f in frames])
    assert len(frames) == 50
    assert jaw[-25:].min() > 0.2  # the checkpoint's lips are 1 cm apart: fully open
    builtin = DriverHarness(MicrophoneDriver, {"file": str(wav), "learned_dir": str(folder), "model": "builtin"})
    frames = [f async for f in builtin.driver.frames()]
    assert max(f.pose[pose_slice("jaw")][0] for f in frames) < 0.2


class LoudnessJaw(nn.Module):
    """A stand-in speech-to-ARKit network: jawOpen from loudness, mouthPucker constant, 30 fps."""

    def forward(self, audio):
        n = audio.shape[1] // 533
        level = audio[:, : n * 533].reshape(1, n, 533).abs().mean(-1, keepdim=True)
        return torch.cat([level * 10, level * 0 + 0.5], -1)


async def test_an_onnx_model_with_arkit_outputs(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")  # torch's exporter needs it
    folder = tmp_path / "onnx"
    folder.mkdir()
    torch.onnx.export(LoudnessJaw(), (torch.zeros(1, 16000),), str(folder / "model.onnx"), input_names=["audio"],
                      output_names=["blendshapes"], dynamic_axes={"audio": {1: "n"}, "blendshapes": {1: "frames"}}, dynamo=False)
    config = {"format": "onnx", "model": "model.onnx", "fps": 30, "outputs": "arkit", "names": ["jawOpen", "mouthPucker"],
              "window_s": 1.0}
    (folder / "config.json").write_text(json.dumps(config))
    wav = tmp_path / "half.wav"
    t = np.arange(16000 * 2) / 16000
    write_wav(wav, np.where(t < 1, 0.0, 0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    harness = DriverHarness(MicrophoneDriver, {"file": str(wav), "learned_dir": str(folder), "gate_db": -120})
    frames = [f async for f in harness.driver.frames()]
    await harness.close()
    jaw = np.array([f.pose[pose_slice("jaw")][0] for f in frames])
    assert jaw[5:20].max() < 0.02 and jaw[-20:].min() > 0.2
    pucker = np.array([f.expression[BUILTIN_EXPRESSION_NAMES.index("mouth_pucker")] for f in frames])
    assert pucker[-20:].min() == pytest.approx(0.5, abs=0.01)
