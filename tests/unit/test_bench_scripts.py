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
