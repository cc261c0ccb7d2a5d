"""Reference portraits: decode the bytes a session sends, find the one face in it.

``load_portrait(data)`` is the one entry point generators use: it decodes PNG, JPEG or WebP
bytes (EXIF orientation applied, size limits enforced), or takes the default portrait when
``data`` is None, and finds the face with mediapipe FaceMesh. Every way a portrait can be
unusable raises ``flamecast.plugins.PortraitError`` with a message saying what to do.

The default portrait is the photograph of astronaut Eileen Collins that scikit-image ships
(``skimage.data.astronaut()``; NASA, public domain, see docs/generator.md).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

from flamecast.plugins import PortraitError

FORMATS = ("PNG", "JPEG", "WEBP")
MAX_PORTRAIT_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
MIN_SIDE = 64
ANALYSIS_SIDE = 1024  # larger images are downscaled to this longest side
MAX_FACES_COUNTED = 4


@dataclass(frozen=True)
class Portrait:
    """A decoded portrait and its one face.

    Attributes:
        image: (H, W, 3) uint8 RGB, at most ANALYSIS_SIDE on its longest side.
        landmarks: (468 or 478, 3) float32 FaceMesh landmarks in pixels of ``image``: x to
            the right, y down, z toward the back of the head (same scale as x; 0 near the
            head's centre, negative = closer to the camera).
    """

    image: np.ndarray
    landmarks: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.shape[1], self.image.shape[0]


def load_portrait(data: bytes | None, *, refine_landmarks: bool = False) -> Portrait:
    """Decode ``data`` (or take the default portrait) and find its one face."""
    image = default_portrait_image() if data is None else decode_image(data)
    image = _fit_side(image, ANALYSIS_SIDE)
    return Portrait(image=image, landmarks=find_face(image, refine_landmarks=refine_landmarks))


def default_portrait_image() -> np.ndarray:
    """The default portrait: scikit-image's astronaut photograph, (512, 512, 3) uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., :3])


def default_portrait_bytes() -> bytes:
    """The default portrait encoded as PNG (what a client would send)."""
    return encode_png(default_portrait_image())


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG/WebP bytes -> (H, W, 3) uint8 RGB with EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise PortraitError("not an image (empty portrait): send a PNG, JPEG or WebP file")
    if len(data) > MAX_PORTRAIT_BYTES:
        raise PortraitError(
            f"not an image we accept ({len(data)} bytes; the limit is {MAX_PORTRAIT_BYTES}): send a smaller file"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(bytes(data)), formats=FORMATS)
            _check_dimensions(img.size)
            img = ImageOps.exif_transpose(img)
            rgb = np.asarray(img.convert("RGB"))
    except PortraitError:
        raise
    except UnidentifiedImageError:
        raise PortraitError("not an image (unrecognised file): send a PNG, JPEG or WebP file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PortraitError(f"not an image we accept (more than {MAX_PIXELS} pixels): send a smaller image") from None
    except Exception as exc:  # truncated or corrupt files raise many types
        raise PortraitError(f"not an image (cannot decode: {exc}): send a valid PNG, JPEG or WebP file") from None
    return np.ascontiguousarray(rgb)


def _check_dimensions(size: tuple[int, int]) -> None:
    w, h = size
    if w * h > MAX_PIXELS:
        raise PortraitError(f"not an image we accept ({w}x{h} pixels; the limit is {MAX_PIXELS}): send a smaller image")
    if min(w, h) < MIN_SIDE:
        raise PortraitError(f"image too small ({w}x{h}): use a photo at least {MIN_SIDE} pixels on each side")


def _fit_side(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    from PIL import Image

    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def find_face(image: np.ndarray, *, refine_landmarks: bool = False) -> np.ndarray:
    """FaceMesh landmarks (468, or 478 with ``refine_landmarks``) of the one face, in pixels.

    Raises PortraitError when there is no face or more than one.
    """
    faces = detect_faces(image, refine_landmarks=refine_landmarks)
    if not faces:
        raise PortraitError(
            "no face found: use a photo where one face is clearly visible, frontal, well lit "
            "and at least about 100 pixels wide"
        )
    if len(faces) > 1:
        count = f"{len(faces)} or more" if len(faces) >= MAX_FACES_COUNTED else str(len(faces))
        raise PortraitError(f"several faces found ({count}): crop the photo to one face")
    return faces[0]


def detect_faces(image: np.ndarray, *, refine_landmarks: bool = False) -> list[np.ndarray]:
    """Every face FaceMesh finds (up to MAX_FACES_COUNTED), as (N, 3) float32 pixel landmarks."""
    import mediapipe

    face_mesh = mediapipe.solutions.face_mesh
    rgb = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    h, w = rgb.shape[:2]
    with face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=MAX_FACES_COUNTED, refine_landmarks=refine_landmarks
    ) as mesh:
        result = mesh.process(rgb)
    faces = []
    for face in result.multi_face_landmarks or ():
        pts = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
        faces.append(pts * np.array([w, h, w], dtype=np.float32))
    return faces
