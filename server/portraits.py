"""Uploaded portraits, kept in memory by content id (the first 16 hex digits of their SHA-256).

An upload is checked here for size (413) and for being a decodable image (422); whether it
holds exactly one face is decided by the generator when a session opens (422 from there).
"""

from __future__ import annotations

import collections
import hashlib
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 40_000_000
MAX_SIDE = 8192
MIN_SIDE = 16
FORMATS = ("PNG", "JPEG", "WEBP")  # what Image.open may even try: no GIF, BMP, TIFF, ICO, ...


class PortraitTooLarge(Exception):
    pass


class NotAnImage(ValueError):
    pass


@dataclass(frozen=True)
class Portrait:
    id: str
    data: bytes
    format: str
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return Image.MIME.get(self.format, "application/octet-stream")

    def describe(self) -> dict:
        return {"id": self.id, "format": self.format, "width": self.width, "height": self.height, "bytes": len(self.data)}


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of an encoded image; NotAnImage saying why otherwise."""
    if not data:
        raise NotAnImage("the portrait is empty; upload a PNG or JPEG photo of one face")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:  # reads the header only
            fmt, (w, h) = img.format, img.size
            if w * h > MAX_PIXELS or max(w, h) > MAX_SIDE or min(w, h) < MIN_SIDE:
                raise NotAnImage(f"the portrait is {w}x{h} pixels; each side must be {MIN_SIDE}..{MAX_SIDE} pixels "
                                 f"and the whole at most {MAX_PIXELS // 1_000_000} megapixels")
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, NotAnImage):
            raise
        raise NotAnImage("the portrait is not an image this server takes: upload a PNG, JPEG or WebP photo of "
                         "one face") from None
    return str(fmt), int(w), int(h)


class PortraitStore:
    """The last ``capacity`` uploaded portraits."""

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items: collections.OrderedDict[str, Portrait] = collections.OrderedDict()

    def add(self, data: bytes) -> Portrait:
        if len(data) > self.max_bytes:
            raise PortraitTooLarge(f"the portrait is {len(data)} bytes; the limit is {self.max_bytes} bytes")
        fmt, w, h = inspect_image(data)
        pid = hashlib.sha256(data).hexdigest()[:16]
        self._items[pid] = Portrait(pid, data, fmt, w, h)
        self._items.move_to_end(pid)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return self._items[pid]

    def get(self, portrait_id: str) -> Portrait:
        """KeyError when unknown (never uploaded, or forgotten)."""
        portrait = self._items[portrait_id]
        self._items.move_to_end(portrait_id)
        return portrait

    def list(self) -> list[Portrait]:
        return list(reversed(self._items.values()))
