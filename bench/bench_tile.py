"""Benchmark window reads (aligned vs straddling) and one full-tile web COG write.

    .venv/bin/python bench/bench_tile.py --scenes 8 --size 4096 [--cog]

Scenes are synthetic DEFLATE GeoTIFFs with 1024 px blocks (like Earth Search) in a temp dir.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from cloudfree.assemble import write_web_cog
from cloudfree.bands import get_band
from cloudfree.grid import parse_tile
from cloudfree.windows import Window, read_stack

TILE = parse_tile("33UUP")


def make_scene(path: Path, size: int, seed: int) -> str:
    """A smooth field plus noise (compresses like real reflectance, roughly 2:1)."""
    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 1, "dtype": "uint16",
               "crs": TILE.crs, "transform": TILE.transform(10), "nodata": 0, "tiled": True,
               "blockxsize": 1024, "blockysize": 1024, "compress": "DEFLATE"}
    x = np.linspace(0, 8, size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, size, 1024):
            h = min(1024, size - r0)
            field = 2000 + 800 * np.sin(x[r0:r0 + h, None]) * np.cos(x[None, :])
            noise = rng.integers(0, 64, (h, size))
            dst.write((field + noise).astype(np.uint16)[None], window=((r0, r0 + h), (0, size)))
    return str(path)


def bench_reads(hrefs: list[str], side: int, threads: int) -> None:
    for name, window in (("aligned", Window(0, 0, side, side)),
                         ("straddling", Window(512, 512, side, side))):
        t = time.perf_counter()
        stack = read_stack(hrefs, window, threads=threads)
        dt = time.perf_counter() - t
        mb = stack.nbytes / 2**20
        print(f"read {name:10s} {len(hrefs)} x {side}^2: {dt:.2f} s, {mb / dt:.0f} MB/s "
              f"({stack.size / dt / 1e6:.0f} Mpx/s), threads={threads}")


def bench_cog(tmp: Path) -> None:
    band = get_band("blue")
    src = make_scene(tmp / "full.tif", band.size, 0)
    t = time.perf_counter()
    info = write_web_cog(src, str(tmp / "cog.tif"))
    print(f"web COG {band.size}^2 -> {info.shape} zoom {info.zoom}: "
          f"{time.perf_counter() - t:.1f} s, {info.size / 2**20:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cog", action="store_true", help="also time a full-tile web COG")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        hrefs = [make_scene(tmp / f"s{i}.tif", args.size, i) for i in range(args.scenes)]
        bench_reads(hrefs, min(2048, args.size - 1024), args.threads)
        if args.cog:
            bench_cog(tmp)


if __name__ == "__main__":
    main()
