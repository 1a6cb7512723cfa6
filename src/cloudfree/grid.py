"""Sentinel-2 MGRS tile grid: tile ids, their UTM grids and footprints.

A tile is 109,800 m square in the UTM zone of its MGRS id. Its upper-left corner is the west and
north edges of the MGRS 100 km square, snapped to the 60 m grid (x down, y up), which matches the
``proj:transform`` of Earth Search items (33UUP -> (300000, 5400000), 29RKH -> (199980, 2800020)).
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

    def ring(self, densify: int = 10) -> list[tuple[float, float]]:
        """The tile's outline in lon/lat, counterclockwise, closed, edges densified.

        Longitudes are *continuous* around the zone's central meridian: a tile of zone 60 that
        reaches past 180 deg E has longitudes > 180, one of zone 1 past 180 deg W < -180.
        """
        from rasterio.warp import transform as warp

        minx, miny, maxx, maxy = self.bounds
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

    def footprint(self, densify: int = 10) -> dict:
        """GeoJSON geometry (lon/lat, WGS84) of the whole tile, edges densified.

        A Polygon; a MultiPolygon split at the antimeridian for tiles that cross it, as RFC 7946
        sec. 3.1.9 asks (STAC item geometries are GeoJSON).
        """
        return lonlat_geometry(self.ring(densify))

    def bbox(self) -> list[float]:
        """[west, south, east, north] of the footprint; west > east when the tile crosses the
        antimeridian (RFC 7946 sec. 5.2)."""
        return lonlat_bbox(self.ring())

    def __str__(self) -> str:
        return self.id


def _wrap(lon: float) -> float:
    """A continuous longitude back into [-180, 180]."""
    return lon - 360 if lon > 180 else lon + 360 if lon < -180 else lon


def _clip_ring(ring: list[tuple[float, float]], lon: float, keep_west: bool) -> list:
    """Sutherland-Hodgman: the part of a closed ring west (or east) of meridian ``lon``."""
    def inside(p: tuple[float, float]) -> bool:
        return p[0] <= lon if keep_west else p[0] >= lon

    out: list[tuple[float, float]] = []
    for a, b in zip(ring, ring[1:], strict=False):
        if inside(a):
            out.append(a)
        if inside(a) != inside(b):
            t = (lon - a[0]) / (b[0] - a[0])
            out.append((lon, round(a[1] + (b[1] - a[1]) * t, 9)))
    if out and out[0] != out[-1]:
        out.append(out[0])
    return out


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
    near = _clip_ring(ring, edge, keep_west=edge > 0)
    far = _clip_ring(ring, edge, keep_west=edge < 0)
    shift = -360.0 if edge > 0 else 360.0
    far = [(round(lo + shift, 9), la) for lo, la in far]
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


def _utm_zones(lons: np.ndarray, lats: np.ndarray) -> np.ndarray:
    """``utm_zone`` for arrays of points."""
    zone = ((lons + 180) // 6).astype(np.int64) % 60 + 1
    zone[(lats >= 56) & (lats < 64) & (lons >= 3) & (lons < 12)] = 32
    svalbard = (lats >= 72) & (lats < 84)
    for lo, hi, z in ((0, 9, 31), (9, 21, 33), (21, 33, 35), (33, 42, 37)):
        zone[svalbard & (lons >= lo) & (lons < hi)] = z
    return zone


def tile_ids_at(lons: Sequence[float], lats: Sequence[float]) -> list[str]:
    """``tile_at(lon, lat).id`` for many points at once: one PROJ call per UTM zone and
    hemisphere instead of one per point. Latitudes must lie in [-80, 84]."""
    from rasterio.warp import transform as warp

    lons = np.asarray(lons, dtype=np.float64)
    lats = np.asarray(lats, dtype=np.float64)
    if lats.size and (lats.min() < -80 or lats.max() > 84):
        raise InputError("latitudes outside the MGRS UTM range [-80, 84]")
    zones = _utm_zones(lons, lats)
    bands = np.minimum(((lats + 80) // 8).astype(np.int64), len(_BANDS) - 1)
    south = lats < 0
    out = np.empty(lons.size, dtype="<U5")
    for z, s in {(int(z), bool(h)) for z, h in zip(zones, south, strict=True)}:
        sel = (zones == z) & (south == s)
        xs, ys = warp("EPSG:4326", f"EPSG:{(32700 if s else 32600) + z}",
                      lons[sel], lats[sel])
        cols = np.asarray(xs) // 100_000 - 1
        rows = (np.asarray(ys) // 100_000).astype(np.int64) % 20
        if z % 2 == 0:
            rows = (rows + 5) % 20
        letters = np.array(list(_COLUMN_SETS[z % 3]))[cols.astype(np.int64)]
        out[sel] = np.char.add(np.char.add(f"{z:02d}", np.array(list(_BANDS))[bands[sel]]),
                               np.char.add(letters, np.array(list(_ROW_LETTERS))[rows]))
    return out.tolist()


def tiles_for_aoi(bbox: tuple[float, float, float, float], step_deg: float = 0.05,
                  *, chunk: int = 2_000_000) -> list[Tile]:
    """Tiles whose own 100 km MGRS squares intersect a lon/lat bbox (sampled every
    ``step_deg``, bbox edges included; a square that meets the bbox in a sliver narrower than
    the step can be missed).

    The bbox is clipped to the MGRS UTM latitudes [-80, 84]. The sample points go through PROJ
    in batches per zone (``tile_ids_at``), ``chunk`` points at a time: a 60 x 35 deg AOI
    (840,000 points) takes about a second, where one call per point took minutes.
    """
    minlon, minlat, maxlon, maxlat = parse_bbox(bbox)
    minlat, maxlat = max(minlat, -80.0), min(maxlat, 84.0)
    if minlat > maxlat:
        raise InputError(f"bbox {bbox!r} lies outside the MGRS UTM latitudes [-80, 84]")
    nx = max(2, math.ceil((maxlon - minlon) / step_deg) + 1)
    ny = max(2, math.ceil((maxlat - minlat) / step_deg) + 1)
    lons = minlon + (maxlon - minlon) * np.arange(nx) / (nx - 1)
    lats = minlat + (maxlat - minlat) * np.arange(ny) / (ny - 1)
    found: set[str] = set()
    rows_per_chunk = max(1, chunk // ny)
    for i in range(0, nx, rows_per_chunk):
        lon_grid, lat_grid = np.meshgrid(lons[i:i + rows_per_chunk], lats, indexing="ij")
        found.update(tile_ids_at(lon_grid.ravel(), lat_grid.ravel()))
    return [parse_tile(t) for t in sorted(found)]


# --------------------------------------------------------------------------------------------
# The Sentinel-2 land tiles (package data, see scripts/derive_land_tiles.py)
# --------------------------------------------------------------------------------------------
LAND_TILES_FILE = "s2_land_tiles.txt.gz"


@functools.cache
def land_tile_ids() -> tuple[str, ...]:
    """Every Sentinel-2 tile whose footprint holds land, sorted (package data
    ``cloudfree/data/s2_land_tiles.txt.gz``; how it was derived is in its header)."""
    from importlib.resources import files

    raw = files("cloudfree").joinpath("data", LAND_TILES_FILE).read_bytes()
    lines = gzip.decompress(raw).decode("ascii").splitlines()
    return tuple(line for line in lines if line and not line.startswith("#"))


def land_tiles() -> list[Tile]:
    """``land_tile_ids`` as Tiles."""
    return [parse_tile(t) for t in land_tile_ids()]


def parse_bbox(value: str | tuple | list) -> tuple[float, float, float, float]:
    """Parse ``minlon,minlat,maxlon,maxlat`` (string or sequence) and check it."""
    try:
        parts = value.split(",") if isinstance(value, str) else list(value)
        minlon, minlat, maxlon, maxlat = (float(p) for p in parts)
    except (TypeError, ValueError) as err:
        raise InputError(f"bbox must be minlon,minlat,maxlon,maxlat (or the AOI \"world\"); "
                         f"got {value!r}") from err
    if not (-180 <= minlon < maxlon <= 180 and -90 <= minlat < maxlat <= 90):
        raise InputError(f"bbox out of range or empty: {value!r}")
    return (minlon, minlat, maxlon, maxlat)
