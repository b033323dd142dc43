"""Which objects carry the moving-pixel error, and what the depth inconsistency mask sees on each.

The synthetic world knows every object's role (lead car, oncoming, crossing, pedestrian, parked...), so
each true object instance of the test split is scored on its own, for the checkpoint's single-frame net
(S0, or the teacher S*), its multi-frame net (M0 or the student) and, where it has one, the multi-frame
net's lowest-cost depth (the static-world match the mask rule is meant to expose):

* pixels of the role (all instances, all test frames), median true depth;
* per net, the median over instances of the instance's median predicted / true depth ratio, and the
  AbsRel over the role's pixels (each prediction median-scaled per image on the static pixels, resized
  bilinearly to the ground truth's size as the evaluation protocol does);
* the median over instances of D_multi / D_single: the quantity the paper's rule thresholds (flagged
  above 2 or below 0.85).

Static instances (parked cars, standing pedestrians) are listed too, as the same kind of object at rest.

    python benchmarks/moving_objects.py RUN/checkpoints/pretrain.ckpt --data /tmp/world --name NAME

Writes ``benchmarks/results/moving_objects_<name>.json`` and ``.md``.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from error_sources import RESULTS, checkpoint_benchmark, predict  # noqa: E402
from mfdepth.data import build_dataset  # noqa: E402
from mfdepth.data.base import collate_samples  # noqa: E402
from mfdepth.data.files import read_mask_png  # noqa: E402
from mfdepth.synth.scene import build_scene  # noqa: E402

MAX_DEPTH = 80.0


def instance_map(root: Path, sample_id: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """The world's object-instance ids of a sample's target frame, ``(H, W)`` int64 (0 = background),
    resized to ``size`` ``(height, width)`` by nearest neighbour when given."""
    folder, frame = sample_id.split()[:2]
    image = Image.open(root / folder / "gt" / "instance" / f"{int(frame):010d}.png")
    if size is not None:
        image = image.resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(image).astype(np.int64)


def instance_roles(root: Path, folder: str, cache: dict) -> dict[int, str]:
    """Instance id -> role of one drive, from the scene the world was rendered from."""
    if folder not in cache:
        info = json.loads((root / "world.json").read_text())
        drive = next(d for d in info["drives"] if d["folder"] == folder)
        scene = build_scene(drive["seed"], info["frames"], drive["profile"])
        cache[folder] = {o.instance: o.role for o in scene.objects if o.instance}
    return cache[folder]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, config, nets = checkpoint_benchmark(__doc__.split("\n\n")[0], argv)
    root = Path(args.data)
    dataset = build_dataset(config.data, "test", augment=False)
    batch = collate_samples([dataset[i] for i in range(len(dataset))])
    depths = predict(nets, batch, lowest_cost=True)

    stats: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    roles_cache: dict = {}
    for k, sample_id in enumerate(dataset.sample_ids):
        folder, frame = sample_id.split()[:2]
        gt = batch["depth_gt"][k][0].numpy()
        valid = (gt > 1e-3) & (gt < MAX_DEPTH)
        instance = instance_map(root, sample_id)
        moving = read_mask_png(root / folder / "gt" / "dynamic" / f"{int(frame):010d}.png") > 0
        if instance.shape != gt.shape or moving.shape != gt.shape:
            raise ValueError(f"{folder} frame {frame}: instance / motion masks differ in size from the depth")
        static = valid & ~moving
        scaled = {}
        for name, depth in depths.items():
            mode = "nearest" if name == "lowest_cost" else "bilinear"
            pred = F.interpolate(depth[k:k + 1].float(), size=gt.shape, mode=mode)[0, 0].numpy()
            scaled[name] = pred * np.median(gt[static]) / np.median(pred[static])
        roles = instance_roles(root, folder, roles_cache)
        for ident in np.unique(instance[instance > 0]):
            for in_motion in (True, False):
                pixels = (instance == ident) & valid & (moving if in_motion else ~moving)
                if pixels.sum() < 5:
                    continue
                role = roles.get(int(ident), "unknown") + ("" if in_motion else " (at rest)")
                entry = stats[role]
                entry["pixels"].append(int(pixels.sum()))
                entry["true_depth"].append(float(np.median(gt[pixels])))
                for name, pred in scaled.items():
                    entry[f"ratio_{name}"].append(float(np.median(pred[pixels] / gt[pixels])))
                    entry[f"abs_error_{name}"].append(float((np.abs(pred[pixels] - gt[pixels]) / gt[pixels]).sum()))
                if "multi" in scaled:
                    entry["multi_over_single"].append(float(np.median(scaled["multi"][pixels] / scaled["single"][pixels])))

    moving_pixels = sum(sum(s["pixels"]) for r, s in stats.items() if not r.endswith("(at rest)"))
    rows = {}
    for role, entry in sorted(stats.items()):
        count = sum(entry["pixels"])
        row = {"instances_x_frames": len(entry["pixels"]), "pixels": count,
               "share_of_moving_pixels": None if role.endswith("(at rest)") else count / moving_pixels,
               "median_true_depth": float(np.median(entry["true_depth"]))}
        for name in depths:
            row[f"median_ratio_{name}"] = float(np.median(entry[f"ratio_{name}"]))
            row[f"abs_rel_{name}"] = float(np.sum(entry[f"abs_error_{name}"]) / count)
        if entry["multi_over_single"]:
            row["median_multi_over_single"] = float(np.median(entry["multi_over_single"]))
        rows[role] = row
    payload = {"checkpoint": args.checkpoint, "frames": len(dataset), "networks": list(depths), "roles": rows,
               "command": "python benchmarks/moving_objects.py " + " ".join(argv)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"moving_objects_{args.name}.json").write_text(json.dumps(payload, indent=2))

    def cell(value, fmt=".2f"):
        return "-" if value is None else format(value, fmt)

    names = list(depths)
    lines = [f"# Moving objects: {args.name}", "",
             f"Checkpoint `{args.checkpoint}`, {len(dataset)} test frames. Ratios are predicted / true depth "
             "after per-image median scaling on the static pixels (median over instances); AbsRel over the "
             "role's pixels. single = S0 or S*, multi = M0 or the student, lowest_cost = the multi-frame "
             "net's lowest-cost depth.", "",
             "| role | instances x frames | pixels | share of moving | true depth (m) | "
             + " | ".join(f"{n} ratio" for n in names) + " | " + " | ".join(f"{n} AbsRel" for n in names)
             + " | multi / single |",
             "|---" * (6 + 2 * len(names)) + "|"]
    for role, row in rows.items():
        lines.append(f"| {role} | {row['instances_x_frames']} | {row['pixels']} | {cell(row['share_of_moving_pixels'])} "
                     f"| {row['median_true_depth']:.1f} | "
                     + " | ".join(cell(row[f'median_ratio_{n}']) for n in names) + " | "
                     + " | ".join(cell(row[f'abs_rel_{n}'], '.3f') for n in names)
                     + f" | {cell(row.get('median_multi_over_single'))} |")
    lines += ["", f"Command: `{payload['command']}`"]
    (RESULTS / f"moving_objects_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
