"""DECA's coarse encoder (Feng, Feng, Black, Bolkart, SIGGRAPH 2021), loaded from ``deca_model.tar``.

The official checkpoint is a ``torch.save`` dict; its ``E_flame`` entry is the state dict of
the coarse encoder: a ResNet-50 trunk under ``encoder.`` (``encoder.conv1.weight``,
``encoder.bn1.*``, ``encoder.layer1.0.conv1.weight``, ..., ``encoder.layer4.2.bn3.*``; the
classifier is unused) and a regressor ``layers.0`` (2048 -> 1024), ReLU, ``layers.2``
(1024 -> 236). The 236 outputs are, in order: shape 100, texture 50, expression 50, pose 6
(global then jaw, axis-angle), camera 3 (scale, tx, ty) and light 27 (9 x 3 SH). The other
entries (``E_detail``, ``D_detail``) are not used.

The input is a 224 x 224 RGB crop in [0, 1]: a square around the face landmarks' bounding box,
``1.1 * 1.25`` times the mean of its width and height, centred on the box (DECA's crop for
landmark boxes). The trunk's widths and block counts are read from the checkpoint, so smaller
networks in the same key layout (the tests' tiny checkpoints) load with the same code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

CHECKPOINT = "deca_model.tar"
SPLITS = (("shape", 100), ("tex", 50), ("exp", 50), ("pose", 6), ("cam", 3), ("light", 27))
N_OUTPUTS = sum(n for _, n in SPLITS)
CROP = 224
BOX_SCALE = 1.1 * 1.25


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 with a projection shortcut where the shape changes."""

    def __init__(self, inplanes: int, planes: int, stride: int, expansion: int = 4) -> None:
        super().__init__()
        out = planes * expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNetTrunk(nn.Module):
    """ResNet without its classifier: (B, 3, H, W) -> (B, 8 * width * 4 / ...) pooled features."""

    def __init__(self, width: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = width
        for i, n in enumerate(blocks):
            planes = width * 2 ** i
            layer = []
            for j in range(n):
                layer.append(Bottleneck(inplanes, planes, stride=2 if (i > 0 and j == 0) else 1))
                inplanes = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.n_layers = len(blocks)
        self.features = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean((2, 3))  # DECA's 7x7 average pool at 224 px


@dataclass(frozen=True)
class EncoderConfig:
    width: int = 64
    blocks: tuple[int, ...] = (3, 4, 6, 3)
    hidden: int = 1024
    outputs: int = N_OUTPUTS

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> EncoderConfig:
        """The architecture a state dict in DECA's ``E_flame`` layout describes."""
        for key in ("encoder.conv1.weight", "layers.0.weight", "layers.2.weight"):
            if key not in state:
                raise ValueError(f"not a DECA E_flame state dict: {key!r} is missing")
        counts: dict[int, int] = {}
        for key in state:
            m = re.match(r"encoder\.layer(\d+)\.(\d+)\.", key)
            if m:
                layer, block = int(m.group(1)), int(m.group(2))
                counts[layer] = max(counts.get(layer, 0), block + 1)
        blocks = tuple(counts[i] for i in sorted(counts))
        return cls(width=int(state["encoder.conv1.weight"].shape[0]), blocks=blocks,
                   hidden=int(state["layers.0.weight"].shape[0]), outputs=int(state["layers.2.weight"].shape[0]))


class DecaEncoder(nn.Module):
    """``E_flame``: image crop -> the 236 FLAME, camera and light codes."""

    def __init__(self, config: EncoderConfig = EncoderConfig()) -> None:
        super().__init__()
        if config.outputs != N_OUTPUTS:
            raise ValueError(f"DECA's encoder has {N_OUTPUTS} outputs, this one {config.outputs}")
        self.config = config
        self.encoder = ResNetTrunk(config.width, config.blocks)
        self.layers = nn.Sequential(nn.Linear(self.encoder.features, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.outputs))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, 224, 224) RGB in [0, 1] -> {"shape", "tex", "exp", "pose", "cam", "light"}."""
        codes = self.layers(self.encoder(images))
        out, start = {}, 0
        for name, n in SPLITS:
            out[name] = codes[:, start:start + n]
            start += n
        out["light"] = out["light"].reshape(-1, 9, 3)
        return out


def default_checkpoint(weights_dir: str | Path | None = None) -> Path:
    """<weights>/deca/deca_model.tar (weights: the argument, $FLAMECAST_WEIGHTS or ~/.cache/flamecast/weights)."""
    import os

    base = Path(weights_dir) if weights_dir else Path(os.environ.get("FLAMECAST_WEIGHTS") or Path.home() / ".cache" / "flamecast" / "weights")
    return base / "deca" / CHECKPOINT


def load_deca(path: str | Path, device: str = "cpu") -> DecaEncoder:
    """The coarse encoder from an official ``deca_model.tar`` (or one in its layout)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"DECA checkpoint {path} not found: download deca_model.tar from DECA's project "
            "(https://deca.is.tue.mpg.de, after registering) and put it there; flamecast never downloads it"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "E_flame" not in checkpoint:
        raise ValueError(f"{path} is not a DECA checkpoint: it has no 'E_flame' entry")
    state = {k.removeprefix("module."): v for k, v in checkpoint["E_flame"].items()}
    model = DecaEncoder(EncoderConfig.from_state_dict(state))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: E_flame lacks {len(missing)} weights, e.g. {missing[:3]}")
    return model.to(device).eval()


def face_box(points_px: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (2,) and side of DECA's square crop around landmarks (pixels)."""
    lo, hi = points_px[:, :2].min(0), points_px[:, :2].max(0)
    centre = (lo + hi) / 2.0
    side = float((hi - lo).sum() / 2.0 * BOX_SCALE)
    return centre, side


def crop_face(image: np.ndarray, centre: np.ndarray, side: float, size: int = CROP) -> np.ndarray:
    """(size, size, 3) float32 RGB crop in [0, 1] (outside the image: black)."""
    import cv2

    scale = size / max(side, 1.0)
    m = np.array([[scale, 0.0, size / 2.0 - scale * centre[0]], [0.0, scale, size / 2.0 - scale * centre[1]]])
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return crop.astype(np.float32) / 255.0


class DecaTracker:
    """Runs the encoder on one frame: crop from landmarks, forward, FLAME codes as numpy."""

    def __init__(self, model: DecaEncoder) -> None:
        self.model = model
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, points_px: np.ndarray) -> dict[str, np.ndarray]:
        # DECA's 68-point boxes span brows to chin: leave the forehead out of the box
        from .geometry import BROWS, FACE_OVAL

        pts = points_px[list(FACE_OVAL) + list(BROWS)]
        top = points_px[list(BROWS), 1].min()
        pts = pts[pts[:, 1] >= top]
        centre, side = face_box(pts)
        crop = crop_face(image, centre, side)
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].to(self.device)
        out = self.model(x)
        return {k: v[0].float().cpu().numpy() for k, v in out.items()}
