"""The optimisation loop: devices, DDP, mixed precision, logging, atomic checkpoints, exact resume.

The loop knows nothing of depth: a stage is an ``nn.Module`` whose ``forward(batch, generator)``
returns ``(loss, scalars, images)`` (see :class:`mfdepth.training.stages.StageModule`). The loop
owns everything else, each part a small collaborator of :func:`fit` (:func:`setup_runtime`,
:func:`make_optimizer`, :class:`Schedule`, :class:`Checkpointer`, :class:`TrainingLog`,
:func:`epoch_batches`), and keeps the run reproducible:

* Data order is a pure function of ``(seed, epoch)``; randomness inside a step comes from a generator
  seeded with ``(seed, step)``; the learning rate is a pure function of ``step``. So a run resumed
  from its last checkpoint continues with exactly the batches and random draws it would have had.
* Checkpoints are written atomically every ``train.checkpoint_every`` steps (once the next step's loss
  is finite), on Ctrl-C, and at the end; the final one holds no optimizer state.
* A non-finite loss stops the run, names the step and the sample ids, and leaves the last good
  checkpoint in place; a checkpoint with non-finite weights is never resumed.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from mfdepth.checkpoint import (
    CheckpointError,
    load_checkpoint,
    make_meta,
    non_finite_entries,
    remove_stale_temporaries,
    save_checkpoint,
)
from mfdepth.config import to_dict
from mfdepth.data.base import collate_samples
from mfdepth.data.errors import DataError, unwrap_worker_error
from mfdepth.data.loading import loader_workers
from mfdepth.devices import cpu_computes_bfloat16, resolve_device
from mfdepth.run_layout import checkpoint_paths, logs_dir, loss_log_path, tensorboard_dir

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class DepthCollapseError(RuntimeError):
    """The trained depth sat at a bound of its range for ``train.collapse_guard_steps`` steps."""


# ---------------------------------------------------------------------------------------------
# Devices and processes


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    autocast_dtype: torch.dtype | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def precision(self) -> str:
        """The arithmetic the networks run in, as a ``train.precision`` value (``auto`` resolved)."""
        return {torch.float16: "16-mixed", torch.bfloat16: "bf16-mixed"}.get(self.autocast_dtype, "32")


def setup_runtime(accelerator: str, strategy: str, precision: str) -> Runtime:
    """Pick the device, join a process group when launched by ``torchrun``, choose autocast."""
    if accelerator not in ("auto", "cpu", "gpu"):
        raise ValueError(f"train.accelerator: '{accelerator}' is not one of auto, cpu, gpu")
    device = resolve_device(accelerator, "train.accelerator", local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device.type == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if strategy not in ("auto", "ddp"):
        raise ValueError(f"train.strategy: '{strategy}' is not one of auto, ddp")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(device)
    dtypes = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
    if precision not in (*dtypes, "auto"):
        raise ValueError(f"train.precision: '{precision}' is not one of auto, {', '.join(dtypes)}")
    if precision == "auto":
        # Measured on CPUs only (docs/convergence.md); a GPU keeps float32 unless asked.
        precision = "bf16-mixed" if not use_cuda and cpu_computes_bfloat16() else "32"
    # float16 needs a GPU's loss scaling and kernels; bfloat16 keeps float32's range and runs on CPUs too.
    autocast_dtype = dtypes[precision] if use_cuda or precision == "bf16-mixed" else None
    return Runtime(device=device, rank=rank, world_size=world_size, autocast_dtype=autocast_dtype)


# ---------------------------------------------------------------------------------------------
# Data order


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of one epoch in an order fixed by ``(seed, epoch)``, sharded over ranks.

    ``skip_batches`` starts the epoch part-way through, which is how a resumed run continues.
    Incomplete final batches are dropped so every rank sees the same number of equal batches.
    """

    def __init__(self, num_items, batch_size, seed, epoch, rank=0, world_size=1, skip_batches=0, shuffle=True):
        self.num_items, self.batch_size = num_items, batch_size
        self.seed, self.epoch, self.skip_batches, self.shuffle = seed, epoch, skip_batches, shuffle
        self.rank, self.world_size = rank, world_size

    @staticmethod
    def batches_per_epoch(num_items: int, batch_size: int, world_size: int = 1) -> int:
        return num_items // (batch_size * world_size)

    def __len__(self) -> int:
        total = self.batches_per_epoch(self.num_items, self.batch_size, self.world_size)
        return max(total - self.skip_batches, 0)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        per_step = self.batch_size * self.world_size
        total = self.batches_per_epoch(self.num_items, self.batch_size, self.world_size)
        for b in range(self.skip_batches, total):
            chunk = order[b * per_step : (b + 1) * per_step]
            yield chunk[self.rank :: self.world_size]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random source of one optimisation step (augmentation choices inside the stage)."""
    return torch.Generator().manual_seed(seed * 7_919 + step * 104_729 + 17)


def learning_rate(base: float, step: int, decay_step: int, schedule: str = "step", total_steps: int = 0,
                  warmup_steps: int = 0) -> float:
    """The learning rate of optimisation step ``step`` (0-based) of a stage of ``total_steps`` steps.

    ``step``: 10x smaller every ``decay_step`` steps (0 = constant). ``cosine``: half a cosine from
    ``base`` down to ``base / 100`` at ``total_steps``. Either is multiplied by a linear warm-up
    ``(step + 1) / warmup_steps`` over the first ``warmup_steps`` steps.
    """
    if schedule == "cosine" and total_steps > 0:
        progress = min(step / total_steps, 1.0)
        rate = base * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))
    else:
        rate = base * (0.1 ** (step // decay_step)) if decay_step > 0 else base
    if warmup_steps > 0 and step < warmup_steps:
        rate *= (step + 1) / warmup_steps
    return rate


def move_to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# The loop


def parameter_groups(module) -> list[dict]:
    """The trainable parameters of a stage, one group per network (``"network"``: its name)."""
    groups, seen = [], set()
    for name, net in module.saved_networks().items():
        params = [p for p in net.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "network": name})
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        groups.append({"params": rest, "network": None})
    return groups


def make_optimizer(groups: list[dict], train_cfg) -> torch.optim.Optimizer:
    """The optimiser of every stage: Adam at ``train.learning_rate`` (:class:`Schedule` sets each step's rate).

    Adam's fused kernel where the parameters' device has one (CPU and CUDA): its default on CPU is a
    Python loop over the parameter tensors, 0.15 s of a 1 s pretrain step on 2 cores against 0.03 s
    fused (``benchmarks/optimizer_step.py``). The multi-tensor version elsewhere."""
    try:
        return torch.optim.Adam(groups, lr=train_cfg.learning_rate, fused=True)
    except RuntimeError:  # a device without the fused kernel
        return torch.optim.Adam(groups, lr=train_cfg.learning_rate, foreach=True)


def stage_learning_rate_key(train_cfg, stage: str | None) -> str:
    """The config key that sets a stage's peak learning rate: ``<stage>_learning_rate`` where that is
    set, else ``learning_rate`` (without the ``train.`` prefix)."""
    own = f"{stage}_learning_rate"
    if stage in ("pretrain", "teacher", "student") and getattr(train_cfg, own, None) is not None:
        return own
    return "learning_rate"


def stage_learning_rate(train_cfg, stage: str | None) -> float:
    """The peak learning rate of a stage: its own (``train.<stage>_learning_rate``) where set, else
    ``train.learning_rate``."""
    return getattr(train_cfg, stage_learning_rate_key(train_cfg, stage))


@dataclass
class Schedule:
    """The learning rate of every step of a stage of ``max_steps`` steps (:func:`learning_rate` of the
    ``train`` config), a pure function of the step so that a resumed run continues exactly.

    With ``train.lr_per_network`` a network that joins the stage late (the multi-frame net after the
    pretrain stage's warm-up, ``first_step``) gets the whole schedule over its own steps, instead of
    joining the shared one part-way down its decay. Each stage peaks at its own
    ``train.<stage>_learning_rate`` where that is set, the pose net at ``train.pose_learning_rate_scale``
    times that."""

    train_cfg: Any
    max_steps: int
    first_step: Any = None
    """``callable(network name) -> int``: the step at which that network starts (default 0)."""
    stage: str | None = None
    """The stage's name, for its own peak rate (:func:`stage_learning_rate`)."""

    def rate(self, step: int, network: str | None = None) -> float:
        t = self.train_cfg
        start = 0
        if t.lr_per_network and self.first_step is not None and network is not None:
            start = min(self.first_step(network), self.max_steps - 1)
        peak = stage_learning_rate(t, self.stage) * self.pose_scale(step, network)
        return learning_rate(peak, max(step - start, 0), t.lr_decay_step, t.lr_schedule, self.max_steps - start,
                             t.lr_warmup_steps)

    def pose_scale(self, step: int, network: str | None) -> float:
        """``train.pose_learning_rate_scale`` for the pose net (with ``..._after_prior``, only from step
        ``train.pose_prior_steps`` on), 1 for every other network."""
        t = self.train_cfg
        if network != "pose" or (t.pose_learning_rate_scale_after_prior and step < t.pose_prior_steps):
            return 1.0
        return t.pose_learning_rate_scale

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = self.rate(step, group.get("network"))


class Checkpointer:
    """A stage's checkpoints (paths from :mod:`mfdepth.run_layout`), written by the main process only.

    The rolling ``<stage>-last.ckpt`` (with optimizer state, for resuming) is due every
    ``train.checkpoint_every`` steps but written only once a later step's loss is finite and its depth not
    pinned at a bound (:class:`CollapseWatch`): a step with a finite loss can still leave diverged weights
    (a huge learning rate), and the NaN only shows next step. It is also written on an interruption and at
    the end. The final ``<stage>.ckpt`` holds the weights the next stage, evaluation and prediction use (the
    averages, with weight averaging) and metadata only, a quarter to a third of the rolling file (no raw
    weights, no Adam moments): the file to share. Lengthening a finished stage resumes from ``<stage>-last.ckpt``.
    """

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, config, run_dir: Path,
                 runtime: Runtime, extra_meta: dict | None = None):
        self.module, self.optimizer, self.runtime = module, optimizer, runtime
        self.extra_meta = dict(extra_meta or {})
        self.final_path, self.last_path = checkpoint_paths(run_dir, module.name)
        self.config_dict = to_dict(config)
        self.every = config.train.checkpoint_every
        self.rate_key = stage_learning_rate_key(config.train, module.name)
        self.unverified: dict | None = None

    def resume(self, max_steps: int) -> int:
        """Load the newest usable checkpoint of this stage into the module and optimizer; return its step
        (0 when there is none). A checkpoint with non-finite numbers is refused."""
        module, runtime, final_path, last_path = self.module, self.runtime, self.final_path, self.last_path
        if runtime.is_main:
            remove_stale_temporaries(final_path.parent)  # left by a run killed while saving
        for candidate in (final_path, last_path):
            if not candidate.is_file():
                continue
            state = load_checkpoint(candidate, map_location=runtime.device)
            if state.get("stage") != module.name:
                continue
            if (
                candidate == final_path and state.get("optimizer") is None and int(state["step"]) < max_steps
                and last_path.is_file()
            ):
                continue  # a lengthened stage resumes from the rolling checkpoint, which has the optimizer
            bad = non_finite_entries(state)
            if bad:
                raise CheckpointError(
                    f"{candidate} holds non-finite numbers ({', '.join(bad[:3])}): the run diverged before it "
                    f"was saved; delete it to restart stage {module.name}, and lower train.{self.rate_key} or "
                    "set train.grad_clip"
                )
            module.load_checkpoint_models(state["models"])  # the stage maps entries to its networks
            if state.get("optimizer") is not None:
                self.optimizer.load_state_dict(state["optimizer"])
            step = int(state["step"])
            if runtime.is_main:
                log.info("%s: resuming from %s at step %d", module.name, candidate, step)
                if state.get("optimizer") is None and step < max_steps:
                    log.warning("%s: %s has no optimizer state (%s is missing): the stage goes on from its "
                                "final weights with a fresh optimizer, not exactly as an uninterrupted run would",
                                module.name, candidate, last_path)
            return step
        return 0

    def snapshot(self, step: int, resumable: bool = True) -> dict:
        """The checkpoint of the current state, copied to the CPU (so later steps cannot change it);
        ``resumable`` keeps what only resuming reads (the optimizer's state and the raw weights)."""
        return _cpu_copy({
            "models": self.module.checkpoint_models(resumable),
            "optimizer": self.optimizer.state_dict() if resumable else None,
            "step": step,
            "stage": self.module.name,
            "meta": make_meta(self.config_dict, self.module.name, precision=self.runtime.precision,
                              **{**self.extra_meta, **self.module.checkpoint_meta()}),
        })

    def save(self, path: Path, step: int, resumable: bool = True) -> None:
        if self.runtime.is_main:
            save_checkpoint(path, self.snapshot(step, resumable))

    def after_step(self, step: int, max_steps: int) -> None:
        """Take the rolling checkpoint when it is due (it is written by :meth:`weights_are_sound`)."""
        if step % self.every == 0 and step < max_steps and self.runtime.is_main:
            self.unverified = self.snapshot(step)

    def weights_are_sound(self) -> None:
        """A later step's loss is finite and its depth not pinned: write the due checkpoint taken before it."""
        if self.unverified is not None:
            save_checkpoint(self.last_path, self.unverified)
            self.unverified = None

    def finish(self, step: int, max_steps: int) -> Path:
        """Write the rolling checkpoint and, when the stage is done, the final one; return the latter
        (or the rolling one when the stage is not done)."""
        self.save(self.last_path, step)
        if step >= max_steps:
            self.save(self.final_path, step, resumable=False)
        return self.final_path if step >= max_steps else self.last_path


class _Clock:
    """Training time of one :func:`fit` call, the ``after_step`` callback's own time excluded."""

    def __init__(self):
        self.start = time.time()

    def elapsed(self) -> float:
        return time.time() - self.start

    def call_excluded(self, fn, *args) -> None:
        """``fn(*args, seconds_so_far)``, its own time not counted."""
        paused = time.time()
        fn(*args, paused - self.start)
        self.start += time.time() - paused


class TrainingLog:
    """The main process's TensorBoard scalars and images, CSV loss log and progress bar for one stage.

    Logged values are means over the steps since the last log line (every ``train.log_every`` steps and
    at the last step): single batches of 4 frames vary too much (a stop vs fast driving) to read a trend
    from. The CSV (``logs/<stage>.csv``) is appended to, so a resumed run continues it.
    """

    def __init__(self, run_dir: Path, name: str, train_cfg, max_steps: int, initial_step: int, progress: bool,
                 clock: _Clock):
        self.name, self.max_steps, self.clock = name, max_steps, clock
        self.log_every, self.image_log_every = train_cfg.log_every, train_cfg.image_log_every
        logs_dir(run_dir).mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(tensorboard_dir(run_dir, name)))
        self.csv_file = loss_log_path(run_dir, name).open("a", newline="")
        self.csv_writer = None
        self.pending: dict[str, float] = {}
        self.pending_steps = 0
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=max_steps, initial=initial_step, desc=name, dynamic_ncols=True, leave=True)

    def record(self, step: int, loss: torch.Tensor, scalars: dict, images: dict, lr: float) -> None:
        """Log optimisation step ``step`` (1-based: steps done) of the stage."""
        scalars = {k: float(v) for k, v in scalars.items()}
        scalars["loss"] = float(loss.detach())
        for key, value in scalars.items():
            self.pending[key] = self.pending.get(key, 0.0) + value
        self.pending_steps += 1
        if step % self.log_every == 0 or step == self.max_steps:
            scalars = {k: v / self.pending_steps for k, v in self.pending.items()}
            scalars["lr"] = lr
            self.pending, self.pending_steps = {}, 0
            for key, value in scalars.items():
                self.writer.add_scalar(f"{self.name}/{key}", value, step)
            row = {"step": step, "seconds": round(self.clock.elapsed(), 2), **scalars}
            if self.csv_writer is None:
                self.csv_writer = csv.DictWriter(self.csv_file, fieldnames=list(row), extrasaction="ignore")
                if self.csv_file.tell() == 0:
                    self.csv_writer.writeheader()
            self.csv_writer.writerow(row)
            self.csv_file.flush()
        if images and (step % self.image_log_every == 0 or step == 1):
            for key, image in images.items():
                self.writer.add_images(f"{self.name}/{key}", image.detach().float().cpu(), step)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{float(loss.detach()):.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.writer.close()
        self.csv_file.close()


def _batches_per_epoch(dataset: Dataset, name: str, batch_size: int, runtime: Runtime) -> int:
    batches = ResumableBatchSampler.batches_per_epoch(len(dataset), batch_size, runtime.world_size)
    if batches == 0:
        raise ValueError(
            f"{name}: the training split has {len(dataset)} samples, fewer than one batch of "
            f"{batch_size} per device; lower train.batch_size or add data"
        )
    return batches


def epoch_batches(dataset: Dataset, config, runtime: Runtime, step: int, batches_per_epoch: int):
    """``(epoch, batch)`` for every step from ``step`` on, endlessly: each epoch's order is fixed by
    ``(seed, epoch)`` (:class:`ResumableBatchSampler`) and ``dataset.set_epoch(epoch)``, if present, is
    called before it, so the batches of a resumed run are those of an uninterrupted one."""
    train_cfg = config.train
    while True:
        epoch, skip = divmod(step, batches_per_epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        sampler = ResumableBatchSampler(
            len(dataset), train_cfg.batch_size, train_cfg.seed, epoch,
            runtime.rank, runtime.world_size, skip_batches=skip,
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=loader_workers(config.data.num_workers, runtime.device.type),
            collate_fn=collate_samples,
            pin_memory=runtime.device.type == "cuda",
        )
        for batch in loader:
            yield epoch, batch
            step += 1


def _distributed(module: torch.nn.Module, runtime: Runtime) -> torch.nn.Module:
    """``module`` wrapped for DDP when several processes train, else ``module`` itself."""
    if runtime.world_size <= 1:
        return module
    return torch.nn.parallel.DistributedDataParallel(
        module,
        device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
        find_unused_parameters=True,
    )


def forward_under_autocast(trained: torch.nn.Module, batch: dict, generator: torch.Generator, runtime: Runtime):
    """``(loss, scalars, images)`` of one batch, under autocast when mixed precision is on."""
    with torch.autocast(
        device_type=runtime.device.type,
        dtype=runtime.autocast_dtype or torch.float32,
        enabled=runtime.autocast_dtype is not None,
    ):
        return trained(batch, generator)


def _non_finite_loss(name: str, loss: torch.Tensor, step: int, epoch: int, batches_per_epoch: int, batch: dict,
                     last_path: Path, rate_key: str = "learning_rate") -> NonFiniteLossError:
    ids = batch.get("id", [])
    kept = last_path if last_path.is_file() else "none yet (the stage restarts from its start)"
    return NonFiniteLossError(
        f"{name}: loss became {loss.item()} at step {step} "
        f"(epoch {epoch}, batch {step % batches_per_epoch}; samples: {', '.join(map(str, ids))}); "
        f"last good checkpoint kept: {kept}; lower train.{rate_key} or set train.grad_clip "
        "and run again to resume from it"
    )


class CollapseWatch:
    """Counts the consecutive steps whose ``pinned_fraction`` scalar (the stage's trained depth: the fraction of
    pixels at a bound of its range) is at least ``train.collapse_guard_fraction``."""

    def __init__(self, train_cfg):
        self.fraction, self.steps = train_cfg.collapse_guard_fraction, train_cfg.collapse_guard_steps
        self.streak = 0

    def pinned(self, scalars: dict, world_size: int = 1) -> bool:
        """Record one step's scalars; True when its depth is pinned (never when the guard is off). With
        several processes the smallest fraction over the ranks decides, so that all stop at the same step
        (one rank stopping alone would leave the others waiting in their next gradient reduction)."""
        value = scalars.get("pinned_fraction")
        if self.steps == 0 or value is None:
            self.streak = 0
            return False
        value = torch.as_tensor(value, dtype=torch.float32).detach().clone()
        if world_size > 1:
            dist.all_reduce(value, op=dist.ReduceOp.MIN)
        pinned = float(value) >= self.fraction
        self.streak = self.streak + 1 if pinned else 0
        return pinned

    @property
    def collapsed(self) -> bool:
        return self.steps > 0 and self.streak >= self.steps


def _collapsed(name: str, step: int, watch: CollapseWatch, model_cfg, last_path: Path, rate_key: str) -> DepthCollapseError:
    kept = last_path if last_path.is_file() else "none yet (the stage restarts from its start)"
    return DepthCollapseError(
        f"{name}: the depth collapsed: at least {watch.fraction:.0%} of its pixels sat at a bound of the depth range "
        f"[model.min_depth, model.max_depth] = [{model_cfg.min_depth:g}, {model_cfg.max_depth:g}] m for the "
        f"{watch.steps} steps up to step {step}, where the sigmoid saturates and no gradient comes back; last "
        f"good checkpoint kept: {kept}; clip the gradients (train.grad_clip, 1.0 in the CPU recipe; lower it where "
        f"already on) or lower train.{rate_key}, and run again to resume from it, or delete it to restart the stage"
    )


def _optimise(loss: torch.Tensor, optimizer, scaler, params, grad_clip: float) -> None:
    """Backward (scaled for float16), optional gradient clipping, one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def fit(
    module: torch.nn.Module,
    dataset: Dataset,
    config,
    run_dir: str | Path,
    max_steps: int,
    runtime: Runtime | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    after_step=None,
    extra_meta: dict | None = None,
) -> Path:
    """Train ``module`` (a StageModule) for ``max_steps`` steps, resuming if a checkpoint exists.

    Each step: the batch of this step (:func:`epoch_batches`), the learning rate of this step
    (:class:`Schedule`), the stage's forward with this step's generator, the NaN guard, the collapse guard
    (:class:`CollapseWatch`), the due checkpoint written once the loss is finite and the depth not pinned,
    one optimizer step, logging (:class:`TrainingLog`), checkpoint timing (:class:`Checkpointer`),
    ``after_step``, and a stop on Ctrl-C or ``stop_after``.

    Args:
        module: the stage; ``module.name`` names its checkpoints and logs.
        dataset: map-style dataset of Samples; a ``set_epoch(epoch)`` method, if present, is called
            before each epoch so augmentation can depend on it.
        config: the resolved :class:`mfdepth.config.Config`.
        run_dir: the run directory.
        max_steps: optimisation steps of this stage.
        stop_after: stop (with a checkpoint) after this many steps of this call, as an interruption
            would; used by tests and by ``--max-minutes``-like budgets.
        after_step: optional ``callable(step, module, seconds)`` run after every optimisation step
            (the convergence benchmark evaluates the networks there); ``seconds`` is the training time
            of this call so far, the callback's own time excluded.
        extra_meta: entries added to every checkpoint's ``meta`` (the recipe stores the camera there).
    Returns:
        Path of the stage's final checkpoint.
    """
    run_dir = Path(run_dir)
    runtime = runtime or setup_runtime(config.train.accelerator, config.train.strategy, config.train.precision)
    train_cfg = config.train
    module.to(runtime.device)
    groups = parameter_groups(module)
    params = [p for group in groups for p in group["params"]]
    optimizer = make_optimizer(groups, train_cfg)
    checkpoints = Checkpointer(module, optimizer, config, run_dir, runtime, extra_meta)
    step = checkpoints.resume(max_steps)
    if step >= max_steps and checkpoints.final_path.is_file():
        return checkpoints.final_path

    trained = _distributed(module, runtime)
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.autocast_dtype == torch.float16)
    schedule = Schedule(train_cfg, max_steps, module.first_step, module.name)
    batches_per_epoch = _batches_per_epoch(dataset, module.name, train_cfg.batch_size, runtime)
    clock = _Clock()
    training_log = (
        TrainingLog(run_dir, module.name, train_cfg, max_steps, step, progress, clock) if runtime.is_main else None
    )
    interrupted = _SigintFlag() if runtime.is_main else None
    collapse = CollapseWatch(train_cfg)
    steps_this_call = 0
    module.train()
    clock.start = time.time()
    batches = epoch_batches(dataset, config, runtime, step, batches_per_epoch)
    try:
        for epoch, batch in (batches if step < max_steps else ()):
            batch = move_to_device(batch, runtime.device)
            schedule.apply(optimizer, step)
            module.global_step = step
            loss, scalars, images = forward_under_autocast(trained, batch, step_generator(train_cfg.seed, step), runtime)
            if not torch.isfinite(loss):
                raise _non_finite_loss(module.name, loss, step, epoch, batches_per_epoch, batch, checkpoints.last_path,
                                       stage_learning_rate_key(train_cfg, module.name))
            if not collapse.pinned(scalars, runtime.world_size):
                checkpoints.weights_are_sound()
            elif collapse.collapsed:
                raise _collapsed(module.name, step, collapse, config.model, checkpoints.last_path,
                                 stage_learning_rate_key(train_cfg, module.name))
            _optimise(loss, optimizer, scaler, params, train_cfg.grad_clip)
            module.after_optimizer_step()
            step += 1
            steps_this_call += 1
            if training_log is not None:
                training_log.record(step, loss, scalars, images, optimizer.param_groups[0]["lr"])
            checkpoints.after_step(step, max_steps)
            if after_step is not None:
                clock.call_excluded(after_step, step, module)
                module.train()
            if interrupted is not None and interrupted.raised:
                break
            if step >= max_steps or (stop_after is not None and steps_this_call >= stop_after):
                break
    except (DataError, OSError) as err:
        # A bad file read by a DataLoader worker: the same one line as with data.num_workers=0.
        original = unwrap_worker_error(err)
        if original is None:
            raise
        raise original from None
    finally:
        batches.close()
        if interrupted is not None:
            interrupted.restore()
        if training_log is not None:
            training_log.close()

    done = checkpoints.finish(step, max_steps)
    if interrupted is not None and interrupted.raised:
        log.warning("%s: interrupted; saved %s at step %d: run the same command again to resume", module.name,
                    checkpoints.last_path, step)
        raise KeyboardInterrupt
    if runtime.world_size > 1:
        dist.barrier()
    return done


def _cpu_copy(value):
    """``value`` with every tensor cloned to the CPU (dicts and lists copied)."""
    if torch.is_tensor(value):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu_copy(v) for v in value)
    return value


class _SigintFlag:
    """While training, the first Ctrl-C (SIGINT) only sets ``raised``: the loop finishes its step, saves a
    resumable checkpoint and then stops. A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.raised = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True
        log.warning("interrupt: saving a checkpoint after this step (Ctrl-C again to stop at once)")

    def restore(self):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


def read_loss_log(run_dir: str | Path, stage: str) -> list[dict[str, float]]:
    """The CSV loss log of a stage as a list of rows (for reports and plots)."""
    path = loss_log_path(run_dir, stage)
    if not path.is_file():
        return []
    with path.open() as handle:
        rows = []
        for row in csv.DictReader(handle):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    parsed[key] = math.nan
            rows.append(parsed)
    # A resumed run logs again the steps after its last checkpoint: keep the latest row of each step.
    by_step = {row.get("step"): row for row in rows}
    return [by_step[k] for k in sorted(by_step, key=lambda k: (math.isnan(k), k))]
