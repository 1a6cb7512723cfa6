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

    monkeypatch.setattr(catalog_search, "index_records", lambda settings: [])
    with pytest.raises(InputError, match=r"nothing published in s3://data/ yet: run a year "
                                         r"first \(`cloudfree run --year YEAR"):
        catalog_search.load(Settings("work", "data", "control"), None, None)
