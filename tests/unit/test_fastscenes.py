"""bench/fastscenes.py: hand-written tiled GeoTIFFs that GDAL reads as Earth Search-like COGs."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import fastscenes  # noqa: E402

from cloudfree.bands import SCL, get_band  # noqa: E402
from cloudfree.grid import parse_tile  # noqa: E402
from cloudfree.windows import Window, read_scl_for, read_stack  # noqa: E402


def test_generated_scene_reads_like_earth_search(tmp_path: Path) -> None:
    manifest = fastscenes.generate(tmp_path, 2, ["coastal"], "33UUP", 2023, pool_size=5)
    tile = parse_tile("33UUP")
    coastal = get_band("coastal")
    assert [s["assets"].keys() for s in manifest["scenes"]] == [{"coastal", "scl"}] * 2
    for band in (coastal, SCL):
        with rasterio.open(manifest["scenes"][0]["assets"][band.key]) as src:
            assert src.shape == (band.size, band.size)
            assert src.block_shapes[0] == (band.block, band.block)
            assert src.compression.value == "DEFLATE" and src.nodata == 0
            assert src.crs == tile.crs and src.transform == tile.transform(band.resolution)
            assert src.dtypes[0] == band.dtype
            # Earth Search's reflectance COGs: PREDICTOR=2 (fastscenes.PREDICTOR)
            assert src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == (
                None if band is SCL else "2")
    # a block reads back as the pool block it points at (last column: a partial edge tile)
    pool = fastscenes.make_pool("uint16", seed=0, size=5)  # cached: the one generate used
    picks = fastscenes._picks(2, 1, 0, len(pool.blobs))
    diffs = np.frombuffer(zlib.decompress(pool.blobs[picks[3]]), "<u2").reshape(1024, 1024)
    raw = np.cumsum(diffs, axis=1, dtype=np.uint16)  # PREDICTOR=2 undone
    win = Window(1024, 1024, 806, 806)
    got = read_stack([manifest["scenes"][1]["assets"]["coastal"]], win)[0]
    np.testing.assert_array_equal(got, raw[:806, :806])
    # the scenes differ (a median over them is not trivial) and SCL holds clear and cloud
    a, b = (read_stack([s["assets"]["coastal"]], Window(0, 0, 1024, 1024))[0]
            for s in manifest["scenes"])
    assert (a != b).mean() > 0.9
    scl = read_scl_for(manifest["scenes"][0]["assets"]["scl"], coastal, Window(0, 0, 1830, 1830))
    classes = set(np.unique(scl).tolist())
    assert {4, 5} <= classes and classes & {8, 9}


def test_a_sparse_tile_reads_as_nodata(tmp_path: Path) -> None:
    """A pick of None writes no tile (offset and size 0): GDAL reads nodata there."""
    pool = fastscenes.make_pool("uint16", seed=0, size=5)
    path = tmp_path / "s.tif"
    fastscenes.write_tiff(path, 1830, pool, [0, None, None, 1], parse_tile("33UUP"), 60)
    with rasterio.open(path) as src:
        data = src.read(1)
    assert (data[:1024, 1024:] == 0).all() and (data[1024:, :1024] == 0).all()
    assert (data[:1024, :1024] > 0).all() and (data[1024:, 1024:] > 0).all()
