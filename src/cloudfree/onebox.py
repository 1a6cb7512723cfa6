"""One-machine mode (``cloudfree composite``): the pipeline's steps in one process, no AWS.

The same task functions the Lambdas run (``tasks.select``, ``tasks.median`` per batch,
``tasks.assemble`` per band, ``tasks.complete``, ``publish.publish_tile``), on a
:class:`~cloudfree.settings.Settings` whose buckets are folders under ``--out``
(``Layout.root``; :mod:`cloudfree.storage` reads and writes local paths with the same calls).
So the outputs are the pipeline's, file for file::

    OUT/public/sentinel-2-annual-median/{year}/{tile}/{tile}_{year}.json      the STAC item
    OUT/public/sentinel-2-annual-median/{year}/{tile}/v{hash}/{tile}_{year}_{band}.tif
    OUT/work/...                                                          manifest, windows

A rerun into the same folder skips what is finished (the tasks' own rerun safety); ``force``
recomputes. Items come from a STAC API search (Earth Search by default) or a file.

Reading Earth Search's COGs needs no AWS account: their hrefs are public ``https://`` URLs
(``sentinel-cogs.s3.us-west-2.amazonaws.com``) that GDAL reads with ranged GETs over
``/vsicurl/``. For ``s3://`` hrefs set ``AWS_NO_SIGN_REQUEST=YES`` (GDAL's configuration
option for anonymous S3 access: https://gdal.org/en/stable/user/virtual_file_systems.html#vsis3).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import allocator, tasks
from .errors import InputError
from .settings import COG_COMPRESSIONS, DEFAULT_STAC_API, Settings, cog_compression
from .windows import Window

if TYPE_CHECKING:
    import numpy as np

#: Bucket names of the one-machine layout: folders under ``--out``.
WORK, PUBLIC, CONTROL = "work", "public", "control"
#: ``cloudfree:run.execution`` of items made by ``cloudfree composite``.
EXECUTION = "onebox"


def local_settings(out: str | Path, *, stac_url: str = DEFAULT_STAC_API, scene_count: int = 16,
                   median_memory_mb: int = 3008, assemble_memory_mb: int = 3008,
                   outliers: str = "on", compression: str = "DEFLATE") -> Settings:
    """The deployment's settings with its three buckets as folders under ``out``."""
    root = Path(out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return Settings(WORK, PUBLIC, CONTROL, stac_api_url=stac_url, scene_count=scene_count,
                    median_memory_mb=median_memory_mb, assemble_memory_mb=assemble_memory_mb,
                    local_root=str(root), outlier_rejection=outliers,
                    cog_compression=cog_compression(compression))


# --- items from a file -------------------------------------------------------------------------
def read_items(path: str | Path) -> list[dict[str, Any]]:
    """STAC item dicts from a FeatureCollection / ItemCollection, a list of items, one item,
    newline-delimited items (``.ndjson``/``.jsonl``), or a folder of item JSON files (as
    ``cloudfree synth --out DIR`` writes under ``DIR/stac/sentinel-2-l2a/items``)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.rglob("*.json"))
        if not files:
            raise InputError(f"no *.json item files under {p}")
        return [it for f in files for it in read_items(f)]
    try:
        text = p.read_text()
    except OSError as err:
        raise InputError(f"cannot read items file {p}: {err}") from err
    try:
        if p.suffix in (".ndjson", ".jsonl"):
            docs: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            docs = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{p} is not JSON ({err}); give a FeatureCollection, an ItemCollection "
                         "or newline-delimited items (.ndjson)") from err
    if isinstance(docs, dict):
        docs = docs.get("features") if docs.get("type") == "FeatureCollection" else [docs]
    if not isinstance(docs, list):
        raise InputError(f"{p}: expected a FeatureCollection or a list of STAC items")
    bad = [i for i, d in enumerate(docs) if not (isinstance(d, dict) and d.get("type") ==
                                                 "Feature" and d.get("id") and d.get("assets"))]
    if bad:
        raise InputError(f"{p}: {len(bad)} entries are not STAC items with an id and assets "
                         f"(first at index {bad[0]})")
    return docs


def parse_interval(text: str) -> tuple[datetime, datetime]:
    """``START/END`` (RFC 3339 dates or date-times, both within one year) -> (start, end)."""
    from .select import parse_datetime

    try:
        start, end = (parse_datetime(v if "T" in v else f"{v}T00:00:00Z")
                      for v in text.split("/"))
    except ValueError as err:
        raise InputError(f"--datetime must be START/END such as 2023-04-01/2023-09-30, got "
                         f"{text!r}") from err
    if end < start or start.year != end.year:
        raise InputError(f"--datetime {text!r}: END must follow START within the same year "
                         "(a composite is of one year)")
    return start, end


def within(items: Iterable[dict], start: datetime, end: datetime) -> list[dict]:
    """The items acquired from ``start`` to the end of ``end``'s day."""
    from .select import item_datetime

    out = []
    for it in items:
        t = item_datetime(it)
        if t is not None and start <= t and t.date() <= end.date():
            out.append(it)
    return out


# --- one tile ----------------------------------------------------------------------------------
@dataclass
class TileRun:
    """What ``composite_tile`` did for one tile."""

    tile: str
    year: int
    status: str  # published / complete (already published) / empty
    item: str | None = None
    scenes: int = 0
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)  # select/median/assemble/publish s
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tile": self.tile, "year": self.year, "status": self.status, "item": self.item,
                "scenes": self.scenes, "seconds": round(self.seconds, 2),
                "steps": {k: round(v, 2) for k, v in self.steps.items()},
                "reason": self.reason}


Progress = Callable[[str, int], None]  # (what just finished, units of work it stood for)


def composite_tile(tile: str, year: int, settings: Settings, options: dict | None = None, *,
                   items: list[dict] | None = None, progress: Progress | None = None,
                   on_plan: Callable[[int], None] | None = None) -> TileRun:
    """Select, median, assemble and publish one tile into ``settings``' folders.

    ``items``: select from these instead of searching ``settings.stac_api_url``. ``on_plan``
    gets the number of work units (median batches + bands to assemble + 1 publish) once the
    manifest is known; ``progress`` is called after each unit.
    """
    from .publish import publish_tile

    t0 = time.perf_counter()
    tick = progress or (lambda _what, _n: None)
    sel = tasks.select(tile, year, options, settings, items=items)
    run = TileRun(sel["tile"], sel["year"], sel["status"], scenes=sel.get("scenes", 0),
                  reason=sel.get("reason"))
    run.steps["select"] = time.perf_counter() - t0
    layout = settings.layout
    if sel["status"] == "complete":
        run.item = layout.item(run.year, run.tile)
    if sel["status"] != "ready":
        run.seconds = time.perf_counter() - t0
        return run
    work = sel["work"]
    if on_plan is not None:
        on_plan(sum(len(w["batches"]) for w in work) + len(work) + 1)
    t = time.perf_counter()
    for w in work:
        for batch in w["batches"]:
            tasks.median(run.tile, run.year, w["band"], batch, options, settings)
            tick(f"median {w['band']} {batch}", 1)
    run.steps["median"] = time.perf_counter() - t
    t = time.perf_counter()
    for w in work:
        tasks.assemble(run.tile, run.year, w["band"], options, settings)
        tick(f"assemble {w['band']}", 1)
    run.steps["assemble"] = time.perf_counter() - t
    t = time.perf_counter()
    tasks.complete(run.tile, run.year, EXECUTION, settings)
    out = publish_tile(run.tile, run.year, settings)
    tick("publish", 1)
    run.steps["publish"] = time.perf_counter() - t
    run.status, run.item = out["status"], out["item"]
    run.seconds = time.perf_counter() - t0
    return run


def composite(tiles: list[str], year: int, out: str | Path, options: dict | None = None, *,
              items: list[dict] | None = None, stac_url: str = DEFAULT_STAC_API,
              median_memory_mb: int = 3008, progress: bool = True,
              outliers: str = "on", compression: str = "DEFLATE") -> list[TileRun]:
    """``cloudfree composite``: every tile in turn, a progress bar over each tile's steps."""
    settings = local_settings(out, stac_url=stac_url, median_memory_mb=median_memory_mb,
                              outliers=outliers, compression=compression)
    runs = []
    for tile in tiles:
        with _Steps(f"{tile} {year}", progress) as steps:
            runs.append(composite_tile(tile, year, settings, options, items=items,
                                       on_plan=steps.plan, progress=steps.step))
    return runs


class _Steps:
    """The shared progress bar (:func:`cloudfree.progress.progress_bar`, rich) over work units
    whose total is known only after select; off when ``enabled`` is False, else drawn on a
    terminal only."""

    def __init__(self, description: str, enabled: bool, total: int = 0):
        self.description, self.enabled = description, enabled
        self.done, self.total = 0, total

    def __enter__(self) -> _Steps:
        from .progress import progress_bar

        self._cm = progress_bar(self.description, force=None if self.enabled else False)
        self._advance = self._cm.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)

    def plan(self, total: int) -> None:
        self.total = total
        self._advance(self.done, total)

    def step(self, _what: str, n: int) -> None:
        self.done += n
        self._advance(self.done, max(self.total, self.done))


# --- a window of a tile, bands at native resolution (the bench against odc-stac) ----------------
def parse_native_bbox(text: str) -> tuple[float, float, float, float]:
    """``minx,miny,maxx,maxy`` in metres (the tile's UTM CRS)."""
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError as err:
        raise InputError(f"native bbox must be minx,miny,maxx,maxy in metres, got {text!r}"
                         ) from err
    if not (x0 < x1 and y0 < y1):
        raise InputError(f"native bbox must have min < max, got {text!r}")
    return x0, y0, x1, y1


def native_window(tile: str, bbox: tuple[float, float, float, float]) -> Window:
    """The 10 m tile-grid window of a bbox in the tile's UTM CRS (its edges on the grid)."""
    from .bands import get_band
    from .grid import parse_tile

    t = parse_tile(tile)
    grid = t.transform(10)
    x0, y0, x1, y1 = bbox
    c0, r0 = ~grid * (x0, y1)
    c1, r1 = ~grid * (x1, y0)
    if not all(abs(v - round(v)) < 1e-6 for v in (c0, r0, c1, r1)):
        raise InputError(f"bbox {bbox} is not on {t.id}'s 10 m grid")
    r0, c0, r1, c1 = (round(v) for v in (r0, c0, r1, c1))
    if min(r0, c0) < 0 or max(r1, c1) > get_band("blue").size or r1 <= r0 or c1 <= c0:
        raise InputError(f"bbox {bbox} does not lie within {t.id}")
    return Window(r0, c0, r1 - r0, c1 - c0)


def decision_footprint(window10: Window, resolutions: Iterable[int]) -> Window:
    """The 20 m window whose outlier decision covers ``window10`` (10 m grid) at every
    resolution in ``resolutions``: the bounding box of the bands' decision footprints (a 60 m
    window's is whole 60 m pixels, so it can reach a little beyond the 10 m one's)."""
    from .outliers import decision_window

    return Window.bounding(decision_window(_res_band(res), window10.scaled(10 / res))
                           for res in resolutions)


def _res_band(res: int):
    from .bands import REFLECTANCE_BANDS

    return next(b for b in REFLECTANCE_BANDS if b.resolution == res)


def grid_cells(window: Window, rows: int, cols: int | None = None) -> list[Window]:
    """``window`` cut along the tile grid's lines every ``rows`` rows (and ``cols`` columns;
    None: whole rows), row-major: the pieces of a window that each lie in one row (column) of
    the sources' blocks when ``rows``/``cols`` is their block size (Earth Search's COGs start
    at the tile origin), so a source block is decoded by one piece only."""
    def cuts(start: int, size: int, step: int | None) -> list[tuple[int, int]]:
        if step is None:
            return [(start, size)]
        out, r, end = [], start, start + size
        while r < end:
            nxt = min(end, (r // step + 1) * step)
            out.append((r, nxt - r))
            r = nxt
        return out

    if rows < 1 or (cols is not None and cols < 1):
        raise InputError(f"cell size must be positive, got {rows} x {cols}")
    return [Window(r, c, h, w) for r, h in cuts(window.row_off, window.height, rows)
            for c, w in cuts(window.col_off, window.width, cols)]


def stitch(parts: list, window: Window):
    """One ``composite.WindowResult`` of ``window`` from the results of the cells that tile it
    (:func:`grid_cells`): arrays placed by their windows, per-scene counts summed (the
    statistics equal those of one ``composite_window`` over the whole window)."""
    from .composite import WindowResult, union_bbox

    if len(parts) == 1:
        return parts[0]

    def total(attr: str) -> dict[str, int]:
        out = dict.fromkeys(getattr(parts[0], attr), 0)
        for p in parts:
            for k, v in getattr(p, attr).items():
                out[k] = out.get(k, 0) + v
        return out

    import numpy as np

    def placed(get, lead: tuple[int, ...], dtype) -> np.ndarray:
        out = np.zeros((*lead, window.height, window.width), dtype)
        for p in parts:
            r, c = p.window.row_off - window.row_off, p.window.col_off - window.col_off
            out[..., r:r + p.window.height, c:c + p.window.width] = get(p)
        return out

    m0 = parts[0].median
    snow = None
    if any(p.snow is not None for p in parts):
        snow = placed(lambda p: False if p.snow is None else p.snow, (), bool)
    return WindowResult(parts[0].band, window,
                        placed(lambda p: p.median, m0.shape[:-2], m0.dtype),
                        placed(lambda p: p.count, (), parts[0].count.dtype),
                        total("contributions"), dict(parts[0].offsets),
                        sum(p.observed or 0 for p in parts), snow, total("outliers"),
                        total("masked"), union_bbox([p.observed_bbox for p in parts]))


@contextmanager
def _timed(spent: dict[str, float], key: str):
    """Add the wall seconds of the block to ``spent[key]``, its CPU seconds (the process, all
    threads: less sensitive than wall time to other processes' load) to ``spent[key_cpu]``."""
    t, c = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        spent[key] = spent.get(key, 0.0) + time.perf_counter() - t
        spent[f"{key}_cpu"] = spent.get(f"{key}_cpu", 0.0) + time.process_time() - c


#: The reference bands (10 m) whose stack a cell of the 10 m bands reads once for the outlier
#: decision and its own median; a band not held is read again for its median
#: (:func:`_reference_cell`). Measured on ``make bench-peer``'s scenes (16 scenes, 2048 px
#: window; CPU-s of the whole ``composite --bbox-native`` run, peak RSS; 2 shared cores at load
#: 3-5): before this reuse 44-48 CPU-s, 451-516 MB; in full-width strips (1024 x 2048 px)
#: holding both stacks 38 CPU-s but 571 MB (+67 MB: a second strip stack beside the first
#: median), holding blue only 40 CPU-s, 508 MB; in cells of one block holding both 36-39
#: CPU-s, 451-459 MB. So: both, in cells.
HELD_REFERENCES: tuple[str, ...] = ("blue", "red")


#: Most bytes of SCL (uint8, 20 m, every scene) :func:`composite_bands` holds to read each
#: scene's SCL once for all its cells and resolutions (16 scenes over the 2048 px window of
#: ``make bench-peer``: 17 MB); a larger window reads it per cell.
SCL_AREA_BYTES = 64 * 2**20


def read_scl_once(scenes: list[dict], window10: Window, resolutions: Iterable[int],
                  threads: int) -> list | None:
    """Each scene's SCL over everything the cells of every resolution read (their windows
    with the nodata margin, and the decision footprint's reach), one read per scene
    (``windows.read_scl_area``): without it, every cell of every resolution reads its own
    patch, and its margin decodes the neighbouring SCL blocks again. None when that exceeds
    :data:`SCL_AREA_BYTES`."""
    from .composite import DEFAULT_DILATE_NODATA
    from .windows import read_scl_area, run_reads, scl_window

    parts = [scl_window(_res_band(res), window10.scaled(10 / res), DEFAULT_DILATE_NODATA)
             for res in resolutions]
    w20 = decision_footprint(window10, resolutions)  # 10 m cells read states over their part
    parts.append(Window(max(0, w20.row_off - 1), max(0, w20.col_off - 1),
                        w20.height + 2, w20.width + 2))
    area = Window.bounding(parts)
    if len(scenes) * area.size > SCL_AREA_BYTES:
        return None
    return run_reads(lambda s: read_scl_area(s["assets"]["scl"], area), scenes, threads)


class _Decision:
    """The outlier decision of a whole ``composite_bands`` call: one (S, h, w) bool array on the
    20 m footprint of every band (:func:`decision_footprint`), filled square by square, each
    band taking its part (``outliers.to_band_grid``). The test is per pixel, so how the
    footprint is cut (the decide step's squares, the 10 m cells) changes no bit."""

    def __init__(self, scenes: list[dict], w20: Window, rule, classes, threads: int):
        import numpy as np

        self.scenes, self.w20, self.rule, self.classes = scenes, w20, rule, classes
        self.threads = threads
        self.bits = np.zeros((len(scenes), w20.height, w20.width), bool)

    def put(self, square: Window, rejected: np.ndarray) -> None:
        """Store the decision of ``square`` (a 20 m window inside the footprint)."""
        r, c = square.row_off - self.w20.row_off, square.col_off - self.w20.col_off
        self.bits[:, r:r + square.height, c:c + square.width] = rejected

    def read_and_decide(self) -> None:
        """Decide the whole footprint the Lambdas' way: per square of the SCL's 512 px blocks,
        reading the SCL and the three reference bands (``outliers.band_window_rejection``)."""
        from .composite import DEFAULT_DILATE_NODATA
        from .outliers import DECISION_CHUNK, band_window_rejection

        for sq in grid_cells(self.w20, DECISION_CHUNK, DECISION_CHUNK):
            self.put(sq, band_window_rejection(
                self.scenes, "nir08", sq, rule=self.rule, mask_classes=self.classes,
                dilate_nodata=DEFAULT_DILATE_NODATA, threads=self.threads))

    def decide(self, part: Window, states: np.ndarray, refs: np.ndarray) -> None:
        """Decide ``part`` from its states and reference planes already on the 20 m grid
        (``outliers.decide_references``; both modified), per square of half
        ``DECISION_CHUNK``: the test's temporaries (several int32 and bool planes of the
        square) stay small beside the stacks the cell holds."""
        from .outliers import DECISION_CHUNK, decide_references

        for sq in grid_cells(part, DECISION_CHUNK // 2, DECISION_CHUNK // 2):
            r, c = sq.row_off - part.row_off, sq.col_off - part.col_off
            rows, cols = slice(r, r + sq.height), slice(c, c + sq.width)
            self.put(sq, decide_references(self.scenes, states[:, rows, cols],
                                           refs[:, :, rows, cols], self.rule,
                                           threads=self.threads))

    def on_band(self, band, window: Window) -> np.ndarray:
        """The part of the decision ``band``'s ``window`` needs, on the band's grid."""
        from .outliers import decision_window, to_band_grid

        fb = decision_window(band, window)
        r, c = fb.row_off - self.w20.row_off, fb.col_off - self.w20.col_off
        return to_band_grid(self.bits[:, r:r + fb.height, c:c + fb.width], band, window)


def cell_footprint(cell: Window, window: Window, w20: Window) -> Window:
    """The part of the decision footprint ``w20`` (20 m) decided with the 10 m ``cell`` of
    ``window`` (:func:`grid_cells`): the cell's own 20 m pixels, stretched to the footprint's
    edges where the cell lies on the window's (a 60 m band's footprint reaches up to two 20 m
    pixels beyond the 10 m window's). So the cells together cover the footprint; two cells
    meeting on an odd row or column both decide the 20 m pixels they share (the same bits)."""
    own = cell.scaled(0.5)

    def span(lo: int, size: int, w_lo: int, w_size: int, own_lo: int, own_size: int,
             f_lo: int, f_size: int) -> tuple[int, int]:
        start = f_lo if lo == w_lo else own_lo
        end = f_lo + f_size if lo + size >= w_lo + w_size else own_lo + own_size
        return start, end - start

    top, height = span(cell.row_off, cell.height, window.row_off, window.height, own.row_off,
                       own.height, w20.row_off, w20.height)
    left, width = span(cell.col_off, cell.width, window.col_off, window.width, own.col_off,
                       own.width, w20.col_off, w20.width)
    return Window(top, left, height, width)


def crop_in_place(array: np.ndarray, outer: Window, inner: Window) -> np.ndarray:
    """``array`` (S, h, w), read over ``outer``, cut to ``inner`` (inside it) as a C-contiguous
    array in the same memory: no second stack. Scene by scene, each scene's pixels move to
    the front of the buffer; a scene's new place ends before the next scene's old one starts
    and numpy copies overlapping slices correctly (through a one-scene buffer)."""
    if inner == outer:
        return array
    r, c = inner.row_off - outer.row_off, inner.col_off - outer.col_off
    if r < 0 or c < 0 or r + inner.height > outer.height or c + inner.width > outer.width:
        raise InputError(f"window {inner} is not inside {outer}")
    if not array.flags.c_contiguous:  # not one buffer to compact: copy
        return array[:, r:r + inner.height, c:c + inner.width].copy()
    n = array.shape[0]
    out = array.reshape(-1)[:n * inner.height * inner.width].reshape(n, *inner.shape)
    for s in range(n):
        out[s] = array[s, r:r + inner.height, c:c + inner.width]
    return out


def _reference_cell(manifest: dict, decision: _Decision, window: Window, cell: Window,
                     keys: list[str], threads: int, spent: dict[str, float],
                     scl_areas: list | None = None
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One 10 m cell's SCL states and outlier decision, from reads its medians share.

    The 10 m states and the reference bands blue and red are read once, over the cell's part
    of the decision footprint (:func:`cell_footprint`, at 10 m: a little larger than the cell
    where a 60 m band reaches beyond it): the decision takes its states from the 10 m ones
    (``outliers.states_from_10m``) and its blue and red from their 2 x 2 means
    (``outliers.mean_on_decision_grid``), reads only nir08, and decides that part; the
    medians take the states, and the stacks of the reference bands among ``keys`` listed in
    :data:`HELD_REFERENCES`, cut to the cell (:func:`crop_in_place`). Without this, the decision
    reads the SCL, blue, red and nir08 again for itself. ``scl_areas``: the SCL already read
    (:func:`read_scl_once`). Returns (states, {band: stack}) of the cell.
    """
    import numpy as np

    from .bands import get_band
    from .composite import DEFAULT_DILATE_NODATA, _scene_hrefs, build_states
    from .outliers import (
        CLOUD_BAND,
        SHADOW_BAND,
        WHITE_BAND,
        decision_states,
        mean_on_decision_grid,
        states_from_10m,
    )
    from .windows import read_stack

    scenes = manifest["scenes"]
    part = cell_footprint(cell, window, decision.w20)
    read10 = part.scaled(2)
    with _timed(spent, "states"):
        states10 = build_states(_scene_hrefs(scenes, "scl"), get_band(keys[0]), read10,
                                decision.classes, DEFAULT_DILATE_NODATA, threads=threads,
                                scl_areas=scl_areas)
        states20 = states_from_10m(states10, DEFAULT_DILATE_NODATA)
        if states20 is None:  # an odd nodata fringe has no 20 m equivalent: read it
            states20 = decision_states(scenes, part, decision.classes, DEFAULT_DILATE_NODATA,
                                       threads)
    refs = np.empty((len(scenes), 3, part.height, part.width), np.uint16)
    # the band not held first: its stack is dropped before the held ones are read
    order = sorted(((c, k, k in keys and k in HELD_REFERENCES)
                    for c, k in enumerate((CLOUD_BAND, WHITE_BAND))), key=lambda ckh: ckh[2])
    held = {}
    with contextlib.ExitStack() as ctx:
        ahead: dict = {}
        if all(hold for _, _, hold in order):
            # both stacks are kept anyway: read side by side with nir08's (three of the
            # reader pool's queues at once instead of one: the small reads of a cell left a
            # core idle at each one's tail, 0.3 of bench-peer's 0.9 s of reads), and each
            # mean taken while the next is read
            pool = ctx.enter_context(ThreadPoolExecutor(2, thread_name_prefix="cloudfree-ref"))
            ahead = {key: pool.submit(read_stack, _scene_hrefs(scenes, key), read10,
                                      threads=threads) for _, key, _ in order}
        with _timed(spent, "outliers"):  # first, straight into its reference plane
            read_stack(_scene_hrefs(scenes, SHADOW_BAND), part, threads=threads,
                       out=refs[:, 2])
        for c, key, hold in order:
            with _timed(spent, "median" if hold else "outliers"):  # whose read it is
                stack = (ahead[key].result() if key in ahead
                         else read_stack(_scene_hrefs(scenes, key), read10, threads=threads))
            with _timed(spent, "outliers"):
                mean_on_decision_grid(stack, out=refs[:, c])
            if hold:
                held[key] = crop_in_place(stack, read10, cell)
            del stack
    with _timed(spent, "outliers"):
        decision.decide(part, states20, refs)
    return crop_in_place(states10, read10, cell), held


def composite_bands(manifest: dict, window10: Window, bands: Iterable[str], out: str | Path, *,
                    progress: Progress | None = None, threads: int = 2,
                    outliers: str | None = None, cell_size: int | None = None,
                    timings: dict[str, float] | None = None) -> dict[str, dict]:
    """Composite ``bands`` over one window (given on the 10 m grid, scaled to each band's
    native grid) and write ``OUT/{band}.tif`` (median, count; UTM) and its statistics.
    ``outliers``: ``composite_window``'s outlier rejection (None: the default, on).

    Work shared by the bands is done once:

    - the outlier decision is made once on the 20 m footprint of all the bands
      (:class:`_Decision`); each band takes its part (``composite_window(rejection=...)``:
      the same bits, the test is per pixel);
    - the SCL is read once per scene (:func:`read_scl_once`) and turned into states once per
      cell and resolution (every band of that resolution gets a copy,
      ``composite_window(states=)``);
    - when blue or red is among the bands, the decision is made cell by cell with the 10 m
      bands, from the SCL states and the blue and red stacks those cells read anyway
      (:func:`_reference_cell`; the medians of blue and red take their stacks,
      ``composite_window(stack=)``); else it is made first, reading its own
      (``outliers.band_window_rejection``, in squares of the tile's 512 px SCL blocks).

    The Lambdas make the decision per tile in the decide step and share it through storage,
    and read each band's stack in its own invocation.

    Memory: each resolution is composited in strips of ``cell_size`` band rows (default the
    bands' 1024 px source block) cut along the tile's block rows, so a source block is decoded
    once and one strip's stacks are held at a time; where the 10 m cells hold the reference
    stacks beside a median, the strips are cut into cells of one block (a second stack of a
    2048 px wide strip would have raised the peak by 67 MB; measured, see
    :data:`HELD_REFERENCES`). The pieces' results are stitched (:func:`stitch`) and written
    once, identical to one ``composite_window`` over the window.

    ``timings``: filled with wall and CPU seconds per step (outliers: the decision's own work,
    its reads of blue and red counted under median when their medians use them; states: the
    SCL read once and the states of every piece; median; write).
    """
    from .bands import get_band
    from .composite import (
        DEFAULT_DILATE_NODATA,
        _ReadAhead,
        build_states,
        write_window_result,
    )
    from .outliers import CLOUD_BAND, WHITE_BAND, parse_rule

    tick = progress or (lambda _what, _n: None)
    spent = timings if timings is not None else {}
    scenes = manifest["scenes"]
    classes = manifest.get("mask_classes")
    workers = max(threads, 4)
    by_res: dict[int, list[str]] = {}
    for b in bands:
        by_res.setdefault(get_band(b).resolution, []).append(b)
    rule = parse_rule(outliers)
    decision = None
    with_10m = {CLOUD_BAND, WHITE_BAND} & set(by_res.get(10, ()))
    with _timed(spent, "states"):
        scl_areas = read_scl_once(scenes, window10, by_res, workers) if by_res else None
    if rule.enabled and by_res:
        decision = _Decision(scenes, decision_footprint(window10, by_res), rule, classes,
                             workers)
        if not with_10m:
            with _timed(spent, "outliers"):
                decision.read_and_decide()
    stats = {}
    for res, keys in sorted(by_res.items()):
        band0 = get_band(keys[0])
        window = window10.scaled(10 / res)
        # the held reference bands first: their stacks are freed before the others are read
        keys = sorted(keys, key=lambda k: k not in HELD_REFERENCES)
        parts: dict[str, list] = {k: [] for k in keys}
        size = cell_size or band0.block
        reuse = decision is not None and res == 10 and with_10m
        # cells of one block where reference stacks are held beside the median (memory);
        # elsewhere whole rows of blocks: fewer, larger reads (each read has a fixed cost)
        for cell in grid_cells(window, size, size if reuse else None):
            stacks: dict = {}
            if reuse:
                states, stacks = _reference_cell(manifest, decision, window, cell, keys,
                                                 workers, spent, scl_areas)
            else:
                with _timed(spent, "states"):
                    states = build_states([s["assets"]["scl"] for s in scenes], band0, cell,
                                          classes, DEFAULT_DILATE_NODATA, threads=workers,
                                          scl_areas=scl_areas)
            rejection = None if decision is None else decision.on_band(band0, cell)
            with _timed(spent, "median"), _ReadAhead() as ahead:
                for key, result in _cell_medians(manifest, cell, keys, states, rejection,
                                                 stacks, rule, workers, ahead):
                    parts[key].append(result)
            del states, rejection
        for key in keys:
            with _timed(spent, "write"):
                stats[key] = write_window_result(stitch(parts.pop(key), window),
                                                 str(Path(out) / f"{key}.tif"),
                                                 manifest["tile"], key)
            tick(key, 1)
    return stats


#: Largest stack :func:`_cell_medians` reads ahead: it holds two (the one composited, the next
#: one read). 16 scenes of a 10 m cell of one 1024 px block are 33.5 MB, of a 1024 x 2048 px
#: strip (the 10 m bands without outlier rejection) 67 MB: measured on bench-peer's job with
#: rejection off, read ahead in strips 3.70-3.74 s and 442-446 MB peak, in cells of one block
#: 3.88-4.00 s and 313-325 MB, strips read in turn (this limit) 3.61-3.74 s and 342-344 MB.
READ_AHEAD_MAX_BYTES = 40 * 2**20


def _cell_medians(manifest: dict, cell: Window, keys: list[str], states: np.ndarray,
                  rejection: np.ndarray | None, stacks: dict[str, np.ndarray], rule: Any,
                  workers: int, ahead: Any):
    """``(band, composite_window result)`` for each of ``keys`` on one cell, the bands of one
    resolution sharing its ``states`` (each gets a copy, the last the array itself) and outlier
    ``rejection``. The stacks in ``stacks`` (the reference bands the decision read) are used
    as they are; every other band's is read one band ahead, on ``ahead``'s thread
    (``composite._ReadAhead``), over the cell's usable box, while the band before is
    composited: the reads no longer wait for the masks and medians, nor these for the reads
    (this loop ran at ~1.45 of 2 cores before). One stack more is held meanwhile: 33 MB for a
    10 m cell of one 1024 px block and 16 scenes; stacks above :data:`READ_AHEAD_MAX_BYTES`
    are read in turn on the calling thread instead. ``composite_window(inputs=)`` takes the
    states, stack and decision exactly as its own reads would give them, so the pixels are
    the same."""
    import math

    import numpy as np

    from .bands import get_band
    from .composite import (
        WindowInputs,
        _parse_window_args,
        _read_band,
        _stack_shape,
        composite_window,
    )
    from .mask import usable_box

    _, _, scenes, ids = _parse_window_args(manifest, keys[0], cell)
    # the usable box is the same for every band of the cell: each band demotes its own
    # nodata on its own copy of the states, after the box is taken (composite_window)
    box = usable_box(states.max(axis=0))
    part = None if box is None else cell.sub(box.bounds) if box.crops else cell
    rej_box = (rejection[box.inside] if rejection is not None and box is not None and box.crops
               else rejection)
    to_read = [k for k in keys if k not in stacks] if part is not None else []
    # a second stack above the limit would raise the peak too much: read each in turn, here
    in_turn = any(math.prod(_stack_shape(len(scenes), get_band(k), part))
                  * np.dtype(get_band(k).dtype).itemsize > READ_AHEAD_MAX_BYTES for k in to_read)

    def read(key: str) -> np.ndarray:
        return _read_band(scenes, get_band(key), part, workers)

    # the first read starts beside the last held stack, not beside all of them (memory)
    held = [k for k in keys if k in stacks]
    pending = None
    for i, key in enumerate(keys):
        own = states if i == len(keys) - 1 else states.copy()
        if (to_read and not in_turn and pending is None
                and (key in to_read or key == held[-1])):
            pending = ahead.start(read, to_read[0])
        if key in to_read:
            stack = read(key) if in_turn else pending.result()
            nxt = to_read.index(key) + 1
            if not in_turn:
                pending = ahead.start(read, to_read[nxt]) if nxt < len(to_read) else None
            result = composite_window(
                manifest, key, cell, mask_classes=manifest.get("mask_classes"),
                threads=workers, outliers=rule,
                inputs=WindowInputs(ids, own, stack, rej_box))
            del stack, own  # before the next band's stack is read
            yield key, result
        else:
            yield key, composite_window(
                manifest, key, cell, mask_classes=manifest.get("mask_classes"),
                threads=workers, states=own, outliers=rule, rejection=rejection,
                stack=stacks.pop(key, None))


def composite_region(tile: str, year: int, settings: Settings, bbox, bands: list[str],
                     options: dict | None = None, *, items: list[dict] | None = None,
                     progress: bool = True, timings: dict[str, float] | None = None) -> Path:
    """Select as the pipeline does (the manifest under ``settings``' work folder), then
    :func:`composite_bands` over ``bbox`` (tile CRS) into ``OUT/{tile}_{year}_bands/``, with
    ``settings.outlier_rejection``. ``timings``: seconds per step (select, then
    :func:`composite_bands`' steps)."""
    from .manifest import Manifest

    spent = timings if timings is not None else {}
    with _timed(spent, "select"):
        sel = tasks.select(tile, year, {**(options or {}), "force": True}, settings,
                           items=items)
    if sel["status"] != "ready":
        raise InputError(f"{tile} {year}: {sel['status']}: {sel.get('reason')}")
    manifest = Manifest.read(sel["manifest"]).to_dict()
    out = Path(settings.local_root or ".") / f"{sel['tile']}_{sel['year']}_bands"
    out.mkdir(parents=True, exist_ok=True)
    with _Steps(f"{sel['tile']} {sel['year']} window", progress, len(bands)) as steps:
        composite_bands(manifest, native_window(sel["tile"], bbox), bands, out,
                        progress=steps.step, outliers=settings.outlier_rejection,
                        timings=spent)
    return out


# --- the command -------------------------------------------------------------------------------
def register(sub) -> None:
    """Add the ``composite`` sub-command."""
    from .cli import bounded_int, checked
    from .grid import parse_bbox

    p = sub.add_parser("composite", help="composite tiles on this machine (no AWS): the "
                       "pipeline's COGs and STAC item into a folder",
                       description=__doc__.splitlines()[0])
    p.add_argument("--tile", action="append", default=[], help="MGRS tile (repeatable, or "
                   "comma-separated), e.g. 33UUP")
    p.add_argument("--aoi", type=checked(parse_bbox), default=None,
                   help="minlon,minlat,maxlon,maxlat: every tile that meets it")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--year", type=int, help="the year to composite")
    when.add_argument("--datetime", help="START/END within one year, e.g. 2023-04-01/2023-09-30")
    p.add_argument("--scenes", type=bounded_int(1, 64), default=None,
                   help="scenes per tile (default 16, the template's SceneCount)")
    p.add_argument("--items", default=None, help="STAC items file (FeatureCollection, "
                   "ItemCollection or .ndjson) instead of a search")
    p.add_argument("--stac-url", default=DEFAULT_STAC_API, help=f"STAC API to search "
                   f"(default {DEFAULT_STAC_API})")
    p.add_argument("--out", required=True, help="output folder (the buckets as folders)")
    p.add_argument("--memory-mb", type=bounded_int(512, 10240), default=3008,
                   help="MedianMemoryMB: sizes the windows as on Lambda (default 3008)")
    p.add_argument("--force", action="store_true", help="recompute finished work")
    p.add_argument("--outliers", choices=("on", "off"), default="on",
                   help="outlier rejection before the median (the template's OutlierRejection; "
                        "default on)")
    p.add_argument("--compression", choices=COG_COMPRESSIONS, default=COG_COMPRESSIONS[0],
                   help="the COGs' compression (the template's CogCompression; default DEFLATE, "
                        "read by every TIFF reader; LERC_ZSTD: lossless, smaller and cheaper "
                        "to write, needs GDAL >= 2.4 with zstd or geotiff.js >= 2.1)")
    p.add_argument("--bbox-native", type=checked(parse_native_bbox), default=None,
                   help="minx,miny,maxx,maxy in the tile's UTM CRS: only this window, bands at "
                        "native resolution as UTM GeoTIFFs in OUT/{tile}_{year}_bands/ "
                        "(no web COGs, no item; the benchmark against odc-stac)")
    p.add_argument("--bands", default=None, help="with --bbox-native: comma-separated bands "
                   "(default: the 12 reflectance bands)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import sys

    allocator.tune(arenas=allocator.ARENAS)  # glibc malloc: see cloudfree.allocator
    tiles = tasks.resolve_tiles([t for v in args.tile for t in v.split(",") if t.strip()]
                                or None, args.aoi)
    if args.datetime:
        start, end = parse_interval(args.datetime)
        year = start.year
    else:
        year, start, end = args.year, None, None
    year = tasks.check_year(year)
    items = read_items(args.items) if args.items else None
    if start is not None:
        if items is None:
            from .select import search_items

            items = [it for t in tiles for it in search_items(args.stac_url, t, year)]
        items = within(items, start, end)
    options = {"scenes": args.scenes, "force": args.force}
    if args.bbox_native is not None:
        from .bands import REFLECTANCE_BANDS

        settings = local_settings(args.out, stac_url=args.stac_url,
                                  median_memory_mb=args.memory_mb, outliers=args.outliers)
        bands = args.bands.split(",") if args.bands else [b.key for b in REFLECTANCE_BANDS]
        summary = []
        for t in tiles:
            spent: dict[str, float] = {}
            path = composite_region(t, year, settings, args.bbox_native, bands, options,
                                    items=items, progress=not args.quiet, timings=spent)
            print(path, file=sys.stderr)
            summary.append({"tile": t, "out": str(path), "outliers": args.outliers,
                            "steps": {k: round(v, 3) for k, v in spent.items()}})
        if args.json:
            print(json.dumps(summary, indent=1))
        return 0
    runs = composite(tiles, year, args.out, options, items=items, stac_url=args.stac_url,
                     median_memory_mb=args.memory_mb, progress=not args.quiet,
                     outliers=args.outliers, compression=args.compression)
    for r in runs:
        print(f"{r.tile} {r.year}: {r.status} ({r.scenes} scenes, {r.seconds:.1f} s)"
              + (f" -> {r.item}" if r.item else f": {r.reason}" if r.reason else ""),
              file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict() for r in runs], indent=1))
    return 0 if all(r.status in ("published", "complete") for r in runs) else 1
