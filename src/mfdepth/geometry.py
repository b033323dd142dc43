"""Pinhole camera geometry on batched tensors.

Conventions used everywhere in mfdepth:

* Camera frame: x right, y down, z forward (OpenCV / KITTI). Units: metres.
* Pixel coordinates: ``(u, v)`` with the centre of the top-left pixel at ``(0, 0)``; ``u`` grows to the
  right (columns), ``v`` downwards (rows). Intrinsics ``K`` are in pixels of the tensor they go with.
* Poses are 4x4 rigid transforms named ``T_<to>_<from>``: ``X_to = T_to_from @ X_from``.
* Depth is the z coordinate (not the ray length), shape ``(B, 1, H, W)``; 0 means "no depth".
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
_HALF = (torch.float16, torch.bfloat16)


def full_precision(fn):
    """Run ``fn`` in float32 with autocast off, half-precision tensor arguments cast up.

    Mixed-precision training runs the networks in float16 / bfloat16, whose 11 / 8 bits of mantissa
    place a pixel of a 640-wide image only to within 0.5 / 4 pixels; geometry done at that precision
    would warp every frame by a fraction of a pixel at random. Float32 and float64 inputs are kept."""

    def up(value):
        return value.float() if isinstance(value, Tensor) and value.dtype in _HALF else value

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return fn(*map(up, args), **{k: up(v) for k, v in kwargs.items()})

    return wrapper


def scale_intrinsics(K: Tensor, scale_x: float, scale_y: float) -> Tensor:
    """Intrinsics after resizing an image by ``(scale_x, scale_y)``.

    Args:
        K: ``(..., 3, 3)`` or ``(..., 4, 4)`` intrinsics in pixels of the original image.
        scale_x: new width / old width.  scale_y: new height / old height.
    Returns:
        Same shape as ``K``. With pixel centres at integer coordinates, a pixel edge at ``-0.5`` stays at
        ``-0.5``, so ``c' = (c + 0.5) * s - 0.5`` and ``f' = f * s``.
    """
    K = K.clone()
    K[..., 0, 0] = K[..., 0, 0] * scale_x
    K[..., 0, 1] = K[..., 0, 1] * scale_x
    K[..., 1, 1] = K[..., 1, 1] * scale_y
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * scale_x - 0.5
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * scale_y - 0.5
    return K


def intrinsics_pyramid(K: Tensor, num_scales: int) -> Tensor:
    """``(..., 3, 3)`` K at full size -> ``(..., num_scales, 3, 3)``, scale s being 1/2**s of the size."""
    return torch.stack([scale_intrinsics(K, 0.5**s, 0.5**s) for s in range(num_scales)], dim=-3)


def flip_intrinsics_horizontally(K: Tensor, width: int) -> Tensor:
    """Intrinsics of an image mirrored left-right: ``cx' = (W - 1) - cx``. ``K``: ``(..., 3, 3)``."""
    K = K.clone()
    K[..., 0, 2] = (width - 1) - K[..., 0, 2]
    return K


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """Homogeneous pixel coordinates ``(3, H*W)``: rows u, v, 1 in row-major order of the image."""
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], dim=0)


@full_precision
def pixel_rays(K: Tensor, height: int, width: int) -> Tensor:
    """Rays ``K^-1 [u, v, 1]^T`` with z = 1 for every pixel: ``(B, 3, H*W)``. ``K``: ``(B, 3|4, 3|4)``."""
    K3 = K[..., :3, :3]
    grid = pixel_grid(height, width, device=K.device, dtype=K.dtype)
    return torch.linalg.inv(K3) @ grid


@full_precision
def backproject(depth: Tensor, K: Tensor) -> Tensor:
    """Depth map to 3D points in the camera frame.

    Args:
        depth: ``(B, 1, H, W)`` metres (z).
        K: ``(B, 3, 3)`` or ``(B, 4, 4)`` pixels.
    Returns:
        ``(B, 3, H, W)`` points in metres.
    """
    b, _, h, w = depth.shape
    rays = pixel_rays(K, h, w)
    return (rays * depth.reshape(b, 1, h * w)).reshape(b, 3, h, w)


@full_precision
def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """Apply ``(B, 4, 4)`` rigid transforms to points ``(B, 3, N)`` (or ``(B, 3, H, W)``)."""
    shape = points.shape
    flat = points.reshape(shape[0], 3, -1)
    out = T[:, :3, :3] @ flat + T[:, :3, 3:4]
    return out.reshape(shape)


@full_precision
def project(points: Tensor, K: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Project camera-frame points to pixels.

    Args:
        points: ``(B, 3, N)`` or ``(B, 3, H, W)`` metres.
        K: ``(B, 3, 3)`` or ``(B, 4, 4)``.
    Returns:
        ``(pixels, z)``: pixels ``(B, 2, ...)`` (u, v) and z ``(B, 1, ...)`` in metres, same trailing
        shape as ``points``. Points with ``z <= eps`` get z clamped to eps for the division; check ``z``.
    """
    shape = points.shape
    flat = points.reshape(shape[0], 3, -1)
    cam = K[:, :3, :3] @ flat
    z = cam[:, 2:3]
    pixels = cam[:, :2] / z.clamp(min=eps)
    return pixels.reshape(shape[0], 2, *shape[2:]), z.reshape(shape[0], 1, *shape[2:])


def pixels_to_grid(pixels: Tensor, height: int, width: int) -> Tensor:
    """Pixel coordinates ``(B, 2, ...)`` to ``grid_sample`` coordinates ``(B, ..., 2)`` in [-1, 1].

    Matches ``F.grid_sample(..., align_corners=False)``: pixel centre ``u`` maps to ``(2u + 1) / W - 1``.
    """
    u = (2.0 * pixels[:, 0] + 1.0) / width - 1.0
    v = (2.0 * pixels[:, 1] + 1.0) / height - 1.0
    return torch.stack([u, v], dim=-1)


def skew(v: Tensor) -> Tensor:
    """``(B, 3)`` vectors to ``(B, 3, 3)`` cross-product matrices."""
    zero = torch.zeros_like(v[:, 0])
    return torch.stack(
        [
            torch.stack([zero, -v[:, 2], v[:, 1]], dim=-1),
            torch.stack([v[:, 2], zero, -v[:, 0]], dim=-1),
            torch.stack([-v[:, 1], v[:, 0], zero], dim=-1),
        ],
        dim=-2,
    )


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues: ``(B, 3)`` axis * angle (radians) -> ``(B, 3, 3)`` rotation. Smooth at angle 0."""
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2.clamp(min=1e-12))
    small = theta2 < 1e-8
    # Taylor expansions near 0 keep both the value and the gradient finite.
    sin_term = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    cos_term = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2.clamp(min=1e-12))
    K = skew(axis_angle)
    eye = torch.eye(3, device=axis_angle.device, dtype=axis_angle.dtype).expand_as(K)
    return eye + sin_term[..., None] * K + cos_term[..., None] * (K @ K)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """``(B, 3, 3)`` rotation -> ``(B, 3)`` axis * angle, angle in [0, pi]."""
    cos = ((R[:, 0, 0] + R[:, 1, 1] + R[:, 2, 2] - 1.0) / 2.0).clamp(-1.0, 1.0)
    angle = torch.acos(cos)
    vec = torch.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], dim=-1)
    sin = torch.sin(angle)
    general = vec * (angle / (2.0 * sin.clamp(min=1e-12)))[:, None]
    small = (vec * 0.5) * (1.0 + angle**2 / 6.0)[:, None]
    # Near pi the antisymmetric part vanishes; recover the axis from the symmetric part instead.
    sym = (R + torch.eye(3, device=R.device, dtype=R.dtype)) / 2.0
    diag = torch.diagonal(sym, dim1=-2, dim2=-1).clamp(min=0.0)
    best = diag.argmax(dim=-1)
    col = sym.gather(2, best[:, None, None].expand(-1, 3, 1)).squeeze(-1)
    axis_pi = col / col.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    sign = torch.sign((axis_pi * vec).sum(-1, keepdim=True))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    near_pi = axis_pi * sign * angle[:, None]
    out = torch.where((angle < 1e-4)[:, None], small, general)
    return torch.where((angle > torch.pi - 1e-3)[:, None], near_pi, out)


@full_precision
def pose_vector_to_matrix(axis_angle: Tensor, translation: Tensor, invert: bool = False) -> Tensor:
    """Axis-angle ``(B, 3)`` + translation ``(B, 3)`` metres -> ``(B, 4, 4)`` transform ``[R | t]``.

    With ``invert=True`` returns the inverse ``[R^T | -R^T t]`` (used when the pose net is fed the
    frames in reversed order, so that its output always means the same direction).
    """
    R = axis_angle_to_matrix(axis_angle)
    t = translation[..., None]
    if invert:
        R = R.transpose(1, 2)
        t = -R @ t
    bottom = torch.zeros_like(R[:, :1, :])
    bottom = torch.cat([bottom, torch.ones_like(bottom[:, :, :1])], dim=2)
    return torch.cat([torch.cat([R, t], dim=2), bottom], dim=1)


def matrix_to_pose_vector(T: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, 4, 4)`` transform -> (axis-angle ``(B, 3)``, translation ``(B, 3)``)."""
    return matrix_to_axis_angle(T[:, :3, :3]), T[:, :3, 3]


@full_precision
def invert_transform(T: Tensor) -> Tensor:
    """Inverse of rigid ``(..., 4, 4)`` transforms without a general matrix inverse."""
    R = T[..., :3, :3].transpose(-1, -2)
    t = -R @ T[..., :3, 3:4]
    out = torch.zeros_like(T)
    out[..., :3, :3] = R
    out[..., :3, 3:4] = t
    out[..., 3, 3] = 1.0
    return out


@full_precision
def with_rotation_and_direction(T: Tensor, T_reference: Tensor, use: Tensor | None = None) -> Tensor:
    """``T``'s translation length with ``T_reference``'s rotation and translation direction.

    For a scale-free reference (classical two-view geometry gives rotation and the direction of travel,
    not its length): the result keeps the one thing the reference does not know, and a gradient
    reaches ``T`` through ``|t|`` only.

    Args:
        T: ``(B, 4, 4)`` rigid transforms, translation in any unit.
        T_reference: ``(B, 4, 4)`` rigid transforms; the length of their translation is ignored.
        use: ``(B,)`` bool, items to replace (e.g. where the reference exists); default all.
    Returns:
        ``(B, 4, 4)``: ``[R_ref | |t| * t_ref / |t_ref|]`` where ``use``, ``T`` elsewhere.
    """
    length = T[:, :3, 3].norm(dim=1, keepdim=True)
    direction = F.normalize(T_reference[:, :3, 3], dim=1, eps=1e-12)
    mixed = torch.cat([T_reference[:, :3, :3], (length * direction)[:, :, None]], dim=2)
    mixed = torch.cat([mixed, T[:, 3:, :]], dim=1)
    if use is None:
        return mixed
    return torch.where(use.bool()[:, None, None], mixed, T)


@full_precision
def reproject_pixels(depth: Tensor, T_source_target: Tensor, K: Tensor, K_source: Tensor | None = None):
    """Where each target pixel lands in the source view.

    Args:
        depth: ``(B, 1, H, W)`` target depth, metres.
        T_source_target: ``(B, 4, 4)`` transform from the target camera to the source camera.
        K: ``(B, 3|4, 3|4)`` target intrinsics; ``K_source`` defaults to ``K``.
    Returns:
        ``(pixels, z)``: source pixel coordinates ``(B, 2, H, W)`` and source-frame depth ``(B, 1, H, W)``.
    """
    points = transform_points(T_source_target, backproject(depth, K))
    return project(points, K if K_source is None else K_source)


@full_precision
def translation_parallax(depth: Tensor, T_source_target: Tensor, K: Tensor) -> Tensor:
    """How far the camera's translation alone moves the median pixel between two views.

    Each pixel is back-projected with ``depth``, rotated into the source camera, and projected with and
    without the translation; the parallax is the distance between the two projections. A camera that
    stands (or only turns) gives 0 everywhere, whatever the depth: then no cost volume can tell depths apart.

    Args:
        depth: ``(B, 1, H, W)`` target depth, metres (any common scale shared with the translation).
        T_source_target: ``(B, 4, 4)`` target camera to source camera.
        K: ``(B, 3|4, 3|4)`` intrinsics in pixels of ``depth``.
    Returns:
        ``(B,)`` median parallax in pixels.
    """
    rotated = T_source_target.clone()
    rotated[:, :3, 3] = 0
    points = backproject(depth, K)
    moved, _ = project(transform_points(T_source_target, points), K)
    turned, _ = project(transform_points(rotated, points), K)
    return (moved - turned).norm(dim=1).flatten(1).median(dim=1).values


def inverse_warp(
    source: Tensor,
    depth: Tensor,
    T_source_target: Tensor,
    K: Tensor,
    padding_mode: str = "border",
    K_source: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Synthesise the target view by sampling ``source`` where target pixels reproject.

    Args:
        source: ``(B, C, Hs, Ws)`` image or feature map of the source view.
        depth: ``(B, 1, H, W)`` target depth in metres.
        T_source_target: ``(B, 4, 4)``.
        K: ``(B, 3|4, 3|4)`` target intrinsics (pixels of ``depth``); ``K_source`` those of ``source``.
    Returns:
        ``(warped, valid)``: ``(B, C, H, W)`` bilinear samples, and ``(B, 1, H, W)`` float mask, 1 where
        the point lies in front of the source camera and inside the source image.
    """
    _, _, hs, ws = source.shape
    pixels, z = reproject_pixels(depth, T_source_target, K, K_source)
    grid = pixels_to_grid(pixels, hs, ws)
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    inside = (grid.abs() <= 1.0).all(dim=-1, keepdim=True).permute(0, 3, 1, 2)
    valid = (inside & (z > 1e-3)).to(source.dtype)
    return warped, valid
