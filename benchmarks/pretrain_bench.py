"""What the step-timing benchmarks share: a pretrain stage built from a config, one optimisation step, and
medians of alternating timing blocks.

Used by ``profile_step.py``, ``dataloader_contention.py``, ``optimizer_step.py`` and ``conv_backends.py``;
not a benchmark itself.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time
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
