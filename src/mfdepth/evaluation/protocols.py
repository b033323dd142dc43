"""Evaluation protocols: which ground-truth pixels count, how a prediction is brought onto the GT grid, and
the dataset-level metrics, accumulated one image at a time.

Every protocol keeps the GT pixels with ``min_depth < gt < max_depth`` (strict, as Monodepth2 and
ManyDepth do; 0 = no GT) inside a crop box of the GT image:

* ``kitti``: the Garg crop (``crop="eigen"`` for the Eigen crop), 80 m cap.
* ``cityscapes``: GT of the top 75% of the frame (the ego car's bonnet removed, which is how
  ``mfdepth.data`` delivers it), then ManyDepth's central region (see :func:`crop_box`), 80 m cap.
* ``synthetic``, ``folder``: the whole image, the cap only.

Per image, in Monodepth2's order: resize the prediction to the GT size; take the valid pixels;
``ratio = median(gt) / median(pred)`` over them; multiply by it when median scaling is on; clamp the
prediction into ``[min_depth, max_depth]``; compute the metrics. Dataset metrics are the mean of the
per-image metrics. With a motion mask the same scaled prediction is also scored on the static and on the
moving pixels alone (the ratio always comes from all valid pixels, so an object cannot rescale itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mfdepth.evaluation.metrics import METRIC_NAMES, compute_depth_metrics, ratio_statistics

PROTOCOLS = ("kitti", "cityscapes", "synthetic", "folder")
CROPS = ("garg", "eigen", "cityscapes", None)
DEFAULT_CROP = {"kitti": "garg", "cityscapes": "cityscapes", "synthetic": None, "folder": None}
ROWS = ("all", "static", "moving")

GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
"""(top, bottom, left, right) fractions of the KITTI GT size (Garg et al., ECCV 2016)."""
EIGEN_CROP = (0.3324324, 0.91351351, 0.0359477, 0.96405229)
"""(top, bottom, left, right) fractions of the KITTI GT size (Eigen et al., NIPS 2014)."""
CITYSCAPES_KEEP_TOP = 0.75
"""Fraction of the raw Cityscapes rows kept; must equal ``mfdepth.data.cityscapes.KEEP_TOP``."""
CITYSCAPES_REGION = (1.0 / 3.0, 1.0, 0.09375, 0.90625)
"""(top, bottom, left, right) fractions of the bonnet-free Cityscapes GT: ManyDepth scores
``gt[256:, 192:1856]`` of the 768x2048 map, i.e. the lower two thirds of its rows and the central 1664
of 2048 columns (rows 256-767 and columns 192-1855 of the raw 1024x2048 frame)."""


# ---------------------------------------------------------------------------------------------
# Crops and masks


def crop_box(shape: tuple[int, int], crop: str | None) -> tuple[int, int, int, int]:
    """Pixel box ``(top, bottom, left, right)`` (end-exclusive) that ``crop`` keeps of a GT map of ``shape``.

    Args:
        shape: ``(H, W)`` of the ground-truth map.
        crop: ``"garg"`` / ``"eigen"`` (KITTI, full GT frame; fractions truncated to integers as in
            Monodepth2), ``"cityscapes"`` (the bonnet-free GT of ``(round(0.75 H_raw), W)``; fractions
            rounded, giving rows [256, 768) and columns [192, 1856) of a 768x2048 map), or None (all).
    """
    height, width = int(shape[0]), int(shape[1])
    if crop is None:
        return 0, height, 0, width
    if crop in ("garg", "eigen"):
        fractions = GARG_CROP if crop == "garg" else EIGEN_CROP
        top, bottom, left, right = (int(f * n) for f, n in zip(fractions, (height, height, width, width)))
        return top, bottom, left, right
    if crop == "cityscapes":
        top, bottom, left, right = CITYSCAPES_REGION
        return (int(round(top * height)), int(round(bottom * height)),
                int(round(left * width)), int(round(right * width)))
    raise ValueError(f"unknown crop {crop!r}; use one of garg, eigen, cityscapes or None")


def depth_range_mask(gt_depth, min_depth: float = 1e-3, max_depth: float = 80.0) -> np.ndarray:
    """``(H, W)`` bool: GT strictly inside ``(min_depth, max_depth)`` metres (0, NaN and inf are excluded)."""
    gt_depth = np.asarray(gt_depth, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (gt_depth > min_depth) & (gt_depth < max_depth)


def eval_mask(gt_depth, min_depth: float = 1e-3, max_depth: float = 80.0, crop: str | None = None) -> np.ndarray:
    """``(H, W)`` bool: the GT pixels an evaluation scores, the depth range inside :func:`crop_box`."""
    gt_depth = _as_image(gt_depth, "gt_depth")
    top, bottom, left, right = crop_box(gt_depth.shape, crop)
    inside = np.zeros(gt_depth.shape, dtype=bool)
    inside[top:bottom, left:right] = True
    return depth_range_mask(gt_depth, min_depth, max_depth) & inside


def kitti_eval_mask(gt_depth, min_depth: float = 1e-3, max_depth: float = 80.0,
                    crop: str | None = "garg") -> np.ndarray:
    """``(H, W)`` bool valid mask of a KITTI GT map ``(H, W)`` (metres): range and Garg/Eigen/no crop."""
    if crop not in ("garg", "eigen", None):
        raise ValueError(f"KITTI crop must be garg, eigen or None, not {crop!r}")
    return eval_mask(gt_depth, min_depth, max_depth, crop)


def cityscapes_eval_mask(gt_depth, min_depth: float = 1e-3, max_depth: float = 80.0) -> np.ndarray:
    """``(H, W)`` bool valid mask of a bonnet-free Cityscapes GT map (metres): range and central region."""
    return eval_mask(gt_depth, min_depth, max_depth, "cityscapes")


def remove_cityscapes_bonnet(depth) -> np.ndarray:
    """Top ``round(0.75 H)`` rows of a raw Cityscapes map ``(H, W, ...)``: 1024x2048 -> 768x2048."""
    depth = np.asarray(depth)
    return depth[: int(round(depth.shape[0] * CITYSCAPES_KEEP_TOP))]


def cityscapes_crop(depth, bonnet_removed: bool = True) -> np.ndarray:
    """The region of a Cityscapes map that ManyDepth scores ("top 75%, then the central region").

    Args:
        depth: ``(H, W)`` map; bonnet-free ``(round(0.75 H_raw), W)`` when ``bonnet_removed``, else the raw
            frame, whose top 75% is taken first.

    Returns:
        The ``crop_box(..., "cityscapes")`` slice: 512x1664 for a 768x2048 (or raw 1024x2048) map.
    """
    depth = np.asarray(depth)
    if not bonnet_removed:
        depth = remove_cityscapes_bonnet(depth)
    top, bottom, left, right = crop_box(depth.shape[:2], "cityscapes")
    return depth[top:bottom, left:right]


def resolve_crop(protocol: str, crop: str | None = "auto") -> str | None:
    """The crop to use: ``"auto"`` picks the protocol's own (kitti: garg, cityscapes: cityscapes, else None)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if crop == "auto":
        return DEFAULT_CROP[protocol]
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; use auto, garg, eigen, cityscapes or None")
    return crop


# ---------------------------------------------------------------------------------------------
# Resizing onto the GT grid


def _as_image(array, name: str) -> np.ndarray:
    """A float64 ``(H, W)`` array from a numpy array or torch tensor, dropping leading size-1 axes."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array, dtype=np.float64)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{name}: expected an (H, W) map (leading size-1 axes allowed), got shape {array.shape}")
    return array


def resize_prediction(pred, shape: tuple[int, int], space: str = "inverse_depth") -> np.ndarray:
    """Bilinear resize of a predicted depth map ``(h, w)`` (metres, > 0) to the GT size ``shape = (H, W)``.

    Uses ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` in float64, the
    half-pixel-centre rule of OpenCV's ``INTER_LINEAR`` that Monodepth2 and ManyDepth resize with.

    Args:
        space: ``"inverse_depth"`` interpolates 1/depth and inverts back. Because the network's disparity
            is an affine function of 1/depth, this equals those projects' resizing of the disparity
            (needed to reproduce published numbers). ``"depth"`` interpolates depth itself.

    Returns:
        ``(H, W)`` float64 depth in metres; the input itself when it already has that size.
    """
    pred = _as_image(pred, "pred")
    shape = (int(shape[0]), int(shape[1]))
    if space not in ("inverse_depth", "depth"):
        raise ValueError(f"unknown resize space {space!r}; use inverse_depth or depth")
    if pred.shape == shape:
        return pred
    if space == "inverse_depth" and not np.all(pred > 0):
        raise ValueError("pred: resizing in inverse depth needs positive depths everywhere")
    import torch  # here, so that importing mfdepth.evaluation stays free of torch
    import torch.nn.functional as F

    values = 1.0 / pred if space == "inverse_depth" else pred
    resized = F.interpolate(torch.from_numpy(values)[None, None], size=shape, mode="bilinear",
                            align_corners=False)[0, 0].numpy()
    return 1.0 / resized if space == "inverse_depth" else resized


def resize_mask_nearest(mask, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a mask ``(h, w)`` to ``shape = (H, W)``; returns bool, True where >= 0.5.

    Output pixel ``i`` takes input pixel ``floor((i + 0.5) * h / H)`` (pixel centres aligned), so
    masks never bleed into new values the way interpolation would.
    """
    mask = _as_image(mask, "mask") >= 0.5
    height, width = int(shape[0]), int(shape[1])
    if mask.shape == (height, width):
        return mask
    rows = np.minimum(((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.int64), mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


# ---------------------------------------------------------------------------------------------
# Dataset-level results


@dataclass
class EvaluationResult:
    """Per-image-averaged depth metrics of a dataset.

    Attributes:
        metrics: row (``all``, ``static``, ``moving``) -> metric name -> mean over the row's images; a row
            is present only when at least one image had pixels of it.
        image_counts: row -> number of images averaged in that row.
        num_frames: frames given to the evaluation, skipped ones included.
        skipped_no_previous: multi-frame frames left out because they had no previous frame.
        skipped_no_valid_gt: frames left out because no GT pixel survived the crop and depth cap.
        images_without_moving / images_without_static: frames with a motion mask but no valid moving /
            static pixel, left out of that row only.
        ratio_median, ratio_std: median of the per-image ratios ``median(gt) / median(pred)`` and
            ``std(ratios / ratio_median)`` (Monodepth2's print-out); also filled with median scaling off,
            where they say how far the prediction is from metric scale. None when nothing was evaluated.
        mask_quality: optional :class:`~mfdepth.evaluation.metrics.MaskQualityAccumulator` output, for
            the caller to attach.
    """

    protocol: str
    crop: str | None
    median_scaling: bool
    min_depth: float
    max_depth: float
    metrics: dict[str, dict[str, float]]
    image_counts: dict[str, int]
    num_frames: int
    skipped_no_previous: int = 0
    skipped_no_valid_gt: int = 0
    images_without_moving: int = 0
    images_without_static: int = 0
    ratio_median: float | None = None
    ratio_std: float | None = None
    mask_quality: dict[str, float | int] | None = field(default=None)

    @property
    def num_evaluated(self) -> int:
        return self.image_counts.get("all", 0)

    def to_dict(self) -> dict:
        """Plain JSON-ready data; undefined values (NaN) become None."""
        data = {
            "protocol": self.protocol,
            "crop": self.crop,
            "median_scaling": self.median_scaling,
            "min_depth": self.min_depth,
            "max_depth": self.max_depth,
            "metrics": {row: dict(values) for row, values in self.metrics.items()},
            "image_counts": dict(self.image_counts),
            "num_frames": self.num_frames,
            "num_evaluated": self.num_evaluated,
            "skipped_no_previous": self.skipped_no_previous,
            "skipped_no_valid_gt": self.skipped_no_valid_gt,
            "images_without_moving": self.images_without_moving,
            "images_without_static": self.images_without_static,
            "scale_ratio": {"median": self.ratio_median, "std": self.ratio_std},
            "mask_quality": dict(self.mask_quality) if self.mask_quality is not None else None,
        }
        return _nan_to_none(data)


def _nan_to_none(value):
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class DepthMetricAccumulator:
    """Streams a dataset through one protocol, keeping only running sums (one ratio float per image).

    Usage: ``update(pred, gt, motion_mask)`` for every frame, then ``compute()``.
    """

    def __init__(self, protocol: str = "synthetic", median_scaling: bool = True, min_depth: float = 1e-3,
                 max_depth: float = 80.0, crop: str | None = "auto", resize_space: str = "inverse_depth"):
        """
        Args:
            protocol: kitti, cityscapes, synthetic or folder.
            median_scaling: multiply each prediction by its image's ``median(gt) / median(pred)``.
            min_depth, max_depth: GT range kept (strict) and the clamp of the prediction, metres.
            crop: ``"auto"`` (the protocol's own), garg, eigen, cityscapes or None.
            resize_space: how predictions are resized to the GT size (see :func:`resize_prediction`).
        """
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth} and {max_depth}")
        self.protocol = protocol
        self.crop = resolve_crop(protocol, crop)
        self.median_scaling = median_scaling
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.resize_space = resize_space
        self._sums = {row: np.zeros(len(METRIC_NAMES), dtype=np.float64) for row in ROWS}
        self._counts = dict.fromkeys(ROWS, 0)
        self._ratios: list[float] = []
        self.num_frames = 0
        self.skipped_no_previous = 0
        self.skipped_no_valid_gt = 0
        self.images_without_moving = 0
        self.images_without_static = 0

    @classmethod
    def from_config(cls, eval_config, crop: str | None = "auto") -> DepthMetricAccumulator:
        """From a :class:`mfdepth.config.EvalConfig` (protocol, median_scaling, min_depth, max_depth)."""
        return cls(protocol=eval_config.protocol, median_scaling=eval_config.median_scaling,
                   min_depth=eval_config.min_depth, max_depth=eval_config.max_depth, crop=crop)

    def update(self, pred, gt, motion_mask=None, has_previous: bool = True) -> dict[str, dict[str, float]]:
        """Score one frame.

        Args:
            pred: ``(h, w)`` predicted depth in metres (> 0), any resolution (leading size-1 axes allowed).
            gt: ``(H, W)`` ground-truth depth in metres, 0 = none, at its native resolution.
            motion_mask: optional ``(h', w')`` true motion mask, 1 = moving (nearest-resized to ``(H, W)``).
            has_previous: False for a multi-frame model's frame that had no previous frame; it is counted
                in ``skipped_no_previous`` and not scored.

        Returns:
            This frame's metrics per row (``all``, and ``static`` / ``moving`` when scored); empty when the
            frame was skipped.
        """
        frame = self.num_frames
        self.num_frames += 1
        if not has_previous:
            self.skipped_no_previous += 1
            return {}
        gt = _as_image(gt, "gt")
        pred = _as_image(pred, "pred")
        if not (np.all(np.isfinite(pred)) and np.all(pred > 0)):
            raise ValueError(f"frame {frame}: the prediction holds non-finite or non-positive depths")
        valid = eval_mask(gt, self.min_depth, self.max_depth, self.crop)
        if not valid.any():
            self.skipped_no_valid_gt += 1
            return {}
        pred = resize_prediction(pred, gt.shape, self.resize_space)

        gt_valid = gt[valid]
        pred_valid = pred[valid]
        ratio = float(np.median(gt_valid) / np.median(pred_valid))
        self._ratios.append(ratio)
        if self.median_scaling:
            pred_valid = pred_valid * ratio
        pred_valid = np.clip(pred_valid, self.min_depth, self.max_depth)

        rows = {"all": compute_depth_metrics(gt_valid, pred_valid)}
        if motion_mask is not None:
            moving = resize_mask_nearest(motion_mask, gt.shape)[valid]
            if moving.any():
                rows["moving"] = compute_depth_metrics(gt_valid[moving], pred_valid[moving])
            else:
                self.images_without_moving += 1
            if not moving.all():
                rows["static"] = compute_depth_metrics(gt_valid[~moving], pred_valid[~moving])
            else:
                self.images_without_static += 1
        for row, values in rows.items():
            self._sums[row] += [values[name] for name in METRIC_NAMES]
            self._counts[row] += 1
        return rows

    def compute(self) -> EvaluationResult:
        """Means over the scored images so far (the accumulator can keep going afterwards)."""
        metrics = {
            row: {name: float(total) / self._counts[row] for name, total in zip(METRIC_NAMES, self._sums[row])}
            for row in ROWS
            if self._counts[row] > 0
        }
        ratio_median, ratio_std = ratio_statistics(self._ratios) if self._ratios else (None, None)
        return EvaluationResult(
            protocol=self.protocol,
            crop=self.crop,
            median_scaling=self.median_scaling,
            min_depth=self.min_depth,
            max_depth=self.max_depth,
            metrics=metrics,
            image_counts={row: count for row, count in self._counts.items() if count > 0},
            num_frames=self.num_frames,
            skipped_no_previous=self.skipped_no_previous,
            skipped_no_valid_gt=self.skipped_no_valid_gt,
            images_without_moving=self.images_without_moving,
            images_without_static=self.images_without_static,
            ratio_median=ratio_median,
            ratio_std=ratio_std,
        )


def evaluate_depth_maps(
    preds: Sequence,
    gts: Sequence,
    protocol: str = "synthetic",
    median_scaling: bool = True,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    motion_masks: Sequence | None = None,
    has_previous: Sequence[bool] | None = None,
    crop: str | None = "auto",
    resize_space: str = "inverse_depth",
) -> EvaluationResult:
    """Per-image-averaged metrics of a list of predictions against their GT maps.

    Args:
        preds: N predicted depth maps ``(h_i, w_i)`` in metres; sizes may differ (ragged lists are fine).
        gts: N GT depth maps ``(H_i, W_i)`` in metres, 0 = none.
        motion_masks: optional N true motion masks (1 = moving), or None entries for frames without one;
            adds the ``static`` and ``moving`` rows.
        has_previous: optional N flags; False frames are counted in ``skipped_no_previous``, not scored.
        Others: as :class:`DepthMetricAccumulator`.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground-truth maps")
    for name, values in (("motion_masks", motion_masks), ("has_previous", has_previous)):
        if values is not None and len(values) != len(gts):
            raise ValueError(f"{name}: {len(values)} entries for {len(gts)} frames")
    accumulator = DepthMetricAccumulator(protocol, median_scaling, min_depth, max_depth, crop, resize_space)
    for index, (pred, gt) in enumerate(zip(preds, gts)):
        accumulator.update(
            pred,
            gt,
            motion_mask=None if motion_masks is None else motion_masks[index],
            has_previous=True if has_previous is None else bool(has_previous[index]),
        )
    return accumulator.compute()
