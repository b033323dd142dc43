"""Does a DataLoader worker pay for itself when the CPU also runs the networks?

Times pretrain steps (single-frame + pose warm-up, then with the multi-frame net joined) with the
batches drawn through the training loop's own loader (:func:`mfdepth.training.loop.epoch_batches`,
so decoding, resizing and augmentation are inside the timed step) for each ``--workers`` count, one
count after the other in the same process (a count listed twice is timed twice, so ``0 2 0 2``
interleaves them against the host's drift; each row is the mean); speed is a ratio to the first count. ``auto`` is what
``data.num_workers=auto`` resolves to on this machine.

    python benchmarks/dataloader_contention.py --threads 2 --workers 0 2 0 2 -- data.root=/tmp/world

Writes ``benchmarks/results/dataloader_contention.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from mfdepth.data.loading import available_cores, loader_workers
from mfdepth.training.loop import epoch_batches, setup_runtime
from pretrain_bench import build_pretrain, optimisation_step

RESULTS = Path(__file__).resolve().parent / "results"
UNTIMED = 3  # worker start-up and the first steps' allocations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2, 0, 2])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per phase and worker count")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, dataset, module, optimizer = build_pretrain(args.overrides, "mfdepth_contention_")
    runtime = setup_runtime("cpu", "auto", config.train.precision)
    batches_per_epoch = len(dataset) // config.train.batch_size
    phases = (("warm-up (single-frame + pose)", 0), ("joint (with the multi-frame net)", config.train.warmup_steps + 10))

    timings: dict[int, dict[str, list[float]]] = {}
    waits: dict[int, dict[str, list[float]]] = {}  # the step's wait for its batch
    for workers in args.workers:
        config.data.num_workers = workers
        for phase, first in phases:
            batches = epoch_batches(dataset, config, runtime, first, batches_per_epoch)
            waited = 0.0
            for i in range(UNTIMED + args.steps):
                if i == UNTIMED:
                    began, waited = time.perf_counter(), 0.0
                asked = time.perf_counter()
                _, batch = next(batches)
                waited += time.perf_counter() - asked
                optimisation_step(module, optimizer, batch, first + i, runtime)
            per_step = (time.perf_counter() - began) / args.steps
            timings.setdefault(workers, {}).setdefault(phase, []).append(per_step)
            waits.setdefault(workers, {}).setdefault(phase, []).append(waited / args.steps)
            batches.close()
            print(f"workers {workers} {phase}: {per_step:.3f} s / step", flush=True)

    def mean(table):
        return {w: {phase: sum(runs) / len(runs) for phase, runs in by_phase.items()} for w, by_phase in table.items()}

    seconds, waiting = mean(timings), mean(waits)
    reference = args.workers[0]
    auto = loader_workers("auto", "cpu", compute_threads=args.threads)
    payload = {
        "seconds_per_step": {str(k): v for k, v in seconds.items()},
        "each_timing": {str(k): v for k, v in timings.items()},
        "wait_for_batch_s": {str(k): v for k, v in waiting.items()}, "reference_workers": reference,
        "auto_resolves_to": auto, "cores": available_cores(), "threads": args.threads,
        "input": [config.data.height, config.data.width], "batch": config.train.batch_size,
        "precision": runtime.precision, "torch": torch.__version__, "platform": platform.platform(),
        "command": "python benchmarks/dataloader_contention.py " + " ".join(
            [f"--threads {args.threads}", "--workers", *map(str, args.workers), f"--steps {args.steps}",
             *args.overrides]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataloader_contention.json").write_text(json.dumps(payload, indent=2))
    lines = [
        "# Training step with its data loading, against the number of loader workers",
        "",
        f"{config.data.height}x{config.data.width}, batch {config.train.batch_size}, {args.threads} compute threads "
        f"on {available_cores()} cores, precision {runtime.precision}, torch {torch.__version__}; "
        f"{args.steps} timed steps per row. `data.num_workers=auto` gives {auto} workers here.",
        "",
        f"| workers | phase | s / step (mean) | each timing | of which waiting for the batch | speed against {reference} workers |",
        "|---|---|---|---|---|---|",
        *[f"| {w} | {phase} | {s:.3f} | {', '.join(f'{t:.3f}' for t in timings[w][phase])} | "
          f"{waiting[w][phase]:.3f} | {seconds[reference][phase] / s:.2f}x |"
          for w, by_phase in seconds.items() for phase, s in by_phase.items()],
        "",
        f"Command: `{payload['command']}`",
        "",
    ]
    (out / "dataloader_contention.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
