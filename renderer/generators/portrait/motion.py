"""Head pose and camera views (the second of two warps).

The scene's grid is a depth map of the person (``depth.py``) and is moved in 3D: every person
vertex turns with the head from the photo's pose to the driven pose (about the neck joint) by
its head weight times the head's angle (1 on the head and hair, easing to 0 toward the
shoulders, so the neck bends); background vertices stay where they are. The angle is the
driven one: what the picture shows is that depth map really rotated, seen from the camera.
Each view is then the moved grid seen by an orthographic camera turned about the head's centre
(the front view is the photo's own camera), rasterized with a depth test at ``map_size`` pixels
(so what turns away is hidden, never folded over) into a backward map into the source frame.
Grid cells between the person and the still background stretch: they carry the person's
transparent margin, so the filled background shows there, never a hole.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from flamecast.renderer.head.lbs import rodrigues

from .scene import DEPTH_OFFSET, Scene

BACKGROUND_DEPTH = 2.0e4


def euler_yxz(rot: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in radians of ``rot = Ry(yaw) @ Rx(pitch) @ Rz(roll)`` (head frame:
    yaw about +y, pitch about +x, roll about +z)."""
    pitch = math.asin(float(np.clip(-rot[1, 2], -1.0, 1.0)))
    yaw = math.atan2(rot[0, 2], rot[2, 2])
    roll = math.atan2(rot[1, 0], rot[1, 1])
    return np.array([yaw, pitch, roll])


def from_euler_yxz(angles) -> np.ndarray:
    yaw, pitch, roll = (float(a) for a in angles)
    cy, sy, cp, sp, cr, sr = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def rotation(axis_angle) -> np.ndarray:
    return rodrigues(torch.as_tensor(np.asarray(axis_angle, np.float64))).numpy()


def relative_rotation(pose: np.ndarray, photo_pose: np.ndarray, limits_deg) -> np.ndarray:
    """The head's rotation from the photo's pose to the driven one (global and neck joints),
    its yaw, pitch and roll clamped to ``limits_deg``: what one photo can show. Nothing else
    changes the angle: a head driven 10 degrees turns 10 degrees."""
    driven = rotation(pose[0:3]) @ rotation(pose[3:6])
    rel = driven @ rotation(photo_pose[0:3]).T
    limits = np.radians(np.asarray(limits_deg, np.float64))
    return from_euler_yxz(np.clip(euler_yxz(rel), -limits, limits))


def rotation_vector(rot: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) of a rotation matrix."""
    angle = math.acos(float(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)))
    if angle < 1e-8:
        return np.zeros(3)
    axis = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    return axis / (2.0 * math.sin(angle)) * angle


def rotate_partially(points: torch.Tensor, rotvec: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each point (G, 3) rotated by ``weight`` (G,) times the rotation ``rotvec`` (Rodrigues per
    point): a neck bends through the angles in between, nothing is squashed as a blend of the
    start and end positions would be."""
    angle = float(torch.linalg.norm(rotvec))
    if angle < 1e-9:
        return points
    k = rotvec / angle
    a = (weight * angle)[:, None]
    cos, sin = torch.cos(a), torch.sin(a)
    cross = torch.linalg.cross(k.expand_as(points), points)
    return points * cos + cross * sin + k * (points @ k)[:, None] * (1.0 - cos)


class ViewWarp:
    """Backward maps of every view for a head motion (see the module docstring)."""

    def __init__(self, scene: Scene, views, pivot: np.ndarray, centre: np.ndarray, map_size: int) -> None:
        from flamecast.renderer.raster.cameras import look_at_rotation, parse_views

        self.scene = scene
        specs = parse_views(list(views) if views is not None else None)
        self.view_ids = tuple(v.id for v in specs)
        yaw = torch.tensor([math.radians(v.yaw_deg) for v in specs], dtype=torch.float64)
        pitch = torch.tensor([math.radians(v.pitch_deg) for v in specs], dtype=torch.float64)
        direction = torch.stack([torch.sin(yaw) * torch.cos(pitch), torch.sin(pitch),
                                 torch.cos(yaw) * torch.cos(pitch)], -1)
        self.R = look_at_rotation(direction).float()  # (V, 3, 3) rows: right, down, forward
        self.pivot = torch.tensor(pivot, dtype=torch.float32)
        self.centre = torch.tensor(centre, dtype=torch.float32)
        self.map_size = map_size
        self.f = map_size / scene.size
        s = scene.scale
        self.centre_px = torch.tensor([s * centre[0] + scene.offset[0], -s * centre[1] + scene.offset[1]],
                                      dtype=torch.float32)
        src = torch.tensor(scene.grid_src)
        self.still = torch.stack([(src[:, 0] + 0.5 - scene.pad) * self.f, (src[:, 1] + 0.5 - scene.pad) * self.f,
                                  torch.full_like(src[:, 0], BACKGROUND_DEPTH)], -1)
        self.src = src
        self.person = scene.grid_person
        self.weight = scene.grid_weight[:, None]

    def moved(self, rel: np.ndarray, translation: np.ndarray) -> torch.Tensor:
        """Grid vertices (G, 3) after the head's rotation ``rel`` about the neck joint and its
        translation, each vertex following them by its head weight."""
        x = self.scene.grid_xyz
        rotvec = torch.as_tensor(rotation_vector(rel), dtype=torch.float32)
        t = torch.as_tensor(translation, dtype=torch.float32)
        w = self.weight
        return rotate_partially(x - self.pivot, rotvec, w[:, 0]) + self.pivot + w * t

    def maps(self, moved: torch.Tensor) -> np.ndarray:
        """(V, map_size, map_size, 2) float32 source coordinates of every view."""
        from flamecast.renderer.raster import rasterize_torch

        s, f = self.scene.scale, self.f
        p = torch.einsum("vij,gj->vgi", self.R, moved - self.centre)  # (V, G, 3)
        x = (s * p[..., 0] + self.centre_px[0] - self.scene.pad) * f
        y = (s * p[..., 1] + self.centre_px[1] - self.scene.pad) * f
        z = DEPTH_OFFSET + s * p[..., 2]
        screen = torch.stack([x, y, z], -1)
        screen = torch.where(self.person[None, :, None], screen, self.still[None])
        m = self.map_size
        frags = rasterize_torch(screen, self.scene.grid_faces, m, cull_backfaces=False)
        cov = frags.covered
        corners = self.scene.grid_faces.index_select(0, cov.face)
        xy = (self.src[corners] * cov.bary.t()[..., None]).sum(1)
        out = torch.full((len(self.view_ids) * m * m, 2), -100.0)
        out.index_copy_(0, cov.index, xy)
        return out.view(len(self.view_ids), m, m, 2).numpy()
