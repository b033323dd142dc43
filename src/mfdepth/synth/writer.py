"""Writing the synthetic world to disk in the KITTI raw layout, with ground truth and splits.

Layout under ``root``::

    world.json                                   generation parameters (written last: "complete")
    contact_sheet.png                            RGB / depth / motion of a few frames, for a person
    <date>/calib_cam_to_cam.txt, calib_velo_to_cam.txt, calib_imu_to_velo.txt
    <date>/<date>_drive_<NNNN>_sync/image_02/data/<10-digit frame>.png|jpg
    <date>/<date>_drive_<NNNN>_sync/gt/depth/<frame>.npy      float32 z-depth, metres, 0 = sky
    <date>/<date>_drive_<NNNN>_sync/gt/dynamic/<frame>.png    uint8, 1 = moving-object pixel
    <date>/<date>_drive_<NNNN>_sync/gt/instance/<frame>.png   uint16 instance id, 0 = background
    <date>/<date>_drive_<NNNN>_sync/gt/poses.txt              camera-to-world 3x4 per frame, row-major
    splits/<split>/{train,val,test}_files.txt                 "<date>/<drive> <frame> l" (Monodepth2)
    splits/<split>/gt_depths.npz, gt_dynamic.npz             key "data": test frames in list order

Every file is a pure function of the parameters, so the same seed writes byte-identical files (the
.npz archives carry a fixed timestamp).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mfdepth.synth.scene import CAMERA_HEIGHT, PROFILES
from mfdepth.synth.world import SynthSequence, intrinsics, render_sequence

GENERATOR_VERSION = 1
"""Bumped whenever the rendered content changes, so ``ensure_world`` re-renders old worlds."""

DATE = "2026_01_01"
DEFAULT_SPLIT = "synthetic"
WORLD_FILE = "world.json"
CONTACT_SHEET = "contact_sheet.png"
EXTENSIONS = ("png", "jpg")

PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"sequences": 4, "frames": 8, "height": 64, "width": 192},
    "demo": {"sequences": 6, "frames": 40, "height": 96, "width": 320},
}
"""Named world sizes: ``tiny`` for tests (a few seconds), ``demo`` for the CPU demo (well under a minute)."""

_MATCH_KEYS = ("version", "seed", "sequences", "frames", "height", "width", "ext", "split", "date")
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class DrivePlan:
    """One sequence to render: its folder, role in the split and generation inputs."""

    index: int
    folder: str
    subset: str
    profile: str
    seed: int


def plan_drives(sequences: int, seed: int) -> list[DrivePlan]:
    """Assign each sequence a drive folder, a subset and a camera profile.

    The last ``max(1, sequences // 6)`` sequences are the test set, the same number before them the
    validation set, the rest train, so test and validation never share a sequence with training.
    Within each subset the profiles cycle normal, stop, fast. Each sequence's seed is derived from
    ``(seed, index)``.
    """
    held_out = max(1, sequences // 6)
    subsets = ["train"] * (sequences - 2 * held_out) + ["val"] * held_out + ["test"] * held_out
    plans, counts = [], {name: 0 for name in _SPLIT_NAMES}
    for index, subset in enumerate(subsets):
        profile = PROFILES[counts[subset] % len(PROFILES)]
        counts[subset] += 1
        sequence_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        folder = f"{DATE}/{DATE}_drive_{index + 1:04d}_sync"
        plans.append(DrivePlan(index, folder, subset, profile, sequence_seed))
    return plans


def resolve_parameters(
    preset: str | None = None,
    sequences: int | None = None,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
    ext: str = "png",
    split: str = DEFAULT_SPLIT,
) -> dict:
    """The full parameter set of a world: the preset's sizes (``demo`` if none) with explicit overrides.

    Raises:
        ValueError: naming the bad value and what is allowed.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown synth preset '{preset}': expected one of {', '.join(PRESETS)}")
    sizes = dict(PRESETS[preset or "demo"])
    for key, value in (("sequences", sequences), ("frames", frames), ("height", height), ("width", width)):
        if value is not None:
            sizes[key] = value
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"synth {key} must be an integer, got {value!r}")
    if sizes["sequences"] < 3:
        raise ValueError(f"--sequences must be at least 3 (train, val and test), got {sizes['sequences']}")
    if sizes["frames"] < 3:
        raise ValueError(f"--frames must be at least 3 (a frame and both neighbours), got {sizes['frames']}")
    if sizes["frames"] > 9_999_999_999:
        raise ValueError(f"--frames {sizes['frames']} does not fit KITTI's 10-digit frame names")
    if sizes["height"] < 8 or sizes["width"] < 8:
        raise ValueError(f"image size {sizes['height']}x{sizes['width']} is too small: use at least 8x8")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    ext = str(ext).lower().lstrip(".")
    if ext == "jpeg":
        ext = "jpg"
    if ext not in EXTENSIONS:
        raise ValueError(f"--ext must be png or jpg, got '{ext}'")
    if not split or any(c in split for c in "/\\") or split in (".", ".."):
        raise ValueError(f"split name '{split}' must be a plain folder name such as synthetic")
    return {
        "version": GENERATOR_VERSION,
        "preset": preset,
        "seed": int(seed),
        **{k: int(v) for k, v in sizes.items()},
        "ext": ext,
        "split": split,
        "date": DATE,
    }


# ---------------------------------------------------------------------------------------------
# File formats


def _format_numbers(values) -> str:
    return " ".join(f"{float(v):.6e}" for v in np.asarray(values, dtype=np.float64).ravel())


def calibration_texts(K: np.ndarray, height: int, width: int) -> dict[str, str]:
    """The three KITTI calibration files of the synthetic rig, as file name -> text.

    Camera 02 (the rendered colour camera) is the rectified reference: ``P_rect_02 = [K | 0]`` and
    ``R_rect_00`` is the identity. Cameras 00 and 02 coincide; 01 and 03 sit on a 0.54 m baseline to the
    right (KITTI's), although only image_02 is rendered. The velodyne is 8 cm above and 27 cm behind
    the camera with KITTI's axes (x forward, y left, z up); the IMU pose relative to it is KITTI-like.
    """
    baseline = 0.54
    size = _format_numbers([width, height])
    lines = ["calib_time: 01-Jan-2026 00:00:00", "corner_dist: 9.950000e-02"]
    for camera in range(4):
        offset = -baseline if camera % 2 else 0.0
        P = np.hstack([K, np.array([[K[0, 0] * offset], [0.0], [0.0]])])
        lines += [
            f"S_{camera:02d}: {size}",
            f"K_{camera:02d}: {_format_numbers(K)}",
            f"D_{camera:02d}: {_format_numbers(np.zeros(5))}",
            f"R_{camera:02d}: {_format_numbers(np.eye(3))}",
            f"T_{camera:02d}: {_format_numbers([offset, 0.0, 0.0])}",
            f"S_rect_{camera:02d}: {size}",
            f"R_rect_{camera:02d}: {_format_numbers(np.eye(3))}",
            f"P_rect_{camera:02d}: {_format_numbers(P)}",
        ]
    velo_axes = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    velo = [
        "calib_time: 01-Jan-2026 00:00:00",
        f"R: {_format_numbers(velo_axes)}",
        f"T: {_format_numbers([0.0, -0.08, -0.27])}",
        f"delta_f: {_format_numbers([0.0, 0.0])}",
        f"delta_c: {_format_numbers([0.0, 0.0])}",
    ]
    imu = [
        "calib_time: 01-Jan-2026 00:00:00",
        f"R: {_format_numbers(np.eye(3))}",
        f"T: {_format_numbers([-0.81, 0.32, -0.80])}",
    ]
    return {
        "calib_cam_to_cam.txt": "\n".join(lines) + "\n",
        "calib_velo_to_cam.txt": "\n".join(velo) + "\n",
        "calib_imu_to_velo.txt": "\n".join(imu) + "\n",
    }


def poses_text(poses: np.ndarray) -> str:
    """``(F, 4, 4)`` camera-to-world poses as lines of 12 numbers (the top 3x4, row-major)."""
    return "".join(" ".join(f"{v:.10e}" for v in pose[:3].ravel()) + "\n" for pose in poses)


def read_poses(path: str | Path) -> np.ndarray:
    """Read ``gt/poses.txt`` back as ``(F, 4, 4)`` float64 camera-to-world poses."""
    path = Path(path)
    rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if rows.shape[1] != 12:
        raise ValueError(f"{path}: each line must hold 12 numbers (a 3x4 pose), found {rows.shape[1]}")
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3] = rows.reshape(-1, 3, 4)
    return poses


def save_npz_deterministic(path: Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps, so equal arrays give equal bytes."""
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())
    os.replace(partial, path)


def _save_image(array: np.ndarray, path: Path) -> None:
    image = Image.fromarray(array)
    if path.suffix == ".jpg":
        image.save(path, quality=95, subsampling=0)
    else:
        image.save(path)


def write_drive(drive_dir: Path, sequence: SynthSequence, ext: str) -> None:
    """Write one rendered sequence's images and ground truth into ``drive_dir`` (KITTI drive folder)."""
    image_dir = drive_dir / "image_02" / "data"
    folders = {name: drive_dir / "gt" / name for name in ("depth", "dynamic", "instance")}
    for folder in (image_dir, *folders.values()):
        folder.mkdir(parents=True, exist_ok=True)
    for frame in range(len(sequence.images)):
        stem = f"{frame:010d}"
        _save_image(sequence.images[frame], image_dir / f"{stem}.{ext}")
        np.save(folders["depth"] / f"{stem}.npy", sequence.depth[frame])
        _save_image(sequence.dynamic[frame].astype(np.uint8), folders["dynamic"] / f"{stem}.png")
        _save_image(sequence.instance[frame], folders["instance"] / f"{stem}.png")
    (drive_dir / "gt" / "poses.txt").write_text(poses_text(sequence.poses))


def split_lines(plans: list[DrivePlan], frames: int) -> dict[str, list[str]]:
    """Monodepth2 split lines per subset: every frame that has both neighbours, left camera."""
    lines: dict[str, list[str]] = {name: [] for name in _SPLIT_NAMES}
    for plan in plans:
        lines[plan.subset] += [f"{plan.folder} {frame} l" for frame in range(1, frames - 1)]
    return lines


# ---------------------------------------------------------------------------------------------
# Contact sheet


def colourise_depth(depth: np.ndarray, near: float = 2.0, far: float = 100.0) -> np.ndarray:
    """``(H, W)`` metres -> ``(H, W, 3)`` uint8: magma on log depth, ``near`` bright to ``far`` dark, sky black.

    A log scale shows the road's gradient and the far facades alike, with the same colours in every frame.
    """
    from matplotlib import colormaps

    level = (np.log(np.clip(depth, near, far)) - np.log(near)) / (np.log(far) - np.log(near))
    rgb = colormaps["magma"](1.0 - level)[..., :3]
    rgb[depth <= 0] = 0.0
    return np.round(rgb * 255).astype(np.uint8)


def motion_overlay(image: np.ndarray, dynamic: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """The image dimmed, moving-object pixels red, static objects (parked cars, standing people) blue."""
    out = (image.astype(np.float32) * 0.45).astype(np.uint8)
    out[(instance > 0) & ~dynamic] = (40, 90, 230)
    out[dynamic] = (235, 40, 40)
    return out


def contact_sheet(samples: list[tuple[str, SynthSequence]], frames_per_row: int = 3) -> np.ndarray:
    """One block per sequence: rows RGB, depth, motion; columns a few frames spread over the sequence."""
    blocks = []
    for _, sequence in samples:
        count = len(sequence.images)
        picks = sorted({round(i * (count - 1) / max(1, frames_per_row - 1)) for i in range(frames_per_row)})
        rows = [
            [sequence.images[f] for f in picks],
            [colourise_depth(sequence.depth[f]) for f in picks],
            [motion_overlay(sequence.images[f], sequence.dynamic[f], sequence.instance[f]) for f in picks],
        ]
        block = [np.concatenate(_with_gaps(row, axis=1), axis=1) for row in rows]
        blocks.append(np.concatenate(_with_gaps(block, axis=0), axis=0))
    return np.concatenate(_with_gaps(blocks, axis=0, size=6), axis=0)


def _with_gaps(tiles: list[np.ndarray], axis: int, size: int = 2) -> list[np.ndarray]:
    out = []
    for i, tile in enumerate(tiles):
        if i:
            shape = list(tile.shape)
            shape[axis] = size
            out.append(np.full(shape, 255, dtype=np.uint8))
        out.append(tile)
    return out


# ---------------------------------------------------------------------------------------------
# The world


def read_world_info(root: str | Path) -> dict | None:
    """``root/world.json`` as a dict, or None when it is missing or unreadable."""
    path = Path(root) / WORLD_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _remove_previous_world(root: Path, info: dict | None) -> None:
    """Delete what an earlier ``write_world`` put in ``root`` (only the paths its world.json names)."""
    (root / WORLD_FILE).unlink(missing_ok=True)
    if info is None:
        return
    for drive in info.get("drives", []):
        folder = drive.get("folder", "") if isinstance(drive, dict) else ""
        parts = Path(folder).parts
        if len(parts) == 2 and ".." not in parts and parts[1].endswith("_sync"):
            shutil.rmtree(root / folder, ignore_errors=True)
    split = info.get("split")
    if isinstance(split, str) and split and "/" not in split and split not in (".", ".."):
        split_dir = root / "splits" / split
        for name in ("train_files.txt", "val_files.txt", "test_files.txt", "gt_depths.npz", "gt_dynamic.npz"):
            (split_dir / name).unlink(missing_ok=True)


def write_world(
    root: str | Path,
    *,
    preset: str | None = None,
    sequences: int | None = None,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
    ext: str = "png",
    split: str = DEFAULT_SPLIT,
    progress: bool = True,
) -> Path:
    """Render the synthetic world into ``root`` (see the module docstring for the layout).

    Sizes left as None come from ``preset`` (``demo`` when no preset is given). An earlier world in
    ``root`` (named by its world.json) is removed first; ``world.json`` is written last, so an
    interrupted run is recognised as incomplete.

    Returns:
        ``root`` as a Path.
    Raises:
        ValueError: bad parameters; FileExistsError: ``root`` is a file.
    """
    params = resolve_parameters(preset, sequences, frames, height, width, seed, ext, split)
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"--out {root} is a file; give a folder for the synthetic world")
    root.mkdir(parents=True, exist_ok=True)
    _remove_previous_world(root, read_world_info(root))

    from tqdm.auto import tqdm

    count, height, width = params["frames"], params["height"], params["width"]
    plans = plan_drives(params["sequences"], params["seed"])
    date_dir = root / DATE
    date_dir.mkdir(parents=True, exist_ok=True)
    K = intrinsics(height, width)
    for name, text in calibration_texts(K, height, width).items():
        (date_dir / name).write_text(text)

    test_depth, test_dynamic, sheet = [], [], []
    sheet_drives = _contact_sheet_drives(plans)
    with tqdm(
        total=len(plans) * count, desc="synth", unit="frame", disable=not progress, dynamic_ncols=True
    ) as bar:
        for plan in plans:
            sequence = render_sequence(plan.seed, count, height, width, plan.profile, progress=bar.update)
            drive_dir = root / plan.folder
            # Frames of an interrupted earlier run must not linger beside the new ones.
            shutil.rmtree(drive_dir, ignore_errors=True)
            write_drive(drive_dir, sequence, params["ext"])
            if plan.subset == "test":
                test_depth.append(sequence.depth[1:-1])
                test_dynamic.append(sequence.dynamic[1:-1].astype(np.uint8))
            if plan.index in sheet_drives:
                sheet.append((plan.folder, sequence))

    split_dir = root / "splits" / params["split"]
    split_dir.mkdir(parents=True, exist_ok=True)
    for subset, lines in split_lines(plans, count).items():
        (split_dir / f"{subset}_files.txt").write_text("".join(line + "\n" for line in lines))
    save_npz_deterministic(split_dir / "gt_depths.npz", data=np.concatenate(test_depth))
    save_npz_deterministic(split_dir / "gt_dynamic.npz", data=np.concatenate(test_dynamic))
    Image.fromarray(contact_sheet(sheet)).save(root / CONTACT_SHEET)

    info = {
        "generator": "mfdepth.synth",
        **params,
        "camera_height": CAMERA_HEIGHT,
        "K": K.tolist(),
        "drives": [
            {"folder": p.folder, "subset": p.subset, "profile": p.profile, "seed": p.seed} for p in plans
        ],
    }
    partial = root / (WORLD_FILE + ".partial")
    partial.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(partial, root / WORLD_FILE)
    return root


def _contact_sheet_drives(plans: list[DrivePlan], limit: int = 4) -> set[int]:
    """A few sequences for the contact sheet: one of each profile first, then the test sequences."""
    chosen: list[int] = []
    for profile in PROFILES:
        chosen += [p.index for p in plans if p.profile == profile and p.subset == "train"][:1]
    chosen += [p.index for p in plans if p.subset == "test" and p.index not in chosen]
    return set(chosen[:limit])


def world_matches(root: str | Path, params: dict) -> bool:
    """True when ``root`` holds a complete world written with ``params`` (see :func:`resolve_parameters`)."""
    root = Path(root)
    info = read_world_info(root)
    if info is None or any(info.get(key) != params[key] for key in _MATCH_KEYS):
        return False
    split_dir = root / "splits" / params["split"]
    needed = [split_dir / f"{subset}_files.txt" for subset in _SPLIT_NAMES] + [split_dir / "gt_depths.npz"]
    last = params["frames"] - 1
    for drive in info.get("drives", []):
        image_dir = root / str(drive.get("folder", "")) / "image_02" / "data"
        needed += [image_dir / f"{0:010d}.{params['ext']}", image_dir / f"{last:010d}.{params['ext']}"]
    return len(info.get("drives", [])) == params["sequences"] and all(path.is_file() for path in needed)


def ensure_world(root: str | Path, preset: str = "demo", seed: int = 0, progress: bool = True) -> Path:
    """Render the ``preset`` world into ``root`` unless a matching complete world is already there."""
    params = resolve_parameters(preset, seed=seed)
    if not world_matches(root, params):
        write_world(root, preset=preset, seed=seed, progress=progress)
    return Path(root)
