"""Preview renders of the built-in head for docs/images (numpy z-buffer, grey Lambert shading).

    python bench/render_head_docs.py            # writes docs/images/head_*.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def rotation_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def render(verts, faces, yaw_deg=0.0, size=320, center=None, radius=None, colors=None) -> np.ndarray:
    """Orthographic view from a camera on +z turned by yaw (degrees) about y; smooth (Phong-normal) Lambert shading."""
    center = verts.mean(0) if center is None else center
    radius = np.abs(verts - center).max() if radius is None else radius
    v = (verts - center) @ rotation_y(-yaw_deg).T
    scale = size / (2.15 * radius)
    px = np.stack([v[:, 0] * scale + size / 2, -v[:, 1] * scale + size / 2, v[:, 2]], 1)
    tri = px[faces]
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, faces[:, k], n)
    vn /= np.linalg.norm(vn, axis=1, keepdims=True) + 1e-12
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    light = np.array([0.35, 0.4, 0.85]) / np.linalg.norm([0.35, 0.4, 0.85])
    zbuf = np.full((size, size), -np.inf)
    img = np.full((size, size, 3), 255.0)
    base = np.ones((len(faces), 3)) * 0.82 if colors is None else colors
    visible = n[:, 2] > 0  # back faces are culled
    for f in np.nonzero(visible)[0]:
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = tri[f]
        xmin, xmax = int(max(np.floor(min(x0, x1, x2)), 0)), int(min(np.ceil(max(x0, x1, x2)), size - 1))
        ymin, ymax = int(max(np.floor(min(y0, y1, y2)), 0)), int(min(np.ceil(max(y0, y1, y2)), size - 1))
        if xmin > xmax or ymin > ymax:
            continue
        xs, ys = np.meshgrid(np.arange(xmin, xmax + 1) + 0.5, np.arange(ymin, ymax + 1) + 0.5)
        den = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)
        if abs(den) < 1e-12:
            continue
        w0 = ((y1 - y2) * (xs - x2) + (x2 - x1) * (ys - y2)) / den
        w1 = ((y2 - y0) * (xs - x2) + (x0 - x2) * (ys - y2)) / den
        w2 = 1 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        z = w0 * z0 + w1 * z1 + w2 * z2
        sub = zbuf[ymin : ymax + 1, xmin : xmax + 1]
        hit = inside & (z > sub)
        sub[hit] = z[hit]
        nrm = w0[hit, None] * vn[faces[f, 0]] + w1[hit, None] * vn[faces[f, 1]] + w2[hit, None] * vn[faces[f, 2]]
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-12
        shade = 0.15 + 0.85 * np.clip(nrm @ light, 0, 1)
        img[ymin : ymax + 1, xmin : xmax + 1][hit] = 255 * shade[:, None] * base[f]
    return img.astype(np.uint8)


def main() -> None:
    import torch

    from flamecast.plugins import BUILTIN_EXPRESSION_NAMES
    from flamecast.renderer.head import BuiltinHead

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--size", type=int, default=300)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    head = BuiltinHead()
    faces = head.faces.numpy()
    regions = head.vertex_regions()
    with torch.no_grad():
        eye_joints = head(pose=torch.zeros(1, 15)).joints[0, 3:].numpy()
    colors = face_colors(head.v_template.numpy(), faces, regions, eye_joints)
    center, radius = head.center.numpy(), head.radius * 0.93

    def expr(**kw):
        e = torch.zeros(1, head.n_expression)
        for k, v in kw.items():
            e[0, BUILTIN_EXPRESSION_NAMES.index(k)] = v
        return e

    jaw = torch.zeros(1, 15)
    jaw[0, 6] = 0.35
    rows = [
        ("neutral", dict(pose=torch.zeros(1, 15))),
        ("smile", dict(pose=torch.zeros(1, 15), expression=expr(smile=1.0))),
        ("jaw open", dict(pose=jaw)),
        ("blink", dict(pose=torch.zeros(1, 15), expression=expr(eye_blink_left=1.0, eye_blink_right=1.0))),
        ("brow raise", dict(pose=torch.zeros(1, 15), expression=expr(brow_raise=1.0))),
    ]
    views = [("front", 0.0), ("three_quarter", 35.0), ("profile", 90.0)]
    tiles = []
    for label, params in rows:
        with torch.no_grad():
            v = head(**params).vertices[0].numpy()
        row = [render(v, faces, yaw, args.size, center, radius, colors) for _, yaw in views]
        tiles.append(np.concatenate(row, 1))
        Image.fromarray(row[0]).save(out / f"head_{label.replace(' ', '_')}_front.png")
    sheet = np.concatenate(tiles, 0)
    Image.fromarray(sheet).save(out / "head_renders.png")
    expression_sheet(head, faces, colors, center, out / "head_expressions.png", args.size)
    shape_sheet(head, faces, colors, center, radius, out / "head_shapes.png", 200)
    for name, yaw in views:
        with torch.no_grad():
            v = head(pose=torch.zeros(1, 15)).vertices[0].numpy()
        Image.fromarray(render(v, faces, yaw, args.size * 2, center, radius, colors)).save(out / f"head_neutral_{name}.png")


def expression_sheet(head, faces, colors, center, path, size) -> None:
    """Every named expression channel at 1.0, front views 4 to a row, labelled."""
    import torch
    from PIL import ImageDraw

    names = head.expression_names
    tiles = []
    zoom = center + np.array([0.0, 0.035, 0.0])
    for k, name in enumerate(names):
        e = torch.zeros(1, head.n_expression)
        e[0, k] = 1.0
        with torch.no_grad():
            v = head(pose=torch.zeros(1, 15), expression=e).vertices[0].numpy()
        tile = Image.fromarray(render(v, faces, 0.0, size, zoom, head.radius * 0.5, colors))
        ImageDraw.Draw(tile).text((8, 8), name, fill=(0, 0, 0))
        tiles.append(np.asarray(tile))
    rows = [np.concatenate(tiles[i : i + 4], 1) for i in range(0, len(tiles), 4)]
    Image.fromarray(np.concatenate(rows, 0)).save(path)


SIDE_VIEW_SHAPES = ("head_depth", "chin_forward", "nose_length", "nose_bridge", "brow_ridge", "lip_fullness", "forehead_slope")


def shape_sheet(head, faces, colors, center, radius, path, size) -> None:
    """Every shape component at -3 and +3 (profile for the ones that act in depth), labelled."""
    import torch
    from PIL import ImageDraw

    tiles = []
    for k, name in enumerate(head.shape_names):
        for value in (-3.0, 3.0):
            s = torch.zeros(1, head.n_shape)
            s[0, k] = value
            with torch.no_grad():
                v = head(pose=torch.zeros(1, 15), shape=s).vertices[0].numpy()
            yaw = 90.0 if name in SIDE_VIEW_SHAPES else 0.0
            tile = Image.fromarray(render(v, faces, yaw, size, center, radius, colors))
            ImageDraw.Draw(tile).text((4, 4), f"{name} {value:+.0f}", fill=(0, 0, 0))
            tiles.append(np.asarray(tile))
    rows = [np.concatenate(tiles[i : i + 8], 1) for i in range(0, len(tiles), 8)]
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def face_colors(verts: np.ndarray, faces: np.ndarray, regions: dict, eye_joints=None) -> np.ndarray:
    """Skin grey; eyes white with a dark iris on the cornea bulge, the mouth inside red-brown."""
    vcol = np.full((len(verts), 3), 0.82)
    for k, key in enumerate(("eye_left", "eye_right")):
        if key not in regions or eye_joints is None:
            continue
        ids = regions[key].numpy()
        dist = np.linalg.norm(verts[ids] - eye_joints[k], axis=1)
        vcol[ids] = 0.97
        vcol[ids[dist > np.median(dist) * 1.02]] = (0.35, 0.28, 0.22)
    if "mouth_inside" in regions:
        vcol[regions["mouth_inside"].numpy()] = (0.55, 0.3, 0.3)
    return vcol[faces].mean(1)


if __name__ == "__main__":
    main()
