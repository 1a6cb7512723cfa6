"""Unit tests of cloudfree.select: scoring, de-duplication, picking, filters, search requests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cloudfree.errors import InputError, NoScenesError, StacApiError
from cloudfree.grid import parse_tile
from cloudfree.select import (
    REQUIRED_ASSETS,
    Scene,
    Selection,
    SelectOptions,
    acquisition_key,
    datetime_range,
    normalize_href,
    pick,
    score,
    search_items,
    select_scenes,
    tile_filter,
    tile_query,
)

TILE = "33UUP"


def make_item(
    id_: str | None = None,
    *,
    tile: str = TILE,
    when: str = "2021-06-15T10:00:31.024000Z",
    baseline: str = "05.00",
    sequence: int = 0,
    orbit: int = 65,
    nodata: float = 0.0,
    high: float = 0.0,
    medium: float = 0.0,
    shadow: float = 0.0,
    cirrus: float = 0.0,
    cloud: float | None = None,
    collection: str = "sentinel-2-l2a",
    platform: str = "S2A",
) -> dict:
    """A realistic Earth Search v1 item dict."""
    day = when[:10].replace("-", "")
    sensing = f"{day}T{when[11:13]}{when[14:16]}00"
    id_ = id_ or f"{platform}_{tile}_{day}_{sequence}_L2A"
    nb = baseline.replace(".", "")
    base = f"https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/x/{id_}"
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": id_,
        "collection": collection,
        "properties": {
            "datetime": when,
            "platform": f"sentinel-{platform[1:].lower()}",
            "grid:code": f"MGRS-{tile}",
            "eo:cloud_cover": high + medium + cirrus if cloud is None else cloud,
            "s2:nodata_pixel_percentage": nodata,
            "s2:high_proba_clouds_percentage": high,
            "s2:medium_proba_clouds_percentage": medium,
            "s2:cloud_shadow_percentage": shadow,
            "s2:thin_cirrus_percentage": cirrus,
            "s2:processing_baseline": baseline,
            "s2:product_uri": (
                f"{platform}_MSIL2A_{sensing}_N{nb}_R{orbit:03d}_T{tile}_{day}T235959.SAFE"
            ),
            "s2:datatake_id": f"G{platform}_{sensing}_012345_N{baseline}",
            "s2:sequence": str(sequence),
            "earthsearch:boa_offset_applied": baseline >= "04.00",
        },
        "links": [
            {"rel": "self", "href": f"https://api.example/collections/{collection}/items/{id_}"}
        ],
        "assets": {k: {"href": f"{base}/{k}.tif"} for k in REQUIRED_ASSETS},
    }


# --- score ---------------------------------------------------------------------------------------
def test_score_formula():
    props = make_item(nodata=10, high=20, medium=10, shadow=5, cirrus=5)["properties"]
    assert score(props) == 54.0  # (100 - 10) * (1 - 40 / 100)


def test_score_exact_values():
    assert score(make_item()["properties"]) == 100.0
    assert score(make_item(nodata=42.094469)["properties"]) == 57.905531
    props = make_item(nodata=25.5, high=1.25, medium=2.5, shadow=0.75, cirrus=0.5)["properties"]
    assert score(props) == 70.775  # 74.5 * (1 - 5 / 100)


def test_score_fallbacks():
    assert score({"eo:cloud_cover": 30.0}) == 70.0
    assert score({"eo:cloud_cover": 30.0, "s2:nodata_pixel_percentage": 50.0}) == 35.0
    assert score({}) == 0.0  # unknown quality ranks last
    over = {
        "s2:high_proba_clouds_percentage": 80,
        "s2:medium_proba_clouds_percentage": 30,
        "s2:cloud_shadow_percentage": 0,
        "s2:thin_cirrus_percentage": 0,
    }
    assert score(over) == 0.0  # cloud sum clipped to 100


def test_score_counts_snow_like_cloud():
    props = make_item(nodata=10, high=20, medium=10, shadow=5, cirrus=5)["properties"]
    props["s2:snow_ice_percentage"] = 30.0
    assert score(props) == 27.0  # (100 - 10) * (1 - (40 + 30) / 100)
    assert score({"eo:cloud_cover": 30.0, "s2:snow_ice_percentage": 20.0}) == 50.0
    assert score({"eo:cloud_cover": 30.0, "s2:snow_ice_percentage": 90.0}) == 0.0  # clipped
    assert score({"eo:cloud_cover": 30.0, "s2:snow_ice_percentage": None}) == 70.0


# --- hrefs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("href", "expected"),
    [
        (
            "https://sentinel-cogs.s3.us-west-2.amazonaws.com/a/b/B02.tif",
            "s3://sentinel-cogs/a/b/B02.tif",
        ),
        ("https://my-bucket.s3.amazonaws.com/k/x.tif", "s3://my-bucket/k/x.tif"),
        ("https://my.bucket.s3.eu-central-1.amazonaws.com/k", "s3://my.bucket/k"),
        ("http://127.0.0.1:4566/bucket/key.tif", "http://127.0.0.1:4566/bucket/key.tif"),
        ("s3://bucket/key.tif", "s3://bucket/key.tif"),
        ("/data/scene/B02.tif", "/data/scene/B02.tif"),
        ("https://example.com/bucket/key.tif", "https://example.com/bucket/key.tif"),
    ],
)
def test_normalize_href(href, expected):
    assert normalize_href(href) == expected


# --- de-duplication ------------------------------------------------------------------------------
def test_duplicates_collapse_to_newest_baseline():
    old = make_item(baseline="02.14", sequence=0, high=1)
    new = make_item(baseline="05.00", sequence=1, high=50, when="2021-06-15T10:00:31.025000Z")
    assert acquisition_key(old) == acquisition_key(new)
    sel = select_scenes([old, new], TILE, 2021)
    assert [s.id for s in sel.scenes] == [new["id"]]
    assert sel.dropped == [{"id": old["id"], "reason": f"superseded-by:{new['id']}"}]


def test_duplicates_same_baseline_newest_sequence():
    a = make_item(sequence=0)
    b = make_item(sequence=2)
    c = make_item(sequence=1)
    sel = select_scenes([a, b, c], TILE, 2021)
    assert [s.id for s in sel.scenes] == [b["id"]]
    assert {d["id"]: d["reason"] for d in sel.dropped} == {
        a["id"]: f"superseded-by:{b['id']}",
        c["id"]: f"superseded-by:{b['id']}",
    }


def test_duplicates_collapse_before_cloud_filter():
    """The superseded version never comes back, even when only it passes max_cloud."""
    old = make_item(baseline="02.14", sequence=0, cloud=10)
    new = make_item(baseline="05.00", sequence=1, cloud=90)
    with pytest.raises(NoScenesError, match="1 max-cloud, 1 superseded-by"):
        select_scenes([old, new], TILE, 2021, SelectOptions(max_cloud=50))


def test_different_acquisitions_are_not_duplicates():
    a = make_item(when="2021-06-15T10:00:31Z")
    b = make_item(when="2021-06-18T10:10:31Z", orbit=108)
    c = make_item(when="2021-06-15T10:00:31Z", platform="S2B", id_="S2B_33UUP_20210615_0_L2A")
    sel = select_scenes([a, b, c], TILE, 2021)
    assert len(sel.scenes) == 3 and sel.dropped == []


# --- picking -------------------------------------------------------------------------------------
def _scene(id_: str, sc: float, orbit: int, day: int = 1) -> Scene:
    return Scene(id_, f"2021-06-{day:02d}T10:00:00Z", sc, orbit, "05.00", True, "c", {})


def test_pick_spreads_orbits_within_tie_tolerance():
    scenes = [_scene("a1", 90.0, 65), _scene("a2", 89.9, 65), _scene("b1", 89.5, 108)]
    assert [s.id for s in pick(scenes, 2, 1.0)] == ["a1", "b1"]
    assert [s.id for s in pick(scenes, 2, 0.0)] == ["a1", "a2"]
    assert [s.id for s in pick(scenes, 3, 1.0)] == ["a1", "b1", "a2"]


def test_pick_band_is_relative_to_best_remaining():
    scenes = [_scene("a1", 90, 65), _scene("a2", 80, 65), _scene("b1", 70, 108)]
    assert [s.id for s in pick(scenes, 2, 5.0)] == ["a1", "a2"]  # b1 is 10 points behind a2


def test_pick_ties_broken_by_datetime_then_id():
    scenes = [_scene("z", 50, 1, day=3), _scene("y", 50, 1, day=2), _scene("x", 50, 1, day=2)]
    assert [s.id for s in pick(scenes, 3, 0.0)] == ["x", "y", "z"]


def test_select_keeps_n_best_and_records_not_selected():
    items = [make_item(when=f"2021-0{m}-10T10:00:00Z", high=10 * m, orbit=65) for m in range(1, 6)]
    sel = select_scenes(items, TILE, 2021, SelectOptions(n=2))
    assert [s.id for s in sel.scenes] == [items[0]["id"], items[1]["id"]]
    assert [s.score for s in sel.scenes] == [90.0, 80.0]
    assert sel.dropped == [{"id": i["id"], "reason": "not-selected"} for i in items[2:]]


def test_select_spreads_orbits():
    items = [
        make_item(when="2021-05-01T10:00:00Z", high=1.0, orbit=65),
        make_item(when="2021-05-04T10:00:00Z", high=1.5, orbit=65),
        make_item(when="2021-05-06T10:00:00Z", high=1.8, orbit=108),
    ]
    sel = select_scenes(items, TILE, 2021, SelectOptions(n=2, tie_tolerance=1.0))
    assert [(s.id, s.relative_orbit) for s in sel.scenes] == [
        (items[0]["id"], 65),
        (items[2]["id"], 108),
    ]


# --- filters -------------------------------------------------------------------------------------
def test_months_window_wraps_the_year():
    items = [make_item(when=f"2021-{m:02d}-10T10:00:00Z") for m in (1, 2, 3, 10, 11, 12)]
    sel = select_scenes(items, TILE, 2021, SelectOptions(months=(11, 12, 1, 2)))
    assert sorted(s.datetime[:7] for s in sel.scenes) == [
        "2021-01",
        "2021-02",
        "2021-11",
        "2021-12",
    ]
    assert sorted((d["id"][10:16], d["reason"]) for d in sel.dropped) == [
        ("202103", "outside-months"),
        ("202110", "outside-months"),
    ]


def test_datetime_range():
    start, end = datetime_range(2021)
    assert (start.isoformat(), end.isoformat()) == (
        "2021-01-01T00:00:00+00:00",
        "2022-01-01T00:00:00+00:00",
    )
    start, end = datetime_range(2021, (6, 7, 8))
    assert (start.month, end.month, end.year) == (6, 9, 2021)
    assert datetime_range(2021, (11, 12, 1, 2)) == datetime_range(2021)  # wrap: whole year
    assert datetime_range(2021, (12,))[1].isoformat() == "2022-01-01T00:00:00+00:00"


def test_max_cloud():
    clear = make_item(when="2021-06-01T10:00:00Z", cloud=20.0)
    cloudy = make_item(when="2021-06-04T10:00:00Z", cloud=60.0)
    sel = select_scenes([clear, cloudy], TILE, 2021, SelectOptions(max_cloud=50))
    assert [s.id for s in sel.scenes] == [clear["id"]]
    assert sel.dropped == [{"id": cloudy["id"], "reason": "max-cloud"}]


def test_other_collection_tile_year_and_assets_judged_later():
    good = make_item()
    c1 = make_item(id_="S2A_T33UUP_20210615T100031_L2A", collection="sentinel-2-c1-l2a")
    l1c = make_item(id_="S2A_33UUP_20210615_0_L1C", collection="sentinel-2-l1c")
    other = make_item(tile="33UVP")
    late = make_item(when="2022-01-01T00:00:00Z")
    broken = make_item(when="2021-07-01T10:00:00Z")
    del broken["assets"]["scl"], broken["assets"]["visual"]
    sel = select_scenes([good, c1, l1c, other, late, broken], TILE, 2021)
    # missing assets are no reason to drop here (a changed rule: select_readable excludes the
    # scene-band, or replaces a scene without SCL by the next-best one)
    assert sorted(s.id for s in sel.scenes) == sorted([good["id"], broken["id"]])
    assert set(sel.scenes[[s.id for s in sel.scenes].index(broken["id"])].assets) == \
        set(REQUIRED_ASSETS) - {"scl", "visual"}
    assert {d["id"]: d["reason"] for d in sel.dropped} == {
        c1["id"]: "other-collection",
        l1c["id"]: "other-collection",
        other["id"]: "other-tile",
        late["id"]: "outside-year",
    }


def test_tile_from_mgrs_properties_when_no_grid_code():
    item = make_item()
    del item["properties"]["grid:code"]
    item["properties"].update(
        {"mgrs:utm_zone": 33, "mgrs:latitude_band": "U", "mgrs:grid_square": "UP"}
    )
    assert len(select_scenes([item], "T33UUP", 2021).scenes) == 1


def test_no_scenes_error_says_why():
    with pytest.raises(NoScenesError, match="the search returned no item"):
        select_scenes([], TILE, 2021)
    items = [make_item(tile="33UVP"), make_item(collection="sentinel-1-grd")]
    with pytest.raises(
        NoScenesError, match=r"all 2 items dropped \(1 other-collection, 1 other-tile\)"
    ):
        select_scenes(items, TILE, 2021)


def test_options_validation():
    with pytest.raises(InputError):
        SelectOptions(n=0)
    with pytest.raises(InputError):
        SelectOptions(months=(0, 13))
    with pytest.raises(InputError):
        SelectOptions(max_cloud=101)
    with pytest.raises(InputError):
        SelectOptions.from_dict({"bogus": 1})
    assert SelectOptions(months=[11, 12]).months == (11, 12)


# --- manifest ------------------------------------------------------------------------------------
def test_manifest_round_trip():
    items = [make_item(baseline="02.14"), make_item(baseline="05.00", sequence=1)]
    sel = select_scenes(
        items, TILE, 2021, SelectOptions(months=(6,)), api_url="http://127.0.0.1:1/"
    )
    manifest = sel.to_manifest()
    assert json.loads(json.dumps(manifest)) == manifest
    assert set(manifest) == {
        "tile",
        "year",
        "collection",
        "api_url",
        "options",
        "scenes",
        "dropped",
    }
    scene = manifest["scenes"][0]
    assert scene["harmonization"] is None
    assert scene["processing_baseline"] == "05.00" and scene["boa_offset_applied"] is True
    assert scene["relative_orbit"] == 65 and scene["score"] == 100.0
    assert scene["assets"]["blue"].startswith("s3://sentinel-cogs/sentinel-s2-l2a-cogs/x/")
    assert set(scene["assets"]) == set(REQUIRED_ASSETS)
    assert scene["href"] == f"https://api.example/collections/sentinel-2-l2a/items/{scene['id']}"
    assert manifest["options"]["months"] == [6]
    again = Selection.from_manifest(manifest)
    assert again.to_manifest() == manifest
    with pytest.raises(InputError):
        Selection.from_manifest({"tile": TILE})


# --- search: the request it builds (fake client) -------------------------------------------------
class FakeSearch:
    def __init__(self, items):
        self._items = items

    def items_as_dicts(self):
        return iter(self._items)


class FakeClient:
    def __init__(self, conforms=(), items=()):
        self.conforms = set(conforms)
        self.items = list(items)
        self.calls: list[dict] = []

    def conforms_to(self, name):
        return name in self.conforms

    def search(self, **params):
        self.calls.append(params)
        return FakeSearch(self.items)


def test_search_uses_filter_when_advertised():
    client = FakeClient(conforms={"FILTER", "SORT"})
    search_items("http://x", TILE, 2021, max_cloud=50, client=client, limit=20)
    (params,) = client.calls
    assert params == {
        "collections": ["sentinel-2-l2a"],
        "datetime": "2021-01-01T00:00:00Z/2021-12-31T23:59:59.999Z",
        "limit": 20,
        "max_items": None,
        "filter": {
            "op": "and",
            "args": [
                {"op": "=", "args": [{"property": "grid:code"}, "MGRS-33UUP"]},
                {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 50]},
            ],
        },
        "filter_lang": "cql2-json",
        "sortby": [{"field": "properties.eo:cloud_cover", "direction": "asc"}],
    }


def test_search_falls_back_to_query_and_no_sort():
    client = FakeClient(conforms={"QUERY"})
    search_items("http://x", TILE, 2021, months=(6, 7), client=client, max_items=100)
    (params,) = client.calls
    assert params["query"] == {"grid:code": {"eq": "MGRS-33UUP"}}
    assert params["datetime"] == "2021-06-01T00:00:00Z/2021-07-31T23:59:59.999Z"
    assert params["max_items"] == 100
    assert "filter" not in params and "sortby" not in params and "intersects" not in params
    assert "bbox" not in params


def test_tile_by_mgrs_properties():
    tile_ = parse_tile(TILE)
    assert tile_query(tile_, 10, by="mgrs") == {
        "mgrs:utm_zone": {"eq": 33},
        "mgrs:latitude_band": {"eq": "U"},
        "mgrs:grid_square": {"eq": "UP"},
        "eo:cloud_cover": {"lte": 10},
    }
    assert tile_filter(tile_, by="mgrs")["args"][2] == {
        "op": "=",
        "args": [{"property": "mgrs:grid_square"}, "UP"],
    }
    with pytest.raises(InputError):
        tile_filter(tile_, by="bbox")


def test_search_rechecks_every_filter_on_the_client():
    keep = make_item(when="2021-06-10T10:00:00Z", cloud=10)
    served = [
        keep,
        make_item(tile="33UVP", cloud=10),  # tile ignored by the server
        make_item(collection="sentinel-2-c1-l2a", cloud=10),  # collection ignored
        make_item(when="2020-12-31T23:59:59Z", cloud=10),  # datetime ignored
        make_item(when="2021-09-01T00:00:00Z", cloud=10),  # outside the month window
        make_item(when="2021-06-11T10:00:00Z", cloud=80),  # cloud cover ignored
    ]
    client = FakeClient(conforms={"QUERY"}, items=served)
    found = search_items("http://x", TILE, 2021, months=(6, 7, 8), max_cloud=50, client=client)
    assert [i["id"] for i in found] == [keep["id"]]


def test_search_wrapped_months_recheck():
    served = [make_item(when=f"2021-{m:02d}-10T10:00:00Z") for m in (1, 6, 12)]
    client = FakeClient(items=served)
    found = search_items("http://x", TILE, 2021, months=(12, 1), client=client)
    assert client.calls[0]["datetime"] == "2021-01-01T00:00:00Z/2021-12-31T23:59:59.999Z"
    assert [i["properties"]["datetime"][:7] for i in found] == ["2021-01", "2021-12"]


# --- search: against a stub HTTP STAC API on 127.0.0.1 -------------------------------------------
CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/item-search#sort",
]


class StubApi(BaseHTTPRequestHandler):
    """Landing page + POST /search (one page); records every request body."""

    requests: list[dict] = []
    items: list[dict] = []
    fail_search = False

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        root = f"http://127.0.0.1:{self.server.server_port}"
        self._send(200, {
            "type": "Catalog", "id": "stub", "description": "stub", "stac_version": "1.0.0",
            "conformsTo": CONFORMS,
            "links": [
                {"rel": "self", "href": root, "type": "application/json"},
                {"rel": "root", "href": root, "type": "application/json"},
                {"rel": "search", "href": f"{root}/search", "method": "POST",
                 "type": "application/geo+json"},
            ],
        })  # fmt: skip

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        StubApi.requests.append(json.loads(self.rfile.read(length) or b"{}"))
        if StubApi.fail_search:
            self._send(502, {"code": "BadGateway", "description": "upstream timeout"})
            return
        self._send(200, {"type": "FeatureCollection", "features": StubApi.items, "links": []})


@pytest.fixture
def stub_api():
    StubApi.requests, StubApi.items, StubApi.fail_search = [], [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_search_request_over_http(stub_api):
    StubApi.items = [make_item(cloud=5), make_item(tile="33UVP", cloud=5)]
    found = search_items(stub_api, TILE, 2021, max_cloud=40, limit=25)
    assert [i["id"] for i in found] == [StubApi.items[0]["id"]]
    (body,) = StubApi.requests
    assert body == {
        "limit": 25,
        "datetime": "2021-01-01T00:00:00Z/2021-12-31T23:59:59.999Z",
        "collections": ["sentinel-2-l2a"],
        "query": {"grid:code": {"eq": "MGRS-33UUP"}, "eo:cloud_cover": {"lte": 40}},
        "sortby": [{"field": "properties.eo:cloud_cover", "direction": "asc"}],
    }


def test_search_server_error_is_transient(stub_api):
    StubApi.fail_search = True
    with pytest.raises(StacApiError, match="STAC search failed"):
        search_items(stub_api, TILE, 2021)


def test_search_unreachable_is_transient():
    with pytest.raises(StacApiError):
        search_items("http://127.0.0.1:9/", TILE, 2021)


# --- datastrip splits: two granules of one acquisition are one observation ------------------------
def _band(top_frac: float, bottom_frac: float) -> dict:
    """GeoJSON polygon (lon/lat) of the 33UUP rows from ``top_frac`` to ``bottom_frac`` of the
    tile height (0 = north edge), the full width."""
    from rasterio.warp import transform

    x0, y_top = 300000.0, 5400000.0
    y0, y1 = y_top - 109800 * top_frac, y_top - 109800 * bottom_frac
    xs = [x0, x0 + 109800, x0 + 109800, x0, x0]
    ys = [y0, y0, y1, y1, y0]
    lons, lats = transform("EPSG:32633", "EPSG:4326", xs, ys)
    return {"type": "Polygon", "coordinates": [[[lo, la] for lo, la in zip(lons, lats,
                                                                           strict=True)]]}


def _granule(top: float, bottom: float, **kw) -> dict:
    item = make_item(nodata=round(100 * (1 - (bottom - top)), 3), **kw)
    item["geometry"] = _band(top, bottom)
    return item


def test_two_half_tile_granules_are_one_observation():
    north = _granule(0.0, 0.6, sequence=0, high=10)
    south = _granule(0.5, 1.0, sequence=1, high=20)
    other = make_item(when="2021-06-18T10:10:31Z", orbit=108, high=50)
    sel = select_scenes([north, south, other], TILE, 2021, SelectOptions(n=1))
    assert [s.id for s in sel.scenes] == [north["id"], south["id"]]  # one pick, two granules
    assert {s.observation for s in sel.scenes} == {"33UUP_S2A_20210615T100000"}
    assert sel.dropped == [{"id": other["id"], "reason": "not-selected"}]
    scenes = sel.to_manifest()["scenes"]
    assert [s["observation"] for s in scenes] == ["33UUP_S2A_20210615T100000"] * 2
    # the pair's score: (60 * 0.9 + 50 * 0.8) * min(1, 100 / (60 + 50)) = 94 / 1.1
    from cloudfree.select import observation_score

    assert observation_score(sel.scenes) == round(94 / 1.1, 6)
    two = select_scenes([north, south, other], TILE, 2021, SelectOptions(n=2))
    assert len(two.scenes) == 3 and "observation" not in two.to_manifest()["scenes"][2]


def test_republished_granule_collapses_datastrip_granules_stay():
    """_0 (02.14) and _1 (05.00) of the north granule are one product; the south granule
    (05.00, sequence 2) is the other datastrip: 2 scenes, one observation."""
    north_old = _granule(0.0, 0.6, baseline="02.14", sequence=0)
    north_new = _granule(0.0, 0.6, baseline="05.00", sequence=1)
    north_new["geometry"] = _band(0.01, 0.6)  # re-processing trims the edge a little
    south = _granule(0.5, 1.0, baseline="05.00", sequence=2)
    sel = select_scenes([north_old, north_new, south], TILE, 2021)
    assert sorted(s.id for s in sel.scenes) == sorted([north_new["id"], south["id"]])
    assert len({s.observation for s in sel.scenes}) == 1
    assert sel.dropped == [{"id": north_old["id"], "reason": f"superseded-by:{north_new['id']}"}]


def test_same_footprint_same_baseline_is_a_republication():
    a = _granule(0.0, 0.7, sequence=0)
    b = _granule(0.0, 0.7, sequence=1)
    sel = select_scenes([a, b], TILE, 2021)
    assert [s.id for s in sel.scenes] == [b["id"]] and sel.scenes[0].observation is None


def test_without_geometry_the_nodata_share_decides():
    a = make_item(sequence=0, nodata=40.0)
    b = make_item(sequence=1, nodata=55.0)
    c = make_item(sequence=2, nodata=55.4)  # the same coverage as b: b re-published
    sel = select_scenes([a, b, c], TILE, 2021)
    assert sorted(s.id for s in sel.scenes) == sorted([a["id"], c["id"]])
    assert sel.dropped == [{"id": b["id"], "reason": f"superseded-by:{c['id']}"}]
    assert sel.scenes[0].observation == sel.scenes[1].observation is not None


# --- request timeout and retries, through the fault-injecting proxy in front of the stub API --
@pytest.fixture
def faulty_api(stub_api):
    from cloudfree.local.faultproxy import FaultProxy

    proxy = FaultProxy(stub_api).start()
    yield proxy
    proxy.stop()


def test_a_burst_of_429_and_500_is_retried_and_succeeds(faulty_api):
    from cloudfree.local.faultproxy import Fault

    StubApi.items = [make_item(cloud=5)]
    faulty_api.inject(Fault(status=429, headers={"Retry-After": "0"}, path="/search"), times=2)
    faulty_api.inject(Fault(status=500, path="/search"), times=1)
    found = search_items(faulty_api.url, TILE, 2021)
    assert [i["id"] for i in found] == [StubApi.items[0]["id"]]
    assert [k for k, *_ in faulty_api.injected] == ["status-429", "status-429", "status-500"]
    assert len(StubApi.requests) == 1  # the stub answered once, after the burst


def test_earth_searchs_throttling_403_is_retried_and_a_lasting_one_fails(faulty_api):
    """Earth Search throttles with 403 {"message":"Forbidden"} (Element84/earth-search#19):
    a burst of them is retried like a 429; one that lasts fails the search with its status."""
    from cloudfree.local.faultproxy import Fault

    StubApi.items = [make_item(cloud=5)]
    forbidden = Fault(status=403, path="/search")
    faulty_api.inject(forbidden, times=2)
    assert [i["id"] for i in search_items(faulty_api.url, TILE, 2021)] == [
        StubApi.items[0]["id"]]
    assert [k for k, *_ in faulty_api.injected] == ["status-403", "status-403"]
    faulty_api.clear()
    faulty_api.inject(forbidden)  # every time
    with pytest.raises(StacApiError, match="403"):
        search_items(faulty_api.url, TILE, 2021)
    assert len(faulty_api.injected) == 5  # the first try and 4 retries, then the error


def test_a_stalled_search_times_out_within_its_bound(faulty_api):
    import time

    from cloudfree.local.faultproxy import Fault

    faulty_api.inject(Fault(delay=4, path="/search"))
    t0 = time.monotonic()
    with pytest.raises(StacApiError, match="Read timed out"):
        search_items(faulty_api.url, TILE, 2021, timeout=0.5)
    # one read retry: 2 reads of 0.5 s (+ the 0 s first backoff), not the 4 s stall
    assert time.monotonic() - t0 < 3
    assert len(faulty_api.injected) == 2


def test_a_malformed_answer_is_a_stac_api_error(faulty_api):
    from cloudfree.local.faultproxy import Fault

    faulty_api.inject(Fault(body=b'{"type": "FeatureCollection", "features": [', path="/search"))
    with pytest.raises(StacApiError, match="StacApiError: STAC search failed"):
        search_items(faulty_api.url, TILE, 2021)
    faulty_api.clear()
    faulty_api.inject(Fault(body=b'{"type": "FeatureCollection", "features": [1]}',
                            path="/search"))
    with pytest.raises(StacApiError, match="malformed answer"):
        search_items(faulty_api.url, TILE, 2021)
