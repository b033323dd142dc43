"""Quality against steps: the judge the convergence benchmark and the demo run during training.

See ``benchmarks/convergence.py`` and ``docs/convergence.md``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from mfdepth import masks as mask_rules
from mfdepth.config import mask_depth_source
from mfdepth.data import build_dataset
from mfdepth.data.base import collate_samples
from mfdepth.evaluation.metrics import MaskQualityAccumulator, relative_pose_errors
from mfdepth.evaluation.poses import true_relative_poses
from mfdepth.evaluation.protocols import evaluate_depth_maps
from mfdepth.losses import automask_of, min_reprojection_error, normalise_depths, photometric_error
from mfdepth.models import bound_fractions


def reference_scores(gts: list, motion_masks: list | None = None, max_depth: float = 80.0,
                     protocol: str = "synthetic") -> dict:
    """What a network must beat: the scores of two predictions that know no image content.

    ``constant``: one depth everywhere (median scaling makes its value irrelevant). ``per_row_prior``:
    each image row's median true depth over all the given frames (fitted on this ground truth itself,
    so an upper bound on what "depth = f(row)" can do, e.g. "the road gets farther toward the horizon").

    Args:
        gts: ground-truth depth maps ``(H, W)`` of one size, metres, 0 = none.
        motion_masks: optional true motion masks, for the static / moving rows.
    Returns:
        ``{name: {"all", "static", "moving" (AbsRel; None when not scored), "a1"}}``.
    """
    constant = [np.ones_like(g) for g in gts]
    stack = np.stack(gts)
    valid = (stack > 1e-3) & (stack < max_depth)
    rows = np.array([np.median(stack[:, r][valid[:, r]]) if valid[:, r].any() else 1.0
                     for r in range(stack.shape[1])])
    per_row = [np.repeat(rows[:, None], g.shape[1], axis=1) for g in gts]
    out = {}
    for name, preds in (("constant", constant), ("per_row_prior", per_row)):
        result = evaluate_depth_maps(preds, gts, protocol=protocol, motion_masks=motion_masks, max_depth=max_depth)
        out[name] = {row: (result.metrics.get(row) or {}).get("abs_rel") for row in ("all", "static", "moving")}
        out[name]["a1"] = result.metrics["all"]["a1"]
    return out


def known_camera_height(config) -> float | None:
    """The camera's height above the road in metres: ``masks.camera_height``, else the one the synthetic
    world was rendered with (its ``world.json``), else None."""
    if config.masks.camera_height is not None:
        return float(config.masks.camera_height)
    if config.data.dataset == "synthetic":
        from mfdepth.synth.writer import read_world_info

        info = read_world_info(config.data.root) or {}
        if info.get("camera_height") is not None:
            return float(info["camera_height"])
    return None


class ConvergenceJudge:
    """Scores networks during training on a split with ground truth depth, motion masks and true poses
    (the synthetic world): the same numbers at every evaluation, cheap enough to run every few dozen steps.

    Depth: per-image median-scaled AbsRel on all / static / moving pixels, d<1.25, AbsRel without any
    scaling (``abs_rel_metric``: the network's own unit), AbsRel made metric by the camera height alone
    (``abs_rel_camera_height``, :func:`mfdepth.masks.metric_by_camera_height`; None where the height is
    unknown: ``masks.camera_height``, else the synthetic world's own), the fraction of pixels pinned at
    the lower depth bound, and the label-free ``photometric`` error the training loss would see on these held-out frames. Pose: rotation
    and translation-direction errors of the previous-frame pose. Mask: IoU of the depth inconsistency
    mask of the multi- and single-frame depths against the true motion.
    """

    def __init__(self, config):
        dataset = build_dataset(config.data, "test", augment=False)
        batch = collate_samples([dataset[i] for i in range(len(dataset))])
        offsets = [int(o) for o in batch["offsets"][0]]
        self.target = batch["frames"][:, 0]
        self.previous = batch["frames"][:, offsets.index(-1)]
        self.sources = {o: batch["frames"][:, i] for i, o in enumerate(offsets) if o != 0}
        self.K = batch["K"][:, 0]
        self.gts = [g[0].numpy() for g in batch["depth_gt"]]
        self.motion = [m[0].numpy() for m in batch["motion_mask"]]
        self.sample_ids = dataset.sample_ids
        self.true_poses = true_relative_poses(config.data.root, dataset.sample_ids)
        self.camera_height = known_camera_height(config)
        self.config = config

    def baselines(self) -> dict:
        """AbsRel of a constant depth and of the per-row prior fitted on the test ground truth."""
        return reference_scores(self.gts, self.motion, self.config.eval.max_depth, self.config.eval.protocol)

    def _scaled(self, depth: torch.Tensor) -> torch.Tensor:
        m = self.config.model
        return normalise_depths([depth], self.K, m.scale_normalisation, self.config.masks.camera_height)[0]

    def _photometric(self, depth: torch.Tensor, poses: dict) -> float:
        """Label-free score of a depth ``(N,1,H,W)`` with the pose net's ``poses``: the mean per-pixel
        minimum photometric error over the split's source frames, on the pixels the auto-mask keeps (a
        warp that beats the unwarped source), as the training loss sees them."""
        ssim = self.config.loss.ssim_weight
        error, _ = min_reprojection_error(self.target, self.sources, depth, poses, self.K, ssim_weight=ssim)
        identity = torch.stack([photometric_error(s, self.target, ssim) for s in self.sources.values()]).amin(0)
        kept = error < identity
        return float(error[kept].mean()) if kept.any() else math.nan

    def _depth_scores(self, depths: torch.Tensor) -> dict:
        preds = [d[0].numpy() for d in depths]
        scored = evaluate_depth_maps(preds, self.gts, motion_masks=self.motion, max_depth=self.config.eval.max_depth)
        metric = evaluate_depth_maps(preds, self.gts, median_scaling=False, max_depth=self.config.eval.max_depth)
        pinned = float(bound_fractions(depths, self.config.model.min_depth, self.config.model.max_depth)[0])
        by_height = None
        if self.camera_height is not None:
            metres = mask_rules.metric_by_camera_height(depths.float(), self.K, self.camera_height)
            by_height = evaluate_depth_maps([d[0].numpy() for d in metres], self.gts, median_scaling=False,
                                            max_depth=self.config.eval.max_depth).metrics["all"]["abs_rel"]
        return {
            "abs_rel": scored.metrics["all"]["abs_rel"],
            "abs_rel_static": scored.metrics["static"]["abs_rel"],
            "abs_rel_moving": scored.metrics["moving"]["abs_rel"],
            "a1": scored.metrics["all"]["a1"],
            "abs_rel_metric": metric.metrics["all"]["abs_rel"],
            "abs_rel_camera_height": by_height,
            "median_ratio": scored.ratio_median if scored.ratio_median is not None else math.nan,
            "pinned_low": pinned,
        }

    @torch.no_grad()
    def score(self, nets: dict, with_multi: bool = True) -> dict:
        """Scores of ``nets`` (``pose`` and ``single``/``teacher``, optionally ``multi``; put in eval mode
        and back). ``with_multi=False`` skips a multi-frame net that has not started training."""
        modes = {name: net.training for name, net in nets.items()}
        for net in nets.values():
            net.eval()
        out: dict = {}
        T = nets["pose"](self.target, self.previous, source_is_before=True)
        errors = relative_pose_errors(T.numpy(), self.true_poses)
        out["pose_direction_deg"] = errors["direction_deg"]
        out["pose_rotation_deg"] = errors["rotation_deg"]
        out["pose_scale"] = errors["scale"]
        single_net = nets.get("single") or nets.get("teacher")
        raw_single = torch.cat([single_net(self.target[i:i + 8])["depth"][0] for i in range(0, len(self.target), 8)])
        single = self._scaled(raw_single)
        out["single"] = self._depth_scores(single)
        poses = {o: T if o == -1 else nets["pose"](self.target, source, source_is_before=o < 0)
                 for o, source in self.sources.items()}
        out["single"]["photometric"] = self._photometric(single, poses)
        # The depth's scale over the translation's, both against the truth: 1 when the warp moves pixels as
        # the true motion does; a stage whose nets disagree here starts in a false minimum of the loss.
        out["scale_consistency"] = out["single"]["median_ratio"] / errors["scale"]
        multi_net = nets.get("multi")
        if multi_net is not None and with_multi:
            raw_multi, source = [], []
            two_way = mask_depth_source(self.config)[0] == "two_way_match"
            for i in range(0, len(self.target), 8):
                part = slice(i, i + 8)
                target, K = self.target[part], self.K[part]
                sources = {o: frames[part] for o, frames in self.sources.items()}
                part_poses = {o: motion[part] for o, motion in poses.items()}
                multi_out = multi_net(target, sources[-1], part_poses[-1], K)
                raw_multi.append(multi_out["depth"][0])
                if two_way:
                    match_next = multi_net(target, sources[1], part_poses[1], K)["cost_volume_depth"]
                    source.append(mask_rules.two_way_match_depth(
                        multi_out["depth"][0], raw_single[part], multi_out["cost_volume_depth"], match_next, target,
                        sources, part_poses, K, self.config.loss.ssim_weight))
                else:
                    source.append(multi_out["depth"][0])
            raw_multi = torch.cat(raw_multi)
            multi = self._scaled(raw_multi)
            out["multi"] = self._depth_scores(multi)
            out["multi"]["photometric"] = self._photometric(multi, poses)
            # D_o takes M0's scale normalisation (a factor per image), as in the masks stage.
            source = torch.cat(source) * multi / raw_multi
            kept = None
            if self.config.masks.standing_camera_fraction > 0:
                kept = automask_of(self.target, self.sources, single, poses, self.K, self.config.loss.ssim_weight)
            dynamic = mask_rules.compute_dynamic_mask(source, single, self.K, automask_kept=kept,
                                                      **mask_rules.rule_settings(self.config.masks))
            quality = MaskQualityAccumulator()
            for predicted, true in zip(dynamic.numpy(), self.motion):
                quality.update(predicted[0], true > 0.5)
            scores = quality.compute()
            out["mask_iou"] = scores["iou"]
            out["masked_fraction"] = float(dynamic.float().mean())
        for name, net in nets.items():
            net.train(modes[name])
        return out


def plot_curves(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for seed, history in payload["runs"].items():
        for key, style in (("single", "--"), ("multi", "-")):
            points = [(r["seconds"], r[key]["abs_rel"]) for r in history if r.get(key)]
            if points:
                axes[0].plot(*zip(*points), style, label=f"seed {seed} {key}")
        points = [(r["seconds"], r["pose_direction_deg"]) for r in history if math.isfinite(r["pose_direction_deg"])]
        if points:
            axes[1].plot(*zip(*points), label=f"seed {seed}")
    for name, style in (("constant", ":"), ("per_row_prior", "-.")):
        axes[0].axhline(payload["baselines"][name]["all"], color="grey", linestyle=style, label=name)
    axes[0].set(xlabel="training seconds (2 CPU cores)", ylabel="AbsRel (test, median-scaled)", ylim=(0, 1.2),
                title="depth")
    axes[1].set(xlabel="training seconds", ylabel="degrees", yscale="log", title="pose translation direction error")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle(payload["name"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
