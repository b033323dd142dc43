"""The synthetic dynamic driving world: a procedural ray-cast renderer and a KITTI-layout writer.

* :func:`render_sequence` renders one sequence in memory (images, depth, motion and instance masks,
  poses, intrinsics).
* :func:`write_world` writes a whole world (KITTI raw layout, calibration, ground truth, splits).
* :func:`ensure_world` writes one only when ``root`` does not already hold a matching world.
"""

from mfdepth.synth.scene import CAMERA_HEIGHT, PROFILES
from mfdepth.synth.world import SEMANTIC_CLASSES, SynthSequence, intrinsics, render_sequence
from mfdepth.synth.writer import DATE, DEFAULT_SPLIT, PRESETS, ensure_world, read_poses, write_world

__all__ = [
    "CAMERA_HEIGHT",
    "DATE",
    "DEFAULT_SPLIT",
    "PRESETS",
    "PROFILES",
    "SEMANTIC_CLASSES",
    "SynthSequence",
    "ensure_world",
    "intrinsics",
    "read_poses",
    "render_sequence",
    "write_world",
]
