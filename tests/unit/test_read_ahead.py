"""A median batch reads each next window while it composites the current one
(``composite._ReadAhead``): the same bytes as reading in turn, for every kind of window.

GIVEN six small scenes (blue, red and visual at 10 m, nir08 at 20 m, coastal at 60 m, SCL) with
a missed cloud (outlier rejection has something to do), a +1000 BOA offset on one scene, band
nodata, and a swath edge (SCL class 0 in every scene right of 10 m column 88, so the right-hand
windows are composited over their usable box only, and the corner window has no usable pixel),
WHEN a band's windows are composited in one batch with reading ahead and without,
THEN every window GeoTIFF holds the same pixels and every statistics JSON the same values; the
reads ran on the read-ahead thread; and the memory rule (``read_ahead_fits``) allows it for the
template's 3,008 MB and not for 1,024 MB.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cloudfree import composite
from cloudfree.bands import get_band
from cloudfree.windows import Window

from .test_composite import LocalLayout, write_raster

N = 144  # 10 m pixels a side (a whole number of 60 m pixels)
EDGE = 88  # 10 m column from which no scene has data (SCL class 0)
VEG = {"blue": 350, "red": 300, "nir08": 3600, "coastal": 300}
RES = {"blue": 10, "red": 10, "nir08": 20, "coastal": 60}
OFFSETS = (0, 1000, 0, 0, 0, 0)


def make_scenes(root: Path) -> dict:
    scenes = []
    for i, offset in enumerate(OFFSETS):
        scl = np.full((N // 2, N // 2), 4, np.uint8)
        scl[:, EDGE // 2:] = 0  # outside the swath
        if i == 5:
            scl[:8, :8] = 9  # a flagged cloud
        assets = {"scl": write_raster(root / f"s{i}_SCL.tif", scl, 20, 256)}
        for key, res in RES.items():
            n = N * 10 // res
            rng = np.random.default_rng([i, res])
            band = VEG[key] + offset + rng.integers(-40, 41, (n, n))
            if i == 4:  # a cloud SCL missed
                lo, hi = 16 * 10 // res, 48 * 10 // res
                band[lo:hi, lo:hi] = 4800 + offset
            if i == 2:
                band[60 * 10 // res:70 * 10 // res, :] = 0  # band nodata
            band[:, EDGE * 10 // res:] = 0
            assets[key] = write_raster(root / f"s{i}_{key}.tif", band.astype(np.uint16), res, 256)
        rng = np.random.default_rng([i, 3])
        tci = rng.integers(1, 255, (3, N, N)).astype(np.uint8)
        tci[:, :, EDGE:] = 0
        assets["visual"] = write_raster(root / f"s{i}_TCI.tif", tci, 10, 256)
        scenes.append({"id": f"S2A_33UUP_2023060{i}_0_L2A", "datetime": f"2023-06-0{i + 1}",
                       "harmonization": {"offset": offset, "reason": "test"}, "assets": assets})
    return {"tile": "33UUP", "year": 2023, "scenes": scenes}


@pytest.fixture(scope="module")
def doc(tmp_path_factory) -> dict:
    return make_scenes(tmp_path_factory.mktemp("scenes"))


def _windows(band: str) -> list[Window]:
    """2 rows x 3 columns: the middle column crosses the swath edge, the right one is outside."""
    size = N * 10 // RES.get(band, 10)
    rows, cols = [0, (size + 1) // 2, size], [0, round(size * 3 / 8), round(size * 3 / 4), size]
    return [Window(rows[i], cols[j], rows[i + 1] - rows[i], cols[j + 1] - cols[j])
            for i in range(2) for j in range(3)]


def _threads_of(monkeypatch, module, name: str) -> list[str]:
    """The names of the threads ``module.name`` is called on from now on (filled as it is)."""
    threads: list[str] = []
    real = getattr(module, name)

    def recorded(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recorded)
    return threads


def _run(doc: dict, band: str, root: Path, cache: str | None, ahead: bool, monkeypatch
         ) -> tuple[LocalLayout, list[str]]:
    threads = _threads_of(monkeypatch, composite, "read_window_inputs")
    layout = LocalLayout(root)
    composite.composite_band_windows(doc, band, _windows(band), layout, 2023, "33UUP",
                                     threads=2, outlier_cache=cache,
                                     memory_mb=3008 if ahead else None)
    monkeypatch.undo()
    return layout, threads


def _window_files(layout: LocalLayout, band: str) -> list[tuple[np.ndarray, dict]]:
    out = []
    for w in _windows(band):
        with rasterio.open(layout.window_result(2023, "33UUP", band, w.row_off,
                                                w.col_off)) as src:
            pixels = src.read()
        stats = json.loads(Path(layout.window_stats(2023, "33UUP", band, w.row_off,
                                                    w.col_off)).read_text())
        stats.pop("seconds")
        out.append((pixels, stats))
    return out


@pytest.mark.parametrize("band", ["blue", "visual", "nir08", "coastal"])
@pytest.mark.parametrize("cached", [False, True], ids=["decided-here", "decision-cache"])
def test_reading_ahead_writes_the_same_windows(doc, band, cached, tmp_path, monkeypatch):
    cache = str(tmp_path / "decisions") if cached else None
    plain, sync_threads = _run(doc, band, tmp_path / "sync", cache, False, monkeypatch)
    ahead, ahead_threads = _run(doc, band, tmp_path / "ahead", cache, True, monkeypatch)
    assert sync_threads == []  # no reading ahead: composite_window reads for itself
    assert ahead_threads == ["cloudfree-read-ahead_0"] * 6
    want, got = _window_files(plain, band), _window_files(ahead, band)
    for (wp, ws), (gp, gs) in zip(want, got, strict=True):
        np.testing.assert_array_equal(gp, wp)
        assert gs == ws
    stats = [s for _, s in got]
    # the windows are the kinds promised: rejected outliers (10/20 m), a cropped box, none usable
    assert stats[2]["valid_pixels"] == 0 and stats[2]["observed_pixels"] == 0
    assert 0 < stats[1]["observed_pixels"] < stats[1]["pixels"]
    if band != "visual":
        assert sum(stats[0]["outliers"].values()) > 0


def test_inputs_read_for_other_scenes_are_not_used(doc):
    """A window read ahead before a scene was excluded is composited again without it."""
    w = Window(0, 0, 64, 64)
    inputs = composite.read_window_inputs(doc, "blue", w, outliers="off")
    fewer = {**doc, "scenes": doc["scenes"][1:]}
    with pytest.raises(composite.InputError, match="inputs read for scenes"):
        composite.composite_window(fewer, "blue", w, inputs=inputs, outliers="off")


@pytest.mark.parametrize(("band", "side", "memory_mb", "fits"), [
    ("blue", 3072, 3008, True), ("blue", 3072, 1769, False), ("blue", 2048, 1769, True),
    ("swir16", 2048, 3008, True), ("coastal", 1830, 3008, True), ("blue", 3072, None, False)])
def test_read_ahead_only_where_two_windows_fit(band, side, memory_mb, fits):
    from cloudfree.windows import window_inputs_bytes, window_memory_bytes

    w = Window(0, 0, side, side)
    assert composite.read_ahead_fits(band, 16, w, memory_mb) is fits
    b = get_band(band)
    assert window_inputs_bytes(b, 16, side, side) == 16 * side * side * (2 + 2)
    if memory_mb:  # the rule: the window's estimate plus the inputs within 75 %
        need = window_memory_bytes(b, 16, side, side) + window_inputs_bytes(b, 16, side, side)
        assert (need <= 0.75 * memory_mb * 2**20) is fits


def test_the_decide_step_reads_ahead_and_decides_the_same(doc, tmp_path, monkeypatch):
    """The decide step reads each next square while deciding the current one: its stored
    squares (a whole one, one cropped at the swath edge, one with nothing usable, the short
    ones at the grid's edge) give every band the decision made window by window without a
    cache; the reads ran on the read-ahead thread, and a rerun reads nothing."""
    from cloudfree import outliers

    monkeypatch.setattr(outliers, "CACHE_CHUNK", 27)  # 72 px SCL grid: 27, 27, 18 a side
    squares = outliers.decision_squares(N // 2)
    threads = _threads_of(monkeypatch, outliers, "_decide_inputs")
    cache = str(tmp_path / "decisions")
    done = outliers.decide_squares(doc["scenes"], squares, cache, threads=2, dilate_nodata=2)
    assert done == {"squares": 9, "computed": 9, "skipped": 0}
    assert threads == ["cloudfree-read-ahead_0"] * 9
    for band in ("blue", "nir08", "coastal"):
        size = N * 10 // RES[band]
        window = Window(0, 0, size, size)
        shared = outliers.band_window_rejection(doc["scenes"], band, window, threads=2,
                                                cache=cache, dilate_nodata=2)
        plain = outliers.band_window_rejection(doc["scenes"], band, window, threads=2,
                                               dilate_nodata=2)
        np.testing.assert_array_equal(shared, plain, err_msg=band)
        assert plain[4].any() and not plain[:, :, EDGE * 10 // RES[band] + 1:].any()
    threads.clear()
    again = outliers.decide_squares(doc["scenes"], squares, cache, threads=2, dilate_nodata=2)
    assert again == {"squares": 9, "computed": 0, "skipped": 9} and threads == []
