"""Uploaded portraits kept on disk, so they survive a restart.

``PersistentPortraitStore`` is a ``portraits.PortraitStore`` (same checks, same count and size
limits) that also writes each portrait to a folder (``DATA_DIR/portraits/ID``, written to a
temporary name and renamed, so a crash never leaves half a file) and deletes the files of the
portraits the store forgets. At start it loads the folder oldest first, checking every file as
an upload; a file that no longer passes is skipped (and removed with the forgotten ones).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .portraits import NotAnImage, Portrait, PortraitStore, PortraitTooLarge

log = logging.getLogger(__name__)


class PersistentPortraitStore(PortraitStore):
    def __init__(self, capacity: int, max_bytes: int, folder: Path) -> None:
        super().__init__(capacity, max_bytes)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._load()

    def add(self, data: bytes) -> Portrait:
        portrait = super().add(data)
        path = self.folder / portrait.id
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(portrait.data)
            os.replace(tmp, path)
        self._prune()
        return portrait

    def _load(self) -> None:
        files = sorted((p for p in self.folder.iterdir() if p.is_file() and p.suffix == ""),
                       key=lambda p: p.stat().st_mtime)
        for path in files:
            try:
                super().add(path.read_bytes())
            except (NotAnImage, PortraitTooLarge, OSError) as exc:
                log.warning("portrait file %s skipped: %s", path, exc)
        self._prune()
        log.info("%d portrait(s) loaded from %s", len(self.list()), self.folder)

    def _prune(self) -> None:
        kept = {p.id for p in self.list()}
        for path in self.folder.iterdir():
            if path.is_file() and path.suffix == "" and path.name not in kept and len(path.name) == 16:
                path.unlink(missing_ok=True)
