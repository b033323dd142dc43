"""The masks stage's training-frame mask under variants of its rule, on the pretrain networks of given runs.

For each run directory (its ``checkpoints/pretrain.ckpt``) and each variant (a list of ``masks.*``
overrides on top of the run's own config and the common overrides), the masks stage runs in a scratch
copy of the run (the pretrain checkpoint linked, not copied; the run's own masks untouched) and its
summary is kept: IoU, precision and recall against the true motion on every training frame, the share of
pixels flagged, the frames left empty as standing. The stage is seconds per variant, so a rule can be
chosen on all seeds before any training runs with it.

    python benchmarks/mask_rule_scan.py RUN_DIR [RUN_DIR ...] --data /tmp/world --name NAME \\
        [--common masks.depth_source=two_way_match ...] [--variant "masks.dilation=1" ...]

Writes ``benchmarks/results/mask_rule_scan_<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from mfdepth.config import apply_overrides, load_config
from mfdepth.run_layout import config_path, final_checkpoint
from mfdepth.training.recipe import write_masks

RESULTS = Path(__file__).resolve().parent / "results"


def scan_run(run_dir: Path, data: str, common: list[str], variants: list[list[str]]) -> list[dict]:
    base = load_config(config_path(run_dir), [f"data.root={data}", *common])
    rows = []
    with tempfile.TemporaryDirectory(prefix="mfdepth-mask-scan-") as scratch:
        scratch = Path(scratch)
        pretrain = final_checkpoint(scratch, "pretrain")
        pretrain.parent.mkdir(parents=True)
        pretrain.symlink_to(final_checkpoint(run_dir, "pretrain").resolve())
        for overrides in variants:
            shutil.rmtree(scratch / "masks", ignore_errors=True)
            config = apply_overrides(base, [f"run_dir={scratch}", *overrides])
            summary = write_masks(config, progress=False)
            rows.append({"variant": " ".join(overrides) or "(common only)", **summary})
            print(f"{run_dir.name:>10} {rows[-1]['variant']:<48} IoU {summary.get('iou') or 0:.3f} "
                  f"precision {summary.get('precision') or 0:.3f} recall {summary.get('recall') or 0:.3f} "
                  f"flagged {summary['masked_fraction']:.3f}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--name", default="mask_rule_scan")
    parser.add_argument("--common", nargs="*", default=[], help="overrides for every variant")
    parser.add_argument("--variant", action="append", default=None,
                        help="one variant's overrides, space-separated (repeat; default: the common ones only)")
    args = parser.parse_args()
    variants = [v.split() for v in args.variant] if args.variant else [[]]
    runs = {str(run): scan_run(run, args.data, args.common, variants) for run in args.runs}
    names = [row["variant"] for row in next(iter(runs.values()))]
    means = {}
    for i, name in enumerate(names):
        rows = [scanned[i] for scanned in runs.values()]
        means[name] = {key: sum((r.get(key) or 0.0) for r in rows) / len(rows)
                       for key in ("iou", "precision", "recall", "masked_fraction")}
    payload = {"common": args.common, "data": args.data, "runs": runs, "means": means}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"mask_rule_scan_{args.name}.json").write_text(json.dumps(payload, indent=2))
    lines = [f"# Mask rule scan: {args.name}", "",
             f"Training frames of {len(runs)} run(s), common overrides: `{' '.join(args.common) or 'none'}`.", "",
             "| variant | run | IoU | precision | recall | flagged | standing frames |", "|---|---|---|---|---|---|---|"]
    for i, name in enumerate(names):
        for run, rows in runs.items():
            r = rows[i]
            lines.append(f"| `{name}` | {Path(run).name} | {r.get('iou') or 0:.3f} | {r.get('precision') or 0:.3f} | "
                         f"{r.get('recall') or 0:.3f} | {r['masked_fraction']:.3f} | {r['standing_camera_frames']} |")
        m = means[name]
        lines.append(f"| `{name}` | **mean** | **{m['iou']:.3f}** | {m['precision']:.3f} | {m['recall']:.3f} | "
                     f"{m['masked_fraction']:.3f} | |")
    (RESULTS / f"mask_rule_scan_{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
