"""The compiled median kernel as shipped: built by the layer Makefile, loadable on Lambda.

Lambda's python3.11 runtime is Amazon Linux 2 with glibc 2.26 (AWS Lambda runtimes table,
https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtimes.html; seen failing in the field as
"libm.so.6: version 'GLIBC_2.27' not found", apache/arrow#38373; AL2023 stops at 2.34,
aws/aws-lambda-rust-runtime#932). This machine is Debian 12 with glibc 2.36. A binary loads
there only if no imported symbol is versioned above 2.26.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cloudfree import median

ROOT = Path(__file__).resolve().parents[2]
needs_toolchain = pytest.mark.skipif(
    not (shutil.which("objdump") and shutil.which("make") and shutil.which("cc")),
    reason="needs binutils, make and a C compiler",
)


def _checker():
    spec = importlib.util.spec_from_file_location("check_glibc", ROOT / "scripts/check_glibc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_parse_glibc_versions_from_objdump_text() -> None:
    text = """
/x.so:     file format elf64-x86-64

DYNAMIC SYMBOL TABLE:
0000000000000000      DF *UND*	0000000000000000 (GLIBC_2.2.5) memset
0000000000000000      DF *UND*	0000000000000000 (GLIBC_2.34) pthread_create
0000000000000000  w   DF *UND*	0000000000000000  Base        PyObject_GetBuffer
0000000000000000      DF *UND*	0000000000000000 (GLIBC_2.14) memcpy
"""
    check = _checker()
    versions = check.parse_glibc_versions(text)
    assert versions == {"memset": (2, 2, 5), "pthread_create": (2, 34), "memcpy": (2, 14)}
    assert check.too_new(versions, (2, 26)) == {"pthread_create": (2, 34)}


@needs_toolchain
def test_checker_rejects_a_binary_linked_against_new_glibc(tmp_path: Path) -> None:
    """pthread_create binds to GLIBC_2.34 when linked on glibc >= 2.34 (this machine)."""
    src = tmp_path / "t.c"
    src.write_text("#include <pthread.h>\nvoid *f(void *a){return a;}\n"
                   "int g(void){pthread_t t; return pthread_create(&t, 0, f, 0);}\n")
    so = tmp_path / "t.so"
    subprocess.run(["cc", "-shared", "-fPIC", str(src), "-o", str(so), "-lpthread"], check=True)
    check = _checker()
    if max(check.glibc_versions(str(so)).values()) < (2, 34):
        pytest.skip("this machine's glibc predates 2.34")
    assert check.main(["--max", "2.26", str(so)]) == 1


@needs_toolchain
@pytest.mark.skipif(not median.compiled_available(), reason="compiled kernel not built")
def test_installed_kernel_needs_at_most_glibc_2_26() -> None:
    check = _checker()
    versions = check.glibc_versions(median._compiled.__file__)
    assert versions, "expected some GLIBC-versioned imports (memset at least)"
    assert check.too_new(versions, check.LAMBDA_PY311_GLIBC) == {}


@needs_toolchain
def test_layer_makefile_builds_a_loadable_exact_kernel(tmp_path: Path) -> None:
    """The layer's compile step: abi3 .so, stripped, glibc <= 2.26, and exact when loaded."""
    so = tmp_path / "_median.abi3.so"
    subprocess.run(
        ["make", "--no-print-directory", "-f", "layers/cloudfree/Makefile", "median-ext",
         f"MEDIAN_SO={so}", f"PYTHON={sys.executable}"],
        cwd=ROOT, check=True, capture_output=True,
    )
    assert 4_000 < so.stat().st_size < 200_000  # ~35 KB stripped
    check = _checker()
    assert check.too_new(check.glibc_versions(str(so)), (2, 26)) == {}
    needed = subprocess.run(["readelf", "-d", str(so)], capture_output=True, text=True).stdout
    assert [ln.split("[")[-1].rstrip("]") for ln in needed.splitlines() if "NEEDED" in ln] == [
        "libc.so.6"
    ]
    spec = importlib.util.spec_from_file_location("cloudfree._median", so)
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    rng = np.random.default_rng(7)
    stack = rng.integers(0, 65536, (16, 20, 30), dtype=np.uint16)
    valid = (rng.random(stack.shape) < 0.6).astype(np.uint8)
    ops, out0, out1, n_out = median._network_ops(16)
    med, cnt = np.empty((20, 30), np.uint16), np.empty((20, 30), np.uint8)
    contrib = np.zeros(16, np.int64)
    ext.masked_median(stack, valid, med, cnt, contrib, ops, 16, out0, out1, n_out, 0, 600)
    ref = median.reference_median(stack, valid)
    np.testing.assert_array_equal(med, ref.median)
    np.testing.assert_array_equal(cnt, ref.count)
    np.testing.assert_array_equal(contrib, ref.contributions)


@pytest.mark.skipif(not median.compiled_available(), reason="compiled kernel not built")
def test_kernel_rejects_inconsistent_buffers() -> None:
    """The C entry point checks sizes itself: a wrong buffer is a ValueError, not a crash."""
    stack = np.zeros((4, 8, 8), np.uint16)
    valid = np.ones((4, 8, 8), np.uint8)
    med, cnt = np.empty((8, 8), np.uint16), np.empty((8, 8), np.uint8)
    contrib = np.zeros(4, np.int64)
    ops, out0, out1, n_out = median._network_ops(4)
    run = median._compiled.masked_median
    with pytest.raises(ValueError, match="valid"):
        run(stack, valid[:3], med, cnt, contrib, ops, 4, out0, out1, n_out, 0, 64)
    with pytest.raises(ValueError, match="pixel range"):
        run(stack, valid, med, cnt, contrib, ops, 4, out0, out1, n_out, 0, 65)
    with pytest.raises(ValueError, match="comparator"):
        run(stack, valid, med, cnt, contrib, bytes([0, 9, 3]), 4, out0, out1, n_out, 0, 64)
    with pytest.raises(ValueError, match="n_scenes"):
        run(stack, valid, med, cnt, contrib, ops, 65, out0, out1, n_out, 0, 64)


def test_fallback_to_numpy_when_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the extension masked_median still works (numpy) and 'compiled' says why not."""
    monkeypatch.setattr(median, "_compiled", None)
    stack = np.array([[[3]], [[1]], [[2]]], np.uint16)
    valid = np.ones_like(stack, np.uint8)
    assert not median.compiled_available()
    assert median.masked_median(stack, valid).median[0, 0] == 2
    with pytest.raises(median.ConfigError, match="not built"):
        median.masked_median(stack, valid, kernel="compiled")
