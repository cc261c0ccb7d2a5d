"""The optional pytorch3d backend gives the same fragments as the built-in one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flamecast.renderer.raster import make_cameras, project, rasterize
from flamecast.renderer.raster.pytorch3d_backend import available

needs_pytorch3d = pytest.mark.skipif(not available(), reason="pytorch3d is not installed")


@needs_pytorch3d
@pytest.mark.parametrize("cull", [False, True])
def test_pytorch3d_matches_builtin(cull):
    rng = np.random.default_rng(0)
    verts = torch.tensor(rng.normal(size=(200, 3)) * 0.1, dtype=torch.float32)
    faces = torch.tensor(np.stack([rng.choice(200, 3, replace=False) for _ in range(300)]))
    cams = make_cameras(None, center=[0, 0, 0], radius=0.25, size=64)
    screen = project(torch.stack([verts, verts * 0.8]), cams)  # (2, 4, N, 3)
    ours = rasterize(screen, faces, 64, backend="torch", cull_backfaces=cull)
    theirs = rasterize(screen, faces, 64, backend="pytorch3d", cull_backfaces=cull)
    assert theirs.face_idx.shape == ours.face_idx.shape == (2, 4, 64, 64)
    same = theirs.face_idx == ours.face_idx
    assert same.float().mean() >= 0.999
    hit = same & ours.mask
    assert torch.allclose(theirs.bary[hit], ours.bary[hit], atol=1e-3)
    assert torch.allclose(theirs.depth[hit], ours.depth[hit], rtol=1e-4)


def test_missing_pytorch3d_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pytorch3d(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] == "pytorch3d":
            raise ImportError(name)
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_pytorch3d)
    with pytest.raises(RuntimeError, match="backend='torch'"):
        rasterize(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 2]]), 8, backend="pytorch3d")
