"""The landmark geometry of the built-in head, shipped with the driver as data.

``assets/head_landmarks.npz`` is exported from ``flamecast.renderer.head.BuiltinHead`` by
``bench/webcam_head_export.py`` (drivers do not import the renderer); a test checks that it
matches the renderer's head. Landmark i is FaceMesh point i. Units are metres in FLAME's head
frame (y up, the face looks along +z, +x is the head's own left).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ASSET = Path(__file__).parent / "assets" / "head_landmarks.npz"
N_LANDMARKS = 468
JAW = 2
EYEBALL_RADIUS_M = 0.012

# FaceMesh indices (mediapipe's face_mesh_connections; "left" is the person's own left, +x).
LEFT_EYE = (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
RIGHT_EYE = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246)
LEFT_IRIS_CENTER, RIGHT_IRIS_CENTER = 473, 468
# Points that stay put when the face moves (forehead, nose bridge, eye corners, temples; none
# below the nose, which FaceMesh moves with the mouth): the rigid head pose is fitted on these.
RIGID = (
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 33, 133, 263, 362, 130, 359, 226, 446,
    67, 297, 109, 338, 103, 332, 21, 251, 54, 284, 127, 356, 162, 389, 143, 372,
)
FACE_OVAL = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176,
             234, 251, 284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)


@dataclass(frozen=True)
class HeadGeometry:
    """Landmarks of the built-in head and how they move.

    Attributes:
        neutral: (468, 3) landmarks at zero pose, shape and expression.
        exprdirs: (468, 3, E) landmark offsets per unit of each expression channel.
        shapedirs: (468, 3, S) landmark offsets per unit of each shape component.
        jaw_weight: (468,) skinning weight of the jaw joint at each landmark.
        joints: (5, 3) rest joints (global, neck, jaw, eye_left, eye_right).
        jaw_joint_exprdirs / jaw_joint_shapedirs: (3, E) / (3, S) motion of the jaw joint.
        expression_names / shape_names: channel names.
    """

    neutral: np.ndarray
    exprdirs: np.ndarray
    shapedirs: np.ndarray
    jaw_weight: np.ndarray
    joints: np.ndarray
    jaw_joint_exprdirs: np.ndarray
    jaw_joint_shapedirs: np.ndarray
    expression_names: tuple[str, ...]
    shape_names: tuple[str, ...]

    @classmethod
    def load(cls, path: str | Path | None = None) -> HeadGeometry:
        path = Path(path) if path is not None else ASSET
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: it ships inside the flamecast package (reinstall flamecast, or "
                "rebuild it with python bench/webcam_head_export.py)"
            )
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        names = {k: tuple(str(n) for n in arrays.pop(k)) for k in ("expression_names", "shape_names")}
        arrays = {k: v.astype(np.float64) for k, v in arrays.items()}
        return cls(**arrays, **names)

    def identity(self, shape: np.ndarray) -> np.ndarray:
        """(468, 3) neutral landmarks of a face with these shape coefficients."""
        return self.neutral + self.shapedirs @ shape

    def jaw_joint(self, shape: np.ndarray, expression: np.ndarray) -> np.ndarray:
        return self.joints[JAW] + self.jaw_joint_shapedirs @ shape + self.jaw_joint_exprdirs @ expression

    def landmarks(self, jaw: np.ndarray, expression: np.ndarray, shape: np.ndarray) -> np.ndarray:
        """(468, 3) landmarks with the head's global and neck joints at rest (the jaw skinned
        exactly as the head does: a blend of the rest position and the jaw's rotation)."""
        rest = self.identity(shape) + self.exprdirs @ expression
        pivot = self.jaw_joint(shape, expression)
        rotated = (rest - pivot) @ rotation_matrix(jaw).T + pivot
        w = self.jaw_weight[:, None]
        return (1.0 - w) * rest + w * rotated


def rotation_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: (3,) axis-angle -> (3, 3)."""
    v = np.asarray(axis_angle, np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def axis_angle(rot: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (3,) axis-angle (the inverse of ``rotation_matrix``)."""
    cos = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    if angle < 1e-6:
        return axis / 2.0
    if np.pi - angle < 1e-3:
        col = rot + np.eye(3)
        v = col[:, np.argmax(np.linalg.norm(col, axis=0))]
        return v / np.linalg.norm(v) * angle
    return axis / (2.0 * np.sin(angle)) * angle


def euler_xyz(rot: np.ndarray) -> np.ndarray:
    """Pitch (about x), yaw (about y) and roll (about z), radians, for ``rot = Rz @ Ry @ Rx``."""
    yaw = float(np.arcsin(np.clip(-rot[2, 0], -1.0, 1.0)))
    pitch = float(np.arctan2(rot[2, 1], rot[2, 2]))
    roll = float(np.arctan2(rot[1, 0], rot[0, 0]))
    return np.array([pitch, yaw, roll])
