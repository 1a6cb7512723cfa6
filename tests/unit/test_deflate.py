"""rasterio's GDAL runs zlib-ng (scripts/zlib_ng.py), and that changes no pixel.

GIVEN the project venv as ``make setup`` leaves it (rasterio's libraries re-pointed at
``libz-ng-cloudfree.so.1``), THEN GDAL's own DEFLATE writes zlib-ng's bytes, no library of
rasterio still NEEDs the system ``libz.so.1``, and streams written by either zlib read back
identically with the other (DEFLATE is one format; only the encoder's choices differ).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cloudfree import deflate

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import zlib_ng  # noqa: E402

SITE = Path(sysconfig.get_paths()["purelib"])
NG = SITE / "rasterio.libs" / zlib_ng.LIBNAME
#: A real Earth Search item's COGs, under the ``realdata`` fixture's folder.
SCENE = ("rio-tiler-pds/tests/fixtures/sentinel-cogs/sentinel-s2-l2a-cogs/29/R/KH/2020/2/"
         "S2A_29RKH_20200219_0_L2A")

needs_ng = pytest.mark.skipif(not NG.exists(), reason="venv not set up with zlib-ng (make setup)")


@needs_ng
def test_gdal_deflates_with_the_vendored_zlib_ng():
    found = deflate.gdal_zlib()
    assert found["version"].endswith(".zlib-ng"), found
    assert Path(found["path"]).name == zlib_ng.LIBNAME


@needs_ng
def test_no_library_of_rasterio_needs_the_system_zlib_any_more():
    patchelf = zlib_ng.find_patchelf(None)
    files = zlib_ng._elf_files(SITE)
    assert any(f.name.startswith("libgdal") for f in files)
    assert any(f.name.startswith("libtiff") for f in files)
    for f in files:
        assert zlib_ng.SYSTEM_ZLIB not in zlib_ng.needed(patchelf, f), f.name
    gdal = next(f for f in files if f.name.startswith("libgdal"))
    assert zlib_ng.LIBNAME in zlib_ng.needed(patchelf, gdal)


@needs_ng
def test_the_probe_tells_the_two_zlibs_apart():
    """gdal_zlib's premise: at level 1 the system zlib and zlib-ng write different bytes."""
    if "zlib-ng" in zlib.ZLIB_RUNTIME_VERSION:
        pytest.skip("Python's own zlib is zlib-ng on this machine")
    ng = deflate._compress2(ctypes.CDLL(str(NG)), deflate._PROBE, 1)
    system = zlib.compress(deflate._PROBE, 1)
    assert ng != system
    assert zlib.decompress(ng) == deflate._PROBE


@needs_ng
@pytest.mark.parametrize("level", [1, 2, 6, 9])
def test_streams_of_either_zlib_read_back_with_the_other(level):
    rng = np.random.default_rng(level)
    data = (rng.normal(1200, 300, 1 << 18).clip(1, 10000).astype(np.uint16)).tobytes()
    ng = ctypes.CDLL(str(NG))
    by_ng = deflate._compress2(ng, data, level)
    assert zlib.decompress(by_ng) == data
    by_system = zlib.compress(data, level)
    out = ctypes.create_string_buffer(len(data))
    size = ctypes.c_ulong(len(data))
    assert ng.uncompress(out, ctypes.byref(size), by_system, ctypes.c_ulong(len(by_system))) == 0
    assert out.raw[: size.value] == data


PROBE = """
import os, sys, numpy as np, rasterio
from cloudfree.deflate import gdal_zlib
with rasterio.open(sys.argv[1]) as s:
    np.save(sys.argv[2], s.read(1))
print(gdal_zlib()["version"], os.path.realpath(gdal_zlib()["path"]))
"""


def _gdal_inflate_binding(stderr: str) -> str:
    """The library the loader bound libgdal's ``inflate`` to (``LD_DEBUG=bindings``)."""
    for line in stderr.splitlines():
        if "binding file" in line and "libgdal" in line and "symbol `inflate'" in line:
            return os.path.realpath(line.split(" to ", 1)[1].split(" [", 1)[0])
    raise AssertionError("no binding of libgdal's inflate in LD_DEBUG's output")


@needs_ng
@pytest.mark.parametrize("asset", ["B02.tif", "SCL.tif"])
@pytest.mark.parametrize("preload", [False, True], ids=["as-set-up", "system-zlib-preloaded"])
def test_real_cogs_decode_to_the_same_pixels_whichever_zlib_gdal_binds(asset, preload,
                                                                        realdata, tmp_path):
    """A real Earth Search DEFLATE COG (written by another zlib), read in a fresh interpreter
    as set up (GDAL binds zlib-ng) and with the system zlib preloaded (it comes first in the
    global scope, so the loader binds GDAL to it, as it would under a runtime linked with
    libz): the same pixels as in this process. Either way ``gdal_zlib`` names the library the
    loader really bound libgdal's ``inflate`` to (``LD_DEBUG=bindings``)."""
    path = realdata / SCENE / asset
    with rasterio.open(path) as src:
        assert src.compression.value == "DEFLATE"
        ours = src.read(1)
    env = {"PATH": "/usr/bin:/bin", "LD_DEBUG": "bindings"}
    if preload:
        env["LD_PRELOAD"] = deflate.system_zlib()
    res = subprocess.run([sys.executable, "-c", PROBE, str(path), str(tmp_path / "a.npy")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    version, lib = res.stdout.split()
    assert lib == _gdal_inflate_binding(res.stderr)
    assert version.endswith(".zlib-ng") != preload
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), ours)


@needs_ng
def test_cli_version_names_the_zlib_gdal_runs():
    res = subprocess.run([str(Path(sys.executable).parent / "cloudfree"), "--version"],
                         capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert f"GDAL {rasterio.__gdal_version__}, zlib " in res.stdout
    assert res.stdout.strip().endswith(".zlib-ng)")
