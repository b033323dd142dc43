"""Fixtures of the inference tests: a tiny checkpoint, synthetic-world frames as arrays and as a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from inference_helpers import HEIGHT, WIDTH, make_checkpoint
from PIL import Image


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "student.ckpt")


@pytest.fixture(scope="session")
def synthetic_frames() -> tuple[np.ndarray, np.ndarray]:
    """Five consecutive frames of the synthetic world at 64x192: ``(images (5,H,W,3) uint8, K (3,3) pixels)``."""
    from mfdepth.synth import render_sequence

    sequence = render_sequence(3, 5, HEIGHT, WIDTH, "normal")
    return sequence.images, sequence.K


@pytest.fixture(scope="session")
def frame_folder(tmp_path_factory, synthetic_frames) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    for index, image in enumerate(synthetic_frames[0]):
        Image.fromarray(image).save(folder / f"{index:04d}.png")
    return folder


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run these tests on one thread: on a shared 2-core machine, OpenMP threads that spin-wait for a
    busy sibling core make small convolutions tens of times slower (0.03 s -> 0.9 s for a ResNet-18)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
