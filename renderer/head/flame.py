"""FLAME 2020 / 2023 from the user's licensed ``generic_model.pkl`` (never downloaded).

The pickle is the standard FLAME release: a dict with v_template, shapedirs (N, 3, 300 shape +
100 expression), posedirs (N, 3, 36), J_regressor (scipy sparse, 5 x N), weights (N, 5),
kintree_table (2, 5) and f (F, 3). Some arrays are chumpy objects; they are read without
chumpy: a restricted unpickler maps chumpy classes to a stand-in that keeps the array chumpy
stores in its state (``state['x']``). Only numpy, scipy.sparse and chumpy classes are allowed.

Landmarks, looked up next to the pickle:
- ``landmark_embedding.npy`` (FLAME's 68-point embedding: 51 static points and 17 contour points
  chosen by the head's yaw) -> ``landmark_set = "flame68"``;
- else ``mediapipe_landmark_embedding.npz`` (105 FaceMesh points; ``landmark_indices`` says which)
  -> ``landmark_set = "mediapipe105"``;
- else no landmarks (``landmark_set = "none"``, L = 0).
(``landmarks="mediapipe105"`` takes the MediaPipe embedding when both are there: fitting a
portrait's FaceMesh points needs it.)
Optional ``l_eyelid.npy`` / ``r_eyelid.npy`` (N, 3) eyelid blendshapes enable ``eyelids``;
optional ``FLAME_texture.npz`` (FLAME's texture space: ``vt``, ``ft``) gives ``uvs``.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .base import SkinnedHead
from .lbs import barycentric_points, rodrigues

FLAME_FILE = "generic_model.pkl"
WEIGHTS_ENV = "FLAMECAST_WEIGHTS"
N_SHAPE_DEFAULT = 300
N_EXPRESSION_DEFAULT = 100


def default_flame_path() -> Path:
    """$FLAMECAST_WEIGHTS/flame/generic_model.pkl, else ~/.cache/flamecast/weights/flame/generic_model.pkl."""
    root = os.environ.get(WEIGHTS_ENV)
    base = Path(root) if root else Path.home() / ".cache" / "flamecast" / "weights"
    return base / "flame" / FLAME_FILE


class _ChumpyStandIn:
    """Takes the place of any chumpy class while unpickling; keeps the pickled state."""

    def __init__(self, *args, **kwargs) -> None:
        self.state = {}

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {"x": state}

    def value(self) -> np.ndarray:
        if "x" not in self.state:
            raise ValueError(
                "the FLAME file holds a chumpy expression that is not a plain array; "
                "convert it once with chumpy installed (replace each value v by v.r) and retry"
            )
        return np.asarray(self.state["x"])


_ALLOWED_PREFIXES = ("numpy", "scipy.sparse", "copy_reg", "copyreg", "__builtin__", "builtins", "_codecs")


class FlameUnpickler(pickle.Unpickler):
    """Unpickler for FLAME's pickles: chumpy -> stand-in; only numpy/scipy/builtin classes."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "chumpy":
            return _ChumpyStandIn
        if module.startswith(_ALLOWED_PREFIXES):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a FLAME file")


def _plain(value):
    """numpy array from chumpy stand-ins, scipy sparse matrices and arrays."""
    if isinstance(value, _ChumpyStandIn):
        return value.value()
    if hasattr(value, "toarray"):
        return value.toarray()
    return np.asarray(value)


def read_flame_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """The FLAME pickle as a dict of numpy arrays (no chumpy needed)."""
    data = Path(path).read_bytes()
    raw = FlameUnpickler(io.BytesIO(data), encoding="latin1").load()
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a FLAME model file (expected a pickled dict)")
    missing = {"v_template", "shapedirs", "J_regressor", "weights", "kintree_table", "f"} - set(raw)
    if missing:
        raise ValueError(f"{path} is not a FLAME model file: missing {sorted(missing)}")
    return {k: _plain(v) for k, v in raw.items() if not isinstance(v, str)}


def missing_flame_message(path: Path) -> str:
    return (
        f"FLAME model file not found: {path}. FLAME is licensed by the MPI for Intelligent Systems: "
        "register at https://flame.is.tue.mpg.de, download FLAME 2020 or FLAME 2023, and put "
        f"{FLAME_FILE} at {default_flame_path()} (or set {WEIGHTS_ENV} to a folder holding "
        f"flame/{FLAME_FILE}, or pass its path). flamecast never downloads it."
    )


class FlameModel(SkinnedHead):
    """The FLAME head model (5023 vertices, 300 shape + 100 expression PCA components)."""

    expression_names = None

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        n_shape: int = N_SHAPE_DEFAULT,
        n_expression: int = N_EXPRESSION_DEFAULT,
        name: str | None = None,
        landmarks: str = "flame68",
    ) -> None:
        super().__init__()
        path = Path(path) if path is not None else default_flame_path()
        if not path.is_file():
            raise FileNotFoundError(missing_flame_message(path))
        model = read_flame_pickle(path)
        n_verts = model["v_template"].shape[0]
        dirs = model["shapedirs"].reshape(n_verts, 3, -1)
        n_total_shape = min(N_SHAPE_DEFAULT, dirs.shape[2])
        n_shape = min(n_shape, n_total_shape)
        n_expression = min(n_expression, dirs.shape[2] - n_total_shape)
        posedirs = model.get("posedirs")
        if posedirs is not None:
            posedirs = posedirs.reshape(-1, posedirs.shape[-1]).T  # (36, N*3)
        parents = model["kintree_table"][0].astype(np.int64).copy()
        parents[0] = -1
        self.name = name or ("flame2023" if "2023" in str(path) else "flame2020")
        self.path = path
        self._set_model(
            v_template=model["v_template"],
            faces=model["f"].astype(np.int64),
            shapedirs=dirs[:, :, :n_shape],
            exprdirs=dirs[:, :, n_total_shape : n_total_shape + n_expression],
            j_regressor=model["J_regressor"],
            weights=model["weights"],
            parents=parents,
            posedirs=posedirs,
            eyelid_dirs=_eyelids(path.parent, n_verts),
            lmk_faces_idx=np.zeros(0, np.int64),
            lmk_bary=np.zeros((0, 3), np.float32),
            uvs=_vertex_uvs(path.parent, model["f"].astype(np.int64), n_verts),
        )
        self.landmark_set = "none"
        self.landmark_indices = None
        self._load_landmarks(path.parent, prefer=landmarks)

    def _load_landmarks(self, folder: Path, prefer: str = "flame68") -> None:
        flame68 = folder / "landmark_embedding.npy"
        mediapipe = folder / "mediapipe_landmark_embedding.npz"
        if flame68.is_file() and not (prefer == "mediapipe105" and mediapipe.is_file()):
            emb = np.load(flame68, allow_pickle=True, encoding="latin1")
            emb = emb.item() if emb.dtype == object else emb
            self.lmk_faces_idx = torch.as_tensor(np.asarray(emb["static_lmk_faces_idx"]).reshape(-1), dtype=torch.long)
            self.lmk_bary = torch.as_tensor(np.asarray(emb["static_lmk_bary_coords"]).reshape(-1, 3), dtype=torch.float32)
            dyn_idx = np.asarray(emb["dynamic_lmk_faces_idx"]).astype(np.int64)
            dyn_bary = np.asarray(emb["dynamic_lmk_bary_coords"], dtype=np.float32)
            self.register_buffer("dyn_faces_idx", torch.as_tensor(dyn_idx))
            self.register_buffer("dyn_bary", torch.as_tensor(dyn_bary))
            self.landmark_set = "flame68"
        elif mediapipe.is_file():
            with np.load(mediapipe) as emb:
                self.lmk_faces_idx = torch.as_tensor(emb["lmk_face_idx"].astype(np.int64))
                self.lmk_bary = torch.as_tensor(emb["lmk_b_coords"].astype(np.float32))
                self.landmark_indices = tuple(int(i) for i in emb["landmark_indices"])
            self.landmark_set = "mediapipe105"

    def _landmarks(self, verts: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        static = barycentric_points(verts, self.faces, self.lmk_faces_idx, self.lmk_bary)
        if self.landmark_set != "flame68":
            return static
        contour = _dynamic_contour(verts, pose, self.faces, self.dyn_faces_idx, self.dyn_bary)
        return torch.cat([contour, static], 1)


def _vertex_uvs(folder: Path, faces: np.ndarray, n_verts: int) -> np.ndarray | None:
    """Per-vertex texture coordinates from FLAME's texture space file (``FLAME_texture.npz``:
    ``vt`` (K, 2) coordinates, ``ft`` (F, 3) their index per face corner), or None without it.
    A vertex on a UV seam has several coordinates; it keeps one, and the faces across the seam
    are found and coloured flat by the texture baker (``texture.seam_faces``)."""
    path = folder / "FLAME_texture.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        vt, ft = np.asarray(data["vt"], np.float32), np.asarray(data["ft"], np.int64)
    if ft.shape != faces.shape or ft.max(initial=0) >= len(vt):
        raise ValueError(f"{path}: ft has shape {ft.shape} for {faces.shape} faces; is it the texture space of this FLAME?")
    uvs = np.zeros((n_verts, 2), np.float32)
    uvs[faces[::-1].reshape(-1)] = vt[ft[::-1].reshape(-1)]  # the first corner of each vertex wins
    return uvs


def _eyelids(folder: Path, n_verts: int) -> np.ndarray | None:
    left, right = folder / "l_eyelid.npy", folder / "r_eyelid.npy"
    if not (left.is_file() and right.is_file()):
        return None
    return np.stack([np.load(left).reshape(n_verts, 3), np.load(right).reshape(n_verts, 3)])


def _yaw_bins(pose: torch.Tensor) -> torch.Tensor:
    """Row of FLAME's dynamic contour table for the yaw of root+neck (degrees, 0..78)."""
    rot = rodrigues(pose.reshape(-1, 5, 3)[:, :2])
    rel = rot[:, 0] @ rot[:, 1]
    sy = torch.sqrt(rel[:, 0, 0] ** 2 + rel[:, 1, 0] ** 2)
    yaw = torch.round(torch.clamp(torch.atan2(-rel[:, 2, 0], sy) * 180.0 / math.pi, max=39.0)).long()
    negative = torch.where(yaw < -39, torch.full_like(yaw, 78), 39 - yaw)
    return torch.where(yaw < 0, negative, yaw)


def _dynamic_contour(verts, pose, faces, dyn_faces_idx, dyn_bary) -> torch.Tensor:
    rows = _yaw_bins(pose.detach())
    idx = dyn_faces_idx[rows]  # (B, 17)
    bary = dyn_bary[rows]  # (B, 17, 3)
    batch = torch.arange(verts.shape[0], device=verts.device)[:, None, None]
    tri = verts[batch, faces[idx]]  # (B, 17, 3, 3)
    return (tri * bary[..., None]).sum(2)
