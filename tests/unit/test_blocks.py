"""Tiles inflated here (cloudfree.blocks) give GDAL's pixels, or GDAL reads them.

GIVEN GeoTIFFs in the layouts Earth Search publishes (tiled DEFLATE, predictor 2, uint16 bands,
uint8 SCL, pixel-interleaved RGB) and in ones it does not,
WHEN windows of every shape (inside one tile, across tiles, at the partial edge tiles) are read
through ``blocks.read_into`` and through ``windows.read_window``,
THEN the arrays equal GDAL's own read, and layouts this module does not handle are left to
GDAL (``read_into`` returns False, ``read_window`` still returns GDAL's pixels).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window as RWindow

from cloudfree import blocks, windows
from cloudfree.errors import SourceReadError
from cloudfree.windows import Window

pytestmark = pytest.mark.skipif(blocks._compiled() is None, reason="no isal or no _blocks")


def _write(path, data: np.ndarray, **extra) -> str:
    """``data`` (bands, h, w) as a tiled GeoTIFF (DEFLATE, 256 px tiles unless ``extra``)."""
    profile = {"driver": "GTiff", "dtype": str(data.dtype), "count": data.shape[0],
               "height": data.shape[1], "width": data.shape[2], "crs": "EPSG:32629",
               "transform": from_origin(199980, 2800020, 10, 10), "nodata": 0,
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
               **extra}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


def _pixels(rng, dtype, bands: int, h: int, w: int) -> np.ndarray:
    """Smooth field plus noise (the predictor's case), with zeros (nodata) here and there."""
    hi = 255 if dtype == "uint8" else 12000
    y, x = np.mgrid[0:h, 0:w]
    base = (np.sin(x / 37) * np.cos(y / 23) + 1) * hi / 3
    data = np.stack([base + rng.integers(0, hi // 8, (h, w)) for _ in range(bands)])
    data[:, rng.random((h, w)) < 0.02] = 0
    return np.clip(data, 0, hi).astype(dtype)


def _windows(rng, h: int, w: int, n: int = 25) -> list[Window]:
    """Random windows, plus a whole tile, the whole raster and the bottom-right corner."""
    out = [Window(0, 0, 256, 256), Window(0, 0, h, w), Window(h - 7, w - 5, 7, 5),
           Window(250, 250, 12, 12)]
    for _ in range(n):
        r, c = int(rng.integers(0, h)), int(rng.integers(0, w))
        out.append(Window(r, c, int(rng.integers(1, h - r + 1)), int(rng.integers(1, w - c + 1))))
    return out


def _gdal(path: str, window: Window, band_index) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band_index, window=RWindow(window.col_off, window.row_off, window.width,
                                                   window.height))


def _ours(path: str, window: Window, band_index) -> np.ndarray | None:
    """The window read here, None when this module leaves it to GDAL; through a rasterio
    dataset (``read_into``) and from the IFD alone (``read_path``), which must agree on both."""
    with rasterio.open(path) as src:
        shape = window.shape if isinstance(band_index, int) else (len(band_index),
                                                                  *window.shape)
        out = np.full(shape, 7, src.dtypes[0])
        got = out if blocks.read_into(src, path, window, out, band_index) else None
    direct = np.full(shape, 9, out.dtype)
    by_ifd = direct if blocks.read_path(path, window, direct, band_index) else None
    assert (got is None) == (by_ifd is None), (got is None, by_ifd is None)
    if got is not None:
        np.testing.assert_array_equal(by_ifd, got)
    return got


@pytest.mark.parametrize("dtype,bands,predictor,interleave", [
    ("uint16", 1, 2, "band"),   # Earth Search's reflectance bands
    ("uint16", 1, 1, "band"),   # no predictor (realdata's rio-tiler-pds fixtures)
    ("uint8", 1, 2, "band"),    # SCL
    ("uint8", 3, 2, "pixel"),   # the visual image
    ("uint8", 3, 1, "pixel"),
    ("uint16", 3, 2, "pixel"),
])
def test_every_window_is_gdals(tmp_path, dtype, bands, predictor, interleave):
    rng = np.random.default_rng(bands * 10 + predictor)
    h, w = 700, 610  # partial tiles at the right and bottom
    path = _write(tmp_path / "a.tif", _pixels(rng, dtype, bands, h, w), predictor=predictor,
                  interleave=interleave)
    band_index = 1 if bands == 1 else [1, 2, 3]
    with rasterio.open(path) as src:
        lay = blocks.layout(src, band_index)
    assert lay == blocks.Layout(256, 256, bands, np.dtype(dtype).itemsize, predictor, 1, 0)
    for window in _windows(rng, h, w):
        ours = _ours(path, window, band_index)
        assert ours is not None
        np.testing.assert_array_equal(ours, _gdal(path, window, band_index), err_msg=str(window))


def test_one_band_of_a_band_interleaved_file(tmp_path):
    rng = np.random.default_rng(3)
    data = _pixels(rng, "uint16", 3, 300, 520)
    path = _write(tmp_path / "b.tif", data, predictor=2, interleave="band")
    for b in (1, 2, 3):
        with rasterio.open(path) as src:
            assert blocks.layout(src, b).bidx == b
        for window in _windows(rng, 300, 520, 6):
            np.testing.assert_array_equal(_ours(path, window, b), _gdal(path, window, b))


def test_a_sparse_tile_reads_as_nodata(tmp_path):
    """A tile the file does not store (SPARSE_OK: offset and size 0) reads as GDAL reads it:
    the nodata value."""
    path = str(tmp_path / "sparse.tif")
    with rasterio.open(path, "w", driver="GTiff", dtype="uint16", count=1, height=512,
                       width=512, crs="EPSG:32629", transform=from_origin(0, 0, 10, 10),
                       nodata=0, tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       predictor=2, sparse_ok=True) as dst:
        dst.write(np.full((256, 256), 1234, np.uint16), 1, window=RWindow(256, 0, 256, 256))
    with rasterio.open(path) as src:
        assert src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1) in (None, "", "0")
    window = Window(100, 100, 300, 300)
    ours = _ours(path, window, 1)
    np.testing.assert_array_equal(ours, _gdal(path, window, 1))
    assert (ours == 0).sum() > 0 and (ours == 1234).sum() == 156 * 144


@pytest.mark.parametrize("extra,band_index", [
    ({"compress": "lzw", "predictor": 2}, 1),
    ({"compress": "zstd"}, 1),
    ({"predictor": 2, "ENDIANNESS": "BIG"}, 1),
    ({"nbits": 12}, 1),
    ({"tiled": False, "blockxsize": None, "blockysize": None}, 1),
    ({"interleave": "pixel"}, [3, 2, 1]),  # bands in another order than stored
    ({"interleave": "pixel"}, 2),  # one sample of a pixel-interleaved file
])
def test_other_layouts_are_left_to_gdal(tmp_path, extra, band_index):
    rng = np.random.default_rng(11)
    count = 1 if isinstance(band_index, int) and "interleave" not in extra else 3
    data = _pixels(rng, "uint16", count, 300, 300)
    extra = {k: v for k, v in extra.items() if v is not None}
    path = _write(tmp_path / "o.tif", data, **extra)
    window = Window(10, 20, 270, 250)
    assert _ours(path, window, band_index) is None
    shape = window.shape if isinstance(band_index, int) else (3, *window.shape)
    out = np.empty(shape, np.uint16)
    got = windows.read_window(path, window, band_index=band_index, out=out)
    np.testing.assert_array_equal(got, _gdal(path, window, band_index))


def test_other_dtypes_and_a_vrt_are_left_to_gdal(tmp_path):
    rng = np.random.default_rng(12)
    path = _write(tmp_path / "i.tif", _pixels(rng, "uint16", 1, 300, 300).astype("int16"),
                  predictor=2)
    with rasterio.open(path) as src:
        assert blocks.layout(src, 1) is None
    tif = _write(tmp_path / "u.tif", _pixels(rng, "uint16", 1, 300, 300), predictor=2)
    vrt = tmp_path / "u.vrt"
    vrt.write_text(
        '<VRTDataset rasterXSize="300" rasterYSize="300"><VRTRasterBand dataType="UInt16" '
        f'band="1"><SimpleSource><SourceFilename>{tif}</SourceFilename><SourceBand>1'
        '</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
    assert _ours(str(vrt), Window(0, 0, 50, 50), 1) is None
    got = windows.read_window(str(vrt), Window(5, 6, 50, 40), out=np.empty((50, 40), np.uint16))
    np.testing.assert_array_equal(got, _gdal(tif, Window(5, 6, 50, 40), 1))


def _corrupt_tile(path: str, tx: int, ty: int, at: int, n: int) -> None:
    """Overwrite ``n`` bytes of tile (``tx``, ``ty``), ``at`` bytes into its data."""
    with rasterio.open(path) as src:
        off = int(src.get_tag_item(f"BLOCK_OFFSET_{tx}_{ty}", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(off + at)
        f.write(b"\xff" * n)


def _assert_the_read_fails(path: str, window: Window, monkeypatch) -> None:
    """``read_window`` raises SourceReadError naming ``path`` (after its retries)."""
    monkeypatch.setattr(windows, "_sleep", lambda s: None)
    with pytest.raises(SourceReadError) as err:
        windows.read_window(path, window, out=np.empty(window.shape, np.uint16))
    assert path in err.value.failures


def test_a_corrupt_tile_fails_the_read_and_names_the_file(tmp_path, monkeypatch):
    """Bytes of a tile overwritten: the read raises SourceReadError naming the href after the
    usual retries (windows.READ_ATTEMPTS), not garbage pixels."""
    path = _write(tmp_path / "c.tif", _pixels(np.random.default_rng(4), "uint16", 1, 256, 256),
                  predictor=2)
    _corrupt_tile(path, 0, 0, at=10, n=64)
    _assert_the_read_fails(path, Window(0, 0, 64, 64), monkeypatch)


def test_read_stack_takes_this_path_and_a_wrong_dtype_is_an_error(tmp_path, monkeypatch):
    """read_stack into an array decodes every scene here (GDAL's read is not called), and an
    array of another dtype than the files' is refused, not filled by a silent cast."""
    rng = np.random.default_rng(6)
    paths = [_write(tmp_path / f"s{i}.tif", _pixels(rng, "uint16", 1, 300, 300), predictor=2)
             for i in range(4)]
    window = Window(30, 40, 200, 220)
    want = np.stack([_gdal(p, window, 1) for p in paths])

    def no_gdal(*a, **k):
        raise AssertionError("GDAL read called")

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", no_gdal)
    got = windows.read_stack(paths, window, threads=2, out=np.empty((4, 200, 220), np.uint16))
    np.testing.assert_array_equal(got, want)
    from cloudfree.errors import InputError

    with pytest.raises(InputError, match="uint16 pixels, not the uint8"):
        windows.read_stack(paths, window, threads=2, out=np.empty((4, 200, 220), np.uint8))


def test_vsi_paths():
    assert blocks.vsi_path("s3://bucket/a/B04.tif") == "/vsis3/bucket/a/B04.tif"
    assert blocks.vsi_path("https://h.example/x/B04.tif") == "/vsicurl/https://h.example/x/B04.tif"
    assert blocks.vsi_path("http://127.0.0.1:9/x.tif") == "/vsicurl/http://127.0.0.1:9/x.tif"
    assert blocks.vsi_path("/data/x.tif") == "/data/x.tif"
    assert blocks.vsi_path("gs://b/x.tif") is None


def test_an_scl_area_is_read_here(tmp_path, monkeypatch):
    """windows.read_scl_area (the SCL read once per scene and window) takes this path: the
    same classes as the file holds, GDAL's read not called; clipped at the raster's edge."""
    rng = np.random.default_rng(8)
    scl = rng.integers(0, 12, (1, 600, 700), dtype=np.uint8)
    path = _write(tmp_path / "scl.tif", scl, blockxsize=512, blockysize=512)

    def no_gdal(*a, **k):
        raise AssertionError("GDAL read called")

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", no_gdal)
    held = windows.read_scl_area(path, Window(10, 20, 700, 550))
    assert held.area == Window(10, 20, 590, 550) and held.size == (600, 700)
    np.testing.assert_array_equal(held.scl20, scl[0, 10:, 20:570])



def test_over_http_as_many_requests_as_gdal(tmp_path):
    """Over ``/vsicurl/`` (Earth Search's https hrefs) the tiles come in the very HTTP requests
    GDAL's own read makes (the header, then the window's tiles merged into one ranged GET per
    row of tiles) and give its pixels: a Range-serving HTTP server records them."""
    import re
    from http.server import BaseHTTPRequestHandler

    from cloudfree import assets, storage
    from cloudfree.httpserver import BackgroundServer

    rng = np.random.default_rng(9)
    path = _write(tmp_path / "h.tif", _pixels(rng, "uint16", 1, 1024, 1024), predictor=2)
    data = open(path, "rb").read()
    seen: list[str] = []

    class Ranged(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _head(self, code: int, length: int, extra: dict | None = None) -> None:
            self.send_response(code)
            for k, v in {"Content-Length": str(length), **(extra or {})}.items():
                self.send_header(k, v)
            self.end_headers()

        def do_HEAD(self):
            seen.append("HEAD")
            self._head(200, len(data), {"Accept-Ranges": "bytes"})

        def do_GET(self):
            m = re.match(r"bytes=(\d+)-(\d+)", self.headers.get("Range") or "")
            if not self.path.startswith("/h.tif") or not m:
                seen.append(f"GET {self.path} (404)")
                return self._head(404, 0)
            a, b = int(m.group(1)), int(m.group(2))
            body = data[a:b + 1]
            seen.append(f"GET {a}-{a + len(body) - 1}")
            self._head(206, len(body), {"Content-Range": f"bytes {a}-{a + len(body) - 1}/"
                                                         f"{len(data)}"})
            self.wfile.write(body)

    server = BackgroundServer(Ranged)
    server.start()
    try:
        window = Window(256, 256, 512, 768)  # 2 x 3 tiles
        got = {}
        for how in ("gdal", "blocks", "path"):
            seen.clear()
            url = f"{server.base_url}/h.tif?{how}"  # another URL: nothing cached
            out = np.empty(window.shape, np.uint16)
            if how == "path":  # no dataset: the IFD read from the file's first 16 KiB
                with storage.gdal_env():
                    assert blocks.read_path(url, window, out)
            else:
                with storage.gdal_env(), rasterio.open(url) as src:
                    if how == "gdal":
                        out = src.read(1, window=window.to_rasterio())
                    else:
                        assert blocks.read_into(src, url, window, out)
            got[how] = (out, list(seen))
        # the select-time check of the same file: its HEAD, then GDAL's open; the tile arrays
        # (blocks.stored_end) come from the header that open fetched, no request more
        seen.clear()
        with storage.gdal_env(), rasterio.open(f"{server.base_url}/h.tif?open"):
            opened = list(seen)
        seen.clear()
        assert assets.check_asset(f"{server.base_url}/h.tif?check", "blue") is None
        checked = list(seen)
    finally:
        server.stop()
    assert sorted(checked) == sorted(["HEAD", *opened]), (checked, opened)
    np.testing.assert_array_equal(got["blocks"][0], got["gdal"][0])
    # the very same requests: HEAD, the header's 32 KiB, one ranged GET per row of tiles (those
    # run in parallel, GDAL_HTTP_MULTIPLEX: their order varies)
    assert sorted(got["blocks"][1]) == sorted(got["gdal"][1]), got
    # without a dataset (the IFD read from the file's first 16 KiB): the very same requests
    np.testing.assert_array_equal(got["path"][0], got["gdal"][0])
    assert sorted(got["path"][1]) == sorted(got["gdal"][1]), got
    assert len([r for r in got["blocks"][1] if r.startswith("GET") and "404" not in r]) == 3


def _gdal_end(path: str) -> int:
    """The last stored full-resolution block's end, asked of GDAL one block at a time."""
    with rasterio.open(path) as src:
        bw, bh = src.block_shapes[0]
        ends = [sum(where) for b in range(1, src.count + 1)
                for y in range(-(-src.height // bh)) for x in range(-(-src.width // bw))
                if (where := blocks.tile_range(src, x, y, b))]
    return max(ends, default=0)


@pytest.mark.parametrize("extra,bands,size", [
    ({}, 1, (700, 900)),                                       # classic TIFF, arrays inline
    ({"BIGTIFF": "YES"}, 1, (700, 900)),                       # BigTIFF: LONG8 arrays
    ({"interleave": "band"}, 3, (700, 900)),                   # one array for every band
    ({"interleave": "pixel"}, 3, (700, 900)),                  # the visual image's layout
    ({"blockxsize": 16, "blockysize": 16}, 1, (2100, 2100)),   # 17,689 tiles: arrays past 16 KiB
    ({"blockxsize": 16, "blockysize": 16, "BIGTIFF": "YES"}, 1, (2100, 2100)),
    ({"blockxsize": 256, "blockysize": 256}, 1, (256, 256)),   # one tile: its offset inline
])
def test_stored_end_is_gdals_last_block(tmp_path, extra, bands, size):
    """The IFD's TileOffsets + TileByteCounts give the very end GDAL gives block by block,
    for classic and BigTIFF, band and pixel interleaving, arrays within and beyond the first
    16 KiB, and a single tile (the arrays' one value stored in the IFD entry itself)."""
    rng = np.random.default_rng(3)
    path = _write(tmp_path / "f.tif", _pixels(rng, "uint16", bands, *size), **extra)
    end = blocks.stored_end(path)
    assert end == _gdal_end(path) > 0
    assert end <= (tmp_path / "f.tif").stat().st_size


def test_stored_end_skips_sparse_tiles_and_declines_what_it_does_not_parse(tmp_path):
    rng = np.random.default_rng(4)
    data = _pixels(rng, "uint16", 1, 700, 900)
    data[:, 512:, :] = 0  # the last row of tiles all nodata: not stored with SPARSE_OK
    sparse = _write(tmp_path / "s.tif", data, SPARSE_OK=True)
    assert blocks.stored_end(sparse) == _gdal_end(sparse) > 0
    with rasterio.open(sparse) as src:
        assert blocks.tile_range(src, 3, 2) is None  # really sparse
    empty = _write(tmp_path / "e.tif", np.zeros((1, 300, 300), np.uint16), SPARSE_OK=True)
    assert blocks.stored_end(empty) == 0
    big_endian = _write(tmp_path / "m.tif", data, ENDIANNESS="BIG")
    assert blocks.stored_end(big_endian) is None  # GDAL answers for it
    striped = _write(tmp_path / "p.tif", data, tiled=False)
    assert blocks.stored_end(striped) is None  # strips, not tiles
    (tmp_path / "x.tif").write_bytes(b"not a tiff at all" * 10)
    assert blocks.stored_end(str(tmp_path / "x.tif")) is None
    with pytest.raises(OSError, match="cannot open"):
        blocks.stored_end(str(tmp_path / "missing.tif"))



def test_a_window_ending_inside_a_tile_inflates_its_first_rows_only(tmp_path, monkeypatch):
    """The tiles a window's last rows cut are inflated up to those rows (``decompressobj``
    with a length), whole tiles whole: GDAL's pixels either way, and a corrupt start of a
    partly read tile still fails the read."""
    rng = np.random.default_rng(21)
    path = _write(tmp_path / "r.tif", _pixels(rng, "uint16", 1, 512, 512), predictor=2)
    place, decompress, decompressobj = blocks._compiled()
    asked: list[int] = []

    class Counting:
        def __init__(self):
            self.inner = decompressobj()

        def decompress(self, data, max_length=0):
            asked.append(max_length)
            return self.inner.decompress(data, max_length)

    monkeypatch.setattr(blocks, "_compiled", lambda: (place, decompress, Counting))
    window = Window(200, 100, 60, 300)  # rows 200..259: all of tile row 0's last 56, 4 of row 1
    out = np.empty(window.shape, np.uint16)
    assert blocks.read_path(path, window, out)
    np.testing.assert_array_equal(out, _gdal(path, window, 1))
    assert asked == [4 * 256 * 2] * 2  # the two tiles of row 1, 4 rows each; row 0 whole
    _corrupt_tile(path, 0, 1, at=2, n=32)
    _assert_the_read_fails(path, Window(256, 0, 3, 100), monkeypatch)
