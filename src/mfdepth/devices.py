"""The one place that turns a device request (``train.accelerator``, ``--device``) into a torch device."""

from __future__ import annotations

import torch

from mfdepth.errors import DeviceError


def resolve_device(name: str, option: str = "--device", local_rank: int | None = None) -> torch.device:
    """The torch device that ``name`` asks for.

    Args:
        name: ``auto`` (the GPU when one is visible, else the CPU), ``cpu``, ``gpu`` or ``cuda`` (the GPU),
            ``cuda:N``, or any other torch device name (``mps``), passed through.
        option: the flag or config key the request came from, named in the error (``--device``,
            ``train.accelerator``).
        local_rank: the GPU of this process (a ``torchrun`` worker's ``LOCAL_RANK``) for ``auto``, ``gpu``
            and ``cuda``; None = torch's current GPU.
    Raises:
        DeviceError: a GPU is asked for and none is visible (one line, naming ``option`` and the fix).
    """
    wants_cuda = name in ("gpu", "cuda") or name.startswith("cuda:") or (name == "auto" and torch.cuda.is_available())
    if not wants_cuda:
        return torch.device("cpu" if name == "auto" else name)
    if not torch.cuda.is_available():
        sep = " " if option.startswith("-") else "="
        raise DeviceError(f"{option}{sep}{name}: no CUDA device is visible here; use {option}{sep}cpu")
    if name.startswith("cuda:") or local_rank is None:
        return torch.device("cuda" if name in ("auto", "gpu") else name)
    return torch.device("cuda", local_rank)


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU has bfloat16 arithmetic in hardware (AMX tiles or AVX512-BF16).

    There bfloat16 autocast makes a training step about 1.3x faster than float32
    (``benchmarks/profile_step.py --precision 32 bf16-mixed``); elsewhere torch emulates bfloat16 and
    it is slower. The probes are torch's own (``torch.cpu``); a torch without them answers False.
    """
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
