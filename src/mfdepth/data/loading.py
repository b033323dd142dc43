"""How many DataLoader worker processes a run uses (``data.num_workers``)."""

from __future__ import annotations

import os

import torch

AUTO = "auto"
MAX_AUTO_WORKERS = 8


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def loader_workers(setting: int | str, device_type: str, cores: int | None = None,
                   compute_threads: int | None = None) -> int:
    """The worker count for ``setting`` (an integer is taken as given).

    ``auto``: on an accelerator, every core but one (at most 8) loads data. On the CPU the networks
    already run on ``compute_threads`` (torch's intra-op threads) of the ``cores``; workers get only
    the cores left over (at most 2), so none on a machine whose cores all compute. There, loading in
    the main process costs a bounded 0.04 s of a 0.85-1.5 s step, while two workers beside two compute
    threads made the joint step 1.14x slower (and were within the host's drift in the warm-up;
    ``benchmarks/dataloader_contention.py``).
    """
    if setting != AUTO:
        return int(setting)
    cores = available_cores() if cores is None else cores
    if device_type != "cpu":
        return max(0, min(MAX_AUTO_WORKERS, cores - 1))
    threads = torch.get_num_threads() if compute_threads is None else compute_threads
    return max(0, min(2, cores - threads))
