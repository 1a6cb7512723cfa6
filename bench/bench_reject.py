"""Benchmark the outlier decision (``cloudfree.outliers.reject``) on one decide-step square.

    .venv/bin/python bench/bench_reject.py [--size 768] [--scenes 16] [--profile]

The decide step (``outliers.decide_squares``) runs ``reject`` on the tile's 5490² px (20 m) in
squares of ``outliers.CACHE_CHUNK`` (1536 px: 16 per tile, the edge ones clipped), each a (16,
1536, 1536) uint16 stack of blue, red and nir08 with the scenes' SCL-derived ``use``;
``decide_references`` passes ``threads=min(threads, 2)``. The rule is per pixel, so its time
scales with the area: here one square of ``--size`` px (768 by default, a quarter of a decide
square, to keep the run short) is synthesized (``tests/frozen_reject.realistic_stack``: clear
surfaces with a seasonal NIR cycle, ~33 % of observations SCL-masked, missed clouds, shadows,
haze, white roofs and bright sand), and ``reject`` is timed against the frozen copy of the
implementation it replaced (``tests/frozen_reject.frozen_reject``), best of 3 each, in the same
run, on 1 and 2 threads; the two must decide the same bits. The load average is printed: the
machine is shared. ``--profile`` adds a cProfile of each. About 15 s on 2 vCPU.

``--fastscenes``: the stack as ``bench/bench_fulltile.py`` reads it instead (blocks of
``bench/fastscenes.py``: each band of each scene an independent smooth field, so blue and red
are unrelated and most observations look cloudy or hazy; SCL blobs): not realistic, but what the
full-tile figures were measured on. About 30 s.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' frozen copy
sys.path.insert(0, str(Path(__file__).resolve().parent))  # fastscenes

from tests.frozen_reject import frozen_reject, realistic_stack  # noqa: E402

from cloudfree.median import compiled_available  # noqa: E402
from cloudfree.outliers import reject  # noqa: E402

TILE_PX_20M = 5490  # the tile's side on the 20 m grid: "per tile" scales a square by area


def fastscenes_stack(shape: tuple[int, int, int], seed: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, None]:
    """(blue, red, nir, use, order) from bench/fastscenes.py's blocks (see ``--fastscenes``):
    each plane a block of its reflectance pool; ``use`` where an SCL block (512 px, repeated
    2 x 2 like the tile's) is vegetation or bare soil (4, 5)."""
    from fastscenes import _reflectance_block, _scl_block

    rng = np.random.default_rng(seed)
    s, h, w = shape
    pool = [_reflectance_block(rng, 1024, 1, "uint16") for _ in range(8)]
    scl = [np.repeat(np.repeat(_scl_block(rng, 512), 2, axis=0), 2, axis=1) for _ in range(8)]

    def planes(source: list[np.ndarray]) -> np.ndarray:
        return np.stack([np.resize(source[rng.integers(len(source))], (h, w)) for _ in range(s)])

    blue, red, nir, classes = planes(pool), planes(pool), planes(pool), planes(scl)
    return blue, red, nir, (classes == 4) | (classes == 5), None


def best_of(fn, repeats: int = 3) -> float:
    """Fastest of ``repeats`` wall-clock runs of ``fn()``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def profile(label: str, fn) -> None:
    """The ten most expensive functions of one run of ``fn()`` (own time)."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    print(f"--- cProfile, {label} (own time) ---")
    pstats.Stats(prof).sort_stats("tottime").print_stats(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=768, help="square side (px)")
    ap.add_argument("--scenes", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="cProfile both implementations")
    ap.add_argument("--fastscenes", action="store_true",
                    help="bench_fulltile's synthetic blocks instead of a realistic stack")
    args = ap.parse_args()
    shape = (args.scenes, args.size, args.size)
    make = fastscenes_stack if args.fastscenes else realistic_stack
    blue, red, nir, use, order = make(shape, seed=args.seed)
    obs = use.size
    print(f"stack {shape} uint16 x 3, {1 - use.mean():.0%} of observations SCL-masked, "
          f"compiled median kernel: {compiled_available()}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    before = frozen_reject(blue, red, nir, use, order=order, threads=2)
    print(f"rejected: {before.sum() / use.sum():.1%} of the used observations")
    rows = []
    for threads in (1, 2):
        after = reject(blue, red, nir, use, order=order, threads=threads)
        if not np.array_equal(after, before):
            raise SystemExit(f"reject (threads={threads}) differs from the frozen copy "
                             f"at {int((after != before).sum())} observations")
        t_old = best_of(lambda t=threads: frozen_reject(blue, red, nir, use, order=order,
                                                        threads=t))
        t_new = best_of(lambda t=threads: reject(blue, red, nir, use, order=order, threads=t))
        rows.append((threads, t_old, t_new))
    per_tile = TILE_PX_20M ** 2 / args.size ** 2
    print(f"threads  before (s)  after (s)  speed-up  after ns/obs  per tile ({per_tile:.1f} x "
          "the square's area)")
    for threads, t_old, t_new in rows:
        print(f"{threads:7d}  {t_old:10.3f}  {t_new:9.3f}  {t_old / t_new:7.2f}x  "
              f"{t_new / obs * 1e9:12.1f}  {t_old * per_tile:5.0f} s -> "
              f"{t_new * per_tile:4.0f} s")
    print(f"identical bits: yes; load average now "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.profile:
        profile("before", lambda: frozen_reject(blue, red, nir, use, order=order, threads=2))
        profile("after", lambda: reject(blue, red, nir, use, order=order, threads=2))


if __name__ == "__main__":
    main()
