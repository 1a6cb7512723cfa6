"""Compositing beyond one scene = one observation: granule fusion, snow fallback, seams, 60 m.

Small synthetic COGs at the tile's upper-left corner (``write_raster`` from test_composite) and
constructed state stacks with hand-computed answers.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import rasterio

from cloudfree import composite as _composite
from cloudfree.bands import get_band
from cloudfree.composite import (
    fuse_observations,
    observation_groups,
    snow_fallback,
    write_window_result,
)
from cloudfree.mask import CLEAR, COUNT_SNOW_FLAG, MASKED, NODATA, SNOW
from cloudfree.windows import Window, plan_windows

from .test_composite import TILE, write_raster

# These stacks hold only blue + SCL: they test masking and the median, so outlier rejection
# (issue 8, default on, needs the blue/red/nir08 reference bands) is off here; it is tested in
# test_outliers.py and test_composite_outliers.py.
composite_window = partial(_composite.composite_window, outliers="off")

C, S, M, N0 = CLEAR, SNOW, MASKED, NODATA


# --- constructed stacks ----------------------------------------------------------------------
def test_snow_fallback_only_where_no_ground_was_seen() -> None:
    """Pixel 0: ground seen once -> only that obs; pixel 1: glacier -> its snow obs, flagged;
    pixel 2: nothing usable -> nothing."""
    states = np.array([[[S, S, M]],
                       [[C, S, N0]],
                       [[S, M, M]]], dtype=np.uint8)  # (3 scenes, 1, 3 px)
    use, snow = snow_fallback(states)
    np.testing.assert_array_equal(use[:, 0], [[0, 1, 0], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(snow, [[False, True, False]])
    assert use.dtype == np.uint8
    again, snow2 = snow_fallback(states, in_place=True)  # written over the states
    assert again is states and again.dtype == np.uint8
    np.testing.assert_array_equal(again, use)
    np.testing.assert_array_equal(snow2, snow)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 5), (16, 67, 129), (5, 40, 4097 // 40 + 3)])
def test_compiled_state_passes_equal_the_numpy_ones(shape, monkeypatch) -> None:
    """``cloudfree._median``'s snow fallback and nodata demotion (one pass each, in blocks of
    4096 px) against the numpy passes, on random states and stacks with many zeros: pixel
    counts across the block edge, one scene, reflectance (uint16) and visual (3 x uint8, a
    pixel is nodata only when all three channels are 0)."""
    if _composite._states_kernel(np.zeros(1)) is None:
        pytest.skip("cloudfree._median not built")
    rng = np.random.default_rng(sum(shape))
    states = rng.integers(0, 4, shape, dtype=np.uint8)
    states[:, : shape[1] // 3] = rng.choice([C, S, M], (shape[0], shape[1] // 3, shape[2]),
                                            p=[0.02, 0.9, 0.08])  # snow fallback rows
    refl = rng.integers(0, 3, shape, dtype=np.uint16) * rng.integers(0, 9000, shape,
                                                                      dtype=np.uint16)
    visual = rng.integers(0, 2, (shape[0], 3, *shape[1:]), dtype=np.uint8)
    results = {}
    for compiled in (True, False):
        monkeypatch.setattr(_composite, "STATES_KERNEL", compiled)
        got = {}
        for name, stack, band in (("refl", refl, get_band("red")),
                                  ("visual", visual, get_band("visual"))):
            st = states.copy()
            got[name] = (_composite._demote_missing(stack, st, band), st)
        use, snow = snow_fallback(states)
        use2, snow2 = snow_fallback(got["refl"][1].copy(), in_place=True)
        got["fallback"] = (use, snow, use2, snow2)
        results[compiled] = got
    for key in ("refl", "visual"):
        masked, st = results[True][key]
        np.testing.assert_array_equal(masked, results[False][key][0])
        np.testing.assert_array_equal(st, results[False][key][1])
    if shape[1] >= 3:  # the snow rows exist
        assert results[False]["visual"][0].sum() < results[False]["refl"][0].sum()  # 3 bands
        assert results[False]["fallback"][1].any()  # some pixels fell back to snow
    for a, b in zip(results[True]["fallback"], results[False]["fallback"], strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_state_passes_on_strided_views_and_bad_buffers(monkeypatch) -> None:
    """A view that is not C-contiguous takes the numpy path (same answer); the compiled
    functions refuse buffers whose sizes do not match instead of reading past them."""
    from cloudfree.median import _compiled

    if _compiled is None:
        pytest.skip("cloudfree._median not built")
    rng = np.random.default_rng(7)
    states = rng.integers(0, 4, (4, 20, 30), dtype=np.uint8)
    stack = rng.integers(0, 2, (4, 20, 30), dtype=np.uint16)
    view, sview = states[:, :, ::2], stack[:, :, ::2]
    assert _composite._states_kernel(sview, view) is None
    want = view.copy()
    monkeypatch.setattr(_composite, "STATES_KERNEL", False)
    want_masked = _composite._demote_missing(sview, want, get_band("red"))
    monkeypatch.setattr(_composite, "STATES_KERNEL", True)
    got_masked = _composite._demote_missing(sview, view, get_band("red"))
    np.testing.assert_array_equal(got_masked, want_masked)
    np.testing.assert_array_equal(view, want)
    counts = np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="stack"):
        _compiled.demote_missing(stack[:3], 2, 1, states, counts, 4)
    with pytest.raises(ValueError, match="counts"):
        _compiled.demote_missing(stack, 2, 1, states, counts[:3], 4)
    with pytest.raises(ValueError):
        _compiled.demote_missing(stack, 2, 3, states, counts, 4)  # uint16 has one channel
    with pytest.raises(ValueError):
        _compiled.snow_fallback(states, np.zeros(599, np.uint8), 4)
    with pytest.raises(ValueError, match="src"):
        _compiled.mean2x2(stack[0], np.zeros((10, 15), np.uint16), 10, 16)


def test_fuse_two_granules_first_best_state_wins() -> None:
    """Two half-tile granules of one acquisition become one layer; a third scene stays."""
    states = np.array([[[C, C, M, N0, S]],   # granule A (earlier)
                       [[C, N0, C, C, C]],   # granule B
                       [[C, C, C, C, C]]], dtype=np.uint8)
    stack = np.array([[[10, 11, 12, 0, 14]],
                      [[20, 0, 22, 23, 24]],
                      [[30, 31, 32, 33, 34]]], dtype=np.uint16)
    sources = fuse_observations(stack, states, [[0, 1]])
    # A wins ties (first in order); B fills where A is masked/nodata/only snow
    np.testing.assert_array_equal(stack[0, 0], [10, 11, 22, 23, 24])
    np.testing.assert_array_equal(states[0, 0], [C, C, C, C, C])
    assert (states[1] == NODATA).all()  # B no longer counts on its own
    np.testing.assert_array_equal(sources[0][0], [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(stack[2, 0], [30, 31, 32, 33, 34])


def test_observation_groups_order_by_datetime_then_id() -> None:
    scenes = [{"id": "b", "datetime": "2023-06-01T10:00:05Z", "observation": "X"},
              {"id": "c", "datetime": "2023-06-02T10:00:00Z"},
              {"id": "a", "datetime": "2023-06-01T10:00:00Z", "observation": "X"},
              {"id": "d", "datetime": "2023-06-03T10:00:00Z", "observation": "Y"}]
    assert observation_groups(scenes) == [[2, 0]]  # Y alone is no group


# --- through composite_window on small COGs --------------------------------------------------
def _scene(root, sid, band_key, band, scl, res=10, block=256, observation=None, dt=None):
    scene = {"id": sid, "datetime": dt or "2023-06-01T10:00:00Z",
             "harmonization": {"offset": 0, "reason": "test"},
             "assets": {band_key: write_raster(root / f"{sid}_{band_key}.tif", band, res, block),
                        "scl": write_raster(root / f"{sid}_scl.tif", scl, 20, block)}}
    if observation:
        scene["observation"] = observation
    return scene


def test_two_half_tile_granules_count_once(tmp_path) -> None:
    """Granule A covers rows 0:320, B rows 192:512 (overlap 192:320); scene C covers all.

    Without fusion the overlap would count 3 observations of 2 dates; fused it counts 2 and the
    median is (A-or-B, C). Contributions are credited to the granule a pixel came from."""
    n = 512
    scl_a = np.zeros((n // 2, n // 2), np.uint8)
    scl_a[:160] = 4
    band_a = np.zeros((n, n), np.uint16)
    band_a[:320] = 1000
    scl_b = np.zeros((n // 2, n // 2), np.uint8)
    scl_b[96:] = 4
    band_b = np.zeros((n, n), np.uint16)
    band_b[192:] = 1100  # same ground, a little different (processing of another datastrip)
    scenes = [
        _scene(tmp_path, "B", "blue", band_b, scl_b, observation="S2A_33UUP_20230601",
               dt="2023-06-01T10:00:03Z"),
        _scene(tmp_path, "A", "blue", band_a, scl_a, observation="S2A_33UUP_20230601"),
        _scene(tmp_path, "C", "blue", np.full((n, n), 2000, np.uint16),
               np.full((n // 2, n // 2), 4, np.uint8), dt="2023-07-01T10:00:00Z"),
    ]
    res = composite_window({"scenes": scenes}, "blue", Window(0, 0, n, n), dilate_nodata=0,
                           threads=1)
    assert (res.count == 2).all()
    assert (res.median[:320] == 1500).all()  # A (earlier, first in order) wins the overlap
    assert (res.median[320:] == 1550).all()
    assert res.contributions == {"A": 320 * n, "B": (n - 320) * n, "C": n * n}
    # the same pixels without the observation id: the overlap counts three times
    for s in scenes:
        s.pop("observation", None)
    unfused = composite_window({"scenes": scenes}, "blue", Window(0, 0, n, n), dilate_nodata=0,
                               threads=1)
    assert (unfused.count[192:320] == 3).all() and (unfused.median[192:320] == 1100).all()


def glacier_scenes(root, n=512):
    """Four scenes: a glacier (rows 0:128) snow in every scene; a snowy meadow (rows 128:256)
    where scene 2 saw the ground once; rows 256: clear everywhere; cols 0:64 always cloud."""
    scenes = []
    for i, (snow_dn, ground_dn) in enumerate([(8000, 500), (8200, 520), (8600, 540),
                                              (8400, 560)]):
        band = np.full((n, n), ground_dn, np.uint16)
        scl = np.full((n // 2, n // 2), 4, np.uint8)
        band[:128] = snow_dn
        scl[:64] = 11
        if i != 2:
            band[128:256] = snow_dn
            scl[64:128] = 11
        scl[:, :32] = 9
        scenes.append(_scene(root, f"s{i}", "blue", band, scl, dt=f"2023-0{i + 3}-01T10:00:00Z"))
    return {"tile": "33UUP", "year": 2023, "scenes": scenes}


def test_glacier_uses_snow_only_where_no_ground_was_seen(tmp_path) -> None:
    manifest = glacier_scenes(tmp_path)
    res = composite_window(manifest, "blue", Window(0, 0, 512, 512), threads=1)
    glacier, meadow, ground = np.s_[:128, 64:], np.s_[128:256, 64:], np.s_[256:, 64:]
    assert (res.median[glacier] == 8300).all() and (res.count[glacier] == 4).all()  # no hole
    assert res.snow[glacier].all()
    assert (res.median[meadow] == 540).all() and (res.count[meadow] == 1).all()  # ground only
    assert not res.snow[meadow].any()
    assert (res.median[ground] == 530).all() and not res.snow[ground].any()
    assert (res.count[:, :64] == 0).all() and not res.snow[:, :64].any()  # cloud: a hole
    assert res.snow_pixels == 128 * 448
    # the count band of the window GeoTIFF carries the flag bit; the statistics the count
    uri = str(tmp_path / "out" / "w.tif")
    stats = write_window_result(res, uri, TILE, "blue")
    with rasterio.open(uri) as src:
        count = src.read(2)
    assert (count[glacier] == 4 | COUNT_SNOW_FLAG).all() and (count[meadow] == 1).all()
    assert stats["snow_pixels"] == 128 * 448
    assert stats["count_histogram"][4] == 128 * 448 + 256 * 448
    # snow counted as clear (11 not masked): the glacier is an ordinary pixel, no flag
    plain = composite_window(manifest, "blue", Window(0, 0, 512, 512), threads=1,
                             mask_classes=(0, 1, 3, 8, 9, 10))
    assert plain.snow_pixels == 0 and (plain.median[meadow] == 8100).all()


# --- seams: the window layout must not change a single byte ----------------------------------
SEAM_N = 3072  # 10 m px: three 1024-px blocks a side


@pytest.fixture(scope="module")
def seam_manifest(tmp_path_factory) -> dict:
    """Three scenes whose nodata edges, clouds and snow sit on and near window boundaries."""
    root = tmp_path_factory.mktemp("seams")
    rng = np.random.default_rng(7)
    half = SEAM_N // 2
    scenes = []
    for i in range(3):
        band = rng.integers(300, 3000, (SEAM_N, SEAM_N), dtype=np.uint16)
        scl = np.full((half, half), 4, np.uint8)
        if i == 0:
            scl[:512] = 0  # nodata ends exactly at the 10 m window boundary (row 1024)
            scl[700:1200, 1023:1025] = 0  # a nodata sliver across the column boundary
        if i == 1:
            scl[:, 510:515] = 0  # swath edge straddling col 1024 at 10 m
            scl[1000:1100, :] = 9
        if i == 2:
            scl[:600, :600] = 11  # snow across the first boundary
            scl[1020:1030, 1020:1030] = 0
        scenes.append({"id": f"s{i}", "datetime": f"2023-0{i + 4}-01T10:00:00Z",
                       "harmonization": {"offset": 0},
                       "assets": {"blue": write_raster(root / f"b{i}.tif", band, 10, 1024),
                                  "scl": write_raster(root / f"scl{i}.tif", scl, 20, 512)}})
    return {"tile": "33UUP", "year": 2023, "scenes": scenes}


def _stitched(manifest, windows):
    med = np.zeros((SEAM_N, SEAM_N), np.uint16)
    cnt = np.zeros((SEAM_N, SEAM_N), np.uint16)
    for w in windows:
        res = composite_window(manifest, "blue", w, threads=2)
        from cloudfree.composite import result_array

        arr = result_array(res, get_band("blue"))
        sl = np.s_[w.row_off: w.row_off + w.height, w.col_off: w.col_off + w.width]
        med[sl], cnt[sl] = arr[0], arr[1]
    return med, cnt


def test_two_memory_settings_give_identical_bytes(seam_manifest) -> None:
    band = get_band("blue")
    small = plan_windows(band, 3, 500, tile_size=SEAM_N, threads=2)
    large = plan_windows(band, 3, 700, tile_size=SEAM_N, threads=2)
    assert len(small) == 9 and len(large) == 4  # two different window layouts
    a, b = _stitched(seam_manifest, small), _stitched(seam_manifest, large)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # the dilated fringe (2 px) of scene 0's nodata lies in the window below the boundary
    assert (a[1][1024:1026, 1300:1400] == 2).all() and (a[1][1026:1030, 1300:1400] == 3).all()
    assert (a[1][:1024, 1300:1400] == 2).all()  # scene 0 has no data there
    assert (a[1][:1000, :1000] & COUNT_SNOW_FLAG == 0).all()  # ground seen: no snow flag


# --- 60 m bands: every 20 m SCL pixel inside must be clear ------------------------------------
def test_60m_pixel_masked_by_one_cloudy_20m_pixel(tmp_path) -> None:
    n60 = 256
    scenes = []
    for i, level in enumerate((100, 200, 300)):
        band = np.full((n60, n60), level, np.uint16)
        scl = np.full((3 * n60, 3 * n60), 4, np.uint8)
        if i == 0:
            scl[30, 30] = 9  # a corner of 60 m pixel (10, 10): its centre (31, 31) is clear
        scenes.append(_scene(tmp_path, f"s{i}", "coastal", band, scl, res=60, block=256))
    res = composite_window({"scenes": scenes}, "coastal", Window(0, 0, n60, n60),
                           dilate_nodata=0, threads=1)
    assert res.count[10, 10] == 2 and res.median[10, 10] == 250
    assert res.count[10, 11] == 3 and res.median[10, 11] == 200
    assert res.contributions["s0"] == n60 * n60 - 1
