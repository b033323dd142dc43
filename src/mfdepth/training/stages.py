"""The training stages of METHOD.md as modules the loop can optimise.

Each stage composes networks (``mfdepth.models``), losses (``mfdepth.losses``) and masks
(``mfdepth.masks``); it holds no geometry or loss maths of its own. ``forward(batch, generator)``
returns ``(loss, scalars, images)``; the loop does the rest.

* :class:`PretrainStage`: multi-frame M0 (single-scale matching) + single-frame S0 + pose, no masks:
  the ManyDepth-style baseline, with the adaptive depth range, the static-camera and zero-cost-volume
  augmentations, and ManyDepth's cost-volume consistency rule (M0 is distilled from a detached S0
  where its cost volume disagrees with S0).
* :class:`TeacherStage`: the robust single-frame teacher S* and its pose net, trained with the
  depth inconsistency mask removing dynamic pixels from the photometric loss.
* :class:`StudentStage`: the multi-frame net M (MSFF switchable), trained with the masked
  photometric loss and robust distillation from the frozen teacher.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from mfdepth import geometry, losses, masks
from mfdepth.config import Config
from mfdepth.models import PoseNet, bound_fractions
from mfdepth.models.factory import build_multi, build_pose, build_single

_NETWORK_STREAMS = {"single": 1, "multi": 2, "pose": 3}


@contextlib.contextmanager
def seeded(seed: int):
    """Draw from ``seed`` inside the block without touching the caller's global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def seeded_network(config: Config, kind: str, build):
    """``build()`` with the random state seeded from ``train.seed`` and the network's kind only, leaving
    the caller's random state untouched: a network's start does not depend on which other networks a
    stage builds or how large they are (the single-frame and pose nets of every ablation row, and of a
    recipe whose multi-frame net changes shape, start from the same weights)."""
    with seeded(config.train.seed * 1_000 + _NETWORK_STREAMS[kind]):
        return build()


def load_matching(module: nn.Module, state: dict) -> int:
    """Copy the entries of ``state`` whose names and shapes match ``module``; return how many.

    Used to start a stage from an earlier stage's weights when the architectures differ only in
    part (the student with MSFF starts from the baseline's encoder and decoder).
    """
    own = module.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(matching, strict=False)
    return len(matching)


class StageModule(nn.Module):
    """Interface between a stage and :func:`mfdepth.training.loop.fit`."""

    name = "stage"
    global_step = 0
    """Optimisation step about to run; set by the training loop before each forward."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config

    # Networks saved in this stage's checkpoint, by name.
    def saved_networks(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    # Weight averaging: with ``train.ema_decay`` > 0 each saved network has an exponential moving
    # average of its weights (and batch-norm statistics). Small-batch training from scratch moves the
    # weights a lot from step to step (AbsRel swings of 0.2 within 50 steps were measured); the
    # average is what the checkpoint's network entries hold, so the next stage, evaluation and
    # inference use it. The raw weights travel as ``raw.<name>`` for exact resuming.

    def _averages(self) -> dict[str, nn.Module] | None:
        if self.config.train.ema_decay <= 0:
            return None
        if getattr(self, "_ema", None) is None:
            import copy

            # A plain dict: the copies are not submodules, so the optimiser and DDP never see them.
            self.__dict__["_ema"] = {
                name: copy.deepcopy(net).requires_grad_(False) for name, net in self.saved_networks().items()
            }
        return self._ema

    def first_step(self, name: str) -> int:
        """The stage's step at which network ``name`` starts training (its average's warm-up and, with
        ``train.lr_per_network``, its learning-rate schedule count from there)."""
        return 0

    def ema_step(self, name: str) -> int:
        """Steps network ``name`` has trained in this stage (sets the average's warm-up)."""
        return self.global_step - self.first_step(name)

    def after_optimizer_step(self) -> None:
        averages = self._averages()
        if averages is None:
            return
        nets = self.saved_networks()
        with torch.no_grad():
            for name, average in averages.items():
                step = self.ema_step(name)
                if step < 0:
                    continue
                # Warm-up: the average starts short and lengthens toward 1 / (1 - decay) steps.
                decay = min(self.config.train.ema_decay, (1.0 + step) / (10.0 + step))
                current = nets[name].state_dict()
                averaged, trained = [], []
                for key, value in average.state_dict().items():
                    if value.is_floating_point():
                        averaged.append(value)
                        trained.append(current[key])
                    else:
                        value.copy_(current[key])
                # One multi-tensor kernel instead of a Python loop over the ~250 tensors of a stage.
                torch._foreach_lerp_(averaged, trained, 1.0 - decay)

    def evaluation_networks(self) -> dict[str, nn.Module]:
        """The networks to score: the averages when weight averaging is on, else the trained ones."""
        return self._averages() or self.saved_networks()

    def checkpoint_models(self, resumable: bool = True) -> dict[str, dict]:
        """Each saved network's state by name (its average with weight averaging on); ``resumable`` adds
        the raw weights as ``raw.<name>``, which only resuming the stage reads."""
        nets = self.saved_networks()
        averages = self._averages()
        if averages is None:
            return {name: net.state_dict() for name, net in nets.items()}
        states = {name: average.state_dict() for name, average in averages.items()}
        if resumable:
            states.update({f"raw.{name}": net.state_dict() for name, net in nets.items()})
        return states

    def load_checkpoint_models(self, states: dict[str, dict]) -> None:
        nets = self.saved_networks()
        for name, net in nets.items():
            net.load_state_dict(states.get(f"raw.{name}", states[name]))
        averages = self._averages()
        if averages is not None:
            for name, average in averages.items():
                average.load_state_dict(states[name])

    def checkpoint_meta(self) -> dict:
        return {}

    # Shared pieces of a step ------------------------------------------------------------------

    def unpack(self, batch: dict):
        """Split a batch into target, sources and intrinsics.

        Returns:
            target ``(B,3,H,W)``, target_aug, sources ``{offset: (B,3,H,W)}``, sources_aug, full-size K
            ``(B,3,3)``, dynamic mask ``(B,1,H,W)`` bool or None.
        """
        offsets = [int(o) for o in batch["offsets"][0]]
        frames, frames_aug = batch["frames"], batch["frames_aug"]
        sources = {o: frames[:, i] for i, o in enumerate(offsets) if o != 0}
        sources_aug = {o: frames_aug[:, i] for i, o in enumerate(offsets) if o != 0}
        if -1 not in sources:
            raise ValueError("training needs the previous frame: data.frame_offsets must contain -1")
        dynamic = batch.get("dynamic_mask")
        dynamic = dynamic > 0.5 if dynamic is not None else None
        return frames[:, 0], frames_aug[:, 0], sources, sources_aug, batch["K"][:, 0], dynamic

    def photometric_terms(self, target, sources, depths, poses, K, exclude=None) -> dict:
        cfg = self.config.loss
        return losses.self_supervised_loss(
            target, sources, depths, poses, K,
            automask=cfg.automask, ssim_weight=cfg.ssim_weight,
            smoothness_weight=cfg.smoothness_weight, exclude_mask=exclude, full_resolution=cfg.full_resolution,
        )

    def prior_for(self, batch: dict, steps: int):
        """``(offsets, prior (B,S,4,4), valid (B,S))`` of the batch's two-view pose prior while training
        within the stage's first ``steps`` steps; None otherwise."""
        prior = batch.get("pose_prior")
        if prior is None or not self.training or self.global_step >= steps:
            return None
        offsets = [int(o) for o in batch["offsets"][0] if int(o) != 0]
        return offsets, prior, batch["pose_prior_valid"]

    def pose_prior_term(self, batch: dict, poses: dict[int, torch.Tensor]) -> torch.Tensor | None:
        """The two-view pose prior loss on ``poses`` during the first ``train.pose_prior_steps`` steps."""
        found = self.prior_for(batch, self.config.train.pose_prior_steps)
        if found is None:
            return None
        offsets, prior, valid = found
        terms = [
            losses.pose_prior_loss(poses[o], prior[:, i], valid[:, i]) for i, o in enumerate(offsets) if o in poses
        ]
        return self.config.loss.pose_prior_weight * torch.stack(terms).mean()

    def pinned_fraction(self, *outputs: dict) -> torch.Tensor:
        """The largest fraction, over the networks' raw ``outputs`` (before :meth:`scaled`), of the finest
        depth's pixels at either bound of [``model.min_depth``, ``model.max_depth``], where the sigmoid
        saturates (the training loop's collapse guard reads it)."""
        m = self.config.model
        return torch.stack([
            torch.stack(bound_fractions(out["depth"][0].detach(), m.min_depth, m.max_depth)).amax() for out in outputs
        ]).amax()

    def scaled(self, out: dict, K: torch.Tensor) -> dict:
        """A network's output with its depths' free scale fixed (``model.scale_normalisation``)."""
        mode = self.config.model.scale_normalisation
        if mode == "none":
            return out
        depths = losses.normalise_depths(out["depth"], K, mode, self.config.masks.camera_height)
        return {**out, "depth": depths}

    def update_depth_range(self, multi, teacher_depth: torch.Tensor, first: bool = False) -> None:
        """Move the cost volume's range toward the teacher's. At the multi-frame net's ``first`` step of
        a stage the range is set outright when ``model.range_from_teacher`` (a running average that
        starts at [min_depth, max_depth] lags the teacher for hundreds of steps). ``first`` is a function
        of the step, so a resumed run does exactly what an uninterrupted one does."""
        momentum = self.config.model.adaptive_range_momentum
        if first and self.config.model.range_from_teacher:
            momentum = 0.0
        multi.update_depth_range(teacher_depth, momentum)

    def cost_volume_target_term(self, net_out: dict, untrusted: torch.Tensor) -> torch.Tensor | None:
        """``loss.cost_volume_target_weight`` times :func:`mfdepth.losses.cost_volume_target_loss` on the
        pixels outside ``untrusted`` ``(B,1,H,W)`` bool; None when the weight is 0."""
        weight = self.cost_volume_target_weight()
        if weight == 0:
            return None
        return weight * losses.cost_volume_target_loss(net_out["depth"][0], net_out["cost_volume_depth"], ~untrusted)

    def cost_volume_target_weight(self) -> float:
        return self.config.loss.cost_volume_target_weight

    def match_warps_worse(self, target, sources, net_out: dict, reference_error: torch.Tensor, poses, K):
        """``(B, 1, H, W)`` bool: where the lowest-cost depth (as the target sees it: constant over each
        cell) warps the sources worse than the depth whose minimum reprojection error is
        ``reference_error`` ``(B, 1, H, W)`` (ties count as not worse, as in the reliability mask)."""
        with torch.no_grad():
            match_depth = F.interpolate(net_out["cost_volume_depth"].to(reference_error.dtype),
                                        size=tuple(reference_error.shape[-2:]), mode="nearest")
            match_error, _ = losses.min_reprojection_error(target, sources, match_depth, poses, K,
                                                           ssim_weight=self.config.loss.ssim_weight)
        return ~masks.reliability_mask(match_error, reference_error.detach())

    @staticmethod
    def add_terms(loss: torch.Tensor, scalars: dict, **terms) -> torch.Tensor:
        """``loss`` plus every term that is not None, each logged under its name."""
        for name, term in terms.items():
            if term is not None:
                loss = loss + term
                scalars[name] = term
        return loss

    def labels_term(self, batch: dict, depth: torch.Tensor, steps: int,
                    excluded: torch.Tensor | None = None) -> torch.Tensor | None:
        """``loss.stereo_prior_weight`` times :func:`mfdepth.losses.stereo_prior_loss` on ``depth`` ``(B,1,H,W)``
        during this stage's first ``steps`` steps, without the label cells that touch a pixel of
        ``excluded`` ``(B,1,H,W)`` bool (e.g. the depth inconsistency mask). Over the last
        ``train.stereo_prior_fade_steps`` of them the weight falls linearly toward 0."""
        labels = batch.get("stereo_depth")
        weight = self.label_fade(steps) * self.config.loss.stereo_prior_weight
        if labels is None or weight == 0:
            return None
        if excluded is not None:
            touched = F.adaptive_max_pool2d(excluded.float(), labels.shape[-2:]) > 0
            labels = labels.masked_fill(touched, 0.0)
        band = self.config.loss.stereo_prior_band
        return weight * losses.stereo_prior_loss(depth, labels, band if band > 0 else None)

    def label_fade(self, steps: int) -> float:
        """The labels' weight factor at this step of a stage that uses them for its first ``steps``: 1, then
        falling linearly to 0 over the last ``train.stereo_prior_fade_steps``; 0 outside training."""
        if not self.training or self.global_step >= steps:
            return 0.0
        fade = min(self.config.train.stereo_prior_fade_steps, steps)
        return min(1.0, (steps - self.global_step) / fade) if fade else 1.0

    def pose_length_term(self, batch: dict, poses: dict[int, torch.Tensor], depth: torch.Tensor,
                         steps: int) -> torch.Tensor | None:
        """``loss.pose_length_weight`` times :func:`mfdepth.losses.pose_length_loss` on the previous frame's
        pose, for the single-frame ``depth`` ``(B,1,H,W)``, while the labels are on (the first ``steps``)."""
        labels = batch.get("stereo_depth")
        weight = self.label_fade(steps) * self.config.loss.pose_length_weight
        if labels is None or weight == 0 or -1 not in poses:
            return None
        return weight * losses.pose_length_loss(poses[-1], depth, labels)

    def scale_anchor_term(self, depth: torch.Tensor) -> torch.Tensor | None:
        """``loss.scale_anchor_weight`` times :func:`mfdepth.losses.scale_anchor_loss` of ``depth``
        ``(B,1,H,W)`` at ``model.initial_depth``, in training; None when off."""
        weight = self.config.loss.scale_anchor_weight
        if not weight or not self.training or self.config.model.initial_depth is None:
            return None
        return weight * losses.scale_anchor_loss(depth, self.config.model.initial_depth)

    def cost_volume_inputs(self, target_aug, previous_aug, T_prev_target, generator):
        """Apply the static-camera and zero-cost-volume augmentations (METHOD.md).

        With probability ``static_camera_prob`` an item's source frame is replaced by the target and its
        pose by the identity (a camera that did not move); with ``zero_cost_volume_prob`` its cost
        volume is zeroed (single-frame fallback). Returns (source, pose, static flags, zeroed flags).
        """
        b = target_aug.shape[0]
        draws = torch.rand(2, b, generator=generator).to(target_aug.device)
        static = draws[0] < self.config.train.static_camera_prob
        zeroed = draws[1] < self.config.train.zero_cost_volume_prob
        if not self.training:
            static, zeroed = torch.zeros_like(static), torch.zeros_like(zeroed)
        source = torch.where(static[:, None, None, None], target_aug, previous_aug)
        eye = torch.eye(4, device=target_aug.device, dtype=T_prev_target.dtype).expand_as(T_prev_target)
        pose = torch.where(static[:, None, None], eye, T_prev_target.detach())
        return source, pose, static, zeroed


def predict_poses(pose_net: PoseNet, target_aug, sources_aug) -> dict[int, torch.Tensor]:
    """``{offset: T_source_target (B,4,4)}`` for every source frame."""
    offsets = list(sources_aug)
    poses = pose_net.forward_pairs(target_aug, [sources_aug[o] for o in offsets], [o < 0 for o in offsets])
    return dict(zip(offsets, poses, strict=True))


def depth_image(depth: torch.Tensor) -> torch.Tensor:
    """Depth ``(B,1,H,W)`` -> normalised inverse depth for TensorBoard, first two items."""
    inv = 1.0 / depth[:2].detach().clamp(min=1e-3)
    return inv / inv.amax(dim=(2, 3), keepdim=True).clamp(min=1e-6)


class PretrainStage(StageModule):
    name = "pretrain"
    MULTI_SCALARS = ("multi_photometric", "consistency", "inconsistent_fraction", "d_min", "d_max")

    def __init__(self, config: Config):
        super().__init__(config)
        self.single = seeded_network(config, "single", lambda: build_single(config))
        self.multi = seeded_network(config, "multi", lambda: build_multi(config, msff=False))
        self.pose = seeded_network(config, "pose", lambda: build_pose(config))

    def saved_networks(self):
        return {"single": self.single, "multi": self.multi, "pose": self.pose}

    def checkpoint_meta(self):
        return {"d_min": float(self.multi.d_min), "d_max": float(self.multi.d_max), "msff": False,
                "fine_matching": self.multi.fine_matching, "cost_hint": self.multi.cost_hint}

    def first_step(self, name: str) -> int:
        return self.config.train.warmup_steps if name == "multi" else 0

    def multi_active(self, step: int | None = None) -> bool:
        """Whether the multi-frame net trains at ``step`` (default: the current step): once the
        single-frame + pose warm-up of ``train.warmup_steps`` steps is over."""
        return (self.global_step if step is None else step) >= self.config.train.warmup_steps

    def stereo_prior_term(self, batch: dict, depth: torch.Tensor, network: str) -> torch.Tensor | None:
        """The labels' term on the depth of ``network`` (``single`` or ``multi``) during the first
        ``train.stereo_prior_steps`` steps, when ``loss.stereo_prior_network`` names it (or is ``both``)."""
        if self.config.loss.stereo_prior_network not in (network, "both"):
            return None
        return self.labels_term(batch, depth, self.config.train.stereo_prior_steps)

    def warping_poses(self, batch: dict, poses: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """The poses the photometric loss warps with: during the first ``train.pose_prior_warp_steps``
        steps (no more than ``train.pose_prior_steps``), the two-view prior's rotation and direction
        with the pose net's translation length (pairs without a prior keep the pose net's); afterwards
        ``poses`` themselves. Only here, where the pose net starts from scratch: the teacher stage's
        pose net starts trained, closer to the truth than the prior (0.6-1.9 against 4.3 deg)."""
        t = self.config.train
        found = self.prior_for(batch, min(t.pose_prior_warp_steps, t.pose_prior_steps))
        if found is None:
            return poses
        offsets, prior, valid = found
        warping = dict(poses)
        for i, o in enumerate(offsets):
            if o in warping:
                warping[o] = geometry.with_rotation_and_direction(poses[o], prior[:, i], valid[:, i])
        return warping

    def match_warps_better_than_single(self, target, sources, multi: dict, single_error: torch.Tensor, poses, K,
                                       uninformative: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` bool: the pixels of informative items (``uninformative`` ``(B,)`` bool: a static
        camera or a zeroed volume) whose match is reliable and whose lowest-cost depth warps the sources at
        least as well as the single-frame depth (minimum reprojection error ``single_error``)."""
        size = tuple(single_error.shape[-2:])
        valid = F.interpolate(multi["cost_volume_valid"].float(), size=size, mode="nearest") > 0.5
        better = ~self.match_warps_worse(target, sources, multi, single_error, poses, K)
        return better & valid & ~uninformative[:, None, None, None]

    def pixels_handed_to_match(self, target, sources, multi: dict, single_error: torch.Tensor, poses, K,
                               uninformative: torch.Tensor, teacher_depth: torch.Tensor) -> torch.Tensor | None:
        """``(B, 1, H, W)`` bool: the pixels that ``loss.consistency_photometric_gate`` takes out of the
        consistency term (the match's photometric error at most ``loss.consistency_gate_margin`` times S0's
        there), only those whose match lies beyond ``loss.consistency_high`` times S0's depth when
        ``loss.consistency_gate_far_only``; None when the gate is off."""
        lo = self.config.loss
        if not lo.consistency_photometric_gate:
            return None
        handed = self.match_warps_better_than_single(target, sources, multi, single_error * lo.consistency_gate_margin,
                                                     poses, K, uninformative)
        if lo.consistency_gate_far_only:
            match_depth = F.interpolate(multi["cost_volume_depth"].to(teacher_depth.dtype),
                                        size=tuple(teacher_depth.shape[-2:]), mode="nearest")
            handed = handed & (match_depth > lo.consistency_high * teacher_depth)
        return handed

    def handed_match_term(self, net_out: dict, handed: torch.Tensor | None) -> torch.Tensor | None:
        """``loss.handed_match_weight`` times the mean over the pixels the gate hands to the match (alone,
        so a few pixels weigh as much as the whole image's target) of ``|log D_M0 - log D_match|``; None
        when the weight is 0 or nothing is handed over."""
        weight = self.config.loss.handed_match_weight
        if weight == 0 or handed is None:
            return None
        return weight * losses.cost_volume_target_loss(net_out["depth"][0], net_out["cost_volume_depth"], handed)

    def forward(self, batch, generator):
        target, target_aug, sources, sources_aug, K, _ = self.unpack(batch)
        predicted_poses = predict_poses(self.pose, target_aug, sources_aug)
        poses = self.warping_poses(batch, predicted_poses)
        single_raw = self.single(target_aug)
        single = self.scaled(single_raw, K)
        teacher_depth = single["depth"][0].detach()
        single_terms = self.photometric_terms(target, sources, single["depth"], poses, K)
        scalars = {"single_photometric": single_terms["photometric"], "pinned_fraction": self.pinned_fraction(single_raw)}
        loss = self.add_terms(single_terms["loss"], scalars, pose_prior=self.pose_prior_term(batch, predicted_poses),
                              stereo_prior=self.stereo_prior_term(batch, single["depth"][0], "single"),
                              pose_length=self.pose_length_term(batch, predicted_poses, single["depth"][0],
                                                                self.config.train.stereo_prior_steps),
                              scale_anchor=self.scale_anchor_term(single["depth"][0]))
        images = {"depth_single": depth_image(teacher_depth)}
        if not self.multi_active():
            # The same columns in every row of the loss log (its header is fixed by the first row).
            nan = torch.full((), float("nan"), device=loss.device)
            joined_later = self.MULTI_SCALARS + (("cost_volume_target",) if self.config.loss.cost_volume_target_weight else ())
            if self.config.loss.handed_match_weight and self.config.loss.consistency_photometric_gate:
                joined_later += ("handed_match",)
            if self.config.loss.stereo_prior_network in ("multi", "both") and self.config.train.stereo_prior_steps:
                joined_later += ("multi_stereo_prior",)
            scalars.update(dict.fromkeys(joined_later, nan))
            return loss, {k: v.detach() for k, v in scalars.items()}, images

        cv_source, cv_pose, static, zeroed = self.cost_volume_inputs(
            target_aug, sources_aug[-1], poses[-1], generator
        )
        if self.training:
            joining = self.global_step == self.config.train.warmup_steps
            if joining and self.config.train.multi_from_single:
                self.multi.start_from_single(self.single, target_aug)
            with torch.no_grad():
                self.update_depth_range(self.multi, teacher_depth, first=joining)
        multi_raw = self.multi(target_aug, cv_source, cv_pose, K, zero_cost_volume=zeroed)
        multi = self.scaled(multi_raw, K)
        scalars["pinned_fraction"] = self.pinned_fraction(single_raw, multi_raw)
        multi_poses = poses if self.config.train.multi_trains_pose else {o: T.detach() for o, T in poses.items()}
        multi_terms = self.photometric_terms(target, sources, multi["depth"], multi_poses, K)
        inconsistent = masks.cost_volume_inconsistency(
            multi["cost_volume_depth"], teacher_depth,
            self.config.loss.consistency_low, self.config.loss.consistency_high,
            multi["cost_volume_valid"],
        )
        # Items whose volume saw no camera motion: the static-camera augmentation's, the zeroed ones, and
        # (loss.consistency_standing_camera) frames whose camera really stands; M0 is distilled from S0 there.
        single_frame_items = static | zeroed
        if self.config.loss.consistency_standing_camera:
            single_frame_items = single_frame_items | masks.standing_camera(
                single_terms["automask"], self.config.masks.standing_camera_fraction)
        region = inconsistent | single_frame_items[:, None, None, None]
        handed = self.pixels_handed_to_match(target, sources, multi, single_terms["reprojection_error"], poses, K,
                                             single_frame_items, teacher_depth)
        if handed is not None:
            region = region & ~handed
        consistency = losses.distillation_loss(multi["depth"][0], teacher_depth, region)
        loss = self.add_terms(loss + multi_terms["loss"] + self.config.loss.consistency_weight * consistency, scalars,
                              cost_volume_target=self.cost_volume_target_term(multi, region),
                              handed_match=self.handed_match_term(multi, handed),
                              multi_stereo_prior=self.stereo_prior_term(batch, multi["depth"][0], "multi"))
        scalars.update({
            "multi_photometric": multi_terms["photometric"],
            "consistency": consistency,
            "inconsistent_fraction": inconsistent.float().mean(),
            "d_min": self.multi.d_min,
            "d_max": self.multi.d_max,
        })
        images["depth_multi"] = depth_image(multi["depth"][0])
        return loss, {k: v.detach() for k, v in scalars.items()}, images


class TeacherStage(StageModule):
    name = "teacher"

    def __init__(self, config: Config):
        super().__init__(config)
        self.teacher = seeded_network(config, "single", lambda: build_single(config))
        self.pose = seeded_network(config, "pose", lambda: build_pose(config))

    def saved_networks(self):
        return {"teacher": self.teacher, "pose": self.pose}

    def start_from(self, pretrain_models: dict[str, dict]) -> None:
        self.teacher.load_state_dict(pretrain_models["single"])
        self.pose.load_state_dict(pretrain_models["pose"])

    def forward(self, batch, generator):
        target, target_aug, sources, sources_aug, K, dynamic = self.unpack(batch)
        poses = predict_poses(self.pose, target_aug, sources_aug)
        raw = self.teacher(target_aug)
        out = self.scaled(raw, K)
        terms = self.photometric_terms(target, sources, out["depth"], poses, K, exclude=dynamic)
        scalars = {"photometric": terms["photometric"], "smoothness": terms["smoothness"],
                   "pinned_fraction": self.pinned_fraction(raw)}
        if dynamic is not None:
            scalars["dynamic_fraction"] = dynamic.float().mean()
        pose_prior = self.pose_prior_term(batch, poses) if self.config.train.pose_prior_in_teacher else None
        loss = self.add_terms(terms["loss"], scalars, pose_prior=pose_prior,
                              stereo_prior=self.labels_term(batch, out["depth"][0],
                                                            self.config.train.stereo_prior_teacher_steps, dynamic),
                              pose_length=self.pose_length_term(batch, poses, out["depth"][0],
                                                                self.config.train.stereo_prior_teacher_steps),
                              scale_anchor=self.scale_anchor_term(out["depth"][0]))
        return loss, {k: v.detach() for k, v in scalars.items()}, {"depth": depth_image(out["depth"][0])}


class StudentStage(StageModule):
    name = "student"

    def __init__(self, config: Config):
        super().__init__(config)
        self.multi = seeded_network(config, "multi", lambda: build_multi(config, msff=config.model.msff))
        self.teacher = seeded_network(config, "single", lambda: build_single(config))
        self.pose = seeded_network(config, "pose", lambda: build_pose(config))

    def saved_networks(self):
        return {"multi": self.multi, "teacher": self.teacher, "pose": self.pose}

    def checkpoint_meta(self):
        return {"d_min": float(self.multi.d_min), "d_max": float(self.multi.d_max), "msff": self.multi.msff,
                "msff_residual": self.multi.msff_residual,
                "fine_matching": self.multi.fine_matching, "cost_hint": self.multi.cost_hint}

    def start_from(self, teacher: dict[str, dict], pose: dict[str, dict], multi: dict[str, dict] | None) -> None:
        """Teacher and pose from the teacher stage (or S0/P0), the student from M0 where shapes match."""
        self.teacher.load_state_dict(teacher)
        self.pose.load_state_dict(pose)
        if multi is not None:
            load_matching(self.multi, multi)
        if self.config.train.freeze_teacher:
            for net in (self.teacher, self.pose):
                net.requires_grad_(False)

    def cost_volume_target_weight(self) -> float:
        own = self.config.loss.student_cost_volume_target_weight
        return self.config.loss.cost_volume_target_weight if own is None else own

    def cost_volume_target_term(self, net_out: dict, untrusted: torch.Tensor,
                                match_worse: torch.Tensor | None = None) -> torch.Tensor | None:
        """The shared term, on the ``loss.cost_volume_target_sharp_fraction`` of each image's pixels whose
        match is sharpest, and not where ``match_worse`` (``(B, 1, H, W)`` bool: the lowest-cost depth
        explains the images worse than the student's depth)."""
        fraction = self.config.loss.cost_volume_target_sharp_fraction
        if "cost_volume_sharpness" in net_out:
            flat = masks.least_sharp(net_out["cost_volume_sharpness"], fraction)
            untrusted = untrusted | (F.interpolate(flat.float(), size=untrusted.shape[-2:], mode="nearest") > 0.5)
        if match_worse is not None:
            untrusted = untrusted | match_worse
        return super().cost_volume_target_term(net_out, untrusted)

    def match_explains_worse(self, target, sources, net_out: dict, student_error: torch.Tensor, poses, K):
        """Where the lowest-cost depth warps the sources worse than the student's depth, ``(B, 1, H, W)``
        bool; None unless ``loss.cost_volume_target_photometric_gate`` is on and the target weighs anything."""
        if not (self.config.loss.cost_volume_target_photometric_gate and self.cost_volume_target_weight() > 0):
            return None
        return self.match_warps_worse(target, sources, net_out, student_error, poses, K)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.config.train.freeze_teacher:
            # A frozen teacher also keeps its batch-norm statistics.
            self.teacher.eval()
            self.pose.eval()
        return self

    def forward(self, batch, generator):
        cfg = self.config.loss
        target, target_aug, sources, sources_aug, K, dynamic = self.unpack(batch)
        frozen = self.config.train.freeze_teacher
        with torch.set_grad_enabled(not frozen and self.training):
            poses = predict_poses(self.pose, target_aug, sources_aug)
            teacher = self.scaled(self.teacher(target_aug), K)
        teacher_depth = teacher["depth"][0].detach()
        cv_source, cv_pose, static, zeroed = self.cost_volume_inputs(
            target_aug, sources_aug[-1], poses[-1], generator
        )
        if self.training:
            with torch.no_grad():
                self.update_depth_range(self.multi, teacher_depth, first=self.global_step == 0)
        gated = self.config.loss.cost_volume_target_sharp_fraction < 1.0 and self.cost_volume_target_weight() > 0
        student_raw = self.multi(target_aug, cv_source, cv_pose, K, zero_cost_volume=zeroed, with_sharpness=gated)
        student = self.scaled(student_raw, K)

        exclude = dynamic if cfg.dynamic_mask else None
        terms = self.photometric_terms(target, sources, student["depth"], poses, K, exclude=exclude)
        inconsistent = masks.cost_volume_inconsistency(
            student["cost_volume_depth"], teacher_depth, cfg.consistency_low, cfg.consistency_high,
            student["cost_volume_valid"],
        )
        single_frame_items = static | zeroed
        if cfg.distill_standing_camera:
            single_frame_items = single_frame_items | masks.standing_camera(
                terms["automask"], self.config.masks.standing_camera_fraction)
        if cfg.distillation:
            if cfg.reliability_mask:
                with torch.no_grad():
                    teacher_error, _ = losses.min_reprojection_error(
                        target, sources, teacher_depth, poses, K, ssim_weight=cfg.ssim_weight
                    )
                reliable = masks.reliability_mask(teacher_error, terms["reprojection_error"].detach())
            else:
                reliable = None
            region = masks.distillation_region(
                inconsistent, dynamic, single_frame_items, reliable,
                reliability_on_dynamic=not cfg.distill_dynamic_regardless_of_reliability)
        else:
            region = inconsistent | single_frame_items[:, None, None, None]
        distill = losses.distillation_loss(student["depth"][0], teacher_depth, region)
        scalars = {
            "photometric": terms["photometric"],
            "distillation": distill,
            "distilled_fraction": region.float().mean(),
            "pinned_fraction": self.pinned_fraction(student_raw),
            "d_min": self.multi.d_min,
            "d_max": self.multi.d_max,
        }
        untrusted = inconsistent | single_frame_items[:, None, None, None]
        if exclude is not None:
            untrusted = untrusted | exclude
        loss = self.add_terms(terms["loss"] + cfg.distillation_weight * distill, scalars,
                              cost_volume_target=self.cost_volume_target_term(
                                  student, untrusted,
                                  self.match_explains_worse(target, sources, student, terms["reprojection_error"],
                                                            poses, K)),
                              stereo_prior=self.labels_term(batch, student["depth"][0],
                                                            self.config.train.stereo_prior_student_steps, dynamic))
        images = {"depth_student": depth_image(student["depth"][0]), "depth_teacher": depth_image(teacher_depth)}
        return loss, {k: v.detach() for k, v in scalars.items()}, images
