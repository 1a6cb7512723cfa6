"""The benchmark scripts still import against the library (``make bench`` / ``make bench-peer``
run them only by hand, so a renamed or moved name would otherwise go unseen: bench_fulltile
imported ``WINDOWS_PER_BATCH`` from ``cloudfree.tasks`` after it moved to ``cloudfree.manifest``).
Each script's top level (its imports) runs in a fresh interpreter; its ``__main__`` block
does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py"))


def test_the_bench_folder_has_its_scripts():
    assert {"bench_median.py", "bench_tile.py", "bench_fulltile.py", "bench_peer.py"} <= set(
        SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_imports(script):
    code = ("import runpy, sys; sys.path.insert(0, sys.argv[1]); "
            "runpy.run_path(sys.argv[2], run_name='imported')")
    res = subprocess.run([sys.executable, "-c", code, str(BENCH), str(BENCH / script)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_fulltile_prints_phase_seconds_the_plan_reads():
    """``bench_fulltile`` prints its run's ``phase_seconds`` in the shape
    ``plan_calibration.json`` holds, so a new run recalibrates the plan's tile schedule."""
    import runpy

    from cloudfree import costs

    sys.path.insert(0, str(BENCH))
    try:
        ns = runpy.run_path(str(BENCH / "bench_fulltile.py"), run_name="imported")
    finally:
        sys.path.remove(str(BENCH))
    rows = {10: [{"median_s": 20.0, "assemble_s": 16.0}, {"median_s": 22.0, "assemble_s": 18.0}],
            20: [{"median_s": 8.0, "assemble_s": 5.0}], 60: [{"median_s": 4.0, "assemble_s": 1.0}]}
    got = ns["phase_seconds"](rows, 40.0)
    assert got == {"decide": 40.0, "median": {"10": 21.0, "20": 8.0, "60": 4.0},
                   "assemble": {"10": 17.0, "20": 5.0, "60": 1.0}}
    assert set(got) == set(costs.calibration()["phase_seconds"])
    decide, bands = costs._phase_seconds({"phase_seconds": got}, [("blue", 2), ("coastal", 1)],
                                         (40 + 21 + 17 + 4 + 1) / 2)
    assert decide == 20 and bands == [(2, 5.25, 8.5), (1, 2.0, 0.5)]


def test_bench_memory_quota_parsing_and_cgroup_files(tmp_path):
    """``bench_memory``'s pure parts: Lambda's CPU share per memory, the tile line of a
    ``bench_fulltile`` report, GB-s against 3008 MB, and the quota files of cgroup v1 and v2."""
    import runpy

    ns = runpy.run_path(str(BENCH / "bench_memory.py"), run_name="imported")
    assert ns["quota_cores"](1769) == 1.0 and ns["quota_cores"](3008) == 3008 / 1769
    assert ns["quota_cores"](10240) == 2.0  # the pipeline's two threads
    report = ("decide    4 invocations, 16 squares:   32.4 s | peak RSS   963 of 3008 MB\n"
              "tile (projected, 12 bands + visual): pipeline  249.8 s (decide step 32.4 s), "
              "codec floor  83.6 s on 1.3.1.zlib-ng (SCL once: 0.2 s) = 2.99x the floor\n")
    assert ns["tile_seconds"](report) == 249.8 and ns["tile_seconds"]("nothing") is None
    rel = ns["gb_s_against"]({2048: 400.0, 3008: 260.0})
    assert rel[3008] == 1.0 and rel[2048] == (400 * 2048) / (260 * 3008)
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    d, version = ns["cgroup_dir"]("g", v2)
    assert version == "v2" and d == v2 / "g"
    ns["set_quota"]((d, version), 1.7)
    assert (d / "cpu.max").read_text() == "170000 100000"
    v1 = tmp_path / "v1"
    (v1 / "cpu" / "g").mkdir(parents=True)
    (v1 / "cpu" / "g" / "cpu.cfs_quota_us").write_text("-1")  # what the kernel creates
    d, version = ns["cgroup_dir"]("g", v1)
    assert version == "v1"
    ns["set_quota"]((d, version), 1.158)
    assert (d / "cpu.cfs_quota_us").read_text() == "115800"
    assert (d / "cpu.cfs_period_us").read_text() == "100000"
    assert ns["cgroup_dir"]("g", tmp_path / "none") is None  # no hierarchy: the bench stops


@pytest.mark.realdata
def test_bench_codecs_measures_real_pixels_in_both_codecs(tmp_path):
    """``bench_codecs``' real-pixel part: the four real sources, each in both codecs, LERC_ZSTD
    the smaller (the shares that become the calibration's ``bytes_share``)."""
    import runpy

    ns = runpy.run_path(str(BENCH / "bench_codecs.py"), run_name="imported")
    sizes = ns["real_bytes"](tmp_path)
    assert len(sizes) == 4 and "true colour" in sizes
    for name, got in sizes.items():
        assert set(got) == {"deflate", "lerc_zstd"} and 0 < got["lerc_zstd"] < got["deflate"], name


def test_peer_crops_become_sparse_whole_tile_tiffs_with_the_same_pixels(tmp_path):
    """``bench_peer.tile_tiff``: a crop placed on the tile's block grid (``align_scenes``'s VRT)
    becomes a GeoTIFF of the whole tile holding the crop's own compressed tiles there, sparse
    elsewhere: the crop's pixels where the VRT puts them, nodata around, read by
    ``cloudfree.blocks`` (predictor 2 kept)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    sys.path.insert(0, str(BENCH))
    import align_scenes
    import bench_peer

    from cloudfree import blocks
    from cloudfree.windows import Window

    rng = np.random.default_rng(2)
    crop = tmp_path / "B01.tif"
    data = rng.integers(1, 9000, (512, 600), dtype=np.uint16)  # a partial edge tile
    with rasterio.open(crop, "w", driver="GTiff", dtype="uint16", count=1, height=512,
                       width=600, crs="EPSG:32629", transform=from_origin(0, 0, 60, 60),
                       nodata=0, tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate", predictor=2) as dst:
        dst.write(data, 1)
    x0, y0 = bench_peer.ORIGIN
    vrt = tmp_path / "B01.vrt"  # placed 2 x 256 px right of and 1 x 256 px below the corner
    vrt.write_text(align_scenes.shifted_vrt(str(crop), x0 + 512 * 60, y0 - 256 * 60))
    out = tmp_path / "tile.tif"
    bench_peer.tile_tiff(str(vrt), out)
    with rasterio.open(out) as src:
        assert src.shape == (1830, 1830) and src.transform.c == x0 and src.transform.f == y0
        assert blocks.layout(src, 1).predictor == 2
        whole = src.read(1)
        here = np.empty((1830, 1830), np.uint16)
        assert blocks.read_into(src, str(out), Window(0, 0, 1830, 1830), here)
    np.testing.assert_array_equal(here, whole)
    np.testing.assert_array_equal(whole[256:768, 512:1112], data)
    assert not whole[:256].any() and not whole[768:].any() and not whole[:, :512].any()
