"""The published COGs' compressions (CogCompression) on real Sentinel-2 pixels.

LERC_ZSTD (lossless: MAX_Z_ERROR 0) must give exactly DEFLATE's pixels, full resolution and
overviews, stay a valid COG, and be smaller: Earth Search's real 29RKH COGs (B02, B11: decimated
10x by rio-tiler-pds, 100 / 200 m; T29UNU's JP2 B04 at 60 m with ~40 % outside the swath) and
a real true-colour image made from them (uint8 RGB, pixel-interleaved like the visual COG).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from cloudfree.assemble import validate_cog, write_web_cog
from tests.conftest import SHARED

pytestmark = pytest.mark.realdata

KH = (SHARED / "realdata/rio-tiler-pds/tests/fixtures/sentinel-cogs/sentinel-s2-l2a-cogs/29/R/"
      "KH/2020/2/S2A_29RKH_20200219_0_L2A")
UNU = (SHARED / "realdata/stactools-sentinel2/tests/data-files/S2A_MSIL2A_20221005T115411_N0400_"
       "R023_T29UNU_20221005T164454.SAFE/GRANULE/L2A_T29UNU_A038058_20221005T115407/IMG_DATA/"
       "R60m/T29UNU_20221005T115411_B04_60m.jp2")


def _as_tiff(src: Path, dst: Path) -> Path:
    """The source as a plain GeoTIFF with nodata 0 (write_web_cog's input: a stitched band)."""
    with rasterio.open(src) as s:
        profile = {"driver": "GTiff", "width": s.width, "height": s.height, "count": s.count,
                   "dtype": s.dtypes[0], "crs": s.crs, "transform": s.transform, "nodata": 0,
                   "tiled": True, "blockxsize": 256, "blockysize": 256}
        with rasterio.open(dst, "w", **profile) as d:
            d.write(s.read())
    return dst


def _true_colour(tmp_path: Path) -> Path:
    """B04, B03, B02 scaled to uint8 as Earth Search's TCI (DN / 10000 x 255 x 3.5, clipped)."""
    bands = []
    for name in ("B04", "B03", "B02"):
        with rasterio.open(KH / f"{name}.tif") as s:
            bands.append(s.read(1))
            crs, transform = s.crs, s.transform
    rgb = np.clip(np.stack(bands).astype(np.float64) / 10000 * 255 * 3.5, 0, 255)
    rgb = np.where(np.stack(bands) == 0, 0, np.maximum(rgb, 1)).astype(np.uint8)
    dst = tmp_path / "tci.tif"
    with rasterio.open(dst, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1],
                       count=3, dtype="uint8", crs=crs, transform=transform, nodata=0,
                       tiled=True, blockxsize=256, blockysize=256) as d:
        d.write(rgb)
        d.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    return dst


#: (source, zoom of its web COG): the real inputs, also measured by ``bench/bench_codecs.py``
CASES = [(KH / "B02.tif", 10), (KH / "B11.tif", 9), (UNU, 11), ("tci", 10)]


def case_name(source) -> str:
    return "true colour" if source == "tci" else Path(source).name


def case_input(source, folder: Path) -> tuple[Path, list[int]]:
    """A case's stitched-band-like GeoTIFF in ``folder`` and its band indexes."""
    src = _true_colour(folder) if source == "tci" else _as_tiff(Path(source), folder / "in.tif")
    with rasterio.open(src) as s:
        return src, list(s.indexes)


def _levels(path: str) -> list[np.ndarray]:
    with rasterio.open(path) as cog:
        levels = [cog.read()]
        n = len(cog.overviews(1))
    for i in range(n):
        with rasterio.open(path, overview_level=i) as ov:
            levels.append(ov.read())
    return levels


@pytest.mark.parametrize("source, zoom", CASES)
def test_lerc_zstd_is_deflates_pixels_in_fewer_bytes(tmp_path, source, zoom):
    src, indexes = case_input(source, tmp_path)
    got = {}
    for profile in ("deflate", "lerc_zstd"):
        info = write_web_cog(src, str(tmp_path / profile / "out.tif"), indexes=indexes,
                             zoom_level=zoom, profile=profile)
        valid, errors, _ = validate_cog(info.href)
        assert valid, (profile, errors)
        with rasterio.open(info.href) as cog:
            assert cog.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == profile.upper()
        got[profile] = info
    a, b = _levels(got["deflate"].href), _levels(got["lerc_zstd"].href)
    assert len(a) == len(b) > 1
    for level, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x.dtype == y.dtype and np.array_equal(x, y), level
    assert got["lerc_zstd"].size < got["deflate"].size
