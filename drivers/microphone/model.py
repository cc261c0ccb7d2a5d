"""VisemeNet: log-mel frames -> jaw opening and mouth-shape channels, streaming.

conv (k=7, centred: 3 frames of lookahead) -> causal conv (k=3) -> GRU -> linear -> sigmoid.
The outputs are bounded to [0, 1] by construction, whatever the input level. ``forward`` runs a
whole sequence (training); ``VisemeStream`` runs the same network frame by frame with the
same result, holding the conv windows and the GRU state.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .features import HOP, WIN
from .audio import MODEL_RATE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "visemenet.safetensors"
OUTPUTS = ("jaw", "lip_press", "mouth_pucker", "mouth_funnel", "mouth_stretch", "smile")


@dataclass(frozen=True)
class VisemeConfig:
    n_mels: int = 40
    channels: int = 64
    hidden: int = 64
    kernel: int = 7
    lookahead: int = 3
    outputs: tuple[str, ...] = OUTPUTS
    training: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.lookahead < self.kernel:
            raise ValueError("lookahead must be in [0, kernel)")

    @property
    def lookahead_s(self) -> float:
        """Samples past a frame's centre the network needs before it can output that frame."""
        return (self.lookahead * HOP + WIN / 2) / MODEL_RATE

    @property
    def latency_s(self) -> float:
        """Worst case from a sample to the frame showing it: lookahead plus one hop of waiting."""
        return self.lookahead_s + HOP / MODEL_RATE


class VisemeNet(nn.Module):
    def __init__(self, config: VisemeConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.register_buffer("mel_mean", torch.zeros(c.n_mels))
        self.register_buffer("mel_std", torch.ones(c.n_mels))
        self.conv1 = nn.Conv1d(c.n_mels, c.channels, c.kernel)
        self.conv2 = nn.Conv1d(c.channels, c.channels, 3)
        self.gru = nn.GRU(c.channels, c.hidden, batch_first=True)
        self.head = nn.Linear(c.hidden, len(c.outputs))

    def normalise(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.mel_mean) / self.mel_std

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) raw log-mel -> (B, T, outputs) in [0, 1]; frame t sees mel up to t+lookahead."""
        c = self.config
        x = self.normalise(mel).transpose(1, 2)
        x = F.pad(x, (c.kernel - 1 - c.lookahead, c.lookahead))
        h = F.gelu(self.conv1(x))
        h = F.gelu(self.conv2(F.pad(h, (2, 0))))
        y, _ = self.gru(h.transpose(1, 2))
        return torch.sigmoid(self.head(y))

    # --- weights ----------------------------------------------------------------------------

    def save_pretrained(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cfg = asdict(self.config)
        cfg["outputs"] = list(cfg["outputs"])
        (folder / CONFIG_FILE).write_text(json.dumps(cfg, indent=1) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / WEIGHTS_FILE))

    @classmethod
    def from_pretrained(cls, folder: Path) -> VisemeNet:
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not cfg_path.is_file() or not w_path.is_file():
            raise FileNotFoundError(
                f"no microphone model in {folder} (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
                "train one with `flamecast train microphone --out DIR`"
            )
        raw = json.loads(cfg_path.read_text())
        raw["outputs"] = tuple(raw.get("outputs", OUTPUTS))
        model = cls(VisemeConfig(**raw))
        model.load_state_dict(load_file(str(w_path)))
        return model.eval()


def shipped_weights_dir() -> Path:
    return Path(__file__).resolve().parent / "weights"


class VisemeStream:
    """Runs a VisemeNet one feature frame at a time; ``push`` returns the outputs that became
    available (each lags its input by ``config.lookahead`` frames)."""

    def __init__(self, model: VisemeNet) -> None:
        self.model = model
        c = model.config
        self._x = torch.zeros(1, c.n_mels, c.kernel - 1 - c.lookahead)  # conv1 left padding
        self._h2 = torch.zeros(1, c.channels, 2)                         # conv2 left padding
        self._gru: torch.Tensor | None = None
        self._pending = 0  # frames pushed whose output still waits for lookahead

    @torch.inference_mode()
    def push(self, mel: np.ndarray) -> np.ndarray:
        """(k, n_mels) new raw log-mel frames -> (m, outputs) new outputs, m <= k."""
        m = self.model
        if mel.shape[0] == 0:
            return np.zeros((0, len(m.config.outputs)), np.float32)
        x = m.normalise(torch.from_numpy(np.ascontiguousarray(mel, np.float32))).T[None]
        self._x = torch.cat([self._x, x], dim=2)
        n_out = self._x.shape[2] - (m.config.kernel - 1)
        if n_out <= 0:
            return np.zeros((0, len(m.config.outputs)), np.float32)
        h1 = F.gelu(m.conv1(self._x))
        self._x = self._x[:, :, n_out:]
        h = torch.cat([self._h2, h1], dim=2)
        h2 = F.gelu(m.conv2(h))
        self._h2 = h[:, :, -2:]
        y, self._gru = m.gru(h2.transpose(1, 2), self._gru)
        return torch.sigmoid(m.head(y))[0].numpy()
