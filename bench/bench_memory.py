"""The full tile at several Lambda memory settings, each under Lambda's CPU share
(``make bench-memory``): what ``plan_calibration.json``'s ``memory_seconds`` holds.

    .venv/bin/python bench/bench_memory.py [--memory 2048,2560,3008,3538] [--rounds 2]  # root

Lambda gives a function CPU in proportion to its memory: one vCPU at 1,769 MB, two vCPUs
shared up to 3,538 MB (https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html).
Each run here is ``bench/bench_fulltile.py --memory-mb M`` (its windows planned for M, as the
Lambdas plan them) inside a cgroup whose CPU quota is min(M / 1769, 2) cores: cgroup v2's
``cpu.max`` or v1's ``cpu.cfs_quota_us`` (the kernel's CFS bandwidth control). The settings
alternate, round after round (the machine is noisy); the report gives each setting's projected
tile seconds, the GB-s they cost against 3,008 MB (seconds x memory), and the JSON for the
calibration. It needs a writable cgroup hierarchy (root, no container restriction); without
one it says so and stops.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cloudfree.costs import CALIBRATED_MEMORY_MB as BASE_MB
from cloudfree.costs import cpu_share as quota_cores  # Lambda's share, at most 2 threads

ROOT = Path(__file__).resolve().parents[1]
PERIOD_US = 100_000
TILE_LINE = re.compile(r"^tile \(\w+, 12 bands \+ visual\): pipeline\s+([\d.]+) s", re.M)


def cgroup_dir(name: str, root: Path = Path("/sys/fs/cgroup")) -> tuple[Path, str] | None:
    """A new cgroup ``name`` with a CPU controller: (its folder, "v2" or "v1"), or None."""
    try:
        if "cpu" in (root / "cgroup.controllers").read_text().split():
            d = root / name
            d.mkdir(exist_ok=True)
            return d, "v2"
    except OSError:
        pass
    try:
        d = root / "cpu" / name
        d.mkdir(exist_ok=True)
        if (d / "cpu.cfs_quota_us").exists():
            return d, "v1"
    except OSError:
        pass
    return None


def set_quota(group: tuple[Path, str], cores: float) -> None:
    d, version = group
    quota = int(round(cores * PERIOD_US))
    if version == "v2":
        (d / "cpu.max").write_text(f"{quota} {PERIOD_US}")
    else:
        (d / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (d / "cpu.cfs_quota_us").write_text(str(quota))


def tile_seconds(text: str) -> float | None:
    """The projected tile seconds in a ``bench_fulltile`` report."""
    m = TILE_LINE.search(text)
    return float(m.group(1)) if m else None


def gb_s_against(seconds: dict[int, float], base: int = BASE_MB) -> dict[int, float]:
    """Each setting's GB-s per tile over the base setting's (seconds x memory)."""
    return {m: s * m / (seconds[base] * base) for m, s in seconds.items()}


def run_one(memory_mb: int, group: tuple[Path, str], work: Path, log: Path) -> float:
    set_quota(group, quota_cores(memory_mb))
    procs = group[0] / "cgroup.procs"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_fulltile.py"), "--memory-mb",
           str(memory_mb), "--dir", str(work)]
    # the child moves itself into the cgroup before it starts the benchmark
    shell = f'echo $$ > "{procs}" && exec "$@"'
    with open(log, "w") as out:
        subprocess.run(["bash", "-c", shell, "bash", *cmd], stdout=out,
                       stderr=subprocess.STDOUT, check=True)
    shutil.rmtree(work, ignore_errors=True)
    seconds = tile_seconds(log.read_text())
    if seconds is None:
        raise SystemExit(f"no tile line in {log}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", default="2048,2560,3008,3538")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    sizes = [int(m) for m in args.memory.split(",")]
    if BASE_MB not in sizes:
        sizes.append(BASE_MB)
    group = cgroup_dir(f"cloudfree-bench-{os.getpid()}")
    if group is None:
        print("no writable cgroup with a CPU controller (needs root outside a restricted "
              "container): cannot emulate Lambda's CPU share", file=sys.stderr)
        return 2
    runs: dict[int, list[float]] = {m: [] for m in sizes}
    with tempfile.TemporaryDirectory(prefix="cf-memory-") as tmp:
        for r in range(args.rounds):
            for m in (sizes if r % 2 == 0 else sizes[::-1]):
                s = run_one(m, group, Path(tmp) / f"w{m}-{r}", Path(tmp) / f"log{m}-{r}.txt")
                runs[m].append(s)
                print(f"round {r + 1} {m:5d} MB under {quota_cores(m):.2f} cores: tile {s:.1f} s",
                      flush=True)
    try:
        group[0].rmdir()
    except OSError:
        pass
    mean = {m: statistics.fmean(v) for m, v in runs.items()}
    rel = gb_s_against(mean)
    for m in sizes:
        print(f"{m:5d} MB: tile {', '.join(f'{v:.1f}' for v in runs[m])} s (mean {mean[m]:.1f});"
              f" GB-s against {BASE_MB} MB {rel[m] - 1:+.0%}")
    print("plan_calibration.json memory_seconds.tile_s: "
          + json.dumps({str(m): round(mean[m], 1) for m in sorted(sizes)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
