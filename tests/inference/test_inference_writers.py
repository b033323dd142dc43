"""Output writers: PLY back-projection, 16-bit PNG encoding, colour map, MP4 frames, format names."""

from __future__ import annotations

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData

from mfdepth.inference.writers import (
    FORMATS,
    DepthWriter,
    colourise_depth,
    depth_to_png16,
    parse_formats,
    png16_to_depth,
    point_cloud,
)

K = np.array([[50.0, 0.0, 13.25], [0.0, 45.0, 4.5], [0.0, 0.0, 1.0]])


def _scene(height: int = 10, width: int = 24):
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, 30.0, (height, width)).astype(np.float32)
    depth[0, :5] = 0.0
    depth[3, 7] = np.nan
    depth[4, 8] = np.inf
    depth[-1, -1] = -2.0
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return depth, image


def test_ply_has_one_vertex_per_valid_pixel_at_its_back_projection(tmp_path):
    depth, image = _scene()
    with DepthWriter(tmp_path, ["ply"]) as writer:
        writer.add("frame", image, depth, K)
    vertex = PlyData.read(str(tmp_path / "ply" / "frame.ply"))["vertex"]
    valid = np.isfinite(depth) & (depth > 0)
    assert vertex.count == valid.sum() == depth.size - 8

    rows, cols = np.nonzero(valid)  # row-major order, as written
    z = depth[rows, cols]
    # Pinhole back-projection by hand: X = (u - cx) z / fx, Y = (v - cy) z / fy, Z = z, u = column, v = row.
    expected = np.stack([(cols - K[0, 2]) * z / K[0, 0], (rows - K[1, 2]) * z / K[1, 1], z], axis=1)
    got = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    colours = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1)
    np.testing.assert_array_equal(colours, image[rows, cols])

    # One pixel by name: row 6, column 20.
    index = int(np.flatnonzero((rows == 6) & (cols == 20))[0])
    d = depth[6, 20]
    np.testing.assert_allclose(got[index], [(20 - 13.25) * d / 50.0, (6 - 4.5) * d / 45.0, d], rtol=1e-5)


def test_point_cloud_with_skew_matches_inverse_K():
    depth = np.full((4, 5), 2.0, dtype=np.float32)
    skewed = np.array([[40.0, 3.0, 2.0], [0.0, 30.0, 1.5], [0.0, 0.0, 1.0]])
    points, colours, pixels = point_cloud(depth, skewed)
    assert colours is None and points.shape == (20, 3)
    rays = np.linalg.inv(skewed) @ np.stack([pixels[:, 1], pixels[:, 0], np.ones(20)])
    np.testing.assert_allclose(points, (rays * 2.0).T, rtol=1e-5)


def test_png16_is_kitti_depth_times_256():
    depth, _ = _scene()
    depth[1, 1] = 300.0  # beyond 255.996 m saturates
    values = depth_to_png16(depth)
    assert values.dtype == np.uint16
    assert values[0, 0] == 0 and values[3, 7] == 0 and values[4, 8] == 0 and values[-1, -1] == 0
    assert values[1, 1] == 65535
    assert values[2, 2] == round(depth[2, 2] * 256)
    finite = (values > 0) & (values < 65535)
    np.testing.assert_allclose(png16_to_depth(values)[finite], depth[finite], atol=0.5 / 256 + 1e-6)


def test_colour_map_is_fixed_and_black_where_invalid():
    depth = np.array([[1.0, 5.0, 80.0, 0.0]], dtype=np.float32)
    rgb = colourise_depth(depth, near=1.0, far=80.0)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 3], [0, 0, 0])
    assert rgb[0, 0].sum() > rgb[0, 1].sum() > rgb[0, 2].sum()  # near is bright, far is dark
    np.testing.assert_array_equal(colourise_depth(depth * 0 + 5.0, 1.0, 80.0)[0, 0], rgb[0, 1])


def test_writer_files_and_mp4_frames(tmp_path):
    depth, image = _scene(11, 15)  # odd sizes: the video is padded to even
    with DepthWriter(tmp_path, FORMATS, video_name="clip", fps=5) as writer:
        for name in ("a", "b", "c"):
            writer.add(name, image, depth, K)
    for folder, suffix in (("npy", ".npy"), ("png16", ".png"), ("color", ".png"), ("ply", ".ply")):
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == [f"{n}{suffix}" for n in "abc"]
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / "b.npy"), depth)
    assert np.asarray(Image.open(tmp_path / "png16" / "a.png")).dtype == np.uint16
    reader = imageio_ffmpeg.read_frames(str(tmp_path / "clip.mp4"))
    meta = next(reader)
    assert tuple(meta["size"]) == (30, 12) and sum(1 for _ in reader) == 3


def test_format_names():
    assert parse_formats("npy, ply") == ("npy", "ply")
    assert parse_formats("all") == FORMATS
    with pytest.raises(ValueError, match="unknown output format.*jpeg.*choose from"):
        parse_formats("npy,jpeg")
