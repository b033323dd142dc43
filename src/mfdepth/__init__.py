"""mfdepth: self-supervised multi-frame monocular depth estimation in dynamic scenes."""

__version__ = "0.1.0"
