"""Stitch a band's window results and write the web-optimized COG (EPSG:3857).

``stitch`` puts the window GeoTIFFs back together in the tile's UTM grid (a tiled GeoTIFF
written window by window, memory-bounded; or a VRT over the local copies);
``write_web_cog`` reprojects to Web Mercator (GDAL's warper onto rio-cogeo's web-optimized grid),
validates and uploads.

Zoom (resolution) policy: ``zoom_level="native"`` (default) picks the coarsest WebMercatorQuad
zoom whose *ground* pixel size (mercator cell size x cos(latitude)) is no larger than the band's
resolution at the tile's equator-most edge — nothing is coarsened. That is zoom 14/13/12 for
10/20/60 m near the equator, 14/13/11 at 48°N (the 10 m band: about 16896 x 17152 px), 13/12/11 at
70°N. rio-cogeo's own ``"auto"`` coarsens a 10 m tile to zoom 13 at mid latitudes (~13 m ground);
pass ``zoom_level="auto"`` or an int to choose differently. ``CogInfo`` reports the choice.

Resampling: reflectance and visual use **bilinear** by default. Native zoom upsamples (by
1/cos(lat) .. 2x per axis) and rotates the grid by the UTM convergence angle; nearest then
duplicates source pixels in irregular stair-step patterns, while bilinear gives a smooth field
whose values stay within their neighbours' range (GDAL's warper ignores nodata neighbours, so the
swath edge does not darken). ``resampling="nearest"`` keeps the exact median DNs where that matters.
The count band is always nearest (an integer count must not be interpolated). Overviews: average
for reflectance/visual, nearest for count.

Determinism: GDAL writes no TIFF DateTime unless asked, the VRT/GeoTIFF intermediates carry no
paths into the output, and compression threads write blocks in order: the same inputs give the
same bytes (``tests/unit/test_assemble.py`` checks it).
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from . import storage
from .bands import Band, get_band
from .errors import IncompleteError, InputError, ValidationError
from .grid import Tile, parse_tile
from .windows import Window

#: Mercator cell size at zoom 0 of WebMercatorQuad with 256 px tiles (m).
ZOOM0_CELL = 2 * math.pi * 6378137 / 256
_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "float32": "Float32"}


@dataclass
class CogInfo:
    """What ``write_web_cog`` wrote (the STAC asset needs most of it)."""

    href: str
    size: int  # bytes
    sha256: str
    shape: tuple[int, int]  # (rows, cols)
    transform: tuple[float, ...]  # affine a, b, c, d, e, f
    crs: str
    dtype: str
    zoom: int
    resolution_m: float  # mercator cell size at ``zoom``
    ground_resolution_m: float  # cell size x cos(latitude) at the tile's equator-most edge
    bands: int
    nodata: float | int | None = 0
    related: dict[str, CogInfo] = field(default_factory=dict)  # e.g. {"count": CogInfo}
    etag: str | None = None  # of the uploaded object (s3): publish copies exactly these bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``related`` nested)."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["transform"] = list(self.transform)
        out["related"] = {k: v.to_dict() for k, v in self.related.items()}
        return out


# --- stitching -------------------------------------------------------------------------------
def _local_copies(uris: Sequence[str], workdir: Path) -> list[Path]:
    """Local paths of the window files (s3 objects downloaded into ``workdir``)."""
    missing = [u for u in uris if not storage.exists(u)]
    if missing:
        raise IncompleteError(f"{len(missing)} of {len(uris)} window results missing: "
                              + ", ".join(missing))
    out = []
    for i, uri in enumerate(uris):
        if storage.is_s3(uri):
            path = workdir / f"w{i:04d}_{Path(uri).name}"
            storage.download_file(uri, path)
            out.append(path)
        else:
            out.append(Path(uri).resolve())
    return out


@dataclass(frozen=True)
class _Piece:
    path: Path
    window: Window
    count: int
    dtype: str


def _locate(path: Path, tile: Tile, band: Band, size: int) -> _Piece:
    """Where a window GeoTIFF sits in the tile grid (checked CRS, resolution, alignment)."""
    import rasterio

    grid = tile.transform(band.resolution)
    with rasterio.open(path) as src:
        t = src.transform
        if src.crs is None or src.crs.to_epsg() != tile.epsg:
            raise InputError(f"{path}: CRS {src.crs} is not the tile's {tile.crs}")
        if not (math.isclose(t.a, grid.a) and math.isclose(t.e, grid.e)):
            raise InputError(f"{path}: resolution {t.a} is not {band.key}'s {band.resolution} m")
        col = (t.c - grid.c) / grid.a
        row = (t.f - grid.f) / grid.e
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            raise InputError(f"{path}: not aligned to the tile grid")
        window = Window(round(row), round(col), src.height, src.width)
        if window.row_off + window.height > size or window.col_off + window.width > size:
            raise InputError(f"{path}: window {window} outside the {size} px grid")
        return _Piece(path, window, src.count, src.dtypes[0])


def _check_coverage(windows: Sequence[Window], size: int) -> None:
    """The windows must tile the grid exactly (no overlap, no gap)."""
    ws = sorted(windows)
    for i, a in enumerate(ws):
        for b in ws[i + 1:]:
            if b.row_off >= a.row_off + a.height:
                break
            if (b.col_off < a.col_off + a.width and a.col_off < b.col_off + b.width):
                raise InputError(f"windows {a.key} and {b.key} overlap")
    covered = sum(w.size for w in ws)
    if covered != size * size:
        raise IncompleteError(f"windows cover {covered} of {size * size} px of the grid; "
                              "a window result is missing from the list")


def _vrt_xml(pieces: Sequence[_Piece], tile: Tile, band: Band, size: int) -> str:
    """A GDAL VRT mosaicking the pieces (relative paths when they share the VRT's folder)."""
    from rasterio.crs import CRS

    t = tile.transform(band.resolution)
    count, dtype = pieces[0].count, _GDAL_TYPES[pieces[0].dtype]
    lines = [f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">',
             f"  <SRS>{escape(CRS.from_epsg(tile.epsg).to_wkt())}</SRS>",
             f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}"
             "</GeoTransform>"]
    for b in range(1, count + 1):
        lines += [f'  <VRTRasterBand dataType="{dtype}" band="{b}">',
                  "    <NoDataValue>0</NoDataValue>"]
        for p in pieces:
            w = p.window
            lines += ["    <SimpleSource>",
                      f'      <SourceFilename relativeToVRT="0">{escape(str(p.path))}'
                      "</SourceFilename>",
                      f"      <SourceBand>{b}</SourceBand>",
                      f'      <SrcRect xOff="0" yOff="0" xSize="{w.width}" ySize="{w.height}"/>',
                      f'      <DstRect xOff="{w.col_off}" yOff="{w.row_off}" xSize="{w.width}"'
                      f' ySize="{w.height}"/>',
                      "    </SimpleSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def _write_gtiff(pieces: Sequence[_Piece], tile: Tile, band: Band, area: Window,
                 dst: Path, indexes: Sequence[int] | None = None) -> None:
    """Copy the pieces' parts inside ``area`` (the band's tile grid) into one tiled GeoTIFF
    covering ``area``, one window in memory at a time; only the pieces' bands ``indexes``
    (default: all), in that order."""
    import rasterio
    from rasterio.windows import Window as RioWindow

    indexes = list(indexes or range(1, pieces[0].count + 1))
    profile = {"driver": "GTiff", "height": area.height, "width": area.width,
               "count": len(indexes), "dtype": pieces[0].dtype, "crs": tile.crs, "nodata": 0,
               "transform": area.transform(tile.transform(band.resolution)), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "NONE", "bigtiff": "IF_SAFER",
               "interleave": "pixel" if len(indexes) > 1 and band.count > 1 else "band"}
    with rasterio.open(dst, "w", **profile) as out:
        for p in pieces:
            part = p.window.intersection(area)
            if part is None:
                continue
            with rasterio.open(p.path) as src:
                data = src.read(indexes, window=RioWindow(part.col_off - p.window.col_off,
                                                 part.row_off - p.window.row_off,
                                                 part.width, part.height))
            out.write(data, window=RioWindow(part.col_off - area.col_off,
                                             part.row_off - area.row_off,
                                             part.width, part.height))


def stitch(window_uris: Sequence[str], tile: Tile | str, band: Band | str, *,
           workdir: str | Path | None = None, method: str = "gtiff",
           tile_size: int | None = None, windows: Sequence[Window] | None = None,
           crop: Window | None = None, indexes: Sequence[int] | None = None) -> Path:
    """Rebuild the band's full UTM raster (tile grid at the band resolution, nodata 0).

    ``method="gtiff"`` (default) copies the windows into one uncompressed tiled GeoTIFF, one
    window in memory at a time (2 s for a 10 m tile; the warp then reads it ~25 % faster than
    a VRT); ``"vrt"`` writes a VRT over the window files instead (no copy). S3 windows are
    downloaded into ``workdir`` first. Missing window
    objects raise ``IncompleteError`` listing them; windows that do not tile the grid exactly
    raise too. The returned path lives in ``workdir`` (a new temp dir if None; caller cleans).

    ``crop`` (``method="gtiff"``, with the planned ``windows`` in the order of
    ``window_uris``): the raster covers only that part of the grid (:func:`data_crop`); the
    planned windows must still tile the grid, and only the window files that meet ``crop``
    are fetched (each checked to sit where it was planned).

    ``indexes`` (``method="gtiff"``): only these bands of the window files, in that order
    (a band's median alone, without the count band only red's assemble publishes: half the
    copy for a 10 m band).
    """
    tile, band = parse_tile(tile), get_band(band) if isinstance(band, str) else band
    if not window_uris:
        raise IncompleteError(f"no window results for {tile.id} {band.key}")
    size = int(tile_size or band.size)
    work = Path(workdir or tempfile.mkdtemp(prefix="cloudfree-stitch-"))
    work.mkdir(parents=True, exist_ok=True)
    area = Window(0, 0, size, size)
    if crop is not None and crop != area:
        if method != "gtiff" or windows is None or len(windows) != len(window_uris):
            raise InputError("a crop needs method 'gtiff' and the planned windows of the uris")
        planned = [Window.from_dict(w) for w in windows]
        _check_coverage(planned, size)
        keep = [i for i, w in enumerate(planned) if w.intersection(crop) is not None]
        pieces = [_locate(p, tile, band, size)
                  for p in _local_copies([window_uris[i] for i in keep], work)]
        moved = [p.window.key for p, i in zip(pieces, keep, strict=True)
                 if p.window != planned[i]]
        if moved:
            raise InputError(f"window results not where they were planned: {moved}")
        area = crop
    else:
        pieces = [_locate(p, tile, band, size) for p in _local_copies(list(window_uris), work)]
        _check_coverage([p.window for p in pieces], size)
    if len({(p.count, p.dtype) for p in pieces}) != 1:
        raise InputError("window results differ in band count or dtype")
    pieces.sort(key=lambda p: p.window)
    if method == "vrt":
        dst = work / f"{tile.id}_{band.key}.vrt"
        dst.write_text(_vrt_xml(pieces, tile, band, size))
    elif method == "gtiff":
        dst = work / f"{tile.id}_{band.key}_utm.tif"
        _write_gtiff(pieces, tile, band, area, dst, indexes)
    else:
        raise InputError(f"stitch method must be 'vrt' or 'gtiff', got {method!r}")
    return dst


# --- the web-optimized COG -------------------------------------------------------------------
def _min_abs_latitude(src) -> float:
    """Smallest |latitude| over the dataset's footprint (where mercator pixels are smallest)."""
    return _min_abs_latitude_of(src.crs, src.bounds)


def _min_abs_latitude_of(crs, bounds) -> float:
    from rasterio.warp import transform as warp

    left, bottom, right, top = bounds
    xs = [left, right, left, right, (left + right) / 2, (left + right) / 2]
    ys = [bottom, bottom, top, top, bottom, top]
    _, lats = warp(crs, "EPSG:4326", xs, ys)
    if min(lats) <= 0 <= max(lats):
        return 0.0
    return min(abs(v) for v in lats)


def native_zoom(resolution_m: float, latitude: float) -> int:
    """Coarsest WebMercatorQuad zoom whose ground cell (x cos(lat)) is <= ``resolution_m``."""
    ground0 = ZOOM0_CELL * math.cos(math.radians(abs(latitude)))
    return max(0, math.ceil(math.log2(ground0 / resolution_m) - 1e-9))


@dataclass(frozen=True)
class MercatorGrid:
    """An EPSG:3857 output grid aligned to WebMercatorQuad tiles at ``zoom``."""

    transform: Any  # affine.Affine
    width: int
    height: int
    zoom: int
    side: str  # "east": x continues past +20037508 m; "west": below -20037508 m


def _lonlat_outline(src, points_per_edge: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's outline in lon/lat with continuous longitudes (no jump at +-180)."""
    from rasterio.warp import transform as warp

    left, bottom, right, top = src.bounds
    t = np.linspace(0, 1, points_per_edge, endpoint=False)
    xs = np.concatenate([left + (right - left) * t, np.full_like(t, right),
                         right - (right - left) * t, np.full_like(t, left)])
    ys = np.concatenate([np.full_like(t, top), top - (top - bottom) * t,
                         np.full_like(t, bottom), bottom + (top - bottom) * t])
    lons, lats = (np.asarray(v) for v in warp(src.crs, "EPSG:4326", xs, ys))
    return np.degrees(np.unwrap(np.radians(lons))), lats


def antimeridian_grid(src, zoom: int) -> MercatorGrid | None:
    """The output grid of a dataset that crosses the antimeridian (None for any other).

    Reprojected naively to EPSG:3857, such a tile (UTM zones 1 and 60) spans the whole world:
    GDAL's suggested output (a default ``WarpedVRT``, which rio-cogeo 7's
    ``utils.get_web_optimized_params`` takes its bounds from) runs from near -20037508 m to near
    +20037508 m, about 40,000 km (``tests/unit/test_antimeridian.py`` measures it). Here the
    Web Mercator x axis is *continued* past 180 deg on the side opposite the tile's centre, so
    the raster covers only the tile: x = R * longitude, with the longitude continuous, e.g. up
    to 20,100,000 m for a zone 60 tile that reaches 180.6 deg E. GDAL's warper maps each output
    pixel back through the inverse projection, whose longitude wraps (180.6 -> -179.4), which
    lands on the same UTM point, so the pixels are right. The grid stays on the lattice of
    WebMercatorQuad tiles at ``zoom`` (x = -20037508 m + k x tile width), continued past the
    matrix; morecantile 7 does not number such columns (``tms._tile`` clamps x = 20.1e6 m to the
    last column, ``tms.tile`` wraps 180.5 deg to column 0), so a WebMercatorQuad tile server
    serves the part on the tile's own side of 180 deg only.
    """
    lons, lats = _lonlat_outline(src)
    centre = float(np.mean(lons))
    shift = 360.0 * round(centre / 360.0)  # bring the centre into [-180, 180]
    lons = lons - shift
    if -180 <= lons.min() and lons.max() <= 180:
        return None
    radius = 6378137.0
    xs = radius * np.radians(lons)
    ys = radius * np.log(np.tan(np.pi / 4 + np.radians(np.clip(lats, -85.06, 85.06)) / 2))
    origin = math.pi * radius  # 20037508.34 m: WebMercatorQuad's top-left is (-origin, origin)
    cell = ZOOM0_CELL / 2 ** zoom
    tile_m = cell * 256
    west = -origin + math.floor((xs.min() + origin) / tile_m) * tile_m
    east = -origin + math.ceil((xs.max() + origin) / tile_m) * tile_m
    north = origin - math.floor((origin - ys.max()) / tile_m) * tile_m
    south = origin - math.ceil((origin - ys.min()) / tile_m) * tile_m
    from affine import Affine

    return MercatorGrid(Affine(cell, 0, west, 0, -cell, north), round((east - west) / cell),
                        round((north - south) / cell), zoom,
                        "east" if lons.max() > 180 else "west")


#: DEFLATE level of the output COGs (see ``cog_profile``). 2, not 1: under zlib-ng (the layer's
#: and the venv's zlib, ``cloudfree.deflate``) level 1 is ``deflate_quick``, a cheaper algorithm
#: with far larger files. Measured on a full blue COG with overviews (17920² px, 2 threads, two
#: rounds, 2026-12-02): zlib-ng level 1 5.2/6.1 s and 696 MB, level 2 7.9/9.8 s and 500 MB;
#: the system zlib (1.2.13) level 1 10.1/10.0 s and 519 MB, level 2 8.8/10.2 s and 517 MB.
DEFLATE_LEVEL = 2
#: ZSTD level after LERC (CogCompression LERC_ZSTD). GDAL's default is 9. The blue COG copy
#: above (17920² px with overviews, 2 threads, 2026-12-02): LERC_ZSTD level 1 4.7 CPU-s and
#: 449.9 MB, level 5 6.1 CPU-s and 449.7 MB, LERC alone 4.1 CPU-s and 460.2 MB; DEFLATE level 2
#: 12.4-14.6 CPU-s and 500.4 MB (ZSTD with predictor 2: level 1 517 MB, level 5 476 MB at
#: 9.5 CPU-s). ``bench/bench_codecs.py`` measures it again.
LERC_ZSTD_LEVEL = 1


def cog_profile(profile: str, *, blocksize: int = 512) -> dict[str, Any]:
    """rio-cogeo's named profile (a copy) with predictor 2 and the block size; LERC lossless
    (``MAX_Z_ERROR`` 0: every value kept, GDAL's default made explicit)."""
    import warnings

    from rio_cogeo.profiles import cog_profiles

    try:
        with warnings.catch_warnings():  # rio-cogeo warns of every codec but DEFLATE/LZW/...
            warnings.filterwarnings("ignore", "Non-standard compression schema")
            out = dict(cog_profiles.get(profile))
    except KeyError as err:
        raise InputError(f"unknown COG profile {profile!r}; valid: deflate, zstd, lzw, …") \
            from err
    out.update(blockxsize=blocksize, blockysize=blocksize, bigtiff="IF_SAFER")
    if out.get("compress", "").upper() in {"DEFLATE", "ZSTD", "LZW", "LZMA"}:
        out["predictor"] = 2
    if out.get("compress", "").upper() == "DEFLATE":
        # Measured on a full 10980² band to zoom 14 (2 vCPU, zlib 1.2.13): level 6 took 66 s,
        # level 1 35 s for 1.6 % more bytes (ZSTD: 39 s, 5 % fewer bytes, but fewer readers
        # support it). Level 2 since zlib-ng: see DEFLATE_LEVEL.
        out["zlevel"] = DEFLATE_LEVEL
    if out.get("compress", "").upper().startswith("LERC"):
        out["max_z_error"] = 0
    if out.get("compress", "").upper() == "LERC_ZSTD":
        out["zstd_level"] = LERC_ZSTD_LEVEL
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _resolve_zoom(src_path: str | Path, zoom_level: int | str | None) -> tuple[int | None, float]:
    """(zoom to pass to rio-cogeo (None = its auto), min |latitude|)."""
    import rasterio

    with rasterio.open(src_path) as src:
        lat = _min_abs_latitude(src)
        res = max(abs(src.res[0]), abs(src.res[1]))
    if zoom_level in (None, "native"):
        return native_zoom(res, lat), lat
    if zoom_level == "auto":
        return None, lat
    if isinstance(zoom_level, int) or str(zoom_level).isdigit():
        return int(zoom_level), lat
    raise InputError(f"zoom_level must be 'native', 'auto' or an int, got {zoom_level!r}")


def _web_grid(src, zoom: int | None, tms) -> MercatorGrid:
    """The EPSG:3857 grid the dataset is warped onto: rio-cogeo's web-optimized grid
    (``utils.get_web_optimized_params``: whole WebMercatorQuad tiles at ``zoom``, or its own
    choice when None), or :func:`antimeridian_grid`'s continued one for a tile across 180 deg."""
    from rio_cogeo import utils

    params = utils.get_web_optimized_params(src, zoom_level=zoom, tms=tms)
    if zoom is None:  # rio-cogeo's choice, as it tags it
        zoom = tms.zoom_for_res(abs(params["transform"].a), max_z=30)
    grid = antimeridian_grid(src, zoom)
    if grid is not None:
        return grid
    return MercatorGrid(params["transform"], int(params["width"]), int(params["height"]),
                        zoom, "")


def _num_threads(threads: int | str) -> int:
    import os

    if str(threads).upper() == "ALL_CPUS":
        return os.cpu_count() or 1
    return max(1, int(threads))


#: Warp with the compiled kernel where it is built (``cloudfree._warp``; tests turn it off to
#: compare with GDAL's warper, which is used otherwise and for cubic / average resampling).
WARP_KERNEL = True
#: Output pixels between exactly projected lattice nodes of :func:`_warp_exact` (per axis):
#: interpolating the UTM position of a Web Mercator pixel over 32 px (~300 m at zoom 14) is
#: about 1e-4 px from the exact projection (the mapping is smooth at that scale).
LATTICE_STEP = 32


def _warp_kernel():
    """The compiled warp (``cloudfree._warp``), None where it was not built."""
    try:
        from . import _warp
    except ImportError:  # no C compiler at install time: GDAL's warper instead
        return None
    return _warp


def _source_positions(src, dst, r0: int, r1: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The source column and row (pixel units from the source's top-left corner) of the output
    pixel centres at rows ``r0 + k * step`` and columns ``m * step``, enough nodes to frame rows
    ``[r0, r1)`` and every column: exact projections (PROJ, through GDAL), (lh, lw) float64."""
    from rasterio.warp import transform as project

    lh, lw = (r1 - r0 - 1) // step + 2, (dst.width - 1) // step + 2
    rows = r0 + np.arange(lh) * step + 0.5
    cols = np.arange(lw) * step + 0.5
    t, st = dst.transform, src.transform
    xs = np.broadcast_to(t.c + cols * t.a, (lh, lw)).ravel()
    ys = np.broadcast_to((t.f + rows * t.e)[:, None], (lh, lw)).ravel()
    ex, ny = project(dst.crs, src.crs, xs, ys)
    col = (np.asarray(ex) - st.c) / st.a
    row = (np.asarray(ny) - st.f) / st.e
    return col.reshape(lh, lw), row.reshape(lh, lw)


def _warp_exact(src_path: str | Path, dst, indexes: Sequence[int], bilinear: bool, nodata: int,
                threads: int, block: int, kernel) -> None:
    """:func:`_warp_in_blocks` with the compiled kernel (``cloudfree._warp``): a row of output
    blocks at a time, each row's source positions interpolated in a lattice of exact
    projections (:data:`LATTICE_STEP`), its source rows read once, split over ``threads``
    threads (the kernel releases the GIL). Nearest takes the source pixel containing the
    position; bilinear the four around it, renormalised over the valid ones; an output pixel
    is nodata where the source pixel containing it is (GDAL's rule).

    Measured on a full 10980² blue band to zoom 14 (17920² px, 2 threads): see
    :func:`write_web_cog`. Its bilinear values are within rounding (mean 0.25 DN) of the exact
    bilinear value (``tests/unit/test_assemble.py``), where GDAL's approximate transformer
    (0.125 px) lands 3.3 DN from it on average on textured pixels; ``tests/unit/
    test_warp_ext.py`` checks the kernel against its rule written in numpy.
    """
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    import rasterio
    from rasterio.windows import Window as RioWindow

    step = LATTICE_STEP
    dtype = np.dtype(dst.dtypes[0])
    with rasterio.open(src_path) as src, ThreadPoolExecutor(max(1, threads)) as pool:
        if src.transform.b or src.transform.d:
            raise InputError(f"{src_path}: a rotated source grid is not supported")
        for r0 in range(0, dst.height, block):
            r1 = min(r0 + block, dst.height)
            col, row = _source_positions(src, dst, r0, r1, step)
            # the source rows and columns this row of blocks reaches (a lattice cell's
            # interpolated positions lie between its nodes), one pixel of margin for bilinear
            q0, q1 = max(int(np.floor(row.min())) - 1, 0), min(int(np.ceil(row.max())) + 2,
                                                                 src.height)
            c0, c1 = max(int(np.floor(col.min())) - 1, 0), min(int(np.ceil(col.max())) + 2,
                                                                 src.width)
            if q0 >= q1 or c0 >= c1:
                continue  # outside the source: nodata, left sparse
            part = src.read(list(indexes), window=RioWindow(c0, q0, c1 - c0, q1 - q0),
                            out_dtype=dtype)
            lx, ly = col - c0, row - q0  # new C-contiguous arrays, as read() returns ``part``
            out = np.empty((len(indexes), r1 - r0, dst.width), dtype)
            n = r1 - r0
            cuts = [n * i // max(1, threads) for i in range(max(1, threads) + 1)]
            rows = partial(kernel.warp, part, lx, ly, out, dtype.itemsize, len(indexes),
                           part.shape[1], part.shape[2], n, dst.width, step, bilinear, nodata)
            list(pool.map(rows, cuts[:-1], cuts[1:]))
            for c in range(0, dst.width, block):
                w = min(block, dst.width - c)
                piece = out[:, :, c:c + w]
                if (piece != nodata).any():  # all-nodata blocks stay sparse
                    dst.write(piece, window=RioWindow(c, r0, w, n))


def _warp_in_blocks(src_path: str | Path, dst, indexes: Sequence[int], resampling, nodata: int,
                    threads: int, block: int) -> None:
    """Warp ``src_path``'s ``indexes`` onto ``dst``'s grid, one output block per warp.

    GDAL's approximate transformer (0.125 px) interpolates source coordinates linearly along
    each output row of a warp chunk, so its error grows with the chunk: one ``reproject`` over
    the whole band (8.7 s for a 10 m band) lands 10.6 DN from the exact bilinear value on
    textured pixels, one per 512 px block 3.3 DN, as rio-cogeo's block reads (3.4 DN;
    ``tests/unit/test_assemble.py``), in 13 s instead of ~45. Blocks are warped in ``threads``
    threads (each its own dataset handle: GDAL handles are not thread-safe), a row of blocks at
    a time (memory stays a row of blocks), and written in order.
    """
    from rasterio.enums import Resampling

    kernel = _warp_kernel() if WARP_KERNEL else None
    if kernel is not None and resampling in (Resampling.bilinear, Resampling.nearest) and \
            np.dtype(dst.dtypes[0]).itemsize <= 2 and len(indexes) <= 4:
        return _warp_exact(src_path, dst, indexes, resampling == Resampling.bilinear, nodata,
                           threads, block, kernel)
    import threading
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    import rasterio
    from affine import Affine
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.warp import reproject
    from rasterio.windows import Window as RioWindow

    local = threading.local()
    opened: list = []
    lock = threading.Lock()

    def source():
        if not hasattr(local, "src"):
            local.src = rasterio.open(src_path)
            with lock:
                opened.append(local.src)
        return local.src

    def warp(w):
        out = np.full((len(indexes), w.height, w.width), nodata, dtype=dst.dtypes[0])
        reproject(rasterio.band(source(), list(indexes)), out,
                  dst_transform=dst.transform @ Affine.translation(w.col_off, w.row_off),
                  dst_crs=dst.crs,
                  resampling=resampling, src_nodata=nodata, dst_nodata=nodata)
        return w, out

    try:  # rasterio's in-memory destination warns before it gets its transform
        with warnings.catch_warnings(), ThreadPoolExecutor(max(1, threads)) as pool:
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            for row in range(0, dst.height, block):
                h = min(block, dst.height - row)
                blocks = [RioWindow(col, row, min(block, dst.width - col), h)
                          for col in range(0, dst.width, block)]
                for w, out in pool.map(warp, blocks):
                    if (out != nodata).any():  # all-nodata blocks stay sparse
                        dst.write(out, window=w)
    finally:
        for ds in opened:
            ds.close()


#: GDAL's block cache while a web COG is written (bytes: rasterio passes an integer to
#: GDALSetCacheMax64 as it is; this was 512, a 512-*byte* cache, until 2026-12-02).
ASSEMBLE_CACHE_BYTES = 512 * 2**20


def write_web_cog(src_path: str | Path, dst_uri: str, *, zoom_level: int | str | None = "native",
                  resampling: str = "bilinear", overview_resampling: str | None = None,
                  profile: str = "deflate", nodata: int = 0,
                  indexes: Sequence[int] | None = None, threads: int | str = 2,
                  tags: dict[str, str] | None = None, dtype: str | None = None) -> CogInfo:
    """Reproject ``src_path`` to a web-optimized COG in EPSG:3857 (WebMercatorQuad), validate
    it (``ValidationError`` otherwise), upload it to ``dst_uri`` and describe it.

    ``overview_resampling`` defaults to ``average`` (``nearest`` when ``resampling`` is nearest).

    The file is what rio-cogeo's ``cog_translate(..., tms=WebMercatorQuad)`` writes (its grid,
    profile, overview levels and tags; checked by its validator), but the warp is GDAL's own
    ``reproject`` per 512 px output block in threads (:func:`_warp_in_blocks`) into an
    uncompressed tiled temporary, then overviews, then one compressed copy with the overviews,
    as ``cog_translate`` ends. ``cog_translate`` reads a ``WarpedVRT`` block by block, which
    GDAL warps on one thread and slowly. Measured on a full 10980² blue band (33UUP, zoom 14,
    17920² px, 2 threads, 2026-12-01): 52.4 s with ``cog_translate``; here GDAL's warp takes
    13 s; the count COG took 13.8 s before. The pixels are rio-cogeo's but for 10,895 of 321 M
    (its warper's 0.125 px approximation falls differently), 115 of them on the swath edge.

    Bilinear and nearest warps run in the compiled kernel where it is built
    (:func:`_warp_exact`): the same band's warp in 5.5 s wall / 9.5 CPU-s against GDAL's 14.0 s /
    26.7 CPU-s in the same run (22:11, load ~1.4), and exact to rounding where GDAL's is ~3 DN
    off on textured pixels (``tests/unit/test_assemble.py``).
    """
    import morecantile
    import rasterio
    from rasterio.enums import ColorInterp, Resampling
    from rasterio.shutil import copy
    from rio_cogeo import utils

    if resampling not in {"bilinear", "nearest", "cubic", "average"}:
        raise InputError(f"unsupported resampling {resampling!r}")
    ovr = overview_resampling or ("nearest" if resampling == "nearest" else "average")
    zoom, lat = _resolve_zoom(src_path, zoom_level)
    config = {"GDAL_NUM_THREADS": str(threads), "GDAL_TIFF_OVR_BLOCKSIZE": "512",
              "GDAL_CACHEMAX": ASSEMBLE_CACHE_BYTES, "GDAL_PAM_ENABLED": "NO"}
    tms = morecantile.tms.get("WebMercatorQuad")
    dst_profile = cog_profile(profile)
    blocksize = int(dst_profile["blockxsize"])
    with tempfile.TemporaryDirectory(prefix="cloudfree-cog-") as tmp, \
            rasterio.Env(**config), rasterio.open(src_path) as src:
        out = Path(tmp) / Path(dst_uri).name
        grid = _web_grid(src, zoom, tms)
        indexes = list(indexes or src.indexes)
        meta = {**{k: v for k, v in dst_profile.items()
                   if k not in {"compress", "predictor", "zlevel", "photometric",
                                 "max_z_error", "zstd_level"}},
                "count": len(indexes), "dtype": dtype or src.dtypes[indexes[0] - 1],
                "crs": "EPSG:3857", "transform": grid.transform, "width": grid.width,
                "height": grid.height, "nodata": nodata}
        cog_tags = {**src.tags(), "OVERVIEW_RESAMPLING": ovr.upper(),
                    "TILING_SCHEME_NAME": tms.id,
                    "TILING_SCHEME_ZOOM_LEVEL": str(grid.zoom)}
        if grid.side:
            cog_tags["CLOUDFREE_ANTIMERIDIAN"] = grid.side
        cog_tags.update(tags or {})
        with rasterio.open(Path(tmp) / "warped.tif", "w", **meta) as warped:
            _warp_in_blocks(src_path, warped, indexes, Resampling[resampling], nodata,
                            _num_threads(threads), blocksize)
            levels = utils.get_maximum_overview_level(grid.width, grid.height,
                                                      minsize=blocksize)
            warped.build_overviews([2 ** j for j in range(1, levels + 1)], Resampling[ovr])
            warped.colorinterp = ([ColorInterp.gray] if len(indexes) == 1 else
                                  [src.colorinterp[i - 1] for i in indexes])
            for i, b in enumerate(indexes, start=1):
                if src.descriptions[b - 1]:
                    warped.set_band_description(i, src.descriptions[b - 1])
            warped.update_tags(**cog_tags)
        copy(Path(tmp) / "warped.tif", out, copy_src_overviews=True, **dst_profile)
        valid, errors, _warnings = validate_cog(str(out))
        if not valid:
            raise ValidationError(f"{dst_uri}: not a valid COG: {errors}")
        with rasterio.open(out) as cog:
            cell = abs(cog.transform.a)
            info = CogInfo(
                href=dst_uri, size=out.stat().st_size, sha256=_sha256(out),
                shape=(cog.height, cog.width), transform=tuple(cog.transform)[:6],
                crs=f"EPSG:{cog.crs.to_epsg()}", dtype=cog.dtypes[0], zoom=grid.zoom,
                resolution_m=round(cell, 6),
                ground_resolution_m=round(cell * math.cos(math.radians(lat)), 3),
                bands=cog.count, nodata=cog.nodata)
        storage.upload_file(out, dst_uri, "image/tiff; application=geotiff; "
                                          "profile=cloud-optimized")
    if storage.is_s3(dst_uri):
        head = storage.head(dst_uri)
        info.etag = head.etag if head else None
    return info


#: rio-cogeo's tiling error, which it raises for any file whose block is as wide as the image.
NOT_TILED = "The file is greater than 512xH or 512xW, but is not tiled"


def validate_cog(path: str) -> tuple[bool, list[str], list[str]]:
    """``rio_cogeo.cogeo.cog_validate`` with GDAL's own tiling rule.

    rio-cogeo reports "not tiled" for every file whose block is as wide as the image, so a
    tiled COG exactly one 512 px block wide and taller than 512 px fails it (a band cropped
    to one column of observed cells at a coarse zoom: 60 m outputs at zoom 11 are ~215 px per
    cell). GDAL's reference validator calls a file untiled only when its block is as wide as
    the image AND wider than 1,024 px (``validate_cloud_optimized_geotiff.py``:
    ``if block_size[0] == main_band.XSize and block_size[0] > 1024``): that rule is applied
    here, to the image and to each overview ("Overview of index N is not tiled": a 10 m band
    cropped to a few cells has overviews one block wide); every other error stands.
    """
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    valid, errors, warnings = cog_validate(path, quiet=True)
    kept = []
    for err in errors:
        level = None
        if err == NOT_TILED:
            level = -1
        elif err.startswith("Overview of index ") and err.endswith(" is not tiled"):
            level = int(err.split()[3])  # the same test on each overview
        if level is not None:
            opts = {} if level < 0 else {"overview_level": level}
            with rasterio.open(path, **opts) as src:
                block_w = src.block_shapes[0][1]
                if not (block_w == src.width and block_w > 1024):
                    continue
        kept.append(err)
    return not kept, kept, warnings


# --- one band, end to end --------------------------------------------------------------------
def _read_window_stats(uris: Sequence[str]) -> list[dict]:
    """The windows' statistics (their "done" markers), read in parallel; IncompleteError
    naming the missing ones."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        stats = list(pool.map(storage.read_json_if_exists, uris))
    missing = [u for u, s in zip(uris, stats, strict=True) if s is None]
    if missing:
        raise IncompleteError(f"window statistics missing: {', '.join(missing)}")
    return stats



def band_window_uris(layout, year: int, tile: Tile | str, band: str,
                     windows: Iterable[Window | dict]) -> list[str]:
    """The window result URIs of a band (from the planned windows)."""
    tid = parse_tile(tile).id
    return [layout.window_result(year, tid, band, w.row_off, w.col_off)
            for w in map(Window.from_dict, windows)]


#: Side (m) of the cells a band's COG is cropped to (:func:`data_crop`): a tenth of the tile,
#: 1,098 / 549 / 183 px at 10 / 20 / 60 m, so every band's crop has the same extent.
CROP_CELL_M = 10980


def data_crop(stats: Sequence[dict], band: Band | str, size: int | None = None) -> Window:
    """The part of the band's tile grid its COG covers: the cells of :data:`CROP_CELL_M` that
    hold observed pixels (SCL not nodata in some scene: the windows' ``observed_bbox``).

    A tile that the year's scenes cover only in part (a coast: Sentinel-2 images land and
    coastal water only) is published over its observed cells, not as a full tile of nodata,
    and assemble warps and encodes only those. Real Earth Search items show both cases:
    28QCH on the Atlantic coast is 93 % nodata (``s2:nodata_pixel_percentage`` 92.999691 in
    ../shared/realdata/odc-tools/apps/dc_tools/tests/data/S2A_28QCH_20200714_0_L2A.json),
    while swath-edge tiles are partial on one orbit and full on the other (32UNU 0 / 40.7 %,
    32TNT 0 / 67.6 % in ../shared/realdata/derived/xcube-stac_earthsearch_v1_s2l2a_bbox9-
    10E47-48N_2020-03-01_05.json): a year's union covers those whole, so the crop gains
    nothing there and changes nothing. The whole grid when nothing is
    observed, or for window statistics written before ``observed_bbox`` existed (a window
    with observed pixels then counts whole).
    """
    from .composite import union_bbox

    band = get_band(band) if isinstance(band, str) else band
    size = int(size or band.size)
    boxes = []
    for s in stats:
        if "observed_bbox" in s:
            boxes.append(s["observed_bbox"])
        elif int(s.get("observed_pixels", s.get("pixels", 1))) > 0:
            w = Window.from_dict(s["window"])
            boxes.append((w.row_off, w.col_off, w.row_off + w.height, w.col_off + w.width))
    box = union_bbox(boxes)
    if box is None:
        return Window(0, 0, size, size)
    cell = CROP_CELL_M // band.resolution
    r0, c0 = box[0] // cell * cell, box[1] // cell * cell
    r1, c1 = min(size, -(-box[2] // cell) * cell), min(size, -(-box[3] // cell) * cell)
    return Window(r0, c0, r1 - r0, c1 - c0)


def merge_window_stats(stats: Sequence[dict]) -> dict[str, Any]:
    """Sum window statistics into band statistics (contributions, valid pixels, histogram)."""
    contributions: dict[str, int] = {}
    per_scene: dict[str, dict[str, int]] = {"outliers": {}, "masked": {}}
    hist = np.zeros(0, dtype=np.int64)
    pixels = valid = observed = snow = 0
    seconds = 0.0
    for s in stats:
        seconds += float(s.get("seconds", 0.0))
        pixels += int(s.get("pixels", 0))
        valid += int(s.get("valid_pixels", 0))
        snow += int(s.get("snow_pixels", 0))
        observed += int(s.get("observed_pixels", s.get("pixels", 0)))
        for k, v in (s.get("contributions") or {}).items():
            contributions[k] = contributions.get(k, 0) + int(v)
        for name, sums in per_scene.items():  # outliers rejected, pixels SCL masked (issue 8)
            for k, v in (s.get(name) or {}).items():
                sums[k] = sums.get(k, 0) + int(v)
        h = np.asarray(s.get("count_histogram") or [], dtype=np.int64)
        if h.size > hist.size:
            hist = np.pad(hist, (0, h.size - hist.size))
        hist[: h.size] += h
    return {"pixels": pixels, "valid_pixels": valid, "observed_pixels": observed,
            "snow_pixels": snow,
            "median_seconds": round(seconds, 3),
            "valid_fraction": round(valid / pixels, 6) if pixels else 0.0,
            "count_histogram": [int(v) for v in hist], "contributions": contributions,
            **per_scene}


def assemble_band(layout, year: int, tile: Tile | str, band: str,
                  windows: Iterable[Window | dict], *, write_count: bool = False,
                  zoom_level: int | str | None = "native", resampling: str = "bilinear",
                  profile: str = "deflate", threads: int | str = 2,
                  workdir: str | Path | None = None, tile_size: int | None = None,
                  on_written: Callable[[], None] | None = None) -> CogInfo:
    """Stitch a band's windows, write its web COG (and the ``count`` COG when asked and the
    band is a 10 m reflectance band) and the band statistics JSON. Returns the band's CogInfo,
    the count COG under ``info.related["count"]``.

    The COGs go to ``layout.staged_cog`` (the work bucket): *publish* makes them public. The
    statistics are the band's "done" marker: removed first, written last, so a COG rewritten
    by an interrupted attempt is never taken for finished. ``on_written`` runs between the COG
    uploads and the statistics (fault injection's "during" point).
    """
    tile_obj = parse_tile(tile)
    b = get_band(band)
    windows = [Window.from_dict(w) for w in windows]
    uris = band_window_uris(layout, year, tile_obj, b.key, windows)
    t0 = time.perf_counter()
    storage.remove(layout.band_stats(year, tile_obj.id, b.key))
    stats_uris = [layout.window_stats(year, tile_obj.id, b.key, w.row_off, w.col_off)
                  for w in windows]
    stats = _read_window_stats(stats_uris)
    crop = data_crop(stats, b, tile_size)
    if zoom_level in (None, "native"):  # the whole tile's zoom, whatever the crop
        size = int(tile_size or b.size)
        full = Window(0, 0, size, size).bounds(tile_obj.transform(b.resolution))
        zoom_level = native_zoom(b.resolution, _min_abs_latitude_of(tile_obj.crs, full))
    work = Path(workdir or tempfile.mkdtemp(prefix="cloudfree-asm-"))
    try:
        # one GDAL environment (and rasterio session) for every open below: the windows'
        # rasterio.open calls would otherwise each make their own (storage.gdal_env)
        with storage.gdal_env():
            count_too = write_count and b.count == 1 and b.resolution == 10
            # the median band alone unless the count COG is made from the same raster
            src = stitch(uris, tile_obj, b, workdir=work, tile_size=tile_size,
                         windows=windows, crop=crop,
                         indexes=None if count_too or b.count > 1 else [1])
            idx = list(range(1, b.count + 1))
            info = write_web_cog(src, layout.staged_cog(year, tile_obj.id, b.key),
                                 zoom_level=zoom_level,
                                 resampling=resampling, profile=profile, indexes=idx,
                                 threads=threads)
            if count_too:
                info.related["count"] = write_web_cog(
                    src, layout.staged_cog(year, tile_obj.id, "count"), zoom_level=info.zoom,
                    resampling="nearest", overview_resampling="nearest", profile=profile,
                    indexes=[2], threads=threads, dtype="uint8")
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    if on_written is not None:
        on_written()
    band_stats = merge_window_stats(stats)
    band_stats.update(band=b.key, cog=info.to_dict(),
                      data_bounds=[round(v, 3) for v in crop.bounds(
                          tile_obj.transform(b.resolution))],
                      assemble_seconds=round(time.perf_counter() - t0, 3))
    storage.write_json(layout.band_stats(year, tile_obj.id, b.key), band_stats)
    return info
