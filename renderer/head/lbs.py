"""Linear blend skinning with FLAME's formulas, in torch (batched, differentiable, any device).

The steps follow FLAME (Li et al. 2017) and SMPL:

1. ``v_shaped = v_template + shapedirs @ shape + exprdirs @ expression`` (+ eyelid blendshapes)
2. joints are regressed from the shaped vertices: ``J = J_regressor @ v_shaped``
3. pose correctives: ``v_posed = v_shaped + posedirs @ (R(pose)[1:] - I).flatten()``
4. the kinematic chain composes each joint's rotation about its rest position with its
   parent's transform; every vertex moves with the weight-blended joint transforms.
"""

from __future__ import annotations

import torch


def rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from axis-angle vectors (..., 3) (the angle is the norm).

    Differentiable everywhere, including at the zero rotation.
    """
    angle_sq = (axis_angle * axis_angle).sum(-1, keepdim=True)
    angle = torch.sqrt(angle_sq + 1e-16)
    small = angle_sq < 1e-8
    # sin(a)/a and (1-cos(a))/a^2 with their Taylor series near zero.
    sinc = torch.where(small, 1.0 - angle_sq / 6.0, torch.sin(angle) / angle)
    cosc = torch.where(small, 0.5 - angle_sq / 24.0, (1.0 - torch.cos(angle)) / (angle_sq + 1e-16))
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sinc[..., None] * skew + cosc[..., None] * (skew @ skew)


def rigid_transforms(
    rot: torch.Tensor, joints: torch.Tensor, parents: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """World transforms of a kinematic chain.

    Args:
        rot: (B, J, 3, 3) local rotation of each joint.
        joints: (B, J, 3) rest positions of the joints.
        parents: parent index of each joint (-1 for the root); parents come before children.

    Returns:
        posed joints (B, J, 3) and the skinning transforms (B, J, 4, 4) that map rest-pose
        points to posed points.
    """
    batch, n_joints = joints.shape[:2]
    rel = joints.clone()
    for j, p in enumerate(parents):
        if p >= 0:
            rel[:, j] = joints[:, j] - joints[:, p]
    local = torch.zeros(batch, n_joints, 4, 4, dtype=joints.dtype, device=joints.device)
    local[:, :, :3, :3] = rot
    local[:, :, :3, 3] = rel
    local[:, :, 3, 3] = 1.0
    world = []
    for j, p in enumerate(parents):
        world.append(local[:, j] if p < 0 else world[p] @ local[:, j])
    world_t = torch.stack(world, 1)
    posed = world_t[:, :, :3, 3]
    # Remove the rest position so the transform applies to rest-pose vertices directly.
    offset = (world_t[:, :, :3, :3] @ joints[..., None])[..., 0]
    skin = world_t.clone()
    skin[:, :, :3, 3] = posed - offset
    return posed, skin


def skin(
    v_shaped: torch.Tensor,
    pose: torch.Tensor,
    j_regressor: torch.Tensor,
    weights: torch.Tensor,
    parents: list[int],
    posedirs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose shaped vertices.

    Args:
        v_shaped: (B, N, 3) vertices with shape/expression blendshapes applied.
        pose: (B, 3 * J) axis-angle of each joint, in joint order.
        j_regressor: (J, N) joint regressor.
        weights: (N, J) skinning weights.
        parents: parent of each joint (-1 for the root).
        posedirs: (9 * (J - 1), N * 3) pose-corrective blendshapes, or None.

    Returns:
        vertices (B, N, 3) and posed joints (B, J, 3).
    """
    batch, n_verts = v_shaped.shape[:2]
    n_joints = weights.shape[1]
    joints = j_regressor @ v_shaped
    rot = rodrigues(pose.reshape(batch, n_joints, 3))
    v_posed = v_shaped
    if posedirs is not None:
        eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
        feature = (rot[:, 1:] - eye).reshape(batch, -1)
        v_posed = v_shaped + (feature @ posedirs).reshape(batch, n_verts, 3)
    posed_joints, transforms = rigid_transforms(rot, joints, parents)
    # (N, J) @ (B, J, 12): one GEMM blends the top 3 rows of every joint transform per vertex
    blended = (weights @ transforms[:, :, :3, :].reshape(batch, n_joints, 12)).reshape(batch, n_verts, 3, 4)
    verts = (blended[..., :3] * v_posed[:, :, None, :]).sum(-1) + blended[..., 3]
    return verts, posed_joints


def barycentric_points(
    vertices: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor, bary: torch.Tensor
) -> torch.Tensor:
    """Points (B, L, 3) given by a face index (L,) and barycentric coordinates (L, 3) each."""
    corners = faces[face_idx]  # (L, 3)
    tri = vertices[:, corners.reshape(-1)].reshape(vertices.shape[0], -1, 3, 3)  # (B, L, corner, xyz)
    return (tri * bary[None, :, :, None]).sum(2)
