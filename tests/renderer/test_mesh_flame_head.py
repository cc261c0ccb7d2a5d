"""The mesh generator with the user's FLAME model: it fits and textures the portrait on FLAME,
takes frames of FLAME's 100 expression components, says so in its session's head space, and
names the file that is missing when the FLAME folder is not complete."""

from __future__ import annotations

import numpy as np
import pytest

from flamecast.plugins import FlameFrame, GeneratorSessionSpec, GeneratorUnavailable, HeadSpace
from flamecast.renderer.generators.mesh import MeshGenerator, MeshOptions

from ..flame_files import write_flame_folder


def _open(weights, **options):
    gen = MeshGenerator({"weights_dir": str(weights)})
    spec = GeneratorSessionSpec("s", None, MeshOptions(head="flame", views=("front", "left30"), size=96, **options))
    return gen.open_session(spec)


def test_a_flame_head_session_renders_the_portrait(tmp_path):
    write_flame_folder(tmp_path / "flame")
    session = _open(tmp_path)
    assert session.head_space == HeadSpace("flame2020", 100, None, has_eyelids=False)
    assert session.fit.error_px < 0.05 * session.fit.face_px  # the fit on 105 FaceMesh points holds
    open_jaw = np.zeros(15, np.float32)
    open_jaw[6] = 0.3
    frames = [FlameFrame(session_id="s", seq=i, pose=p, expression=np.zeros(100, np.float32))
              for i, p in enumerate((np.zeros(15, np.float32), open_jaw))]
    out = session.step(frames)
    assert [r.views.shape for r in out] == [(2, 96, 96, 3)] * 2
    assert out[0].views.std() > 10  # a textured face, not a flat fill
    assert np.abs(out[0].views.astype(int) - out[1].views.astype(int)).mean() > 0.5  # the jaw moved it


def test_a_missing_flame_file_is_named(tmp_path):
    with pytest.raises(GeneratorUnavailable, match="generic_model.pkl"):
        _open(tmp_path)
    write_flame_folder(tmp_path / "flame", landmarks=False, texture=False)
    with pytest.raises(GeneratorUnavailable, match="mediapipe_landmark_embedding.npz and FLAME_texture.npz"):
        _open(tmp_path)
