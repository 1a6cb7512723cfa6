"""cloudfree.grid against every real Sentinel-2 item in shared/realdata.

For each item: the tile's 10 m grid (``parse_tile(grid:code).transform(10)``) must equal the 10 m
asset's ``proj:transform``, the EPSG must equal ``proj:epsg``/``proj:code``, and ``tile_at`` must
find the tile again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudfree.grid import TILE_SIZE_M, Tile, parse_tile, tile_at, utm_zone
from tests.conftest import SHARED
from tests.realdata.test_realdata_select import CASSETTES, cassette_items

pytestmark = pytest.mark.realdata

SHARED_REALDATA = SHARED / "realdata"
S2_COLLECTIONS = {"sentinel-2-l2a", "sentinel-2-c1-l2a", "s2_l2a_c1"}


def _load_all(root: Path) -> dict[str, dict]:
    """Every Sentinel-2 L2A item of the real data, keyed ``file:collection:id``."""
    items: dict[str, dict] = {}
    for path in sorted(root.rglob("*.json")):
        doc = json.loads(path.read_text())
        feats = doc["features"] if doc.get("type") == "FeatureCollection" else [doc]
        for f in feats:
            items[f"{path.name}:{f.get('collection')}:{f['id']}"] = f
    for name in CASSETTES:
        for f in cassette_items(root / name):
            items[f"{Path(name).name}:{f.get('collection')}:{f['id']}"] = f
    return {k: v for k, v in items.items() if v.get("collection") in S2_COLLECTIONS}


ITEMS = _load_all(SHARED_REALDATA) if SHARED_REALDATA.is_dir() else {}


def _tile(item: dict) -> Tile:
    return parse_tile(item["properties"]["grid:code"])


def _ten_metre_asset(item: dict) -> dict:
    for key in ("blue", "B02", "red", "B04"):
        if key in item["assets"] and "proj:transform" in item["assets"][key]:
            return item["assets"][key]
    raise AssertionError(f"{item['id']}: no 10 m asset with proj:transform")


def _params():
    for key, item in sorted(ITEMS.items()):
        yield pytest.param(item, id=key)


def test_every_real_item_is_found(realdata):
    assert realdata == SHARED_REALDATA or SHARED_REALDATA.is_dir()
    # 16 (xcube) + 6 + 6 (l2a and c1, pystac-client filter) + 1 (multi) + 3 single JSON files
    ids = {item["id"] for item in ITEMS.values()}
    assert len(ids) == 16 + 12 + 1 + 3


@pytest.mark.parametrize("item", list(_params()))
def test_transform_matches_proj_transform(realdata, item):
    asset = _ten_metre_asset(item)
    expected = [float(v) for v in asset["proj:transform"][:6]]
    assert list(_tile(item).transform(10))[:6] == expected
    assert list(asset["proj:shape"]) == list(_tile(item).shape(10))


@pytest.mark.parametrize("item", [pytest.param(v, id=k) for k, v in sorted(ITEMS.items())])
def test_epsg_matches(realdata, item):
    props = item["properties"]
    code = props.get("proj:code") or f"EPSG:{props['proj:epsg']}"
    assert _tile(item).crs == code


@pytest.mark.parametrize("item", [pytest.param(v, id=k) for k, v in sorted(ITEMS.items())])
def test_mgrs_properties_agree(realdata, item):
    props = item["properties"]
    tile = _tile(item)
    assert (tile.zone, tile.latitude_band, tile.grid_square) == (
        props["mgrs:utm_zone"], props["mgrs:latitude_band"], props["mgrs:grid_square"],
    )  # fmt: skip


@pytest.mark.parametrize("item", [pytest.param(v, id=k) for k, v in sorted(ITEMS.items())])
def test_tile_at_bbox_center_round_trips(realdata, item):
    """The centre of the item's bbox maps back to its tile, unless that centre lies outside the
    tile's own UTM zone (tiles on a zone edge reach past it: 20EPT's data centre is in zone 21)."""
    west, south, east, north = item["bbox"]
    lon, lat = (west + east) / 2, (south + north) / 2
    tile = _tile(item)
    found = tile_at(lon, lat)
    if utm_zone(lon, lat) == tile.zone:
        assert found == tile
    else:
        assert found.zone == utm_zone(lon, lat) != tile.zone


@pytest.mark.parametrize("item", [pytest.param(v, id=k) for k, v in sorted(ITEMS.items())])
def test_tile_at_square_center_round_trips(realdata, item):
    """The centre of the tile's own 100 km MGRS square always maps back to the tile."""
    from rasterio.warp import transform as warp

    tile = _tile(item)
    x0, y0 = tile.origin
    (lon,), (lat,) = warp(tile.crs, "EPSG:4326", [x0 + 50_000], [y0 - 50_000])
    assert tile_at(lon, lat) == tile


def test_20ept_reaches_into_zone_21(realdata):
    item = next(v for v in ITEMS.values() if v["id"] == "S2B_20EPT_20250731_0_L2A")
    west, south, east, north = item["bbox"]
    assert tile_at((west + east) / 2, (south + north) / 2).id == "21EUN"
    assert TILE_SIZE_M == 109_800
