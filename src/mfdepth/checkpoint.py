"""Checkpoints: atomic writes, metadata for flag-free inference, ``weights_only`` loading, and the one
function that restores named networks from a checkpoint (:func:`restore_networks`).

Training, evaluation, inference and export all read and write checkpoints through this module, so
none of them imports another to reach a checkpoint. A checkpoint is a plain dict::

    {
        "models": {MULTI: state_dict, POSE: state_dict, ...},   # names below
        "optimizer": state_dict or None,
        "step": int,              # optimisation steps done in this stage
        "stage": str,
        "meta": {"version", "height", "width", "min_depth", "max_depth", "config", ...},
    }

Everything in it is a tensor, a number, a string, or a list/dict of those, so it loads with
``torch.load(..., weights_only=True)``: a checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from mfdepth import __version__

__all__ = [
    "MULTI", "SINGLE", "TEACHER", "POSE", "CheckpointError", "default_network", "single_frame_name",
    "restore_networks", "save_checkpoint", "remove_stale_temporaries", "non_finite_entries", "load_checkpoint",
    "make_meta",
]

MULTI = "multi"
"""The multi-frame depth network (M0 in a pretrain checkpoint, the student M in a student checkpoint)."""
SINGLE = "single"
"""The single-frame depth network S0 of a pretrain checkpoint."""
TEACHER = "teacher"
"""The single-frame teacher S* of a teacher or student checkpoint."""
POSE = "pose"
"""The pose network."""


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or lacks what the caller needs."""


def default_network(models: dict[str, Any]) -> str:
    """The network kind (``"multi"`` or ``"single"``) that ``network="auto"`` means for a checkpoint's
    ``models``: the multi-frame net when it holds one."""
    return "multi" if MULTI in models else "single"


def single_frame_name(models: dict[str, Any]) -> str:
    """The name of the single-frame net a checkpoint's ``models`` offers: the teacher S* when present,
    else S0 (:data:`SINGLE`)."""
    return TEACHER if TEACHER in models else SINGLE


def restore_networks(checkpoint: dict[str, Any], networks: dict[str, Any], source: str | Path = "checkpoint") -> None:
    """Load ``checkpoint["models"][name]`` into each ``networks[name]`` (an ``nn.Module``).

    A missing network or weights that do not fit the architecture are one-line :class:`CheckpointError`
    naming ``source`` (the file), the network and the mfdepth version that wrote it.
    """
    models, meta = checkpoint["models"], checkpoint.get("meta", {})
    for name, net in networks.items():
        if name not in models:
            raise CheckpointError(f"{source} holds no '{name}' network (stage {meta.get('stage')})")
        missing, unexpected = net.load_state_dict(models[name], strict=False)
        if missing or unexpected:
            details = ", ".join([*(f"missing {k}" for k in missing[:2]), *(f"unexpected {k}" for k in unexpected[:2])])
            raise CheckpointError(
                f"{source}: the '{name}' network does not match this mfdepth's architecture ({details}); "
                f"retrain, or load it with the mfdepth that wrote it (version {meta.get('version', '?')})"
            )


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically.

    The bytes go to a temporary file in the same folder, are flushed to disk, and then renamed over
    ``path``: a run killed mid-write leaves the previous checkpoint intact, never half a file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {err.strerror}; choose a writable run_dir") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as err:
        Path(tmp_name).unlink(missing_ok=True)
        # torch reports a failed write (a full disk) as a RuntimeError from its zip writer.
        if isinstance(err, OSError) or (isinstance(err, RuntimeError) and "write" in str(err).lower()):
            reason = err.strerror if isinstance(err, OSError) and err.strerror else "the write failed"
            raise CheckpointError(
                f"cannot write checkpoint {path}: {reason} (disk full?); free disk space or choose another "
                "run_dir, then run again to resume (the previous checkpoint is kept)"
            ) from None
        raise
    return path


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that :func:`save_checkpoint` leaves when the process is killed mid-write
    (hidden ``.<name>.ckpt.*.tmp``, as large as a checkpoint); returns what was removed."""
    folder = Path(folder)
    removed = sorted(folder.glob(".*.ckpt.*.tmp")) if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def non_finite_entries(checkpoint: dict[str, Any]) -> list[str]:
    """Names of the network weights and optimizer state tensors of ``checkpoint`` that hold NaN or inf."""
    bad = []
    for net, state in checkpoint.get("models", {}).items():
        bad += [f"{net}.{k}" for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
                and not torch.isfinite(v).all()]
    optimizer = checkpoint.get("optimizer") or {}
    for index, state in optimizer.get("state", {}).items():
        bad += [f"optimizer.state[{index}].{k}" for k, v in state.items()
                if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    return bad


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``); ``mmap`` maps the
    tensors instead of reading them (fast when only the metadata is wanted)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"cannot read checkpoint {path}: {_unreadable_reason(path, err)}; give a checkpoint written by "
            "mfdepth train (RUN_DIR/checkpoints/<stage>.ckpt)"
        ) from None
    if not isinstance(checkpoint, dict) or "models" not in checkpoint or "meta" not in checkpoint:
        raise CheckpointError(f"{path} is not an mfdepth checkpoint (no 'models'/'meta' entries)")
    return checkpoint


def _unreadable_reason(path: Path, err: Exception) -> str:
    """Why torch could not load ``path``, in a few words (torch's own messages span lines and suggest
    ``weights_only=False``, which would let the file run code)."""
    if path.stat().st_size == 0:
        return "the file is empty (an interrupted copy or save?)"
    if not zipfile.is_zipfile(path):
        return "not a PyTorch checkpoint (corrupt, truncated, or another kind of file)"
    if isinstance(err, pickle.UnpicklingError):
        return "it holds Python objects besides tensors, numbers and text, which mfdepth refuses to load (they could run code)"
    first_line = (str(err).strip().splitlines() or [""])[0][:160]
    return f"the file is corrupt or truncated ({err.__class__.__name__}: {first_line})"


def make_meta(config_dict: dict, stage: str, **extra: Any) -> dict[str, Any]:
    """Metadata stored with every checkpoint so inference needs no flags."""
    meta = {
        "version": __version__,
        "stage": stage,
        "height": config_dict["data"]["height"],
        "width": config_dict["data"]["width"],
        "min_depth": config_dict["model"]["min_depth"],
        "max_depth": config_dict["model"]["max_depth"],
        "config": config_dict,
    }
    meta.update(extra)
    return meta
