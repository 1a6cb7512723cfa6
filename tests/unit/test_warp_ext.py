"""The compiled warp (``cloudfree._warp``, the assemble step's resampling): the same answer as
a plain numpy statement of its rule, and built by the layer Makefile to load on Lambda.

The rule: a source position per output pixel (interpolated in a lattice of exact projections);
nearest takes the source pixel containing it; bilinear the four pixel centres around it,
weighted by area and renormalised over the valid ones, rounded half up; an output pixel is
nodata where the source pixel containing its position is nodata (every band equal to nodata)
or outside the source.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cloudfree import assemble

ROOT = Path(__file__).resolve().parents[2]
kernel = assemble._warp_kernel()
needs_kernel = pytest.mark.skipif(kernel is None, reason="cloudfree._warp not built")


def _lattice(oh: int, ow: int, step: int, a: tuple[float, ...]):
    """An affine map of output pixel centres to source positions, at the lattice nodes and at
    every pixel (the kernel's interpolation is then exact up to rounding)."""
    lh, lw = (oh - 1) // step + 2, (ow - 1) // step + 2
    def at(r, c):
        return a[0] + a[1] * c + a[2] * r, a[3] + a[4] * c + a[5] * r
    rn, cn = np.meshgrid(np.arange(lh) * step + 0.5, np.arange(lw) * step + 0.5, indexing="ij")
    lx, ly = at(rn, cn)
    rp, cp = np.meshgrid(np.arange(oh) + 0.5, np.arange(ow) + 0.5, indexing="ij")
    return np.ascontiguousarray(lx), np.ascontiguousarray(ly), *at(rp, cp)


def _reference(src: np.ndarray, x: np.ndarray, y: np.ndarray, bilinear: bool, nodata: int):
    nb, sh, sw = src.shape
    valid = (src != nodata).any(axis=0)

    def ok(r, c):
        inside = (r >= 0) & (c >= 0) & (r < sh) & (c < sw)
        return inside & valid[np.clip(r, 0, sh - 1), np.clip(c, 0, sw - 1)]

    ri, ci = np.floor(y).astype(int), np.floor(x).astype(int)
    keep = ok(ri, ci)
    out = np.full((nb, *x.shape), nodata, src.dtype)
    if not bilinear:
        for b in range(nb):
            out[b][keep] = src[b, ri[keep], ci[keep]]
        return out
    xs, ys = x - 0.5, y - 0.5
    c0, q0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    dx, dy = xs - c0, ys - q0
    acc, wsum = np.zeros((nb, *x.shape)), np.zeros(x.shape)
    for r, c, w in ((q0, c0, (1 - dx) * (1 - dy)), (q0, c0 + 1, dx * (1 - dy)),
                    (q0 + 1, c0, (1 - dx) * dy), (q0 + 1, c0 + 1, dx * dy)):
        v = ok(r, c) & (w > 0)
        for b in range(nb):
            acc[b] += np.where(v, w * src[b, np.clip(r, 0, sh - 1), np.clip(c, 0, sw - 1)], 0)
        wsum += np.where(v, w, 0)
    top = np.iinfo(src.dtype).max
    val = np.floor(acc / np.where(wsum > 0, wsum, 1) + 0.5).clip(0, top).astype(src.dtype)
    out[:, keep] = val[:, keep]
    return out


@needs_kernel
@pytest.mark.parametrize("dtype,nb", [(np.uint16, 1), (np.uint8, 3), (np.uint8, 1)])
@pytest.mark.parametrize("bilinear", [True, False])
def test_the_kernel_follows_its_rule_written_in_numpy(dtype, nb, bilinear):
    rng = np.random.default_rng(3)
    sh, sw, oh, ow, step = 90, 110, 150, 170, 16
    src = rng.integers(1, np.iinfo(dtype).max, (nb, sh, sw), dtype=dtype)
    src[:, 20:40, 30:55] = 0  # a nodata hole
    src[:, rng.random((sh, sw)) < 0.05] = 0  # scattered nodata pixels
    if nb > 1:
        src[1, 60:70, :] = 0  # one band 0 alone: still valid (unified validity)
    # rotated, scaled by ~0.63 and shifted past the source's edges on every side
    lx, ly, x, y = _lattice(oh, ow, step, (-6.3137, 0.6271, 0.0437, -4.9071, -0.0413, 0.6329))
    out = np.empty((nb, oh, ow), dtype)
    kernel.warp(src, lx, ly, out, src.itemsize, nb, sh, sw, oh, ow, step, bilinear, 0, 0, oh)
    want = _reference(src, x, y, bilinear, 0)
    # the same up to floating-point ties (a position on a pixel edge, a sum at .5): a few px
    assert ((out == 0) != (want == 0)).mean() < 1e-3
    diff = np.abs(out.astype(int) - want.astype(int))
    assert (diff > (1 if bilinear else 0)).mean() < 1e-3 and (diff > 0).mean() < 2e-3
    assert (out != 0).any(axis=0).mean() > 0.5 and (out == 0).all(axis=0).mean() > 0.1


@needs_kernel
def test_rows_split_over_calls_give_the_same_pixels():
    rng = np.random.default_rng(4)
    src = rng.integers(1, 5000, (1, 60, 60), dtype=np.uint16)
    lx, ly, _, _ = _lattice(100, 90, 32, (1.3, 0.55, 0.02, 2.1, -0.03, 0.57))
    whole, parts = np.empty((1, 100, 90), np.uint16), np.empty((1, 100, 90), np.uint16)
    kernel.warp(src, lx, ly, whole, 2, 1, 60, 60, 100, 90, 32, True, 0, 0, 100)
    for a, b in ((0, 33), (33, 34), (34, 100)):
        kernel.warp(src, lx, ly, parts, 2, 1, 60, 60, 100, 90, 32, True, 0, a, b)
    np.testing.assert_array_equal(whole, parts)


@needs_kernel
def test_the_kernel_rejects_inconsistent_buffers():
    src = np.ones((1, 10, 10), np.uint16)
    lx, ly, _, _ = _lattice(20, 20, 8, (0, 0.5, 0, 0, 0, 0.5))
    out = np.empty((1, 20, 20), np.uint16)
    with pytest.raises(ValueError, match="lattice_x"):
        kernel.warp(src, lx[:1], ly, out, 2, 1, 10, 10, 20, 20, 8, True, 0, 0, 20)
    with pytest.raises(ValueError, match="src"):
        kernel.warp(src, lx, ly, out, 2, 1, 10, 11, 20, 20, 8, True, 0, 0, 20)
    with pytest.raises(ValueError, match="rows"):
        kernel.warp(src, lx, ly, out, 2, 1, 10, 10, 20, 20, 8, True, 0, 0, 21)


@pytest.mark.skipif(not (shutil.which("objdump") and shutil.which("make")
                         and shutil.which("cc")), reason="needs binutils, make and a C compiler")
def test_layer_makefile_builds_a_loadable_warp(tmp_path: Path):
    """The layer's compile step: abi3 .so, libc only, glibc <= 2.26, and the same pixels."""
    so = tmp_path / "_warp.abi3.so"
    subprocess.run(["make", "--no-print-directory", "-f", "layers/cloudfree/Makefile",
                    "warp-ext", f"WARP_SO={so}", f"PYTHON={sys.executable}"],
                   cwd=ROOT, check=True, capture_output=True)
    spec = importlib.util.spec_from_file_location("check_glibc", ROOT / "scripts/check_glibc.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert check.too_new(check.glibc_versions(str(so)), (2, 26)) == {}
    needed = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True).stdout
    assert {ln.split("[")[-1].rstrip("]") for ln in needed.splitlines() if "NEEDED" in ln} <= {
        "libc.so.6"}  # no libm, no libpthread (it calls no libc function at all today)
    spec = importlib.util.spec_from_file_location("cloudfree._warp", so)
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    src = np.random.default_rng(5).integers(1, 9000, (1, 40, 40), dtype=np.uint16)
    lx, ly, x, y = _lattice(50, 50, 16, (0.7, 0.71, 0.05, 0.4, -0.04, 0.69))
    out = np.empty((1, 50, 50), np.uint16)
    ext.warp(src, lx, ly, out, 2, 1, 40, 40, 50, 50, 16, True, 0, 0, 50)
    assert np.abs(out.astype(int) - _reference(src, x, y, True, 0).astype(int)).max() <= 1
