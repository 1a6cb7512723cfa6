"""Reading a window of a tiled DEFLATE GeoTIFF by inflating its tiles here instead of in GDAL.

Every Earth Search asset is one: ``gdalinfo`` of a real ``B04.tif`` prints ``Block=1024x1024
Type=UInt16``, ``COMPRESSION=DEFLATE``, ``PREDICTOR=2`` (the public output quoted in
:mod:`cloudfree.windows`). Decoding those blocks is most of a median's CPU, and GDAL spends it
in two places: zlib's inflate, and libtiff undoing the horizontal predictor one sample at a time
through memory (``horAcc16``: ``cp[stride] += cp[0]``). Measured on ``make bench-peer``'s scenes
(real-like 10 m tiles, 0.60 of raw size, one core, per 1024 px block): GDAL 8.6 ms; ISA-L's
inflate 4.3 ms, zlib-ng's 5.3, libdeflate's 5.1; the predictor undone in a register
(``cloudfree._blocks``) well under 1 ms. So here:

1. GDAL still opens the file and says where the window's tiles are (``BLOCK_OFFSET_x_y`` /
   ``BLOCK_SIZE_x_y`` in the ``TIFF`` metadata domain of the GTiff driver,
   https://gdal.org/en/stable/drivers/raster/gtiff.html#metadata);
2. GDAL's virtual file layer fetches their bytes, in one ``VSIFReadMultiRangeL`` call: the same
   ranged GETs (adjacent tiles merged), retries, credentials and caches as GDAL's own reads of
   ``/vsis3/`` and ``/vsicurl/`` (the configuration of the ``rasterio.Env`` around the call);
3. ISA-L inflates each tile (``isal``, https://github.com/pycompression/python-isal: BSD/PSF,
   manylinux2014 wheels, the GIL released), and ``cloudfree._blocks.place`` undoes the
   predictor and writes the tile's part of the window straight into the caller's array.

Anything else goes to GDAL unchanged (:func:`layout` returns None): another driver (a VRT) or
compression, a predictor other than 1 or 2, NBITS, samples other than 8 or 16 bit unsigned,
big-endian files, strips instead of tiles, or bands read in another order than stored; and when
``isal`` or the compiled ``_blocks`` is missing. The pixels are GDAL's either way (tests compare
both paths on real Earth Search files and on every layout this reads); a tile the file does not
store (sparse, offset 0) reads as the nodata value, as in GDAL.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import SourceReadError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .windows import Window

_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.I)


@cache
def _compiled() -> Any | None:
    """(``_blocks.place``, ``isal_zlib.decompress``), or None when either is missing."""
    try:
        from isal.isal_zlib import decompress

        from ._blocks import place
    except ImportError:
        return None
    return place, decompress


def decoder() -> str:
    """What inflates the source tiles in this process: ``"isal"`` (here, this module) or
    ``"gdal"`` (``isal`` or the compiled ``_blocks`` missing). The median Lambda logs it."""
    return "gdal" if _compiled() is None else "isal"


@cache
def _gdal() -> ctypes.CDLL | None:
    """rasterio's libgdal with the VSI functions typed, None if it is not mapped."""
    import rasterio  # noqa: F401  (maps libgdal)

    from .deflate import _mapped

    paths = _mapped(r"^libgdal")
    if not paths:
        return None
    lib = ctypes.CDLL(paths[0])
    lib.VSIFOpenL.restype = ctypes.c_void_p
    lib.VSIFOpenL.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.VSIFCloseL.argtypes = [ctypes.c_void_p]
    lib.VSIFReadMultiRangeL.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                                        ctypes.POINTER(ctypes.c_uint64),
                                        ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p]
    lib.VSIFReadL.restype = ctypes.c_size_t
    lib.VSIFReadL.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                              ctypes.c_void_p]
    lib.CPLGetLastErrorMsg.restype = ctypes.c_char_p
    return lib


def vsi_path(href: str) -> str | None:
    """The path GDAL opens for ``href`` (``s3://b/k`` -> ``/vsis3/b/k``, ``https://...`` ->
    ``/vsicurl/https://...``, a local path as it is), None for other schemes."""
    m = _SCHEME.match(href)
    if not m:
        return href
    scheme = m.group(1).lower()
    if scheme == "s3":
        return "/vsis3/" + href[m.end():]
    return "/vsicurl/" + href if scheme in ("http", "https") else None


@dataclass(frozen=True)
class Layout:
    """How one band (or the pixel-interleaved samples) of a GeoTIFF is tiled and encoded."""

    tile_h: int
    tile_w: int
    samples: int  # per pixel in a tile: 1, or the count of a pixel-interleaved file
    itemsize: int  # 1 or 2
    predictor: int  # 1 (none) or 2 (horizontal)
    bidx: int  # the band whose tiles hold the data (1 for pixel-interleaved files)
    nodata: int


def layout(src: Any, band_index: int | Sequence[int]) -> Layout | None:
    """The tiling of ``band_index`` of ``src`` (an open rasterio dataset) when this module reads
    it exactly as GDAL would, else None (GDAL reads it)."""
    from rasterio.enums import Compression, Interleaving

    if _compiled() is None or src.driver != "GTiff" or src.compression != Compression.deflate \
            or len(set(src.block_shapes)) != 1:
        return None
    structure = src.tags(ns="IMAGE_STRUCTURE")
    predictor = int(structure.get("PREDICTOR", 1))
    dtypes = set(src.dtypes)
    if predictor not in (1, 2) or "NBITS" in {**structure, **src.tags(1, ns="IMAGE_STRUCTURE")} \
            or len(dtypes) != 1 or \
            not dtypes <= {"uint8", "uint16"} or not src.profile.get("tiled"):
        return None
    itemsize = np.dtype(src.dtypes[0]).itemsize
    (tile_h, tile_w), = set(src.block_shapes)
    if isinstance(band_index, int):
        if src.count != 1 and src.interleaving != Interleaving.band:
            return None
        samples, bidx = 1, band_index
    elif list(band_index) == list(range(1, src.count + 1)) and \
            src.interleaving == Interleaving.pixel:
        samples, bidx = src.count, 1
    else:
        return None
    if samples > 4 or not 1 <= bidx <= src.count:
        return None
    nodata = 0 if src.nodata is None else src.nodata
    if nodata != int(nodata) or not 0 <= nodata < 256 ** itemsize:
        return None
    return Layout(tile_h, tile_w, samples, itemsize, predictor, bidx, int(nodata))


def tile_range(src: Any, tx: int, ty: int, bidx: int = 1) -> tuple[int, int] | None:
    """(offset, size) in the file of tile (``tx``, ``ty``) of band ``bidx`` of ``src`` (an open
    rasterio GTiff dataset), None for a tile the file does not store (sparse)."""
    off = src.get_tag_item(f"BLOCK_OFFSET_{tx}_{ty}", "TIFF", bidx=bidx)
    size = src.get_tag_item(f"BLOCK_SIZE_{tx}_{ty}", "TIFF", bidx=bidx)
    if off and size and int(off) > 0 and int(size) > 0:
        return int(off), int(size)
    return None


def fetch(path: str, ranges: Sequence[tuple[int, int]], head: int = 0
          ) -> tuple[bytes, list[np.ndarray]]:
    """The file's first ``head`` bytes and the bytes of ``ranges`` ((offset, size) pairs) of
    ``path`` (a GDAL path), through one GDAL file handle: ``VSIFReadL`` for the head (GDAL's
    /vsicurl/ serves it from the header it cached when the file was opened), one
    ``VSIFReadMultiRangeL`` for the ranges. Raises ``OSError`` with GDAL's message."""
    lib = _gdal()
    if lib is None:
        raise OSError("libgdal is not loaded")
    bufs = [np.empty(n, np.uint8) for _, n in ranges]
    n = len(ranges)
    fp = lib.VSIFOpenL(path.encode(), b"rb")
    if not fp:
        raise OSError(f"cannot open {path}: {lib.CPLGetLastErrorMsg().decode(errors='replace')}")
    try:
        first = ctypes.create_string_buffer(head)
        got = lib.VSIFReadL(first, 1, head, fp) if head else 0
        if n and lib.VSIFReadMultiRangeL(
                n, (ctypes.c_void_p * n)(*(b.ctypes.data for b in bufs)),
                (ctypes.c_uint64 * n)(*(o for o, _ in ranges)),
                (ctypes.c_size_t * n)(*(s for _, s in ranges)), fp) != 0:
            raise OSError(f"reading {n} ranges of {path}: "
                          f"{lib.CPLGetLastErrorMsg().decode(errors='replace')}")
    finally:
        lib.VSIFCloseL(fp)
    return first.raw[:got], bufs


def read_into(src: Any, href: str, window: Window, out: np.ndarray,
              band_index: int | Sequence[int] = 1) -> bool:
    """Read ``window`` of ``band_index`` of ``src`` (opened from ``href``) into ``out`` ((h, w),
    or (samples, h, w) for a pixel-interleaved read of every band) by inflating the tiles here.
    False, with nothing read, when GDAL must read it (:func:`layout`, an unusual ``out``)."""
    lay = layout(src, band_index)
    path = vsi_path(href)
    shape = window.shape if lay is None or lay.samples == 1 else (lay.samples, *window.shape)
    if lay is None or path is None or out.shape != shape or \
            out.dtype.itemsize != lay.itemsize or out.dtype.kind != "u" or \
            not out.flags.c_contiguous or window.row_off < 0 or window.col_off < 0 or \
            window.row_off + window.height > src.height or \
            window.col_off + window.width > src.width or window.height < 1 or window.width < 1:
        return False
    if _gdal() is None:
        return False
    place, decompress = _compiled()
    tiles = [(ty, tx, tile_range(src, tx, ty, lay.bidx))
             for ty in range(window.row_off // lay.tile_h,
                             (window.row_off + window.height - 1) // lay.tile_h + 1)
             for tx in range(window.col_off // lay.tile_w,
                             (window.col_off + window.width - 1) // lay.tile_w + 1)]
    stored = [(ty, tx) for ty, tx, where in tiles if where]
    # the file's byte order ("II": little-endian) from the same handle as the tiles
    head, datas = fetch(path, [where for _, _, where in tiles if where],
                        head=2 if lay.itemsize > 1 else 0)
    if lay.itemsize > 1 and head != b"II":
        return False
    for ty, tx, where in tiles:
        if where is None:  # a sparse tile: nodata, as GDAL reads it
            _fill(out, window, lay, ty, tx)
    raw_size = lay.tile_h * lay.tile_w * lay.samples * lay.itemsize
    for (ty, tx), data in zip(stored, datas, strict=True):
        tile = decompress(data, bufsize=raw_size)
        if len(tile) != raw_size:
            raise SourceReadError(f"{href}: tile ({tx}, {ty}) inflates to {len(tile)} bytes, "
                                  f"not {raw_size}", {href: "corrupt tile"})
        r0, r1, c0, c1, orow, ocol = _overlap(window, lay, ty, tx)
        place(tile, lay.itemsize, lay.tile_h, lay.tile_w, lay.samples, lay.predictor,
              r0, r1, c0, c1, out, window.height, window.width, orow, ocol)
    return True


def _overlap(window: Window, lay: Layout, ty: int, tx: int) -> tuple[int, ...]:
    """Rows r0..r1 and columns c0..c1 of tile (ty, tx) inside ``window``, and where they go in
    the window (orow, ocol)."""
    top, left = ty * lay.tile_h, tx * lay.tile_w
    r0 = max(window.row_off, top) - top
    r1 = min(window.row_off + window.height, top + lay.tile_h) - top
    c0 = max(window.col_off, left) - left
    c1 = min(window.col_off + window.width, left + lay.tile_w) - left
    return r0, r1, c0, c1, top + r0 - window.row_off, left + c0 - window.col_off


def _fill(out: np.ndarray, window: Window, lay: Layout, ty: int, tx: int) -> None:
    r0, r1, c0, c1, orow, ocol = _overlap(window, lay, ty, tx)
    out[..., orow:orow + r1 - r0, ocol:ocol + c1 - c0] = lay.nodata
