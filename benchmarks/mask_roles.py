"""What the masks stage's depth inconsistency masks flag on the training frames, by drive and by object role.

The masks stage writes one mask per training frame (``RUN/masks/``) and reports one IoU over all of them.
The synthetic world knows each drive's profile (normal, stop-and-go, fast) and each object's role (lead
car, oncoming, crossing, pedestrian, parked...), so this script splits that IoU:

* per drive: IoU, precision, recall and the fraction of pixels flagged; and over all drives, the frames
  whose camera stands (under 5 cm from the previous frame, from the true poses) apart from the others;
* per role of a moving object: the share of its pixels flagged (recall), and of objects at rest the same
  (false alarms on things that could move);
* where the false positives lie: on static instances by role, or on the background (no instance), the
  latter split by true depth (near < 10 m, 10-30 m, far > 30 m, sky).

Masks are compared at the world's resolution (each mask resized with nearest neighbour), so the overall
IoU can differ from the masks stage's figure (computed at the network's resolution) in the last digit.

    python benchmarks/mask_roles.py RUN_DIR --data /tmp/world --name NAME

Reads only PNG masks and the world's ground truth (no network). Writes
``benchmarks/results/mask_roles_<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mfdepth.data.base import mask_path_for  # noqa: E402
from mfdepth.data.files import read_mask_png  # noqa: E402
from mfdepth.evaluation.metrics import MaskQualityAccumulator  # noqa: E402
from mfdepth.run_layout import masks_dir  # noqa: E402
from moving_objects import instance_map, instance_roles  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEPTH_BANDS = ((0.0, 10.0, "near (< 10 m)"), (10.0, 30.0, "10-30 m"), (30.0, np.inf, "far (> 30 m)"))
STANDING_METRES = 0.05


def scores(quality: MaskQualityAccumulator) -> dict:
    """The accumulator's IoU, precision and recall, its frame count and the fraction of pixels flagged."""
    counts = quality.compute()
    flagged = counts["true_positive"] + counts["false_positive"]
    pixels = flagged + counts["false_negative"] + counts["true_negative"]
    return {"frames": counts["num_images"], "iou": counts["iou"], "precision": counts["precision"],
            "recall": counts["recall"], "flagged": flagged / pixels}


def score_table(title: str, rows: dict[str, dict]) -> list[str]:
    """Markdown lines of a table of :func:`scores` rows, one per key."""
    lines = ["", f"| {title} | frames | IoU | precision | recall | flagged |", "|---|---|---|---|---|---|"]
    return lines + [f"| {name} | {r['frames']} | {r['iou']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                    f"{100 * r['flagged']:.1f}% |" for name, r in rows.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory whose masks stage has run")
    parser.add_argument("--data", required=True, help="the synthetic world the run trained on")
    parser.add_argument("--name", required=True, help="results are written as mask_roles_<name>.*")
    parser.add_argument("--split", default="synthetic", help="split folder under DATA/splits")
    args = parser.parse_args(argv)
    root, mask_root = Path(args.data), masks_dir(args.run_dir)
    split_file = root / "splits" / args.split / "train_files.txt"
    if not split_file.is_file():
        raise SystemExit(f"no training split at {split_file}: pass --data, the world the run trained on")
    sample_ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    profiles = {d["folder"]: d["profile"] for d in json.loads((root / "world.json").read_text())["drives"]}

    overall = MaskQualityAccumulator()
    per_drive: dict[str, MaskQualityAccumulator] = defaultdict(MaskQualityAccumulator)
    per_camera: dict[str, MaskQualityAccumulator] = defaultdict(MaskQualityAccumulator)
    role_pixels: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(2, dtype=np.int64))  # flagged, all
    false_positive_where: dict[str, int] = defaultdict(int)
    roles_cache: dict = {}
    poses_cache: dict = {}
    for sample_id in sample_ids:
        folder, frame = sample_id.split()[:2]
        path = mask_path_for(mask_root, sample_id)
        if not path.is_file():
            raise SystemExit(f"mask not found: {path} (run the masks stage of {args.run_dir} first)")
        stem = f"{int(frame):010d}"
        truth = read_mask_png(root / folder / "gt" / "dynamic" / f"{stem}.png")
        instance = instance_map(root, sample_id)
        depth = np.load(root / folder / "gt" / "depth" / f"{stem}.npy", allow_pickle=False)
        flagged_small = Image.open(path).convert("L")
        flagged = np.asarray(flagged_small.resize(truth.shape[::-1], Image.NEAREST)) > 0
        if folder not in poses_cache:
            poses_cache[folder] = np.loadtxt(root / folder / "gt" / "poses.txt").reshape(-1, 3, 4)
        positions = poses_cache[folder][:, :, 3]
        index = int(frame)
        travelled = np.linalg.norm(positions[index] - positions[index - 1]) if index > 0 else np.inf
        camera = "camera standing" if travelled < STANDING_METRES else "camera moving"
        for quality in (overall, per_drive[folder], per_camera[camera]):
            quality.update(flagged, truth)
        roles = instance_roles(root, folder, roles_cache)
        for ident in np.unique(instance[instance > 0]):
            for in_motion in (True, False):
                pixels = (instance == ident) & (truth if in_motion else ~truth)
                if pixels.sum() == 0:
                    continue
                role = roles.get(int(ident), "unknown") + ("" if in_motion else " (at rest)")
                role_pixels[role] += np.array([int((flagged & pixels).sum()), int(pixels.sum())])
        wrong = flagged & ~truth
        for ident in np.unique(instance[wrong & (instance > 0)]):
            false_positive_where[roles.get(int(ident), "unknown") + " (at rest)"] += int((wrong & (instance == ident)).sum())
        background = wrong & (instance == 0)
        false_positive_where["background, sky"] += int((background & (depth <= 0)).sum())
        for low, high, band in DEPTH_BANDS:
            in_band = (depth > 0) & (depth >= low) & (depth < high)
            false_positive_where[f"background, {band}"] += int((background & in_band).sum())

    all_false = max(overall.false_positive, 1)
    overall = scores(overall)
    drives = {f"{folder} ({profiles.get(folder, '?')})": scores(q) for folder, q in sorted(per_drive.items())}
    camera_motion = {name: scores(q) for name, q in sorted(per_camera.items())}
    roles = {role: {"flagged": int(c[0]), "pixels": int(c[1]), "share_flagged": c[0] / c[1]}
             for role, c in sorted(role_pixels.items())}
    where = {k: {"pixels": v, "share_of_false_positives": v / all_false}
             for k, v in sorted(false_positive_where.items(), key=lambda kv: -kv[1]) if v}
    payload = {"run_dir": str(args.run_dir), "frames": len(sample_ids), "overall": overall, "drives": drives,
               "camera_motion": camera_motion,
               "roles": roles, "false_positives": where,
               "command": "python benchmarks/mask_roles.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"mask_roles_{args.name}.json").write_text(json.dumps(payload, indent=2))

    lines = [f"# Mask by drive and role: {args.name}", "",
             f"Masks of `{args.run_dir}` on {len(sample_ids)} training frames, at the world's resolution. "
             f"Overall IoU {overall['iou']:.3f}, precision {overall['precision']:.3f}, recall "
             f"{overall['recall']:.3f}, {100 * overall['flagged']:.1f}% of pixels flagged."]
    lines += score_table("drive (profile)", drives)
    lines += score_table(f"camera (standing: under {100 * STANDING_METRES:.0f} cm from the previous frame)",
                         camera_motion)
    lines += ["", "| object role | pixels | share flagged |", "|---|---|---|"]
    lines += [f"| {role} | {r['pixels']} | {r['share_flagged']:.3f} |" for role, r in roles.items()]
    lines += ["", "| false positives on | pixels | share of false positives |", "|---|---|---|"]
    lines += [f"| {k} | {w['pixels']} | {w['share_of_false_positives']:.3f} |" for k, w in where.items()]
    lines += ["", f"Command: `{payload['command']}`"]
    (RESULTS / f"mask_roles_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
