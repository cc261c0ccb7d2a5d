"""The landmark geometry shipped with the webcam driver matches the renderer's built-in head."""

import numpy as np
import torch

from flamecast.drivers.webcam.geometry import HeadGeometry
from flamecast.renderer.head import load_head


def test_shipped_geometry_matches_the_builtin_head():
    torch.set_num_threads(1)
    head, geo = load_head("builtin"), HeadGeometry.load()
    assert geo.expression_names == head.expression_names
    assert geo.shape_names == head.shape_names
    rng = np.random.default_rng(0)
    for _ in range(3):
        jaw = rng.uniform(0, 0.4)
        expr = rng.uniform(0, 1, head.n_expression)
        shape = rng.normal(0, 1, head.n_shape)
        pose = np.zeros(15, np.float32)
        pose[6] = jaw
        with torch.no_grad():
            want = head(pose=torch.tensor(pose)[None], expression=torch.tensor(expr, dtype=torch.float32)[None],
                        shape=torch.tensor(shape, dtype=torch.float32)[None]).landmarks[0].double().numpy()
        got = geo.landmarks(np.array([jaw, 0, 0]), expr, shape)
        assert np.abs(got - want).max() < 2e-5, "rerun python bench/webcam_head_export.py"
