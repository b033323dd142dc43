"""Relative camera motion from classical two-view geometry, as a label-free prior for the pose net.

A pose net trained from scratch jointly with a depth net starts with no idea of the camera motion,
and the joint system often settles in a corner where neither learns (``docs/convergence.md``).
SIFT features, cross-checked matching and a RANSAC essential matrix give the rotation and the
*direction* of the translation of a frame pair within a few degrees, with no learning and no labels.
The training stages use them to supervise the pose net during a warm-up; the norm of the translation
(the scale) stays the networks' to learn.

The table is computed once per training split and cached as an ``.npz`` in the run directory.
Needs ``opencv-python-headless`` (a dependency of mfdepth).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mfdepth.data.files import save_npz_atomically, table_rows

log = logging.getLogger(__name__)

MIN_PARALLAX_PX = 0.75
"""Median feature displacement (pixels of the stored frame) below which a pair counts as a static
camera: the translation direction is then undefined and the prior is marked invalid."""

MIN_INLIERS = 12


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


class TwoViewPoseEstimator:
    """SIFT + brute-force cross-checked matching + RANSAC essential matrix + cheirality check.

    ``features`` caches keypoints per frame key, so each frame of a sequence is described once.
    """

    def __init__(self, max_features: int = 4000, ransac_threshold_px: float = 1.0):
        import cv2

        self._cv2 = cv2
        self.sift = cv2.SIFT_create(max_features)
        self.matcher = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True)
        self.ransac_threshold_px = ransac_threshold_px
        self._cache: dict = {}

    def features(self, key, image: np.ndarray):
        if key not in self._cache:
            self._cache[key] = self.sift.detectAndCompute(_gray(image), None)
        return self._cache[key]

    def relative_pose(self, target, source, K: np.ndarray, target_key=None, source_key=None):
        """``T_source_target`` (4x4, unit translation) between two ``(H, W, 3)`` uint8 frames, or None.

        Returns ``(T, info)``; ``T`` is None when the pair is static (median parallax below
        :data:`MIN_PARALLAX_PX`) or too few inliers support a solution. Once a pose is recovered,
        ``info`` also holds the inlier pixels ``inlier_target_px`` / ``inlier_source_px`` ``(N, 2)``.
        """
        cv2 = self._cv2
        kt, dt = self.features(target_key if target_key is not None else id(target), target)
        ks, ds = self.features(source_key if source_key is not None else id(source), source)
        info = {"matches": 0, "inliers": 0, "parallax_px": 0.0}
        if dt is None or ds is None or len(kt) < 8 or len(ks) < 8:
            return None, info
        matches = self.matcher.match(dt, ds)
        info["matches"] = len(matches)
        if len(matches) < 8:
            return None, info
        pt = np.float64([kt[m.queryIdx].pt for m in matches])
        ps = np.float64([ks[m.trainIdx].pt for m in matches])
        info["parallax_px"] = float(np.median(np.linalg.norm(pt - ps, axis=1)))
        if info["parallax_px"] < MIN_PARALLAX_PX:
            return None, info
        E, inliers = cv2.findEssentialMat(pt, ps, K, cv2.RANSAC, 0.999, self.ransac_threshold_px)
        if E is None or E.shape[0] < 3:
            return None, info
        count, R, t, mask = cv2.recoverPose(E[:3], pt, ps, K, mask=inliers)
        info["inliers"] = int(count)
        keep = mask.ravel() > 0
        info["inlier_target_px"], info["inlier_source_px"] = pt[keep], ps[keep]
        if count < MIN_INLIERS:
            return None, info
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = t.ravel() / max(np.linalg.norm(t), 1e-12)
        return T, info


def pose_prior_table(dataset, progress: bool = False) -> dict[str, np.ndarray]:
    """Classical relative poses for every sample of a :class:`~mfdepth.data.base.SequenceDataset`.

    Returns ``{"ids": (N,) str, "offsets": (S,) int, "poses": (N, S, 4, 4) float32 T_source_target with
    unit translation, "valid": (N, S) bool}`` over the dataset's non-zero offsets, computed on the frames
    as stored (unflipped) with the intrinsics scaled to that size.
    """
    from mfdepth.geometry import scale_intrinsics

    estimator = TwoViewPoseEstimator()
    offsets = [o for o in dataset.offsets if o != 0]
    ids, poses, valid = [], [], []
    records = dataset.records
    iterator = records
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(records, desc="two-view poses", dynamic_ncols=True)
    for record in iterator:
        images = [dataset.read_frame(ref) for ref in record.frames]
        h, w = images[0].shape[:2]
        K_net = dataset.network_intrinsics(record, (w, h)).double()
        K = scale_intrinsics(K_net, w / dataset.width, h / dataset.height).numpy()
        row_poses, row_valid = [], []
        for index, offset in enumerate(dataset.offsets):
            if offset == 0:
                continue
            T, _ = estimator.relative_pose(
                images[0], images[index], K, target_key=record.frames[0], source_key=record.frames[index]
            )
            row_valid.append(T is not None)
            row_poses.append(T if T is not None else np.eye(4))
        ids.append(record.sample_id)
        poses.append(np.stack(row_poses))
        valid.append(row_valid)
    return {
        "ids": np.array(ids),
        "offsets": np.array(offsets, dtype=np.int64),
        "poses": np.stack(poses).astype(np.float32),
        "valid": np.array(valid, dtype=bool),
    }


def load_or_compute_pose_priors(dataset, cache_path: str | Path, progress: bool = False) -> dict:
    """The table of :func:`pose_prior_table`, read from ``cache_path`` when it matches the dataset."""
    cache_path = Path(cache_path)
    wanted_ids = dataset.sample_ids
    offsets = [o for o in dataset.offsets if o != 0]
    if cache_path.is_file():
        try:
            with np.load(cache_path, allow_pickle=False) as data:
                table = {k: data[k] for k in ("ids", "offsets", "poses", "valid")}
            if list(table["ids"]) == wanted_ids and list(table["offsets"]) == offsets:
                return table
            log.info("pose prior cache %s is for other samples; recomputing", cache_path)
        except (OSError, ValueError, KeyError) as err:
            log.warning("pose prior cache %s is unreadable (%s); recomputing", cache_path, err)
    table = pose_prior_table(dataset, progress=progress)
    save_npz_atomically(cache_path, table)
    valid = table["valid"]
    log.info("two-view pose prior: %d of %d pairs usable", int(valid.sum()), valid.size)
    return table


def attach_pose_priors(dataset, table: dict) -> None:
    """Give ``dataset`` the prior so each Sample carries ``pose_prior`` ``(S, 4, 4)`` and ``pose_prior_valid`` ``(S,)``."""
    order = table_rows(table["ids"], dataset.sample_ids, "pose prior")
    dataset.pose_priors = (
        torch.from_numpy(np.ascontiguousarray(table["poses"][order])),
        torch.from_numpy(np.ascontiguousarray(table["valid"][order])),
    )
