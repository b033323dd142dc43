"""What the step-timing benchmarks share: their command line, a pretrain stage built from a config, its first
training batch, each network's forward + backward on it, one optimisation step, and medians of alternating
timing blocks.

Used by ``profile_step.py``, ``dataloader_contention.py``, ``optimizer_step.py``, ``conv_backends.py``,
``loss_resolution_step.py`` and ``weight_gradient.py``; not a benchmark itself.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mfdepth.config import load_config
from mfdepth.synth import ensure_world
from mfdepth.training.loop import forward_under_autocast, make_optimizer, parameter_groups, step_generator
from mfdepth.training.recipe import training_dataset
from mfdepth.training.stages import PretrainStage


def step_benchmark_parser(doc: str, results: Path, blocks: int) -> argparse.ArgumentParser:
    """The options every step benchmark takes: ``--threads``, ``--blocks``, ``--out`` and config overrides."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=blocks)
    parser.add_argument("--out", default=str(results))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return parser


def first_batch(config, dataset) -> dict:
    """The same training batch every run: the first of a loader shuffled with seed 0."""
    return next(iter(DataLoader(dataset, batch_size=config.train.batch_size, shuffle=True, num_workers=0,
                                generator=torch.Generator().manual_seed(0))))


def network_passes(module, batch: dict) -> dict:
    """A forward + backward of S0, M0 (a fixed 1 cm forward pose, its range set to 1 m) and the pose net on
    ``batch``, as callables by name."""
    target, source, after = (batch["frames_aug"][:, i] for i in range(3))
    K = batch["K"][:, 0]
    K = K[:, 0] if K.dim() == 4 else K
    pose = torch.eye(4).expand(target.shape[0], 4, 4).clone()
    pose[:, 2, 3] = 0.01
    module.multi.update_depth_range(torch.ones_like(target[:, :1]), 0.0)
    no_zeroing = torch.zeros(target.shape[0], dtype=torch.bool)

    def backward_of(depths):
        sum(d.mean() for d in depths).backward()

    return {
        "single-frame (S0)": lambda: backward_of(module.single(target)["depth"]),
        "multi-frame (M0)": lambda: backward_of(
            module.multi(target, source, pose, K, zero_cost_volume=no_zeroing)["depth"]),
        "pose": lambda: sum(T.sum() for T in module.pose.forward_pairs(target, [source, after], [True, False])).backward(),
    }


def scratch_folder(prefix: str) -> Path:
    """A new temporary folder, removed when the process exits: a benchmark's run folders hold checkpoints of
    hundreds of MB each, and left in /tmp they filled the disk of a CI machine once."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def build_pretrain(overrides: list[str], prefix: str):
    """``(config, dataset, module, optimizer)`` of a pretrain stage in a fresh temporary run folder."""
    work = scratch_folder(prefix)
    config = load_config(None, [f"run_dir={work}", *overrides])
    ensure_world(config.data.root, preset=config.data.synth_preset, progress=False)
    dataset = training_dataset(config, work, with_masks=False)
    module = PretrainStage(config).train()
    return config, dataset, module, make_optimizer(parameter_groups(module), config.train)


def optimisation_step(module, optimizer, batch: dict, step: int, runtime) -> None:
    """One training step at global ``step`` (the multi-frame net joins after ``train.warmup_steps``)."""
    module.global_step = step
    loss, _, _ = forward_under_autocast(module, batch, step_generator(0, step), runtime)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def alternating_medians(variants: dict, blocks: int, per_block: int, contexts: dict | None = None) -> dict[str, float]:
    """Median seconds per call of each variant's callable, timed in blocks that take turns so that the
    host's drift hits every variant alike. ``contexts`` (optional, by variant) gives a context-manager
    factory the variant's block runs under; each block starts with one untimed call."""
    times = {name: [] for name in variants}
    for _ in range(blocks):
        for name, fn in variants.items():
            with (contexts[name]() if contexts else contextlib.nullcontext()):
                fn()
                began = time.perf_counter()
                for _ in range(per_block):
                    fn()
                times[name].append((time.perf_counter() - began) / per_block)
    return {name: statistics.median(values) for name, values in times.items()}


def write_results(out: str | Path, name: str, payload: dict, lines: list[str]) -> None:
    """``<out>/<name>.json`` (``payload``) and ``<out>/<name>.md`` (``lines`` and the payload's command), printed too."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2))
    lines = [*lines, "", f"Command: `{payload['command']}`", ""]
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
