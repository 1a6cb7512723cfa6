"""The task layer: one function per pipeline step, turning a small payload into library calls.

Lambda handlers (``functions/*/app.py``), the CLI and the tests call these. Each takes plain
values plus a :class:`~cloudfree.settings.Settings` and returns a small JSON-able dict: S3
references, counts and timings, never scene lists or pixels (Step Functions' 256 KB limit).
Every step is rerun-safe: finished work is detected by its output objects and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from . import faults, storage
from .bands import OUTPUT_BANDS
from .errors import InputError, NoScenesError
from .grid import land_tile_ids, parse_bbox, parse_tile, tiles_for_aoi
from .layout import Layout
from .manifest import Manifest, clear_exclusions
from .settings import Settings

log = logging.getLogger(__name__)

FIRST_YEAR = 2015  # Sentinel-2A launch
#: Tiles per execution: the world's land tiles (20,638) fit, with room for a few more.
MAX_TILES = 25_000
#: Reflectance band whose count COG and statistics stand for the tile (10 m, finest grid).
COUNT_BAND = "red"


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunOptions:
    """Options of one execution (validated once, at the boundary)."""

    scenes: int | None = None  # None: the deployment's SceneCount
    months: tuple[int, ...] | None = None
    max_cloud: float | None = None
    mask_classes: tuple[int, ...] | None = None  # None: the deployment's MaskClasses
    force: bool = False  # recompute finished work

    @classmethod
    def from_dict(cls, data: dict | None) -> RunOptions:
        if data is not None and not isinstance(data, dict):
            raise InputError(f"options must be a JSON object such as {{\"scenes\": 16}}, got "
                             f"{_kind(data)} {_short(data)}")
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown option(s) {sorted(unknown)}; valid: "
                             f"{sorted(cls.__dataclass_fields__)}")
        try:
            opts = cls(
                scenes=None if data.get("scenes") is None else _integer(data["scenes"], "scenes"),
                months=None if data.get("months") is None else tuple(int(m) for m in
                                                                     data["months"]),
                max_cloud=None if data.get("max_cloud") is None else float(data["max_cloud"]),
                mask_classes=None if data.get("mask_classes") is None else tuple(
                    int(c) for c in data["mask_classes"]),
                force=_flag(data.get("force", False), "force"),
            )
        except (TypeError, ValueError) as err:
            raise InputError(f"bad options {data!r}: {err}") from err
        if opts.scenes is not None and not 1 <= opts.scenes <= 64:
            raise InputError(f"scenes must be within 1-64, got {opts.scenes}")
        if opts.months is not None and any(not 1 <= m <= 12 for m in opts.months):
            raise InputError(f"months must be within 1-12, got {list(opts.months)}")
        if opts.max_cloud is not None and not 0 <= opts.max_cloud <= 100:
            raise InputError(f"max_cloud must be within 0-100, got {opts.max_cloud}")
        if opts.mask_classes is not None and any(not 0 <= c <= 11 for c in opts.mask_classes):
            raise InputError(f"mask_classes must be SCL classes 0-11, got {opts.mask_classes}")
        return opts

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("months", "mask_classes"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d

    def scene_count(self, settings: Settings) -> int:
        return self.scenes or settings.scene_count

    def masks(self, settings: Settings) -> tuple[int, ...]:
        return self.mask_classes or settings.mask_classes


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _integer(value: Any, name: str) -> int:
    """An integer from an int or a string of digits; floats with a fraction, booleans and
    anything else are an :class:`InputError` (``int(2023.7)`` would silently give 2023)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InputError(f"{name} must be an integer, got {_kind(value)} {_short(value)}")
    try:
        number = float(value) if isinstance(value, float) else int(str(value).strip())
    except ValueError as err:
        raise InputError(f"{name} must be an integer, got {_short(value)}") from err
    if isinstance(number, float) and not number.is_integer():
        raise InputError(f"{name} must be an integer, got {_short(value)}")
    return int(number)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be true or false, got {_short(value)}")
    return value


def check_year(year: Any) -> int:
    """The year of a run: an integer from 2015 (Sentinel-2A's first data) to this year."""
    if year is None:
        raise InputError("year is required, e.g. \"year\": 2023")
    y = _integer(year, "year")
    last = datetime.now(UTC).year
    if not FIRST_YEAR <= y <= last:
        raise InputError(f"year {y} is outside {FIRST_YEAR}-{last}: Sentinel-2 L2A data start "
                         f"in {FIRST_YEAR} and a later year has no scenes yet; pick a year in "
                         "that range")
    return y


#: ``"aoi": "world"`` in the execution input (``cloudfree run --world``): every land tile.
WORLD = "world"


def resolve_tiles(tiles: list[str] | None, aoi: Any = None) -> list[str]:
    """Tile ids from an explicit list and/or an AOI; sorted, unique, validated.

    ``aoi`` is a lon/lat bbox (``[minlon, minlat, maxlon, maxlat]`` or ``"minlon,minlat,..."``:
    the grid tiles whose footprint meets it, ocean tiles included) or ``"world"``:
    every Sentinel-2 land tile (``grid.land_tile_ids``, package data, 20,638).
    """
    if tiles is not None and not isinstance(tiles, list | tuple):
        raise InputError(f"tiles must be a list of MGRS tile ids such as [\"33UUP\"], got "
                         f"{_kind(tiles)} {_short(tiles)}")
    if tiles is not None and len(tiles) > 4 * MAX_TILES:  # before parsing a huge list
        raise InputError(f"{len(tiles)} tiles exceed the limit of {MAX_TILES} per execution; "
                         "split the run into several executions")
    found: set[str] = set()
    for i, t in enumerate(tiles or []):
        if not isinstance(t, str):
            raise InputError(f"tiles[{i}] must be an MGRS tile id string such as \"33UUP\", "
                             f"got {_kind(t)} {_short(t)}")
        found.add(parse_tile(t).id)
    if isinstance(aoi, str) and aoi.strip().lower() == WORLD:
        found.update(land_tile_ids())
    elif aoi is not None:
        found.update(t.id for t in tiles_for_aoi(parse_bbox(aoi)))
    if not found:
        raise InputError('no tiles: give `tiles` (a list of MGRS ids) and/or an `aoi` '
                         '([minlon, minlat, maxlon, maxlat] or "world")')
    if len(found) > MAX_TILES:
        raise InputError(f"{len(found)} tiles exceed the limit of {MAX_TILES} per execution; "
                         "split the run into several executions")
    return sorted(found)


#: Fields of an execution input and of a reprocessing request (``reason`` is informative).
REQUEST_FIELDS = ("year", "tiles", "aoi", "options", "reason")
REQUEST_EXAMPLE = '{"year": 2023, "tiles": ["33UUP"], "options": {"scenes": 16}}'


def check_request(req: Any, what: str = "execution input") -> dict:
    """Validate an execution input or a reprocessing request (a JSON object of
    ``REQUEST_FIELDS``); return the normalized execution input (tiles resolved, AOI folded in)."""
    if not isinstance(req, dict):
        raise InputError(f"{what} must be a JSON object such as {REQUEST_EXAMPLE}, got "
                         f"{_kind(req)} {_short(req)}")
    unknown = sorted(set(req) - set(REQUEST_FIELDS))
    if unknown:
        raise InputError(f"unknown {what} field(s) {unknown}; valid fields: "
                         f"{list(REQUEST_FIELDS)}")
    year = check_year(req.get("year"))
    options = RunOptions.from_dict(req.get("options")).to_dict()
    return {"year": year, "tiles": resolve_tiles(req.get("tiles"), req.get("aoi")), "aoi": None,
            "options": options}


# --------------------------------------------------------------------------------------------
# plan
# --------------------------------------------------------------------------------------------
def plan(event: dict, settings: Settings) -> dict:
    """Validate the execution input (``event["input"]``, the whole of it as started), expand it
    to tiles, write the tile list for ItemReader.

    Bad input is answered, not raised: ``status: "rejected"`` with the InputError's message as
    ``cause``, which the state machine's ``InvalidInput`` Fail state ends the execution with
    (error ``InputError``): a user's mistake is neither retried nor counted as a Lambda error.
    """
    t0 = time.perf_counter()
    try:
        request = check_request(event.get("input"))
        execution = check_execution_name(event.get("execution") or f"manual-{request['year']}")
    except InputError as err:
        log.warning("execution input rejected: %s", err)
        return {"status": "rejected", "error": "InputError", "cause": str(err), "year": None,
                "options": None, "tiles_bucket": None, "tiles_key": None, "count": 0}
    resolve_seconds = time.perf_counter() - t0
    year, tiles = request["year"], request["tiles"]
    uri = settings.layout.plan_list(execution)
    storage.write_json(uri, [{"tile": t} for t in tiles])
    bucket, key = storage.split_s3(uri)
    log.info("plan %s: %d tiles resolved in %.2f s", execution, len(tiles), resolve_seconds)
    return {"status": "planned", "error": None, "cause": None, "year": year,
            "options": request["options"], "tiles_bucket": bucket, "tiles_key": key,
            "count": len(tiles), "execution": execution,
            "resolve_seconds": round(resolve_seconds, 3)}


_EXECUTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def check_execution_name(name: str) -> str:
    """An execution name becomes part of S3 keys (plan list, report): letters, digits, ``-``
    and ``_`` only (what AWS allows and CloudWatch logging needs), so ``../`` cannot escape."""
    if not _EXECUTION_NAME.match(str(name)):
        raise InputError(f"execution name {_short(name)} must be 1-80 letters, digits, '-' or "
                         "'_'")
    return str(name)


# --------------------------------------------------------------------------------------------
# select
# --------------------------------------------------------------------------------------------
def tile_transitions(work: list[dict], decide: int = 0) -> int:
    """State transitions of one tile's child execution for a select ``work`` list and
    ``decide`` batches.

    Select, Selected (choice), Decisions (map), Bands (map), Complete = 5; one Decide task per
    decide batch; per band: Windows (map), Assemble, plus one Median per batch. Independent of
    the window count within a batch.
    """
    return 5 + int(decide) + sum(2 + len(w["batches"]) for w in work)


def _decide_work(manifest: Manifest, settings: Settings) -> list[int]:
    """The *decide* batches select hands to the state machine (none when the rule is off: a
    Map over an empty array succeeds at once with ``[]`` on AWS, and in MiniStack 1.5.33 too,
    checked in its source: ``services/stepfunctions.py`` runs the items of a list, none)."""
    from .outliers import parse_rule

    if not parse_rule(settings.outlier_rejection).enabled:
        return []
    return list(range(len(manifest.decision_plan().batches)))




def pixel_worker_setup() -> dict[str, Any]:
    """Set up a decide or median Lambda at its cold start (glibc's malloc thresholds:
    :mod:`cloudfree.allocator`) and say how it decodes; its log lines carry these keys:
    ``gdal_zlib`` (expect ``*.zlib-ng``, :mod:`cloudfree.deflate`), ``tile_decoder`` (expect
    ``isal``, :mod:`cloudfree.blocks`) and ``malloc`` (which settings glibc took)."""
    from . import allocator, blocks
    from .deflate import gdal_zlib

    return {"gdal_zlib": gdal_zlib()["version"], "tile_decoder": blocks.decoder(),
            "malloc": allocator.tune()}


def select(tile: str, year: int, options: dict | None, settings: Settings,
           items: list[dict] | None = None) -> dict:
    """Search, select (assets checked) and harmonize one tile's scenes; write the manifest once.

    ``items``: STAC item dicts to select from instead of searching ``settings.stac_api_url``
    (``cloudfree composite --items``).

    The manifest also fixes the window plan of every band (from ``MedianMemoryMB``); the result
    carries only batch indices per band, never windows or scenes (small state payload).
    """
    from .select import search_items

    t = parse_tile(tile)
    year = check_year(year)
    opts = RunOptions.from_dict(options)
    layout = settings.layout
    base = {"tile": t.id, "year": year, "options": opts.to_dict()}
    if not opts.force and storage.exists(layout.item(year, t.id)):
        return {**base, "status": "complete", "decide": [], "work": [], "scenes": 0}
    manifest_uri = layout.manifest(year, t.id)
    if not opts.force and storage.exists(manifest_uri):
        manifest = Manifest.read(manifest_uri)  # a rerun keeps the scenes it started with
        return {**base, "status": "ready", "manifest": manifest_uri,
                "scenes": len(manifest.scenes), "excluded": len(manifest.excluded),
                "decide": _decide_work(manifest, settings), "work": manifest.work()}
    if items is None:
        items = search_items(settings.stac_api_url, t, year,
                             collection=settings.source_collection, months=opts.months,
                             max_cloud=opts.max_cloud,
                             timeout=(min(5.0, settings.stac_timeout_s),
                                      settings.stac_timeout_s))
    return select_items(items, t.id, year, opts, settings)


def select_items(items: list[dict], tile: str, year: int, opts: RunOptions,
                 settings: Settings) -> dict:
    """Select (assets checked) and harmonize a tile's scenes from STAC item dicts; write the
    manifest (or the tile's EMPTY marker). *select* after its search, and
    ``cloudfree composite`` (items from a search or a file) both end here."""
    from .harmonize import harmonize_scenes
    from .select import SelectOptions, select_readable

    t = parse_tile(tile)
    layout = settings.layout
    base = {"tile": t.id, "year": int(year), "options": opts.to_dict()}
    sel_opts = SelectOptions(n=opts.scene_count(settings), months=opts.months,
                             max_cloud=opts.max_cloud, collection=settings.source_collection)
    try:
        checked = select_readable(items, t, year, sel_opts, api_url=settings.stac_api_url)
    except NoScenesError as err:
        storage.write_json(layout.tile_empty(year, t.id),
                           {"tile": t.id, "year": year, "reason": str(err),
                            "searched": len(items)})
        return {**base, "status": "empty", "decide": [], "work": [], "scenes": 0,
                "reason": str(err)}
    doc = checked.selection.to_manifest()
    harmonize_scenes(doc["scenes"])  # fills each scene's "harmonization"
    manifest = Manifest.build(doc, mask_classes=opts.masks(settings),
                              median_memory_mb=settings.median_memory_mb,
                              excluded=checked.excluded,
                              excluded_scenes=checked.excluded_scenes)
    clear_exclusions(layout, year, t.id)  # records of an earlier manifest do not apply
    manifest_uri = layout.manifest(year, t.id)
    manifest.write(manifest_uri)
    return {**base, "status": "ready", "manifest": manifest_uri, "scenes": len(manifest.scenes),
            "excluded": len(manifest.excluded), "decide": _decide_work(manifest, settings),
            "work": manifest.work()}


# --------------------------------------------------------------------------------------------
# median, assemble, complete
# --------------------------------------------------------------------------------------------
def decide(tile: str, year: int, batch: int, options: dict | None, settings: Settings) -> dict:
    """Compute one batch of the tile's shared outlier decision squares before the bands'
    medians (``outliers.decide_squares``): each square is then decided once per tile instead
    of by every band that reaches it first. Squares already stored are skipped (rerun-safe);
    a lost invocation costs time only, as the medians compute a missing square themselves."""
    from .composite import DEFAULT_DILATE_NODATA
    from .outliers import decide_squares

    t = parse_tile(tile)
    year = int(year)
    RunOptions.from_dict(options)  # validated like every task's options
    layout = settings.layout
    manifest = Manifest.read(layout.manifest(year, t.id))
    squares = manifest.decision_plan().batch(int(batch))
    t0 = time.perf_counter()
    done = decide_squares(manifest.decision_scenes(), squares, layout.outlier_decisions(year, t.id),
                          rule=settings.outlier_rejection, mask_classes=manifest.mask_classes,
                          dilate_nodata=DEFAULT_DILATE_NODATA)
    seconds = round(time.perf_counter() - t0, 3)
    if done["computed"]:
        storage.write_json(layout.decide_stats(year, t.id, int(batch)),
                           {**done, "batch": int(batch), "seconds": seconds})
    return {"batch": int(batch), **done, "seconds": seconds}


def median(tile: str, year: int, band: str, batch: int, options: dict | None,
           settings: Settings) -> dict:
    """Composite one batch of windows of one band (the windows come from the manifest's plan;
    windows already written with the band's current scene set are skipped)."""
    from .composite import composite_band_windows

    t = parse_tile(tile)
    opts = RunOptions.from_dict(options)
    fault = faults.attempt("median", f"{t.id}/{year}/{band}/{batch}")
    manifest = Manifest.read(settings.layout.manifest(int(year), t.id))
    windows = manifest.band_plan(band).batch(int(batch))
    t0 = time.perf_counter()
    fault.check("before")
    half = max(1, len(windows) // 2)

    def during(n: int) -> None:  # "during": after the first half is written
        if n == half and n < len(windows):
            fault.check("during")

    done = composite_band_windows(manifest, band, windows, settings.layout, int(year), t,
                                  overwrite=opts.force, mask_classes=manifest.mask_classes,
                                  outliers=settings.outlier_rejection,
                                  memory_mb=settings.median_memory_mb, after_window=during)
    fault.check("after")
    return {"band": band, "batch": int(batch), "windows": len(done),
            "skipped": sum(1 for d in done if d["skipped"]),
            "excluded": sorted({s for d in done for s in d.get("excluded", [])}),
            "seconds": round(time.perf_counter() - t0, 3)}


def assemble(tile: str, year: int, band: str, options: dict | None, settings: Settings) -> dict:
    """Stitch one band's windows into its web-optimized COG (and the count COG for red).

    First every window is brought to the band's final scene set (``composite.reconcile_band``):
    a scene excluded by one median invocation is left out of every window of the band.
    """
    from .assemble import assemble_band
    from .composite import reconcile_band

    t = parse_tile(tile)
    year = int(year)
    opts = RunOptions.from_dict(options)
    layout = settings.layout
    stats_uri = layout.band_stats(year, t.id, band)
    cog = layout.staged_cog(year, t.id, band)
    wants_count = band == COUNT_BAND
    if not opts.force and storage.exists(stats_uri) and storage.exists(cog) and (
            not wants_count or storage.exists(layout.staged_cog(year, t.id, "count"))):
        stats = storage.read_json(stats_uri)
        return {"band": band, "cog": cog, "bytes": stats["cog"]["size"], "skipped": True}
    fault = faults.attempt("assemble", f"{t.id}/{year}/{band}")
    manifest = Manifest.read(layout.manifest(year, t.id))
    windows = list(manifest.band_plan(band).windows)
    t0 = time.perf_counter()
    fault.check("before")
    recomputed = reconcile_band(manifest, band, windows, layout, year, t,
                                mask_classes=manifest.mask_classes,
                                outliers=settings.outlier_rejection)
    info = assemble_band(layout, year, t.id, band, windows, write_count=wants_count,
                         profile=settings.cog_compression.lower(),
                         on_written=lambda: fault.check("during"))
    fault.check("after")
    return {"band": band, "cog": info.href, "bytes": info.size, "skipped": False,
            "recomputed": recomputed, "seconds": round(time.perf_counter() - t0, 3)}


def complete(tile: str, year: int, execution: str | None, settings: Settings) -> dict:
    """Mark the tile complete with this execution's id: its S3 event triggers *publish*.

    Written by every execution that reaches this step, i.e. that (re)computed the tile (select
    skips tiles already published unless ``force``), so a forced rerun republishes.
    """
    t = parse_tile(tile)
    year = int(year)
    layout = settings.layout
    missing = [b for b in OUTPUT_BANDS if not storage.exists(layout.band_stats(year, t.id, b))]
    if missing:
        from .errors import IncompleteError

        raise IncompleteError(f"{t.id} {year}: bands not assembled: {missing}")
    storage.write_json(layout.tile_done(year, t.id),
                       {"tile": t.id, "year": year, "execution": execution,
                        "completed_at": _now(), "cost": tile_cost(t.id, year, settings)})
    return {"tile": t.id, "year": year, "status": "done", "execution": execution}


def tile_cost(tile: str, year: int, settings: Settings) -> dict:
    """What a tile cost: Lambda seconds and GB-s of median + assemble, state transitions; and
    what ``cloudfree plan`` projects for it (``planned_lambda_gb_seconds``: the report compares
    them, the explicit check of the plan's two unmeasured beliefs, Lambda's CPU speed against
    this machine's and its S3 read rate).

    The plan is for a whole tile of as many scenes at these settings, scaled by the tile's
    ``observed_share`` (blue's pixels some scene observed, over the tile's): decide, medians and
    assembles work on the observed part alone (usable boxes, the COGs' data crop), so a tile on
    a swath edge costs about that share. A first-order model: the fixed costs of an invocation
    (start, headers) do not shrink with the area, so a tile of a few km reads well above 1."""
    from .costs import tile_cost as planned

    layout = settings.layout
    stats = [storage.read_json(layout.band_stats(year, tile, b)) for b in OUTPUT_BANDS]
    decide_s = sum(float(storage.read_json(u).get("seconds", 0)) for u in
                   storage.list_uris(layout.decide_stats_prefix(year, tile))
                   if u.endswith(".json"))
    median_s = sum(float(s.get("median_seconds", 0)) for s in stats) + decide_s
    assemble_s = sum(float(s.get("assemble_seconds", 0)) for s in stats)
    manifest = Manifest.read(layout.manifest(year, tile))
    transitions = tile_transitions(manifest.work(), len(_decide_work(manifest, settings)))
    gb_s = (median_s * settings.median_memory_mb + assemble_s * settings.assemble_memory_mb)
    cost = {"median_seconds": round(median_s, 2), "assemble_seconds": round(assemble_s, 2),
            "lambda_gb_seconds": round(gb_s / 1024, 1), "state_transitions": transitions,
            "scenes": len(manifest.scenes)}
    blue = stats[OUTPUT_BANDS.index("blue")]
    share = (int(blue.get("observed_pixels", 0)) / int(blue["pixels"])
             if blue.get("pixels") else 1.0)
    cost["observed_share"] = round(share, 4)
    try:  # a figure for the report: never worth failing the tile over
        cost["planned_lambda_gb_seconds"] = round(share * planned(
            tile, len(manifest.scenes), settings.median_memory_mb,
            compression=settings.cog_compression).gb_s, 1)
    except Exception as err:  # noqa: BLE001
        log.warning("no planned cost for %s %s: %s", tile, year, err)
    return cost


def record_failure(tile: str, year: int, error: dict | None, settings: Settings) -> dict:
    """Record why a tile failed (the report turns it into a reprocessing request)."""
    t = parse_tile(tile)
    error = error or {}
    cause = str(error.get("Cause", ""))[:4000]
    storage.write_json(settings.layout.tile_failed(int(year), t.id),
                       {"tile": t.id, "year": int(year), "error": error.get("Error"),
                        "cause": cause, "at": _now()})
    return {"tile": t.id, "year": int(year), "status": "failed", "error": error.get("Error")}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# publish
# --------------------------------------------------------------------------------------------
def parse_done_key(key: str) -> tuple[int, str]:
    """``work/{year}/_markers/{tile}/DONE.json`` -> (year, tile) (the key form is Layout's)."""
    parsed = Layout.parse_tile_done(key)
    if parsed is None:
        raise InputError(f"not a tile completion marker: {key!r}")
    return parsed[0], parse_tile(parsed[1]).id


def publish(bucket: str, key: str, settings: Settings) -> dict:
    """Build, validate and write a tile's STAC item once all its assets exist and validate."""
    from .publish import publish_tile

    year, tile = parse_done_key(key)
    if bucket != settings.work_bucket:
        raise InputError(f"completion marker in unexpected bucket {bucket!r}")
    return publish_tile(tile, year, settings)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def tile_status(tile: str, year: int, settings: Settings) -> dict:
    """done / empty / failed of one tile (2 calls: its markers' listing, its index record).

    For one or a few tiles (the CLI); the report classifies a whole year from two listings
    with the same rules (:func:`cloudfree.status.classify`).
    """
    from .status import classify

    layout = settings.layout
    t = parse_tile(tile).id
    markers = {o.uri.rsplit("/", 1)[-1].removesuffix(".json"): o for o in
               storage.list_objects(f"{layout.markers_prefix(year)}{t}/")}
    return classify(t, markers, storage.head(layout.index_part(year, t)), settings.layout,
                    int(year))


def report(execution: str, year: int, tiles_bucket: str, tiles_key: str,
           settings: Settings, settle_seconds: float = 60.0) -> dict:
    """Summarise an execution per tile from two listings (markers, index records), republish
    tiles whose marker is newer than their item, rebuild the collection once; failed tiles
    become a pending reprocessing request. See :mod:`cloudfree.status`."""
    from .publish import rebuild_collection
    from .status import year_report

    tiles = [t["tile"] for t in storage.read_json(f"s3://{tiles_bucket}/{tiles_key}")]
    uri = settings.layout.report(execution)
    # written before the listings: a publish whose index record the listings miss finds the
    # report and rebuilds the collection itself; the collection's ETag read before them makes
    # our rebuild lose (and re-list) against any rebuild in between
    storage.write_json(uri, {"execution": execution, "year": int(year), "status": "running"})
    before = storage.head(settings.layout.collection())
    doc = year_report(execution, int(year), tiles, settings, settle_seconds=settle_seconds)
    indexed = doc.pop("_indexed")
    counts = {k: doc[k] for k in ("done", "empty", "failed")}
    if doc["failed"]:
        req = {"year": int(year), "tiles": [r["tile"] for r in doc["tiles"]
                                            if r["status"] == "failed"],
               "reason": f"failed in {execution}"}
        request_uri = settings.layout.pending_request(execution)
        storage.write_json(request_uri, req)
        doc["reprocess_request"] = request_uri
    storage.write_json(uri, doc)
    collection = rebuild_collection(settings, listed=(indexed, before.etag if before else None))
    return {"report": uri, **counts, "republished": len(doc["republished"]),
            "collection_items": collection["items"], "seconds": doc["seconds"]}


# --------------------------------------------------------------------------------------------
# reprocess
# --------------------------------------------------------------------------------------------
#: Largest reprocessing request read (25,000 tile ids take about 225 kB as JSON).
MAX_REQUEST_BYTES = 512 * 1024


def parse_request(body: bytes) -> dict:
    """A reprocessing request: ``{"year": 2023, "tiles": [...], "aoi"?: [...], "options"?: {}}``."""
    if len(body) > MAX_REQUEST_BYTES:
        raise InputError(f"request of {len(body)} bytes exceeds {MAX_REQUEST_BYTES} bytes; "
                         f"list at most {MAX_TILES} tiles per request")
    if not body.strip():
        raise InputError(f"request is empty; write a JSON object such as {REQUEST_EXAMPLE}")
    try:
        req = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"request is not JSON ({err}); write a JSON object such as "
                         f"{REQUEST_EXAMPLE}") from err
    return check_request(req, "request")


def reprocess(bucket: str, key: str, settings: Settings, sfn_client=None) -> dict:
    """Start an execution for the tiles a request names, or record why it was rejected."""
    name = key.rsplit("/", 1)[-1]
    body = storage.read_bytes(f"s3://{bucket}/{key}", max_bytes=MAX_REQUEST_BYTES + 1)
    try:
        execution_input = parse_request(body)
    except InputError as err:
        storage.write_json(settings.layout.rejected(name),
                           {"request": f"s3://{bucket}/{key}", "reason": str(err),
                            "at": _now()})
        return {"status": "rejected", "reason": str(err)}
    if not settings.state_machine_arn:
        from .errors import ConfigError

        raise ConfigError("STATE_MACHINE_ARN is not set")
    digest = hashlib.sha256(body).hexdigest()[:12]
    exec_name = f"reprocess-{execution_input['year']}-{_safe(name)[:40]}-{digest}"
    if sfn_client is None:
        import boto3

        sfn_client = boto3.client("stepfunctions")
    try:
        resp = sfn_client.start_execution(stateMachineArn=settings.state_machine_arn,
                                          name=exec_name, input=json.dumps(execution_input))
    except sfn_client.exceptions.ExecutionAlreadyExists:
        return {"status": "duplicate", "execution": exec_name}
    return {"status": "started", "execution": exec_name, "executionArn": resp["executionArn"],
            "tiles": execution_input["tiles"]}


def _safe(name: str) -> str:
    return "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in name)
