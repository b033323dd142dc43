"""The shared sample logic of every dataset: frame records in, Samples (docs/design.md) out.

Each dataset module only builds a list of :class:`FrameRecord` (which files make one sample, the
intrinsics, where optional ground truth lives); :class:`SequenceDataset` does the rest the same way
for all of them: read, resize to the training resolution with the intrinsics scaled to match, load
optional ground truth and masks, augment, and assemble the Sample dict.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from mfdepth.data.augment import apply_color_jitter, draw_augmentation, item_generator
from mfdepth.data.errors import DataError
from mfdepth.data.files import read_mask_png, read_rgb
from mfdepth.geometry import flip_intrinsics_horizontally, intrinsics_pyramid, scale_intrinsics

log = logging.getLogger(__name__)

NUM_SCALES = 4
"""Decoder scales of the intrinsics pyramid in a Sample: 1, 1/2, 1/4, 1/8."""


@dataclass(frozen=True)
class FrameRef:
    """Where one frame's pixels come from.

    Attributes:
        path: image file (or video file, with ``index``).
        tile: which of ``tiles`` equal-width side-by-side tiles of the image is the frame (Cityscapes
            triplets store frames -1, 0, +1 as tiles 0, 1, 2).
        keep_top: fraction of the rows kept from the top (Cityscapes: 0.75 drops the ego car's bonnet).
        index: frame number within a video; -1 for image files.
    """

    path: Path
    tile: int = 0
    tiles: int = 1
    keep_top: float = 1.0
    index: int = -1


@dataclass(frozen=True, eq=False)
class FrameRecord:
    """Everything needed to build one Sample, before any pixel is read.

    Attributes:
        sample_id: ``"<folder> <frame> <side>"``, naming the target's source file.
        frames: one FrameRef per offset of the dataset, the target first.
        K: ``(3, 3)`` intrinsics of the target frame, in pixels of ``K_size`` (of the frame as read when
            ``K_size`` is None), or normalised when ``K_normalized``; or a function returning them, read
            when the item is loaded (Cityscapes keeps one small file per frame).
        K_size: ``(width, height)`` that K's pixels refer to, when it is not the size of the frame as read
            (KITTI: S_rect; video frames kept in memory at the network size: the original size).
        K_normalized: K's rows are divided by width and height (Monodepth2 convention).
        depth_gt: returns ``(Hg, Wg)`` float32 depth in metres (0 = none) at the native GT resolution.
        motion_mask: PNG of true moving-object pixels (non-zero = moving), any resolution.
        world_poses: ``(N, 4, 4)`` camera-to-world transforms ``T_world_camera`` per frame, if known.
    """

    sample_id: str
    frames: tuple[FrameRef, ...]
    K: np.ndarray | Callable[[], np.ndarray]
    K_size: tuple[int, int] | None = None
    K_normalized: bool = False
    depth_gt: Callable[[], np.ndarray] | None = None
    motion_mask: Path | None = None
    world_poses: np.ndarray | None = None


def mask_path_for(mask_dir: str | Path, sample_id: str) -> Path:
    """File of the depth-inconsistency mask of ``sample_id`` under ``mask_dir``.

    ``"2011_09_26/2011_09_26_drive_0001_sync 5 l"`` ->
    ``<mask_dir>/2011_09_26/2011_09_26_drive_0001_sync/5_l.png``.
    The masks stage writes here and the datasets read from here, so the two never disagree.
    """
    parts = sample_id.split()
    if not parts:
        raise DataError("empty sample id: cannot name its mask file")
    folder = PurePosixPath(parts[0].replace("\\", "/"))
    if folder.is_absolute() or ".." in folder.parts:
        raise DataError(f"sample id '{sample_id}' names a folder outside the mask directory")
    stem = "_".join(p for p in parts[1:] if p != "-") or "frame"
    if "/" in stem or "\\" in stem or stem.startswith("."):
        raise DataError(f"sample id '{sample_id}' cannot be turned into a mask file name")
    return Path(mask_dir).joinpath(*folder.parts, f"{stem}.png")


def collate_samples(samples: Sequence[dict]) -> dict:
    """``default_collate``, except that ground-truth depth maps of different sizes stay a list.

    KITTI's dates have slightly different image sizes (1242x375, 1241x376, 1224x370, ...), so an
    evaluation batch may mix them; every other key always has one shape per dataset.
    """
    if "depth_gt" in samples[0] and len({tuple(s["depth_gt"].shape) for s in samples}) > 1:
        batch = default_collate([{k: v for k, v in s.items() if k != "depth_gt"} for s in samples])
        batch["depth_gt"] = [s["depth_gt"] for s in samples]
        return batch
    return default_collate(list(samples))


def _resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[0] == height and image.shape[1] == width:
        return image
    # Lanczos like Monodepth2 (PIL's ANTIALIAS): downscaling KITTI ~2x needs a proper low-pass filter.
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def _to_float_chw(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in [0, 1]."""
    # PIL hands out read-only arrays; torch.tensor copies, which also makes the memory contiguous.
    return torch.tensor(image).permute(2, 0, 1).float().div_(255.0)


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(resized) > 127


class FrameCache:
    """Frames at the training resolution, least recently used out first, within ``megabytes``.

    Each frame is decoded and resized once instead of once per sample that uses it (a frame is the
    target of one sample and a neighbour of two, every epoch): loading a demo-world sample at 64x192
    is 3.3x faster once its frames are cached (``benchmarks/bench_dataloader.py``). Entries are ``(pixels (h, w, 3) uint8, (height, width) as
    read)``. A worker process starts with an empty cache of its own (nothing is pickled). 0 = off.
    """

    def __init__(self, megabytes: float = 0.0):
        if megabytes < 0:
            raise DataError(f"data.frame_cache_mb must be 0 (off) or positive, got {megabytes}")
        self.budget = int(megabytes * 2**20)
        self.entries: OrderedDict = OrderedDict()
        self.bytes = 0

    def get(self, key):
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key, pixels: np.ndarray, read_size: tuple[int, int]) -> None:
        if pixels.nbytes > self.budget or key in self.entries:
            return
        self.entries[key] = (pixels, read_size)
        self.bytes += pixels.nbytes
        while self.bytes > self.budget:
            _, (dropped, _) = self.entries.popitem(last=False)
            self.bytes -= dropped.nbytes

    def __getstate__(self):
        return {"budget": self.budget, "entries": OrderedDict(), "bytes": 0}


class SequenceDataset(Dataset):
    """Map-style dataset of Samples built from :class:`FrameRecord` s.

    Args:
        records: one per sample (the target frame and its neighbours).
        offsets: frame offsets, target (0) first, aligned with each record's ``frames``.
        height, width: training resolution of ``frames`` and the intrinsics pyramid.
        augment: draw a horizontal flip and colour jitter per item (training); off = plain frames.
        color_jitter, hflip: switches of the two augmentations (used only when ``augment``).
        mask_dir: where the masks stage wrote depth-inconsistency masks; adds ``dynamic_mask``.
        seed: augmentation seed; with :meth:`set_epoch` and the item index it fixes every random draw.
        name: dataset name for messages; source: the split file or folder the records came from.
        frame_cache_mb: memory for frames kept at the training resolution (:class:`FrameCache`).
    """

    def __init__(
        self,
        records: Sequence[FrameRecord],
        offsets: Sequence[int],
        height: int,
        width: int,
        augment: bool = False,
        color_jitter: bool = True,
        hflip: bool = True,
        mask_dir: str | Path | None = None,
        seed: int = 0,
        name: str = "dataset",
        source: str | Path = "",
        frame_cache_mb: float = 0.0,
    ):
        self.offsets = [int(o) for o in offsets]
        if not self.offsets or self.offsets[0] != 0:
            raise DataError(
                f"{name}: frame offsets {self.offsets} must start with the target frame 0, e.g. [0, -1, 1]"
            )
        if height <= 0 or width <= 0:
            raise DataError(f"{name}: training resolution {height}x{width} must be positive")
        self.records = list(records)
        if not self.records:
            raise DataError(f"{name}: no samples in {source or 'the given data'}")
        for optional in ("depth_gt", "motion_mask", "world_poses"):
            present = [getattr(r, optional) is not None for r in self.records]
            if any(present) and not all(present):
                raise ValueError(
                    f"{name}: '{optional}' given for some records only; a batch could not collate"
                )
        for record in self.records:
            if len(record.frames) != len(self.offsets):
                raise ValueError(
                    f"{name}: record {record.sample_id} has {len(record.frames)} frames "
                    f"for offsets {self.offsets}"
                )
        self.height, self.width = int(height), int(width)
        self.augment = bool(augment)
        self.color_jitter, self.hflip = bool(color_jitter), bool(hflip)
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None
        self.seed = int(seed)
        self.epoch = 0
        self.pose_priors: tuple[torch.Tensor, torch.Tensor] | None = None
        self.stereo_priors: torch.Tensor | None = None
        """``(N, 1, h, w)`` depth labels per sample, 0 = none (``mfdepth.training.stereo_prior``); adds ``stereo_depth``."""
        """Optional ``(poses (N, S, 4, 4), valid (N, S))`` classical relative poses per record and
        source offset (:mod:`mfdepth.data.two_view`); adds ``pose_prior`` / ``pose_prior_valid``."""
        self.name = name
        self.source = str(source)
        self.frame_cache = FrameCache(frame_cache_mb)

    # -- bookkeeping -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Make item augmentation depend on the epoch (called by the training loop before each epoch)."""
        self.epoch = int(epoch)

    @property
    def sample_ids(self) -> list[str]:
        return [r.sample_id for r in self.records]

    @property
    def has_depth_gt(self) -> bool:
        return self.records[0].depth_gt is not None

    def world_poses(self, index: int) -> np.ndarray | None:
        """``(N, 4, 4)`` camera-to-world poses of item ``index``'s frames (unflipped), or None."""
        return self.records[index].world_poses

    # -- reading -----------------------------------------------------------------------------

    def read_frame(self, ref: FrameRef) -> np.ndarray:
        """``(h, w, 3)`` uint8 pixels of one frame at its stored resolution."""
        image = read_rgb(ref.path)
        if ref.tiles > 1:
            tile_width = image.shape[1] // ref.tiles
            if tile_width == 0:
                raise DataError(f"image {ref.path} is too narrow to hold {ref.tiles} side-by-side frames")
            image = image[:, ref.tile * tile_width : (ref.tile + 1) * tile_width]
        if ref.keep_top < 1.0:
            image = image[: int(round(image.shape[0] * ref.keep_top))]
        return image

    def training_frame(self, ref: FrameRef) -> tuple[np.ndarray, tuple[int, int]]:
        """``(pixels (height, width, 3) uint8 at the training resolution, (h, w) as read)`` of one frame."""
        key = (ref, self.height, self.width)
        cached = self.frame_cache.get(key)
        if cached is not None:
            return cached
        image = self.read_frame(ref)
        pixels = _resize_rgb(image, self.height, self.width)
        read_size = (int(image.shape[0]), int(image.shape[1]))
        self.frame_cache.put(key, pixels, read_size)
        return pixels, read_size

    def network_intrinsics(self, record: FrameRecord, frame_size: tuple[int, int]) -> torch.Tensor:
        """``(3, 3)`` float32 K in pixels of the training resolution.

        ``frame_size`` is the ``(width, height)`` of the target frame as read.
        """
        K = torch.as_tensor(record.K() if callable(record.K) else record.K, dtype=torch.float64)
        if record.K_normalized:
            K = K.clone()
            K[0] *= self.width
            K[1] *= self.height
        else:
            ref_width, ref_height = record.K_size or frame_size
            K = scale_intrinsics(K, self.width / ref_width, self.height / ref_height)
        return K.float()

    def _dynamic_mask(self, sample_id: str) -> np.ndarray:
        path = mask_path_for(self.mask_dir, sample_id)
        if not path.is_file():
            raise DataError(
                f"depth inconsistency mask not found: {path} (sample {sample_id}); run the masks stage for "
                "this run directory first (mfdepth masks, or mfdepth train --stage masks)"
            )
        return _resize_mask(read_mask_png(path), self.height, self.width)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self.records):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self.records)} samples")
        record = self.records[index]
        resized = [self.training_frame(ref) for ref in record.frames]
        target_height, target_width = resized[0][1]
        frames = torch.stack([_to_float_chw(pixels) for pixels, _ in resized])
        K = self.network_intrinsics(record, (target_width, target_height))

        sample: dict = {}
        if record.depth_gt is not None:
            # A copy: loaders may hand out cached arrays that a consumer must not be able to change.
            sample["depth_gt"] = torch.tensor(np.asarray(record.depth_gt(), dtype=np.float32))[None]
        if record.motion_mask is not None:
            moving = _resize_mask(read_mask_png(record.motion_mask), self.height, self.width)
            sample["motion_mask"] = torch.from_numpy(moving.astype(np.float32))[None]
        if self.mask_dir is not None:
            dynamic = self._dynamic_mask(record.sample_id)
            sample["dynamic_mask"] = torch.from_numpy(dynamic.astype(np.float32))[None]
        if self.pose_priors is not None:
            sample["pose_prior"] = self.pose_priors[0][index].clone()
            sample["pose_prior_valid"] = self.pose_priors[1][index].clone()
        if self.stereo_priors is not None:
            sample["stereo_depth"] = self.stereo_priors[index].clone()

        frames_aug = frames
        if self.augment:
            draw = draw_augmentation(
                item_generator(self.seed, self.epoch, index), self.hflip, self.color_jitter
            )
            if draw.flip:
                frames = frames.flip(-1)
                K = flip_intrinsics_horizontally(K, self.width)
                for key in ("depth_gt", "motion_mask", "dynamic_mask", "stereo_depth"):
                    if key in sample:
                        sample[key] = sample[key].flip(-1)
                if "pose_prior" in sample:
                    # Mirroring the images mirrors the motion: T -> F T F with F = diag(-1, 1, 1, 1).
                    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
                    sample["pose_prior"] = mirror @ sample["pose_prior"] @ mirror
            frames_aug = apply_color_jitter(frames, draw.jitter) if draw.jitter is not None else frames

        sample.update(
            frames=frames,
            frames_aug=frames_aug,
            offsets=torch.tensor(self.offsets, dtype=torch.long),
            K=intrinsics_pyramid(K, NUM_SCALES),
            index=index,
            id=record.sample_id,
        )
        return sample


def drop_message(name: str, dropped: int, total: int, offsets: Sequence[int], source) -> None:
    """Log how many samples were dropped because a neighbour frame lies outside its sequence."""
    if dropped:
        log.warning(
            "%s: dropped %d of %d samples of %s whose neighbour frames (offsets %s) fall outside their "
            "sequence",
            name,
            dropped,
            total,
            source,
            list(offsets),
        )
