"""Make the published outputs searchable: a STAC API collection and a stac-geoparquet file.

The pipeline publishes one STAC item per tile-year and an index record per item
(``Layout.index_part``); ``collection.json`` is rebuilt from the index listing. This module
reads the same listing and

- **loads** the collection and its items into a STAC API with the Transactions extension
  (the local stac-fastapi-pgstac that ``make up`` runs, or any pgstac deployment), as a second
  collection beside the source archive: ``POST /collections/{id}/bulk_items`` with
  ``"method": "upsert"`` (stac-fastapi-pgstac's bulk transactions, ``pypgstac``'s upsert
  underneath), so a reload replaces instead of failing. It is **incremental**: an item whose
  ``cloudfree:run`` (the computation that produced it) is already in the API is not upserted
  again (nor read, when no geoparquet is written: the index records say which are stale);
- **writes** a stac-geoparquet file of the whole collection (``rustac``), rebuilt
  on every load, so a year of the world can be queried with DuckDB or GeoPandas without a
  server (:func:`search_parquet`).

CLI and tests only: rustac (87 MB, DuckDB inside) and duckdb are not for the Lambda layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from . import storage
from .errors import InputError, StacApiError
from .layout import COLLECTION_ID
from .publish import indexed_items
from .settings import Settings

log = logging.getLogger(__name__)

#: Concurrent S3 reads of index records and items (small JSON objects: latency-bound).
READ_THREADS = 16
#: Property recording the computation that produced an item (see ``stac._properties``).
RUN_PROPERTY = "cloudfree:run"


@dataclass(frozen=True)
class LoadResult:
    """What a catalog load did: items loaded, items already current, where the parquet went."""

    collection: str
    loaded: int
    unchanged: int
    parquet: str | None

    @property
    def total(self) -> int:
        return self.loaded + self.unchanged


def index_records(settings: Settings, keys: Sequence[tuple[int, str]] | None = None
                  ) -> list[dict[str, Any]]:
    """The index records (``{id, href, bbox, year, tile, cloudfree:run}``) of ``keys`` (default:
    every published ``(year, tile)``, :func:`publish.indexed_items`), one small read each."""
    layout = settings.layout
    uris = [layout.index_part(year, tile) for year, tile in
            (indexed_items(settings) if keys is None else keys)]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        return list(pool.map(storage.read_json, uris))


def read_items(settings: Settings, keys: Sequence[tuple[int, str]],
               progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """The published items at ``(year, tile)`` keys, read concurrently from the bucket (not the
    public URL); ``progress(done, total)`` after each."""
    items = []
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for i, item in enumerate(pool.map(
                lambda k: storage.read_json(settings.layout.item(*k)), keys), 1):
            items.append(item)
            if progress:
                progress(i, len(keys))
    return items


def api_runs(api_url: str, collection_id: str = COLLECTION_ID) -> dict[str, str]:
    """``{item id: cloudfree:run}`` of the items already in the API (empty if no collection)."""
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    try:
        client = Client.open(api_url)
        search = client.search(collections=[collection_id], limit=500,
                               fields={"include": ["id", f"properties.{RUN_PROPERTY}"],
                                       "exclude": ["assets", "links", "geometry"]})
        return {f["id"]: (f.get("properties") or {}).get(RUN_PROPERTY, "")
                for page in search.pages_as_dicts() for f in page.get("features", [])}
    except (APIError, OSError) as err:  # requests' errors are OSErrors
        if "404" in str(err) or "not found" in str(err).lower():
            return {}
        raise StacApiError(f"cannot list {collection_id} in the STAC API {api_url} ({err}); is "
                           "it up? locally: `make up`; or pass --api URL") from err


def load(settings: Settings, api_url: str | None, parquet: str | Path | None,
         progress: Callable[[int, int], None] | None = None, force: bool = False
         ) -> LoadResult:
    """Load the published collection into ``api_url`` (skipped when None) and rebuild the
    geoparquet at ``parquet`` (a path or ``s3://`` URI; skipped when None).

    Only items whose ``cloudfree:run`` differs from the API's are read and upserted (all of
    them with ``force``); the parquet always holds every published item. ``progress(done,
    total)`` is called after each item read.
    """
    from .local.stacapi import load_items, upsert_collection

    keys = indexed_items(settings)  # the index listing: (year, tile), no reads
    if not keys:
        raise InputError(f"nothing published in s3://{settings.data_bucket}/ yet: run a year "
                         "first (`cloudfree run --year YEAR --tiles TILE`)")
    collection = storage.read_json(settings.layout.collection())
    known = api_runs(api_url, collection["id"]) if api_url and not force else {}
    if parquet is not None:  # the parquet holds every item: read them all, compare their runs
        items = read_items(settings, keys, progress)
        stale = [i for i in items if known.get(i["id"]) != i["properties"].get(RUN_PROPERTY)]
    elif api_url:  # the API only: the small index records say which items to read
        stale = read_items(settings, [(r["year"], r["tile"]) for r in index_records(
            settings, keys) if known.get(r["id"]) != r.get(RUN_PROPERTY)], progress)
    else:
        stale = []
    loaded = 0
    if api_url and stale:  # load_items upserts the collection first
        loaded = load_items(api_url, _api_collection(collection), iter(stale))
    elif api_url:
        upsert_collection(api_url, _api_collection(collection))
    target = write_parquet(items, parquet) if parquet is not None else None
    return LoadResult(collection["id"], loaded, len(keys) - len(stale) if api_url else 0,
                      target)


def load_with_progress(settings: Settings, api_url: str | None, parquet: str | Path | None,
                       force: bool = False) -> LoadResult:
    """:func:`load` with a progress bar on the terminal (items read)."""
    from .progress import progress_bar

    with progress_bar("reading published items") as advance:
        return load(settings, api_url, parquet, progress=advance, force=force)


def _api_collection(collection: dict[str, Any]) -> dict[str, Any]:
    """The collection without its ``item`` links (the API serves the items itself)."""
    return {**collection, "links": [lk for lk in collection.get("links", [])
                                    if lk.get("rel") not in ("item", "self", "root", "parent")]}


# --------------------------------------------------------------------------------------------
# stac-geoparquet
# --------------------------------------------------------------------------------------------
def write_parquet(items: Sequence[dict[str, Any]], target: str | Path) -> str:
    """Write ``items`` as one stac-geoparquet file (written by ``rustac``: spec 1.0.0, the
    ``geo`` metadata with a bbox covering column) at ``target``, a path or an ``s3://`` URI
    (written locally, then uploaded). An empty item list is refused: a parquet without rows
    has no schema to query."""
    import asyncio
    import tempfile

    import rustac

    if not items:
        raise InputError("no published items to write: run a year first (`cloudfree run`)")
    target = str(target)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "items.parquet" if storage.is_s3(target) else Path(target)
        local.parent.mkdir(parents=True, exist_ok=True)
        async def write() -> None:  # rustac's I/O is async: it needs a running loop
            await rustac.write(str(local), list(items))

        asyncio.run(write())
        if storage.is_s3(target):
            storage.upload_file(local, target, "application/vnd.apache.parquet")
    return target


def _parse_datetime(value: str) -> tuple[datetime, datetime]:
    """A STAC ``datetime`` search value (``a/b``, ``a/..``, ``../b`` or one instant) -> bounds."""
    from pystac_client.item_search import ItemSearch

    text = ItemSearch(url="http://unused", datetime=value).get_parameters()["datetime"]
    start, _, end = text.partition("/") if "/" in text else (text, "", text)

    def parse(v: str, default: datetime) -> datetime:
        return default if v in ("", "..") else datetime.fromisoformat(v.replace("Z", "+00:00"))

    lo = parse(start, datetime.fromisoformat("0001-01-01T00:00:00+00:00"))
    hi = parse(end, datetime.fromisoformat("9999-12-31T23:59:59+00:00"))
    return lo, hi


def search_parquet(path: str | Path, bbox: Sequence[float] | None = None,
                   datetime_range: str | None = None, grid_code: str | None = None
                   ) -> list[dict[str, Any]]:
    """Search a stac-geoparquet file with DuckDB like a STAC API: items whose bbox intersects
    ``bbox`` (minlon, minlat, maxlon, maxlat), whose ``start_datetime``/``end_datetime`` range
    overlaps ``datetime_range`` (STAC syntax), and whose ``grid:code`` equals ``grid_code``.
    Returns ``[{"id", "grid:code", "start_datetime", "end_datetime", "bbox"}]`` sorted by id."""
    import duckdb

    where, params = [], []
    if bbox is not None:
        x0, y0, x1, y1 = (float(v) for v in bbox)
        # stac-geoparquet stores bbox as a struct {xmin, ymin, xmax, ymax} (spec 1.1.0)
        where.append("bbox.xmin <= ? AND bbox.xmax >= ? AND bbox.ymin <= ? AND bbox.ymax >= ?")
        params += [x1, x0, y1, y0]
    if datetime_range is not None:
        lo, hi = _parse_datetime(datetime_range)
        where.append("start_datetime <= ? AND end_datetime >= ?")
        params += [hi, lo]
    if grid_code is not None:
        where.append('"grid:code" = ?')
        params.append(grid_code)
    sql = ('SELECT id, "grid:code", start_datetime, end_datetime, bbox FROM read_parquet(?)'
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id")
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(sql, [str(path), *params]).fetchall()
    finally:
        con.close()
    return [{"id": r[0], "grid:code": r[1], "start_datetime": r[2], "end_datetime": r[3],
             "bbox": [r[4]["xmin"], r[4]["ymin"], r[4]["xmax"], r[4]["ymax"]]} for r in rows]

