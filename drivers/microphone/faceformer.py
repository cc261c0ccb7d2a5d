"""FaceFormer (Fan et al., CVPR 2022) in its checkpoint layout, for inference.

The module names match FaceFormer's ``Faceformer`` class, so its ``torch.save(state_dict)``
files load as they are: ``audio_encoder.*`` (a transformers ``Wav2Vec2Model``, or ``HubertModel``),
``audio_feature_map``, ``vertice_map``, ``PPE.pe``, ``transformer_decoder.layers.0.*``,
``vertice_map_r`` and ``obj_vector``. Weight-norm keys of older transformers
(``pos_conv_embed.conv.weight_g/_v``) are renamed to today's parametrization.

``predict`` returns per-frame vertex offsets from the template (FaceFormer adds the template at
the very end, so the offsets need no template): (frames, vertice_dim).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

N_HEAD = 4
MAX_SEQ_LEN = 600


@dataclass(frozen=True)
class FaceFormerConfig:
    dataset: str = "vocaset"    # "vocaset": audio features interpolated to 30 fps; "BIWI": 2 per frame at 25 fps
    feature_dim: int = 64
    vertice_dim: int = 15069
    period: int = 30
    n_subjects: int = 8
    subject: int = 0            # which training speaker's style

    @property
    def fps(self) -> float:
        return 25.0 if self.dataset == "BIWI" else 30.0


def biased_mask(n_head: int, max_seq_len: int, period: int) -> torch.Tensor:
    """FaceFormer's causal ALiBi-style temporal bias (periodic)."""
    def slopes(n: int) -> list[float]:
        def power_of_2(m: int) -> list[float]:
            start = 2 ** (-2 ** -(math.log2(m) - 3))
            return [start * start ** i for i in range(m)]
        if math.log2(n).is_integer():
            return power_of_2(n)
        closest = 2 ** math.floor(math.log2(n))
        return power_of_2(closest) + slopes(2 * closest)[0::2][: n - closest]

    bias = torch.arange(0, max_seq_len, period).unsqueeze(1).repeat(1, period).view(-1) // period
    bias = -torch.flip(bias, dims=[0])
    alibi = torch.zeros(max_seq_len, max_seq_len)
    for i in range(max_seq_len):
        alibi[i, : i + 1] = bias[-(i + 1):]
    alibi = torch.tensor(slopes(n_head)).unsqueeze(1).unsqueeze(1) * alibi.unsqueeze(0)
    mask = (torch.triu(torch.ones(max_seq_len, max_seq_len)) == 1).transpose(0, 1)
    mask = mask.float().masked_fill(mask == 0, float("-inf")).masked_fill(mask == 1, 0.0)
    return mask.unsqueeze(0) + alibi


def alignment_mask(dataset: str, t: int, s: int) -> torch.Tensor:
    mask = torch.ones(t, s)
    for i in range(t):
        if dataset == "BIWI":
            mask[i, i * 2: i * 2 + 2] = 0
        else:
            mask[i, i] = 0
    return mask == 1


class PeriodicPositionalEncoding(nn.Module):
    def __init__(self, d_model: int, period: int, max_seq_len: int = MAX_SEQ_LEN) -> None:
        super().__init__()
        pe = torch.zeros(period, d_model)
        position = torch.arange(0, period, dtype=torch.float).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe.unsqueeze(0).repeat(1, max_seq_len // period + 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.size(1)]


class FaceFormer(nn.Module):
    def __init__(self, config: FaceFormerConfig, encoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        d = config.feature_dim
        self.audio_encoder = encoder
        self.audio_feature_map = nn.Linear(encoder.config.hidden_size, d)
        self.vertice_map = nn.Linear(config.vertice_dim, d)
        self.PPE = PeriodicPositionalEncoding(d, config.period)
        layer = nn.TransformerDecoderLayer(d_model=d, nhead=N_HEAD, dim_feedforward=2 * d, batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(layer, num_layers=1)
        self.vertice_map_r = nn.Linear(d, config.vertice_dim)
        self.obj_vector = nn.Linear(config.n_subjects, d, bias=False)
        self._mask = biased_mask(N_HEAD, MAX_SEQ_LEN, config.period)

    @property
    def feature_rate(self) -> float:
        """Audio features per second of 16 kHz audio (50 for wav2vec2/HuBERT base and large)."""
        return 16000.0 / math.prod(self.audio_encoder.config.conv_stride)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """(1, samples) 16 kHz -> (1, S, feature_dim): 30/s for vocaset, 2 per frame (50/s) for BIWI."""
        enc = self.audio_encoder
        h = enc.feature_extractor(audio).transpose(1, 2)
        if self.config.dataset == "BIWI":
            h = h[:, : h.shape[1] // 2 * 2]
        else:
            n = max(1, int(h.shape[1] / self.feature_rate * 30))
            h = F.interpolate(h.transpose(1, 2), size=n, align_corners=True, mode="linear").transpose(1, 2)
        h = enc.feature_projection(h)
        h = h[0] if isinstance(h, tuple) else h
        return self.audio_feature_map(enc.encoder(h).last_hidden_state)

    @torch.inference_mode()
    def predict(self, audio: torch.Tensor) -> torch.Tensor:
        """Autoregressive decoding as FaceFormer's ``predict``: (frames, vertice_dim) offsets."""
        c = self.config
        memory = self.encode(audio)
        frames = memory.shape[1] // 2 if c.dataset == "BIWI" else memory.shape[1]
        frames = min(frames, MAX_SEQ_LEN)
        one_hot = torch.zeros(1, c.n_subjects)
        one_hot[0, c.subject] = 1
        style = self.obj_vector(one_hot).unsqueeze(1)
        emb, out = style, None
        for i in range(frames):
            x = self.PPE(emb)
            tgt = self._mask[:, : x.shape[1], : x.shape[1]]
            mem = alignment_mask(c.dataset, x.shape[1], memory.shape[1])
            out = self.vertice_map_r(self.transformer_decoder(x, memory, tgt_mask=tgt, memory_mask=mem))
            emb = torch.cat([emb, self.vertice_map(out[:, -1]).unsqueeze(1) + style], 1)
        return out[0] if out is not None else torch.zeros(0, c.vertice_dim)


# --- checkpoint loading --------------------------------------------------------------------

_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
_OPTIONAL = ("audio_encoder.masked_spec_embed",)


def rename_legacy_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``...pos_conv_embed.conv.weight_g/_v`` (transformers < 4.31) -> the parametrization names."""
    out = {}
    for key, value in state.items():
        m = re.match(r"(.*pos_conv_embed\.conv)\.(weight_g|weight_v)$", key)
        out[f"{m.group(1)}.{_WEIGHT_NORM[m.group(2)]}" if m else key] = value
    return out


def encoder_config(state: dict[str, torch.Tensor], overrides: dict, kind: str = "wav2vec2"):
    """A transformers Wav2Vec2Config/HubertConfig from the checkpoint's shapes (+ ``overrides``)."""
    from transformers import HubertConfig, Wav2Vec2Config

    p = "audio_encoder."
    convs = sorted({int(m.group(1)) for k in state if (m := re.match(rf"{p}feature_extractor\.conv_layers\.(\d+)\.conv\.weight$", k))})
    conv_w = [state[f"{p}feature_extractor.conv_layers.{i}.conv.weight"] for i in convs]
    hidden = state[f"{p}feature_projection.projection.weight"].shape[0]
    layers = {int(m.group(1)) for k in state if (m := re.match(rf"{p}encoder\.layers\.(\d+)\.", k))}
    pos = state.get(f"{p}encoder.pos_conv_embed.conv.parametrizations.weight.original1")
    if pos is None:
        pos = state[f"{p}encoder.pos_conv_embed.conv.weight"]
    layer_norm_all = all(f"{p}feature_extractor.conv_layers.{i}.layer_norm.weight" in state for i in convs)
    default_strides = (5, 2, 2, 2, 2, 2, 2)
    values = dict(
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=state[f"{p}encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0],
        conv_dim=[w.shape[0] for w in conv_w],
        conv_kernel=[w.shape[2] for w in conv_w],
        conv_stride=list(default_strides[: len(convs)]) if len(convs) <= 7 else [2] * len(convs),
        conv_bias=f"{p}feature_extractor.conv_layers.0.conv.bias" in state,
        feat_extract_norm="layer" if layer_norm_all else "group",
        num_conv_pos_embeddings=pos.shape[2],
        num_conv_pos_embedding_groups=hidden // pos.shape[1],
    )
    values.update(overrides)
    return (HubertConfig if kind == "hubert" else Wav2Vec2Config)(**values)


def load_faceformer(path, config: FaceFormerConfig | None = None, encoder_overrides: dict | None = None,
                    kind: str = "wav2vec2") -> FaceFormer:
    """Load a FaceFormer ``.pth`` state dict (never pickled objects: ``weights_only``)."""
    from transformers import HubertModel, Wav2Vec2Model

    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    state = rename_legacy_keys(raw.get("state_dict", raw) if isinstance(raw, dict) else raw)
    if config is None:
        config = FaceFormerConfig()
    config = FaceFormerConfig(**{**config.__dict__,
                                 "feature_dim": state["audio_feature_map.weight"].shape[0],
                                 "vertice_dim": state["vertice_map.weight"].shape[1],
                                 "n_subjects": state["obj_vector.weight"].shape[1]})
    enc_cfg = encoder_config(state, encoder_overrides or {}, kind)
    encoder = (HubertModel if kind == "hubert" else Wav2Vec2Model)(enc_cfg)
    model = FaceFormer(config, encoder)
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in _OPTIONAL]
    unexpected = [k for k in state if k not in own and k not in _OPTIONAL]
    if missing or unexpected:
        raise ValueError(f"{path} is not a FaceFormer checkpoint this loader understands: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return model.eval()
