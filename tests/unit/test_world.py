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
    _grid_bboxes,
    _origins,
    land_tile_ids,
    parse_tile,
    tile_at,
    tile_ids,
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
    "24MWV", "24MXV", "13TDE",
    # land on both sides of the antimeridian: Chukotka (01WCV), Kamchatka/Chukotka (60WWD)
    "01WCV", "60WWD",
])
def test_real_and_known_land_tiles_are_listed(tile):
    assert tile in land_tile_ids()


@pytest.mark.parametrize(("lon", "lat"), [(-140.0, 0.0), (-30.0, -40.0), (75.0, -20.0),
                                          (-150.0, 40.0)])
def test_open_ocean_tiles_are_not_listed(lon, lat):
    assert tile_at(lon, lat).id not in land_tile_ids()


@pytest.mark.parametrize("tile", ["20EPT", "37MGP"])
def test_real_ocean_tiles_are_not_listed(tile):
    # Earth Search has granules of these two tiles, but they hold no land: S2B_20EPT_20250731
    # (pystac-client cassette) is 98 % nodata in the Drake Passage (60.4 S, 59.5 W);
    # S2B_T37MGP_20240710 (odc-tools) lies in the Indian Ocean off Tanzania (5.4-6.4 S,
    # 40.8-41.8 E; s2:vegetation_percentage 0.00001, water 16.5, the rest cloud). Neither GLOBE
    # nor ESA's land flag has land there. A world run skips them; a `tiles` list can name them.
    assert tile in tile_ids() and tile not in land_tile_ids()


def test_grid_tiles_and_their_padded_bboxes():
    ids, boxes = _grid_bboxes()
    assert len(ids) == len(tile_ids()) == 56_686 and set(land_tile_ids()) <= set(ids)
    assert "32UMU" in ids and "32TMU" not in ids  # ESA names a straddling square once
    rng = np.random.default_rng(3)
    for i in rng.choice(len(ids), 400, replace=False):  # the densified ring fits the bbox
        tile = parse_tile(ids[i])
        ring = np.array(tile.ring(densify=20))
        west, south, east, north = boxes[i]
        assert west <= ring[:, 0].min() and ring[:, 0].max() <= east, ids[i]
        assert south <= ring[:, 1].min() and ring[:, 1].max() <= north, ids[i]
    epsg, x, y, _ = _origins(ids)
    for i in rng.choice(len(ids), 2000, replace=False):
        tile = parse_tile(ids[i])
        assert (tile.epsg, tile.origin) == (epsg[i], (x[i], y[i])), ids[i]


@pytest.mark.parametrize("aoi", [EUROPE, (170.0, 60.0, 180.0, 75.0), (-180.0, -20.0, -170.0, 0.0)])
def test_large_aoi_equals_brute_force_on_a_sample(aoi):
    """The numpy-filtered ``tiles_for_aoi`` against shapely's footprint/box intersection for
    a random sample of 1,500 grid tiles (all of them the brute force would test)."""
    shapely_geometry = pytest.importorskip("shapely.geometry")
    t0 = time.perf_counter()
    fast = {t.id for t in tiles_for_aoi(aoi)}
    seconds = time.perf_counter() - t0
    print(f"\nAOI {aoi}: {len(fast)} tiles in {seconds:.2f} s")
    assert seconds < 30
    box = shapely_geometry.box(*aoi)
    ids = tile_ids()
    rng = np.random.default_rng(5)
    near = [t for t in ids if t in fast] + list(rng.choice(ids, 1500, replace=False))
    sample = sorted(set(rng.choice(near, min(1500, len(near)), replace=False)) | set(
        rng.choice(ids, 1500, replace=False)))
    for tid in sample:
        truth = box.intersects(shapely_geometry.shape(parse_tile(tid).footprint()))
        assert (tid in fast) == truth, tid
    assert all(t in ids for t in fast)


def test_europe_tile_count():
    tiles = tiles_for_aoi(EUROPE)
    assert 2_000 < len(tiles) < 3_000
    assert {"32UNU", "33UUP", "29UNU"} <= {t.id for t in tiles}


def test_aoi_beyond_the_grid_has_no_tiles():
    assert {t.id for t in tiles_for_aoi((9.6, 48.1, 9.7, 48.2))} == {"32UNU"}
    assert tiles_for_aoi((10.0, 83.0, 10.5, 90.0))  # the tiles up to ~84.4 N
    assert tiles_for_aoi((10.0, 86.0, 11.0, 89.0)) == []
    with pytest.raises(InputError, match="no tiles"):
        tasks.resolve_tiles(None, (10.0, 86.0, 11.0, 89.0))


def test_plan_world_writes_the_land_tile_list(monkeypatch):
    written = {}
    monkeypatch.setattr(tasks.storage, "write_json", lambda uri, doc: written.update({uri: doc}))
    settings = Settings("w", "d", "c")
    t0 = time.perf_counter()
    out = tasks.plan({"input": {"year": 2023, "aoi": "world"}, "execution": "world-2023"},
                     settings)
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


def test_world_in_the_execution_input_and_the_plan_event():
    from cloudfree.events import PlanEvent
    from cloudfree.pipeline.run import execution_input

    payload = execution_input(2023, [], "world")
    assert payload["aoi"] == "world" and payload["tiles"] == []
    assert PlanEvent(input=payload, execution="x").input["aoi"] == "world"
    assert execution_input(2023, [], (9.6, 48.1, 9.7, 48.2))["aoi"] == [9.6, 48.1, 9.7, 48.2]
    for bad in ("europe", [1.0, 2.0, 3.0]):  # Plan gets the whole input and checks the AOI
        with pytest.raises(InputError, match="bbox"):
            tasks.check_request({"year": 2023, "aoi": bad})
