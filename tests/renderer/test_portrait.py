"""Portrait decoding and face finding (renderer.portrait)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from flamecast.plugins import PortraitError
from flamecast.renderer import portrait as P


def encode(image: np.ndarray | Image.Image, fmt: str, **kw) -> bytes:
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return P.default_portrait_image()


def test_default_portrait_has_one_face(astronaut):
    portrait = P.load_portrait(None)
    assert portrait.image.shape == (512, 512, 3) and portrait.image.dtype == np.uint8
    assert portrait.landmarks.shape == (468, 3)
    xy = portrait.landmarks[:, :2]
    # Eileen Collins' face is in the upper middle of the photo
    assert (xy.min(0) > [120, 30]).all() and (xy.max(0) < [330, 230]).all()
    assert np.array_equal(P.decode_image(P.default_portrait_bytes()), astronaut)


def test_refined_landmarks_add_irises():
    assert P.load_portrait(None, refine_landmarks=True).landmarks.shape == (478, 3)


@pytest.mark.parametrize("fmt, kw", [("PNG", {}), ("JPEG", {"quality": 92}), ("WEBP", {"quality": 90})])
def test_formats_decode_and_find_the_face(astronaut, fmt, kw):
    portrait = P.load_portrait(encode(astronaut, fmt, **kw))
    reference = P.load_portrait(None)
    assert np.abs(portrait.landmarks[:, :2] - reference.landmarks[:, :2]).mean() < 2.0


def test_exif_orientation_is_applied(astronaut):
    wide = astronaut[:, :400]  # 512 rows x 400 columns
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display after turning 90 degrees clockwise
    data = encode(Image.fromarray(wide).transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=95)
    decoded = P.decode_image(data)
    assert decoded.shape == (512, 400, 3)
    assert np.abs(decoded.astype(int) - wide.astype(int)).mean() < 6


def test_grey_and_rgba_images_become_rgb(astronaut):
    grey = P.decode_image(encode(Image.fromarray(astronaut).convert("L"), "PNG"))
    rgba = P.decode_image(encode(Image.fromarray(astronaut).convert("RGBA"), "PNG"))
    assert grey.shape == rgba.shape == (512, 512, 3)


def test_large_images_are_downscaled_for_analysis(astronaut):
    big = np.asarray(Image.fromarray(astronaut).resize((1600, 1600)))
    portrait = P.load_portrait(encode(big, "JPEG", quality=80))
    assert portrait.image.shape == (1024, 1024, 3)
    assert portrait.landmarks[:, 0].max() < 1024


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, I am not an image", P.default_portrait_bytes()[:300], b"GIF89a" + bytes(100)],
    ids=["empty", "text", "truncated-png", "gif"],
)
def test_not_an_image(data):
    with pytest.raises(PortraitError, match="^not an image"):
        P.load_portrait(data)


def test_too_many_pixels_is_refused_before_decoding():
    data = encode(Image.new("1", (9000, 5000)), "PNG")  # 45 Mpx in a few kB
    with pytest.raises(PortraitError, match="pixels; the limit"):
        P.decode_image(data)


def test_too_many_bytes_is_refused():
    with pytest.raises(PortraitError, match="limit"):
        P.decode_image(bytes(P.MAX_PORTRAIT_BYTES + 1))


def test_tiny_image_is_refused():
    with pytest.raises(PortraitError, match="too small"):
        P.decode_image(encode(np.zeros((32, 32, 3), np.uint8), "PNG"))


def test_no_face():
    from skimage import data

    with pytest.raises(PortraitError, match="^no face found: use a photo where one face is clearly visible"):
        P.load_portrait(encode(data.chelsea(), "PNG"))  # a cat


def test_several_faces(astronaut):
    crop = astronaut[0:300, 80:380]
    with pytest.raises(PortraitError, match=r"^several faces found \(2\): crop"):
        P.load_portrait(encode(np.concatenate([crop, crop], axis=1), "PNG"))
