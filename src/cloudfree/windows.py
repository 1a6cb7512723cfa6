"""Window planning and reading: which piece of a band one *median* invocation handles.

A window is a rectangle of a band's tile grid (10980/5490/1830 px at 10/20/60 m). Windows are
aligned to the source COGs' internal blocks (Earth Search: 1024 px for every reflectance band and
the visual image, 512 px for the 20 m SCL), so every source block is decoded exactly once and no
read straddles blocks (a straddling read decodes 2.5-4x slower, see DESIGN Performance facts).

Where the 1024 px comes from: ``gdalinfo`` of real Earth Search 10 m COGs, published by their
users, prints ``Block=1024x1024 Type=UInt16``, ``COMPRESSION=DEFLATE``, ``PREDICTOR=2``, ``NoData
Value=0`` and overviews 5490/2745/1373/687 (``s3://sentinel-cogs/sentinel-s2-l2a-cogs/22/L/HH/
2023/7/S2A_22LHH_20230703_0_L2A/B04.tif`` and ``.../36/R/WV/2026/2/S2B_36RWV_20260201_0_L2A/
B04.tif``; anyone online can check it with ``AWS_NO_SIGN_REQUEST=YES gdalinfo /vsis3/...``). The
20 m bands' 1024 px and SCL's 512 px come from DESIGN.md alone: ``../shared/realdata``'s Earth
Search COGs are decimated 10x (their blocks are 512 px), so they cannot confirm it. Results never
depend on it (reads of any window are exact); only the decode count does.

SCL alignment follows from the reflectance alignment: a 1024 k px window at 10 m is 512 k SCL px,
at 20 m 1024 k SCL px, at 60 m 3072 k SCL px — all multiples of SCL's 512 px block.

Memory model (``window_memory_bytes``), per invocation::

    fixed      = runtime baseline (Python + numpy + rasterio/GDAL libraries)      RUNTIME_MB
               + GDAL block cache (bounded by GDAL_CACHEMAX, or the stack size)    storage setting
               + one decode buffer per reader thread (compressed + decoded block)  threads x ...
    per pixel  = n_scenes x ( band bytes            2 (uint16) | 3 (visual RGB uint8)
                            + SCL at 20 m           (res/20)^2 source px per band px, 1 byte each
                                                    (read per scene with a small margin, then
                                                    dropped: an upper bound)
                            + observation state     1 (uint8, ``mask.scene_state``)
                            + used-obs mask         1 (uint8; the snow-fallback temporaries fit
                                                    in the SCL term above)
                            + kernel scratch        2 (one uint16 copy; a fused kernel needs less)
                            + visual channel cast   2 (visual only: one channel as uint16) )
               + outputs (median, count, the GeoTIFF write buffer)  OUTPUT_BYTES_PER_PIXEL

While one window is composited, the next one's inputs may be read (``window_inputs_bytes``:
stack + states + outlier decision), when both fit in ``composite.READ_AHEAD_FRACTION`` of
the memory; the windows are planned without it, so reading ahead never makes them smaller.

``plan_windows`` picks the largest square window of k x k blocks whose estimate stays within
``MEMORY_FRACTION`` (50 %) of the invocation's memory, then evens the windows out over the grid
(11 blocks of 10 m -> windows of 2, 3, 4 or 6 blocks), clipping the last row/column at the edge.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
from affine import Affine

from . import blocks, storage
from .bands import SCL, Band
from .errors import InputError, SourceReadError

#: Share of the invocation's memory the estimate may use (the rest is headroom).
MEMORY_FRACTION = 0.5
#: Python + numpy + rasterio/GDAL resident before any pixel is read (MB).
RUNTIME_MB = 150
#: Median, count and the result GeoTIFF's write buffer, per output pixel (bytes).
OUTPUT_BYTES_PER_PIXEL = 8
#: Kernel scratch per stacked value (one uint16 copy of the stack; numba's fused kernel needs 0).
KERNEL_SCRATCH_BYTES = 2
#: Default number of reader threads (GDAL releases the GIL while decoding and fetching).
DEFAULT_THREADS = 8


@dataclass(frozen=True, order=True)
class Window:
    """A rectangle of a band's pixel grid (offsets and sizes in that band's pixels)."""

    row_off: int
    col_off: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if min(self.row_off, self.col_off) < 0 or min(self.height, self.width) <= 0:
            raise InputError(f"invalid window {self!r}")

    @property
    def key(self) -> str:
        """Stable name, e.g. ``r00000_c01024`` (the same as ``Layout.window_result``)."""
        return f"r{self.row_off:05d}_c{self.col_off:05d}"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def size(self) -> int:
        """Number of pixels."""
        return self.height * self.width

    def to_rasterio(self):
        """The equivalent ``rasterio.windows.Window``."""
        from rasterio.windows import Window as RioWindow

        return RioWindow(self.col_off, self.row_off, self.width, self.height)

    def scaled(self, factor: float) -> Window:
        """The same ground area on a grid ``factor`` times finer (2 = 20 m -> 10 m; 0.5 back).

        Offsets round down and far edges round up, so the result always covers this window.
        """
        if factor <= 0:
            raise InputError(f"scale factor must be positive, got {factor}")
        r0 = math.floor(self.row_off * factor + 1e-9)
        c0 = math.floor(self.col_off * factor + 1e-9)
        r1 = math.ceil((self.row_off + self.height) * factor - 1e-9)
        c1 = math.ceil((self.col_off + self.width) * factor - 1e-9)
        return Window(r0, c0, r1 - r0, c1 - c0)

    def sub(self, bounds: tuple[int, int, int, int]) -> Window:
        """The part ``(row0, col0, row1, col1)`` (ends excluded, in this window's pixels)."""
        r0, c0, r1, c1 = bounds
        return Window(self.row_off + r0, self.col_off + c0, r1 - r0, c1 - c0)

    def transform(self, grid_transform: Affine) -> Affine:
        """Affine transform of the window's own pixels, given the full grid's transform."""
        return grid_transform @ Affine.translation(self.col_off, self.row_off)

    def bounds(self, grid_transform: Affine) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the window in the grid's CRS."""
        x0, y0 = grid_transform @ (self.col_off, self.row_off)
        x1, y1 = grid_transform @ (self.col_off + self.width, self.row_off + self.height)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def intersection(self, other: Window) -> Window | None:
        """The part of this window inside ``other`` (same grid), None when they do not meet."""
        r0, c0 = max(self.row_off, other.row_off), max(self.col_off, other.col_off)
        r1 = min(self.row_off + self.height, other.row_off + other.height)
        c1 = min(self.col_off + self.width, other.col_off + other.width)
        return Window(r0, c0, r1 - r0, c1 - c0) if r1 > r0 and c1 > c0 else None

    @classmethod
    def bounding(cls, windows: Iterable[Window]) -> Window:
        """The smallest window holding every one of ``windows`` (same grid)."""
        ws = list(windows)
        r0, c0 = min(w.row_off for w in ws), min(w.col_off for w in ws)
        return cls(r0, c0, max(w.row_off + w.height for w in ws) - r0,
                   max(w.col_off + w.width for w in ws) - c0)

    def to_dict(self) -> dict[str, int]:
        return {"row_off": self.row_off, "col_off": self.col_off, "height": self.height,
                "width": self.width}

    @classmethod
    def from_dict(cls, value: dict | Sequence | Window) -> Window:
        """Accept a Window, a dict with the four fields, or ``[row_off, col_off, h, w]``."""
        if isinstance(value, Window):
            return value
        if isinstance(value, dict):
            return cls(int(value["row_off"]), int(value["col_off"]), int(value["height"]),
                       int(value["width"]))
        row_off, col_off, height, width = (int(v) for v in value)
        return cls(row_off, col_off, height, width)


# --- memory model and planning ---------------------------------------------------------------
def _gdal_cache_bytes() -> int:
    return int(storage.gdal_env_options().get("GDAL_CACHEMAX", storage.GDAL_CACHE_BYTES))


def _bytes_per_scene_pixel(band: Band) -> float:
    """Bytes held per scene per band pixel (see the module docstring)."""
    band_bytes = np.dtype(band.dtype).itemsize * band.count
    scl_source = (band.resolution / SCL.resolution) ** 2  # 20 m SCL px per band px (1 byte each)
    per = band_bytes + scl_source + 1 + 1 + KERNEL_SCRATCH_BYTES
    if band.count > 1:
        per += 2  # one channel cast to uint16 for the exact median
    return per


def window_memory_bytes(band: Band, n_scenes: int, height: int, width: int, *,
                        threads: int = DEFAULT_THREADS) -> int:
    """Estimated peak memory (bytes) of compositing one ``height`` x ``width`` window."""
    pixels = height * width
    stack = n_scenes * pixels * _bytes_per_scene_pixel(band)
    band_stack = n_scenes * pixels * np.dtype(band.dtype).itemsize * band.count
    cache = min(_gdal_cache_bytes(), band_stack)
    decode = threads * 2 * band.block * band.block * np.dtype(band.dtype).itemsize * band.count
    fixed = RUNTIME_MB * 2**20 + cache + decode
    return int(fixed + stack + pixels * OUTPUT_BYTES_PER_PIXEL)


def window_inputs_bytes(band: Band, n_scenes: int, height: int, width: int) -> int:
    """Bytes of one window's inputs held while the window before it is composited (a median
    batch reads ahead, ``composite.read_window_inputs``): the band's stack, the states and
    the outlier decision (1 byte per scene and pixel each)."""
    return int(n_scenes * height * width * (np.dtype(band.dtype).itemsize * band.count + 2))


def _max_blocks(band: Band, n_scenes: int, memory_mb: int, n_blocks: int, threads: int) -> int:
    budget = memory_mb * 2**20 * MEMORY_FRACTION
    best = 0
    for k in range(1, n_blocks + 1):
        side = k * band.block
        if window_memory_bytes(band, n_scenes, side, side, threads=threads) > budget:
            break
        best = k
    if best == 0:
        need = window_memory_bytes(band, n_scenes, band.block, band.block, threads=threads)
        raise InputError(
            f"{memory_mb} MB cannot hold one {band.block} px window of {band.key} x {n_scenes} "
            f"scenes (needs about {need / 2**20 / MEMORY_FRACTION:.0f} MB)")
    return best


def plan_windows(band: Band, n_scenes: int, memory_mb: int, *, tile_size: int | None = None,
                 threads: int = DEFAULT_THREADS) -> list[Window]:
    """Cover the band's tile grid with block-aligned windows sized from the memory budget.

    Windows are squares of ``k x k`` source blocks (the last row and column clipped at the grid
    edge), in row-major order, with no overlap and no gap. ``k`` is the largest that keeps
    ``window_memory_bytes`` within ``MEMORY_FRACTION`` of ``memory_mb``, then lowered as far as
    the window count allows (11 blocks at k=5 and k=4 both need 3 windows a side: take 4).
    """
    if n_scenes < 1:
        raise InputError(f"n_scenes must be >= 1, got {n_scenes}")
    size = int(tile_size or band.size)
    n_blocks = math.ceil(size / band.block)
    k_max = _max_blocks(band, n_scenes, memory_mb, n_blocks, threads)
    per_side = math.ceil(n_blocks / k_max)
    k = math.ceil(n_blocks / per_side)
    step = k * band.block
    out = []
    for row in range(0, size, step):
        for col in range(0, size, step):
            out.append(Window(row, col, min(step, size - row), min(step, size - col)))
    return out


def batch_windows(windows: Sequence[Window], max_per_batch: int) -> list[list[Window]]:
    """Group windows (in order) into batches of at most ``max_per_batch``, one per invocation.

    Batches are as even as possible (10 windows at 4 per batch -> 4, 3, 3), so invocations of
    one band take about the same time.
    """
    if max_per_batch < 1:
        raise InputError(f"max_per_batch must be >= 1, got {max_per_batch}")
    windows = list(windows)
    if not windows:
        return []
    n_batches = math.ceil(len(windows) / max_per_batch)
    base, extra = divmod(len(windows), n_batches)
    out, start = [], 0
    for i in range(n_batches):
        end = start + base + (1 if i < extra else 0)
        out.append(windows[start:end])
        start = end
    return out


# --- reading ---------------------------------------------------------------------------------
#: Tries of one window read (the first included) before it fails; GDAL retries HTTP 429/5xx
#: inside each try as well (``GDAL_HTTP_MAX_RETRY`` in ``storage.gdal_env_options``).
READ_ATTEMPTS = 3
#: Backoff before the second try (s), doubled before each further one.
READ_BACKOFF_S = 1.0
_sleep = time.sleep  # patched in tests


def _read_once(href: str, window: Window, band_index: int | Sequence[int],
               out_dtype: str | None, out: np.ndarray | None = None) -> np.ndarray:
    import rasterio

    if out is not None and out_dtype is None:
        # tiled DEFLATE files (every Earth Search asset) without a rasterio dataset: the IFD
        # says where the tiles are (blocks.read_path); GDAL's config is needed for remote
        # files only (a local path reads the same without an Env, ~1 ms a read saved)
        with storage.gdal_env() if "://" in href else contextlib.nullcontext():
            if blocks.read_path(href, window, out, band_index):
                return out
    with storage.gdal_env(), rasterio.open(href) as src:
        if out is not None and (window.row_off + window.height <= src.height
                                and window.col_off + window.width <= src.width):
            indices = [band_index] if isinstance(band_index, int) else band_index
            if out_dtype is None and any(np.dtype(src.dtypes[i - 1]) != out.dtype
                                         for i in indices):
                # rasterio casts into ``out`` without a word (uint16 into uint8 clips at 255)
                raise InputError(f"{href} holds {src.dtypes[indices[0] - 1]} pixels, not the "
                                 f"{out.dtype} of the array it was to be read into")
            if out_dtype is None and blocks.read_into(src, href, window, out, band_index):
                return out  # its DEFLATE tiles inflated here: faster, the same pixels
            return src.read(band_index, window=window.to_rasterio(), out=out)
        return src.read(band_index, window=window.to_rasterio(), boundless=False,
                        out_dtype=out_dtype)


def read_window(href: str, window: Window, *, band_index: int | Sequence[int] = 1,
                out_dtype: str | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Read one window of a COG (s3://, http(s)://, or a local path), never boundless.

    Returns (h, w) for one band index, (n, h, w) for a sequence. A failing read is retried as
    transient ``READ_ATTEMPTS`` times in all, with exponential backoff; then it raises
    ``SourceReadError`` naming the href (``failures`` holds it). A source smaller than the
    window is not retried. ``out``: an array of the result's shape to decode into (returned;
    ``out_dtype`` is then its dtype), instead of a new one.
    """
    delay = READ_BACKOFF_S
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            data = _read_once(href, window, band_index, out_dtype, out)
            break
        except InputError:  # not transient: a wrong dtype asked
            raise
        except Exception as err:  # noqa: BLE001 - every GDAL/IO failure becomes SourceReadError
            if attempt == READ_ATTEMPTS:
                msg = f"reading {window.key} of {href} ({attempt} tries): {err}"
                raise SourceReadError(msg, {href: msg}) from err
            _sleep(delay)
            delay *= 2
    if data.shape[-2:] != window.shape:
        msg = (f"reading {window.key} of {href}: got {data.shape[-2:]} px, expected "
               f"{window.shape} (source grid smaller than the tile grid?)")
        raise SourceReadError(msg, {href: msg})
    return data


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _forget_pools() -> None:  # a forked child has none of the parent's threads
    _pools.clear()


os.register_at_fork(after_in_child=_forget_pools)


def reader_pool(threads: int) -> ThreadPoolExecutor:
    """This process's pool of ``threads`` threads for GDAL reads, kept for its lifetime (and a
    warm Lambda's next invocations).

    A thread's first GDAL open costs ~11 ms more than the next ones: GDAL gives each thread its
    own PROJ context, which opens PROJ's SQLite database (measured here: two opens on two new
    threads 23.9 ms, on kept ones 2.6 ms). Pools made per call paid it for every thread of
    every read: up to 8 threads, twice per window (SCL and band), ~4 % of a median batch's CPU
    in libsqlite3 and libproj under ``perf``. Tasks given to it must not wait on other tasks
    of the same pool."""
    threads = max(1, int(threads))
    with _pools_lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(
                threads, thread_name_prefix=f"cloudfree-read{threads}")
        return pool


def run_reads(fn, items: Iterable, threads: int) -> list:
    """``[fn(x) for x in items]`` on :func:`reader_pool` threads (in order; the first exception
    raised, once every call has ended)."""
    items = list(items)
    if len(items) <= 1 or threads <= 1:
        return [fn(x) for x in items]
    futures = [reader_pool(threads).submit(fn, x) for x in items]
    wait(futures)
    return [f.result() for f in futures]


def _read_each(indices: Sequence[int], hrefs: Sequence[str], one, threads: int
               ) -> dict[str, str]:
    """Run ``one(i)`` for every index in threads; the failures as ``{href: message}``."""
    failures: dict[str, str] = {}

    def _safe(i: int) -> None:
        try:
            one(i)
        except SourceReadError as err:
            failures[hrefs[i]] = err.failures.get(hrefs[i], str(err))

    run_reads(_safe, indices, threads)
    return failures


def _raise_failures(failures: dict[str, str], n: int, window: Window) -> None:
    if failures:
        raise SourceReadError(f"reading {window.key}: {len(failures)} of {n} sources failed: "
                              + "; ".join(failures.values()), failures)


def read_stack(hrefs: Sequence[str], window: Window, *, threads: int = DEFAULT_THREADS,
               band_index: int | Sequence[int] = 1, dtype: str | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """Read the same window from every href in parallel threads -> (S, h, w) (or (S, n, h, w)).

    Each scene after the first is decoded straight into its slice of one preallocated array
    (no array of its own, no copy). ``out``: that array (or a view whose scene slices are
    contiguous), e.g. one buffer reused for several bands, instead of a new one; its shape and
    dtype are then known, so the first scene is not read alone ahead of the others (on 2
    cores that left one idle for a scene's decode per call: ``make bench-peer``'s 26 reads
    took 0.3 s more wall time), and a source of another dtype is an ``InputError``
    (rasterio would cast into ``out`` silently).
    Every href is tried; if any fails, one ``SourceReadError`` lists them all in ``failures``.
    """
    if not hrefs:
        raise InputError("read_stack needs at least one href")
    if out is not None:  # shape and dtype known: every scene in parallel
        shape = window.shape if isinstance(band_index, int) else (len(band_index), *window.shape)
        if out.shape != (len(hrefs), *shape):
            raise InputError(f"read_stack into {out.shape}: the stack is {(len(hrefs), *shape)}")
        _raise_failures(_read_each(range(len(hrefs)), hrefs, lambda i: read_window(
            hrefs[i], window, band_index=band_index, out=out[i]), threads), len(hrefs), window)
        return out
    failures: dict[str, str] = {}
    first, start = None, 0
    while start < len(hrefs):  # the first readable one gives the shape and dtype
        try:
            first = read_window(hrefs[start], window, band_index=band_index, out_dtype=dtype)
            break
        except SourceReadError as err:
            failures[hrefs[start]] = err.failures.get(hrefs[start], str(err))
            start += 1
    if first is None:
        _raise_failures(failures, len(hrefs), window)
    stack = np.empty((len(hrefs), *first.shape), dtype=first.dtype)
    stack[start] = first
    del first

    def _one(i: int) -> None:
        # decoded into the stack's slice: a new array per scene and a copy of it cost, on a
        # 3072 px window of 16 scenes, ~0.3 s of first-touch page faults (288 MB) and a copy
        read_window(hrefs[i], window, band_index=band_index, out_dtype=dtype, out=stack[i])

    failures.update(_read_each(range(start + 1, len(hrefs)), hrefs, _one, threads))
    _raise_failures(failures, len(hrefs), window)
    return stack


def read_each_into(hrefs: Sequence[str], window: Window, consume, buffers: np.ndarray, *,
                   threads: int = DEFAULT_THREADS) -> None:
    """Read ``window`` of every href on the reader threads, each into one of ``buffers``
    ((k, h, w): at most k reads at once), and hand it to ``consume(i, pixels)`` on that thread;
    the buffer is read into again afterwards, so ``consume`` must not keep it. For a stack
    reduced scene by scene (the outlier decision's 2 x 2 means): k buffers instead of the
    whole (S, h, w) stack, each still in the cache when reduced. Failures as
    :func:`read_stack`: every href is tried, then one ``SourceReadError`` lists them all."""
    if buffers.ndim != 3 or buffers.shape[1:] != window.shape or not len(buffers):
        raise InputError(f"buffers of {buffers.shape} for a {window.shape} window")
    free: queue.SimpleQueue[int] = queue.SimpleQueue()
    for k in range(len(buffers)):
        free.put(k)

    def _one(i: int) -> None:
        k = free.get()
        try:
            consume(i, read_window(hrefs[i], window, out=buffers[k]))
        finally:
            free.put(k)

    failures = _read_each(range(len(hrefs)), hrefs, _one, min(threads, len(buffers)))
    _raise_failures(failures, len(hrefs), window)


def scl_window(band: Band, window: Window, margin: int = 0,
               size: int | None = None) -> Window:
    """The 20 m SCL window covering a band window (block-aligned when the band window is).

    With ``margin`` (band pixels) the band window first grows by that much on every side,
    clipped at the band's tile grid (``size`` px, default the full tile), so neighbourhood
    operations (nodata dilation) see the same SCL whatever the window layout.
    """
    if margin < 0:
        raise InputError(f"margin must be >= 0, got {margin}")
    if margin:
        size = int(size or band.size)
        r0, c0 = max(0, window.row_off - margin), max(0, window.col_off - margin)
        r1 = min(size, window.row_off + window.height + margin)
        c1 = min(size, window.col_off + window.width + margin)
        window = Window(r0, c0, r1 - r0, c1 - c0)
    return window.scaled(band.resolution / SCL.resolution)


@dataclass(frozen=True)
class SclPatch:
    """The 20 m SCL under a band window plus a margin, and where the window sits in it.

    ``row``/``col``: offset (band pixels) of the window's first pixel on the band grid made
    from ``scl20`` (x2 at 10 m, x1 at 20 m, /3 at 60 m).
    """

    scl20: np.ndarray
    row: int
    col: int


def read_scl_patch(href_scl: str, band: Band, window: Window, margin: int = 0) -> SclPatch:
    """Read the 20 m SCL under ``window`` grown by ``margin`` band pixels, clipped at the tile
    grid and at the SCL's own extent (the tile edge on Earth Search: 5490 px).

    The window itself must lie inside the SCL (``SourceReadError`` otherwise). Crop the band
    grid result at ``[row:row + height, col:col + width]`` after any neighbourhood operation.
    """
    held = read_scl_area(href_scl, scl_window(band, window, margin))
    patch = scl_patch_from(held, band, window, margin)
    if patch is None:
        raise SourceReadError(f"SCL {href_scl} ({held.size[0]}x{held.size[1]} px) is smaller "
                              f"than the SCL window {scl_window(band, window)} of {window.key}")
    return patch


@dataclass(frozen=True)
class SclArea:
    """One scene's 20 m SCL over ``area`` (a window of the SCL grid), read once for every
    patch inside it (:func:`scl_patch_from`); ``size``: the SCL raster's (height, width)."""

    scl20: np.ndarray
    area: Window
    size: tuple[int, int]


def read_scl_area(href_scl: str, area: Window) -> SclArea:
    """The SCL under ``area`` (20 m), clipped at the raster's extent."""
    import rasterio

    try:
        with storage.gdal_env(), rasterio.open(href_scl) as src:
            size = (src.height, src.width)
            r1, c1 = min(area.row_off + area.height, size[0]), min(area.col_off + area.width,
                                                                   size[1])
            if r1 <= area.row_off or c1 <= area.col_off:
                raise SourceReadError(f"SCL {href_scl} ({size[0]}x{size[1]} px) is smaller "
                                      f"than the SCL window {area}")
            area = Window(area.row_off, area.col_off, r1 - area.row_off, c1 - area.col_off)
            scl20 = np.empty(area.shape, np.uint8)  # its tiles inflated here (blocks)
            if src.dtypes[0] != "uint8" or not blocks.read_into(src, href_scl, area, scl20):
                scl20 = src.read(1, window=area.to_rasterio(), boundless=False)
    except SourceReadError:
        raise
    except Exception as err:  # noqa: BLE001 - every GDAL/IO failure becomes SourceReadError
        raise SourceReadError(f"reading SCL {area.key} of {href_scl}: {err}") from err
    return SclArea(np.ascontiguousarray(scl20, dtype=np.uint8), area, size)


def scl_patch_from(held: SclArea, band: Band, window: Window, margin: int = 0
                   ) -> SclPatch | None:
    """:func:`read_scl_patch` cut from an SCL area already read: the same pixels, or None when
    the patch does not lie inside the area (then read it)."""
    core = scl_window(band, window)
    want = scl_window(band, window, margin)
    if core.row_off + core.height > held.size[0] or core.col_off + core.width > held.size[1]:
        return None  # read_scl_patch raises the error
    r1, c1 = min(want.row_off + want.height, held.size[0]), min(want.col_off + want.width,
                                                                held.size[1])
    a = held.area
    if want.row_off < a.row_off or want.col_off < a.col_off or \
            r1 > a.row_off + a.height or c1 > a.col_off + a.width:
        return None
    r, c = want.row_off - a.row_off, want.col_off - a.col_off
    factor = SCL.resolution / band.resolution  # band px per SCL px
    return SclPatch(np.ascontiguousarray(held.scl20[r:r1 - a.row_off, c:c1 - a.col_off]),
                    window.row_off - round(want.row_off * factor),
                    window.col_off - round(want.col_off * factor))


def read_scl_for(href_scl: str, band: Band, window: Window) -> np.ndarray:
    """Read the SCL under a band window at 20 m and return it on the band's grid (h, w) uint8
    (nearest neighbour; 60 m takes each 3 x 3 block's centre pixel: for display and checks,
    compositing uses :func:`cloudfree.mask.scene_state`)."""
    from .mask import scl_to_band_grid

    scl20 = read_window(href_scl, scl_window(band, window))
    on_grid = scl_to_band_grid(scl20, band.resolution)
    if on_grid.shape[0] < window.height or on_grid.shape[1] < window.width:
        msg = (f"SCL {href_scl} on the {band.resolution} m grid is {on_grid.shape}, smaller "
               f"than window {window.key} {window.shape}")
        raise SourceReadError(msg, {href_scl: msg})
    return np.ascontiguousarray(on_grid[: window.height, : window.width], dtype=np.uint8)
