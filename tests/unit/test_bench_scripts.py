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
