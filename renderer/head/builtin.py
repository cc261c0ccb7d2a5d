"""The built-in head: open, shipped with flamecast, the default head model.

Its geometry, blendshapes, skinning weights and landmark embedding are baked by
``python -m flamecast.renderer.head.build_builtin`` into ``assets/builtin_head.npz``; loading
it needs no mediapipe run and no download. docs/head.md says how it is made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flamecast.plugins import BUILTIN_EXPRESSION_NAMES

from .base import SkinnedHead

ASSET = Path(__file__).parent / "assets" / "builtin_head.npz"
BLINK_CHANNELS = (
    BUILTIN_EXPRESSION_NAMES.index("eye_blink_left"),
    BUILTIN_EXPRESSION_NAMES.index("eye_blink_right"),
)


class BuiltinHead(SkinnedHead):
    """Full head with neck, eyeballs on the eye joints, 16 named expressions, a named shape basis.

    Landmarks: the 468 points of mediapipe FaceMesh (``landmark_set = "mediapipe468"``).
    ``eyelids`` close the eyes with the same deformation as ``eye_blink_left/right``; the
    closure applied is ``max(eyelids[i], eye_blink_*)``.
    """

    name = "builtin"
    landmark_set = "mediapipe468"
    expression_names = BUILTIN_EXPRESSION_NAMES

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        path = Path(path) if path is not None else ASSET
        if not path.is_file():
            raise FileNotFoundError(
                f"built-in head asset {path} is missing; it ships inside the flamecast package "
                "(reinstall flamecast, or rebuild it with python -m flamecast.renderer.head.build_builtin)"
            )
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        names = tuple(str(n) for n in arrays["expression_names"])
        if names != BUILTIN_EXPRESSION_NAMES:
            raise ValueError(f"{path} has expression channels {names}, expected {BUILTIN_EXPRESSION_NAMES}")
        self.shape_names = tuple(str(n) for n in arrays["shape_names"])
        self._regions = {
            k[len("region_") :]: torch.as_tensor(v, dtype=torch.long)
            for k, v in arrays.items()
            if k.startswith("region_")
        }
        self._set_model(
            v_template=arrays["v_template"],
            faces=arrays["faces"],
            shapedirs=arrays["shapedirs"],
            exprdirs=arrays["exprdirs"],
            j_regressor=arrays["j_regressor"],
            weights=arrays["weights"],
            parents=arrays["parents"],
            lmk_faces_idx=arrays["lmk_faces_idx"],
            lmk_bary=arrays["lmk_bary"],
            uvs=arrays["uvs"],
        )

    @property
    def has_eyelids(self) -> bool:
        return True

    def _shaped(self, shape, expression, eyelids) -> torch.Tensor:
        left, right = BLINK_CHANNELS
        cols = list(expression.unbind(1))
        cols[left] = torch.maximum(cols[left], eyelids[:, 0])
        cols[right] = torch.maximum(cols[right], eyelids[:, 1])
        expression = torch.stack(cols, 1)
        return super()._shaped(shape, expression, eyelids)

    def vertex_regions(self) -> dict[str, torch.Tensor]:
        return dict(self._regions)
