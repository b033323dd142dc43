"""What the step-timing benchmarks share: a pretrain stage built from a config, and one optimisation step.

Used by ``profile_step.py`` and ``dataloader_contention.py``; not a benchmark itself.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mfdepth.config import load_config
from mfdepth.synth import ensure_world
from mfdepth.training.loop import forward_under_autocast, make_optimizer, parameter_groups, step_generator
from mfdepth.training.recipe import training_dataset
from mfdepth.training.stages import PretrainStage


def build_pretrain(overrides: list[str], prefix: str):
    """``(config, dataset, module, optimizer)`` of a pretrain stage in a fresh temporary run folder."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
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
