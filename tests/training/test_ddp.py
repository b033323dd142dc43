"""Two CPU processes with DDP (gloo) train from the same config as one process does."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from mfdepth.config import load_config
from mfdepth.training.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank, world, port):
    """Make this child process rank ``rank`` of ``world`` (the environment torchrun would set), one thread."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def _tiny_ddp_overrides(tmp_path, *extra):
    """Two-process pretrain on a freshly rendered tiny world in ``tmp_path``."""
    from mfdepth.synth import ensure_world

    world = tmp_path / "world"
    ensure_world(world, preset="tiny", progress=False)
    return [
        f"data.root={world}", "data.synth_preset=tiny", "data.num_workers=0", "model.num_depth_bins=8",
        "train.batch_size=1", "train.warmup_steps=1", "train.strategy=ddp", "train.accelerator=cpu",
        f"run_dir={tmp_path / 'run'}", *extra,
    ]


def _worker(rank, world, port, overrides, out):
    _join(rank, world, port)
    from mfdepth.training import loop
    from mfdepth.training.recipe import run_stage

    trained = {}
    original_fit = loop.fit

    def capturing_fit(module, *args, **kwargs):  # keep this rank's own in-memory networks
        trained["stage"] = module
        return original_fit(module, *args, **kwargs)

    loop.fit = capturing_fit  # this child process only
    config = load_config(None, overrides)
    run_stage("pretrain", config, config.run_dir, progress=False)
    # Parameters only: batch-norm statistics are per rank (rank 0's are the ones saved).
    parameters = {name: p.detach() for name, p in trained["stage"].pose.named_parameters()}
    torch.save(parameters, os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def test_two_process_ddp_pretrain(tmp_path):
    overrides = _tiny_ddp_overrides(tmp_path, "train.pretrain_steps=2", "train.ema_decay=0")
    mp.spawn(_worker, args=(2, _free_port(), overrides, str(tmp_path)), nprocs=2, join=True)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "pretrain.ckpt")
    assert checkpoint["step"] == 2
    # Gradients were averaged across the ranks, so both hold the same weights.
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    differing = [k for k in a if not torch.allclose(a[k], b[k])]
    assert not differing, differing[:5]
    start = load_checkpoint(tmp_path / "run" / "checkpoints" / "pretrain.ckpt")["models"]["pose"]
    assert all(torch.allclose(a[k], start[k]) for k in a)


def _pinned_worker(rank, world, port, overrides, out, pinned_ranks):
    """Train the pretrain stage with this rank's depth reported pinned (``pinned_fraction`` 1) when it is in
    ``pinned_ranks``; write ``collapsed<rank>`` if the collapse guard stopped it, ``done<rank>`` if not."""
    _join(rank, world, port)
    from mfdepth.training.loop import DepthCollapseError
    from mfdepth.training.recipe import run_stage
    from mfdepth.training.stages import PretrainStage

    original = PretrainStage.forward

    def reported(self, batch, generator):
        loss, scalars, images = original(self, batch, generator)
        if rank in pinned_ranks:
            scalars = {**scalars, "pinned_fraction": torch.tensor(1.0)}
        return loss, scalars, images

    PretrainStage.forward = reported  # this child process only
    config = load_config(None, overrides)
    try:
        run_stage("pretrain", config, config.run_dir, progress=False)
        outcome = "done"
    except DepthCollapseError:
        outcome = "collapsed"
    with open(os.path.join(out, f"{outcome}{rank}"), "w"):
        pass
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("pinned_ranks, outcome", [((0,), "done"), ((0, 1), "collapsed")])
def test_the_collapse_guard_stops_every_rank_or_none(tmp_path, pinned_ranks, outcome):
    overrides = _tiny_ddp_overrides(tmp_path, "train.pretrain_steps=3", "train.collapse_guard_steps=2")
    context = mp.spawn(_pinned_worker, args=(2, _free_port(), overrides, str(tmp_path), pinned_ranks), nprocs=2,
                       join=False)
    finished = False
    for _ in range(24):  # a rank left waiting for one that stopped alone would hang: fail instead
        if context.join(timeout=5):
            finished = True
            break
    if not finished:
        for process in context.processes:
            process.kill()
    assert finished, "the ranks did not all finish: one stopped while the other waited"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name[:-1] in ("done", "collapsed")) == [
        f"{outcome}0", f"{outcome}1"]
