"""Is sparse depth triangulated from the two-view pose prior good enough to supervise the depth net?

The recipe already runs SIFT + RANSAC essential matrix on every training pair for the pose prior
(``mfdepth.data.two_view``). Its inlier matches, triangulated with that pose, give a sparse depth up
to scale for free, which could supervise the single-frame net from its first step. This measures, on
the embedded world's training split (stored frames, true depth), how many points each pair yields
and how far they are from the truth after per-pair median scaling, for several minimum parallax
angles (small angles: far points and objects moving with the camera, triangulated badly).

    python benchmarks/triangulated_depth.py [--data /tmp/world] [--pairs 60]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mfdepth.config import Config, apply_overrides
from mfdepth.data.factory import build_dataset
from mfdepth.data.two_view import TwoViewPoseEstimator
from mfdepth.geometry import scale_intrinsics

RESULTS = Path(__file__).resolve().parent / "results"
ANGLES_DEG = (0.0, 0.5, 1.0, 2.0)


def triangulate(pt: np.ndarray, ps: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray):
    """Depths in the target camera and parallax angles (deg) of matched pixels ``(N, 2)``."""
    import cv2

    P0 = K @ np.hstack([np.eye(3), np.zeros((3, 1))])
    P1 = K @ np.hstack([R, t.reshape(3, 1)])
    X = cv2.triangulatePoints(P0, P1, pt.T, ps.T)
    X = (X[:3] / X[3]).T
    centre = -R.T @ t.ravel()
    ray0 = X / np.linalg.norm(X, axis=1, keepdims=True)
    ray1 = (X - centre) / np.linalg.norm(X - centre, axis=1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip((ray0 * ray1).sum(1), -1.0, 1.0)))
    return X[:, 2], angle


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--pairs", type=int, default=60, help="training samples to use (both sources each)")
    args = parser.parse_args()
    config = apply_overrides(Config(), [f"data.root={args.data}"])
    dataset = build_dataset(config.data, "train", augment=False)
    estimator = TwoViewPoseEstimator()
    per_angle = {a: {"points": [], "absrel": []} for a in ANGLES_DEG}
    for record in dataset.records[: args.pairs]:
        images = [dataset.read_frame(ref) for ref in record.frames]
        h, w = images[0].shape[:2]
        K = scale_intrinsics(dataset.network_intrinsics(record, (w, h)).double(), w / dataset.width,
                             h / dataset.height).numpy()
        truth = np.asarray(record.depth_gt(), np.float32)
        truth = truth.reshape(truth.shape[-2:])
        for index, offset in enumerate(dataset.offsets):
            if offset == 0:
                continue
            T, info = estimator.relative_pose(images[0], images[index], K, record.frames[0], record.frames[index])
            if T is None:  # static pair or too few inliers: the prior skips it too
                continue
            pt, ps = info["inlier_target_px"], info["inlier_source_px"]
            R, t = T[:3, :3], T[:3, 3]
            depth, angle = triangulate(pt, ps, K, R, t)
            gh, gw = truth.shape
            u = np.clip((pt[:, 0] / w * gw).astype(int), 0, gw - 1)
            v = np.clip((pt[:, 1] / h * gh).astype(int), 0, gh - 1)
            true = truth[v, u]
            for a in ANGLES_DEG:
                use = (depth > 0) & (angle > a) & (true > 0)
                per_angle[a]["points"].append(int(use.sum()))
                if use.sum() >= 5:
                    scaled = depth[use] * np.median(true[use] / depth[use])
                    per_angle[a]["absrel"].append(float(np.mean(np.abs(scaled - true[use]) / true[use])))
    rows = []
    for a in ANGLES_DEG:
        points, absrel = np.array(per_angle[a]["points"]), np.array(per_angle[a]["absrel"])
        rows.append({"min_angle_deg": a, "pairs": int(len(points)), "points_median": float(np.median(points)),
                     "pairs_with_5_points": int(len(absrel)), "absrel_median": float(np.median(absrel)),
                     "absrel_mean": float(np.mean(absrel))})
    command = f"python benchmarks/triangulated_depth.py --data {args.data} --pairs {args.pairs}"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "triangulated_depth.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    lines = [f"# Triangulated two-view inliers against the true depth ({args.pairs} training samples, "
             f"frames as stored, {h}x{w})", "",
             "| min parallax angle | points per pair (median) | pairs with >= 5 points | AbsRel, median-scaled per pair (median / mean) |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['min_angle_deg']} deg | {r['points_median']:.0f} | {r['pairs_with_5_points']} of "
                     f"{r['pairs']} | {r['absrel_median']:.3f} / {r['absrel_mean']:.3f} |")
    lines += ["", f"Command: `{command}`"]
    (RESULTS / "triangulated_depth.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
