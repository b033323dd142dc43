"""Human- and machine-readable reports of an :class:`~mfdepth.evaluation.protocols.EvaluationResult`."""

from __future__ import annotations

import json
import math
from pathlib import Path

from mfdepth.evaluation.metrics import METRIC_NAMES
from mfdepth.evaluation.protocols import ROWS, EvaluationResult


def _number(value: float | None, decimals: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{decimals}f}"


def format_table(result: EvaluationResult) -> str:
    """A Markdown table (rows all / static / moving, the 7 metrics to 3 decimals) and a few summary lines.

    Example::

        | pixels | images | abs_rel | sq_rel | rmse | rmse_log | a1 | a2 | a3 |
        |---|---|---|---|---|---|---|---|---|
        | all | 697 | 0.098 | 0.770 | 4.459 | 0.176 | 0.900 | 0.965 | 0.983 |
    """
    crop = result.crop if result.crop is not None else "none"
    scaling = "median scaling" if result.median_scaling else "no scaling"
    lines = [
        f"protocol {result.protocol}, crop {crop}, depth ({result.min_depth:g}, {result.max_depth:g}) m, {scaling}",
        "",
        "| pixels | images | " + " | ".join(METRIC_NAMES) + " |",
        "|" + "---|" * (len(METRIC_NAMES) + 2),
    ]
    for row in ROWS:
        if row not in result.metrics:
            continue
        values = " | ".join(_number(result.metrics[row][name]) for name in METRIC_NAMES)
        lines.append(f"| {row} | {result.image_counts[row]} | {values} |")
    if not result.metrics:
        lines.append("| all | 0 | " + " | ".join("n/a" for _ in METRIC_NAMES) + " |")
    lines.append("")
    lines.append(f"frames: {result.num_frames} given, {result.num_evaluated} evaluated")
    skipped = [
        (result.skipped_no_previous, "skipped without a previous frame"),
        (result.skipped_no_valid_gt, "skipped without valid ground truth"),
        (result.images_without_moving, "without moving pixels (left out of the moving row)"),
        (result.images_without_static, "without static pixels (left out of the static row)"),
    ]
    lines.extend(f"frames {text}: {count}" for count, text in skipped if count)
    if result.ratio_median is not None:
        lines.append(f"scale ratio median(gt)/median(pred): median {_number(result.ratio_median)}, "
                     f"std/median {_number(result.ratio_std)}")
    if result.mask_quality is not None:
        quality = result.mask_quality
        lines.append(f"dynamic mask: IoU {_number(quality.get('iou'))}, precision "
                     f"{_number(quality.get('precision'))}, recall {_number(quality.get('recall'))}")
    return "\n".join(lines)


def write_json(result: EvaluationResult, path: str | Path) -> Path:
    """Write ``result.to_dict()`` as indented JSON to ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    return path
