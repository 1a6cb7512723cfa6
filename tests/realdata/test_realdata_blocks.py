"""Real Earth Search COGs read by inflating their tiles here (cloudfree.blocks) equal GDAL's read.

GIVEN the nine GeoTIFFs of a real Earth Search item (S2A_29RKH_20200219_0_L2A: B02-B12, B8A, SCL,
AOT, as rio-tiler-pds keeps them for its tests: decimated 10x, DEFLATE, 512 px tiles, no
predictor), and the same pixels re-tiled the way the archive publishes them at full size
(1024 px tiles, DEFLATE, PREDICTOR=2: gdalinfo of a real B04.tif, quoted in cloudfree.windows),
WHEN random windows are read through ``blocks.read_into`` and through GDAL,
THEN the arrays are equal, every one, and both paths are taken where they should be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window as RWindow

from cloudfree import blocks
from cloudfree.windows import Window
from tests.conftest import SHARED

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(blocks._compiled() is None, reason="no isal or no _blocks")]

ITEM = (SHARED / "realdata/rio-tiler-pds/tests/fixtures/sentinel-cogs/sentinel-s2-l2a-cogs/29/R/"
        "KH/2020/2/S2A_29RKH_20200219_0_L2A")
FILES = sorted(ITEM.glob("*.tif"))


def _compare(path: str, rng: np.random.Generator, n: int = 30) -> int:
    """Random windows of ``path`` read both ways; returns how many were read here."""
    read_here = 0
    with rasterio.open(path) as src:
        h, w = src.height, src.width
        for _ in range(n):
            r, c = int(rng.integers(0, h)), int(rng.integers(0, w))
            win = Window(r, c, int(rng.integers(1, h - r + 1)), int(rng.integers(1, w - c + 1)))
            want = src.read(1, window=RWindow(c, r, win.width, win.height))
            out = np.full(win.shape, 7, want.dtype)
            if blocks.read_into(src, path, win, out, 1):
                read_here += 1
                np.testing.assert_array_equal(out, want, err_msg=f"{path} {win}")
    return read_here


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_archive_files_as_they_are(path: Path):
    assert _compare(str(path), np.random.default_rng(len(path.name))) == 30


@pytest.mark.parametrize("name", ["B02.tif", "B11.tif", "SCL.tif"])
def test_retiled_as_the_full_size_archive(tmp_path, name):
    """1024 px tiles with the horizontal predictor, the real pixels tiled 2 x 2 to reach
    partial edge tiles (2196 px at 10 m)."""
    with rasterio.open(ITEM / name) as src:
        data, profile = src.read(1), src.profile
    big = np.tile(data, (2, 2))
    profile.update(height=big.shape[0], width=big.shape[1], blockxsize=1024, blockysize=1024,
                   tiled=True, compress="deflate", predictor=2)
    dst = tmp_path / name
    with rasterio.open(dst, "w", **profile) as out:
        out.write(big, 1)
    with rasterio.open(dst) as src:
        assert blocks.layout(src, 1).predictor == 2
    assert _compare(str(dst), np.random.default_rng(3)) == 30
