"""Figures for reports: depth side by side, masks against the truth, loss curves (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, fig, axes, path, title: str) -> Path:
    """Hide the axes of image panels, title, lay out, save as PNG and free the figure."""
    if axes is not None:
        for ax in axes.ravel():
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def colorize_depth(depth: np.ndarray, vmax_percentile: float = 95.0) -> np.ndarray:
    """``(H, W)`` depth in metres -> ``(H, W, 3)`` uint8, inverse depth on the magma map (near = bright).

    Pixels without depth (0) are black.
    """
    import matplotlib

    valid = depth > 0
    inverse = np.zeros_like(depth, dtype=np.float64)
    inverse[valid] = 1.0 / depth[valid]
    top = np.percentile(inverse[valid], vmax_percentile) if valid.any() else 1.0
    normalised = np.clip(inverse / max(top, 1e-9), 0.0, 1.0)
    rgb = (matplotlib.colormaps["magma"](normalised)[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def save_depth_comparison(
    path: str | Path,
    images: Sequence[np.ndarray],
    columns: Mapping[str, Sequence[np.ndarray]],
    title: str = "",
) -> Path:
    """One row per frame: the RGB image then one depth map per named column, colourised alike.

    Args:
        images: ``(H, W, 3)`` uint8 RGB per row.
        columns: column title -> ``(H, W)`` depth maps in metres (0 = none), one per row.
    """
    plt = _pyplot()
    rows, cols = len(images), 1 + len(columns)
    height, width = images[0].shape[:2]
    fig_w = 3.2 * cols
    fig, axes = plt.subplots(rows, cols, figsize=(fig_w, fig_w / cols * height / width * rows + 0.6), squeeze=False)
    for r, image in enumerate(images):
        axes[r, 0].imshow(image)
        for c, (name, maps) in enumerate(columns.items(), start=1):
            axes[r, c].imshow(colorize_depth(np.asarray(maps[r], dtype=np.float64)))
            if r == 0:
                axes[r, c].set_title(name, fontsize=9)
        if r == 0:
            axes[r, 0].set_title("input", fontsize=9)
    return _finish(plt, fig, axes, path, title)


def mask_overlay(image: np.ndarray, predicted: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
    """RGB with the predicted mask and the truth: green = both, red = predicted only, blue = missed."""
    out = image.astype(np.float64) * 0.55
    predicted = predicted.astype(bool)
    if truth is None:
        out[predicted] = out[predicted] * 0.4 + np.array([255.0, 60.0, 60.0]) * 0.6
        return out.astype(np.uint8)
    truth = truth.astype(bool)
    colours = {
        (True, True): (60.0, 220.0, 60.0),
        (True, False): (255.0, 60.0, 60.0),
        (False, True): (60.0, 120.0, 255.0),
    }
    for (p, t), colour in colours.items():
        where = (predicted == p) & (truth == t)
        out[where] = out[where] * 0.3 + np.array(colour) * 0.7
    return out.astype(np.uint8)


def save_mask_figure(
    path: str | Path,
    images: Sequence[np.ndarray],
    predicted: Sequence[np.ndarray],
    truth: Sequence[np.ndarray | None],
    title: str = "",
) -> Path:
    """Rows of (image, overlay of the depth inconsistency mask against the true motion mask)."""
    plt = _pyplot()
    rows = len(images)
    height, width = images[0].shape[:2]
    fig, axes = plt.subplots(rows, 2, figsize=(7.0, 3.5 * height / width * rows + 0.7), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(images[r])
        axes[r, 1].imshow(mask_overlay(images[r], predicted[r], truth[r]))
    axes[0, 0].set_title("input", fontsize=9)
    axes[0, 1].set_title("mask: green = correct, red = false alarm, blue = missed", fontsize=8)
    return _finish(plt, fig, axes, path, title)


def save_loss_curves(path: str | Path, logs: Mapping[str, Sequence[Mapping[str, float]]]) -> Path:
    """One panel per stage: total loss (and photometric terms) against the step."""
    plt = _pyplot()
    stages = [name for name, rows in logs.items() if rows]
    fig, axes = plt.subplots(1, max(len(stages), 1), figsize=(4.2 * max(len(stages), 1), 3.2), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        rows = logs[stage]
        steps = [row["step"] for row in rows]
        for key in ("loss", "photometric", "multi_photometric", "single_photometric", "distillation"):
            values = [row.get(key) for row in rows]
            if all(v is not None and np.isfinite(v) for v in values):
                ax.plot(steps, values, label=key, linewidth=1.2)
        ax.set_title(stage, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _finish(plt, fig, None, path, "")
