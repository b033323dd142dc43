"""Procedural textures: band-limited multi-octave value noise on surface coordinates.

Textures are functions of coordinates fixed to a surface (world coordinates for the road, box-relative
coordinates for buildings, cars and pedestrians), so a static point looks the same from every camera
position: brightness constancy holds by construction. Each octave fades out once it would be finer
than the pixel footprint, which keeps distant surfaces from aliasing into flicker.
"""

from __future__ import annotations

import numpy as np

LATTICE_SIZE = 256
"""Cells per side of the random lattice; a power of two so that ``& (size - 1)`` wraps indices."""

OCTAVE_FREQUENCIES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
"""Cycles per metre of each noise octave: 2 m blotches down to 6 cm grain."""


class NoiseLattice:
    """A seeded periodic lattice of random values in [0, 1) that value noise interpolates.

    The lattice is stored padded by one row and column (a wrapped copy), so the four corners of a cell
    are at flat offsets 0, 1, size+1 and size+2 and no per-sample wrap of the upper corner is needed.
    """

    def __init__(self, seed: int, size: int = LATTICE_SIZE):
        if size & (size - 1):
            raise ValueError(f"lattice size must be a power of two, got {size}")
        rng = np.random.default_rng(seed)
        table = rng.random((size, size), dtype=np.float32)
        self.size = size
        self.flat = np.pad(table, ((0, 1), (0, 1)), mode="wrap").ravel()
        # Each octave reads the lattice at its own offset, so octaves are not scaled copies of each other.
        self.octave_offsets = rng.uniform(0, size, size=(len(OCTAVE_FREQUENCIES), 2)).astype(np.float32)

    def cells(self, iu: np.ndarray, iv: np.ndarray) -> np.ndarray:
        """Random value in [0, 1) of integer cells ``(iu, iv)`` (any shape): piecewise-constant noise."""
        mask = self.size - 1
        return self.flat[(iu.astype(np.int64) & mask) * (self.size + 1) + (iv.astype(np.int64) & mask)]

    def octave(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Smooth value noise in [0, 1) at continuous lattice coordinates ``u, v`` (1 cell = 1 unit)."""
        fu = np.floor(u)
        fv = np.floor(v)
        su = u - fu
        sv = v - fv
        su = su * su * (3.0 - 2.0 * su)
        sv = sv * sv * (3.0 - 2.0 * sv)
        mask = self.size - 1
        index = (fu.astype(np.int64) & mask) * (self.size + 1) + (fv.astype(np.int64) & mask)
        v00 = self.flat[index]
        v01 = self.flat[index + 1]
        v10 = self.flat[index + (self.size + 1)]
        v11 = self.flat[index + (self.size + 2)]
        low = v00 + (v01 - v00) * sv
        high = v10 + (v11 - v10) * sv
        return low + (high - low) * su


def fractal_noise(
    lattice: NoiseLattice, u: np.ndarray, v: np.ndarray, footprint: np.ndarray, persistence: float = 0.85
) -> np.ndarray:
    """Multi-octave value noise, zero-mean, band-limited to the pixel footprint.

    Args:
        lattice: the random lattice.
        u, v: ``(N,)`` float32 surface coordinates in metres.
        footprint: ``(N,)`` float32 size of one pixel on the surface, metres. An octave keeps full
            weight up to half a cycle per pixel and is gone at one cycle per pixel, so its mean (not
            its aliased pattern) is what distant surfaces show.
        persistence: amplitude ratio between successive octaves.
    Returns:
        ``(N,)`` float32, roughly within [-0.5, 0.5] with a standard deviation near 0.15.
    """
    total = np.zeros(u.shape, dtype=np.float32)
    amplitudes = persistence ** np.arange(len(OCTAVE_FREQUENCIES), dtype=np.float32)
    amplitudes /= amplitudes.sum()
    for (frequency, amplitude), (off_u, off_v) in zip(
        zip(OCTAVE_FREQUENCIES, amplitudes), lattice.octave_offsets
    ):
        weight = np.clip(2.0 - 2.0 * footprint * frequency, 0.0, 1.0).astype(np.float32)
        keep = weight > 0
        if not keep.any():
            break  # frequencies only grow: every later octave is finer still
        if keep.all():
            total += (amplitude * weight) * (lattice.octave(u * frequency + off_u, v * frequency + off_v) - 0.5)
        else:
            sub_u, sub_v = u[keep], v[keep]
            value = lattice.octave(sub_u * frequency + off_u, sub_v * frequency + off_v) - 0.5
            total[keep] += (amplitude * weight[keep]) * value
    return total
