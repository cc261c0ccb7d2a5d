"""A FLAME model folder in the official file formats, made from the built-in head (which has
FLAME's joint layout): ``generic_model.pkl`` (300 shape + 100 expression components, of which
the built-in head's fill the first), ``mediapipe_landmark_embedding.npz`` (105 of FaceMesh's
points) and ``FLAME_texture.npz`` (``vt``/``ft``). Real FLAME files cannot ship with tests; these
exercise the same loading, fitting and rendering code on a head that fits faces."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_flame_folder(folder: Path, *, landmarks: bool = True, texture: bool = True) -> Path:
    import scipy.sparse as sp

    from flamecast.renderer.head import load_head

    head = load_head("builtin")
    n = head.v_template.shape[0]
    dirs = np.zeros((n, 3, 400), np.float64)
    dirs[:, :, :head.n_shape] = head.shapedirs.numpy()
    dirs[:, :, 300:300 + head.n_expression] = head.exprdirs.numpy()
    faces = head.faces.numpy()
    model = {
        "v_template": head.v_template.numpy().astype(np.float64),
        "shapedirs": dirs,
        "posedirs": np.zeros((n, 3, 36)),
        "J_regressor": sp.csc_matrix(head.j_regressor.numpy().astype(np.float64)),
        "weights": head.weights.numpy().astype(np.float64),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "f": faces.astype(np.uint32),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "generic_model.pkl").write_bytes(pickle.dumps(model, protocol=2))
    if landmarks:
        idx = np.linspace(0, 467, 105).astype(np.int64)
        np.savez(folder / "mediapipe_landmark_embedding.npz", lmk_face_idx=head.lmk_faces_idx.numpy()[idx],
                 lmk_b_coords=head.lmk_bary.numpy()[idx], landmark_indices=idx)
    if texture:
        np.savez(folder / "FLAME_texture.npz", vt=head.uvs.numpy(), ft=faces)
    return folder / "generic_model.pkl"
