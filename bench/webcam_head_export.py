"""Export the landmark geometry of the built-in head that the webcam driver fits to.

    python bench/webcam_head_export.py [--out drivers/webcam/assets/head_landmarks.npz]

The webcam driver fits pose, expression, eyelids and gaze to FaceMesh landmarks on the built-in
head's space. Drivers may not import the renderer, so the landmark part of the head ships with
the driver as data: the 468 neutral landmarks, their expression and shape blendshapes, the
jaw's skinning weight at each landmark and the jaw joint (with its blendshapes). Rerun this
script whenever ``renderer/head/assets/builtin_head.npz`` changes;
``tests/drivers/test_webcam_head.py`` fails while the two disagree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "drivers" / "webcam" / "assets" / "head_landmarks.npz"
JAW = 2


def export_arrays() -> dict[str, np.ndarray]:
    from flamecast.renderer.head import load_head

    head = load_head("builtin")
    n = 468
    if head.landmark_set != "mediapipe468":
        raise SystemExit(f"the built-in head has landmark set {head.landmark_set!r}; expected mediapipe468")
    with torch.no_grad():
        neutral = head(pose=torch.zeros(1, 15)).landmarks[0]
    # Landmark i is vertex i of the built-in head (docs/head.md), so its blendshapes and skinning
    # weights are the vertex rows; the check below keeps that assumption honest.
    if not torch.allclose(neutral, head.v_template[:n], atol=1e-6):
        raise SystemExit("the built-in head's landmarks are no longer its first 468 vertices")
    jr = head.j_regressor
    return {
        "neutral": neutral.numpy().astype(np.float32),
        "exprdirs": head.exprdirs[:n].numpy().astype(np.float32),
        "shapedirs": head.shapedirs[:n].numpy().astype(np.float32),
        "jaw_weight": head.weights[:n, JAW].numpy().astype(np.float32),
        "joints": (jr @ head.v_template).numpy().astype(np.float32),
        "jaw_joint_exprdirs": torch.einsum("n,nce->ce", jr[JAW], head.exprdirs).numpy().astype(np.float32),
        "jaw_joint_shapedirs": torch.einsum("n,ncs->cs", jr[JAW], head.shapedirs).numpy().astype(np.float32),
        "expression_names": np.array(head.expression_names),
        "shape_names": np.array(head.shape_names),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    arrays = export_arrays()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
