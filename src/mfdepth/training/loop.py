"""The optimisation loop: devices, DDP, mixed precision, logging, atomic checkpoints, exact resume.

The loop knows nothing of depth: a stage is an ``nn.Module`` whose ``forward(batch, generator)``
returns ``(loss, scalars, images)`` (see :class:`mfdepth.training.stages.StageModule`). The loop
owns everything else, and keeps the run reproducible:

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

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from mfdepth.checkpoint import (
    CheckpointError,
    load_checkpoint,
    make_meta,
    non_finite_entries,
    remove_stale_temporaries,
    restore_networks,
    save_checkpoint,
)
from mfdepth.data.base import collate_samples
from mfdepth.data.errors import DataError, unwrap_worker_error
from mfdepth.devices import resolve_device
from mfdepth.run_layout import checkpoint_paths, logs_dir, loss_log_path, tensorboard_dir

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


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
    if precision not in dtypes:
        raise ValueError(f"train.precision: '{precision}' is not one of {', '.join(dtypes)}")
    autocast_dtype = dtypes[precision] if use_cuda else None
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
) -> Path:
    """Train ``module`` (a StageModule) for ``max_steps`` steps, resuming if a checkpoint exists.

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
    Returns:
        Path of the stage's final checkpoint.
    """
    from mfdepth.config import to_dict

    run_dir = Path(run_dir)
    runtime = runtime or setup_runtime(config.train.accelerator, config.train.strategy, config.train.precision)
    train_cfg = config.train
    final_path, last_path = checkpoint_paths(run_dir, module.name)
    module.to(runtime.device)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=train_cfg.learning_rate)

    step = 0
    if runtime.is_main:
        remove_stale_temporaries(final_path.parent)  # left by a run killed while saving
    for candidate in (final_path, last_path):
        if candidate.is_file():
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
                    f"was saved; delete it to restart stage {module.name}, and lower train.learning_rate or "
                    "set train.grad_clip"
                )
            restore_networks(state, module.saved_networks(), candidate)
            if state.get("optimizer") is not None:
                optimizer.load_state_dict(state["optimizer"])
            step = int(state["step"])
            if runtime.is_main:
                log.info("%s: resuming from %s at step %d", module.name, candidate, step)
            break
    if step >= max_steps and final_path.is_file():
        return final_path

    trained = module
    if runtime.world_size > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            module,
            device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.autocast_dtype == torch.float16)
    config_dict = to_dict(config)

    def snapshot(with_optimizer: bool = True) -> dict:
        """The checkpoint of the current state, copied to the CPU (so later steps cannot change it)."""
        return _cpu_copy({
            "models": module.checkpoint_models(),
            "optimizer": optimizer.state_dict() if with_optimizer else None,
            "step": step,
            "stage": module.name,
            "meta": make_meta(config_dict, module.name, **module.checkpoint_meta()),
        })

    def save(path: Path, state: dict | None = None, with_optimizer: bool = True) -> None:
        """Write ``state`` (default: the current one). The final checkpoint of a stage holds weights and
        metadata only (small enough to share); the rolling ``-last`` one has the optimizer, for resuming."""
        if not runtime.is_main:
            return
        save_checkpoint(path, state if state is not None else snapshot(with_optimizer))

    writer, csv_file, csv_writer = None, None, None
    if runtime.is_main:
        logs_dir(run_dir).mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(tensorboard_dir(run_dir, module.name)))
        csv_file = loss_log_path(run_dir, module.name).open("a", newline="")
        csv_writer = None

    batches_per_epoch = ResumableBatchSampler.batches_per_epoch(
        len(dataset), train_cfg.batch_size, runtime.world_size
    )
    if batches_per_epoch == 0:
        raise ValueError(
            f"{module.name}: the training split has {len(dataset)} samples, fewer than one batch of "
            f"{train_cfg.batch_size} per device; lower train.batch_size or add data"
        )

    bar = None
    if progress and runtime.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_steps, initial=step, desc=module.name, dynamic_ncols=True, leave=True)

    steps_this_call = 0
    unverified: dict | None = None
    """A due checkpoint, written only once the next step's loss shows its weights are sound: a step with a
    finite loss can still leave diverged weights (a huge learning rate), and the NaN only shows next step."""
    interrupted = _SigintFlag() if runtime.is_main else None
    pending: dict[str, float] = {}
    pending_steps = 0
    module.train()
    start_time = time.time()
    try:
        while step < max_steps:
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
                num_workers=config.data.num_workers,
                collate_fn=collate_samples,
                pin_memory=runtime.device.type == "cuda",
            )
            for batch in loader:
                batch = move_to_device(batch, runtime.device)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(
                        train_cfg.learning_rate, step, train_cfg.lr_decay_step, train_cfg.lr_schedule,
                        max_steps, train_cfg.lr_warmup_steps,
                    )
                generator = step_generator(train_cfg.seed, step)
                module.global_step = step
                with torch.autocast(
                    device_type=runtime.device.type,
                    dtype=runtime.autocast_dtype or torch.float32,
                    enabled=runtime.autocast_dtype is not None,
                ):
                    loss, scalars, images = trained(batch, generator)
                if not torch.isfinite(loss):
                    ids = batch.get("id", [])
                    kept = last_path if last_path.is_file() else "none yet (the stage restarts from its start)"
                    raise NonFiniteLossError(
                        f"{module.name}: loss became {loss.item()} at step {step} "
                        f"(epoch {epoch}, batch {step % batches_per_epoch}; samples: {', '.join(map(str, ids))}); "
                        f"last good checkpoint kept: {kept}; lower train.learning_rate or set train.grad_clip "
                        "and run again to resume from it"
                    )
                if unverified is not None:
                    save(last_path, unverified)
                    unverified = None
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if train_cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                module.after_optimizer_step()
                step += 1
                steps_this_call += 1

                if runtime.is_main:
                    scalars = {k: float(v) for k, v in scalars.items()}
                    scalars["loss"] = float(loss.detach())
                    # Logged values are means over the steps since the last log line: single batches
                    # of 4 frames vary too much (a stop vs fast driving) to read a trend from.
                    for key, value in scalars.items():
                        pending[key] = pending.get(key, 0.0) + value
                    pending_steps += 1
                    if step % train_cfg.log_every == 0 or step == max_steps:
                        scalars = {k: v / pending_steps for k, v in pending.items()}
                        scalars["lr"] = optimizer.param_groups[0]["lr"]
                        pending, pending_steps = {}, 0
                        for key, value in scalars.items():
                            writer.add_scalar(f"{module.name}/{key}", value, step)
                        row = {"step": step, "seconds": round(time.time() - start_time, 2), **scalars}
                        if csv_writer is None:
                            csv_writer = csv.DictWriter(csv_file, fieldnames=list(row), extrasaction="ignore")
                            if csv_file.tell() == 0:
                                csv_writer.writeheader()
                        csv_writer.writerow(row)
                        csv_file.flush()
                    if images and (step % train_cfg.image_log_every == 0 or step == 1):
                        for key, image in images.items():
                            writer.add_images(f"{module.name}/{key}", image.detach().float().cpu(), step)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
                if step % train_cfg.checkpoint_every == 0 and step < max_steps and runtime.is_main:
                    unverified = snapshot()
                if after_step is not None:
                    paused = time.time()
                    after_step(step, module, paused - start_time)
                    start_time += time.time() - paused
                    module.train()
                if interrupted is not None and interrupted.raised:
                    break
                if step >= max_steps or (stop_after is not None and steps_this_call >= stop_after):
                    break
            if stop_after is not None and steps_this_call >= stop_after:
                break
            if interrupted is not None and interrupted.raised:
                break
    except (DataError, OSError) as err:
        # A bad file read by a DataLoader worker: the same one line as with data.num_workers=0.
        original = unwrap_worker_error(err)
        if original is None:
            raise
        raise original from None
    finally:
        if interrupted is not None:
            interrupted.restore()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        if csv_file is not None:
            csv_file.close()

    save(last_path)
    if step >= max_steps:
        save(final_path, with_optimizer=False)
    if interrupted is not None and interrupted.raised:
        log.warning("%s: interrupted; saved %s at step %d: run the same command again to resume", module.name,
                    last_path, step)
        raise KeyboardInterrupt
    if runtime.world_size > 1:
        dist.barrier()
    return final_path if step >= max_steps else last_path


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
