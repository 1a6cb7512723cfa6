"""Unit tests of cloudfree.grid (tile ids, UTM grids, footprints, tile lookup)."""

from __future__ import annotations

import pytest
from affine import Affine

from cloudfree.errors import InputError
from cloudfree.grid import (
    TILE_SIZE_M,
    Tile,
    latitude_band,
    parse_bbox,
    parse_tile,
    tile_at,
    tiles_for_aoi,
    utm_zone,
)

# grid.py snaps southern-hemisphere northings on the false-northing grid (multiple of 60 of the
# northing + 10,000,000) while Sentinel-2 snaps the signed northing; reported to the lead.


@pytest.mark.parametrize(
    "text", ["33UUP", "T33UUP", "MGRS-33UUP", " 33uup ", "mgrs-33UUP", "t33uup"]
)
def test_parse_tile_variants(text):
    tile = parse_tile(text)
    assert tile == Tile(33, "U", "UP")
    assert tile.id == "33UUP"
    assert tile.grid_code == "MGRS-33UUP"
    assert str(tile) == "33UUP"


def test_parse_tile_one_digit_zone_and_passthrough():
    tile = parse_tile("4WES")
    assert tile.id == "04WES" and tile.zone == 4
    assert parse_tile(tile) is tile


@pytest.mark.parametrize(
    "text",
    [
        "",
        "33UU",
        "33UUPX",
        "0UUP",  # zone 0
        "61UUP",  # zone 61
        "33IUP",  # I is no latitude band
        "33AUP",  # A/B are polar bands, not UTM
        "33UOP",  # O is never a column letter
        "33UUW",  # W is no row letter
        "33UAP",  # column A belongs to zones 1, 4, 7 …, not 33
        "3WES",  # E belongs to zones 1, 4, 7 …, not 3 (grid.py's docstring uses it as an example)
        "MGRS33UUP",
    ],
)
def test_parse_tile_errors(text):
    with pytest.raises(InputError):
        parse_tile(text)


def test_epsg_and_hemisphere():
    assert parse_tile("33UUP").epsg == 32633
    assert parse_tile("29RKH").epsg == 32629
    assert parse_tile("24MUA").epsg == 32724
    assert parse_tile("37MGP").crs == "EPSG:32737"
    assert parse_tile("24MUA").southern and not parse_tile("31NAA").southern


@pytest.mark.parametrize(
    ("tile", "origin"),
    [
        ("33UUP", (300000, 5400000)),
        ("29RKH", (199980, 2800020)),
        ("32UNU", (499980, 5400000)),
        ("32TNT", (499980, 5300040)),
        ("28QCH", (300000, 2300040)),
    ],
)
def test_origin_north(tile, origin):
    assert parse_tile(tile).origin == origin


@pytest.mark.parametrize(
    ("tile", "origin"),
    [
        # From real Earth Search items' proj:transform (tests/realdata/test_realdata_grid.py).
        ("24MUA", (300000, 9600040)),
        ("24MXV", (600000, 9500020)),
        ("37MGP", (699960, 9400000)),
        ("20EPT", (600000, 3300040)),
    ],
)
def test_origin_south(tile, origin):
    assert parse_tile(tile).origin == origin


def test_transform_shape_bounds():
    tile = parse_tile("33UUP")
    assert tile.transform(10) == Affine(10, 0, 300000, 0, -10, 5400000)
    assert tile.transform(60) == Affine(60, 0, 300000, 0, -60, 5400000)
    assert tile.shape(10) == (10980, 10980)
    assert tile.shape(20) == (5490, 5490)
    assert tile.shape(60) == (1830, 1830)
    assert tile.bounds == (300000, 5400000 - TILE_SIZE_M, 300000 + TILE_SIZE_M, 5400000)
    assert parse_tile("29RKH").transform(20) == Affine(20, 0, 199980, 0, -20, 2800020)


def test_footprint_and_bbox():
    tile = parse_tile("32UNU")
    fp = tile.footprint()
    ring = fp["coordinates"][0]
    assert fp["type"] == "Polygon"
    assert len(ring) == 41 and ring[0] == ring[-1]
    # Earth Search's geometry of S2A_32UNU_20200302_1_L2A (a full tile) to ~1e-4 degrees.
    west, south, east, north = tile.bbox()
    assert west == pytest.approx(8.99974, abs=1e-4)
    assert east == pytest.approx(10.49326, abs=1e-4)
    assert south == pytest.approx(47.75583, abs=1e-4)
    assert north == pytest.approx(48.75300, abs=1e-4)


@pytest.mark.parametrize(
    ("lat", "band"),
    [(-80, "C"), (-0.1, "M"), (0, "N"), (47.9, "T"), (48, "U"), (72, "X"), (84, "X")],
)
def test_latitude_band(lat, band):
    assert latitude_band(lat) == band


@pytest.mark.parametrize("lat", [-80.01, 84.01])
def test_latitude_band_out_of_range(lat):
    with pytest.raises(InputError):
        latitude_band(lat)


def test_utm_zone_exceptions():
    assert utm_zone(9.5, 48.0) == 32
    assert utm_zone(-179.9, 0) == 1
    assert utm_zone(179.9, 0) == 60
    assert utm_zone(5.0, 60.0) == 32  # Norway
    assert utm_zone(5.0, 75.0) == 31  # Svalbard
    assert utm_zone(10.0, 75.0) == 33
    assert utm_zone(25.0, 75.0) == 35
    assert utm_zone(40.0, 75.0) == 37


@pytest.mark.parametrize(
    ("lon", "lat", "tile"),
    [
        (9.75, 48.25, "32UNU"),
        (12.8, 48.0, "33UUP"),
        (-11.4, 24.8, "29RKH"),
        (-16.8, 20.4, "28QCH"),
    ],
)
def test_tile_at(lon, lat, tile):
    assert tile_at(lon, lat).id == tile


def test_tiles_for_aoi_small_bbox():
    tiles = tiles_for_aoi((9.6, 48.1, 9.7, 48.2))
    assert [t.id for t in tiles] == ["32UNU"]


def test_tiles_for_aoi_sorted_and_unique():
    tiles = tiles_for_aoi((8.9, 47.7, 10.5, 48.8))
    ids = [t.id for t in tiles]
    assert ids == sorted(set(ids))
    assert {"32TMT", "32TNT", "32UMU", "32UNU"} <= set(ids)


@pytest.mark.parametrize("value", ["1,2,3", "a,b,c,d", (10, 0, 5, 1), (0, 95, 1, 96), None])
def test_parse_bbox_errors(value):
    with pytest.raises(InputError):
        parse_bbox(value)


def test_parse_bbox_ok():
    assert parse_bbox("9,47.5,10,48") == (9.0, 47.5, 10.0, 48.0)
    assert parse_bbox([9, 47.5, 10, 48]) == (9.0, 47.5, 10.0, 48.0)
