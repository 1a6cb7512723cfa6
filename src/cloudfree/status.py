"""Where every tile of a year stands, from two listings and no per-tile reads.

Each tile leaves one small marker per outcome under ``work/{year}/_markers/{tile}/``
(``DONE``, ``EMPTY``, ``FAILED``; :class:`~cloudfree.layout.Layout`), and each published item
one index record under the data bucket's ``index/{year}/``. Listing both prefixes
(ListObjectsV2, 1,000 keys a call) gives every tile's latest outcome and whether its item is
current: about 50 calls for 21,000 tiles, against 60,000 reads tile by tile.

Rules (:func:`classify`):
- the newest marker wins (a forced rerun that failed is *failed*, even if an older run's item is
  still public; ``published`` then says an item exists);
- *done* is published when the index record is at least as new as the DONE marker (publish
  writes it after the item, on the marker's S3 event); an older or missing record means the
  publish is pending or failed: the report waits a little for publishes in flight, then
  rewrites the marker of those still behind, whose S3 event runs publish again;
- an index record without any marker (markers expire with ``work/``) is *done*;
- no marker and no record: *failed* (``Incomplete``: the tile never finished).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from . import storage
from .layout import Layout
from .settings import Settings

log = logging.getLogger(__name__)

#: Which marker wins when two have the same LastModified second.
_PRECEDENCE = {"DONE": 2, "EMPTY": 1, "FAILED": 0}
#: Tiles whose DONE marker's content (cost) the report reads: a sample, not every tile.
COST_SAMPLE = 64
#: Failed/empty tiles whose reason the report reads (each one GET).
DETAIL_LIMIT = 200
#: Markers younger than this may still have their publish in flight (the report waits).
SETTLE_POLL = 5.0


#: Tile ids start with their UTM zone: one listing shard per zone (01-60).
ZONE_SHARDS = tuple(f"{z:02d}" for z in range(1, 61))


def scan_markers(year: int, layout: Layout) -> dict[str, dict[str, storage.ObjectInfo]]:
    """``{tile: {"DONE": info, …}}`` for the year, from paginated listings (one per zone)."""
    prefix = layout.markers_prefix(year)
    out: dict[str, dict[str, storage.ObjectInfo]] = {}
    for obj in storage.list_sharded([prefix + z for z in ZONE_SHARDS]):
        parts = obj.uri[len(prefix):].split("/")
        if len(parts) == 2 and parts[1].endswith(".json"):
            kind = parts[1][: -len(".json")]
            if kind in _PRECEDENCE:
                out.setdefault(parts[0], {})[kind] = obj
    return out


def scan_index(layout: Layout) -> dict[int, dict[str, storage.ObjectInfo]]:
    """``{year: {tile: index record info}}`` of every year, from paginated listings (one per
    year and zone); the report classifies its year and rebuilds the collection from it."""
    root = layout.index_prefix()
    years = [p for p in storage.list_prefixes(root) if p[len(root):].rstrip("/").isdigit()]
    out: dict[int, dict[str, storage.ObjectInfo]] = {}
    for o in storage.list_sharded([y + z for y in years for z in ZONE_SHARDS]):
        parts = o.uri[len(root):].split("/")
        if len(parts) == 2 and parts[1].endswith(".json"):
            out.setdefault(int(parts[0]), {})[parts[1][: -len(".json")]] = o
    return out


def _stamp(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def classify(tile: str, markers: dict[str, storage.ObjectInfo],
             index: storage.ObjectInfo | None, layout: Layout, year: int) -> dict[str, Any]:
    """One tile's row of the report (see the module docstring for the rules)."""
    if not markers:
        if index is not None:
            return {"tile": tile, "status": "done", "item": layout.item(year, tile),
                    "published": True, "published_at": _stamp(index.last_modified)}
        return {"tile": tile, "status": "failed", "error": "Incomplete",
                "cause": "no completion, empty or failure record (the tile never finished)"}
    kind, info = max(markers.items(), key=lambda kv: (kv[1].last_modified, _PRECEDENCE[kv[0]]))
    row: dict[str, Any] = {"tile": tile, "marker_at": _stamp(info.last_modified),
                           "published": index is not None}
    if kind == "DONE":
        current = index is not None and index.last_modified >= info.last_modified
        row.update(status="done", item=layout.item(year, tile), published=current)
        if index is not None:
            row["published_at"] = _stamp(index.last_modified)
        return row
    row["status"] = "empty" if kind == "EMPTY" else "failed"
    return row


def _classify_all(tiles: list[str], year: int, layout: Layout
                  ) -> tuple[list[dict], dict[int, dict[str, storage.ObjectInfo]]]:
    with ThreadPoolExecutor(2) as pool:
        markers_job = pool.submit(scan_markers, year, layout)
        index = scan_index(layout)
        markers = markers_job.result()
    this = index.get(year, {})
    return [classify(t, markers.get(t, {}), this.get(t), layout, year) for t in tiles], index


def _behind(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "done" and not r["published"] and "marker_at" in r]


def _age(row: dict, now: datetime) -> float:
    at = datetime.strptime(row["marker_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (now - at).total_seconds()


def settle(rows: list[dict], index: dict, tiles: list[str], year: int, layout: Layout,
           seconds: float) -> tuple[list[dict], dict]:
    """Re-list while recently completed tiles still wait for their publish (up to
    ``seconds``); returns the rows, re-classified, and the index listing."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        now = datetime.now(UTC)
        if not any(_age(r, now) < seconds for r in _behind(rows)):
            break
        time.sleep(min(SETTLE_POLL, max(0.0, deadline - time.monotonic())))
        rows, index = _classify_all(tiles, year, layout)
    return rows, index


def republish(rows: list[dict], year: int, execution: str, layout: Layout) -> list[str]:
    """Rewrite the DONE marker of tiles whose item is missing or older than it: its S3 event
    runs *publish* again (which has its own retries and failure destination)."""
    def touch(tile: str) -> str:
        uri = layout.tile_done(year, tile)
        marker = storage.read_json(uri)
        marker["republish"] = {"by": execution, "at": _stamp(datetime.now(UTC))}
        storage.write_json(uri, marker)
        return tile

    tiles = [r["tile"] for r in _behind(rows)]
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(touch, tiles))


def _details(rows: list[dict], year: int, layout: Layout) -> None:
    """Reasons of failed/empty tiles and the cost of a sample of done tiles (bounded GETs)."""
    def read(job: tuple[dict, str]) -> None:
        row, uri = job
        try:
            doc = storage.read_json(uri)
        except Exception as err:  # noqa: BLE001 - a detail, never fatal to the report
            row["detail_error"] = str(err)[:200]
            return
        if row["status"] == "done":
            row["cost"] = doc.get("cost")
            row["execution"] = doc.get("execution")
        elif row["status"] == "empty":
            row["reason"] = doc.get("reason")
        else:
            row.update(error=doc.get("error"), cause=doc.get("cause"))

    jobs: list[tuple[dict, str]] = []
    done = [r for r in rows if r["status"] == "done" and "marker_at" in r][:COST_SAMPLE]
    jobs += [(r, layout.tile_done(year, r["tile"])) for r in done]
    empty = [r for r in rows if r["status"] == "empty"][:DETAIL_LIMIT]
    jobs += [(r, layout.tile_empty(year, r["tile"])) for r in empty]
    failed = [r for r in rows if r["status"] == "failed" and "marker_at" in r][:DETAIL_LIMIT]
    jobs += [(r, layout.tile_failed(year, r["tile"])) for r in failed]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(read, jobs))


def cost_summary(costs: list[dict]) -> dict[str, float]:
    """The mean cost of the done tiles sampled (their markers' ``cost``), and, for those that
    carry it, ``cloudfree plan``'s projection for them (``planned_lambda_gb_seconds``: their
    observed share of a whole tile's, CPU-bound; ``tasks.tile_cost``) and the measured GB-s over
    it: well above 1 on tiles of real size, the Lambdas ran slower than the plan believes (a
    slower CPU than the calibration machine's, or waits for S3: ``cloudfree plan
    --s3-mb-per-s``)."""
    if not costs:
        return {}
    out = {k: round(sum(c[k] for c in costs) / len(costs), 2)
           for k in ("lambda_gb_seconds", "state_transitions")}
    planned = [c for c in costs if c.get("planned_lambda_gb_seconds")]
    if planned:
        plan = sum(c["planned_lambda_gb_seconds"] for c in planned)
        out["planned_lambda_gb_seconds"] = round(plan / len(planned), 2)
        out["measured_over_planned"] = round(
            sum(c["lambda_gb_seconds"] for c in planned) / plan, 3)
    return out


def year_report(execution: str, year: int, tiles: list[str], settings: Settings, *,
                settle_seconds: float = 60.0) -> dict[str, Any]:
    """The report document of one execution (tiles in plan order)."""
    t0 = time.perf_counter()
    layout = settings.layout
    rows, index = _classify_all(tiles, year, layout)
    if settle_seconds > 0:
        rows, index = settle(rows, index, tiles, year, layout, settle_seconds)
    republished = republish(rows, year, execution, layout)
    _details(rows, year, layout)
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("done", "empty", "failed")}
    costs = [r["cost"] for r in rows if r.get("cost")]
    per_tile = cost_summary(costs)
    return {"execution": execution, "year": year, "status": "complete",
            "generated_at": _stamp(datetime.now(UTC)),
            **counts, "republished": republished, "cost_per_done_tile": per_tile,
            "cost_sample": len(costs), "seconds": round(time.perf_counter() - t0, 2),
            "tiles": rows, "_indexed": sorted((y, t) for y, ts in index.items() for t in ts)}
