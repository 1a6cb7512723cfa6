"""Can a source asset be read? The select-time check of every asset a tile's plan needs.

Across 21,000 tiles a missing or corrupt COG is a normal event; it must cost one scene-band,
not the tile. :func:`check_assets` looks at every (scene, asset) pair in parallel threads:

1. ``s3://`` objects get a ``HEAD`` through boto3 (MiniStack locally, S3 on AWS): a missing
   object is ``404``, an empty one ``corrupt: empty object``; the size is kept for step 3.
   ``http(s)://`` hrefs get a plain HEAD, local paths a ``stat``, with the same verdicts.
2. The header is opened with rasterio (one ranged read of the IFDs): an unparsable header is
   ``corrupt: <GDAL's message>``; a wrong data type or band count is ``corrupt: …`` too.
3. Truncation: the end of the last full-resolution block (the largest TileOffsets +
   TileByteCounts of the first IFD, :func:`cloudfree.blocks.stored_end`; for a file it cannot
   parse, ``BLOCK_OFFSET_x_y`` + ``BLOCK_SIZE_x_y`` of GDAL's ``TIFF`` metadata domain, the
   same arrays one block at a time) must lie within the object. Checked against a real Earth
   Search COG (``../shared/realdata/rio-tiler-pds/…/S2A_29RKH_20200219_0_L2A/B02.tif``: the
   last block ends at byte 2,251,637, the file's exact size). Sparse blocks (offset 0, size 0,
   as GDAL's ``SPARSE_OK`` writes them) end nowhere and are skipped.

Transient failures (throttling, 5xx, timeouts, connection errors) are retried ``ATTEMPTS``
times with exponential backoff; what still fails is reported as ``unreadable: …``. A check
never raises for one bad asset: it returns a reason per failing (scene, asset) pair.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from . import storage
from .bands import get_band
from .blocks import Header, header, header_layout, tile_range, vsi_path
from .errors import TransientError

#: Tries per asset (the first one included) before a transient failure counts as unreadable.
ATTEMPTS = 3
#: First backoff (s); doubled after every failed try.
BACKOFF_S = 0.5
#: Parallel checks (HEAD and header reads are latency-bound, not CPU-bound).
THREADS = 16
_sleep = time.sleep  # patched in tests


class _Bad(Exception):
    """A permanent verdict on one asset (its text is the recorded reason)."""


def _head(href: str) -> int:
    """Object size in bytes (``_Bad('404')`` when missing; TransientError when worth a retry)."""
    if href.startswith(("http://", "https://")):
        return _http_head(href)
    if not storage.is_s3(href):
        try:
            return os.stat(href).st_size
        except FileNotFoundError as err:
            raise _Bad("404") from err
    try:
        info = storage.head(href)  # None when missing; throttling/5xx: TransientError naming it
    except TransientError:
        raise
    except Exception as err:  # noqa: BLE001 - classified below
        code = storage.error_code(err)
        if code in {"403", "AccessDenied", "Forbidden"}:
            raise _Bad("403 forbidden") from err
        if code:
            raise _Bad(f"unreadable: {code}") from err
        raise TransientError(f"HEAD {href}: {err}") from err
    if info is None:
        raise _Bad("404")
    return info.size


def _http_head(href: str) -> int:
    """HEAD over http(s) (e.g. the local archive's ``{endpoint}/{bucket}/{key}`` hrefs)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(href, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - asset hrefs
            return int(resp.headers.get("Content-Length") or -1)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise _Bad("404") from err
        if err.code == 403:
            raise _Bad("403 forbidden") from err
        if err.code in (429, 500, 502, 503, 504):
            raise TransientError(f"HEAD {href}: {err.code}") from err
        raise _Bad(f"unreadable: HTTP {err.code}") from err
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise TransientError(f"HEAD {href}: {err}") from err


def _stored_end(src, parsed: Header | None) -> int:
    """Byte where the last stored full-resolution block of any band of ``src`` ends: from the
    IFD's tile arrays already parsed (``parsed``, :func:`cloudfree.blocks.read_header`), else
    from GDAL block by block (:func:`_blocks_end`). 0 when the file is not a GeoTIFF (a VRT's
    blocks are its sources')."""
    if src.driver != "GTiff":
        return 0
    if parsed is not None:
        return parsed.stored_end
    return max(_blocks_end(src, b) for b in range(1, src.count + 1))


def _blocks_end(src, bidx: int = 1) -> int:
    """Byte where the last non-sparse full-resolution block of band ``bidx`` ends, asked of
    GDAL one block at a time (``BLOCK_OFFSET_x_y``: about 30 us a block through rasterio)."""
    bw, bh = src.block_shapes[bidx - 1]
    end = 0
    for y in range(math.ceil(src.height / bh)):
        for x in range(math.ceil(src.width / bw)):
            where = tile_range(src, x, y, bidx)
            if where:
                end = max(end, where[0] + where[1])
    return end


def _ifd_header(href: str) -> Header | None:
    """The first IFD of ``href`` (:func:`cloudfree.blocks.header`), None when it is not a
    little-endian tiled TIFF or cannot be read (GDAL opens it then, and says what is wrong)."""
    path = vsi_path(href)
    if path is None:
        return None
    try:
        with storage.gdal_env() if "://" in href else contextlib.nullcontext():
            return header(path)
    except OSError:
        return None


def _header(href: str, asset: str, size: int) -> None:
    """Read the header; check data type, band count and that no block lies past the end.

    A file the pipeline reads without GDAL's dataset (:func:`cloudfree.blocks.read_path`) is
    checked from its IFD alone: 2.4 ms an asset through rasterio's open (its CRS through PROJ),
    0.3 ms without. Anything else is opened with rasterio."""
    import rasterio

    band = get_band(asset)
    h = _ifd_header(href)  # parsed once: the truncation check below takes its arrays too
    samples = 1 if band.count == 1 else list(range(1, band.count + 1))
    if h is not None and header_layout(h, samples) is not None:
        if h.samples != band.count or f"uint{h.bits[0]}" != band.dtype:
            raise _Bad(f"corrupt: {h.samples}xuint{h.bits[0]}, expected "
                       f"{band.count}x{band.dtype}")
        last = h.stored_end
        if size >= 0 and last > size:
            raise _Bad(f"corrupt: truncated ({size} bytes, blocks reach byte {last})")
        return
    try:
        with storage.gdal_env(), rasterio.open(href) as src:
            if src.count != band.count or src.dtypes[0] != band.dtype:
                raise _Bad(f"corrupt: {src.count}x{src.dtypes[0]}, expected "
                           f"{band.count}x{band.dtype}")
            last = _stored_end(src, h)
    except rasterio.errors.RasterioIOError as err:
        text = str(err)
        if "404" in text or "No such file" in text or "does not exist" in text:
            raise _Bad("404") from err
        if any(c in text for c in (" 500", " 502", " 503", " 504", "timed out", "Timeout")):
            raise TransientError(f"open {href}: {err}") from err
        raise _Bad(f"corrupt: {text[:300]}") from err
    except rasterio.errors.RasterioError as err:
        raise _Bad(f"corrupt: {str(err)[:300]}") from err
    if size >= 0 and last > size:
        raise _Bad(f"corrupt: truncated ({size} bytes, blocks reach byte {last})")


def check_asset(href: str, asset: str) -> str | None:
    """None when ``href`` (the ``asset`` key, e.g. ``rededge2``) looks readable, else the
    reason (``404``, ``corrupt: …``, ``unreadable: …``); transient failures are retried."""
    delay = BACKOFF_S
    for attempt in range(1, ATTEMPTS + 1):
        try:
            size = _head(href)
            if size == 0:
                return "corrupt: empty object"
            _header(href, asset, size)
            return None
        except _Bad as bad:
            return str(bad)
        except TransientError as err:
            if attempt == ATTEMPTS:
                return f"unreadable: {str(err)[:300]}"
            _sleep(delay)
            delay *= 2
    return None  # pragma: no cover - the loop always returns


def check_assets(scenes: Sequence[dict], keys: Iterable[str], *, threads: int = THREADS,
                 check: Callable[[str, str], str | None] = check_asset
                 ) -> dict[tuple[str, str], str]:
    """``{(scene id, asset key): reason}`` for every asset of ``keys`` that a scene lacks
    (``no asset``) or that cannot be read; readable ones are left out."""
    out: dict[tuple[str, str], str] = {}
    todo: list[tuple[str, str, str]] = []
    for scene in scenes:
        for key in keys:
            href = (scene.get("assets") or {}).get(key)
            if not href:
                out[(scene["id"], key)] = "no asset"
            else:
                todo.append((scene["id"], key, href))
    if todo:
        workers = min(storage.latency_threads((t[2] for t in todo), threads), len(todo))
        if workers == 1:  # local files: on this thread (storage.latency_threads)
            reasons = [check(href, key) for _, key, href in todo]
        else:
            # a pool of its own, ended with the check: its threads each hold a PROJ context
            # (~4 MB) that the kept reader pool (windows.reader_pool) would keep for the process
            with ThreadPoolExecutor(max_workers=workers) as pool:
                reasons = list(pool.map(lambda t: check(t[2], t[1]), todo))
        out.update({(sid, key): r for (sid, key, _), r in zip(todo, reasons, strict=True) if r})
    return out

