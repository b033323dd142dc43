"""Ray-cast renderer of the synthetic driving world.

Every pixel casts five rays (its centre and four at +-1/4 pixel): the colour is their mean (anti-aliasing),
while depth, instance id and motion come from the centre ray alone, so ground truth is exact at the
pixel centre. Hits are analytic: the ground plane and axis-aligned boxes (slab test), nearest hit wins;
rays that hit nothing see the sky, which has no depth.

Camera (``intrinsics``): KITTI-like, ``fx = 0.58 W``, ``fy = 1.92 H``, ``cx = (W - 1) / 2``,
``cy = (H - 1) / 2`` (pixel centres at integer coordinates), x right, y down, z forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfdepth.synth.scene import (
    BUILDING,
    CAMERA_HEIGHT,
    CAR,
    CROSS_STREET_HALF_WIDTH,
    CROSSWALK_OFFSET,
    KERB_EDGE,
    LANE_EDGE,
    PARKING_EDGE,
    PEDESTRIAN,
    POLE,
    SIDEWALK_EDGE,
    Scene,
    SceneObject,
    build_scene,
)
from mfdepth.synth.textures import NoiseLattice, fractal_noise

SEMANTIC_CLASSES = ("sky", "road", "sidewalk", "verge", "building", "pole", "car", "pedestrian")
"""Names of the values of :attr:`SynthSequence.semantic` (index = value)."""
SKY, ROAD, SIDEWALK, VERGE = 0, 1, 2, 3
_SEMANTIC_OF_KIND = {BUILDING: 4, POLE: 5, CAR: 6, PEDESTRIAN: 7}

SUBPIXEL_OFFSETS = ((0.0, 0.0), (-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25))
"""(du, dv) of each pixel's rays; the first, the centre, carries the ground truth."""

_MIN_HIT_DISTANCE = 0.05
"""Metres along z; hits closer than this (the camera inside a box) are ignored."""

_SUN = np.array([-0.4, -0.8, -0.45]) / np.linalg.norm([-0.4, -0.8, -0.45])
# Fixed Lambert-like shading per box face (-x, +x, top, bottom, -z, +z): static surfaces keep their
# brightness whatever the viewpoint.
_FACE_SHADE = np.array(
    [0.6 + 0.4 * max(0.0, float(n @ _SUN)) for n in np.vstack([-np.eye(3), np.eye(3)])[[0, 3, 1, 4, 2, 5]]],
    dtype=np.float32,
)
_GROUND_SHADE = np.float32(0.6 + 0.4 * max(0.0, float(np.array([0.0, -1.0, 0.0]) @ _SUN)))


@dataclass
class SynthSequence:
    """One rendered sequence.

    Attributes:
        images: ``(F, H, W, 3)`` uint8 RGB.
        depth: ``(F, H, W)`` float32 z-depth in metres; 0 = no depth (sky).
        dynamic: ``(F, H, W)`` bool, pixels of objects that move between this frame and a neighbour
            (a parked car, or the lead car while halted, is not dynamic).
        instance: ``(F, H, W)`` uint16 object instance id, 0 = background (road, buildings, poles, sky).
        poses: ``(F, 4, 4)`` float64 camera-to-world transforms ``T_world_camera`` (metres).
        K: ``(3, 3)`` float64 intrinsics in pixels of the images.
        semantic: ``(F, H, W)`` uint8 class index into :data:`SEMANTIC_CLASSES`.
        profile: the camera speed profile.
        objects: the scene's boxes; ``objects[i].instance`` and ``.centres`` give each instance's
            world trajectory, ``.role`` its case (lead, oncoming, crossing, parked, pedestrian_*).
    """

    images: np.ndarray
    depth: np.ndarray
    dynamic: np.ndarray
    instance: np.ndarray
    poses: np.ndarray
    K: np.ndarray
    semantic: np.ndarray
    profile: str
    objects: list[SceneObject]


def intrinsics(height: int, width: int) -> np.ndarray:
    """``(3, 3)`` float64 K of the synthetic camera at ``height x width`` pixels (KITTI-like field of view)."""
    return np.array(
        [[0.58 * width, 0.0, (width - 1) / 2.0], [0.0, 1.92 * height, (height - 1) / 2.0], [0.0, 0.0, 1.0]]
    )


def _camera_rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(3, S, H, W)`` float32 camera-frame ray directions with z = 1, one per subpixel offset."""
    import torch

    from mfdepth.geometry import pixel_rays

    rays = []
    for du, dv in SUBPIXEL_OFFSETS:
        # K^-1 [u + du, v + dv, 1] equals K'^-1 [u, v, 1] with the principal point moved by -(du, dv).
        shifted = torch.tensor(K, dtype=torch.float64)[None].clone()
        shifted[0, 0, 2] -= du
        shifted[0, 1, 2] -= dv
        rays.append(pixel_rays(shifted, height, width)[0].reshape(3, height, width).numpy())
    return np.stack(rays, axis=1).astype(np.float32)


def _box_pixel_bounds(
    lo: np.ndarray, hi: np.ndarray, pose: np.ndarray, K: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Image rectangles ``(N, 4)`` int ``[v0, v1, u0, u1)`` that contain each box; empty if unseen.

    A box straddling the camera plane gets the whole image (its projection is unbounded).
    """
    import torch

    from mfdepth.geometry import invert_transform, project, transform_points

    corner_pick = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=bool)
    corners = np.where(corner_pick[None], hi[:, None, :], lo[:, None, :])  # (N, 8, 3)
    T_camera_world = invert_transform(torch.from_numpy(pose)[None])
    points = transform_points(T_camera_world, torch.from_numpy(corners.reshape(-1, 3).T.copy())[None])
    pixels, z = project(points, torch.from_numpy(K)[None])
    pixels = pixels[0].numpy().T.reshape(-1, 8, 2)
    z = z[0, 0].numpy().reshape(-1, 8)
    in_front = z > _MIN_HIT_DISTANCE
    bounds = np.zeros((len(lo), 4), dtype=np.int64)
    all_front = in_front.all(axis=1)
    some_front = in_front.any(axis=1) & ~all_front
    u, v = pixels[..., 0], pixels[..., 1]
    # One pixel of margin covers the subpixel rays and rounding.
    bounds[all_front, 0] = np.floor(v[all_front].min(axis=1)) - 1
    bounds[all_front, 1] = np.ceil(v[all_front].max(axis=1)) + 2
    bounds[all_front, 2] = np.floor(u[all_front].min(axis=1)) - 1
    bounds[all_front, 3] = np.ceil(u[all_front].max(axis=1)) + 2
    bounds[some_front] = (0, height, 0, width)
    bounds[:, 0:2] = np.clip(bounds[:, 0:2], 0, height)
    bounds[:, 2:4] = np.clip(bounds[:, 2:4], 0, width)
    return bounds


def _ground_colours(
    lattice: NoiseLattice, x: np.ndarray, z: np.ndarray, noise: np.ndarray, footprint: np.ndarray, scene: Scene
) -> tuple[np.ndarray, np.ndarray]:
    """Colours ``(N, 3)`` and semantic classes ``(N,)`` of ground points at world ``(x, z)``."""
    lateral = np.abs(x)
    streets = scene.cross_streets
    if len(streets):
        slot = np.clip(np.searchsorted(streets, z), 1, len(streets)) - 1
        nearer = np.where(
            np.abs(z - streets[slot]) <= np.abs(z - streets[np.minimum(slot + 1, len(streets) - 1)]),
            slot,
            np.minimum(slot + 1, len(streets) - 1),
        )
        to_cross = np.abs(z - streets[nearer]).astype(np.float32)
    else:
        to_cross = np.full(z.shape, np.inf, dtype=np.float32)
    in_cross = to_cross < CROSS_STREET_HALF_WIDTH
    lanes = (lateral < LANE_EDGE) | in_cross
    parking = ~lanes & (lateral < PARKING_EDGE)
    kerb = ~lanes & ~parking & (lateral < KERB_EDGE)
    sidewalk = ~lanes & ~parking & ~kerb & (lateral < SIDEWALK_EDGE)
    verge = ~(lanes | parking | kerb | sidewalk)

    colour = np.empty((len(x), 3), dtype=np.float32)
    semantic = np.full(len(x), ROAD, dtype=np.uint8)
    asphalt = np.array([0.34, 0.34, 0.36], dtype=np.float32)
    colour[:] = asphalt * (1.0 + 1.2 * noise)[:, None]
    colour[parking] *= np.float32(0.88)
    colour[kerb] = np.array([0.72, 0.72, 0.70], dtype=np.float32) * (1.0 + 0.6 * noise[kerb])[:, None]
    # Sidewalk slabs of 0.6 m, each its own shade; the slab pattern fades to its mean once a pixel
    # covers half a slab, so it does not alias far away.
    slab = lattice.cells(np.floor(x[sidewalk] / 0.6), np.floor(z[sidewalk] / 0.6)) - 0.5
    slab *= np.clip(1.0 - (footprint[sidewalk] - 0.15) / 0.15, 0.0, 1.0)
    colour[sidewalk] = np.array([0.58, 0.55, 0.51], dtype=np.float32) * (
        1.0 + 0.8 * noise[sidewalk] + 0.35 * slab
    )[:, None]
    colour[verge] = np.array([0.28, 0.40, 0.17], dtype=np.float32) * (1.0 + 1.6 * noise[verge])[:, None]
    semantic[sidewalk | kerb] = SIDEWALK
    semantic[verge] = VERGE

    paint = np.zeros(len(x), dtype=bool)
    paint |= ~in_cross & (lateral < 0.08) & (np.mod(z, 9.0) < 3.0)  # dashed centre line
    paint |= ~in_cross & (np.abs(lateral - (LANE_EDGE - 0.1)) < 0.08)  # solid lane edges
    zebra = (np.abs(to_cross - CROSSWALK_OFFSET) < 1.5) & (lateral < PARKING_EDGE)
    paint |= zebra & (np.mod(x, 1.0) < 0.5)
    colour[paint] = np.array([0.88, 0.88, 0.84], dtype=np.float32) * (1.0 + 0.4 * noise[paint])[:, None]
    return colour * _GROUND_SHADE, semantic


def _box_colours(
    lattice: NoiseLattice,
    kind: np.ndarray,
    base: np.ndarray,
    face: np.ndarray,
    along: np.ndarray,
    height: np.ndarray,
    face_length: np.ndarray,
    box_height: np.ndarray,
    noise: np.ndarray,
    long_axis_face: np.ndarray,
    cell_seed: np.ndarray,
) -> np.ndarray:
    """Colours ``(N, 3)`` of box hits.

    Args:
        kind: object kind per sample; base: ``(N, 3)`` object colour; face: 0..5 (-x, +x, top, bottom,
        -z, +z); along: metres along the face from its start edge; height: metres above the ground;
        face_length: the face's horizontal extent; box_height: the object's height; noise: zero-mean
        texture; long_axis_face: the face is a side (parallel to the object's long axis);
        cell_seed: per-object offset for per-window random values.
    """
    vertical = face != 2
    vertical &= face != 3
    colour = base * (1.0 + 1.0 * noise)[:, None]

    # Buildings: a grid of windows on the upper floors, shop windows at street level.
    building = kind == BUILDING
    bay = np.floor(along / 2.6)
    storey = np.floor(height / 3.0)
    in_bay = np.abs(along / 2.6 - bay - 0.5) < 0.25
    in_storey = np.abs(height / 3.0 - storey - 0.55) < 0.25
    upper = (height > 3.0) & (height < box_height - 0.8) & (along > 0.6) & (along < face_length - 0.6)
    window = building & vertical & upper & in_bay & in_storey
    shop = building & vertical & (height > 0.5) & (height < 2.6) & (np.abs(np.mod(along, 5.2) - 2.6) < 2.0)
    glass = window | shop
    shine = lattice.cells(bay[glass] + cell_seed[glass], storey[glass] + 3 * cell_seed[glass])
    colour[glass] = np.array([0.14, 0.17, 0.22], dtype=np.float32) * (1.0 + 2.2 * shine + noise[glass])[:, None]

    # Cars: a glass band with pillars, dark tyres and bumpers, lamps on the front and back faces.
    car = (kind == CAR) & vertical
    band = car & (height > 0.85) & (height < 1.32) & (along > 0.3) & (along < face_length - 0.3)
    band &= ~(long_axis_face & (np.abs(along - face_length / 2) < 0.12))  # the B pillar
    colour[band] = np.array([0.10, 0.12, 0.15], dtype=np.float32) * (1.0 + 1.5 * noise[band])[:, None]
    tyres = car & (height < 0.32)
    colour[tyres] = np.array([0.07, 0.07, 0.07], dtype=np.float32) * (1.0 + noise[tyres])[:, None]
    lamp = car & ~long_axis_face & (height > 0.55) & (height < 0.75)
    lamp &= (along < 0.35) | (along > face_length - 0.35)
    colour[lamp] = np.array([0.95, 0.80, 0.45], dtype=np.float32)
    roof = (kind == CAR) & (face == 2)
    colour[roof] *= np.float32(0.85)

    # Pedestrians: trousers, shirt (the object colour), head.
    person = kind == PEDESTRIAN
    legs = person & (height < 0.85)
    colour[legs] = np.array([0.18, 0.18, 0.24], dtype=np.float32) * (1.0 + 1.2 * noise[legs])[:, None]
    head = person & (height > 1.5)
    colour[head] = np.array([0.80, 0.62, 0.50], dtype=np.float32) * (1.0 + 0.6 * noise[head])[:, None]
    return colour * _FACE_SHADE[face][:, None]


def _sky_colours(lattice: NoiseLattice, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Colours ``(N, 3)`` of rays (world directions) that hit nothing: depends on direction only."""
    norm = np.sqrt(dx * dx + dy * dy + dz * dz)
    elevation = -dy / norm
    blend = np.clip(elevation * 3.0, 0.0, 1.0)[:, None]
    horizon = np.array([0.86, 0.89, 0.93], dtype=np.float32)
    zenith = np.array([0.42, 0.58, 0.85], dtype=np.float32)
    lift = np.maximum(elevation, 0.0) + 0.08
    clouds = np.clip(lattice.octave(dx / norm / lift * 3.0 + 91.0, dz / norm / lift * 3.0 + 17.0) - 0.45, 0, 1)
    return horizon + (zenith - horizon) * blend + clouds[:, None] * 0.5


class _Renderer:
    """Renders the frames of one scene; holds the rays and lattice shared by all frames."""

    def __init__(self, scene: Scene, height: int, width: int, seed: int):
        self.scene = scene
        self.height, self.width = height, width
        self.K = intrinsics(height, width)
        self.rays = _camera_rays(self.K, height, width)
        self.lattice = NoiseLattice(seed)
        self.focal = float(np.sqrt(self.K[0, 0] * self.K[1, 1]))
        objects = scene.objects
        self.kind = np.array([o.kind for o in objects], dtype=np.int64)
        self.half = np.array([o.half for o in objects], dtype=np.float64).reshape(-1, 3)
        self.centres = np.array([o.centres for o in objects], dtype=np.float64).reshape(len(objects), -1, 3)
        self.colour = np.array([o.colour for o in objects], dtype=np.float32).reshape(-1, 3)
        self.instance = np.array([o.instance for o in objects], dtype=np.uint16)
        self.moving = np.array([o.moving() for o in objects], dtype=bool).reshape(len(objects), -1)
        self.texture_offset = np.array([o.texture_offset for o in objects], dtype=np.float32).reshape(-1, 2)
        # The long horizontal axis (0 = x, 2 = z) tells a car's sides from its front and back.
        self.long_axis = np.where(self.half[:, 0] > self.half[:, 2], 0, 2)
        self.semantic_of_object = np.array([_SEMANTIC_OF_KIND[k] for k in self.kind], dtype=np.uint8)
        self.poses = scene.camera_to_world()

    def frame(self, index: int):
        """``(image (H, W, 3) uint8, depth, dynamic, instance, semantic)`` of frame ``index``."""
        pose = self.poses[index]
        origin = pose[:3, 3]
        rotation = pose[:3, :3].astype(np.float32)
        samples = len(SUBPIXEL_OFFSETS)
        shape = (samples, self.height, self.width)
        dx = rotation[0, 0] * self.rays[0] + rotation[0, 1] * self.rays[1] + rotation[0, 2] * self.rays[2]
        dy = rotation[1, 0] * self.rays[0] + rotation[1, 1] * self.rays[1] + rotation[1, 2] * self.rays[2]
        dz = rotation[2, 0] * self.rays[0] + rotation[2, 1] * self.rays[1] + rotation[2, 2] * self.rays[2]

        # The ground plane y = 0, limited to the modelled stretch of road.
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = [np.float32(1.0) / d for d in (dx, dy, dz)]
            t_ground = np.where(dy > 0, np.float32(-origin[1]) * inv[1], np.inf).astype(np.float32)
        z_ground = origin[2] + t_ground * dz
        ground = np.isfinite(t_ground) & (z_ground > self.scene.z_range[0]) & (z_ground < self.scene.z_range[1])
        best = np.where(ground, t_ground, np.inf).astype(np.float32)
        hit = np.where(ground, 0, -1).astype(np.int32)

        centres = self.centres[:, index]
        lo, hi = centres - self.half, centres + self.half
        bounds = _box_pixel_bounds(lo, hi, pose, self.K, self.height, self.width)
        with np.errstate(invalid="ignore"):
            for box in np.flatnonzero((bounds[:, 1] > bounds[:, 0]) & (bounds[:, 3] > bounds[:, 2])):
                v0, v1, u0, u1 = bounds[box]
                window = (slice(None), slice(v0, v1), slice(u0, u1))
                near = far = None
                for axis in range(3):
                    step = inv[axis][window]
                    t_lo = np.float32(lo[box, axis] - origin[axis]) * step
                    t_hi = np.float32(hi[box, axis] - origin[axis]) * step
                    entry, leave = np.minimum(t_lo, t_hi), np.maximum(t_lo, t_hi)
                    near = entry if near is None else np.maximum(near, entry)
                    far = leave if far is None else np.minimum(far, leave)
                best_view = best[window]
                closer = (near <= far) & (near > _MIN_HIT_DISTANCE) & (near < best_view)
                best_view[closer] = near[closer]
                hit[window][closer] = box + 1

        return self._shade(index, origin, dx, dy, dz, best, hit, lo, hi, shape)

    def _shade(self, index, origin, dx, dy, dz, best, hit, lo, hi, shape):
        flat_hit = hit.reshape(-1)
        t = best.reshape(-1)
        dxf, dyf, dzf = dx.reshape(-1), dy.reshape(-1), dz.reshape(-1)
        colour = np.empty((flat_hit.size, 3), dtype=np.float32)
        semantic = np.zeros(flat_hit.size, dtype=np.uint8)

        sky = flat_hit < 0
        colour[sky] = _sky_colours(self.lattice, dxf[sky], dyf[sky], dzf[sky])

        seen = np.flatnonzero(~sky)
        ts = t[seen]
        px = np.float32(origin[0]) + ts * dxf[seen]
        py = np.float32(origin[1]) + ts * dyf[seen]
        pz = np.float32(origin[2]) + ts * dzf[seen]
        ray_length = np.sqrt(dxf[seen] ** 2 + dyf[seen] ** 2 + dzf[seen] ** 2)
        ids = flat_hit[seen]
        on_ground = ids == 0
        box = np.maximum(ids - 1, 0)

        # Which face of the box was hit: the plane the hit point lies closest to.
        faces = np.zeros(len(seen), dtype=np.int64)
        objects = np.flatnonzero(~on_ground)
        ob = box[objects]
        lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
        point = (px[objects], py[objects], pz[objects])
        gaps = np.stack(
            [np.abs(point[axis] - bound[ob, axis]) for axis in range(3) for bound in (lo32, hi32)]
        )
        faces[objects] = np.argmin(gaps, axis=0)
        axis_of_face = faces // 2
        normal_component = np.where(
            on_ground, dyf[seen], np.choose(axis_of_face, (dxf[seen], dyf[seen], dzf[seen]))
        )
        cosine = np.maximum(np.abs(normal_component) / ray_length, np.float32(0.2))
        footprint = ts * ray_length / np.float32(self.focal) / cosine

        # Texture coordinates: world (x, z) on the ground; box-relative on objects, so they move with them.
        u = px.copy()
        v = pz.copy()
        face_o = faces[objects]
        rel_x, rel_z = point[0] - lo32[ob, 0], point[2] - lo32[ob, 2]
        height_o = -point[1]
        u[objects] = np.where(face_o // 2 == 0, rel_z, rel_x)
        v[objects] = np.where(face_o // 2 == 1, rel_z, height_o)
        offset = self.texture_offset[ob] + face_o[:, None].astype(np.float32) * np.float32(17.3)
        u[objects] += offset[:, 0]
        v[objects] += offset[:, 1]
        noise = fractal_noise(self.lattice, u, v, footprint)

        ground_idx = np.flatnonzero(on_ground)
        colour[seen[ground_idx]], semantic[seen[ground_idx]] = _ground_colours(
            self.lattice, px[ground_idx], pz[ground_idx], noise[ground_idx], footprint[ground_idx], self.scene
        )
        along = np.where(face_o // 2 == 0, rel_z, rel_x)
        face_length = np.where(face_o // 2 == 0, 2 * self.half[ob, 2], 2 * self.half[ob, 0]).astype(np.float32)
        colour[seen[objects]] = _box_colours(
            self.lattice,
            self.kind[ob],
            self.colour[ob],
            face_o,
            along,
            height_o,
            face_length,
            (2 * self.half[ob, 1]).astype(np.float32),
            noise[objects],
            (face_o // 2) != self.long_axis[ob],
            np.floor(self.texture_offset[ob, 0]),
        )
        semantic[seen[objects]] = self.semantic_of_object[ob]

        image = colour.reshape(*shape, 3).mean(axis=0)
        image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
        # Ground truth from the centre rays (subpixel sample 0).
        centre_hit = hit[0]
        depth = np.where(centre_hit >= 0, best[0], 0.0).astype(np.float32)
        on_object = centre_hit > 0
        index_of_object = np.maximum(centre_hit - 1, 0)
        instance = np.where(on_object, self.instance[index_of_object], 0).astype(np.uint16)
        dynamic = on_object & self.moving[index_of_object, index]
        return image, depth, dynamic, instance, semantic.reshape(shape)[0]


def render_scene(scene: Scene, height: int, width: int, seed: int, progress=None) -> SynthSequence:
    """Render every frame of ``scene`` at ``height x width``; ``progress`` is called once per frame."""
    renderer = _Renderer(scene, height, width, seed)
    count = len(scene.camera_yaw)
    images = np.empty((count, height, width, 3), dtype=np.uint8)
    depth = np.empty((count, height, width), dtype=np.float32)
    dynamic = np.empty((count, height, width), dtype=bool)
    instance = np.empty((count, height, width), dtype=np.uint16)
    semantic = np.empty((count, height, width), dtype=np.uint8)
    for index in range(count):
        images[index], depth[index], dynamic[index], instance[index], semantic[index] = renderer.frame(index)
        if progress is not None:
            progress()
    return SynthSequence(
        images, depth, dynamic, instance, renderer.poses, renderer.K, semantic, scene.profile, scene.objects
    )


def render_sequence(
    seed: int, num_frames: int, height: int, width: int, profile: str = "normal", progress=None
) -> SynthSequence:
    """Lay out and render one sequence of the synthetic world.

    Args:
        seed: any non-negative int; the same arguments give the same arrays.
        num_frames: frames at 10 Hz (at least 2).
        height, width: image size in pixels (at least 8).
        profile: camera motion, one of ``normal`` (0.3-1.5 m/frame), ``stop`` (halted for several
            frames), ``fast`` (over 2 m/frame).
        progress: optional callable, called once per rendered frame.
    Returns:
        A :class:`SynthSequence`.
    """
    if height < 8 or width < 8:
        raise ValueError(f"image size {height}x{width} is too small: height and width must be at least 8")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    scene = build_scene(seed, num_frames, profile)
    return render_scene(scene, height, width, seed, progress)


__all__ = ["SEMANTIC_CLASSES", "SynthSequence", "intrinsics", "render_scene", "render_sequence", "CAMERA_HEIGHT"]
