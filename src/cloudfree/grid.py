"""Sentinel-2 MGRS tile grid: tile ids, their UTM grids and footprints.

A tile is 109,800 m square in the UTM zone of its MGRS id. Its upper-left corner is the west and
north edges of the MGRS 100 km square, snapped to the 60 m grid (x down, y up), which matches the
``proj:transform`` of Earth Search items (33UUP -> (300000, 5400000), 29RKH -> (199980, 2800020)).

Footprints are GeoJSON in lon/lat; tiles of zones 1 and 60 that reach across 180 deg get a
MultiPolygon cut at +-180 and a bbox with west > east (RFC 7946). Which tiles exist (ESA's tiling
grid, 56,686) and which hold land (20,638) is package data under ``cloudfree/data/``, derived by
``scripts/derive_land_tiles.py``; ``tiles_for_aoi`` filters the grid with numpy.
"""

from __future__ import annotations

import functools
import gzip
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from affine import Affine

from .errors import InputError

TILE_SIZE_M = 109_800
_COLUMN_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")  # indexed by zone % 3
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
_BANDS = "CDEFGHJKLMNPQRSTUVWX"
# Minimum northing (m) of each latitude band, in the hemisphere's UTM northing.
_BAND_MIN_NORTHING = {
    "C": 1_100_000, "D": 2_000_000, "E": 2_800_000, "F": 3_700_000, "G": 4_600_000,
    "H": 5_500_000, "J": 6_400_000, "K": 7_300_000, "L": 8_200_000, "M": 9_100_000,
    "N": 0, "P": 800_000, "Q": 1_700_000, "R": 2_600_000, "S": 3_500_000,
    "T": 4_400_000, "U": 5_300_000, "V": 6_200_000, "W": 7_000_000, "X": 7_900_000,
}  # fmt: skip
_TILE_RE = re.compile(r"^(?:MGRS-)?T?(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z])([A-HJ-NP-V])$")


@dataclass(frozen=True)
class Tile:
    """One Sentinel-2 MGRS tile and its UTM grid."""

    zone: int
    latitude_band: str
    grid_square: str

    @property
    def id(self) -> str:
        """Canonical id, e.g. ``33UUP``."""
        return f"{self.zone:02d}{self.latitude_band}{self.grid_square}"

    @property
    def grid_code(self) -> str:
        """The ``grid:code`` property of Earth Search items, e.g. ``MGRS-33UUP``."""
        return f"MGRS-{self.id}"

    @property
    def southern(self) -> bool:
        return self.latitude_band < "N"

    @property
    def epsg(self) -> int:
        return (32700 if self.southern else 32600) + self.zone

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @cached_property
    def origin(self) -> tuple[float, float]:
        """Upper-left corner (x, y) in the tile's UTM CRS."""
        col = _COLUMN_SETS[self.zone % 3].index(self.grid_square[0])
        west = (col + 1) * 100_000
        row = _ROW_LETTERS.index(self.grid_square[1])
        if self.zone % 2 == 0:
            row = (row - 5) % 20
        south = row * 100_000
        while south < _BAND_MIN_NORTHING[self.latitude_band]:
            south += 2_000_000
        north = south + 100_000
        # Sentinel-2 snaps to the 60 m grid on the true northing (from the equator), so the
        # southern hemisphere's 10,000,000 m false northing is taken off before rounding.
        false_northing = 10_000_000 if self.southern else 0
        y = math.ceil((north - false_northing) / 60) * 60 + false_northing
        return (math.floor(west / 60) * 60, y)

    def transform(self, resolution: int) -> Affine:
        """Affine transform of the tile's grid at ``resolution`` metres."""
        x, y = self.origin
        return Affine(resolution, 0, x, 0, -resolution, y)

    def shape(self, resolution: int) -> tuple[int, int]:
        """(rows, cols) of the tile's grid at ``resolution`` metres."""
        n = TILE_SIZE_M // resolution
        return (n, n)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in UTM metres."""
        x, y = self.origin
        return (x, y - TILE_SIZE_M, x + TILE_SIZE_M, y)

    @property
    def central_meridian(self) -> float:
        """Longitude of the UTM zone's central meridian."""
        return -183.0 + 6 * self.zone

    def ring(self, densify: int = 10, bounds: Sequence[float] | None = None
             ) -> list[tuple[float, float]]:
        """The tile's outline in lon/lat, counterclockwise, closed, edges densified.

        Longitudes are *continuous* around the zone's central meridian: a tile of zone 60 that
        reaches past 180 deg E has longitudes > 180, one of zone 1 past 180 deg W < -180.
        ``bounds`` (the tile's CRS): the outline of that rectangle of the tile instead.
        """
        from rasterio.warp import transform as warp

        minx, miny, maxx, maxy = self.bounds if bounds is None else bounds
        xs: list[float] = []
        ys: list[float] = []
        # counterclockwise (RFC 7946 sec. 3.1.6): NW -> SW -> SE -> NE
        corners = [(minx, maxy), (minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy)]
        for (x0, y0), (x1, y1) in zip(corners, corners[1:], strict=False):
            for i in range(densify):
                t = i / densify
                xs.append(x0 + (x1 - x0) * t)
                ys.append(y0 + (y1 - y0) * t)
        lons, lats = warp(self.crs, "EPSG:4326", xs, ys)
        cm = self.central_meridian
        ring = [(round(cm + (lo - cm + 180) % 360 - 180, 9), round(la, 9))
                for lo, la in zip(lons, lats, strict=True)]
        ring.append(ring[0])
        return ring

    @property
    def crosses_antimeridian(self) -> bool:
        """Whether the tile's footprint reaches across +-180 deg longitude (zones 1 and 60)."""
        lons = [p[0] for p in self.ring(densify=1)]
        return min(lons) < 180 < max(lons) or min(lons) < -180 < max(lons)

    def footprint(self, densify: int = 10, bounds: Sequence[float] | None = None) -> dict:
        """GeoJSON geometry (lon/lat, WGS84) of the whole tile (or of ``bounds``, a rectangle
        in the tile's CRS), edges densified.

        A Polygon; a MultiPolygon split at the antimeridian for tiles that cross it, as RFC 7946
        sec. 3.1.9 asks (STAC item geometries are GeoJSON).
        """
        return lonlat_geometry(self.ring(densify, bounds))

    def bbox(self, bounds: Sequence[float] | None = None) -> list[float]:
        """[west, south, east, north] of the footprint (of ``bounds``); west > east when it
        crosses the antimeridian (RFC 7946 sec. 5.2)."""
        return lonlat_bbox(self.ring(bounds=bounds))

    def __str__(self) -> str:
        return self.id


def _wrap(lon: float) -> float:
    """A continuous longitude back into [-180, 180]."""
    return lon - 360 if lon > 180 else lon + 360 if lon < -180 else lon


def lonlat_geometry(ring: list[tuple[float, float]]) -> dict:
    """GeoJSON geometry of a closed lon/lat ring with continuous longitudes.

    Within [-180, 180]: a Polygon. Across the antimeridian: a MultiPolygon of the part up to
    180 and the part beyond it shifted by 360 deg, both cut exactly at +-180 (RFC 7946 sec. 3.1.9:
    "any geometry that crosses the antimeridian SHOULD be represented by cutting it in two").
    """
    lons = [p[0] for p in ring]
    if min(lons) >= 180 or max(lons) <= -180:  # wholly beyond the antimeridian: shift it
        ring = [(round(_wrap(lo), 9), la) for lo, la in ring]
        lons = [p[0] for p in ring]
    if -180 <= min(lons) and max(lons) <= 180:
        return {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}
    edge = 180.0 if max(lons) > 180 else -180.0
    west_part = _clip_to_box(ring, (-math.inf, -90.0, edge, 90.0))
    east_part = _clip_to_box(ring, (edge, -90.0, math.inf, 90.0))
    near, far = (west_part, east_part) if edge > 0 else (east_part, west_part)
    shift = -360.0 if edge > 0 else 360.0
    near = [(lo, round(la, 9)) for lo, la in near]
    far = [(round(lo + shift, 9), round(la, 9)) for lo, la in far]
    parts = [part for part in (near, far) if len(part) >= 4]
    return {"type": "MultiPolygon",
            "coordinates": [[[list(p) for p in part]] for part in parts]}


def lonlat_bbox(ring: list[tuple[float, float]]) -> list[float]:
    """[west, south, east, north] of a ring with continuous longitudes (RFC 7946 sec. 5.2:
    west > east for a box that crosses the antimeridian)."""
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    return [_wrap(min(lons)), min(lats), _wrap(max(lons)), max(lats)]


def union_bbox(bboxes: Iterable[Sequence[float]]) -> list[float]:
    """The lon/lat bbox of several bboxes; the whole longitude range once one of them crosses
    the antimeridian (west > east), since a min/max over such boxes would drop it."""
    boxes = [list(b) for b in bboxes]
    if not boxes:
        return [-180.0, -90.0, 180.0, 90.0]
    south = min(b[1] for b in boxes)
    north = max(b[3] for b in boxes)
    if any(b[0] > b[2] for b in boxes):
        return [-180.0, south, 180.0, north]
    return [min(b[0] for b in boxes), south, max(b[2] for b in boxes), north]


def parse_tile(value: str | Tile) -> Tile:
    """Parse ``33UUP``, ``T33UUP``, ``MGRS-33UUP`` or ``4WES`` into a Tile."""
    if isinstance(value, Tile):
        return value
    m = _TILE_RE.match(str(value).strip().upper())
    if not m:
        raise InputError(f"not an MGRS tile id: {value!r} (expected e.g. 33UUP: UTM zone, "
                         "latitude band, 100 km square; for the tiles of a place pass --aoi "
                         "minlon,minlat,maxlon,maxlat instead)")
    zone = int(m.group(1))
    if not 1 <= zone <= 60:
        raise InputError(f"UTM zone out of range in {value!r}")
    col_letter = m.group(3)
    if col_letter not in _COLUMN_SETS[zone % 3]:
        raise InputError(f"column letter {col_letter} is not used in zone {zone}: {value!r}")
    return Tile(zone, m.group(2), m.group(3) + m.group(4))


def latitude_band(lat: float) -> str:
    """MGRS latitude band letter for a latitude in [-80, 84]."""
    if not -80 <= lat <= 84:
        raise InputError(f"latitude {lat} outside the MGRS UTM range [-80, 84]")
    return _BANDS[min(int((lat + 80) // 8), len(_BANDS) - 1)]


def utm_zone(lon: float, lat: float) -> int:
    """UTM zone of a point, with the Norway and Svalbard exceptions."""
    zone = int((lon + 180) // 6) % 60 + 1
    if 56 <= lat < 64 and 3 <= lon < 12:
        return 32
    if 72 <= lat < 84 and lon >= 0:
        for lo, hi, z in ((0, 9, 31), (9, 21, 33), (21, 33, 35), (33, 42, 37)):
            if lo <= lon < hi:
                return z
    return zone


def tile_at(lon: float, lat: float) -> Tile:
    """The tile whose own 100 km MGRS square contains the point."""
    from rasterio.warp import transform as warp

    zone = utm_zone(lon, lat)
    band = latitude_band(lat)
    epsg = (32700 if lat < 0 else 32600) + zone
    (x,), (y,) = warp("EPSG:4326", f"EPSG:{epsg}", [lon], [lat])
    col = _COLUMN_SETS[zone % 3][int(x // 100_000) - 1]
    row = int(y // 100_000) % 20
    if zone % 2 == 0:
        row = (row + 5) % 20
    return Tile(zone, band, col + _ROW_LETTERS[row])


# --------------------------------------------------------------------------------------------
# ESA's tiling grid and its land tiles (package data, see scripts/derive_land_tiles.py)
# --------------------------------------------------------------------------------------------
TILES_FILE = "s2_tiles.txt.gz"
LAND_TILES_FILE = "s2_land_tiles.txt.gz"


def _read_ids(name: str) -> tuple[str, ...]:
    from importlib.resources import files

    raw = files("cloudfree").joinpath("data", name).read_bytes()
    lines = gzip.decompress(raw).decode("ascii").splitlines()
    return tuple(line for line in lines if line and not line.startswith("#"))


@functools.cache
def tile_ids() -> tuple[str, ...]:
    """Every tile of ESA's Sentinel-2 tiling grid (56,686), sorted. MGRS squares that the grid
    leaves out (slivers at zone edges, e.g. 31TBH, and the other band letter of a square that
    straddles a latitude band, e.g. 32TMU beside ESA's 32UMU) have no Sentinel-2 products."""
    return _read_ids(TILES_FILE)


@functools.cache
def land_tile_ids() -> tuple[str, ...]:
    """Every Sentinel-2 tile whose footprint holds land, sorted (package data
    ``cloudfree/data/s2_land_tiles.txt.gz``; how it was derived is in its header)."""
    return _read_ids(LAND_TILES_FILE)


def land_tiles() -> list[Tile]:
    """``land_tile_ids`` as Tiles."""
    return [parse_tile(t) for t in land_tile_ids()]


#: Margin (deg) around the corner-and-midpoint lon/lat bbox of a tile: the footprint's curved
#: edges bulge out by far less (checked against the 10x densified ring in the tests).
_BBOX_MARGIN = 0.05


def _origins(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(epsg, x, y, central meridian) of many tile ids at once: ``Tile.origin`` in numpy."""
    chars = np.array([list(t) for t in ids])
    zone = (chars[:, 0].astype(np.int64) * 10 + chars[:, 1].astype(np.int64))
    band, col_letter, row_letter = chars[:, 2], chars[:, 3], chars[:, 4]
    col = np.full(len(ids), -1)
    for r in range(3):
        sel = zone % 3 == r
        col[sel] = np.searchsorted(np.array(sorted(_COLUMN_SETS[r])), col_letter[sel])
        # the column sets are in alphabetical order already (S..Z, A..H, J..R)
    row = np.searchsorted(np.array(list(_ROW_LETTERS)), row_letter)
    row = np.where(zone % 2 == 0, (row - 5) % 20, row)
    south = row * 100_000
    band_min = np.array([_BAND_MIN_NORTHING[b] for b in band])
    south += np.maximum(0, -(-(band_min - south) // 2_000_000)) * 2_000_000
    southern = band < "N"
    false_northing = np.where(southern, 10_000_000, 0)
    y = np.ceil((south + 100_000 - false_northing) / 60) * 60 + false_northing
    x = np.floor((col + 1) * 100_000 / 60) * 60
    return np.where(southern, 32700, 32600) + zone, x, y, -183.0 + 6 * zone


@functools.cache
def _grid_bboxes() -> tuple[tuple[str, ...], np.ndarray]:
    """(ids, [n, 4] west/south/east/north) of every grid tile, longitudes continuous around
    the tile's central meridian (so a crossing tile has east > 180 or west < -180).

    One PROJ call per UTM zone and hemisphere over 8 boundary points per tile, once per
    process (about 0.5 s for the 56,686 tiles on an idle core).
    """
    from rasterio.warp import transform as warp

    ids = tile_ids()
    epsg, x0, y0, cms = _origins(ids)
    fx = np.array([0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0])
    fy = np.array([0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.5])
    xs = x0[:, None] + TILE_SIZE_M * fx
    ys = y0[:, None] - TILE_SIZE_M * fy
    out = np.empty((len(ids), 4))
    for code in np.unique(epsg):
        sel = epsg == code
        lons, lats = (np.asarray(v).reshape(-1, 8) for v in
                      warp(f"EPSG:{code}", "EPSG:4326", xs[sel].ravel(), ys[sel].ravel()))
        cm = cms[sel][:, None]
        lons = cm + (lons - cm + 180) % 360 - 180
        out[sel] = np.stack([lons.min(1) - _BBOX_MARGIN, lats.min(1) - _BBOX_MARGIN,
                             lons.max(1) + _BBOX_MARGIN, lats.max(1) + _BBOX_MARGIN], axis=1)
    return ids, out


def _clip_to_box(ring: list[tuple[float, float]], box: Sequence[float]) -> list:
    """Sutherland-Hodgman: the part of a closed ring inside an axis-aligned lon/lat box."""
    west, south, east, north = box
    out = list(ring)
    for axis, limit, keep_below in ((0, west, False), (0, east, True), (1, south, False),
                                    (1, north, True)):
        if not out:
            break
        pts, out = out, []
        if pts[0] != pts[-1]:
            pts.append(pts[0])
        for a, b in zip(pts, pts[1:], strict=False):
            a_in = a[axis] <= limit if keep_below else a[axis] >= limit
            b_in = b[axis] <= limit if keep_below else b[axis] >= limit
            if a_in:
                out.append(a)
            if a_in != b_in:  # the crossing point, exactly on the limit
                t = (limit - a[axis]) / (b[axis] - a[axis])
                out.append(tuple(limit if k == axis else a[k] + (b[k] - a[k]) * t
                                 for k in (0, 1)))
    if out and out[0] != out[-1]:
        out.append(out[0])
    return out


def footprint_meets_box(tile: Tile, box: Sequence[float]) -> bool:
    """Whether the tile's footprint (densified ring) and a lon/lat box share any area or edge
    (also across the antimeridian)."""
    ring = tile.ring()
    return any(_clip_to_box(ring, (box[0] + k, box[1], box[2] + k, box[3]))
               for k in (-360.0, 0.0, 360.0))


def tiles_for_aoi(bbox: tuple[float, float, float, float]) -> list[Tile]:
    """The tiles of ESA's grid whose footprint meets a lon/lat bbox, sorted (as a STAC
    ``intersects`` search over the tiles would find them; neighbours overlap by 9.8 km, so an
    AOI on an overlap gets both).

    A numpy test of the precomputed tile bboxes picks the candidates (``_grid_bboxes``); only
    those get the exact footprint test. Europe (70 x 38 deg, ~2,500 tiles) takes about a
    second; the old sampler made one PROJ call per 0.05 deg point (23 million for the world).
    """
    minlon, minlat, maxlon, maxlat = parse_bbox(bbox)
    ids, boxes = _grid_bboxes()
    lat_ok = (boxes[:, 1] <= maxlat) & (boxes[:, 3] >= minlat)
    lat_in = (boxes[:, 1] >= minlat) & (boxes[:, 3] <= maxlat)
    meets = np.zeros(len(ids), dtype=bool)
    inside = np.zeros(len(ids), dtype=bool)
    for k in (-360.0, 0.0, 360.0):
        meets |= (boxes[:, 0] <= maxlon + k) & (boxes[:, 2] >= minlon + k)
        inside |= (boxes[:, 0] >= minlon + k) & (boxes[:, 2] <= maxlon + k)
    meets &= lat_ok
    inside &= lat_in  # the padded bbox inside the AOI: the footprint is too, no exact test
    box = (minlon, minlat, maxlon, maxlat)
    found = [ids[i] for i in np.flatnonzero(inside)]
    found += [ids[i] for i in np.flatnonzero(meets & ~inside)
              if footprint_meets_box(parse_tile(ids[i]), box)]
    return [parse_tile(t) for t in sorted(found)]


def parse_bbox(value: str | tuple | list) -> tuple[float, float, float, float]:
    """Parse ``minlon,minlat,maxlon,maxlat`` (string or sequence) and check it."""
    try:
        parts = value.split(",") if isinstance(value, str) else list(value)
        minlon, minlat, maxlon, maxlat = (float(p) for p in parts)
    except (TypeError, ValueError) as err:
        raise InputError(f"bbox must be minlon,minlat,maxlon,maxlat (or the AOI \"world\"); "
                         f"got {value!r}") from err
    if not (-180 <= minlon <= 180 and -180 <= maxlon <= 180):
        raise InputError(f"bbox longitudes must be within -180..180, got {value!r}")
    if not (-90 <= minlat <= 90 and -90 <= maxlat <= 90):
        raise InputError(f"bbox latitudes must be within -90..90, got {value!r}")
    if not (minlon < maxlon and minlat < maxlat):
        raise InputError(f"bbox must be minlon,minlat,maxlon,maxlat with min < max, got "
                         f"{value!r}")
    return (minlon, minlat, maxlon, maxlat)
