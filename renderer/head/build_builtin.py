"""Bake the built-in head into assets/builtin_head.npz (run once; the result ships in the package).

    python -m flamecast.renderer.head.build_builtin [--out PATH]

Needs mediapipe and scikit-image (a FaceMesh run on scikit-image's astronaut photograph gives
the face surface); loading the baked head needs neither. docs/head.md describes every step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from flamecast.plugins import BUILTIN_EXPRESSION_NAMES

from .builder import assemble, blend, face, meshops, rig
from .builtin import ASSET


def build() -> dict[str, np.ndarray]:
    """Every array of the asset, in metres, FLAME axes, origin at the head centre."""
    tris = face.tesselation_triangles()
    points, perm = face.metric_face(face.facemesh_points(), tris)
    points, tris = meshops.subdivide(points, tris)
    g = assemble.full_geometry(points, tris)
    origin = np.asarray(g.params.center)
    targets = rig.joint_targets(g)
    weights = rig.skinning_weights(g, targets[2])
    regressor = rig.joint_regressor(g, targets)
    exprdirs = blend.expression_dirs(g, perm)
    shapedirs = blend.shape_dirs(g)
    lmk_faces, lmk_bary = rig.landmark_embedding(g.tris)
    skin = rig.skin_vertices(g)
    regions = {
        "face": g.regions["face"],
        "scalp": np.setdiff1d(skin[g.verts[skin, 1] >= g.verts[152, 1]], np.concatenate([g.regions["face"], g.regions["mouth_inside"], g.regions["eye_sockets"], g.regions["ears"]])),
        "neck": skin[g.verts[skin, 1] < g.verts[152, 1]],
        "eyes": g.regions["eyes"],
        "eye_left": g.regions["eye_left"],
        "eye_right": g.regions["eye_right"],
        "mouth_inside": g.regions["mouth_inside"],
        "eye_sockets": g.regions["eye_sockets"],
        "ears": g.regions["ears"],
    }
    verts = g.verts - origin
    return {
        "v_template": verts.astype(np.float32),
        "faces": g.tris.astype(np.int32),
        "shapedirs": shapedirs.astype(np.float32),
        "shape_names": np.array(blend.SHAPE_NAMES),
        "exprdirs": exprdirs.astype(np.float32),
        "expression_names": np.array(BUILTIN_EXPRESSION_NAMES),
        "j_regressor": regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "parents": rig.PARENTS,
        "lmk_faces_idx": lmk_faces.astype(np.int32),
        "lmk_bary": lmk_bary.astype(np.float32),
        "uvs": rig.azimuthal_uvs(verts, np.zeros(3)).astype(np.float32),
        **{f"region_{k}": v.astype(np.int32) for k, v in regions.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ASSET), help="where to write the .npz")
    args = parser.parse_args(argv)
    arrays = build()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    n, f = len(arrays["v_template"]), len(arrays["faces"])
    print(f"wrote {out}: {n} vertices, {f} triangles, {out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
