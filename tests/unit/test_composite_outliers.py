"""Outlier rejection inside ``composite_window`` (issue 8): one decision for every band, the
count band counts kept observations, per-scene outlier and SCL-masked counts in the stats.

Six small scenes (vegetation; 64 x 64 px at 10 m, 32 x 32 SCL px) written as tiled GeoTIFFs at
the tile's corner. Scene 4 has a cloud over rows/cols 16..31 (10 m) that its SCL does not flag;
scene 5 has a real cloud that its SCL does flag; scene 1 carries the +1000 BOA offset, so the
test fails if the decision forgets harmonization.
"""

from __future__ import annotations

import numpy as np

from cloudfree.composite import composite_window
from cloudfree.outliers import band_window_rejection
from cloudfree.windows import Window

from .test_composite import write_raster

N = 64
#: blue, red, nir08 (20 m), coastal (60 m) of vegetation, and of a cloud at opacity 0.8
VEG = {"blue": 350, "red": 300, "nir08": 3600, "coastal": 300}
CLOUD = {k: round(v * 0.2 + 6000 * 0.8) for k, v in VEG.items()}
RES = {"blue": 10, "red": 10, "nir08": 20, "coastal": 60}
OFFSETS = (0, 1000, 0, 0, 0, 0)


def make_scenes(root):
    scenes = []
    for i, offset in enumerate(OFFSETS):
        scl = np.full((N // 2, N // 2), 4, np.uint8)
        if i == 5:
            scl[:8, :8] = 9  # flagged cloud
        assets = {"scl": write_raster(root / f"s{i}_SCL.tif", scl, 20, 256)}
        for key, res in RES.items():
            n = N * 10 // res
            rng = np.random.default_rng([i, res])
            band = VEG[key] + offset + rng.integers(-20, 21, (n, n))
            if i == 4:  # the missed cloud: 10 m rows/cols 16..31 = 20 m 8..15 = 60 m ~5..10
                lo, hi = 16 * 10 // res, 32 * 10 // res
                band[lo:hi, lo:hi] = CLOUD[key] + offset
            if i == 5:
                band[: 16 * 10 // res, : 16 * 10 // res] = CLOUD[key]
            assets[key] = write_raster(root / f"s{i}_{key}.tif", band.astype(np.uint16), res, 256)
        scenes.append({"id": f"S2A_33UUP_2023060{i}_0_L2A", "datetime": f"2023-06-0{i + 1}",
                       "harmonization": {"offset": offset, "reason": "test"}, "assets": assets})
    return {"tile": "33UUP", "year": 2023, "scenes": scenes}


def test_missed_cloud_rejected_in_every_band_counted_and_recorded(tmp_path):
    manifest = make_scenes(tmp_path)
    window = Window(0, 0, N, N)
    on = composite_window(manifest, "blue", window, threads=2)
    off = composite_window(manifest, "blue", window, threads=2, outliers="off")
    missed = np.zeros((N, N), bool)
    missed[16:32, 16:32] = True
    flagged = np.zeros((N, N), bool)
    flagged[:16, :16] = True
    # plain: the missed cloud is one of 6 obs (5 where scene 5 is flagged): the median moves
    assert (off.count[missed] == 6).all()
    assert (on.count[missed] == 5).all() and (on.count[~missed & ~flagged] == 6).all()
    assert (on.count[flagged & ~missed] == 5).all()
    assert np.abs(on.median.astype(int) - VEG["blue"]).max() <= 20
    # one bright value of six pulls the plain median up (the mean of ranks 3 and 4 moves)
    assert (off.median[missed] >= on.median[missed]).all()
    assert (off.median[missed] > on.median[missed]).mean() > 0.8
    ids = [s["id"] for s in manifest["scenes"]]
    assert on.outliers == {**dict.fromkeys(ids, 0), ids[4]: int(missed.sum())}
    assert on.masked[ids[5]] == 16 * 16 and on.masked[ids[0]] == 0
    assert on.stats()["outliers"][ids[4]] == 256 and off.outliers[ids[4]] == 0
    assert on.contributions[ids[4]] == N * N - 256
    # the same decision in the 20 m band, and in red (10 m): no band keeps that observation
    nir = composite_window(manifest, "nir08", Window(0, 0, N // 2, N // 2), threads=2)
    assert nir.outliers[ids[4]] == 64 and (nir.count[8:16, 8:16] == 5).all()
    red = band_window_rejection(manifest["scenes"], "red", window, threads=2)
    np.testing.assert_array_equal(red[4], missed)
    assert not red[[0, 1, 2, 3, 5]].any()
    # 60 m: a pixel goes when any of its nine 20 m pixels does (20 m 8..15 -> 60 m 2..5)
    co = band_window_rejection(manifest["scenes"], "coastal", Window(0, 0, 10, 10), threads=2)
    assert np.argwhere(co[4]).min(axis=0).tolist() == [2, 2]
    assert np.argwhere(co[4]).max(axis=0).tolist() == [5, 5]


def test_decision_does_not_depend_on_the_chunking(tmp_path):
    scenes = make_scenes(tmp_path)["scenes"]
    for band, window in (("blue", Window(2, 6, 50, 41)), ("coastal", Window(1, 0, 9, 10))):
        whole = band_window_rejection(scenes, band, window, threads=1)
        pieces = band_window_rejection(scenes, band, window, threads=1, chunk=17)
        np.testing.assert_array_equal(pieces, whole)
        assert whole[4].any()


def test_shared_decision_equals_the_per_window_one_and_is_made_once(tmp_path, monkeypatch):
    """With a cache folder, every band takes its rejection from squares decided once on a grid
    anchored at the tile origin; the result equals the per-window decision bit for bit (10, 20
    and 60 m, windows not aligned with the squares), and a second band decides nothing anew."""
    from cloudfree import outliers

    (tmp_path / "scenes").mkdir()
    manifest = make_scenes(tmp_path / "scenes")
    scenes = manifest["scenes"]
    monkeypatch.setattr(outliers, "CACHE_CHUNK", 12)  # squares of 12 px: several per window
    made = {}
    real = outliers._decide
    cache = str(tmp_path / "decisions")
    cases = [("blue", Window(0, 0, N, N)), ("red", Window(5, 7, 40, 50)),
             ("green", Window(4, 10, 50, 44)),  # 10 m, even: repeated straight into place
             ("nir08", Window(3, 0, 29, 32)), ("coastal", Window(1, 1, 9, 9))]
    for band, window in cases:
        plain = band_window_rejection(scenes, band, window, threads=2)
        calls = made.setdefault(band, [])
        monkeypatch.setattr(outliers, "_decide",
                            lambda *a, _c=calls, **k: _c.append(a[1]) or real(*a, **k))
        shared = band_window_rejection(scenes, band, window, threads=2, cache=cache)
        monkeypatch.setattr(outliers, "_decide", real)
        np.testing.assert_array_equal(shared, plain, err_msg=band)
        if band == "blue":
            assert plain[4].sum() == 256  # the missed cloud is in there
    # blue decided the 3 x 3 squares of the 32 px 20 m grid; the other bands reused them
    assert sorted((w.row_off, w.col_off) for w in made["blue"]) == [
        (r, c) for r in (0, 12, 24) for c in (0, 12, 24)]
    assert made["red"] == made["green"] == made["nir08"] == []
    # 60 m reuses them too, except the test SCL's last 8 px (not whole 60 m pixels; the real
    # 5490 px grid has no such edge): those are decided in place, not stored
    assert made["coastal"] and all(24 in (w.row_off, w.col_off) for w in made["coastal"])
    # a damaged square is decided again, not trusted
    key_dir = next((tmp_path / "decisions").iterdir())
    victim = sorted(key_dir.iterdir())[0]
    victim.write_bytes(b"garbage")
    again = band_window_rejection(scenes, "blue", Window(0, 0, N, N), threads=2, cache=cache)
    np.testing.assert_array_equal(again, band_window_rejection(scenes, "blue",
                                                                Window(0, 0, N, N), threads=2))
    # another scene set (an excluded scene-band) gets its own key
    other = band_window_rejection(scenes[:5], "blue", Window(0, 0, N, N), threads=2,
                                  cache=cache)
    assert other.shape[0] == 5 and len(list((tmp_path / "decisions").iterdir())) == 2


def test_decide_step_makes_every_square_once_and_the_bands_only_read(tmp_path, monkeypatch):
    """The *decide* step stores every square of the 20 m grid before the bands run: then no
    band decides anything itself, the bands' rejections equal the plain per-window decision,
    and a rerun of the step computes nothing."""
    from cloudfree import outliers

    (tmp_path / "scenes").mkdir()
    scenes = make_scenes(tmp_path / "scenes")["scenes"]
    monkeypatch.setattr(outliers, "CACHE_CHUNK", 12)
    cache = str(tmp_path / "decisions")
    squares = outliers.decision_squares(N // 2)  # the test's 32 px SCL grid
    assert [(w.row_off, w.col_off, w.height, w.width) for w in squares][-1] == (24, 24, 8, 8)
    done = outliers.decide_squares(scenes, squares[:4], cache, threads=2)
    assert done == {"squares": 4, "computed": 4, "skipped": 0}
    done = outliers.decide_squares(scenes, squares, cache, threads=2)
    assert done == {"squares": 9, "computed": 5, "skipped": 4}
    assert outliers.decide_squares(scenes, squares, cache, rule="off")["computed"] == 0
    real = outliers._decide
    calls = []
    monkeypatch.setattr(outliers, "_decide", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    for band, window in [("blue", Window(0, 0, N, N)), ("red", Window(5, 7, 40, 50)),
                         ("nir08", Window(3, 0, 29, 32))]:
        shared = band_window_rejection(scenes, band, window, threads=2, cache=cache)
        monkeypatch.setattr(outliers, "_decide", real)
        np.testing.assert_array_equal(
            shared, band_window_rejection(scenes, band, window, threads=2), err_msg=band)
        monkeypatch.setattr(outliers, "_decide",
                            lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    assert calls == []  # every band read the stored squares
    assert outliers.decide_squares(scenes, squares, cache, threads=2)["computed"] == 0
    assert calls == []


def test_pack_unpack_round_trip():
    from cloudfree.outliers import pack_decision, unpack_decision

    rng = np.random.default_rng(3)
    a = rng.random((5, 13, 7)) < 0.3
    np.testing.assert_array_equal(unpack_decision(pack_decision(a), a.shape), a)
    assert unpack_decision(pack_decision(a), (5, 13, 8)) is None
    assert unpack_decision(b"not zlib", a.shape) is None
