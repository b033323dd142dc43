"""The layout of one synthetic driving sequence: camera trajectory, static world, moving objects.

World frame (metres): x right, y down, z forward along the road, origin on the road's centre line at
ground level (the ground is the plane y = 0). The camera rides 1.65 m above the ground (y = -1.65),
level (no pitch or roll), in the right lane, yawing gently as it weaves inside its lane.

Every object is an axis-aligned box whose centre follows a per-frame trajectory (constant for static
objects). Objects never rotate, so box-relative texture coordinates are fixed to the object.

Road cross-section (|x|): lanes 0-3.5 (the camera's lane centred at +1.75, oncoming traffic at -1.75),
parking strip 3.5-5.7, kerb, sidewalk 5.75-9, then verge and buildings set back 0-5 m further out.
Cross streets (12 m wide, no buildings or parked cars) carry crossing traffic and pedestrians.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CAMERA_HEIGHT = 1.65
"""Metres from the ground to the camera centre."""

LANE_CENTRE = 1.75
LANE_EDGE = 3.5
PARKING_EDGE = 5.7
KERB_EDGE = 5.75
SIDEWALK_EDGE = 9.0
CROSS_STREET_HALF_WIDTH = 6.0
CROSSWALK_OFFSET = 7.5
"""Distance along z from a cross street's centre to the middle of its zebra crossings."""

PROFILES = ("normal", "stop", "fast")
"""Camera speed profiles: 0.3-1.5 m/frame; a stop of several frames; over 2 m/frame."""

# Object kinds (also texture families).
BUILDING, POLE, CAR, PEDESTRIAN = 1, 2, 3, 4

CAR_HALF = (0.9, 0.75, 2.1)
"""Half extents (x, y, z) of a car driving along z; cars driving along x swap x and z."""
PEDESTRIAN_HALF = (0.3, 0.875, 0.25)
EGO_RADIUS = 2.4
"""Radius of the camera's own car footprint in the x-z plane (for keeping other objects clear)."""


@dataclass
class SceneObject:
    """One box. ``centres`` (F, 3) world metres per frame; ``half`` (3,) half extents, metres.

    ``role`` names the case it stands for: building, building_far, pole, lead, oncoming, crossing,
    parked, pedestrian_crossing, pedestrian_walking, pedestrian_standing.
    ``instance`` is 0 for background objects (buildings, poles), else unique within the sequence.
    """

    kind: int
    role: str
    centres: np.ndarray
    half: np.ndarray
    colour: np.ndarray
    instance: int = 0
    texture_offset: np.ndarray = field(default_factory=lambda: np.zeros(2))

    def moving(self) -> np.ndarray:
        """``(F,)`` bool: the object moved from the previous frame or moves to the next one."""
        step = np.linalg.norm(np.diff(self.centres, axis=0), axis=1) > 1e-4
        moving = np.zeros(len(self.centres), dtype=bool)
        moving[1:] |= step
        moving[:-1] |= step
        return moving


@dataclass
class Scene:
    """Everything needed to render one sequence.

    Attributes:
        camera_centres: ``(F, 3)`` camera centre in the world, metres.
        camera_yaw: ``(F,)`` radians, rotation about the (downward) y axis; positive turns toward +x.
        objects: every box, background and foreground.
        cross_streets: ``(C,)`` z of each cross street's centre line.
        z_range: ``(z_min, z_max)`` of the modelled world; beyond it there is only sky.
        profile: the camera speed profile.
    """

    camera_centres: np.ndarray
    camera_yaw: np.ndarray
    objects: list[SceneObject]
    cross_streets: np.ndarray
    z_range: tuple[float, float]
    profile: str

    def camera_to_world(self) -> np.ndarray:
        """``(F, 4, 4)`` float64 camera-to-world poses (``T_world_camera``)."""
        count = len(self.camera_yaw)
        poses = np.tile(np.eye(4), (count, 1, 1))
        cos, sin = np.cos(self.camera_yaw), np.sin(self.camera_yaw)
        poses[:, 0, 0], poses[:, 0, 2] = cos, sin
        poses[:, 2, 0], poses[:, 2, 2] = -sin, cos
        poses[:, :3, 3] = self.camera_centres
        return poses


def speed_profile(profile: str, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Distance travelled between consecutive frames, ``(F-1,)`` metres (10 Hz video).

    normal: 0.3-1.5 m/frame, slowly varying; stop: cruise, brake, several frames at exactly 0, pull away;
    fast: 2.05-3.2 m/frame.
    """
    steps = num_frames - 1
    t = np.arange(steps)
    if profile == "normal":
        base = rng.uniform(0.55, 1.25)
        wobble = 0.2 * np.sin(2 * np.pi * t / rng.uniform(15, 40) + rng.uniform(0, 2 * np.pi))
        return np.clip(base + wobble, 0.3, 1.5)
    if profile == "fast":
        base = rng.uniform(2.3, 2.9)
        wobble = 0.2 * np.sin(2 * np.pi * t / rng.uniform(15, 40) + rng.uniform(0, 2 * np.pi))
        return np.clip(base + wobble, 2.05, 3.2)
    if profile == "stop":
        cruise = rng.uniform(0.6, 1.1)
        halted = max(3, steps // 3)
        ramp = max(1, steps // 8)
        before = max(0, (steps - halted - 2 * ramp) // 2)
        after = max(0, steps - halted - 2 * ramp - before)
        braking = cruise * (1.0 - (np.arange(ramp) + 1) / (ramp + 1))
        return np.concatenate(
            [np.full(before, cruise), braking, np.zeros(halted), braking[::-1], np.full(after, cruise)]
        )[:steps]
    raise ValueError(f"unknown camera profile '{profile}': expected one of {', '.join(PROFILES)}")


def _camera_path(profile: str, num_frames: int, rng: np.random.Generator):
    """Camera centres ``(F, 3)``, yaw ``(F,)`` and distance along the road ``(F,)``."""
    travelled = np.concatenate([[0.0], np.cumsum(speed_profile(profile, num_frames, rng))])
    start = rng.uniform(0.0, 40.0)
    # The car weaves inside its lane: lateral offset a*sin(2*pi*s/wavelength), heading along the tangent.
    amplitude, wavelength, phase = rng.uniform(0.1, 0.35), rng.uniform(40, 90), rng.uniform(0, 2 * np.pi)
    angle = 2 * np.pi * travelled / wavelength + phase
    x = LANE_CENTRE + amplitude * np.sin(angle)
    slope = amplitude * 2 * np.pi / wavelength * np.cos(angle)
    centres = np.stack([x, np.full_like(x, -CAMERA_HEIGHT), start + travelled], axis=1)
    return centres, np.arctan(slope), travelled


def _in_cross_street(z0: float, z1: float, cross_streets: np.ndarray, margin: float) -> bool:
    half = CROSS_STREET_HALF_WIDTH + margin
    return bool(np.any((z1 > cross_streets - half) & (z0 < cross_streets + half)))


def _static(centre, count: int) -> np.ndarray:
    return np.tile(np.asarray(centre, dtype=np.float64), (count, 1))


_WALL_COLOURS = np.array(
    [
        [0.78, 0.72, 0.60], [0.70, 0.70, 0.68], [0.62, 0.33, 0.26], [0.85, 0.80, 0.62],
        [0.55, 0.60, 0.66], [0.80, 0.62, 0.48], [0.90, 0.88, 0.84], [0.45, 0.42, 0.40],
    ]
)
_CAR_COLOURS = np.array(
    [
        [0.75, 0.10, 0.10], [0.12, 0.22, 0.62], [0.90, 0.90, 0.88], [0.08, 0.08, 0.09],
        [0.62, 0.64, 0.66], [0.10, 0.42, 0.20], [0.88, 0.70, 0.10], [0.35, 0.20, 0.45],
    ]
)
_CLOTHES = np.array(
    [[0.80, 0.20, 0.15], [0.15, 0.30, 0.70], [0.90, 0.85, 0.30], [0.20, 0.55, 0.30], [0.85, 0.85, 0.85]]
)


def _pick(palette: np.ndarray, rng: np.random.Generator, jitter: float = 0.05) -> np.ndarray:
    return np.clip(palette[rng.integers(len(palette))] + rng.uniform(-jitter, jitter, 3), 0.02, 0.98)


class _Placer:
    """Accepts moving objects whose footprints stay clear of the camera's car and of each other."""

    def __init__(self, camera_centres: np.ndarray):
        self.tracks: list[tuple[np.ndarray, float]] = [(camera_centres, EGO_RADIUS)]

    def clear(self, centres: np.ndarray, half: np.ndarray, margin: float = 0.4) -> bool:
        radius = float(np.hypot(half[0], half[2]))
        for other, other_radius in self.tracks:
            gap = np.hypot(centres[:, 0] - other[:, 0], centres[:, 2] - other[:, 2])
            if np.any(gap < radius + other_radius + margin):
                return False
        return True

    def add(self, centres: np.ndarray, half: np.ndarray) -> None:
        self.tracks.append((centres, float(np.hypot(half[0], half[2]))))


def build_scene(seed: int, num_frames: int, profile: str = "normal") -> Scene:
    """Lay out one sequence: the camera path, buildings, poles, parked cars and the moving traffic.

    Deterministic for ``(seed, num_frames, profile)``. Moving objects are placed relative to the camera
    path so that they are in view during the sequence.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown camera profile '{profile}': expected one of {', '.join(PROFILES)}")
    if num_frames < 2:
        raise ValueError(f"a sequence needs at least 2 frames, got {num_frames}")
    rng = np.random.default_rng(seed)
    frames = np.arange(num_frames)
    camera, yaw, travelled = _camera_path(profile, num_frames, rng)
    z_cam = camera[:, 2]
    z_min, z_max = z_cam[0] - 40.0, z_cam[-1] + 170.0

    # The lead car keeps a gap that depends on the distance driven, so it halts when the camera halts.
    gap = rng.uniform(9.0, 15.0) + 0.4 * np.sin(2 * np.pi * travelled / rng.uniform(30, 60))

    # Cross streets: a regular-ish spacing, plus (stop profile) one just beyond the halted lead car so
    # that crossing traffic passes while the camera waits.
    cross = []
    halted = np.flatnonzero(np.diff(z_cam) == 0)
    stop_street = None
    if profile == "stop" and len(halted):
        first = halted[0]
        stop_street = z_cam[first] + gap[first] + CAR_HALF[2] + CROSS_STREET_HALF_WIDTH + 1.5
        cross.append(stop_street)
    z = z_cam[0] + rng.uniform(20, 60)
    while z < z_max:
        if not cross or all(abs(z - c) > 40 for c in cross):
            cross.append(z)
        z += rng.uniform(55, 110)
    cross_streets = np.array(sorted(cross))

    objects: list[SceneObject] = []

    def add(kind, role, centres, half, colour, instance=0):
        objects.append(
            SceneObject(
                kind, role, np.asarray(centres, dtype=np.float64), np.asarray(half, dtype=np.float64),
                np.asarray(colour, dtype=np.float64), instance, rng.uniform(0, 200, 2),
            )
        )

    # Buildings: a row of facades on each side at varying setbacks, with gaps, and a taller far row.
    for side in (-1.0, 1.0):
        z = z_min
        while z < z_max:
            length = rng.uniform(8, 25)
            if rng.random() < 0.5:
                z += rng.uniform(2, 8)  # a gap between buildings
            z0, z1 = z, z + length
            z = z1
            if _in_cross_street(z0, z1, cross_streets, 0.5):
                continue
            depth, height = rng.uniform(8, 15), rng.uniform(6, 22)
            face = SIDEWALK_EDGE + (0.0 if rng.random() < 0.35 else rng.uniform(0.5, 5.0))
            centre = (side * (face + depth / 2), -height / 2, (z0 + z1) / 2)
            add(BUILDING, "building", _static(centre, num_frames), (depth / 2, height / 2, length / 2),
                _pick(_WALL_COLOURS, rng, 0.06))
        z = z_min
        while z < z_max:
            length, height, x = rng.uniform(20, 45), rng.uniform(18, 40), rng.uniform(32, 45)
            centre = (side * (x + 6), -height / 2, z + length / 2)
            add(BUILDING, "building_far", _static(centre, num_frames), (6, height / 2, length / 2),
                _pick(_WALL_COLOURS, rng, 0.06))
            z += length + rng.uniform(0, 10)
        # Street lamps near the kerb: thin structures.
        z = z_min + rng.uniform(0, 20)
        while z < z_max:
            if not _in_cross_street(z, z, cross_streets, 0.5):
                add(POLE, "pole", _static((side * 6.1, -3.0, z), num_frames), (0.08, 3.0, 0.08),
                    (0.45, 0.46, 0.48))
            z += rng.uniform(18, 32)

    instance = 0

    def next_instance() -> int:
        nonlocal instance
        instance += 1
        return instance

    placer = _Placer(camera)
    car_half = np.array(CAR_HALF)
    across_half = car_half[[2, 1, 0]]

    # The lead car: in the camera's lane, at nearly the camera's speed, so it hardly moves in the image.
    lead = np.stack([np.full(num_frames, LANE_CENTRE), np.full(num_frames, -CAR_HALF[1]), z_cam + gap], 1)
    add(CAR, "lead", lead, car_half, _pick(_CAR_COLOURS, rng), next_instance())
    placer.add(lead, car_half)

    # Parked cars in the parking strips, kept clear of the cross streets and their zebra crossings.
    for side in (-1.0, 1.0):
        z = z_min + rng.uniform(0, 8)
        while z < z_max:
            if rng.random() < 0.45 and not _in_cross_street(z - 2.5, z + 2.5, cross_streets, 3.5):
                centre = (side * 4.6 + rng.uniform(-0.15, 0.15), -CAR_HALF[1], z)
                add(CAR, "parked", _static(centre, num_frames), car_half, _pick(_CAR_COLOURS, rng),
                    next_instance())
            z += rng.uniform(5.2, 7.0)

    speed_scale = 2.0 if profile == "fast" else 1.0
    # Oncoming cars in the other lane, met at some frame at some distance ahead.
    for _ in range(rng.integers(1, 4)):
        for _attempt in range(20):
            speed = rng.uniform(0.8, 1.5) * speed_scale
            meet = rng.uniform(0.15, 0.95) * (num_frames - 1)
            ahead = rng.uniform(6, 30)
            z_meet = np.interp(meet, frames, z_cam) + ahead
            track = np.stack(
                [np.full(num_frames, -LANE_CENTRE + rng.uniform(-0.2, 0.2)), np.full(num_frames, -CAR_HALF[1]),
                 z_meet - speed * (frames - meet)], 1,
            )
            if placer.clear(track, car_half):
                add(CAR, "oncoming", track, car_half, _pick(_CAR_COLOURS, rng), next_instance())
                placer.add(track, car_half)
                break

    # Crossing traffic on the cross streets in view during the sequence.
    visible = cross_streets[(cross_streets > z_cam[0] + 10) & (cross_streets < z_cam[-1] + 70)]
    for z_cross in visible:
        for _ in range(rng.integers(1, 3)):
            for _attempt in range(30):
                direction = rng.choice([-1.0, 1.0])
                speed = rng.uniform(0.6, 1.3)
                if z_cross == stop_street:
                    passing = rng.uniform(halted[0], halted[-1] + 1)  # while the camera waits
                else:
                    passing = rng.uniform(-0.2, 1.2) * (num_frames - 1)
                lane_z = z_cross - direction * 2.8
                track = np.stack(
                    [direction * speed * (frames - passing), np.full(num_frames, -CAR_HALF[1]),
                     np.full(num_frames, lane_z)], 1,
                )
                if placer.clear(track, across_half):
                    add(CAR, "crossing", track, across_half, _pick(_CAR_COLOURS, rng), next_instance())
                    placer.add(track, across_half)
                    break

    # Pedestrians: crossing the main road on the zebra crossings, walking or standing on the sidewalks.
    ped_half = np.array(PEDESTRIAN_HALF)
    ped_across = ped_half[[2, 1, 0]]
    for z_cross in visible:
        for _attempt in range(30):
            direction = rng.choice([-1.0, 1.0])
            speed = rng.uniform(0.1, 0.18)
            z_walk = z_cross + rng.choice([-1.0, 1.0]) * CROSSWALK_OFFSET + rng.uniform(-0.8, 0.8)
            x_mid = rng.uniform(-5.0, 5.0)
            track = np.stack(
                [x_mid + direction * speed * (frames - (num_frames - 1) / 2),
                 np.full(num_frames, -PEDESTRIAN_HALF[1]), np.full(num_frames, z_walk)], 1,
            )
            if placer.clear(track, ped_across, margin=0.8):
                add(PEDESTRIAN, "pedestrian_crossing", track, ped_across, _pick(_CLOTHES, rng, 0.08),
                    next_instance())
                placer.add(track, ped_across)
                break
    for _ in range(rng.integers(2, 5)):
        side = rng.choice([-1.0, 1.0])
        z0 = np.interp(rng.uniform(0, num_frames - 1), frames, z_cam) + rng.uniform(8, 35)
        walking = rng.random() < 0.7
        speed = rng.uniform(0.1, 0.17) * rng.choice([-1.0, 1.0]) if walking else 0.0
        track = np.stack(
            [np.full(num_frames, side * rng.uniform(6.5, 8.5)), np.full(num_frames, -PEDESTRIAN_HALF[1]),
             z0 + speed * frames], 1,
        )
        if placer.clear(track, ped_half, margin=0.2):
            role = "pedestrian_walking" if walking else "pedestrian_standing"
            add(PEDESTRIAN, role, track, ped_half, _pick(_CLOTHES, rng, 0.08), next_instance())
            placer.add(track, ped_half)

    return Scene(camera, yaw, objects, cross_streets, (z_min, z_max), profile)
