"""Stitching window results and writing the EPSG:3857 web-optimized COG."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from cloudfree.assemble import (
    assemble_band,
    merge_window_stats,
    native_zoom,
    stitch,
    write_web_cog,
)
from cloudfree.bands import get_band
from cloudfree.composite import WindowResult, write_window_result
from cloudfree.errors import IncompleteError, InputError
from cloudfree.grid import parse_tile
from cloudfree.windows import Window, plan_windows

from .test_composite import LocalLayout

TILE = parse_tile("33UUP")
BLUE = get_band("blue")


def smooth(n: int, dtype=np.uint16) -> np.ndarray:
    """A smooth, compressible pattern (values 500..4500)."""
    y = np.linspace(0, 6, n, dtype=np.float32)[:, None]
    x = np.linspace(0, 9, n, dtype=np.float32)[None, :]
    return (2500 + 1000 * np.sin(y) + 1000 * np.cos(x)).astype(dtype)


def write_windows(layout, band, windows, full: np.ndarray, year=2023) -> list[str]:
    """Window results (median = ``full``, count = 3 where > 0) via composite's writer."""
    uris = []
    for w in windows:
        sl = (slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width))
        med = full[sl].copy()
        count = np.where(med > 0, 3, 0).astype(np.uint8)
        res = WindowResult(band.key, w, med, count, {"a": int(count.size), "b": 0})
        uri = layout.window_result(year, TILE.id, band.key, w.row_off, w.col_off)
        write_window_result(res, uri, TILE, band, layout.window_stats(year, TILE.id, band.key,
                                                                      w.row_off, w.col_off))
        uris.append(uri)
    return uris


@pytest.fixture
def small(tmp_path):
    """A 2048 px blue grid at the tile's corner, as four 1024 px window results."""
    full = smooth(2048)
    full[:300, :300] = 0  # nodata corner
    windows = [Window(r, c, 1024, 1024) for r in (0, 1024) for c in (0, 1024)]
    layout = LocalLayout(tmp_path)
    return layout, windows, full, write_windows(layout, BLUE, windows, full)


@pytest.mark.parametrize("method", ["vrt", "gtiff"])
def test_stitch_roundtrip(small, tmp_path, method):
    _, _, full, uris = small
    path = stitch(uris[::-1], TILE, BLUE, workdir=tmp_path / method, method=method,
                  tile_size=2048)
    with rasterio.open(path) as src:
        assert (src.width, src.height, src.count) == (2048, 2048, 2)
        assert src.crs.to_epsg() == 32633 and src.nodata == 0
        assert src.transform == TILE.transform(10)
        np.testing.assert_array_equal(src.read(1), full)
        np.testing.assert_array_equal(src.read(2), np.where(full > 0, 3, 0))


def test_stitch_missing_window(small, tmp_path):
    _, _, _, uris = small
    gone = uris[2]
    Path(gone).unlink()
    with pytest.raises(IncompleteError, match="r01024_c00000"):
        stitch(uris, TILE, BLUE, workdir=tmp_path / "x", tile_size=2048)
    with pytest.raises(IncompleteError, match="cover"):
        stitch(uris[:2] + uris[3:], TILE, BLUE, workdir=tmp_path / "y", tile_size=2048)


def test_stitch_rejects_overlap(small, tmp_path):
    _, _, _, uris = small
    with pytest.raises(InputError, match="overlap"):
        stitch(uris + uris[:1], TILE, BLUE, workdir=tmp_path / "z", tile_size=2048)


@pytest.mark.parametrize("res,lat,zoom", [(10, 0, 14), (20, 0, 13), (60, 0, 12), (10, 48, 14),
                                          (20, 48, 13), (60, 48, 11), (10, 70, 13)])
def test_native_zoom(res, lat, zoom):
    assert native_zoom(res, lat) == zoom


def test_web_cog_valid_and_deterministic(small, tmp_path):
    _, _, full, uris = small
    src = stitch(uris, TILE, BLUE, workdir=tmp_path / "s", tile_size=2048)
    a = write_web_cog(src, str(tmp_path / "a" / "blue.tif"), indexes=[1])
    b = write_web_cog(src, str(tmp_path / "b" / "blue.tif"), indexes=[1])
    assert a.sha256 == b.sha256 and a.size == b.size
    assert Path(a.href).read_bytes() == Path(b.href).read_bytes()
    assert cog_validate(a.href, quiet=True)[0] is True
    assert a.crs == "EPSG:3857" and a.dtype == "uint16" and a.bands == 1 and a.nodata == 0
    assert a.zoom == 14 and a.resolution_m == pytest.approx(9.554628, abs=1e-5)
    assert 6 < a.ground_resolution_m < 6.5  # cos(48.5°) x 9.55 m: nothing coarsened
    with rasterio.open(a.href) as cog:
        assert cog.crs.to_epsg() == 3857 and cog.nodata == 0
        assert cog.tags()["TILING_SCHEME_NAME"] == "WebMercatorQuad"
        assert cog.tags()["TILING_SCHEME_ZOOM_LEVEL"] == "14"
        assert "DATETIME" not in {k.upper() for k in cog.tags()}
        data = cog.read(1)
        assert cog.overviews(1)
    assert data.max() <= full.max() and data[data > 0].min() >= full[full > 0].min()
    coarse = write_web_cog(src, str(tmp_path / "c" / "blue.tif"), indexes=[1], zoom_level=12,
                           profile="zstd", resampling="nearest")
    assert coarse.zoom == 12 and coarse.shape[0] < a.shape[0] // 3


def test_assemble_band_with_count(small, tmp_path):
    layout, windows, _, _ = small
    info = assemble_band(layout, 2023, "33UUP", "blue", windows, write_count=True,
                         tile_size=2048)
    assert Path(info.href).name == "33UUP_2023_blue.tif"
    count = info.related["count"]
    assert Path(count.href).name == "33UUP_2023_count.tif" and count.zoom == info.zoom
    with rasterio.open(count.href) as cog:
        assert cog.dtypes == ("uint8",) and count.dtype == "uint8"
        assert set(np.unique(cog.read(1))) <= {0, 3}  # nearest: no interpolated counts
    stats = json.loads(Path(layout.band_stats(2023, "33UUP", "blue")).read_text())
    assert stats["pixels"] == 2048 * 2048
    assert stats["valid_pixels"] == 2048 * 2048 - 300 * 300
    assert stats["contributions"] == {"a": 2048 * 2048, "b": 0}
    assert stats["cog"]["sha256"] == info.sha256


def test_merge_window_stats():
    merged = merge_window_stats([
        {"pixels": 10, "valid_pixels": 8, "count_histogram": [2, 3, 5],
         "contributions": {"x": 4}, "outliers": {"x": 3}, "masked": {"x": 1, "y": 0}},
        {"pixels": 6, "valid_pixels": 6, "observed_pixels": 5, "count_histogram": [0, 1, 2, 3],
         "contributions": {"x": 1, "y": 2}, "snow_pixels": 2}])
    # outliers / masked (issue 8): per-scene sums; windows written before them have none
    assert merged == {"pixels": 16, "valid_pixels": 14, "observed_pixels": 15, "snow_pixels": 2,
                      "median_seconds": 0.0,
                      "valid_fraction": 0.875,
                      "count_histogram": [2, 4, 7, 3], "contributions": {"x": 5, "y": 2},
                      "outliers": {"x": 3}, "masked": {"x": 1, "y": 0}}


def test_bad_zoom_option(small, tmp_path):
    _, _, _, uris = small
    src = stitch(uris, TILE, BLUE, workdir=tmp_path / "s", tile_size=2048)
    with pytest.raises(InputError):
        write_web_cog(src, str(tmp_path / "x.tif"), zoom_level="finest")


@pytest.mark.slow
def test_full_tile_band_to_web_cog(tmp_path):
    """A whole 10980 px 10 m band of 33UUP, through window results, stitch and web COG."""
    t0 = time.perf_counter()
    full = smooth(BLUE.size)
    layout = LocalLayout(tmp_path)
    windows = plan_windows(BLUE, 16, 10240)  # 4 windows (6144 px)
    write_windows(layout, BLUE, windows, full)
    t1 = time.perf_counter()
    info = assemble_band(layout, 2023, "33UUP", "blue", windows)
    t2 = time.perf_counter()
    print(f"\nfull tile: window results {t1 - t0:.1f} s, stitch + web COG {t2 - t1:.1f} s "
          f"-> {info.shape} px zoom {info.zoom} ({info.resolution_m:.2f} m), "
          f"{info.size / 2**20:.0f} MB")
    assert cog_validate(info.href, quiet=True)[0] is True
    assert info.crs == "EPSG:3857" and info.zoom == 14
    assert 16000 < info.shape[0] < 18500 and 16000 < info.shape[1] < 18500
    with rasterio.open(info.href) as cog:
        assert cog.nodata == 0 and cog.crs.to_epsg() == 3857
        assert len(cog.overviews(1)) >= 5
    # no time bound here: speed lives in `make bench` (bench/bench_fulltile.py), not in tests
