"""Publishing a finished tile: STAC item, searchable index record, collection.

The item is written only when every asset exists and passes ``rio cogeo validate``; it is built
from the manifest and the band statistics, validated offline against the STAC schemas, and
written last. The index is one immutable JSON record per item (no shared file to race on); the
collection document is rebuilt from the full index listing and written with a conditional put
(If-Match on its ETag, retried), so concurrent publishers cannot lose each other's updates.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from . import __version__, storage
from .bands import OUTPUT_BANDS
from .errors import IncompleteError, TransientError, ValidationError
from .grid import union_bbox
from .settings import Settings

log = logging.getLogger(__name__)
ASSETS = (*OUTPUT_BANDS, "count")
COUNT_BAND = "red"


def _cog_info(uri: str, stats_cog: dict | None) -> dict:
    """Asset info for stac.build_item, from the band stats' CogInfo (falls back to reading)."""
    if stats_cog:
        return {"href": uri, "shape": stats_cog["shape"], "transform": stats_cog["transform"],
                "size": stats_cog.get("size"),
                "checksum": ("1220" + stats_cog["sha256"]) if stats_cog.get("sha256") else None}
    import rasterio

    with rasterio.Env(**storage.gdal_env_options()), rasterio.open(uri) as src:
        return {"href": uri, "shape": [src.height, src.width],
                "transform": list(src.transform)[:6]}


def check_assets(tile: str, year: int, settings: Settings) -> dict[str, str]:
    """Every asset's URI; IncompleteError when one is missing, ValidationError if not a COG."""
    from rio_cogeo.cogeo import cog_validate

    layout = settings.layout
    uris = {key: layout.band_cog(year, tile, key) for key in ASSETS}
    missing = [k for k, u in uris.items() if not storage.exists(u)]
    if missing:
        raise IncompleteError(f"{tile} {year}: assets missing: {missing}")
    import rasterio

    with rasterio.Env(**storage.gdal_env_options()):
        for uri in uris.values():
            ok, errors, _ = cog_validate(uri, quiet=True)
            if not ok:
                raise ValidationError(f"{uri} is not a valid COG: {errors}")
    return uris


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
            "snow_pixels": int(count_stats.get("snow_pixels") or 0)}


def publish_tile(tile: str, year: int, settings: Settings) -> dict:
    """Write the tile's item (once complete and valid), its index record and the collection."""
    from . import stac

    layout = settings.layout
    item_uri = layout.item(year, tile)
    done = storage.read_json(layout.tile_done(year, tile))
    uris = check_assets(tile, year, settings)
    manifest = storage.read_json(layout.manifest(year, tile))
    band_stats = {b: storage.read_json(layout.band_stats(year, tile, b)) for b in OUTPUT_BANDS}
    assets: dict[str, dict] = {}
    for key in OUTPUT_BANDS:
        assets[key] = _cog_info(uris[key], band_stats[key].get("cog"))
    count_cog = (band_stats[COUNT_BAND].get("cog") or {}).get("related", {}).get("count")
    assets["count"] = _cog_info(uris["count"], count_cog)
    stats = item_stats(band_stats[COUNT_BAND])
    from datetime import datetime

    created = datetime.fromisoformat(done["completed_at"].replace("Z", "+00:00"))
    item = stac.build_item(tile, year, assets, manifest, stats, software_version=__version__,
                           api_url=settings.stac_api_url, created=created)
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    d = _public_hrefs(d, settings)
    stac.validate_item(d)
    body = json.dumps(d, indent=1, sort_keys=True).encode()
    if storage.exists(item_uri) and storage.read_bytes(item_uri) == body:
        log.info("%s unchanged", item_uri)
    else:
        storage.write_bytes(item_uri, body, "application/json")
    index_record = {"id": d["id"], "href": _public(item_uri, settings), "bbox": d["bbox"],
                    "year": year, "tile": tile, "start_datetime":
                    d["properties"].get("start_datetime"), "end_datetime":
                    d["properties"].get("end_datetime"),
                    "good_pixel_fraction": d["properties"].get("cloudfree:good_pixel_fraction")}
    storage.write_json(layout.index_part(year, tile), index_record)
    update_collection(settings)
    return {"tile": tile, "year": year, "item": item_uri, "status": "published"}


def _public(uri: str, settings: Settings) -> str:
    """``s3://data-bucket/key`` -> the public https URL when a base URL is configured."""
    if settings.public_base_url and uri.startswith(f"s3://{settings.data_bucket}/"):
        return settings.public_base_url.rstrip("/") + "/" + uri.split("/", 3)[3]
    return uri


def _public_hrefs(d: dict, settings: Settings) -> dict:
    for asset in d.get("assets", {}).values():
        asset["href"] = _public(asset["href"], settings)
    return d


def update_collection(settings: Settings, attempts: int = 8) -> dict:
    """Rebuild the collection from every index record; conditional put, retried on conflict."""
    layout = settings.layout
    prefix = layout.index_prefix()
    for _ in range(attempts):
        records = [storage.read_json(u) for u in storage.list_uris(prefix)]
        etag = _etag(layout.collection())
        collection = _collection_doc(records, settings)
        body = json.dumps(collection, indent=1, sort_keys=True).encode()
        if _conditional_put(layout.collection(), body, etag):
            return collection
    raise TransientError("collection update kept conflicting with concurrent publishers")


def _collection_doc(records: list[dict], settings: Settings) -> dict:
    from . import stac

    bbox = union_bbox(r["bbox"] for r in records)  # antimeridian items have west > east
    years = sorted(int(r["year"]) for r in records)
    col = stac.build_collection(software_version=__version__, bbox=bbox,
                                years=(years[0], years[-1]) if years else None)
    d = col.to_dict(include_self_link=False, transform_hrefs=False)
    d["links"] = [lnk for lnk in d.get("links", []) if lnk.get("rel") not in ("item",)]
    for r in sorted(records, key=lambda r: r["id"]):
        d["links"].append({"rel": "item", "href": r["href"], "type": "application/geo+json",
                           "title": r["id"]})
    return d


def _etag(uri: str) -> str | None:
    bucket, key = storage.split_s3(uri)
    try:
        return storage.s3_client().head_object(Bucket=bucket, Key=key)["ETag"]
    except Exception as err:  # noqa: BLE001
        if storage.is_not_found(err):
            return None
        raise


def _conditional_put(uri: str, body: bytes, etag: str | None) -> bool:
    """PutObject with If-Match (or If-None-Match for a new object); False on a lost race."""
    bucket, key = storage.split_s3(uri)
    cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        storage.s3_client().put_object(Bucket=bucket, Key=key, Body=body,
                                       ContentType="application/json", **cond)
        return True
    except Exception as err:  # noqa: BLE001
        code = getattr(err, "response", {}).get("Error", {}).get("Code")
        if code in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}:
            return False
        raise
