"""Publishing a finished tile: versioned public COGs, STAC item, index record; the collection.

*assemble* writes every COG to the work bucket (``Layout.staged_cog``): nothing is public until
*publish* runs. Publish, on the tile's completion marker (``DONE.json``, rewritten by every
execution that (re)computes the tile):

1. checks the 14 staged COGs exist, match their band statistics and pass ``rio cogeo validate``;
2. copies them (server side) under a **version** folder named by a hash of their SHA-256s, so a
   public file is never replaced in place: an item points at one version, and a version's files
   all come from one computation (identical outputs give the identical version);
3. writes the item last, then its index record, each with a conditional put (``If-None-Match``
   for a new object, ``If-Match`` its ETag to replace it) that never overwrites a newer run's;
4. deletes versions older than the current and the previous one (a reader holding the previous
   item keeps working).

A publish writes only its own item and index record. The collection is rebuilt from a listing
of the index keys (no per-item reads) once per execution, by the report, by a publish that lands
after its execution's report, or on demand (``cloudfree catalog rebuild``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import Any

import numpy as np

from . import __version__, faults, storage
from .bands import OUTPUT_BANDS
from .errors import IncompleteError, TransientError, ValidationError
from .grid import parse_tile, union_bbox
from .manifest import Manifest, all_exclusions
from .settings import Settings

log = logging.getLogger(__name__)
ASSETS = (*OUTPUT_BANDS, "count")
COUNT_BAND = "red"


def observation_stats(histogram: list[int]) -> dict[str, Any]:
    """min/mean/max/percentiles of the valid-observation count over observed pixels (>= 1)."""
    hist = np.asarray(histogram, dtype=np.int64)
    if hist.size <= 1 or hist[1:].sum() == 0:
        return {"min": 0, "mean": 0.0, "max": 0, "percentiles": {}}
    values = np.arange(hist.size)
    h = hist.copy()
    h[0] = 0
    total = h.sum()
    cdf = np.cumsum(h) / total
    pct = {f"p{p}": int(values[np.searchsorted(cdf, p / 100)]) for p in (10, 50, 90)}
    nz = np.nonzero(h)[0]
    return {"min": int(nz[0]), "mean": float((values * h).sum() / total), "max": int(nz[-1]),
            "percentiles": pct}


def item_stats(count_stats: dict) -> dict:
    """Good-pixel fraction inputs, contribution shares and snow pixels from the count band's
    statistics."""
    hist = count_stats.get("count_histogram") or [count_stats.get("pixels", 0)]
    good = int(count_stats.get("valid_pixels", 0))
    footprint = int(count_stats.get("observed_pixels") or count_stats.get("pixels") or 0)
    contributions = count_stats.get("contributions") or {}
    shares = {k: round(v / good, 6) if good else 0.0 for k, v in contributions.items()}
    return {"good_pixels": good, "footprint_pixels": max(footprint, 1),
            "observations": observation_stats(hist), "contributions": shares,
            "snow_pixels": int(count_stats.get("snow_pixels") or 0),
            "outliers": {k: int(v) for k, v in (count_stats.get("outliers") or {}).items()},
            "masked": {k: int(v) for k, v in (count_stats.get("masked") or {}).items()}}


def _band_stats(tile: str, year: int, settings: Settings) -> dict[str, dict]:
    layout = settings.layout
    missing = [b for b in OUTPUT_BANDS if not storage.exists(layout.band_stats(year, tile, b))]
    if missing:
        raise IncompleteError(f"{tile} {year}: bands not assembled: {missing}")
    return {b: storage.read_json(layout.band_stats(year, tile, b)) for b in OUTPUT_BANDS}


def asset_cogs(band_stats: dict[str, dict]) -> dict[str, dict]:
    """Each asset's CogInfo dict (the count COG rides on the red band's statistics)."""
    cogs = {b: band_stats[b].get("cog") or {} for b in OUTPUT_BANDS}
    cogs["count"] = (cogs[COUNT_BAND].get("related") or {}).get("count") or {}
    bad = [k for k, c in cogs.items() if not c.get("sha256") or not c.get("size")]
    if bad:
        raise IncompleteError(f"band statistics without COG checksum/size for {bad}")
    return cogs


def asset_version(cogs: dict[str, dict]) -> str:
    """A short content hash of the assets' SHA-256s: the public version folder's name."""
    h = hashlib.sha256("".join(f"{k}:{cogs[k]['sha256']};" for k in sorted(cogs)).encode())
    return "v" + h.hexdigest()[:16]


def check_staged(tile: str, year: int, cogs: dict[str, dict], settings: Settings) -> dict:
    """Staged URI per asset; IncompleteError if one is missing or not the size its statistics
    record (a COG rewritten after its statistics), ValidationError if not a valid COG."""
    from .assemble import validate_cog

    layout = settings.layout
    uris = {k: layout.staged_cog(year, tile, k) for k in ASSETS}
    heads = {k: storage.head(u) for k, u in uris.items()}
    missing = [k for k, h in heads.items() if h is None]
    if missing:
        raise IncompleteError(f"{tile} {year}: staged assets missing: {missing}")
    stale = [k for k, h in heads.items() if h.size != int(cogs[k]["size"])
             or (cogs[k].get("etag") and h.etag != cogs[k]["etag"])]
    if stale:
        raise IncompleteError(f"{tile} {year}: staged COGs differ from their statistics: "
                              f"{stale} (rerun assemble for these bands)")

    with storage.gdal_env():
        for uri in uris.values():
            ok, errors, _ = validate_cog(uri)
            if not ok:
                raise ValidationError(f"{uri} is not a valid COG: {errors}")
    return uris


def _copy_version(staged: dict[str, str], tile: str, year: int, version: str,
                  cogs: dict[str, dict], settings: Settings, attempt: faults.Attempt) -> dict:
    """Copy the staged COGs into the version folder (skipping copies already there)."""
    layout = settings.layout
    public = {k: layout.band_cog(year, tile, k, version) for k in ASSETS}
    for i, key in enumerate(ASSETS):
        if i == len(ASSETS) // 2:
            attempt.check("during")
        have = storage.head(public[key])
        if have is None or have.size != int(cogs[key]["size"]):
            # only the bytes the statistics describe: a concurrent rerun's assemble may be
            # rewriting the staged file (the copy then fails and the publish is retried)
            storage.copy(staged[key], public[key], if_match=cogs[key].get("etag"),
                         storage_class=settings.public_storage_class)
    return public


def build_tile_item(tile: str, year: int, public: dict[str, str], cogs: dict[str, dict],
                    band_stats: dict[str, dict], marker: dict, version: str,
                    settings: Settings) -> dict:
    """The tile's STAC item (dict, validated), assets at their public versioned hrefs."""
    from . import stac

    manifest = Manifest.read(settings.layout.manifest(year, tile))
    doc = manifest.to_dict()  # provenance: every excluded scene-band, select-time and runtime
    doc["excluded"] = [e.to_dict() for e in all_exclusions(manifest, settings.layout)]
    assets = {k: {"href": public[k], "shape": cogs[k]["shape"],
                  "transform": cogs[k]["transform"], "size": cogs[k]["size"],
                  "checksum": "1220" + cogs[k]["sha256"]} for k in ASSETS}
    created = datetime.fromisoformat(marker["completed_at"].replace("Z", "+00:00"))
    item = stac.build_item(tile, year, assets, doc, item_stats(band_stats[COUNT_BAND]),
                           software_version=__version__, api_url=settings.stac_api_url,
                           created=created,
                           data_bounds=band_stats[COUNT_BAND].get("data_bounds"))
    d = _public_hrefs(item.to_dict(include_self_link=False, transform_hrefs=False), settings)
    d["properties"]["cloudfree:run"] = {"execution": marker.get("execution"),
                                        "completed_at": marker["completed_at"],
                                        "version": version}
    stac.validate_item(d)
    return d


def _run_of(doc: dict) -> str:
    """The completion time a published document comes from ('' if unknown: older layout)."""
    run = (doc.get("properties") or doc).get("cloudfree:run") or {}
    return str(run.get("completed_at") or "")


def put_newest(uri: str, doc: dict, attempts: int = 8) -> str:
    """Write ``doc`` unless the object holds a newer run's document; conditional put (If-Match
    / If-None-Match), re-decided on a lost race. Returns written/unchanged/superseded."""
    body = json.dumps(doc, indent=1, sort_keys=True).encode()
    for _ in range(attempts):
        cur = storage.head(uri)
        if cur is not None:
            old = storage.read_bytes(uri)
            if old == body:
                return "unchanged"
            try:
                if _run_of(json.loads(old)) > _run_of(doc):
                    return "superseded"
            except json.JSONDecodeError:
                pass  # a corrupt document is replaced
        if _put_if(uri, body, cur.etag if cur else None):
            return "written"
    raise TransientError(f"{uri}: conditional put kept losing to concurrent writers")


def _put_if(uri: str, body: bytes, etag: str | None) -> bool:
    """A conditional put; a 409 (a concurrent conditional write in flight) is a lost race too:
    the caller re-reads and decides again."""
    try:
        return storage.put_if(uri, body, etag)
    except TransientError:
        return False


def publish_tile(tile: str, year: int, settings: Settings) -> dict:
    """Publish the tile's staged COGs, item and index record (see the module docstring)."""
    layout = settings.layout
    attempt = faults.attempt("publish", f"{tile}/{year}")
    marker = storage.read_json(layout.tile_done(year, tile))
    band_stats = _band_stats(tile, year, settings)
    cogs = asset_cogs(band_stats)
    version = asset_version(cogs)
    staged = check_staged(tile, year, cogs, settings)
    attempt.check("before")
    public = _copy_version(staged, tile, year, version, cogs, settings, attempt)
    item = build_tile_item(tile, year, public, cogs, band_stats, marker, version, settings)
    item_uri = layout.item(year, tile)
    status = put_newest(item_uri, item)
    if status != "superseded":
        record = index_record(item, item_uri, settings)
        # a republish the report asked for must renew the record even if nothing else changed:
        # the report compares the record's LastModified with the marker's
        record["republish"] = marker.get("republish")
        put_newest(layout.index_part(year, tile), record)
    attempt.check("after")
    removed = prune_versions(tile, year, version, settings) if status != "superseded" else []
    if marker.get("execution") and storage.exists(layout.report(marker["execution"])):
        rebuild_collection(settings)  # a publish that lands after its execution's report
    return {"tile": tile, "year": year, "item": item_uri, "status": "published",
            "item_write": status, "version": version, "pruned": len(removed)}


def index_record(item: dict, item_uri: str, settings: Settings) -> dict:
    props = item["properties"]
    tile, year = item["id"].split("_")
    return {"id": item["id"], "href": _public(item_uri, settings), "bbox": item["bbox"],
            "year": int(year), "tile": tile, "start_datetime": props.get("start_datetime"),
            "end_datetime": props.get("end_datetime"),
            "good_pixel_fraction": props.get("cloudfree:good_pixel_fraction"),
            "cloudfree:run": props["cloudfree:run"]}


def prune_versions(tile: str, year: int, current: str, settings: Settings, keep: int = 1
                   ) -> list[str]:
    """Delete the tile's version folders but ``current`` and the ``keep`` newest others."""
    prefix = settings.layout.output_prefix(year, tile) + "/"
    versions: dict[str, list[storage.ObjectInfo]] = {}
    for obj in storage.list_objects(prefix):
        rest = obj.uri[len(prefix):]
        if "/" in rest:
            versions.setdefault(rest.split("/", 1)[0], []).append(obj)
    others = sorted((v for v in versions if v != current),
                    key=lambda v: max(o.last_modified for o in versions[v]), reverse=True)
    doomed = [o.uri for v in others[keep:] for o in versions[v]]
    storage.delete(doomed)
    return doomed


def _public(uri: str, settings: Settings) -> str:
    """``s3://data-bucket/key`` -> the public https URL when a base URL is configured."""
    if settings.public_base_url and uri.startswith(f"s3://{settings.data_bucket}/"):
        return settings.public_base_url.rstrip("/") + "/" + uri.split("/", 3)[3]
    return uri


def _public_hrefs(d: dict, settings: Settings) -> dict:
    for asset in d.get("assets", {}).values():
        asset["href"] = _public(asset["href"], settings)
    return d


# --------------------------------------------------------------------------------------------
# The collection: rebuilt from the index *listing* (keys only), never per publish
# --------------------------------------------------------------------------------------------
def indexed_items(settings: Settings) -> list[tuple[int, str]]:
    """(year, tile) of every index record, from listings (1 call per 1,000 items)."""
    from .status import scan_index

    return sorted((y, t) for y, tiles in scan_index(settings.layout).items() for t in tiles)


#: UTM zones whose tiles may cross the antimeridian (their bbox has west > east).
_EDGE_ZONES = (1, 60)


def tiles_bbox(tiles: set[str]) -> list[float]:
    """Union of the tiles' lon/lat bounds (8 outline points each): one PROJ call per UTM zone,
    not per tile. A tile of zone 1 or 60 whose outline spans more than 180 deg of longitude
    crosses the antimeridian: its box gets west > east, so ``grid.union_bbox`` keeps the whole
    longitude range, as for the items' own bboxes."""
    from rasterio.warp import transform as warp

    by_crs: dict[str, tuple[list[float], list[float]]] = {}
    for tid in tiles:
        t = parse_tile(tid)
        x0, y0, x1, y1 = t.bounds
        xs, ys = by_crs.setdefault(t.crs, ([], []))
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        xs += [x0, xm, x1, x1, x1, xm, x0, x0]
        ys += [y1, y1, y1, ym, y0, y0, y0, ym]
    boxes: list[list[float]] = []
    for crs, (xs, ys) in by_crs.items():
        lons, lats = (np.asarray(v) for v in warp(crs, "EPSG:4326", xs, ys))
        boxes.append([lons.min(), lats.min(), lons.max(), lats.max()])
        if int(crs[-2:]) in _EDGE_ZONES:
            per_tile = lons.reshape(-1, 8)
            crossing = per_tile.max(axis=1) - per_tile.min(axis=1) > 180
            for row in per_tile[crossing]:
                boxes.append([row[row > 0].min(), lats.min(), row[row < 0].max(), lats.max()])
    return [round(float(v), 6) for v in union_bbox(boxes)]


def collection_doc(entries: list[tuple[int, str]], settings: Settings) -> dict:
    """The collection: extent from the tiles' grid and years, one ``item`` link per entry."""
    from . import stac

    years = sorted({y for y, _ in entries})
    col = stac.build_collection(software_version=__version__,
                                bbox=tiles_bbox({t for _, t in entries}),
                                years=(years[0], years[-1]) if years else None)
    d = col.to_dict(include_self_link=False, transform_hrefs=False)
    d["links"] = [lnk for lnk in d.get("links", []) if lnk.get("rel") != "item"]
    layout = settings.layout
    d["links"] += [{"rel": "item", "href": _public(layout.item(y, t), settings),
                    "type": "application/geo+json", "title": f"{t}_{y}"} for y, t in entries]
    return d


def rebuild_collection(settings: Settings, attempts: int = 8,
                       listed: tuple[list[tuple[int, str]], str | None] | None = None) -> dict:
    """Rebuild ``collection.json`` from the index listing with a conditional put on the ETag
    read *before* the listing, so a rebuild that lost a race re-lists. ``listed``: a listing the
    caller already made and the collection ETag it read before it (the report's), used for the
    first attempt. Returns ``{"collection", "items", "status"}``."""
    uri = settings.layout.collection()
    for i in range(attempts):
        if i == 0 and listed is not None:
            entries, etag = listed
        else:
            cur = storage.head(uri)
            etag = cur.etag if cur else None
            entries = indexed_items(settings)
        body = json.dumps(collection_doc(entries, settings), indent=1, sort_keys=True).encode()
        if etag is not None and storage.read_bytes(uri) == body:
            return {"collection": uri, "items": len(entries), "status": "unchanged"}
        if _put_if(uri, body, etag):
            return {"collection": uri, "items": len(entries), "status": "written"}
    raise TransientError("collection rebuild kept conflicting with concurrent rebuilds")
