"""pystac-client against the local STAC API, searching a tile the way the pipeline does.

Loads real Earth Search items (../shared/realdata/derived) into the local API and checks that
collection, year datetime, the tile by ``grid:code``/``mgrs:*`` via ``query`` and via CQL2
``filter``, ``sortby`` on cloud cover (numeric, not text) and paging give
exactly the expected items.
"""

from __future__ import annotations

import copy
import json

import pytest
from pystac_client import Client

from cloudfree.local.stacapi import load_items

XCUBE = "derived/xcube-stac_earthsearch_v1_s2l2a_bbox9-10E47-48N_2020-03-01_05.json"
MIXED = "derived/pystac-client_earthsearch_v1_s2_l2a_and_c1_2025-07-31.json"
SORT_COLLECTION = "cloudfree-sort-test"


def _collection(cid: str) -> dict:
    return {"type": "Collection", "id": cid, "stac_version": "1.0.0", "description": cid,
            "license": "proprietary", "links": [],
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                       "temporal": {"interval": [["2015-06-23T00:00:00Z", None]]}}}


@pytest.fixture(scope="module")
def api(local_env, realdata) -> Client:
    url = local_env["STAC_API_URL"]
    xcube = json.loads((realdata / XCUBE).read_text())["features"]
    mixed = json.loads((realdata / MIXED).read_text())["features"]
    by_collection: dict[str, list[dict]] = {}
    for item in xcube + mixed:
        by_collection.setdefault(item["collection"], []).append(item)
    for cid, items in by_collection.items():
        load_items(url, _collection(cid), items)
    # cloud covers whose text order differs from their numeric order
    base = xcube[0]
    sort_items = []
    for i, cc in enumerate([9.5, 10.25, 100.0, 2.0, 55.5]):
        it = copy.deepcopy(base)
        it["id"] = f"sort-{i}"
        it["properties"]["eo:cloud_cover"] = cc
        sort_items.append(it)
    load_items(url, _collection(SORT_COLLECTION), sort_items)
    return Client.open(url)


def _ids(search) -> list[str]:
    return [item.id for item in search.items()]


def test_query_grid_code_in_year(api):
    search = api.search(collections=["sentinel-2-l2a"], datetime="2020",
                        query={"grid:code": {"eq": "MGRS-32UNU"}},
                        sortby=[{"field": "properties.eo:cloud_cover", "direction": "asc"}])
    assert _ids(search) == ["S2A_32UNU_20200302_0_L2A", "S2A_32UNU_20200302_1_L2A",
                            "S2A_32UNU_20200305_0_L2A", "S2A_32UNU_20200305_1_L2A"]


def test_cql2_filter_on_mgrs_properties(api):
    flt = {"op": "and", "args": [
        {"op": "=", "args": [{"property": "mgrs:utm_zone"}, 32]},
        {"op": "=", "args": [{"property": "mgrs:latitude_band"}, "T"]},
        {"op": "=", "args": [{"property": "mgrs:grid_square"}, "MT"]}]}
    search = api.search(collections=["sentinel-2-l2a"], datetime="2020-01-01/2020-12-31",
                        filter=flt, filter_lang="cql2-json")
    assert sorted(_ids(search)) == ["S2A_32TMT_20200302_0_L2A", "S2A_32TMT_20200302_1_L2A",
                                    "S2A_32TMT_20200305_0_L2A", "S2A_32TMT_20200305_1_L2A"]


def test_cql2_filter_grid_code_and_cloud_cover(api):
    flt = {"op": "and", "args": [
        {"op": "=", "args": [{"property": "grid:code"}, "MGRS-32UMU"]},
        {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 99.9]}]}
    search = api.search(collections=["sentinel-2-l2a"], datetime="2020", filter=flt)
    assert sorted(_ids(search)) == ["S2A_32UMU_20200302_0_L2A", "S2A_32UMU_20200302_1_L2A"]


def test_other_year_and_other_collection_are_empty(api):
    assert _ids(api.search(collections=["sentinel-2-l2a"], datetime="2021",
                           query={"grid:code": {"eq": "MGRS-32UNU"}})) == []
    c1 = _ids(api.search(collections=["sentinel-2-c1-l2a"], datetime="2025",
                         query={"grid:code": {"eq": "MGRS-24MUA"}}))
    assert c1 == ["S2B_T24MUA_20250731T130245_L2A"]


def test_paging_with_small_limit_returns_every_item_once(api):
    search = api.search(collections=["sentinel-2-l2a"], datetime="2020", limit=3,
                        sortby=[{"field": "properties.eo:cloud_cover", "direction": "asc"}],
                        query={"mgrs:utm_zone": {"eq": 32}})
    pages = list(search.pages())
    ids = [i.id for page in pages for i in page.items]
    assert len(pages) == 6  # 16 items, 3 per page
    assert len(ids) == 16 and len(set(ids)) == 16


def test_sortby_cloud_cover_is_numeric(api):
    asc = api.search(collections=[SORT_COLLECTION],
                     sortby=[{"field": "properties.eo:cloud_cover", "direction": "asc"}])
    assert [i.properties["eo:cloud_cover"] for i in asc.items()] == [2.0, 9.5, 10.25, 55.5, 100.0]
    desc = api.search(collections=[SORT_COLLECTION], sortby="-properties.eo:cloud_cover")
    assert [i.properties["eo:cloud_cover"] for i in desc.items()] == [100.0, 55.5, 10.25, 9.5, 2.0]
