"""Unit tests of cloudfree.catalog_search: the stac-geoparquet file of the outputs, searched with
DuckDB by bbox, datetime and ``grid:code`` (the API side is in tests/integration/test_viewer.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pytest

from cloudfree.catalog_search import search_parquet, write_parquet
from cloudfree.errors import InputError
from cloudfree.stac import build_item

from .test_stac import asset_infos, manifest, stats

#: 32UNU (Bavaria) in 2020 and 2021, 33UUP (Lower Austria/Czechia) in 2021.
ROWS = [("32UNU", 2020), ("32UNU", 2021), ("33UUP", 2021)]


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    items = []
    for tile, year in ROWS:
        m = {**manifest(), "tile": tile, "year": year}
        items.append(build_item(tile, year, asset_infos(), m, stats(), software_version="0.1.0",
                                created=datetime(2024, 5, 6, tzinfo=UTC)
                                ).to_dict(include_self_link=False))
    path = tmp_path_factory.mktemp("gpq") / "items.parquet"
    assert write_parquet(items, path) == str(path)
    return path, items


def test_parquet_is_stac_geoparquet_with_every_item(parquet):
    path, items = parquet
    con = duckdb.connect()
    ids = [r[0] for r in con.execute("SELECT id FROM read_parquet(?) ORDER BY id",
                                     [str(path)]).fetchall()]
    assert ids == sorted(i["id"] for i in items)
    meta = dict(con.execute("SELECT key, value FROM parquet_kv_metadata(?)",
                            [str(path)]).fetchall())
    # stac-geoparquet: its version key, and GeoParquet's "geo" with the bbox covering column
    assert b"stac-geoparquet" in meta and b'"covering":{"bbox"' in meta[b"geo"]


def test_search_by_grid_code(parquet):
    path, _ = parquet
    assert [r["id"] for r in search_parquet(path, grid_code="MGRS-32UNU")] == [
        "32UNU_2020", "32UNU_2021"]
    assert search_parquet(path, grid_code="MGRS-99XXX") == []


def test_search_by_datetime(parquet):
    path, _ = parquet
    assert [r["id"] for r in search_parquet(path, datetime_range="2021-06-01/2021-06-30")] == [
        "32UNU_2021", "33UUP_2021"]
    assert [r["id"] for r in search_parquet(path, datetime_range="2020")] == ["32UNU_2020"]
    assert search_parquet(path, datetime_range="2019-01-01/2019-12-31") == []


def test_search_by_bbox(parquet):
    path, _ = parquet
    # Ulm (10.0E 48.4N) lies in 32UNU (9.0-10.5E), not in 33UUP (12.3-13.8E): grid.Tile.bbox
    hits = search_parquet(path, bbox=(9.95, 48.35, 10.05, 48.45))
    assert [r["id"] for r in hits] == ["32UNU_2020", "32UNU_2021"]
    assert all(r["bbox"][0] <= 9.95 and r["bbox"][2] >= 10.05 for r in hits)
    assert search_parquet(path, bbox=(-70, -10, -69, -9)) == []
    both = search_parquet(path, bbox=(9.95, 48.35, 10.05, 48.45), datetime_range="2021",
                          grid_code="MGRS-32UNU")
    assert [r["id"] for r in both] == ["32UNU_2021"]


def test_empty_collection_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(InputError, match="cloudfree run"):
        write_parquet([], tmp_path / "x.parquet")


def test_load_with_nothing_published_says_to_run_a_year(monkeypatch):
    from cloudfree import catalog_search
    from cloudfree.settings import Settings

    monkeypatch.setattr(catalog_search, "indexed_items", lambda settings: [])
    with pytest.raises(InputError, match=r"nothing published in s3://data/ yet: run a year "
                                         r"first \(`cloudfree run --year YEAR"):
        catalog_search.load(Settings("work", "data", "control"), None, None)


def _published(tmp_path, rows):
    """A local deployment (``Layout.root``) with ``rows`` published: item, index record,
    collection, as publish writes them."""
    from cloudfree import storage
    from cloudfree.publish import index_record
    from cloudfree.settings import Settings

    settings = Settings("work", "data", "control", local_root=str(tmp_path))
    layout = settings.layout
    for tile, year in rows:
        item = build_item(tile, year, asset_infos(), {**manifest(), "tile": tile, "year": year},
                          stats(), software_version="0.1.0",
                          created=datetime(2024, 5, 6, tzinfo=UTC)).to_dict(
                              include_self_link=False)
        item["properties"]["cloudfree:run"] = {"execution": "e1", "version": f"v-{tile}",
                                               "completed_at": f"{year}-12-31T00:00:00Z"}
        storage.write_json(layout.item(year, tile), item)
        storage.write_json(layout.index_part(year, tile),
                           index_record(item, layout.item(year, tile), settings))
    storage.write_json(layout.collection(), {"id": "sentinel-2-annual-median", "links": []})
    return settings


def test_load_reads_each_item_once_and_upserts_only_stale_ones(tmp_path, monkeypatch):
    """The parquet needs every item, so their own ``cloudfree:run`` decides what is stale: the
    index records are not read (here: corrupt, and never noticed). Without a parquet, the index
    records pick the stale items and only those are read. The collection is upserted once."""
    from cloudfree import catalog_search, storage
    from cloudfree.local import stacapi

    settings = _published(tmp_path, ROWS)
    layout = settings.layout
    runs = {f"{t}_{y}": storage.read_json(layout.item(y, t))["properties"]["cloudfree:run"]
            for t, y in ROWS}
    reads: list[str] = []
    real_read = storage.read_json
    monkeypatch.setattr(storage, "read_json", lambda uri: reads.append(uri) or real_read(uri))
    calls: list[tuple] = []
    monkeypatch.setattr(stacapi, "load_items", lambda api, coll, items: calls.append(
        ("items", sorted(i["id"] for i in items))) or len(calls[-1][1]))
    monkeypatch.setattr(stacapi, "upsert_collection", lambda api, coll: calls.append(
        ("collection", coll["id"])))
    # the API already has 32UNU_2020 at its current run: two items are stale
    monkeypatch.setattr(catalog_search, "api_runs",
                        lambda api, cid: {"32UNU_2020": runs["32UNU_2020"]})
    for t, y in ROWS:
        storage.write_bytes(layout.index_part(y, t), b"{not json")
    out = catalog_search.load(settings, "http://api", tmp_path / "all.parquet")
    assert (out.loaded, out.unchanged, out.total) == (2, 1, 3)
    assert calls == [("items", ["32UNU_2021", "33UUP_2021"])]
    assert sorted(reads) == sorted([layout.collection()]
                                   + [layout.item(y, t) for t, y in ROWS])
    assert [r["id"] for r in search_parquet(out.parquet)] == sorted(runs)

    for t, y in ROWS:  # the index records again, as publish wrote them
        storage.write_json(layout.index_part(y, t),
                           {"id": f"{t}_{y}", "tile": t, "year": y,
                            "cloudfree:run": runs[f"{t}_{y}"]})
    reads.clear()
    calls.clear()
    out = catalog_search.load(settings, "http://api", None)
    assert (out.loaded, out.unchanged, out.parquet) == (2, 1, None)
    assert calls == [("items", ["32UNU_2021", "33UUP_2021"])]
    items_read = [u for u in reads if u.endswith(".json") and "/index/" not in u
                  and u != layout.collection()]
    assert sorted(items_read) == sorted([layout.item(2021, "32UNU"), layout.item(2021, "33UUP")])

    monkeypatch.setattr(catalog_search, "api_runs", lambda api, cid: dict(runs))
    calls.clear()
    out = catalog_search.load(settings, "http://api", None)
    assert (out.loaded, out.unchanged) == (0, 3)
    assert calls == [("collection", "sentinel-2-annual-median")]


def test_viewer_catalog_reads_the_items_of_the_index_listing(tmp_path):
    from cloudfree.viewer.server import stack_catalog

    settings = _published(tmp_path, ROWS)
    assert sorted(stack_catalog(settings).items) == sorted(f"{t}_{y}" for t, y in ROWS)
