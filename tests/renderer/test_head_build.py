"""The shipped built-in head asset is what the build script makes (FaceMesh runs offline)."""

from __future__ import annotations

import numpy as np
import pytest

from flamecast.renderer.head.builtin import ASSET


@pytest.mark.slow
def test_rebuilt_asset_matches_the_shipped_one():
    pytest.importorskip("mediapipe")
    from flamecast.renderer.head.build_builtin import build

    rebuilt = build()
    with np.load(ASSET) as shipped:
        assert sorted(shipped.files) == sorted(rebuilt)
        for key in shipped.files:
            a, b = shipped[key], rebuilt[key]
            assert a.shape == b.shape, key
            if a.dtype.kind == "f":
                np.testing.assert_allclose(a, b, atol=1e-4, err_msg=key)
            else:
                np.testing.assert_array_equal(a, b.astype(a.dtype), err_msg=key)


def test_facemesh_tesselation_gives_a_disc_with_three_holes():
    pytest.importorskip("mediapipe")
    from flamecast.renderer.head.builder.face import eye_loops, tesselation_triangles
    from flamecast.renderer.head.builder.meshops import edges_of

    tris = tesselation_triangles()
    assert tris.shape == (852, 3)
    assert 468 - len(edges_of(tris)) + len(tris) == -2  # Euler characteristic of a disc with 3 holes
    loops = eye_loops(tris)
    assert {k: len(v) for k, v in loops.items()} == {"oval": 36, "mouth": 20, "eye_a": 16, "eye_b": 16}
    assert 10 in loops["oval"] and 152 in loops["oval"] and 13 in loops["mouth"]
