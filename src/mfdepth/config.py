"""Typed configuration: dataclasses, loaded from YAML with ``key=value`` overrides.

A config file only needs the keys it changes; everything else keeps the defaults below.
Unknown keys, wrong types and missing files raise :class:`ConfigError` with one line that names
the key or the path, so a typo in a 40-line recipe is found at once instead of after an hour of
training.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the key or file."""


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    """One of: synthetic, kitti, cityscapes, ddad, folder."""
    root: str = "data/synthetic"
    """Dataset root folder (for ``synthetic``: where ``mfdepth synth`` wrote, or will write, the world)."""
    split: str = "synthetic"
    """Split name. Each list file (train/val/test_files.txt, gt_depths.npz) is looked for in
    ``<root>/splits/<split>/`` first, then in the package's ``mfdepth/splits/<split>/`` (ships kitti_sample;
    see its README for dropping in Monodepth2's eigen / eigen_zhou lists). DDAD: optional; its dataset
    json's scene_splits are used when no such folder exists. Folders and videos have no splits."""
    height: int = 64
    width: int = 192
    frame_offsets: list[int] = field(default_factory=lambda: [0, -1, 1])
    """Frames of one training sample relative to the target; the target (0) must come first."""
    image_ext: str = "auto"
    """Image file extension (png, jpg) or auto-detect."""
    average_intrinsics: bool = False
    """KITTI: use Monodepth2's single averaged K instead of each date's P_rect (for published-number parity)."""
    camera: str = "image_02"
    """KITTI: camera of split lines that give no side (image_02 = l, image_03 = r). DDAD: the DGP camera
    name (e.g. CAMERA_01; the KITTI default image_02 means CAMERA_01)."""
    intrinsics: str | None = None
    """Folder/video data: a YAML/JSON file with K (pixels or normalised) or fx/fy/cx/cy."""
    focal_px: float | None = None
    """Folder/video data: focal length in pixels of the original frames, when no intrinsics file exists."""
    stride: int = 1
    """Take every n-th frame of a folder or video."""
    color_jitter: bool = True
    hflip: bool = True
    num_workers: int | str = "auto"
    """DataLoader worker processes, or ``auto``: none when training on a CPU whose cores all compute
    (the workers would slow each step), most cores on an accelerator (``mfdepth.data.loading``)."""
    frame_cache_mb: float = 256.0
    """Memory (MiB, per loading process) for frames kept decoded at the training resolution, so each is
    read once rather than once per sample using it; 0 = off. The demo world's training frames take 5.6 MiB."""
    test_root: str | None = None
    """Root used for the test subset instead of ``root`` (Cityscapes: the raw leftImg8bit layout with
    camera/ and disparity/, while ``root`` holds the preprocessed training triplets); None = ``root``."""
    synth_preset: str = "demo"
    """Synthetic world preset rendered on demand when ``root`` has no world yet."""


@dataclass
class ModelConfig:
    encoder_layers: int = 18
    """ResNet depth of the encoders: 18 or 50."""
    encoder_width: float = 1.0
    """Channel multiplier of every encoder's ResNet stages (1 = torchvision's ResNet, which ImageNet
    weights need; 0.5 = a quarter of the convolution FLOPs, for CPU training from scratch)."""
    pretrained_weights: str | None = None
    """Path to a torchvision ResNet state dict (ImageNet) to initialise the encoders; None = from scratch."""
    num_depth_bins: int = 48
    min_depth: float = 0.01
    max_depth: float = 100.0
    initial_depth: float | None = 0.2
    """Depth (metres) the untrained depth nets start at, by the bias of their sigmoid output; None =
    the sigmoid's midpoint (about 2 * min_depth). Lets min_depth go lower without changing the start."""
    msff: bool = True
    """Multi-scale feature fusion for matching (off = ManyDepth's single-scale matching)."""
    msff_residual: bool = True
    """The fusion's mix is added to the single-scale features and starts at zero, so the student,
    joining from the baseline M0, starts as M0 (false = the mix alone, from a random start). Three
    seeds of the synthetic recipe: the full method 0.249 against 0.256; two seeds at 3x the steps
    0.206 against 0.201, within seed noise both ways (docs/convergence.md, failure 11)."""
    matching_channels: int = 16
    """Channels of the learned projection the cost volume compares (0 = the full 1/4 features, as ManyDepth)."""
    fine_matching: bool = True
    """Also match the images themselves at full resolution, each 1/4 cell's cost averaged over its pixels,
    beside the learned 1/4-resolution cost (false = ManyDepth's cost volume alone; docs/convergence.md)."""
    fine_matching_downsample: int = 1
    """The images are matched at 1/this resolution (1, 2 or 4), each 1/4 cell's cost averaged over its
    (4/this)^2 pixels: 2 costs a quarter of the samples. With the true pose, the lowest cost's depth is within
    1.25x of the truth on 0.67 of the pixels at 192x640 against 0.70 at full resolution, but on 0.45 against
    0.70 at 64x192 (``benchmarks/cost_volume_oracle.py``): 2 in the KITTI and Cityscapes recipes, 1 at the
    synthetic recipes' 64x192."""
    cost_hint: bool = False
    """The multi-frame net also gets its lowest-cost depth (position in the hypothesis range) and its
    reliability as two input channels beside the cost volume (MultiFrameDepthNet.lowest_cost_hint)."""
    pose_downsample: int = 2
    """The pose net sees both frames average-pooled by this factor (1 = full resolution, as ManyDepth;
    2 takes a quarter of the FLOPs off a 192x640 streaming step, 10% of its time here: bench.md; on the
    synthetic recipe, three seeds, as accurate or better and the demo 1.08x faster: docs/convergence.md).
    The KITTI and Cityscapes recipes keep 1, where it is not measured."""
    adaptive_range_momentum: float = 0.99
    """Running-average momentum of the cost volume's d_min/d_max, taken from the teacher's depth."""
    range_from_teacher: bool = True
    """Set the cost volume's d_min/d_max from the teacher's depth at the multi-frame net's first step
    (then follow the running average) instead of starting the average at [min_depth, max_depth]."""
    pose_translation_scale: float = 0.01
    """Factor on the pose net's raw translation output (Monodepth2: 0.01, near-zero initial motion).
    With ``scale_normalisation`` the translations are (about) metres, and a larger factor lets them reach a metre per
    frame without the weights growing 100x first."""
    scale_normalisation: str = "none"
    """How every predicted depth map is normalised before the losses use it (and at inference), so the
    scale that monocular training leaves free cannot drift into a bound of the depth range:
    ``none`` (Monodepth2); ``ground_plane``: its fitted ground plane lies ``masks.camera_height`` below
    the camera (metres); ``lower_region``: the geometric mean depth of the lower 40% of the image equals
    that of a level road seen from ``masks.camera_height`` (about metric for a driving camera; 10 when
    the height is unknown). Both are differentiable and exactly scale-invariant (mfdepth.losses)."""


@dataclass
class LossConfig:
    ssim_weight: float = 0.85
    smoothness_weight: float = 1e-3
    automask: bool = True
    num_scales: int = 4
    full_resolution: bool = True
    """Every decoder scale's depth is upsampled and the images compared at full size (Monodepth2); false:
    scale s compares the images area-averaged to its own size (Monodepth v1, SfMLearner)."""
    dynamic_mask: bool = True
    """Exclude depth-inconsistency-mask pixels from the student's photometric loss."""
    distillation: bool = True
    """Robust knowledge distillation of the multi-frame student from the frozen robust teacher S*
    (which is always trained with the mask). Off: ManyDepth's consistency rule against the frozen
    teacher. The masks stage runs, and the teacher is the robust S*, when ``dynamic_mask`` or
    ``distillation`` is on; otherwise the teacher stage trains S0 on without masks for the same steps."""
    reliability_mask: bool = True
    """Distil only where the teacher's photometric error is no worse than the student's."""
    distillation_weight: float = 1.0
    consistency_low: float = 0.5
    consistency_high: float = 2.0
    """Cost-volume consistency rule: distil where D_cost / D_teacher is outside [low, high]."""
    consistency_weight: float = 1.0
    """Pretrain stage: weight of ManyDepth's consistency term, which distils M0 from the detached S0
    where the cost-volume rule does not trust the volume (moving objects among them)."""
    consistency_photometric_gate: bool = False
    """Pretrain stage: the consistency term leaves out the pixels whose lowest-cost depth warps the frames
    at least as well as S0's depth (the cost-volume target pulls M0 there instead, when it weighs anything).
    On an object that moves, no static-world depth explains the frames except the match's, which is the
    over-fit that METHOD.md's depth inconsistency mask looks for; ManyDepth's ratio rule alone hands those
    pixels back to S0, so M0 and S0 agree on them and the mask finds nothing (docs/convergence.md,
    failure 17)."""
    consistency_gate_far_only: bool = False
    """With the gate: only the pixels whose match lies beyond ``consistency_high`` times S0's depth leave the
    consistency term (an object driving with the camera matches far away); nearer matches stay distilled
    from S0, so M0 keeps its static pixels (docs/convergence.md, failure 18)."""
    distill_dynamic_regardless_of_reliability: bool = True
    """Student stage: the pixels of the depth inconsistency mask are distilled from S* whatever the reliability
    mask says (not METHOD.md, whose R also applies there): on a car driving with the camera a too-far depth warps
    best, so R withholds the distillation on the pixels the mask found (docs/convergence.md, failure 18)."""
    consistency_standing_camera: bool = False
    """Pretrain stage: the frames ``masks.standing_camera_fraction`` takes for a standing camera count as
    single-frame items, as the static-camera augmentation's do: M0 is distilled from S0 there, its flat
    volume is no target, and the gate hands none of their pixels to the match."""
    distill_standing_camera: bool = False
    """Student stage: the frames ``masks.standing_camera_fraction`` takes for a standing camera (found from
    the student's own auto-mask) count as static-camera frames, where METHOD.md distils M from S*: the whole
    frame joins the distillation region (still under R) and its flat volume is no target."""
    consistency_gate_margin: float = 1.0
    """With the gate: a pixel leaves the consistency term only where its match's photometric error is at most
    this times S0's (1 = as well or better; smaller = clearly better, as on an object driving with the
    camera, not on a textureless patch where any depth warps alike) (docs/convergence.md, failure 18)."""
    handed_match_weight: float = 0.0
    """With the gate: weight of a cost-volume target on the pixels the gate hands to the match alone (mean
    over them, not over the whole image as in ``cost_volume_target_weight``), so that M0 follows its match
    there within a short pretrain stage; 0 = off (docs/convergence.md, failure 18)."""
    cost_volume_target_weight: float = 1.0
    """Where that rule trusts the cost volume (and the item's volume is informative), the multi-frame
    net is pulled toward the volume's lowest-cost depth with this weight (pretrain and student stages;
    0 = off). Makes following the match a direct target rather than one the photometric loss must find
    (docs/convergence.md, failure 8: without it the net ignores its cost volume)."""
    student_cost_volume_target_weight: float | None = None
    """The same weight in the student stage alone; null = ``cost_volume_target_weight``. Once the net reads
    its volume, the raw lowest-cost depth is a noisier target than the student's own depth (and a wrong
    one on objects that move): 0 lets the student use its volume through the photometric loss only
    (docs/convergence.md, failure 12)."""
    cost_volume_target_sharp_fraction: float = 1.0
    """Student stage: the share of each image's pixels, sharpest match first
    (:func:`mfdepth.models.cost_volume.match_sharpness`), that the cost-volume target may pull; 1 = every
    trusted pixel. A moving object's match is flat (no static-world depth explains it), so a smaller share
    keeps the target on the static scene (docs/convergence.md, failure 12)."""
    cost_volume_target_photometric_gate: bool = False
    """Student stage: the cost-volume target only where the lowest-cost depth explains the images at least
    as well as the student's own depth (minimum reprojection error, as the reliability mask of the
    distillation): once the student beats its raw match somewhere, the match stops pulling it there
    (docs/convergence.md, failure 12)."""
    pose_prior_weight: float = 1.0
    """Weight of the two-view pose prior (rotation and translation direction from classical geometry)
    on the pose net during the first ``train.pose_prior_steps`` steps of each stage that trains it."""
    stereo_prior_weight: float = 1.0
    """Weight of the plane-sweep depth labels (``losses.stereo_prior_loss``) in every stage that uses them
    (``train.stereo_prior_steps``, ``stereo_prior_teacher_steps``, ``stereo_prior_student_steps``)."""
    stereo_prior_network: str = "both"
    """Which pretrain net the labels supervise: ``single`` (S0, from the first step), ``multi`` (M0, once
    it joins; S0 then learns from the photometric loss alone, so the two disagree where the labels are
    wrong: on moving objects, which the depth inconsistency mask is to find) or ``both`` (S0 from the first
    step, M0 once it joins: with labels past the warm-up, M0 is not left behind S0)."""
    stereo_prior_band: float = 0.0
    """When > 1, a label more than this factor off the single-frame depth (after the image's scale) is
    ignored (``losses.stereo_prior_loss``); 0 = every label counts."""
    scale_anchor_weight: float = 0.1
    """Weight of ``losses.scale_anchor_loss`` on the single-frame depth (S0 in the pretrain stage, the teacher
    in its own): the batch's mean log depth held at ``model.initial_depth``, the scale the photometric
    loss leaves free (at a high learning rate it slides into the depth range's lower bound;
    docs/convergence.md, failure 13); 0 = off."""
    pose_length_weight: float = 0.1
    """Weight of ``losses.pose_length_loss`` while the labels are on (pretrain ``train.stereo_prior_steps``,
    teacher ``train.stereo_prior_teacher_steps``): the pose net's translation length pulled toward the one
    the labels give for the single-frame depth, which keeps the two scales consistent on every sequence
    (docs/convergence.md, failure 10: a pose net blind to the speed put one seed's slow sequences 4.5x
    off); 0 = off."""


MASK_DEPTH_SOURCES = ("multi", "two_way_match")
"""The values of ``masks.depth_source``."""


@dataclass
class MaskConfig:
    """The depth inconsistency mask's rule (METHOD.md; :func:`mfdepth.masks.compute_dynamic_mask`). The defaults
    are the CPU demo's: D_o from the two-way match, the upper side only, no ground check, blobs under 20 px
    dropped, no mask on standing frames (docs/convergence.md, failures 17-19). METHOD.md's rule, kept in
    ``configs/kitti.yaml`` and ``configs/cityscapes.yaml``: ``depth_source: multi``, ``lower_ratio: 0.85``,
    ``ground_check: true``, ``min_blob_area: 0``, ``standing_camera_fraction: 0``."""

    upper_ratio: float = 2.0
    lower_ratio: float = 0.0
    """Flag where D_o < lower_ratio * D_r too (paper: 0.85; 0 = the upper side only: at 64x192 S0 and M0 differ
    by over 15% on a quarter of the static pixels, docs/convergence.md, failure 17)."""
    align_median: bool = True
    ground_check: bool = False
    """Unflag pixels whose D_r point lies on the fitted ground plane (paper: on; it unflags the cars' lower
    half too, failure 17)."""
    camera_height: float | None = None
    """Known camera height in metres (KITTI 1.65); None = estimated from the ground plane fit."""
    ground_tolerance: float = 0.15
    """Relative tolerance on the height above the fitted ground plane (fraction of camera height)."""
    min_blob_area: int = 20
    dilation: int = 2
    """Grow the rule's flags by this many pixels before the later stages read them (METHOD.md step 4,
    optional; paper: none given). The flags miss the cars' outline, where S0 gives a car pixel the
    background's depth; at 2 the teacher stops learning it back there: the demo's full method better on all
    and moving pixels on every seed (moving 0.394 / 0.399 / 0.357 against 0.450 / 0.438 / 0.371), the
    training-frame IoU 0.28-0.29 against the rule's own 0.32-0.33 (docs/convergence.md, failure 19)."""
    depth_source: str = "two_way_match"
    """D_o, the depth the rule compares with S0's: ``multi`` (METHOD.md: M0's output) or ``two_way_match``
    (the nearer of M0's lowest-cost depths matched against the previous and against the next frame, where
    it warps the source frames better than S0's depth does; M0's output elsewhere;
    :func:`mfdepth.masks.two_way_match_depth`). A car driving with the camera matches far against
    either neighbour, a static pixel's false far match seldom against both; and the match shows the cars'
    motion where an M0 trained for few joint steps has not yet learned to follow it (docs/convergence.md,
    failure 19: the demo's training-frame mask 0.32-0.33 against 0.005-0.011, the full method better on every
    seed). Needs the frame +1 (``data.frame_offsets``); without it D_o is M0's output, with a warning
    (:func:`mask_depth_source`)."""
    standing_camera_fraction: float = 0.9
    """A training frame in which at least this share of the pixels match better unwarped than warped with
    S0's depth (Monodepth2's auto-mask) is taken as a standing camera (:func:`mfdepth.masks.standing_camera`):
    the masks stage writes an empty mask for it (M0's cost volume saw no parallax, so its depth says nothing
    about motion), and with ``loss.consistency_standing_camera`` the pretrain stage treats its cost volume
    as the static-camera augmentation's. The pose net's translation cannot tell such frames
    (docs/convergence.md, failure 18); 0 = off."""


@dataclass
class TrainConfig:
    batch_size: int = 4
    learning_rate: float = 2e-4
    lr_decay_step: int = 0
    """Steps between 10x learning-rate drops; 0 = constant (``lr_schedule: step``)."""
    lr_schedule: str = "cosine"
    """step (10x drops every lr_decay_step) or cosine (from learning_rate down to 1% over each stage)."""
    lr_warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over the first steps of each stage."""
    pretrain_learning_rate: float | None = 5e-4
    """The pretrain stage's peak rate (S0, M0 and the pose net); None = ``learning_rate``. From scratch the
    networks learn faster at 5e-4 than at Monodepth2's 2e-4 (set for ImageNet-started encoders): the
    demo's full method 0.236 against 0.256 on three seeds, with ``loss.scale_anchor_weight`` holding the
    scale (docs/convergence.md, failure 13)."""
    teacher_learning_rate: float | None = None
    """The teacher stage's peak rate; None = ``learning_rate``. A lower one keeps more of what the
    labelled pretrain stage taught S0 (docs/convergence.md, failures 10 and 11)."""
    student_learning_rate: float | None = None
    """The student stage's peak rate; None = ``learning_rate``."""
    pose_learning_rate_scale: float = 1.0
    """The pose net's rate as a fraction of its stage's, in every stage where it trains (pretrain,
    teacher): at the demo's pretrain rate the pose net drifts once its two-view prior lets go, at 0.4x it
    does not (0.4 in the long recipe; docs/convergence.md, failure 14)."""
    pose_learning_rate_scale_after_prior: bool = False
    """Apply ``pose_learning_rate_scale`` only once the two-view prior stops supervising the pose net (from
    step ``pose_prior_steps`` of a stage on): the pose net converges at the full rate while the prior
    holds it, and moves slower once only the photometric loss does (docs/convergence.md, failure 14)."""
    multi_from_single: bool = True
    """Pretrain stage: the multi-frame net joins as a copy of the single-frame net whose cost-volume
    weights are zero (:meth:`MultiFrameDepthNet.start_from_single`), instead of from its own random
    start: it begins as good as S and has only to learn what the cost volume adds. On by default since the
    demo's warm-up became 750 of its 1000 pretrain steps: from a random start M0 then ends behind S0 on
    static pixels (docs/convergence.md, failure 16)."""
    lr_per_network: bool = True
    """Each network's schedule runs over its own steps: the multi-frame net, joining the pretrain stage
    after ``warmup_steps``, starts at the full rate instead of where the shared decay has got to."""
    warmup_steps: int = 750
    """Pretrain stage: the single-frame and pose nets train alone this many steps before the
    multi-frame net joins (its cost volume needs a sensible pose and depth range first)."""
    multi_trains_pose: bool = False
    """Pretrain stage: the multi-frame net's photometric loss also trains the pose net (ManyDepth).
    Off: the pose net learns from the single-frame net's loss (and the prior) only, so a multi-frame
    net that has just joined with a random decoder cannot pull the shared pose away."""
    pose_prior_steps: int = 750
    """Steps of each pose-training stage in which the two-view pose prior (mfdepth.data.two_view)
    supervises the pose net; 0 = no prior (nothing is computed)."""
    pose_prior_in_teacher: bool = True
    """The prior supervises the pose net in the teacher stage too (its first ``pose_prior_steps``), not
    only in the pretrain stage. The teacher's pose net starts trained, closer to the truth than the prior:
    at the long budget the prior pulls it from 0.6 to 5.4 deg (docs/convergence.md, failure 15)."""
    pose_prior_warp_steps: int = 150
    """Pretrain stage (its pose net starts from scratch): steps in which the photometric loss warps
    with the two-view prior's rotation and translation direction (the pose net's translation length
    kept, so the depth scale is still learned) instead of the pose net's own, while the prior
    supervises the pose net; only within the prior's ``pose_prior_steps`` (0 there turns both off).
    The depth net then never learns from a wrong early pose (docs/convergence.md, failure 7)."""
    stereo_prior_steps: int = 1000
    """Steps of the pretrain stage during which plane-sweep depth labels, computed once from the frames and
    the two-view pose prior (``mfdepth.training.stereo_prior``), supervise the shape of the pretrain nets
    that ``loss.stereo_prior_network`` names; 0 = off. They need the pose prior (``pose_prior_steps`` > 0)
    and the frames -1 and +1; without those the run trains without labels and says so
    (:func:`stereo_prior_unavailable`). On the synthetic world
    every network of every seed is better on all and static pixels and worse on moving ones; on the real
    HoloLens clip far better (docs/convergence.md, failure 9)."""
    stereo_prior_teacher_steps: int = 0
    """Steps of the teacher stage during which the same labels supervise the robust teacher S*'s shape (none
    on a cell the depth inconsistency mask touches); 0 = off. Without them the teacher stage's photometric
    loss undoes part of what S0 learned from the labels, but with them S* learns the cars the mask misses
    too far, and the student inherits it (docs/convergence.md, failure 9)."""
    stereo_prior_student_steps: int = 0
    """Steps of the student stage during which the labels supervise the multi-frame student's shape (none on
    a cell the depth inconsistency mask touches); 0 = off."""
    stereo_prior_fade_steps: int = 0
    """The labels' weight falls linearly to 0 over the last this many of their steps, in every stage that
    uses them, instead of stopping at once; 0 = a hard stop. When labels stop, the photometric loss alone
    pulls a label-trained net away from where they held it (docs/convergence.md, failure 9)."""
    stereo_prior_identity_margin: float | None = 0.25
    """With ``stereo_prior_steps``: a 1/4-grid cell whose unwarped neighbour frame matches within ``1 +
    margin`` times its best depth hypothesis's cost gets no label (an auto-mask: what moves with the camera
    has no parallax to measure); None = no such check."""
    pretrain_steps: int = 1000
    teacher_steps: int = 600
    student_steps: int = 200
    """The demo's split of its post-pretrain steps: the teacher still improves past 400 steps and the student
    ends level with it on the mask's pixels, so 600 / 200 instead of 400 / 400 (docs/convergence.md, "Where the
    recipe stands": on five seeds the mean AbsRel 0.168 against 0.170, moving pixels 30-50% below M0 on every
    one, the two stages 25-57 s shorter)."""
    seed: int = 0
    accelerator: str = "auto"
    """auto, cpu or gpu."""
    strategy: str = "auto"
    """auto or ddp (launch with torchrun for several GPUs)."""
    precision: str = "auto"
    """auto, 32, 16-mixed (GPU only; ignored on CPU) or bf16-mixed (GPU or CPU). Geometry stays float32.
    auto: bf16-mixed on a CPU with bfloat16 hardware (AMX or AVX512-BF16; about 1.25x per step, accuracy
    within seed noise: docs/convergence.md), 32 on other CPUs and on GPUs. Checkpoints record the choice."""
    checkpoint_every: int = 100
    """Steps between two rolling checkpoints (with the optimiser state, for resuming). The pretrain
    stage's is 660 MB and takes about 2 s to write on the 2-core host: every 100 steps costs ~2% of a
    CPU step's time, and an interruption loses at most ~2 minutes."""
    log_every: int = 5
    image_log_every: int = 50
    static_camera_prob: float = 0.25
    zero_cost_volume_prob: float = 0.25
    freeze_teacher: bool = True
    grad_clip: float = 1.0
    """Clip the norm of all the stage's gradients together to this (0 = off). 1.0 in the CPU recipe: without it
    the demo's seed 1 collapsed into the depth range's lower bound in float32, and with it all three seeds
    ended 0.162-0.180 there (docs/convergence.md, "Where the recipe stands")."""
    collapse_guard_steps: int = 50
    """Stop a stage, as a NaN loss does, once ``collapse_guard_fraction`` of its trained depth's pixels have sat
    at a bound of [``model.min_depth``, ``model.max_depth``] for this many consecutive steps: the sigmoid
    saturates there and nothing learns again (docs/convergence.md, "Where the recipe stands"). 0 = off."""
    collapse_guard_fraction: float = 0.95
    ema_decay: float = 0.99
    """Exponential moving average of every network's weights with this decay per step (0 = off); the
    checkpoints' networks are the averages (raw weights kept for resuming). See StageModule."""


@dataclass
class EvalConfig:
    protocol: str = "synthetic"
    """synthetic, kitti, cityscapes or folder."""
    median_scaling: bool = True
    min_depth: float = 1e-3
    max_depth: float = 80.0
    batch_size: int = 4


@dataclass
class Config:
    """The defaults are the CPU-sized recipe on the synthetic world (``configs/synthetic.yaml``); the
    KITTI and Cityscapes recipes in ``configs/`` set the paper's sizes (96 hypotheses, 640x192, ...)."""

    run_dir: str = "runs/synthetic"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------------------------------------
# Building dataclasses from plain data, with type checks


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert the harmless cases (int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return _from_dict(tp, value, prefix=f"{key}.")
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as text; a number is clearly meant.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected text, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"unknown config key '{prefix}{key}' (known here: {known})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


_YAML_NULLS = ("", "~", "null", "Null", "NULL")


def _override_type(key: str) -> Any:
    """The annotation of the config field a dotted ``key`` names, or None when it names no field."""
    tp: Any = Config
    for part in key.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _is_text_field(tp: Any) -> bool:
    """``str`` or ``str | None``: such values are taken literally, never parsed as YAML."""
    if tp is str:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return str in typing.get_args(tp) and all(a in (str, type(None)) for a in typing.get_args(tp))
    return False


def parse_override(text: str) -> dict:
    """``"train.batch_size=8"`` -> ``{"train": {"batch_size": 8}}``.

    The value is parsed as YAML, except for text settings (paths, names: ``run_dir``, ``data.root``,
    ...), which are taken literally, so ``run_dir=runs/exp #2`` keeps its ``#2``. An optional text
    setting given ``null`` (or nothing) is unset.
    """
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (for example train.batch_size=8)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    target = _override_type(key)
    if target is not None and _is_text_field(target):
        optional = target is not str
        value = None if optional and raw.strip() in _YAML_NULLS else raw
    else:
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override '{text}': value is not valid YAML ({err.__class__.__name__})") from None
    nested: dict = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings at the top level")
    return data


def mask_depth_source(config: Config) -> tuple[str, str | None]:
    """The D_o the masks stage and the judge use with ``config``, and why it is not ``masks.depth_source``
    (None when it is): the two-way match needs the frame +1, without which D_o is M0's output."""
    source, offsets = config.masks.depth_source, list(config.data.frame_offsets)
    if source == "two_way_match" and 1 not in offsets:
        return "multi", f"the two-way match needs the frame +1 (data.frame_offsets, now {offsets})"
    return source, None


def stereo_prior_unavailable(config: Config) -> str | None:
    """Why ``train.stereo_prior_steps`` (or the teacher's or student's) cannot give labels with ``config``
    (None when it can)."""
    t, offsets = config.train, config.data.frame_offsets
    if not t.pose_prior_steps:
        return "they need the two-view pose prior (train.pose_prior_steps > 0, now 0)"
    if not {-1, 1} <= set(offsets):
        return f"they need the frames -1 and +1 (data.frame_offsets, now {list(offsets)})"
    return None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if given), then each ``key=value`` override."""
    data: dict = {}
    if path is not None:
        data = _without_retired(read_yaml(path))
        try:
            _from_dict(Config, data)  # a bad key or type in the file names the file
        except ConfigError as err:
            raise ConfigError(f"config file {path}: {err}") from None
    for text in overrides:
        data = _merge(data, parse_override(text))
    config = _from_dict(Config, data)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Cross-field checks that a type alone cannot express."""
    if config.data.frame_offsets[:1] != [0]:
        raise ConfigError("data.frame_offsets: the target frame 0 must come first, e.g. [0, -1, 1]")
    if config.data.height % 32 or config.data.width % 32:
        raise ConfigError(
            f"data.height/data.width: {config.data.height}x{config.data.width} must be multiples of 32"
        )
    if config.model.encoder_layers not in (18, 50):
        raise ConfigError(f"model.encoder_layers: {config.model.encoder_layers} is not one of 18, 50")
    width = config.model.encoder_width
    if not (isinstance(width, (int, float)) and 0.0 < width <= 4.0):
        raise ConfigError(f"model.encoder_width: {width!r} must be a number in (0, 4] (1 = the standard ResNet)")
    if width != 1.0 and config.model.pretrained_weights:
        raise ConfigError(
            f"model.encoder_width={width} with model.pretrained_weights: ImageNet weights fit width 1 only; "
            "set model.encoder_width=1 or model.pretrained_weights=null"
        )
    if config.loss.stereo_prior_network not in ("single", "multi", "both"):
        raise ConfigError(f"loss.stereo_prior_network: '{config.loss.stereo_prior_network}' is not one of single, "
                          "multi, both")
    if config.loss.stereo_prior_band and config.loss.stereo_prior_band <= 1.0:
        raise ConfigError(f"loss.stereo_prior_band: {config.loss.stereo_prior_band} must be 0 (off) or above 1, e.g. 2")
    margin = config.train.stereo_prior_identity_margin
    if margin is not None and not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ConfigError(f"train.stereo_prior_identity_margin: {margin!r} must be null (off) or a number >= 0, e.g. 0.25")
    if config.model.fine_matching_downsample not in (1, 2, 4):
        raise ConfigError(f"model.fine_matching_downsample: {config.model.fine_matching_downsample} must be 1, 2 or 4")
    if config.model.pose_downsample < 1:
        raise ConfigError(f"model.pose_downsample: {config.model.pose_downsample} must be 1 or more")
    if not 0 < config.model.min_depth < config.model.max_depth:
        raise ConfigError("model.min_depth/max_depth: need 0 < min_depth < max_depth")
    if config.masks.lower_ratio >= 1.0 or config.masks.upper_ratio <= 1.0:
        raise ConfigError("masks.lower_ratio must be < 1 and masks.upper_ratio > 1")
    if config.masks.depth_source not in MASK_DEPTH_SOURCES:
        raise ConfigError(f"masks.depth_source: '{config.masks.depth_source}' is not one of "
                          f"{', '.join(MASK_DEPTH_SOURCES)}")
    if config.train.lr_schedule not in ("step", "cosine"):
        raise ConfigError(f"train.lr_schedule: '{config.train.lr_schedule}' is not one of step, cosine")
    if config.model.scale_normalisation not in ("none", "ground_plane", "lower_region"):
        raise ConfigError(
            f"model.scale_normalisation: '{config.model.scale_normalisation}' is not one of none, ground_plane, "
            "lower_region"
        )
    if config.model.scale_normalisation == "ground_plane" and config.masks.camera_height is None:
        raise ConfigError(
            "model.scale_normalisation=ground_plane needs the camera height: set masks.camera_height "
            "(metres; KITTI 1.65)"
        )
    # Every number must be finite: a NaN or inf setting only shows up hours later, as a NaN loss.
    for section in dataclasses.fields(config):
        group = getattr(config, section.name)
        if not dataclasses.is_dataclass(group):
            continue
        for item in dataclasses.fields(group):
            value = getattr(group, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{section.name}.{item.name}: {value} is not a finite number; give a real value")
    d, m, t, e, lo = config.data, config.model, config.train, config.eval, config.loss

    def at_least(key: str, value: int, low: int, fix: str = "") -> None:
        if value < low:
            raise ConfigError(f"{key}: {value} must be {low} or more{fix}")

    at_least("data.height", d.height, 32)
    at_least("data.width", d.width, 32)
    if d.num_workers != "auto":
        if not isinstance(d.num_workers, int):
            raise ConfigError(f"data.num_workers: {d.num_workers!r} must be auto or an integer (0 = load data in "
                              "the main process)")
        at_least("data.num_workers", d.num_workers, 0, " (0 = load data in the main process)")
    at_least("data.stride", d.stride, 1, " (1 = every frame)")
    at_least("model.num_depth_bins", m.num_depth_bins, 2, " (depth hypotheses of the cost volume; 48 or 96)")
    at_least("model.matching_channels", m.matching_channels, 0, " (0 = the full 1/4 features)")
    for key in ("batch_size", "pretrain_steps", "teacher_steps", "student_steps",
                "checkpoint_every", "log_every", "image_log_every"):
        at_least(f"train.{key}", getattr(t, key), 1)
    for key in ("lr_decay_step", "lr_warmup_steps", "warmup_steps", "pose_prior_steps", "pose_prior_warp_steps",
                "stereo_prior_steps", "stereo_prior_teacher_steps", "stereo_prior_student_steps",
                "stereo_prior_fade_steps"):
        at_least(f"train.{key}", getattr(t, key), 0, " (0 = off)")
    at_least("eval.batch_size", e.batch_size, 1)
    if not 1 <= lo.num_scales <= 4:
        raise ConfigError(f"loss.num_scales: {lo.num_scales} is not between 1 and 4")
    at_least("masks.min_blob_area", config.masks.min_blob_area, 0)
    at_least("masks.dilation", config.masks.dilation, 0)
    if not 0.0 <= config.masks.standing_camera_fraction <= 1.0:
        raise ConfigError(f"masks.standing_camera_fraction: {config.masks.standing_camera_fraction} must be between "
                          "0 (off) and 1")
    for key in ("consistency_standing_camera", "distill_standing_camera"):
        if getattr(lo, key) and config.masks.standing_camera_fraction == 0:
            raise ConfigError(f"loss.{key} needs masks.standing_camera_fraction > 0 to find the standing frames "
                              "(e.g. masks.standing_camera_fraction=0.9)")
    if len(set(d.frame_offsets)) != len(d.frame_offsets) or -1 not in d.frame_offsets:
        raise ConfigError(
            f"data.frame_offsets: {d.frame_offsets} must list distinct offsets and include the previous "
            "frame -1 (the multi-frame net matches against it), e.g. [0, -1, 1] or [0, -1]"
        )
    if d.focal_px is not None and d.focal_px <= 0:
        raise ConfigError(f"data.focal_px: {d.focal_px} must be a positive focal length in pixels")
    if not t.learning_rate > 0:
        raise ConfigError(f"train.learning_rate: {t.learning_rate} must be positive (e.g. 2e-4)")
    for key in ("pretrain_learning_rate", "teacher_learning_rate", "student_learning_rate"):
        rate = getattr(t, key)
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"train.{key}: {rate} must be positive (e.g. 5e-5), or null for train.learning_rate")
    if not (math.isfinite(t.pose_learning_rate_scale) and t.pose_learning_rate_scale > 0):
        raise ConfigError(f"train.pose_learning_rate_scale: {t.pose_learning_rate_scale} must be positive "
                          "(1 = the stage's rate)")
    if t.collapse_guard_steps < 0:
        raise ConfigError(f"train.collapse_guard_steps: {t.collapse_guard_steps} must be 0 (off) or a number of steps")
    if not 0 < t.collapse_guard_fraction <= 1:
        raise ConfigError(f"train.collapse_guard_fraction: {t.collapse_guard_fraction} must be in (0, 1]")
    if t.grad_clip < 0:
        raise ConfigError(f"train.grad_clip: {t.grad_clip} must be 0 (off) or positive")
    for key in ("static_camera_prob", "zero_cost_volume_prob"):
        if not 0.0 <= getattr(t, key) <= 1.0:
            raise ConfigError(f"train.{key}: {getattr(t, key)} is a probability, between 0 and 1")
    if not 0.0 <= m.adaptive_range_momentum <= 1.0:
        raise ConfigError(f"model.adaptive_range_momentum: {m.adaptive_range_momentum} must be between 0 and 1")
    for key in ("ssim_weight", "smoothness_weight", "distillation_weight", "consistency_weight", "pose_prior_weight",
                "cost_volume_target_weight", "handed_match_weight", "consistency_gate_margin", "stereo_prior_weight", "pose_length_weight", "scale_anchor_weight"):
        if getattr(lo, key) < 0:
            raise ConfigError(f"loss.{key}: {getattr(lo, key)} must be 0 or more")
    if not 0.0 < lo.cost_volume_target_sharp_fraction <= 1.0:
        raise ConfigError(f"loss.cost_volume_target_sharp_fraction: {lo.cost_volume_target_sharp_fraction} must be "
                          "in (0, 1] (1 = every trusted pixel)")
    if lo.student_cost_volume_target_weight is not None:
        if not (math.isfinite(lo.student_cost_volume_target_weight) and lo.student_cost_volume_target_weight >= 0):
            raise ConfigError(f"loss.student_cost_volume_target_weight: {lo.student_cost_volume_target_weight} "
                              "must be 0 or more, or null for loss.cost_volume_target_weight")
    if not 0 < lo.consistency_low < lo.consistency_high:
        raise ConfigError("loss.consistency_low/consistency_high: need 0 < consistency_low < consistency_high")
    if config.masks.camera_height is not None and config.masks.camera_height <= 0:
        raise ConfigError(f"masks.camera_height: {config.masks.camera_height} must be positive (metres; KITTI 1.65)")
    if config.masks.ground_tolerance < 0:
        raise ConfigError(f"masks.ground_tolerance: {config.masks.ground_tolerance} must be 0 or more")
    if not 0 < e.min_depth < e.max_depth:
        raise ConfigError(
            f"eval.min_depth/max_depth: need 0 < min_depth < max_depth (got {e.min_depth} and {e.max_depth})"
        )
    choices = {
        "data.dataset": (d.dataset, ("synthetic", "kitti", "cityscapes", "ddad", "folder")),
        "data.synth_preset": (d.synth_preset, ("tiny", "demo")),
        "eval.protocol": (e.protocol, ("synthetic", "kitti", "cityscapes", "folder")),
        "train.accelerator": (t.accelerator, ("auto", "cpu", "gpu")),
        "train.strategy": (t.strategy, ("auto", "ddp")),
        "train.precision": (t.precision, ("auto", "32", "16-mixed", "bf16-mixed")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}: '{value}' is not one of {', '.join(allowed)}")


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


RETIRED_KEYS: dict[str, tuple[str, ...]] = {"train": ("devices",)}
"""Keys that earlier versions wrote into saved configs (checkpoints, config.yaml) and nothing read:
dropped when such a config is read back, refused as overrides."""


def _without_retired(data: dict) -> dict:
    out = dict(data)
    for section, keys in RETIRED_KEYS.items():
        if isinstance(out.get(section), dict) and any(key in out[section] for key in keys):
            out[section] = {k: v for k, v in out[section].items() if k not in keys}
    return out


def config_from_dict(data: dict) -> Config:
    """Rebuild a Config from ``to_dict`` output (for example a checkpoint's metadata)."""
    config = _from_dict(Config, _without_retired(data))
    validate(config)
    return config


def save_config(config: Config, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def apply_overrides(config: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """A copy of ``config`` with ``key=value`` overrides applied and validated."""
    data = to_dict(config)
    for text in overrides:
        data = _merge(data, parse_override(text))
    config = _from_dict(Config, data)
    validate(config)
    return config
