"""The head model interface and the linear-blend-skinned implementation both heads share.

Frame of reference (FLAME's canonical head frame): metres, y up, the face looks along +z and
+x points toward the avatar's own left. Pose is 15 axis-angle floats in POSE_JOINTS order:
global (root), neck, jaw, eye_left, eye_right.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import torch

from flamecast.plugins import POSE_SIZE, HeadSpace

from .lbs import barycentric_points, skin


@dataclass
class HeadOutput:
    """What a head model produces for a batch of parameters.

    Attributes:
        vertices: (B, N, 3) posed vertices in metres.
        joints: (B, 5, 3) posed joints in POSE_JOINTS order: global, neck, jaw, eye_left, eye_right.
        landmarks: (B, L, 3) landmarks from the model's landmark embedding (``landmark_set``).
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    landmarks: torch.Tensor


class HeadModel(torch.nn.Module, abc.ABC):
    """A parametric head with FLAME's parameter layout.

    Attributes:
        name: "builtin", "flame2020" or "flame2023".
        n_shape, n_expression: sizes of the identity and expression spaces.
        expression_names: names of the expression channels, or None for PCA components.
        faces: (F, 3) long buffer, counter-clockwise seen from outside.
        uvs: (N, 2) per-vertex texture coordinates in [0, 1], or None.
        landmark_set: the topology of ``HeadOutput.landmarks`` ("mediapipe468", "flame68").
        center: (3,) buffer, centre of the neutral head (cameras aim here).
        radius: radius of a sphere about ``center`` holding the neutral head.
    """

    name: str
    n_shape: int
    n_expression: int
    expression_names: tuple[str, ...] | None
    faces: torch.Tensor
    uvs: torch.Tensor | None
    landmark_set: str
    center: torch.Tensor
    radius: float

    @abc.abstractmethod
    def forward(
        self,
        *,
        pose: torch.Tensor,
        expression: torch.Tensor | None = None,
        shape: torch.Tensor | None = None,
        eyelids: torch.Tensor | None = None,
        translation: torch.Tensor | None = None,
    ) -> HeadOutput:
        """Posed head for a batch of parameters; missing optional inputs are zeros."""

    def head_space(self) -> HeadSpace:
        """The expression space a driver speaks when it drives this head."""
        return HeadSpace(
            name=self.name,
            n_expression=self.n_expression,
            expression_names=self.expression_names,
            has_eyelids=self.has_eyelids,
        )

    @property
    def has_eyelids(self) -> bool:
        return False

    def vertex_regions(self) -> dict[str, torch.Tensor]:
        """Named vertex index sets ("face", "scalp", "neck", "eyes", "mouth_inside", ...)."""
        return {}


def _tensor(value, like: torch.Tensor) -> torch.Tensor:
    """A tensor on like's device and dtype; numpy inputs (read-only ones too) are copied."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.array(value))
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _coefficients(value, batch: int, size: int, name: str, like: torch.Tensor) -> torch.Tensor:
    """(batch, size) tensor; None -> zeros, fewer columns -> zero-padded, more -> error."""
    if value is None:
        return like.new_zeros(batch, size)
    value = _tensor(value, like)
    if value.dim() == 1:
        value = value.unsqueeze(0).expand(batch, -1)
    if value.shape[0] != batch:
        raise ValueError(f"{name} has batch size {value.shape[0]}, pose has {batch}")
    if value.shape[1] > size:
        raise ValueError(f"{name} has {value.shape[1]} values; this head takes at most {size}")
    if value.shape[1] < size:
        value = torch.nn.functional.pad(value, (0, size - value.shape[1]))
    return value


class SkinnedHead(HeadModel):
    """A head made of blendshapes and linear blend skinning over FLAME's 5-joint chain.

    Subclasses fill the buffers through ``_set_model``; ``forward`` is shared.
    """

    def _set_model(
        self,
        *,
        v_template,
        faces,
        shapedirs,
        exprdirs,
        j_regressor,
        weights,
        parents,
        lmk_faces_idx,
        lmk_bary,
        posedirs=None,
        eyelid_dirs=None,
        uvs=None,
    ) -> None:
        f32 = dict(dtype=torch.float32)
        self.register_buffer("v_template", torch.as_tensor(v_template, **f32))
        self.register_buffer("faces", torch.as_tensor(faces, dtype=torch.long))
        self.register_buffer("shapedirs", torch.as_tensor(shapedirs, **f32))
        self.register_buffer("exprdirs", torch.as_tensor(exprdirs, **f32))
        self.register_buffer("j_regressor", torch.as_tensor(j_regressor, **f32))
        self.register_buffer("weights", torch.as_tensor(weights, **f32))
        self.register_buffer("lmk_faces_idx", torch.as_tensor(lmk_faces_idx, dtype=torch.long))
        self.register_buffer("lmk_bary", torch.as_tensor(lmk_bary, **f32))
        self.register_buffer("posedirs", None if posedirs is None else torch.as_tensor(posedirs, **f32))
        self.register_buffer(
            "eyelid_dirs", None if eyelid_dirs is None else torch.as_tensor(eyelid_dirs, **f32)
        )
        self.register_buffer("uvs", None if uvs is None else torch.as_tensor(uvs, **f32))
        self.parents = [int(p) for p in parents]
        self.n_shape = int(self.shapedirs.shape[-1])
        self.n_expression = int(self.exprdirs.shape[-1])
        if len(self.parents) * 3 != POSE_SIZE:
            raise ValueError(f"the head has {len(self.parents)} joints; FLAME's layout needs 5")
        lo, hi = self.v_template.min(0).values, self.v_template.max(0).values
        center = (lo + hi) / 2
        self.register_buffer("center", center)
        self.radius = float((self.v_template - center).norm(dim=-1).max())

    @property
    def has_eyelids(self) -> bool:
        return self.eyelid_dirs is not None

    def forward(self, *, pose, expression=None, shape=None, eyelids=None, translation=None) -> HeadOutput:
        like = self.v_template
        pose = _tensor(pose, like)
        if pose.dim() == 1:
            pose = pose.unsqueeze(0)
        if pose.shape[-1] != POSE_SIZE:
            raise ValueError(f"pose must have {POSE_SIZE} values per frame, got {pose.shape[-1]}")
        batch = pose.shape[0]
        expression = _coefficients(expression, batch, self.n_expression, "expression", like)
        shape = _coefficients(shape, batch, self.n_shape, "shape", like)
        eyelids = _coefficients(eyelids, batch, 2, "eyelids", like)
        v_shaped = self._shaped(shape, expression, eyelids)
        verts, joints = skin(v_shaped, pose, self.j_regressor, self.weights, self.parents, self.posedirs)
        landmarks = self._landmarks(verts, pose)
        if translation is not None:
            t = _coefficients(translation, batch, 3, "translation", like)[:, None]
            verts, joints, landmarks = verts + t, joints + t, landmarks + t
        return HeadOutput(vertices=verts, joints=joints, landmarks=landmarks)

    def _shaped(self, shape, expression, eyelids) -> torch.Tensor:
        n = self.v_template.shape[0]
        # (B, S) @ (S, N*3): plain GEMMs over the flattened blendshape matrices
        offsets = shape @ self.shapedirs.reshape(n * 3, -1).T + expression @ self.exprdirs.reshape(n * 3, -1).T
        if self.eyelid_dirs is not None:
            offsets = offsets + eyelids @ self.eyelid_dirs.reshape(2, n * 3)
        return self.v_template[None] + offsets.reshape(-1, n, 3)

    def _landmarks(self, verts: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        return barycentric_points(verts, self.faces, self.lmk_faces_idx, self.lmk_bary)
