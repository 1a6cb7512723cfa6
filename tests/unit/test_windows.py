"""Window planning (coverage, alignment, memory bound) and window reading."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from cloudfree.bands import REFLECTANCE_BANDS, SCL, VISUAL, get_band
from cloudfree.errors import InputError, SourceReadError
from cloudfree.windows import (
    MEMORY_FRACTION,
    Window,
    batch_windows,
    plan_windows,
    read_stack,
    read_window,
    scl_window,
    window_memory_bytes,
)

BLUE = get_band("blue")


def _assert_tiles_grid(windows: list[Window], size: int) -> None:
    cover = np.zeros((size, size), dtype=np.uint8)
    for w in windows:
        cover[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width] += 1
    assert cover.min() == 1 and cover.max() == 1


# --- Window ----------------------------------------------------------------------------------
def test_window_key_rasterio_and_bounds():
    w = Window(0, 1024, 2048, 740)
    assert w.key == "r00000_c01024"
    rw = w.to_rasterio()
    assert (rw.col_off, rw.row_off, rw.width, rw.height) == (1024, 0, 740, 2048)
    t = Affine(10, 0, 300000, 0, -10, 5400000)
    assert w.bounds(t) == (310240.0, 5379520.0, 317640.0, 5400000.0)
    assert w.transform(t) == Affine(10, 0, 310240, 0, -10, 5400000)
    assert Window.from_dict(w.to_dict()) == w
    assert Window.from_dict([0, 1024, 2048, 740]) == w


def test_window_scaled_covers():
    assert Window(1024, 2048, 1024, 740).scaled(0.5) == Window(512, 1024, 512, 370)
    assert Window(1024, 0, 806, 1024).scaled(3) == Window(3072, 0, 2418, 3072)
    assert Window(1, 1, 3, 3).scaled(0.5) == Window(0, 0, 2, 2)
    with pytest.raises(InputError):
        Window(0, 0, 0, 5)


# --- plan_windows ----------------------------------------------------------------------------
@pytest.mark.parametrize("memory_mb,expected", [(1769, 36), (3008, 16), (10240, 4)])
def test_plan_counts_10m_16_scenes(memory_mb, expected):
    ws = plan_windows(BLUE, 16, memory_mb)
    assert len(ws) == expected
    _assert_tiles_grid(ws, 10980)


@pytest.mark.parametrize("band,memory_mb,expected", [
    ("rededge1", 1769, 9), ("rededge1", 10240, 1), ("coastal", 1769, 4), ("coastal", 3008, 1),
    ("visual", 1769, 121), ("visual", 3008, 36), ("visual", 10240, 9)])
def test_plan_counts_other_bands(band, memory_mb, expected):
    b = get_band(band)
    ws = plan_windows(b, 16, memory_mb)
    assert len(ws) == expected
    _assert_tiles_grid(ws, b.size)


@pytest.mark.parametrize("band", [*REFLECTANCE_BANDS, VISUAL], ids=lambda b: b.key)
@pytest.mark.parametrize("memory_mb", [1769, 3008, 10240])
def test_plan_alignment_memory_and_edges(band, memory_mb):
    ws = plan_windows(band, 16, memory_mb)
    budget = memory_mb * 2**20 * MEMORY_FRACTION
    sizes = {w.height for w in ws if w.row_off + w.height < band.size}
    assert len(sizes) <= 1  # interior windows all the same size
    for w in ws:
        assert w.row_off % band.block == 0 and w.col_off % band.block == 0
        # sides are whole blocks unless clipped at the grid edge
        for off, side in ((w.row_off, w.height), (w.col_off, w.width)):
            assert side % band.block == 0 or off + side == band.size
            assert off + side <= band.size
        assert window_memory_bytes(band, 16, w.height, w.width) <= budget
        s = scl_window(band, w)  # SCL reads aligned to its 512 px blocks, inside its grid
        assert s.row_off % SCL.block == 0 and s.col_off % SCL.block == 0
        assert s.row_off + s.height <= SCL.size and s.col_off + s.width <= SCL.size
    edge = [w for w in ws if w.col_off + w.width == band.size]
    assert all(w.width == band.size - w.col_off for w in edge)


def test_plan_edge_clip_exact():
    ws = plan_windows(BLUE, 16, 1769)
    assert ws[0] == Window(0, 0, 2048, 2048)
    assert ws[5] == Window(0, 10240, 2048, 740)
    assert ws[-1] == Window(10240, 10240, 740, 740)


def test_plan_small_grid_and_more_memory_fewer_windows():
    assert plan_windows(BLUE, 4, 1769, tile_size=2048) == [Window(0, 0, 2048, 2048)]
    counts = [len(plan_windows(BLUE, 16, m)) for m in (1769, 3008, 10240)]
    assert counts == sorted(counts, reverse=True)
    assert len(plan_windows(BLUE, 64, 1769)) > counts[0]


def test_plan_too_little_memory():
    with pytest.raises(InputError, match="cannot hold"):
        plan_windows(BLUE, 16, 256)


def test_memory_model_monotonic():
    small = window_memory_bytes(BLUE, 16, 1024, 1024)
    assert window_memory_bytes(BLUE, 16, 2048, 2048) > small
    assert window_memory_bytes(BLUE, 32, 1024, 1024) > small
    assert window_memory_bytes(VISUAL, 16, 1024, 1024) > small


def test_batch_windows_even():
    ws = plan_windows(BLUE, 16, 3008)  # 16 windows
    batches = batch_windows(ws, 5)
    assert [len(b) for b in batches] == [4, 4, 4, 4]
    assert [w for b in batches for w in b] == ws
    assert [len(b) for b in batch_windows(ws[:10], 4)] == [4, 3, 3]
    assert batch_windows([], 3) == []
    with pytest.raises(InputError):
        batch_windows(ws, 0)


# --- reading ---------------------------------------------------------------------------------
def _write(path, data, block=256):
    profile = {"driver": "GTiff", "height": data.shape[-2], "width": data.shape[-1],
               "count": 1 if data.ndim == 2 else data.shape[0], "dtype": data.dtype.name,
               "crs": "EPSG:32633", "transform": Affine(10, 0, 300000, 0, -10, 5400000),
               "tiled": True, "blockxsize": block, "blockysize": block, "compress": "DEFLATE",
               "nodata": 0}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data if data.ndim == 3 else data[None])
    return str(path)


def test_read_window_and_stack(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(1, 10000, (512, 512), dtype=np.uint16) for _ in range(3)]
    hrefs = [_write(tmp_path / f"s{i}.tif", a) for i, a in enumerate(arrays)]
    w = Window(256, 0, 256, 512)
    np.testing.assert_array_equal(read_window(hrefs[1], w), arrays[1][256:, :])
    stack = read_stack(hrefs, w, threads=2)
    assert stack.shape == (3, 256, 512) and stack.dtype == np.uint16
    for i in range(3):
        np.testing.assert_array_equal(stack[i], arrays[i][256:, :])
    assert read_window(hrefs[0], w, out_dtype="float32").dtype == np.float32
    buf = np.zeros((256, 512), np.uint16)  # decoded into the caller's array (read_stack's slices)
    assert read_window(hrefs[2], w, out=buf) is buf
    np.testing.assert_array_equal(buf, arrays[2][256:, :])
    into = np.zeros((3, 2, 256, 512), np.uint16)  # a stack into a view: (S, h, w) of (S, 2, ..)
    assert read_stack(hrefs, w, out=into[:, 1]).base is not None
    np.testing.assert_array_equal(into[:, 1], stack)
    assert not into[:, 0].any()
    with pytest.raises(InputError, match="read_stack into"):
        read_stack(hrefs, w, out=np.zeros((2, 256, 512), np.uint16))


def test_read_window_multiband(tmp_path):
    data = np.arange(3 * 256 * 256, dtype=np.uint32).reshape(3, 256, 256).astype(np.uint8)
    href = _write(tmp_path / "tci.tif", data)
    out = read_stack([href, href], Window(0, 0, 256, 256), band_index=[1, 2, 3])
    assert out.shape == (2, 3, 256, 256)
    np.testing.assert_array_equal(out[1], data)


def test_read_errors_name_href(tmp_path):
    missing = str(tmp_path / "nope.tif")
    with pytest.raises(SourceReadError, match="nope.tif"):
        read_window(missing, Window(0, 0, 10, 10))
    href = _write(tmp_path / "small.tif", np.ones((256, 256), np.uint16))
    with pytest.raises(SourceReadError, match="small.tif"):
        read_window(href, Window(0, 0, 512, 512))
    with pytest.raises(SourceReadError, match="expected"):  # into an array too: no retries
        read_stack([href, href], Window(0, 0, 256, 512))


def test_scl_patch_margin_clipped_at_the_edges(tmp_path):
    """The SCL under a band window plus a margin, and where the window sits in the patch."""
    from cloudfree.bands import get_band
    from cloudfree.mask import scl_to_band_grid
    from cloudfree.windows import read_scl_patch, scl_window

    scl = (np.arange(768 * 768) % 251).astype(np.uint8).reshape(768, 768)
    href = _write(tmp_path / "scl.tif", scl)
    blue, coastal = get_band("blue"), get_band("coastal")
    # 10 m: a margin of 2 band px is 1 SCL px; the window sits at (2, 2) of the patch's grid
    w = Window(512, 512, 256, 256)
    assert scl_window(blue, w, 2) == Window(255, 255, 130, 130)
    p = read_scl_patch(href, blue, w, margin=2)
    assert (p.row, p.col) == (2, 2)
    np.testing.assert_array_equal(p.scl20, scl[255:385, 255:385])
    grid = scl_to_band_grid(p.scl20, 10)[p.row: p.row + 256, p.col: p.col + 256]
    np.testing.assert_array_equal(grid, scl_to_band_grid(scl[256:384, 256:384], 10))
    # at the tile's upper-left corner nothing is added above or left
    p0 = read_scl_patch(href, blue, Window(0, 0, 256, 256), margin=2)
    assert (p0.row, p0.col) == (0, 0) and p0.scl20.shape == (129, 129)
    # at the SCL's far edge the margin is clipped too (here a small source: 768 px)
    pe = read_scl_patch(href, blue, Window(1280, 1280, 256, 256), margin=2)
    assert (pe.row, pe.col) == (2, 2) and pe.scl20.shape == (129, 129)
    # 60 m: 2 band px = 6 SCL px, the patch stays aligned to the 3 x 3 blocks
    pc = read_scl_patch(href, coastal, Window(64, 64, 128, 128), margin=2)
    assert (pc.row, pc.col) == (2, 2)
    np.testing.assert_array_equal(pc.scl20, scl[186:582, 186:582])
    with pytest.raises(SourceReadError, match="smaller"):
        read_scl_patch(href, blue, Window(1536, 0, 256, 256), margin=2)
