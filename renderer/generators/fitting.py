"""Fit a head model to a portrait's FaceMesh landmarks.

The portrait camera is orthographic (FaceMesh's landmarks are close to a scaled orthographic
projection, with a depth on the same scale as x): a head-frame point ``X`` lands at pixel

    x = s * X_x + t_x,    y = -s * X_y + t_y,    depth = -s * X_z   (smaller = nearer)

The head's identity (shape), expression, global rotation and jaw, and the camera's scale and
offset are fitted by gradient descent (Adam) on the 2D landmark error plus a down-weighted
depth term and small priors; the rotation and scale start from a closed-form similarity
(Umeyama) between the neutral head's landmarks and the portrait's.

Each step evaluates only the landmarks: ``LandmarkModel`` restricts a skinned head (the
built-in head, FLAME) to the vertices its landmark embedding touches, with the joint regressor
folded into the blendshapes, using the head's own skinning functions. That is several times
cheaper than the full head and gives the same landmarks (tested), for heads whose eyelids are
open (eyelids are not fitted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEPTH_WEIGHT = 0.1
SHAPE_PRIOR = 3e-3
EXPRESSION_PRIOR = 1e-2
JAW_PRIOR = 1e-1


@dataclass(frozen=True)
class PortraitFit:
    """The fitted head and portrait camera.

    Attributes:
        shape: (S,) identity coefficients.
        expression: (E,) expression coefficients of the portrait.
        pose: (15,) pose of the portrait (global rotation and jaw; the rest zero).
        scale: pixels per metre; offset: (2,) pixel offset (see the module docstring).
        error_px: RMS 2D landmark error after fitting, in pixels.
        face_px: the face's size in the portrait (RMS landmark spread), in pixels.
    """

    shape: torch.Tensor
    expression: torch.Tensor
    pose: torch.Tensor
    scale: float
    offset: torch.Tensor
    error_px: float
    face_px: float

    def to_image(self, points: torch.Tensor) -> torch.Tensor:
        """Head-frame points (..., 3) -> portrait pixels x, y and depth (..., 3)."""
        return to_image(points, self.scale, self.offset)


def to_image(points: torch.Tensor, scale, offset: torch.Tensor) -> torch.Tensor:
    flip = points.new_tensor([1.0, -1.0, -1.0])
    out = points * flip * scale
    return torch.cat([out[..., :2] + offset, out[..., 2:]], dim=-1)


class LandmarkModel(torch.nn.Module):
    """The landmarks of a skinned head (``renderer.head.SkinnedHead``) and nothing else."""

    def __init__(self, head) -> None:
        super().__init__()
        used, remap = torch.unique(head.faces[head.lmk_faces_idx], return_inverse=True)
        self.parents = list(head.parents)
        self.register_buffer("v_template", head.v_template[used])
        self.register_buffer("shapedirs", head.shapedirs[used])
        self.register_buffer("exprdirs", head.exprdirs[used])
        self.register_buffer("weights", head.weights[used])
        self.register_buffer("lmk_faces", remap)  # (L, 3) corners, indexing the kept vertices
        self.register_buffer("lmk_bary", head.lmk_bary)
        jr = head.j_regressor
        self.register_buffer("j_template", jr @ head.v_template)
        self.register_buffer("j_shapedirs", torch.einsum("jn,ncs->jcs", jr, head.shapedirs))
        self.register_buffer("j_exprdirs", torch.einsum("jn,nce->jce", jr, head.exprdirs))
        self.supported = getattr(head, "posedirs", None) is None

    def forward(self, pose: torch.Tensor, shape: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        from flamecast.renderer.head.lbs import rigid_transforms, rodrigues

        batch = pose.shape[0]
        v = self.v_template + torch.einsum("ncs,bs->bnc", self.shapedirs, shape)
        v = v + torch.einsum("nce,be->bnc", self.exprdirs, expression)
        joints = self.j_template + torch.einsum("jcs,bs->bjc", self.j_shapedirs, shape)
        joints = joints + torch.einsum("jce,be->bjc", self.j_exprdirs, expression)
        rot = rodrigues(pose.reshape(batch, -1, 3))
        _, transforms = rigid_transforms(rot, joints, self.parents)
        blended = torch.einsum("nj,bjrc->bnrc", self.weights, transforms)
        verts = (blended[..., :3, :3] @ v[..., None])[..., 0] + blended[..., :3, 3]
        tri = verts[:, self.lmk_faces]  # (B, L, 3, 3)
        return (tri * self.lmk_bary[None, :, :, None]).sum(2)


def landmark_function(head):
    """``f(pose, shape, expression) -> (B, L, 3)`` landmarks: the fast restriction when the
    head allows it, else the full head."""
    if all(hasattr(head, k) for k in ("lmk_faces_idx", "j_regressor", "weights", "shapedirs")):
        model = LandmarkModel(head)
        if model.supported:
            return model
    return lambda pose, shape, expression: head(pose=pose, shape=shape, expression=expression).landmarks


def fit_portrait(head, landmarks_px: np.ndarray, *, iterations: int = 200, lr: float = 0.03) -> PortraitFit:
    """Fit ``head`` to FaceMesh landmarks (L>=468, 3) in pixels (see renderer.portrait)."""
    target = torch.as_tensor(portrait_targets(head, landmarks_px), dtype=torch.float32, device=head.center.device)
    head = _Landmarks(head)
    with torch.no_grad():
        neutral = head(pose=torch.zeros(1, 15, device=target.device)).landmarks[0]
    scale0, rot0 = _similarity(neutral, target)
    face_px = float(target[:, :2].std(0).norm())
    params = _Params.create(head, rot0, scale0, target.device)
    with torch.no_grad():
        lmk = head(**params.head_inputs()).landmarks[0]
        params.offset.copy_(target[:, :2].mean(0) - to_image(lmk, scale0, torch.zeros(2, device=target.device))[:, :2].mean(0))
    rigid = max(1, iterations // 4)
    _descend(head, params, target, face_px, params.rigid(), rigid, lr)
    _descend(head, params, target, face_px, params.all(), iterations - rigid, lr)
    with torch.no_grad():
        err = _image_landmarks(head, params) - target
        rms = float(err[:, :2].pow(2).sum(-1).mean().sqrt())
    return PortraitFit(
        shape=params.shape.detach()[0], expression=params.expression.detach()[0],
        pose=params.pose().detach()[0], scale=float(params.scale().detach()),
        offset=params.offset.detach().clone(), error_px=rms, face_px=face_px,
    )


def portrait_targets(head, landmarks_px: np.ndarray) -> np.ndarray:
    """The portrait's FaceMesh points the head's landmarks correspond to, in the head's order:
    all 468 for a head with FaceMesh's topology, the embedding's subset for FLAME's MediaPipe
    embedding (``landmark_indices``). ValueError for a head whose landmarks are not FaceMesh
    points (FLAME's 68-point embedding)."""
    points = np.asarray(landmarks_px)[:468]
    kind = getattr(head, "landmark_set", "mediapipe468")
    if kind == "mediapipe468":
        return points
    if kind == "mediapipe105" and getattr(head, "landmark_indices", None):
        return points[list(head.landmark_indices)]
    raise ValueError(f"the {getattr(head, 'name', 'head')} head's landmarks ({kind}) are not FaceMesh points: "
                     "put FLAME's MediaPipe embedding (mediapipe_landmark_embedding.npz) beside generic_model.pkl")


@dataclass
class _Params:
    shape: torch.Tensor
    expression: torch.Tensor
    rotation: torch.Tensor
    jaw: torch.Tensor
    log_scale: torch.Tensor
    offset: torch.Tensor

    @classmethod
    def create(cls, head, rotation: np.ndarray, scale: float, device) -> _Params:
        def leaf(value) -> torch.Tensor:
            return torch.as_tensor(value, dtype=torch.float32, device=device).clone().requires_grad_(True)

        return cls(
            shape=leaf(torch.zeros(1, head.n_shape)),
            expression=leaf(torch.zeros(1, head.n_expression)),
            rotation=leaf(rotation[None]),
            jaw=leaf(torch.zeros(1, 3)),
            log_scale=leaf(np.log(scale)),
            offset=leaf(torch.zeros(2)),
        )

    def pose(self) -> torch.Tensor:
        zeros = torch.zeros_like(self.rotation)
        return torch.cat([self.rotation, zeros, self.jaw, zeros, zeros], dim=1)

    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def head_inputs(self) -> dict[str, torch.Tensor]:
        return {"pose": self.pose(), "shape": self.shape, "expression": self.expression}

    def rigid(self) -> list[torch.Tensor]:
        return [self.rotation, self.log_scale, self.offset]

    def all(self) -> list[torch.Tensor]:
        return [self.shape, self.expression, self.rotation, self.jaw, self.log_scale, self.offset]


class _Landmarks:
    """Calls like the head, computes only the landmarks (``landmark_function``)."""

    def __init__(self, head) -> None:
        self.fn = landmark_function(head)
        self.n_shape, self.n_expression = head.n_shape, head.n_expression

    def __call__(self, *, pose, shape=None, expression=None):
        batch = pose.shape[0]
        shape = pose.new_zeros(batch, self.n_shape) if shape is None else shape
        expression = pose.new_zeros(batch, self.n_expression) if expression is None else expression

        class Out:
            landmarks = self.fn(pose, shape, expression)

        return Out


def _image_landmarks(head, params: _Params) -> torch.Tensor:
    lmk = head(**params.head_inputs()).landmarks[0]
    return to_image(lmk, params.scale(), params.offset)


def _descend(head, params: _Params, target: torch.Tensor, face_px: float, leaves, steps: int, lr: float) -> None:
    if steps <= 0:
        return
    opt = torch.optim.Adam(leaves, lr=lr)
    norm = 1.0 / max(face_px, 1.0)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        pred = _image_landmarks(head, params)
        xy = ((pred[:, :2] - target[:, :2]) * norm).pow(2).sum(-1).mean()
        dz = (pred[:, 2] - pred[:, 2].mean()) - (target[:, 2] - target[:, 2].mean())
        loss = xy + DEPTH_WEIGHT * (dz * norm).pow(2).mean()
        loss = loss + SHAPE_PRIOR * params.shape.pow(2).mean() + EXPRESSION_PRIOR * params.expression.pow(2).mean()
        loss = loss + JAW_PRIOR * params.jaw.pow(2).sum()
        loss.backward()
        opt.step()


def _similarity(source: torch.Tensor, target: torch.Tensor) -> tuple[float, np.ndarray]:
    """Scale and head rotation (axis-angle) that best map the head's landmarks onto the
    portrait's (Umeyama), in the orthographic camera of the module docstring."""
    flip = np.array([1.0, -1.0, -1.0])
    src = source.detach().cpu().double().numpy() * flip
    dst = target.detach().cpu().double().numpy()
    src_c, dst_c = src - src.mean(0), dst - dst.mean(0)
    u, sig, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot_img = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / src_c.var(0).sum())
    f = np.diag(flip)
    rot_head = f @ rot_img @ f
    return scale, rotation_vector(rot_head).astype(np.float32)


def rotation_vector(rot: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) of a rotation matrix (the inverse of ``lbs.rodrigues``)."""
    cos = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    if angle < 1e-6:
        return axis / 2.0
    if np.pi - angle < 1e-3:  # near 180 degrees: the axis is the dominant column of R + I
        col = rot + np.eye(3)
        v = col[:, np.argmax(np.linalg.norm(col, axis=0))]
        return v / np.linalg.norm(v) * angle
    return axis / (2.0 * np.sin(angle)) * angle
