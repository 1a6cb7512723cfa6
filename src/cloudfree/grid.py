"""Sentinel-2 MGRS tile grid: tile ids, their UTM grids and footprints.

A tile is 109,800 m square in the UTM zone of its MGRS id. Its upper-left corner is the west and
north edges of the MGRS 100 km square, snapped to the 60 m grid (x down, y up), which matches the
``proj:transform`` of Earth Search items (33UUP -> (300000, 5400000), 29RKH -> (199980, 2800020)).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property

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

    def footprint(self, densify: int = 10) -> dict:
        """GeoJSON Polygon (lon/lat, WGS84) of the whole tile, edges densified."""
        from rasterio.warp import transform as warp

        minx, miny, maxx, maxy = self.bounds
        xs: list[float] = []
        ys: list[float] = []
        corners = [(minx, maxy), (maxx, maxy), (maxx, miny), (minx, miny), (minx, maxy)]
        for (x0, y0), (x1, y1) in zip(corners, corners[1:], strict=False):
            for i in range(densify):
                t = i / densify
                xs.append(x0 + (x1 - x0) * t)
                ys.append(y0 + (y1 - y0) * t)
        lons, lats = warp(self.crs, "EPSG:4326", xs, ys)
        ring = [[round(lo, 9), round(la, 9)] for lo, la in zip(lons, lats, strict=True)]
        ring.append(ring[0])
        return {"type": "Polygon", "coordinates": [ring]}

    def bbox(self) -> list[float]:
        """[minlon, minlat, maxlon, maxlat] of the footprint."""
        ring = self.footprint()["coordinates"][0]
        lons = [p[0] for p in ring]
        lats = [p[1] for p in ring]
        return [min(lons), min(lats), max(lons), max(lats)]

    def __str__(self) -> str:
        return self.id


def parse_tile(value: str | Tile) -> Tile:
    """Parse ``33UUP``, ``T33UUP``, ``MGRS-33UUP`` or ``4WES`` into a Tile."""
    if isinstance(value, Tile):
        return value
    m = _TILE_RE.match(str(value).strip().upper())
    if not m:
        raise InputError(f"not an MGRS tile id: {value!r} (expected e.g. 33UUP)")
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


def tiles_for_aoi(bbox: tuple[float, float, float, float], step_deg: float = 0.05) -> list[Tile]:
    """Tiles whose 100 km squares intersect a lon/lat bbox (sampled every ``step_deg``)."""
    minlon, minlat, maxlon, maxlat = parse_bbox(bbox)
    nx = max(2, math.ceil((maxlon - minlon) / step_deg) + 1)
    ny = max(2, math.ceil((maxlat - minlat) / step_deg) + 1)
    found: dict[str, Tile] = {}
    for i in range(nx):
        lon = minlon + (maxlon - minlon) * i / (nx - 1)
        for j in range(ny):
            lat = minlat + (maxlat - minlat) * j / (ny - 1)
            t = tile_at(lon, lat)
            found.setdefault(t.id, t)
    return [found[k] for k in sorted(found)]


def parse_bbox(value: str | tuple | list) -> tuple[float, float, float, float]:
    """Parse ``minlon,minlat,maxlon,maxlat`` (string or sequence) and check it."""
    try:
        parts = value.split(",") if isinstance(value, str) else list(value)
        minlon, minlat, maxlon, maxlat = (float(p) for p in parts)
    except (TypeError, ValueError) as err:
        raise InputError(f"bbox must be minlon,minlat,maxlon,maxlat; got {value!r}") from err
    if not (-180 <= minlon < maxlon <= 180 and -90 <= minlat < maxlat <= 90):
        raise InputError(f"bbox out of range or empty: {value!r}")
    return (minlon, minlat, maxlon, maxlat)
