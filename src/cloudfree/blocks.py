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
    """(``_blocks.place``, ``isal_zlib.decompress``, ``isal_zlib.decompressobj``), or None when
    either module is missing."""
    try:
        from isal.isal_zlib import decompress, decompressobj

        from ._blocks import place
    except ImportError:
        return None
    return place, decompress, decompressobj


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


#: TIFF field types (TIFF 6.0 and BigTIFF, https://www.awaresystems.be/imaging/tiff/bigtiff.html)
#: read here: BYTE, ASCII, SHORT, LONG, LONG8, as numpy little-endian dtypes.
_TIFF_TYPES = {1: "<u1", 2: "<u1", 3: "<u2", 4: "<u4", 16: "<u8"}
#: The tags of the first IFD this module reads (TIFF 6.0 numbering; 42113 is GDAL's own
#: ``GDAL_NODATA`` ASCII tag, https://gdal.org/en/stable/drivers/raster/gtiff.html#nodata-value;
#: Compression 8 and 32946 are both DEFLATE, as libtiff's tif_zip.c registers them).
_TAGS = {256: "width", 257: "height", 258: "bits", 259: "compression", 277: "samples",
         284: "planar", 317: "predictor", 322: "tile_w", 323: "tile_h", 324: "offsets",
         325: "sizes", 339: "sample_format", 42113: "nodata"}
#: Bytes of the file's start read first: GDAL's /vsicurl/ and /vsis3/ fetch the first 16 KiB
#: or more when they open a file, so for a COG (IFDs and their arrays first) this costs no
#: request more (tests/unit/test_blocks.py records them).
HEADER_BYTES = 16384


class _VsiFile:
    """One GDAL virtual file handle (``VSIFOpenL``): GDAL's ranged GETs, retries, credentials
    and caches for ``/vsis3/`` and ``/vsicurl/`` (the ``rasterio.Env`` around the call)."""

    def __init__(self, path: str):
        self.lib = _gdal()
        if self.lib is None:
            raise OSError("libgdal is not loaded")
        self.path = path
        self.fp = self.lib.VSIFOpenL(path.encode(), b"rb")
        if not self.fp:
            raise OSError(f"cannot open {path}: {self._error()}")
        self.head = b""

    def _error(self) -> str:
        return self.lib.CPLGetLastErrorMsg().decode(errors="replace")

    def __enter__(self) -> _VsiFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.lib.VSIFCloseL(self.fp)

    def read_head(self, size: int) -> bytes:
        """The file's first ``size`` bytes (fewer for a smaller file); kept for :meth:`read`."""
        buf = ctypes.create_string_buffer(size)
        got = self.lib.VSIFReadL(buf, 1, size, self.fp) if size else 0
        self.head = buf.raw[:got]
        return self.head

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset``: from the head when it holds them, else one range."""
        if offset + size <= len(self.head):
            return self.head[offset:offset + size]
        return self.read_ranges([(offset, size)])[0].tobytes()

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """The bytes of ``ranges`` ((offset, size) pairs), in one ``VSIFReadMultiRangeL``."""
        bufs = [np.empty(n, np.uint8) for _, n in ranges]
        n = len(ranges)
        if n and self.lib.VSIFReadMultiRangeL(
                n, (ctypes.c_void_p * n)(*(b.ctypes.data for b in bufs)),
                (ctypes.c_uint64 * n)(*(o for o, _ in ranges)),
                (ctypes.c_size_t * n)(*(s for _, s in ranges)), self.fp) != 0:
            raise OSError(f"reading {n} ranges of {self.path}: {self._error()}")
        return bufs


@dataclass(frozen=True)
class Header:
    """What the first IFD of a little-endian tiled TIFF says (the full-resolution image)."""

    width: int
    height: int
    tile_w: int
    tile_h: int
    samples: int
    bits: tuple[int, ...]
    sample_format: tuple[int, ...]
    compression: int
    predictor: int
    planar: int  # 1: samples interleaved in a tile; 2: one plane (a set of tiles) per band
    nodata: str | None  # GDAL_NODATA's text
    offsets: np.ndarray  # uint64, tile index = plane x tiles per plane + row x across + column
    sizes: np.ndarray

    @property
    def across(self) -> int:
        return -(-self.width // self.tile_w)

    @property
    def tiles_per_plane(self) -> int:
        return self.across * -(-self.height // self.tile_h)

    @property
    def stored_end(self) -> int:
        """Where the last stored tile ends (max offset + size; sparse tiles, offset or size
        0, end nowhere): 0 when none is stored."""
        stored = (self.offsets > 0) & (self.sizes > 0)
        return int((self.offsets + self.sizes)[stored].max()) if stored.any() else 0


def read_header(f: _VsiFile) -> Header | None:
    """The first IFD of the file behind ``f``, None when it is not a little-endian tiled TIFF
    (or its IFD lacks a tag this module needs, or does not parse)."""
    import struct

    head = f.read_head(HEADER_BYTES)
    if len(head) < 16 or head[:2] != b"II":
        return None
    version = struct.unpack_from("<H", head, 2)[0]
    if version == 42:  # classic TIFF: 2-byte count, 12-byte entries, 4-byte values
        count_fmt, entry_fmt, entry_size, inline = "<H", "<HHII", 12, 4
        ifd = struct.unpack_from("<I", head, 4)[0]
    elif version == 43:  # BigTIFF: 8-byte count, 20-byte entries, 8-byte values
        count_fmt, entry_fmt, entry_size, inline = "<Q", "<HHQQ", 20, 8
        ifd = struct.unpack_from("<Q", head, 8)[0]
    else:
        return None
    count_size = struct.calcsize(count_fmt)
    try:
        n = struct.unpack(count_fmt, f.read(ifd, count_size))[0]
        entries = f.read(ifd + count_size, n * entry_size)
        tags: dict[str, np.ndarray] = {}
        for i in range(n):
            tag, kind, count, value = struct.unpack_from(entry_fmt, entries, i * entry_size)
            if tag not in _TAGS:
                continue
            if kind not in _TIFF_TYPES:
                return None
            dtype = np.dtype(_TIFF_TYPES[kind])
            size = count * dtype.itemsize
            raw = entries[(i + 1) * entry_size - inline:][:size] if size <= inline \
                else f.read(value, size)
            tags[_TAGS[tag]] = np.frombuffer(raw, dtype, count)
    except struct.error:
        return None
    need = ("width", "height", "tile_w", "tile_h", "offsets", "sizes", "bits")
    if any(k not in tags or not len(tags[k]) for k in need) or \
            tags["offsets"].shape != tags["sizes"].shape:
        return None

    def one(key: str, default: int) -> int:
        return int(tags[key][0]) if key in tags and len(tags[key]) else default

    nodata = tags.get("nodata")
    return Header(one("width", 0), one("height", 0), one("tile_w", 0), one("tile_h", 0),
                  one("samples", 1), tuple(int(b) for b in tags["bits"]),
                  tuple(int(v) for v in tags.get("sample_format", (1,))),
                  one("compression", 1), one("predictor", 1), one("planar", 1),
                  None if nodata is None else nodata.tobytes().rstrip(b"\0").decode(
                      errors="replace"),
                  tags["offsets"].astype(np.uint64), tags["sizes"].astype(np.uint64))


def header(path: str) -> Header | None:
    """:func:`read_header` of the file at ``path`` (a GDAL path, :func:`vsi_path`); ``OSError``
    when it cannot be read."""
    with _VsiFile(path) as f:
        return read_header(f)


def stored_end(path: str) -> int | None:
    """The byte where the last stored tile of the first IFD (the full-resolution image, every
    band) ends: max(TileOffsets + TileByteCounts) over the tiles the file stores. Parsed from
    the IFD itself, two arrays read at once, where GDAL answers ``BLOCK_OFFSET_x_y`` one tile
    per call (30 us each through rasterio: 0.9 s for bench-peer's 240 whole-tile assets).
    ``path``: a GDAL path (:func:`vsi_path`). None when the file is not a little-endian tiled
    TIFF (the caller asks GDAL), or its IFD does not parse; ``OSError`` when it cannot be
    read."""
    h = header(path)
    return None if h is None else h.stored_end


def header_layout(h: Header, band_index: int | Sequence[int]) -> Layout | None:
    """:func:`layout` from the IFD alone (no GDAL dataset): the same layouts, else None."""
    if _compiled() is None or h.compression not in (8, 32946) or h.predictor not in (1, 2) \
            or len(set(h.bits)) != 1 or h.bits[0] not in (8, 16) or \
            set(h.sample_format) - {1} or not 1 <= h.samples <= 4 or h.planar not in (1, 2):
        return None
    if isinstance(band_index, int):
        if not 1 <= band_index <= h.samples or (h.samples > 1 and h.planar != 2):
            return None
        samples, bidx = 1, band_index
    elif h.samples > 1 and h.planar == 1 and list(band_index) == list(range(1, h.samples + 1)):
        samples, bidx = h.samples, 1
    else:
        return None
    itemsize = h.bits[0] // 8
    try:
        nodata = 0.0 if h.nodata is None else float(h.nodata)
    except ValueError:
        return None
    if nodata != int(nodata) or not 0 <= nodata < 256 ** itemsize:
        return None
    return Layout(h.tile_h, h.tile_w, samples, itemsize, h.predictor, bidx, int(nodata))


def _fits(window: Window, out: np.ndarray, lay: Layout, height: int, width: int) -> bool:
    """``out`` is the array this module fills for ``window`` of a ``height`` x ``width``
    raster in layout ``lay``, and the window lies inside the raster."""
    shape = window.shape if lay.samples == 1 else (lay.samples, *window.shape)
    return out.shape == shape and out.dtype.itemsize == lay.itemsize and \
        out.dtype.kind == "u" and out.flags.c_contiguous and window.row_off >= 0 and \
        window.col_off >= 0 and window.row_off + window.height <= height and \
        window.col_off + window.width <= width and window.height >= 1 and window.width >= 1


def _window_tiles(window: Window, lay: Layout) -> list[tuple[int, int]]:
    """(row, column) of every tile ``window`` touches, row-major."""
    return [(ty, tx)
            for ty in range(window.row_off // lay.tile_h,
                            (window.row_off + window.height - 1) // lay.tile_h + 1)
            for tx in range(window.col_off // lay.tile_w,
                            (window.col_off + window.width - 1) // lay.tile_w + 1)]


def read_path(href: str, window: Window, out: np.ndarray,
              band_index: int | Sequence[int] = 1) -> bool:
    """:func:`read_into` without a GDAL dataset: the layout and the tiles' places come from the
    file's first IFD (:func:`read_header`), read through the same GDAL file handle as the
    tiles. Opening a dataset through rasterio took 1.9-2.7 ms of CPU here, most of it
    rasterio's reading of the georeferencing (the CRS through PROJ), against 0.2 ms for
    GDAL's open alone; a 1024 px tile inflates in 3-5 ms, so the open was a third of a
    one-tile read. False, with nothing read, when the file is not one this module reads (the
    caller opens it with rasterio: :func:`read_into` or GDAL), or the window or ``out`` do not
    fit it."""
    path = vsi_path(href)
    if path is None or _compiled() is None or _gdal() is None:
        return False
    with _VsiFile(path) as f:
        h = read_header(f)
        lay = None if h is None else header_layout(h, band_index)
        if lay is None or not _fits(window, out, lay, h.height, h.width):
            return False
        plane = (lay.bidx - 1) * h.tiles_per_plane if h.planar == 2 else 0
        tiles = []
        for ty, tx in _window_tiles(window, lay):
            i = plane + ty * h.across + tx
            off, size = int(h.offsets[i]), int(h.sizes[i])
            tiles.append((ty, tx, (off, size) if off > 0 and size > 0 else None))
        _decode(f, href, window, out, lay, tiles)
    return True


def read_into(src: Any, href: str, window: Window, out: np.ndarray,
              band_index: int | Sequence[int] = 1) -> bool:
    """Read ``window`` of ``band_index`` of ``src`` (opened from ``href``) into ``out`` ((h, w),
    or (samples, h, w) for a pixel-interleaved read of every band) by inflating the tiles here.
    False, with nothing read, when GDAL must read it (:func:`layout`, an unusual ``out``)."""
    lay = layout(src, band_index)
    path = vsi_path(href)
    if lay is None or path is None or not _fits(window, out, lay, src.height, src.width) or \
            _gdal() is None:
        return False
    tiles = [(ty, tx, tile_range(src, tx, ty, lay.bidx)) for ty, tx in _window_tiles(window, lay)]
    with _VsiFile(path) as f:
        # the file's byte order ("II": little-endian) from the same handle as the tiles
        if lay.itemsize > 1 and f.read_head(2) != b"II":
            return False
        _decode(f, href, window, out, lay, tiles)
    return True


def _decode(f: _VsiFile, href: str, window: Window, out: np.ndarray, lay: Layout,
            tiles: list[tuple[int, int, tuple[int, int] | None]]) -> None:
    """Fetch the stored ``tiles`` ((row, column, (offset, size) or None when sparse)) through
    ``f`` in one multi-range read, inflate them and place their part of ``window`` in
    ``out``; sparse tiles read as nodata, as in GDAL."""
    place, decompress, decompressobj = _compiled()
    stored = [(ty, tx) for ty, tx, where in tiles if where]
    datas = f.read_ranges([where for _, _, where in tiles if where])
    for ty, tx, where in tiles:
        if where is None:  # a sparse tile: nodata, as GDAL reads it
            _fill(out, window, lay, ty, tx)
    row_size = lay.tile_w * lay.samples * lay.itemsize
    for (ty, tx), data in zip(stored, datas, strict=True):
        r0, r1, c0, c1, orow, ocol = _overlap(window, lay, ty, tx)
        if r1 == lay.tile_h:
            tile = decompress(data, bufsize=r1 * row_size)
            ok = len(tile) == r1 * row_size
        else:
            # the window ends inside this tile: its first r1 rows only (a DEFLATE stream
            # inflates in order, and the predictor works row by row). A window whose 60 m
            # pixels reach a few rows past its 10 m footprint (an AOI not on the 60 m grid)
            # decoded whole tiles below it for those rows.
            tile = decompressobj().decompress(data, r1 * row_size)
            ok = len(tile) == r1 * row_size
        if not ok:
            raise SourceReadError(f"{href}: tile ({tx}, {ty}) inflates to {len(tile)} bytes, "
                                  f"not {r1 * row_size}", {href: "corrupt tile"})
        place(tile, lay.itemsize, r1, lay.tile_w, lay.samples, lay.predictor,
              r0, r1, c0, c1, out, window.height, window.width, orow, ocol)


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
