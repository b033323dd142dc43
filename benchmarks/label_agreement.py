"""Which plane-sweep labels does a trained single-frame net agree with, on moving and on static objects?

For a run directory whose training read plane-sweep labels (``train.stereo_prior_steps``), loads a
single-frame net (``--network teacher`` = S* of ``teacher.ckpt``, ``single`` = S0 of ``pretrain.ckpt``)
and the run's label cache, predicts every training sample (no augmentation), and for each band b keeps
the label cells whose label / prediction ratio, after the image's median ratio, lies within
[1/b, b]. Reports, per band, the share of the labels kept on truly moving and on static cells, and
the kept labels' AbsRel against the true depth (labels in metres via the true translation length).
The question it answers: can a net that is right about the moving objects gate away the labels that
are wrong on them (``loss.stereo_prior_agreement_band``)?

    python benchmarks/label_agreement.py RUN_DIR [--network teacher] [--data /tmp/world]

Writes ``benchmarks/results/label_agreement_<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mfdepth.config import apply_overrides, config_from_dict
from mfdepth.data import build_dataset
from mfdepth.data.files import table_rows
from mfdepth.models.factory import build_single
from mfdepth.training.checkpoint import load_checkpoint
from stereo_labels import motion_cells, true_depth, true_relative

RESULTS = Path(__file__).resolve().parent / "results"
BANDS = (1.25, 1.5, 2.0, 3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--network", choices=("teacher", "single"), default="teacher")
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--name", default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run_dir)
    checkpoint = load_checkpoint(run / "checkpoints" / ("teacher.ckpt" if args.network == "teacher" else "pretrain.ckpt"))
    config = apply_overrides(config_from_dict(checkpoint["meta"]["config"]), [f"data.root={args.data}"])
    net = build_single(config)
    net.load_state_dict(checkpoint["models"][args.network])
    net.eval()
    dataset = build_dataset(config.data, "train", augment=False)
    with np.load(run / "stereo_prior.npz", allow_pickle=False) as table:
        labels = table["depth"][table_rows(table["ids"], dataset.sample_ids, "stereo prior")]
    root = Path(config.data.root)
    rows = {band: {"moving_kept": 0, "static_kept": 0, "errors": []} for band in BANDS}
    moving_total = static_total = 0
    all_errors = {"moving": [], "static": []}
    for index, sample_id in enumerate(dataset.sample_ids):
        label = torch.from_numpy(labels[index])[None]
        if not (label > 0).any():
            continue
        sample = dataset[index]
        image = sample["frames"][sample["offsets"].tolist().index(0)][None]
        with torch.no_grad():
            depth = net(image)["depth"][0]
        cell = depth.shape[-1] // label.shape[-1]
        log_depth = F.avg_pool2d(depth.log(), cell)
        labelled = label > 0
        residual = (log_depth - label.clamp_min(1e-9).log())[labelled]
        deviation = (residual - residual.median()).abs()
        truth = true_depth(root, sample_id, label.shape[-2:])[None, None][labelled]
        moving = motion_cells(root, sample_id, label.shape[-2:])[None, None][labelled]
        length = float(np.linalg.norm(true_relative(root, sample_id, -1)[:3, 3]))
        error = (label[labelled] * length - truth).abs() / truth.clamp_min(1e-3)
        usable = (truth > 1e-3) & (truth < 80.0)
        moving_total += int((moving & usable).sum())
        static_total += int((~moving & usable).sum())
        all_errors["moving"].append(error[moving & usable])
        all_errors["static"].append(error[~moving & usable])
        for band, row in rows.items():
            kept = (deviation < np.log(band)) & usable
            row["moving_kept"] += int((kept & moving).sum())
            row["static_kept"] += int((kept & ~moving).sum())
            row["errors"].append((error[kept & moving], error[kept & ~moving]))
    result = {"run_dir": str(run), "network": args.network, "labels_moving": moving_total,
              "labels_static": static_total,
              "abs_rel_moving_all": float(torch.cat(all_errors["moving"]).mean()),
              "abs_rel_static_all": float(torch.cat(all_errors["static"]).mean()), "bands": []}
    for band, row in rows.items():
        moving_err = torch.cat([m for m, _ in row["errors"]])
        static_err = torch.cat([s for _, s in row["errors"]])
        result["bands"].append({
            "band": band, "moving_kept": row["moving_kept"] / max(moving_total, 1),
            "static_kept": row["static_kept"] / max(static_total, 1),
            "abs_rel_moving": float(moving_err.mean()) if len(moving_err) else float("nan"),
            "abs_rel_static": float(static_err.mean()),
            "abs_rel_all": float(torch.cat([moving_err, static_err]).mean()),
        })
    name = args.name or f"label_agreement_{args.network}_{run.name}"
    RESULTS.mkdir(exist_ok=True)
    command = f"python benchmarks/label_agreement.py {args.run_dir} --network {args.network} --data {args.data}"
    result["command"] = command
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Labels kept by agreement with {args.network} (`{args.run_dir}`)", "",
             f"{moving_total} labelled cells touch a moving object (AbsRel {result['abs_rel_moving_all']:.3f}), "
             f"{static_total} do not (AbsRel {result['abs_rel_static_all']:.3f}).", "",
             "| band | moving labels kept | static labels kept | AbsRel kept (moving / static / all) |",
             "|---|---|---|---|"]
    lines += [f"| {b['band']} | {b['moving_kept']:.1%} | {b['static_kept']:.1%} | {b['abs_rel_moving']:.3f} / "
              f"{b['abs_rel_static']:.3f} / {b['abs_rel_all']:.3f} |" for b in result["bands"]]
    lines += ["", f"Command: `{command}`", ""]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
