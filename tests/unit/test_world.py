"""World-scale planning: the land-tile list (package data), ``"aoi": "world"``, fast large AOIs."""

from __future__ import annotations

import gzip
import time
from importlib.resources import files

import numpy as np
import pytest

from cloudfree import tasks
from cloudfree.errors import InputError
from cloudfree.grid import (
    LAND_TILES_FILE,
    land_tile_ids,
    parse_tile,
    tile_at,
    tile_ids_at,
    tiles_for_aoi,
)
from cloudfree.settings import Settings

EUROPE = (-25.0, 34.0, 45.0, 72.0)


def test_land_tile_list_is_compact_sorted_and_plausible():
    raw = files("cloudfree").joinpath("data", LAND_TILES_FILE).read_bytes()
    assert len(raw) < 300_000  # shipped in the Lambda layer
    ids = land_tile_ids()
    print(f"\n{len(ids)} land tiles in {len(raw):,} bytes")
    assert 18_000 <= len(ids) <= 21_500
    assert list(ids) == sorted(set(ids))
    assert all(parse_tile(t).id == t for t in ids)
    header = gzip.decompress(raw).decode().splitlines()[0]
    assert f"{len(ids)} tiles" in header  # the header states the count it was derived with
    assert len(ids) <= tasks.MAX_TILES


@pytest.mark.parametrize("tile", [
    # tiles of the real Earth Search items in shared/realdata (all hold land)
    "32UNU", "32UMU", "32TNT", "32TMT", "29RKH", "29UNU", "28QCH", "24MUA", "24MUV", "24MVV",
    "24MWV", "24MXV", "13TDE", "37MGP",
    # land on both sides of the antimeridian: Chukotka (01WCV), Kamchatka/Chukotka (60WWD)
    "01WCV", "60WWD",
])
def test_real_and_known_land_tiles_are_listed(tile):
    assert tile in land_tile_ids()


@pytest.mark.parametrize(("lon", "lat"), [(-140.0, 0.0), (-30.0, -40.0), (75.0, -20.0),
                                          (-150.0, 40.0)])
def test_open_ocean_tiles_are_not_listed(lon, lat):
    assert tile_at(lon, lat).id not in land_tile_ids()


def test_20ept_is_an_ocean_tile():
    # S2B_20EPT_20250731_0_L2A (pystac-client cassette) is 98 % nodata, in the Drake Passage
    # (60.4 S, 59.5 W): Earth Search has the granule, but neither GLOBE nor ESA's land flag has
    # land in the tile. A world run skips it; an explicit `tiles` list can still ask for it.
    assert "20EPT" not in land_tile_ids()


def test_tile_ids_at_equals_tile_at():
    rng = np.random.default_rng(7)
    lons = rng.uniform(-180, 180, 300)
    lats = rng.uniform(-80, 84, 300)
    assert tile_ids_at(lons, lats) == [tile_at(lo, la).id for lo, la in zip(lons, lats,
                                                                             strict=True)]
    with pytest.raises(InputError):
        tile_ids_at([0.0], [85.0])


def test_large_aoi_equals_brute_force_on_a_sample():
    """The vectorised ``tiles_for_aoi`` against one ``tile_at`` per sample point (the old
    implementation), on the same 0.5 deg sample of Europe; and random points of the AOI fall in
    tiles that the 0.05 deg answer lists."""
    step = 0.5
    minlon, minlat, maxlon, maxlat = EUROPE
    nx = int(round((maxlon - minlon) / step)) + 1
    ny = int(round((maxlat - minlat) / step)) + 1
    brute = {tile_at(minlon + (maxlon - minlon) * i / (nx - 1),
                     minlat + (maxlat - minlat) * j / (ny - 1)).id
             for i in range(nx) for j in range(ny)}
    assert {t.id for t in tiles_for_aoi(EUROPE, step_deg=step)} == brute

    t0 = time.perf_counter()
    fine = {t.id for t in tiles_for_aoi(EUROPE)}
    seconds = time.perf_counter() - t0
    print(f"\nEurope {EUROPE} at 0.05 deg: {len(fine)} tiles in {seconds:.2f} s")
    assert seconds < 30
    assert brute <= fine and len(fine) > 2_500
    rng = np.random.default_rng(11)
    points = zip(rng.uniform(minlon, maxlon, 500), rng.uniform(minlat, maxlat, 500), strict=True)
    assert {tile_at(lo, la).id for lo, la in points} <= fine


def test_aoi_is_clipped_to_mgrs_latitudes():
    assert {t.id for t in tiles_for_aoi((9.6, 48.1, 9.7, 48.2))} == {"32UNU"}
    assert tiles_for_aoi((10.0, 83.0, 10.5, 90.0))  # the part below 84 N
    with pytest.raises(InputError, match="outside the MGRS"):
        tiles_for_aoi((10.0, 85.0, 11.0, 89.0))


def test_plan_world_writes_the_land_tile_list(monkeypatch):
    written = {}
    monkeypatch.setattr(tasks.storage, "write_json", lambda uri, doc: written.update({uri: doc}))
    settings = Settings("w", "d", "c")
    t0 = time.perf_counter()
    out = tasks.plan({"year": 2023, "aoi": "world", "execution": "world-2023"}, settings)
    seconds = time.perf_counter() - t0
    print(f"\nplan world: {out['count']} tiles in {seconds:.2f} s "
          f"(resolve {out['resolve_seconds']} s)")
    assert seconds < 30
    assert out["count"] == len(land_tile_ids())
    (doc,) = written.values()
    assert [row["tile"] for row in doc] == list(land_tile_ids())
    # explicit tiles add to the world; the result stays sorted and unique
    both = tasks.resolve_tiles(["20EPT", "33UUP"], "World")
    assert len(both) == len(land_tile_ids()) + 1 and both == sorted(both)


@pytest.mark.parametrize("aoi", ["europe", "worlds", [1, 2, 3], "1,2,3,4,5"])
def test_bad_aoi_is_a_clear_error(aoi):
    with pytest.raises(InputError, match="bbox|world"):
        tasks.resolve_tiles(None, aoi)
