"""What the optimiser and the weight average cost per pretrain step: Adam's three implementations
(PyTorch's CPU default, a Python loop over the parameter tensors; multi-tensor ``foreach``; ``fused``)
and the EMA update as a per-tensor loop against one multi-tensor ``lerp``, in the same run.

Builds the pretrain stage (S0 + M0 + pose, the multi-frame net joined) from a config, gives every
parameter a gradient and times, in alternating blocks so machine load hits every variant alike:
the optimiser step alone, the EMA update alone, and a whole joint training step (forward, backward,
optimiser, EMA) with each Adam.

    python benchmarks/optimizer_step.py --threads 2 data.root=/tmp/world

Writes ``benchmarks/results/optimizer_step.json`` and ``.md``.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from mfdepth.training.loop import setup_runtime
from pretrain_bench import (
    alternating_medians,
    build_pretrain,
    first_batch,
    optimisation_step,
    step_benchmark_parser,
    write_results,
)

RESULTS = Path(__file__).resolve().parent / "results"
ADAMS = {"for-loop (PyTorch's CPU default)": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def _loop_ema(module, decay: float) -> None:
    """The previous per-tensor EMA update, the reference for ``module.after_optimizer_step``."""
    nets = module.saved_networks()
    with torch.no_grad():
        for name, average in module._averages().items():
            current = nets[name].state_dict()
            for key, value in average.state_dict().items():
                if value.is_floating_point():
                    value.mul_(decay).add_(current[key], alpha=1.0 - decay)
                else:
                    value.copy_(current[key])


def main() -> None:
    args = step_benchmark_parser(__doc__, RESULTS, blocks=4).parse_args()
    torch.set_num_threads(args.threads)
    config, dataset, module, optimizer = build_pretrain(args.overrides, "mfdepth_optimizer_")
    groups = optimizer.param_groups
    params = [p for group in groups for p in group["params"]]
    adams = {name: torch.optim.Adam([{"params": g["params"]} for g in groups], lr=1e-5, **kw)
             for name, kw in ADAMS.items()}
    joined = config.train.warmup_steps + 10
    module.global_step = joined

    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizer_s = alternating_medians({name: adam.step for name, adam in adams.items()}, args.blocks, 5)
    ema_s = alternating_medians({"per-tensor loop (reference)": lambda: _loop_ema(module, 0.99),
                        "foreach lerp (after_optimizer_step)": module.after_optimizer_step}, args.blocks, 5)

    runtime = setup_runtime("cpu", "auto", "32")
    batch = first_batch(config, dataset)

    def whole_step(adam):
        def run():
            optimisation_step(module, adam, batch, joined, runtime)
            module.after_optimizer_step()
        return run

    for adam in adams.values():  # untimed: the first step allocates the optimiser state
        whole_step(adam)()
    step_s = alternating_medians({name: whole_step(adam) for name, adam in adams.items()}, args.blocks, 2)

    reference = next(iter(ADAMS))
    payload = {
        "optimizer_step_s": optimizer_s, "ema_update_s": ema_s, "joint_step_s": step_s,
        "parameter_tensors": len(params), "parameters": sum(p.numel() for p in params),
        "input": [config.data.height, config.data.width], "batch": config.train.batch_size,
        "threads": args.threads, "torch": torch.__version__, "platform": platform.platform(),
        "command": "python benchmarks/optimizer_step.py " + " ".join([f"--threads {args.threads}", *args.overrides]),
    }
    ema_reference = next(iter(ema_s))
    lines = [
        "# Optimiser and weight-average cost of a pretrain step",
        "",
        f"{config.data.height}x{config.data.width}, batch {config.train.batch_size}, {args.threads} threads, "
        f"torch {torch.__version__}; {len(params)} parameter tensors, {payload['parameters'] / 1e6:.1f} M "
        "parameters (S0, M0, pose); medians of alternating blocks.",
        "",
        "| Adam | optimiser step (s) | whole joint step (s) | whole step, speed against the for-loop |",
        "|---|---|---|---|",
        *[f"| {name} | {optimizer_s[name]:.4f} | {step_s[name]:.3f} | {step_s[reference] / step_s[name]:.2f}x |"
          for name in ADAMS],
        "",
        "| EMA update | s | speed against the loop |",
        "|---|---|---|",
        *[f"| {name} | {s:.4f} | {ema_s[ema_reference] / s:.2f}x |" for name, s in ema_s.items()],
    ]
    write_results(args.out, "optimizer_step", payload, lines)


if __name__ == "__main__":
    main()
