"""The slot for a learned speech-to-FLAME model the user brings (never downloaded).

A folder (option ``learned_dir``, default ``$FLAMECAST_WEIGHTS/microphone``) with a
``config.json``:

* ``{"format": "faceformer", "checkpoint": "vocaset.pth", "dataset": "vocaset", "period": 30,
  "subject": 0, "encoder": "wav2vec2", "encoder_config": {...}, "mouth": {...}}``: a FaceFormer
  state dict (wav2vec2 or HuBERT audio encoder); its vertex offsets become our channels through
  ``mouth`` (vertex indices of the upper lip, lower lip and mouth corners, and the distances in
  the mesh's units that count as fully open / fully wide).
* ``{"format": "onnx", "model": "model.onnx", "fps": 30, "outputs": "arkit", "names": [...]}``:
  an ONNX model taking (1, samples) float32 16 kHz audio and giving (1, frames, C); C columns
  are ARKit blendshapes (``names``) or our channel names.

The model runs on a sliding window of audio (``window_s``, default 2 s) every ``hop_s`` (0.2 s)
and its frames are used up to ``lookahead_s`` (0.1 s) before the newest sample, so its latency is
about hop_s + lookahead_s + its compute time: more than the built-in model's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .audio import MODEL_RATE
from .features import frame_rms_db, pitch, frame_centre_s
from .model import OUTPUTS, VisemeNet, shipped_weights_dir
from .tracker import MouthTracker, Timeline

CONFIG = "config.json"
ARKIT = {  # ARKit blendshape -> (our channel, weight); left/right pairs average
    "jawOpen": ("jaw", 1.0), "mouthClose": ("lip_press", 1.0), "mouthPressLeft": ("lip_press", 0.5),
    "mouthPressRight": ("lip_press", 0.5), "mouthPucker": ("mouth_pucker", 1.0), "mouthFunnel": ("mouth_funnel", 1.0),
    "mouthStretchLeft": ("mouth_stretch", 0.5), "mouthStretchRight": ("mouth_stretch", 0.5),
    "mouthSmileLeft": ("smile", 0.5), "mouthSmileRight": ("smile", 0.5),
}


class LearnedModelError(ValueError):
    """A learned-model folder that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class LearnedSpec:
    folder: Path
    config: dict[str, Any]

    @property
    def format(self) -> str:
        return self.config.get("format", "")


def find_learned(folder: Path) -> LearnedSpec | None:
    """The learned model in ``folder``, or None when the folder has no config.json."""
    path = Path(folder).expanduser() / CONFIG
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise LearnedModelError(f"{path}: not valid JSON ({exc})") from None
    if config.get("format") not in ("faceformer", "onnx"):
        raise LearnedModelError(f"{path}: 'format' must be 'faceformer' or 'onnx'")
    return LearnedSpec(path.parent, config)


def load_tracker(spec: LearnedSpec | None, *, gate_db: float = -70.0) -> Timeline:
    """The built-in VisemeNet (spec None) or a learned model, as a timeline the driver reads."""
    if spec is None:
        return MouthTracker(VisemeNet.from_pretrained(shipped_weights_dir()), gate_db=gate_db)
    if spec.format == "faceformer":
        predict, fps = faceformer_predictor(spec)
    else:
        predict, fps = onnx_predictor(spec)
    c = spec.config
    return WindowTracker(predict, fps, gate_db=gate_db, window_s=float(c.get("window_s", 2.0)),
                         hop_s=float(c.get("hop_s", 0.2)), lookahead_s=float(c.get("lookahead_s", 0.1)))


# --- output mappings -----------------------------------------------------------------------


@dataclass(frozen=True)
class MouthVertices:
    """Vertex groups of a mesh's mouth and the displacements (mesh units) that mean 'full'."""

    upper: list[int]
    lower: list[int]
    left: list[int]
    right: list[int]
    open: float = 0.01
    wide: float = 0.005
    up_axis: int = 1
    side_axis: int = 0

    def channels(self, offsets: np.ndarray) -> np.ndarray:
        """(frames, V*3) offsets -> (frames, len(OUTPUTS)) in 0..1."""
        v = offsets.reshape(offsets.shape[0], -1, 3)
        gap = v[:, self.upper, self.up_axis].mean(1) - v[:, self.lower, self.up_axis].mean(1)
        width = v[:, self.left, self.side_axis].mean(1) - v[:, self.right, self.side_axis].mean(1)
        out = np.zeros((offsets.shape[0], len(OUTPUTS)), np.float32)
        out[:, OUTPUTS.index("jaw")] = gap / self.open
        out[:, OUTPUTS.index("lip_press")] = -gap / (0.3 * self.open)
        out[:, OUTPUTS.index("mouth_stretch")] = width / self.wide
        out[:, OUTPUTS.index("mouth_pucker")] = -width / self.wide
        return np.clip(out, 0.0, 1.0)


def named_columns(names: list[str], table: dict[str, tuple[str, float]] | None) -> np.ndarray:
    """(C, len(OUTPUTS)) matrix from named output columns (ARKit names, or our names)."""
    m = np.zeros((len(names), len(OUTPUTS)), np.float32)
    for i, name in enumerate(names):
        target = table.get(name) if table else ((name, 1.0) if name in OUTPUTS else None)
        if target is not None:
            m[i, OUTPUTS.index(target[0])] = target[1]
    return m


# --- FaceFormer and ONNX ------------------------------------------------------------------


def faceformer_predictor(spec: LearnedSpec) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    import torch

    from .faceformer import FaceFormerConfig, load_faceformer

    c = spec.config
    ckpt = spec.folder / c.get("checkpoint", "faceformer.pth")
    if not ckpt.is_file():
        raise LearnedModelError(f"{ckpt} is missing (config.json 'checkpoint')")
    if "mouth" not in c:
        raise LearnedModelError(f"{spec.folder / CONFIG}: 'mouth' must give the vertex indices of the lips "
                                "(upper, lower, left, right) of the model's mesh")
    ff = FaceFormerConfig(dataset=c.get("dataset", "vocaset"), period=int(c.get("period", 30)), subject=int(c.get("subject", 0)))
    model = load_faceformer(ckpt, ff, c.get("encoder_config", {}), c.get("encoder", "wav2vec2"))
    mouth = MouthVertices(**c["mouth"])

    def predict(audio: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            offsets = model.predict(torch.from_numpy(audio[None].astype(np.float32))).numpy()
        return mouth.channels(offsets)

    return predict, model.config.fps


def onnx_predictor(spec: LearnedSpec) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    c = spec.config
    try:
        import onnxruntime
    except ImportError:
        raise LearnedModelError("an ONNX learned model needs onnxruntime: `pip install onnxruntime`") from None
    path = spec.folder / c.get("model", "model.onnx")
    if not path.is_file():
        raise LearnedModelError(f"{path} is missing (config.json 'model')")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = c.get("names") or list(OUTPUTS)
    matrix = named_columns(names, ARKIT if c.get("outputs", "channels") == "arkit" else None)

    def predict(audio: np.ndarray) -> np.ndarray:
        out = np.asarray(session.run(None, {input_name: audio[None].astype(np.float32)})[0])[0]
        if out.shape[-1] != len(names):
            raise LearnedModelError(f"{path} gives {out.shape[-1]} columns; config.json 'names' lists {len(names)}")
        return np.clip(out @ matrix, 0.0, 1.0)

    return predict, float(c.get("fps", 30))


class WindowTracker(Timeline):
    """Runs a whole-window model every ``hop_s`` on the last ``window_s`` of audio; its frames
    up to ``lookahead_s`` before the newest sample join the timeline."""

    runs_in_thread = True

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], fps: float, *, gate_db: float,
                 window_s: float, hop_s: float, lookahead_s: float) -> None:
        super().__init__(OUTPUTS, gate_db)
        self.predict, self.fps = predict, fps
        self.window, self.hop = int(window_s * MODEL_RATE), int(hop_s * MODEL_RATE)
        self.lookahead_s = lookahead_s + hop_s
        self._lookahead = lookahead_s
        self._audio = np.zeros(0, np.float32)
        self._audio_t0 = 0.0
        self._since = 0

    def _consume(self, x: np.ndarray) -> None:
        self._audio = np.concatenate([self._audio, x])
        self._since += x.size
        if self._since < self.hop:
            return
        self._since = 0
        cut = max(0, self._audio.size - self.window)
        self._audio, self._audio_t0 = self._audio[cut:], self._audio_t0 + cut / MODEL_RATE
        self._run()

    def _run(self) -> None:
        rows = self.predict(self._audio)
        if rows.shape[0] == 0:
            return
        times = self._audio_t0 + (np.arange(rows.shape[0]) + 0.5) / self.fps
        level, (f0, _) = frame_rms_db(self._audio), pitch(self._audio)
        centres = self._audio_t0 + frame_centre_s(np.arange(level.size))
        newest = self._audio_t0 + self._audio.size / MODEL_RATE - self._lookahead
        last = self._rows[-1][0] if self._rows else -1.0
        for t, row in zip(times, rows):
            if last < t <= newest:
                j = int(np.clip(np.searchsorted(centres, t), 0, max(level.size - 1, 0)))
                self._add_row(float(t), row, float(level[j]) if level.size else -100.0, float(f0[j]) if f0.size else 0.0)
