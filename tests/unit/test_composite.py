"""Compositing one band window from tiny synthetic scenes with known values."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cloudfree import composite as _composite
from cloudfree import mask
from cloudfree.composite import write_window_result
from cloudfree.errors import InputError
from cloudfree.grid import parse_tile
from cloudfree.windows import Window, read_scl_for

# These stacks hold only blue + SCL: they test masking and the median, so outlier rejection
# (issue 8, default on, needs the blue/red/nir08 reference bands) is off here; it is tested in
# test_outliers.py and test_composite_outliers.py.
composite_window = partial(_composite.composite_window, outliers="off")
composite_band_windows = partial(_composite.composite_band_windows, outliers="off")

TILE = parse_tile("33UUP")
N = 2048  # 10 m pixels per side of the synthetic grid (the tile's upper-left corner)
BASE = ((np.arange(N)[:, None] // 7 + np.arange(N)[None, :] // 11) % 50).astype(np.uint16)
# scene values before harmonization; scene 0 carries the +1000 offset
LEVELS = (2000, 1100, 1300, 1600)
OFFSETS = (1000, 0, 0, 0)


class LocalLayout:
    """The ``Layout`` methods composite/assemble use, on local paths."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _w(self, year, tile, band, row, col, ext):
        return str(self.root / f"work/{year}/{tile}/windows/{band}/r{row:05d}_c{col:05d}.{ext}")

    def window_result(self, year, tile, band, row, col):
        return self._w(year, tile, band, row, col, "tif")

    def window_stats(self, year, tile, band, row, col):
        return self._w(year, tile, band, row, col, "json")

    def band_stats(self, year, tile, band):
        return str(self.root / f"work/{year}/{tile}/bands/{band}.json")

    def staged_cog(self, year, tile, band):
        return str(self.root / f"work/{year}/{tile}/cogs/{tile}_{year}_{band}.tif")

    def exclusions_prefix(self, year, tile, band):
        return str(self.root / f"work/{year}/{tile}/excluded/{band}") + "/"

    def exclusion(self, year, tile, band, scene):
        return f"{self.exclusions_prefix(year, tile, band)}{scene}.json"

    def band_cog(self, year, tile, band):
        return str(self.root / f"data/{year}/{tile}/{tile}_{year}_{band}.tif")


def write_raster(path: Path, data: np.ndarray, resolution: int, block: int) -> str:
    """A tiled DEFLATE GeoTIFF at the tile's upper-left corner (like an Earth Search COG)."""
    data = data if data.ndim == 3 else data[None]
    profile = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2],
               "count": data.shape[0], "dtype": data.dtype.name, "crs": TILE.crs,
               "transform": TILE.transform(resolution), "nodata": 0, "tiled": True,
               "blockxsize": block, "blockysize": block, "compress": "DEFLATE",
               "interleave": "pixel"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


def make_scenes(root: Path) -> dict:
    """Four scenes of ``blue`` (2048 px, 1024 blocks) + SCL (1024 px at 20 m, 512 blocks)."""
    scenes = []
    for i, level in enumerate(LEVELS):
        band = (BASE + level).astype(np.uint16)
        scl = np.full((N // 2, N // 2), 4, dtype=np.uint8)
        if i == 0:
            scl[800:900, :] = 2  # dark: kept by default
        if i == 1:
            band[1500:1600, 100:200] = 0  # band nodata
        if i == 2:
            scl[:512, :512] = 9  # cloud high -> 10 m rows/cols 0:1024
        if i == 3:
            scl[512:, 512:] = 3  # shadow -> 10 m rows/cols 1024:2048
            scl[:50, 600:] = 0  # nodata -> 10 m rows 0:100, cols 1200:2048 (+ dilation)
        sid = f"S2A_33UUP_2023060{i}_0_L2A"
        scenes.append({
            "id": sid, "harmonization": {"offset": OFFSETS[i], "reason": "test"},
            "assets": {"blue": write_raster(root / f"{sid}_B02.tif", band, 10, 1024),
                       "scl": write_raster(root / f"{sid}_SCL.tif", scl, 20, 512)}})
    return {"tile": "33UUP", "year": 2023, "scenes": scenes}


def expected_blue(mask_dark: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Hand-computed median and count (harmonized values 1000/1100/1300/1600 + BASE)."""
    med = np.full((N, N), 1200, dtype=np.int64)  # (1100 + 1300) / 2
    cnt = np.full((N, N), 4, dtype=np.uint8)
    med[:1024, :1024], cnt[:1024, :1024] = 1100, 3  # scene 2 cloud: 1000 1100 1600
    med[1024:, 1024:], cnt[1024:, 1024:] = 1100, 3  # scene 3 shadow: 1000 1100 1300
    med[:100, 1200:], cnt[:100, 1200:] = 1100, 3  # scene 3 nodata
    med[1500:1600, 100:200], cnt[1500:1600, 100:200] = 1300, 3  # scene 1 band 0: 1000 1300 1600
    if mask_dark:  # scene 0 masked in rows 1600:1800 too
        med[1600:1800, :1024], cnt[1600:1800, :1024] = 1300, 3  # 1100 1300 1600
        med[1600:1800, 1024:], cnt[1600:1800, 1024:] = 1200, 2  # 1100 1300
    return (med + BASE).astype(np.uint16), cnt


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> dict:
    return make_scenes(tmp_path_factory.mktemp("scenes"))


def _check(result, window: Window, mask_dark=False):
    med, cnt = expected_blue(mask_dark)
    sl = (slice(window.row_off, window.row_off + window.height),
          slice(window.col_off, window.col_off + window.width))
    dil = np.zeros((N, N), dtype=bool)  # the dilated nodata edge of scene 3: not asserted
    dil[95:110, 1190:] = True
    dil[:110, 1190:1205] = True
    keep = ~dil[sl]
    np.testing.assert_array_equal(result.count[keep], cnt[sl][keep])
    np.testing.assert_array_equal(result.median[keep], med[sl][keep])


def test_median_full_window(manifest):
    w = Window(0, 0, N, N)
    res = composite_window(manifest, "blue", w, threads=2)
    assert res.median.dtype == np.uint16 and res.count.dtype == np.uint8
    _check(res, w)
    ids = [s["id"] for s in manifest["scenes"]]
    assert list(res.contributions) == ids
    c = [res.contributions[i] for i in ids]
    assert c[0] == N * N  # dark pixels kept, never masked
    assert c[1] == N * N - 100 * 100
    assert c[2] == N * N - 1024 * 1024
    assert c[3] < N * N - 1024 * 1024 - 100 * 848
    assert res.offsets == dict(zip(ids, OFFSETS, strict=True))
    assert res.valid_pixels == N * N


def test_dilation_masks_more_than_nodata(manifest):
    res = composite_window(manifest, "blue", Window(0, 1024, 1024, 1024), dilate_nodata=2)
    assert (res.count[100:102, 300:] == 3).all()  # rows 100, 101 = dilated scene-3 nodata
    assert (res.count[110:, 300:] == 4).all()


def test_masked_classes_option(manifest):
    w = Window(1024, 0, 1024, 1024)
    res = composite_window(manifest, "blue", w, mask_classes=(0, 1, 2, 3, 8, 9, 10, 11))
    _check(res, w, mask_dark=True)


@pytest.mark.parametrize("window", [Window(0, 0, 1024, 1024), Window(1024, 1024, 1024, 1024),
                                    Window(0, 1024, 1024, 1024)], ids=lambda w: w.key)
def test_median_per_window(manifest, window):
    _check(composite_window(manifest, "blue", window, threads=2), window)


def test_stack_given_is_used_instead_of_read(manifest, monkeypatch):
    """``composite_window(stack=)``: the stack read elsewhere (onebox's outlier decision) gives
    the window's own result, offsets subtracted from it in place, and nothing is read; a
    stack of another shape or dtype (a band's stack for the visual image) is refused."""
    from cloudfree import composite
    from cloudfree.windows import read_stack

    w = Window(1024, 1024, 512, 512)  # scene 3's shadow, BASE + offsets
    stack = read_stack([s["assets"]["blue"] for s in manifest["scenes"]], w)
    raw = stack.copy()
    monkeypatch.setattr(composite, "read_stack", lambda *a, **k: pytest.fail("read"))
    res = composite_window(manifest, "blue", w, stack=stack)
    _check(res, w)
    assert (raw[0] - stack[0] == OFFSETS[0]).all()  # modified in place: offsets subtracted
    monkeypatch.undo()
    assert res.stats() == composite_window(manifest, "blue", w).stats()
    with pytest.raises(InputError, match="stack of"):
        composite_window(manifest, "blue", Window(0, 0, 512, 256), stack=raw)
    with pytest.raises(InputError, match=r"expected \(4, 3, 512, 512\) uint8"):
        composite_window(manifest, "visual", w, stack=raw)


def test_scl_on_band_grid(manifest):
    href = manifest["scenes"][2]["assets"]["scl"]
    from cloudfree.bands import get_band

    scl = read_scl_for(href, get_band("blue"), Window(1024, 0, 1024, 1024))
    assert scl.shape == (1024, 1024) and scl.dtype == np.uint8
    assert (scl == 4).all()
    scl = read_scl_for(href, get_band("blue"), Window(0, 0, 1024, 1024))
    assert (scl == 9).all()


def test_write_window_result(manifest, tmp_path):
    w = Window(1024, 0, 1024, 1024)
    res = composite_window(manifest, "blue", w)
    uri = str(tmp_path / "r01024_c00000.tif")
    stats = write_window_result(res, uri, TILE, "blue")
    with rasterio.open(uri) as src:
        assert src.count == 2 and src.dtypes[0] == "uint16" and src.nodata == 0
        assert src.crs.to_epsg() == 32633
        assert src.transform.c == 300000 and src.transform.f == 5400000 - 10240
        assert src.block_shapes[0] == (512, 512)
        np.testing.assert_array_equal(src.read(1), res.median)
        np.testing.assert_array_equal(src.read(2), res.count)
    on_disk = json.loads(Path(uri).with_suffix(".json").read_text())
    assert on_disk == stats
    assert stats["pixels"] == 1024 * 1024 and stats["valid_pixels"] == 1024 * 1024
    assert sum(stats["count_histogram"]) == 1024 * 1024
    assert stats["count_histogram"][3] == 100 * 100


def test_band_windows_rerun_safe(manifest, tmp_path):
    layout = LocalLayout(tmp_path)
    windows = [Window(r, c, 1024, 1024) for r in (0, 1024) for c in (0, 1024)]
    first = composite_band_windows(manifest, "blue", windows, layout, 2023, "33UUP", threads=2)
    assert [s["skipped"] for s in first] == [False] * 4
    assert all(Path(s["uri"]).exists() for s in first)
    again = composite_band_windows(manifest, "blue", windows, layout, 2023, "33UUP")
    assert [s["skipped"] for s in again] == [True] * 4
    assert json.dumps(first)  # small, JSON-able summaries


# --- visual ----------------------------------------------------------------------------------
def test_visual_exact_per_channel_median(tmp_path):
    n = 1024
    scenes = []
    for i, v in enumerate((10, 20, 31, 40)):
        tci = np.stack([np.full((n, n), v + c, np.uint8) for c in range(3)])
        scl = np.full((n // 2, n // 2), 4, np.uint8)
        if i == 3:
            scl[:256, :] = 8  # cloud medium: rows 0:512 use 10, 20, 31
        if i == 0:
            tci[:, 600:700, :] = 0  # TCI nodata in all channels
        scenes.append({"id": f"s{i}", "harmonization": {"offset": 1000},  # ignored for visual
                       "assets": {"visual": write_raster(tmp_path / f"tci{i}.tif", tci, 10, 512),
                                  "scl": write_raster(tmp_path / f"scl{i}.tif", scl, 20, 512)}})
    res = composite_window({"scenes": scenes}, "visual", Window(0, 0, n, n), threads=2)
    assert res.median.shape == (3, n, n) and res.median.dtype == np.uint8
    # 4 obs: (20+c + 31+c)/2 = 25.5, 26.5, 27.5 -> half to even 26, 26, 28
    assert [int(res.median[c, 800, 5]) for c in range(3)] == [26, 26, 28]
    assert [int(res.median[c, 5, 5]) for c in range(3)] == [20, 21, 22]  # 10 20 31
    assert [int(res.median[c, 650, 5]) for c in range(3)] == [31, 32, 33]  # 20 31 40
    assert int(res.count[5, 5]) == 3 and int(res.count[800, 5]) == 4
    uri = str(tmp_path / "out" / "visual.tif")
    write_window_result(res, uri, TILE, "visual")
    with rasterio.open(uri) as src:
        assert src.count == 3 and src.dtypes[0] == "uint8"
        np.testing.assert_array_equal(src.read(), res.median)


def test_window_without_any_clear_pixel_skips_the_band_read(monkeypatch):
    """All-nodata SCL: zero median and count, the footprint counted, no band decoded."""
    import numpy as np

    from cloudfree import composite as comp
    from cloudfree.bands import get_band
    from cloudfree.windows import Window

    manifest = {"tile": "33UUP", "year": 2023, "scenes": [
        {"id": "a", "assets": {"blue": "a.tif", "scl": "a_scl.tif"},
         "harmonization": {"offset": 1000}},
        {"id": "b", "assets": {"blue": "b.tif", "scl": "b_scl.tif"}}]}
    from cloudfree.windows import SclPatch

    scl20 = {"a_scl.tif": np.zeros((2, 2), dtype=np.uint8),
             "b_scl.tif": np.zeros((2, 2), dtype=np.uint8)}
    scl20["a_scl.tif"][0, 0] = 9  # cloud: observed but not clear (2 x 2 px at 10 m)
    monkeypatch.setattr(comp, "read_scl_patch", lambda href, *a, **k: SclPatch(scl20[href], 0, 0))

    def no_read(*a, **k):
        raise AssertionError("band must not be read")

    monkeypatch.setattr(comp, "read_stack", no_read)
    res = comp.composite_window(manifest, "blue", Window(0, 0, 4, 4), outliers="off")
    assert res.median.shape == (4, 4) and not res.median.any() and not res.count.any()
    assert res.contributions == {"a": 0, "b": 0}
    assert res.offsets == {"a": 1000, "b": 0}
    stats = res.stats()
    assert stats["observed_pixels"] == 4 and stats["valid_pixels"] == 0
    assert get_band("blue").count == 1


def test_scratch_arrays_are_reused_only_inside_reused_buffers():
    """A median batch reuses one stack and one states array across its windows (fresh big
    arrays cost their page faults); outside the block every call gets its own."""
    from cloudfree.composite import reused_buffers, scratch

    a, b = scratch("x", (2, 3), np.uint16), scratch("x", (2, 3), np.uint16)
    assert a is not b
    with reused_buffers():
        first = scratch("stack", (4, 5, 6), np.uint16)
        again = scratch("stack", (4, 5, 6), np.uint16)
        assert again.shape == (4, 5, 6) and np.shares_memory(again, first)
        assert not np.shares_memory(scratch("states", (4, 5, 6), np.uint8), first)
        other = scratch("stack", (4, 5, 2), np.uint16)  # the batch's last, narrower window
        assert other.shape == (4, 5, 2) and other.flags.c_contiguous
        assert np.shares_memory(other, first)  # in the big one's memory, not a new mapping
        assert np.shares_memory(scratch("stack", (4, 5, 6), np.uint16), first)  # still kept
        bigger = scratch("stack", (4, 5, 7), np.uint16)  # more than it holds: a new one
        assert bigger.shape == (4, 5, 7) and not np.shares_memory(bigger, first)
        assert not np.shares_memory(scratch("stack", (4, 5, 6), np.uint8), bigger)  # dtype
    assert not np.shares_memory(scratch("stack", (4, 5, 6), np.uint16), first)


def _patch_scenes(root: Path, n: int = 480) -> dict:
    """Five scenes all nodata but for observed patches (a small AOI, a swath corner): clouds,
    snow where nothing else is clear, a dark outlier SCL missed (the outlier test), two
    granules of one observation (fused), harmonization offsets; blue, red and the visual
    image at 10 m, nir08 at 20 m, coastal at 60 m, SCL at 20 m."""
    rng = np.random.default_rng(7)
    m = n // 2
    scenes = []
    patches = [(40, 60, 120, 150), (50, 70, 110, 140), (30, 50, 100, 160), (60, 40, 130, 120),
               (100, 110, 140, 175)]
    for i, (r0, c0, r1, c1) in enumerate(patches):
        scl = np.zeros((m, m), np.uint8)
        scl[r0:r1, c0:c1] = 4
        scl[r0:r0 + 10, c0:c1] = 9 if i == 1 else 4
        scl[r0 + 12:r0 + 20, c0 + 5:c0 + 25] = 11 if i in (0, 2) else scl[r0 + 12, c0 + 5]
        scl[rng.random((m, m)) < 0.02] = 0
        blue = np.zeros((n, n), np.uint16)
        blue[2 * r0:2 * r1, 2 * c0:2 * c1] = rng.integers(900, 1600, (2 * (r1 - r0),
                                                                      2 * (c1 - c0)))
        if i == 3:
            blue[2 * r0 + 40:2 * r0 + 80, 2 * c0 + 20:2 * c0 + 90] = 9000  # a missed cloud
        red = np.where(blue > 0, blue + 40, 0).astype(np.uint16)
        nir = np.where(scl > 0, rng.integers(2000, 3000, (m, m)), 0).astype(np.uint16)
        coastal = np.where(scl[1::3, 1::3] > 0, 1200 + i, 0).astype(np.uint16)
        tci = np.stack([np.where(blue > 0, (blue // 40 + c) % 250 + 1, 0) for c in range(3)]
                       ).astype(np.uint8)
        sid = f"S2B_33UUP_2023070{i}_0_L2A"
        scene = {"id": sid, "datetime": f"2023-07-0{i + 1}T10:00:00Z",
                 "harmonization": {"offset": 1000 if i % 2 else 0, "reason": "test"},
                 "assets": {"blue": write_raster(root / f"{sid}_B02.tif", blue, 10, 256),
                            "red": write_raster(root / f"{sid}_B04.tif", red, 10, 256),
                            "nir08": write_raster(root / f"{sid}_B8A.tif", nir, 20, 256),
                            "coastal": write_raster(root / f"{sid}_B01.tif", coastal, 60, 256),
                            "visual": write_raster(root / f"{sid}_TCI.tif", tci, 10, 256),
                            "scl": write_raster(root / f"{sid}_SCL.tif", scl, 20, 256)}}
        if i in (3, 4):
            scene["observation"] = "S2B_33UUP_20230704"  # two granules of one datatake
        scenes.append(scene)
    return {"tile": "33UUP", "year": 2023, "scenes": scenes}


@pytest.fixture(scope="module")
def patch_manifest(tmp_path_factory) -> dict:
    return _patch_scenes(tmp_path_factory.mktemp("patch"))


@pytest.mark.parametrize("band,window", [
    ("blue", Window(0, 0, 480, 480)), ("blue", Window(0, 160, 320, 320)),
    ("blue", Window(96, 120, 64, 200)), ("visual", Window(0, 0, 480, 480)),
    ("nir08", Window(0, 0, 240, 240)), ("nir08", Window(40, 0, 120, 100)),
    ("coastal", Window(0, 0, 80, 80)), ("blue", Window(300, 300, 100, 100))],
    ids=lambda v: v if isinstance(v, str) else v.key)
@pytest.mark.parametrize("outliers", ["on", "off"])
def test_a_window_cropped_to_its_usable_box_equals_the_whole_window(
        patch_manifest, band, window, outliers, monkeypatch):
    """``composite_window`` composites only the box of the usable pixels when that is smaller
    than the window; every output (median, count, snow, per-scene counts, footprint, stats)
    equals the whole window's computation."""
    from cloudfree import composite as comp

    def run(crop: bool):
        monkeypatch.setattr(mask, "CROP_TO_USABLE", crop)
        return composite_window(patch_manifest, band, window, outliers=outliers, threads=2)

    reads = []
    real_read = comp.read_stack
    monkeypatch.setattr(comp, "read_stack",
                        lambda hrefs, w, **k: reads.append(w) or real_read(hrefs, w, **k))
    got, want = run(True), run(False)
    assert got.window == want.window == window
    np.testing.assert_array_equal(got.median, want.median)
    np.testing.assert_array_equal(got.count, want.count)
    np.testing.assert_array_equal(got.snow, want.snow)
    assert got.stats() == want.stats()
    hist = got.stats()["count_histogram"]  # taken over the observed box, plus the rest as 0
    assert hist == np.bincount(want.count.ravel(), minlength=len(hist)).tolist()
    assert (got.contributions, got.outliers, got.masked, got.offsets, got.observed) == \
        (want.contributions, want.outliers, want.masked, want.offsets, want.observed)
    if want.valid_pixels:  # the box was decoded, not the window (when it is smaller)
        assert reads[0].size <= window.size and reads[-1] == window
        assert sum(want.masked.values()) > 0
    if band == "blue" and window.size == 480 * 480:
        assert reads[0].size < window.size / 4
        assert want.snow_pixels > 0 and want.valid_pixels > 10_000
        if outliers == "on":
            assert sum(want.outliers.values()) > 0


@pytest.mark.parametrize("band,window", [("blue", Window(0, 0, 480, 480)),
                                         ("nir08", Window(0, 0, 240, 240)),
                                         ("blue", Window(100, 96, 200, 300))],
                         ids=lambda v: v if isinstance(v, str) else v.key)
def test_the_decision_cropped_to_the_usable_box_equals_the_whole_square(
        patch_manifest, band, window, monkeypatch):
    """``outliers._decide`` reads and tests only the box of a square's usable pixels (a swath
    edge): the same decision as over the whole square, which rejects something here."""
    from cloudfree import outliers

    reads = []
    real_read = outliers.read_stack
    monkeypatch.setattr(outliers, "read_stack",
                        lambda hrefs, w, **k: reads.append(w) or real_read(hrefs, w, **k))
    got = outliers.band_window_rejection(patch_manifest["scenes"], band, window, threads=2)
    cropped_reads = list(reads)
    monkeypatch.setattr(mask, "CROP_TO_USABLE", False)
    want = outliers.band_window_rejection(patch_manifest["scenes"], band, window, threads=2)
    np.testing.assert_array_equal(got, want)
    assert want.any()  # the missed cloud of scene 3
    assert sum(w.size for w in cropped_reads) < sum(w.size for w in reads[len(cropped_reads):])
