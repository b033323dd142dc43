"""``build_dataset``: one entry point from a DataConfig to a dataset of Samples."""

from __future__ import annotations

import logging
from pathlib import Path

from mfdepth.config import DataConfig
from mfdepth.data.base import SequenceDataset
from mfdepth.data.errors import DataError
from mfdepth.data.splits import SPLIT_FILES, resolve_split_file

DATASETS = ("synthetic", "kitti", "cityscapes", "ddad", "folder")

log = logging.getLogger(__name__)


def ensure_synthetic_world(root: str | Path, preset: str) -> None:
    """Render the synthetic world into ``root`` unless it is already there.

    A world is rendered only into a folder that holds one already, the default ``data/synthetic``, or a
    new or empty folder (and that is logged): a ``data.root`` meant for the user's own data (a forgotten
    ``data.dataset``) is refused rather than filled with a synthetic world.
    """
    try:
        from mfdepth.synth import ensure_world
        from mfdepth.synth.writer import WORLD_FILE
    except ImportError as err:
        raise DataError(
            f"the synthetic world generator mfdepth.synth is not available ({err}); set data.dataset to a "
            "dataset on disk"
        ) from None
    root = Path(root)
    if not (root / WORLD_FILE).is_file():
        occupied = root.exists() and (not root.is_dir() or any(root.iterdir()))
        if occupied and root != Path(DataConfig.root):
            raise DataError(
                f"data.root {root} holds other files but no synthetic world ({WORLD_FILE}); for your own data "
                "set data.dataset (kitti, cityscapes, ddad or folder), or give a new or empty folder to render "
                "the synthetic world into"
            )
        log.warning(
            "data.root %s holds no synthetic world: rendering the '%s' preset into it (data.dataset=synthetic; "
            "set data.dataset for your own data)", root, preset,
        )
    ensure_world(root, preset)


def data_root(data_cfg: DataConfig, subset: str) -> Path:
    """``data.test_root`` for the test subset when set (Cityscapes: the raw layout), else ``data.root``."""
    if subset == "test" and data_cfg.test_root:
        return Path(data_cfg.test_root)
    return Path(data_cfg.root)


def build_dataset(
    data_cfg: DataConfig,
    split: str = "train",
    augment: bool = False,
    mask_dir: str | Path | None = None,
    seed: int = 0,
) -> SequenceDataset:
    """The dataset of ``data_cfg`` for one subset.

    Args:
        data_cfg: dataset kind, root, split name, resolution, offsets, augmentation switches.
        split: which list of the split: "train", "val" or "test".
        augment: flip + colour jitter per item (as switched on in ``data_cfg``); training only.
        mask_dir: folder of depth-inconsistency masks written by the masks stage (adds ``dynamic_mask``).
        seed: augmentation seed (items also depend on their index and the epoch, see ``set_epoch``).
    Returns:
        A map-style dataset of Samples (docs/design.md "The Sample").
    """
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split '{split}': expected one of {', '.join(SPLIT_FILES)}")
    kind = data_cfg.dataset
    if kind not in DATASETS:
        raise DataError(f"unknown dataset '{kind}' in data.dataset: expected one of {', '.join(DATASETS)}")
    root = data_root(data_cfg, split)
    offsets = list(data_cfg.frame_offsets)
    common = dict(
        offsets=offsets,
        height=data_cfg.height,
        width=data_cfg.width,
        augment=augment,
        color_jitter=data_cfg.color_jitter,
        hflip=data_cfg.hflip,
        mask_dir=mask_dir,
        seed=seed,
        frame_cache_mb=data_cfg.frame_cache_mb,
    )
    if kind == "synthetic":
        ensure_synthetic_world(root, data_cfg.synth_preset)
    if not root.exists():
        raise DataError(
            f"data root not found: {root}; set data.root=PATH to the {kind} dataset folder "
            "(or data.dataset to your kind of data)"
        )

    if kind in ("kitti", "synthetic"):
        from mfdepth.data.kitti import kitti_records

        split_file = resolve_split_file(root, data_cfg.split, split)
        records = kitti_records(
            root,
            split_file,
            offsets,
            split,
            data_cfg.split,
            data_cfg.camera,
            data_cfg.image_ext,
            data_cfg.average_intrinsics,
        )
        return SequenceDataset(records, name=kind, source=split_file, **common)
    if kind == "cityscapes":
        from mfdepth.data.cityscapes import cityscapes_records

        split_file = resolve_split_file(root, data_cfg.split, split)
        records = cityscapes_records(root, split_file, offsets)
        return SequenceDataset(records, name=kind, source=split_file, **common)
    if kind == "ddad":
        from mfdepth.data.ddad import DEFAULT_CAMERA, ddad_records

        camera = DEFAULT_CAMERA if data_cfg.camera.startswith("image_0") else data_cfg.camera
        records = ddad_records(root, split, offsets, camera, data_cfg.split)
        return SequenceDataset(records, name=kind, source=root, **common)

    from mfdepth.data.folder import folder_records, is_video, video_dataset

    if is_video(root):
        return video_dataset(
            root, stride=data_cfg.stride, intrinsics=data_cfg.intrinsics, focal_px=data_cfg.focal_px, **common
        )
    records = folder_records(root, offsets, data_cfg.stride, data_cfg.intrinsics, data_cfg.focal_px)
    return SequenceDataset(records, name=kind, source=root, **common)
