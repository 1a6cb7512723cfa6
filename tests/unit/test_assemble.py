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


def test_stitch_only_the_bands_asked_for(small, tmp_path):
    """``indexes``: the median band alone (what every band but red publishes), the same pixels
    as band 1 of the whole stitch."""
    _, _, full, uris = small
    path = stitch(uris, TILE, BLUE, workdir=tmp_path / "one", tile_size=2048, indexes=[1])
    with rasterio.open(path) as src:
        assert src.count == 1 and src.dtypes == ("uint16",)
        np.testing.assert_array_equal(src.read(1), full)
    path = stitch(uris, TILE, BLUE, workdir=tmp_path / "two", tile_size=2048, indexes=[2])
    with rasterio.open(path) as src:
        assert src.count == 1
        np.testing.assert_array_equal(src.read(1), np.where(full > 0, 3, 0))


def test_assemble_band_stitches_the_count_only_for_the_count_cog(small, tmp_path, monkeypatch):
    """A band whose assemble writes no count COG stitches its median band alone (half the copy
    at 10 m), and publishes the same bytes as from the whole stitch."""
    from cloudfree import assemble

    layout, windows, _, _ = small
    asked = []
    real = assemble.stitch

    def recorded(*args, **kwargs):
        asked.append(kwargs.get("indexes"))
        return real(*args, **kwargs)

    monkeypatch.setattr(assemble, "stitch", recorded)
    alone = assemble_band(layout, 2023, "33UUP", "blue", windows, tile_size=2048)
    alone_bytes = Path(alone.href).read_bytes()
    both = assemble_band(layout, 2023, "33UUP", "blue", windows, write_count=True,
                         tile_size=2048)
    assert asked == [[1], None]
    assert Path(both.href).read_bytes() == alone_bytes and both.sha256 == alone.sha256


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


@pytest.mark.parametrize("band,resampling,dtype", [(1, "bilinear", None),
                                                     (2, "nearest", "uint8")])
def test_web_cog_is_the_file_rio_cogeo_writes(small, tmp_path, band, resampling, dtype):
    """write_web_cog warps with GDAL's chunked warper instead of cog_translate's block reads
    (4x faster on a full band): the grid, overviews, tags and profile are rio-cogeo's, and
    the pixels agree up to the approximate transformer (0.125 px)."""
    import morecantile
    from rio_cogeo.cogeo import cog_translate

    from cloudfree.assemble import cog_profile

    _, _, _, uris = small
    src = stitch(uris, TILE, BLUE, workdir=tmp_path / "s", tile_size=2048)
    with rasterio.open(src, "r+") as ds:  # texture: a shifted sample would show
        rough = ds.read(1)
        rng = np.random.default_rng(1)
        noise = rng.integers(-400, 400, rough.shape)
        ds.write(np.where(rough > 0, rough + noise, 0).astype(np.uint16), 1)
    ours = write_web_cog(src, str(tmp_path / "ours.tif"), indexes=[band], zoom_level=14,
                         resampling=resampling, dtype=dtype)
    ref = tmp_path / "ref.tif"
    ovr = "average" if resampling == "bilinear" else "nearest"
    cog_translate(src, str(ref), cog_profile("deflate"), indexes=[band], nodata=0, dtype=dtype,
                  tms=morecantile.tms.get("WebMercatorQuad"), zoom_level=14,
                  resampling=resampling, overview_resampling=ovr, quiet=True)
    with rasterio.open(ours.href) as a, rasterio.open(ref) as b:
        assert (a.transform, a.shape, a.dtypes, a.nodata) == (b.transform, b.shape, b.dtypes,
                                                             b.nodata)
        assert a.overviews(1) == b.overviews(1) and a.block_shapes == b.block_shapes
        assert a.tags() == b.tags()
        assert {k: a.profile.get(k) for k in ("compress", "interleave", "tiled")} == \
            {k: b.profile.get(k) for k in ("compress", "interleave", "tiled")}
        assert a.tags(ns="IMAGE_STRUCTURE") == b.tags(ns="IMAGE_STRUCTURE")
        x, y = a.read(1).astype(int), b.read(1).astype(int)
    both = (x > 0) & (y > 0)
    assert both.sum() > 0.95 * max((x > 0).sum(), (y > 0).sum())
    assert ((x > 0) != (y > 0)).sum() < 0.002 * both.sum()  # edge pixels only
    if resampling == "nearest":  # a count: the same source pixel but where 0.125 px decides
        assert (x != y)[both].mean() < 0.01
        return
    # both approximate the warp within 0.125 px; ours is as close to the exact bilinear value
    # (computed here from the projection at 20,000 pixels) as rio-cogeo's
    truth, rows, cols = exact_bilinear(src, ours.href, 20_000)
    ok = (truth > 0) & (x[rows, cols] > 0) & (y[rows, cols] > 0)
    err_ours = np.abs(x[rows, cols][ok] - truth[ok]).mean()
    err_ref = np.abs(y[rows, cols][ok] - truth[ok]).mean()
    assert ok.sum() > 10_000 and err_ours <= 1.1 * err_ref + 0.1, (err_ours, err_ref)


def exact_bilinear(src_path, cog_path, n: int):
    """The bilinear value at ``n`` random pixels of the COG's grid, projected exactly onto the
    source (pixel centres, 0 where a neighbour is nodata or outside): (values, rows, cols)."""
    from rasterio.warp import transform as project

    with rasterio.open(src_path) as s, rasterio.open(cog_path) as c:
        img, st, crs = s.read(1).astype(float), s.transform, s.crs
        t, (h, w) = c.transform, c.shape
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, h, n), rng.integers(0, w, n)
    ux, uy = project("EPSG:3857", crs, t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e)
    fc = (np.asarray(ux) - st.c) / st.a - 0.5
    fr = (np.asarray(uy) - st.f) / st.e - 0.5
    inside = (fc >= 0) & (fr >= 0) & (fc < img.shape[1] - 1) & (fr < img.shape[0] - 1)
    c0 = np.clip(np.floor(fc).astype(int), 0, img.shape[1] - 2)
    r0 = np.clip(np.floor(fr).astype(int), 0, img.shape[0] - 2)
    dx, dy = fc - c0, fr - r0
    quad = [img[r0, c0], img[r0, c0 + 1], img[r0 + 1, c0], img[r0 + 1, c0 + 1]]
    value = (quad[0] * (1 - dx) * (1 - dy) + quad[1] * dx * (1 - dy)
             + quad[2] * (1 - dx) * dy + quad[3] * dx * dy)
    valid = inside & np.all([q > 0 for q in quad], axis=0)
    return np.where(valid, value, 0.0), rows, cols


@pytest.mark.parametrize("band,resampling,dtype", [(1, "bilinear", None),
                                                     (2, "nearest", "uint8")])
def test_the_compiled_warp_is_exact_and_keeps_gdals_footprint(small, tmp_path, monkeypatch,
                                                               band, resampling, dtype):
    """``cloudfree._warp`` (a lattice of exact projections every 32 px) against the exact
    bilinear value at 20,000 pixels: within rounding (0.5 DN, +0.05 of lattice error), where
    GDAL's warper (0.125 px approximate transformer) is ~3 DN off on this texture; and nodata
    where GDAL puts it but for a few edge pixels (its approximation places the edge
    differently)."""
    from cloudfree import assemble

    if assemble._warp_kernel() is None:
        pytest.skip("cloudfree._warp not built")
    _, _, _, uris = small
    src = stitch(uris, TILE, BLUE, workdir=tmp_path / "s", tile_size=2048)
    with rasterio.open(src, "r+") as ds:  # texture: a shifted sample would show
        rough = ds.read(1)
        noise = np.random.default_rng(1).integers(-400, 400, rough.shape)
        ds.write(np.where(rough > 0, rough + noise, 0).astype(np.uint16), 1)
    got = {}
    for kernel in (True, False):
        monkeypatch.setattr(assemble, "WARP_KERNEL", kernel)
        got[kernel] = write_web_cog(src, str(tmp_path / f"k{kernel}.tif"), indexes=[band],
                                    zoom_level=14, resampling=resampling, dtype=dtype)
    with rasterio.open(got[True].href) as a, rasterio.open(got[False].href) as b:
        x, y = a.read(1).astype(int), b.read(1).astype(int)
        assert (a.transform, a.shape, a.overviews(1)) == (b.transform, b.shape, b.overviews(1))
    both = (x > 0) & (y > 0)
    assert both.sum() > 1_000_000 and ((x > 0) != (y > 0)).sum() < 0.001 * both.sum()
    if resampling == "nearest":  # the same source pixel, but where GDAL's 0.125 px decides
        assert (x != y)[both].mean() < 0.01
        return
    truth, rows, cols = exact_bilinear(src, got[True].href, 20_000)
    ok = (truth > 0) & (x[rows, cols] > 0) & (y[rows, cols] > 0)
    err = np.abs(x[rows, cols][ok] - truth[ok])
    err_gdal = np.abs(y[rows, cols][ok] - truth[ok])
    assert ok.sum() > 10_000
    assert err.max() < 0.6 and err.mean() < 0.3, (err.max(), err.mean())
    print(f"mean |error| {err.mean():.3f} DN (GDAL {err_gdal.mean():.3f}), max {err.max():.3f}")
    assert err_gdal.mean() > 4 * err.mean()  # the texture shows GDAL's approximation


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


def test_assemble_crops_the_cog_to_the_observed_cells(tmp_path):
    """A tile observed in one corner (a swath edge, a coast) is published over the tenth-of-
    tile cells holding observed pixels only, at the whole tile's zoom, with the same pixels
    there as the uncropped COG (window statistics written before ``observed_bbox`` give it)."""
    from rasterio.windows import from_bounds

    from cloudfree.assemble import CROP_CELL_M, data_crop
    from cloudfree.composite import footprint_bbox

    full = np.zeros((2048, 2048), np.uint16)
    full[1200:1500, 1300:1700] = smooth(400)[:300]
    windows = [Window(r, c, 1024, 1024) for r in (0, 1024) for c in (0, 1024)]
    infos = {}
    for name in ("cropped", "legacy"):
        layout = LocalLayout(tmp_path / name)
        for w in windows:
            sl = (slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width))
            med = full[sl].copy()
            seen = med > 0
            res = WindowResult("blue", w, med, seen.astype(np.uint8), {"a": int(seen.sum())},
                               observed=int(seen.sum()), observed_bbox=footprint_bbox(seen, w))
            stats_uri = layout.window_stats(2023, TILE.id, "blue", w.row_off, w.col_off)
            write_window_result(res, layout.window_result(2023, TILE.id, "blue", w.row_off,
                                                          w.col_off), TILE, BLUE, stats_uri)
            if name == "legacy":  # statistics from before observed_bbox
                doc = json.loads(Path(stats_uri).read_text())
                del doc["observed_bbox"]
                Path(stats_uri).write_text(json.dumps(doc))
        stats = [json.loads(Path(layout.window_stats(2023, TILE.id, "blue", w.row_off,
                                                     w.col_off)).read_text()) for w in windows]
        cell = CROP_CELL_M // 10
        assert data_crop(stats, BLUE, 2048) == (
            Window(cell, cell, 2048 - cell, 2048 - cell) if name == "cropped"
            else Window(0, 0, 2048, 2048))
        infos[name] = assemble_band(layout, 2023, "33UUP", "blue", windows, tile_size=2048)
        # the STAC item's geometry is built from these bounds (publish.build_tile_item)
        band_stats = json.loads(Path(layout.band_stats(2023, TILE.id, "blue")).read_text())
        first = cell if name == "cropped" else 0
        x0, y1 = TILE.transform(10) @ (first, first)
        x1, y0 = TILE.transform(10) @ (2048, 2048)
        assert band_stats["data_bounds"] == pytest.approx([x0, y0, x1, y1])
    crop, ref = infos["cropped"], infos["legacy"]
    assert crop.zoom == ref.zoom == 14
    assert crop.shape[0] * crop.shape[1] < 0.35 * ref.shape[0] * ref.shape[1]
    with rasterio.open(crop.href) as a, rasterio.open(ref.href) as b:
        win = from_bounds(*a.bounds, transform=b.transform)
        assert all(abs(v - round(v)) < 1e-6 for v in (win.col_off, win.row_off))  # one grid
        same = b.read(1, window=win.round_offsets().round_lengths())
        got = a.read(1)
        assert got.shape == same.shape and (got > 0).sum() > 100_000
        # not bit-identical: GDAL's warper interpolates source coordinates linearly within an
        # error of 0.125 px (gdalwarp -et's default) over chunks that depend on the raster's
        # extent. Measured: 300,340 px in both, max 1 DN apart; 25 edge px valid in one only
        both = (got > 0) & (same > 0)
        assert np.abs(got[both].astype(int) - same[both]).max() <= 1
        valid = int((b.read(1) > 0).sum())
        assert ((got > 0) != (same > 0)).sum() < 0.0005 * valid
        assert abs(int((got > 0).sum()) - valid) < 0.0005 * valid  # nothing left outside


def test_data_crop_is_the_whole_grid_when_nothing_is_observed():
    from cloudfree.assemble import data_crop

    stats = [{"window": {"row_off": 0, "col_off": 0, "height": 1830, "width": 1830},
              "observed_pixels": 0, "observed_bbox": None}]
    assert data_crop(stats, "coastal") == Window(0, 0, 1830, 1830)
    stats[0]["observed_bbox"] = [1829, 0, 1830, 1]  # one pixel in the bottom-left cell
    assert data_crop(stats, "coastal") == Window(1647, 0, 183, 183)


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


def test_a_cog_one_block_wide_is_valid_and_a_striped_one_is_not(tmp_path):
    """Found by `make demo`: 33UVP's coastal (60 m) band cropped to one column of observed
    cells was 512 px wide at zoom 11 and taller than 512: rio-cogeo's validator called it
    untiled (its block is as wide as the image) and assemble failed. GDAL's reference rule
    (an untiled file has blocks as wide as the image AND wider than 1,024 px) is applied."""
    from rasterio.transform import from_origin

    from cloudfree.assemble import NOT_TILED, validate_cog

    tile = parse_tile("33UVP")

    def utm_raster(name: str, res: int, height: int, width: int) -> Path:
        """A uniform band at the tile's corner, ``res`` m pixels (a cropped stitch)."""
        path = tmp_path / name
        with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=1,
                           dtype="uint16", crs=tile.crs, transform=tile.transform(res),
                           nodata=0) as dst:
            dst.write(np.full((1, height, width), 1000, np.uint16))
        return path

    src = utm_raster("coastal_utm.tif", 60, 549, 183)
    info = write_web_cog(src, str(tmp_path / "coastal.tif"), indexes=[1], zoom_level=11)
    with rasterio.open(info.href) as cog:
        assert cog.width == 512 < cog.height and cog.block_shapes[0] == (512, 512)
    from rio_cogeo.cogeo import cog_validate

    assert NOT_TILED in cog_validate(info.href, quiet=True)[1]  # rio-cogeo's false positive
    assert validate_cog(info.href)[0] is True
    # the same on an overview (the second demo failure: blue cropped to two cells, 10 m at zoom
    # 14 has an overview exactly 512 px wide)
    src10 = utm_raster("blue_utm.tif", 10, 2196, 1098)
    blue = write_web_cog(src10, str(tmp_path / "blue.tif"), indexes=[1], zoom_level=14)
    rio_errors = cog_validate(blue.href, quiet=True)[1]
    with rasterio.open(blue.href) as cog:
        levels = len(cog.overviews(1))
    narrow = []
    for ix in range(levels):
        with rasterio.open(blue.href, overview_level=ix) as ovr:
            if ovr.width == ovr.block_shapes[0][1] == 512 < ovr.height:
                narrow.append(f"Overview of index {ix} is not tiled")
    assert narrow and narrow == [e for e in rio_errors if e.startswith("Overview of index")]
    assert validate_cog(blue.href)[0] is True
    striped = tmp_path / "striped.tif"  # really untiled: 2,000 px wide strips
    with rasterio.open(striped, "w", driver="GTiff", height=600, width=2000, count=1,
                       dtype="uint16", transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(np.ones((1, 600, 2000), np.uint16))
    ok, errors, _ = validate_cog(str(striped))
    assert not ok and NOT_TILED in errors


def test_the_cog_is_written_with_a_512_mib_block_cache(small, tmp_path, monkeypatch):
    """GDAL's block cache while the COG and its overviews are written is 512 MiB (an integer
    GDAL_CACHEMAX is bytes to rasterio: 512 was a 512-byte cache)."""
    import rasterio.shutil

    from tests.unit.test_storage import _gdal_cache_max

    seen = []
    real = rasterio.shutil.copy

    def spy(*args, **kwargs):
        seen.append(_gdal_cache_max())
        return real(*args, **kwargs)

    monkeypatch.setattr(rasterio.shutil, "copy", spy)
    _, _, _, uris = small
    src = stitch(uris, TILE, BLUE, workdir=tmp_path / "s", tile_size=2048)
    write_web_cog(src, str(tmp_path / "c" / "blue.tif"), indexes=[1])
    assert seen == [512 * 2**20]
