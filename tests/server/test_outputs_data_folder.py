"""What the server keeps in its data folder: uploaded portraits across restarts."""

from __future__ import annotations

from flamecast.server.outputs import data_dir
from flamecast.server.portrait_store import PersistentPortraitStore

from .conftest import face_png, png


def test_portraits_survive_a_restart_within_the_limits(tmp_path):
    store = PersistentPortraitStore(2, 1_000_000, tmp_path)
    a, b, c = (store.add(png(color)) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255)))
    assert [p.id for p in store.list()] == [c.id, b.id]
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([b.id, c.id])  # the forgotten one is gone
    (tmp_path / "0123456789abcdef").write_bytes(b"not an image")  # a damaged file is skipped
    again = PersistentPortraitStore(2, 1_000_000, tmp_path)
    assert {p.id for p in again.list()} == {b.id, c.id}
    assert again.get(c.id).data == store.get(c.id).data
    face = again.add(face_png())
    assert again.list()[0].id == face.id and (tmp_path / face.id).exists()


def test_the_data_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FLAMECAST_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("FLAMECAST_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "flamecast"
