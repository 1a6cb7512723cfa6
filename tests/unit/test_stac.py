"""Unit tests of cloudfree.stac: build the output item/collection and validate them offline."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from urllib.parse import urldefrag, urlsplit

import pystac
import pytest

from cloudfree.bands import get_band
from cloudfree.errors import InputError, ValidationError
from cloudfree.grid import parse_tile
from cloudfree.stac import (
    ASSET_KEYS,
    PROCESSING_EXTENSION,
    AssetInfo,
    ItemStats,
    ObservationStats,
    build_collection,
    build_item,
    multihash_sha256,
    schema_root,
    validate,
    validate_collection,
    validate_item,
)

TILE = "32UNU"
YEAR = 2020
Z0 = 2 * math.pi * 6378137 / 256
ZOOM = {10: 14, 20: 13, 60: 11}
SCENES = ["S2A_32UNU_20200302_1_L2A", "S2A_32UNU_20200305_1_L2A", "S2B_32UNU_20200307_0_L2A"]
CHECKSUM = "1220" + "0f" * 32


def asset_infos() -> dict[str, AssetInfo]:
    infos = {}
    for key in ASSET_KEYS:
        res = 10 if key in ("visual", "count") else get_band(key).resolution
        px = Z0 / 2 ** ZOOM[res]
        rows = round(109800 * 1.5 / px)
        infos[key] = AssetInfo(
            href=f"s3://data/sentinel-2-annual-median/2020/32UNU/32UNU_2020_{key}.tif",
            shape=(rows, rows + 7),
            transform=(px, 0.0, 1001875.0, 0.0, -px, 6222000.0),
            size=1000 + len(key),
            checksum=CHECKSUM,
        )
    return infos


def manifest() -> dict:
    scenes = []
    for i, sid in enumerate(SCENES):
        scenes.append({
            "id": sid, "datetime": f"2020-03-0{2 + i}T10:27:26Z", "score": 90.0 - i,
            "relative_orbit": 65, "processing_baseline": "05.00", "boa_offset_applied": True,
            "collection": "sentinel-2-l2a", "assets": {}, "properties": {},
            "href": None,
            "harmonization": {"offset": -1000, "reason": "baseline>=04.00", "evidence": {"n": 3}},
        })  # fmt: skip
    scenes[0]["href"] = (
        "https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a/items/X"
    )
    scenes[2]["harmonization"] = None
    return {
        "tile": TILE, "year": YEAR, "collection": "sentinel-2-l2a",
        "api_url": "http://127.0.0.1:8081/", "options": {"n": 16, "months": None},
        "scenes": scenes, "dropped": [],
        "excluded": [
            {"band": "rededge2", "scene": SCENES[1], "reason": "404", "stage": "select"},
            {"band": "blue", "scene": SCENES[1], "reason": "blue: read failed: x",
             "stage": "median"}],
        "excluded_scenes": [{"id": "S2A_32UNU_20200305_0_L2A", "reason": "scl: no asset"}],
    }  # fmt: skip


def stats() -> ItemStats:
    obs = ObservationStats(min=0, mean=7.25, max=16, percentiles={"p50": 8, "p10": 2, "p90": 13})
    return ItemStats(
        good_pixels=9_876_543,
        footprint_pixels=10_000_000,
        observations=obs,
        contributions={SCENES[0]: 0.625, SCENES[1]: 0.375},
    )


@pytest.fixture(scope="module")
def item() -> pystac.Item:
    created = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    return build_item(
        TILE, YEAR, asset_infos(), manifest(), stats(), software_version="0.1.0", created=created
    )


@pytest.fixture
def item_dict(item) -> dict:
    return item.to_dict(include_self_link=False)


def test_item_validates(item):
    validate_item(item)
    validate(item.to_dict())


def test_item_identity_and_time(item_dict):
    props = item_dict["properties"]
    assert item_dict["id"] == "32UNU_2020"
    assert item_dict["collection"] == "sentinel-2-annual-median"
    assert item_dict["stac_version"] == "1.1.0"
    assert props["datetime"] is None
    assert props["start_datetime"] == "2020-01-01T00:00:00Z"
    assert props["end_datetime"] == "2020-12-31T23:59:59Z"
    assert props["created"] == props["processing:datetime"] == "2024-05-06T07:08:09Z"


def test_item_geometry_is_tile_footprint(item_dict):
    tile = parse_tile(TILE)
    assert item_dict["geometry"] == tile.footprint()
    assert item_dict["bbox"] == tile.bbox()


def test_item_geometry_is_the_cropped_cells_when_given():
    """A coastal tile's COGs cover its observed cells only (assemble.data_crop): the item's
    geometry and bbox are that rectangle's outline, inside the tile's, and it validates."""
    def area(geometry):  # shoelace in degrees² (ratios within ~2 % at this size)
        ring = geometry["coordinates"][0]
        pairs = zip(ring, ring[1:], strict=False)
        return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in pairs)) / 2

    tile = parse_tile(TILE)
    minx, miny, maxx, maxy = tile.bounds
    cells = (minx, maxy - 3 * 10980, minx + 2 * 10980, maxy)  # the NW 2 x 3 cells
    m = manifest()
    it = build_item(TILE, YEAR, asset_infos(), m, stats(), software_version="0.1.0",
                    created=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), data_bounds=cells)
    d = it.to_dict(include_self_link=False)
    assert d["geometry"]["type"] == "Polygon"
    assert area(d["geometry"]) / area(tile.footprint()) == pytest.approx(0.06, rel=0.03)
    west, south, east, north = d["bbox"]
    t_west, t_south, t_east, t_north = tile.bbox()
    assert t_west <= west < east < t_east and t_south < south < north <= t_north
    assert north == pytest.approx(t_north, abs=1e-6)
    validate_item(it)


def test_item_properties(item_dict):
    props = item_dict["properties"]
    assert props["cloudfree:good_pixel_fraction"] == 0.987654
    assert props["cloudfree:observations"] == {
        "min": 0, "mean": 7.25, "max": 16, "p10": 2, "p50": 8, "p90": 13,
    }  # fmt: skip
    assert props["cloudfree:scene_count"] == 3
    assert props["cloudfree:scenes"] == [
        {"id": SCENES[0], "datetime": "2020-03-02T10:27:26Z", "score": 90.0,
         "relative_orbit": 65, "processing_baseline": "05.00", "contributed": True,
         "contribution": 0.625, "harmonization": {"offset": -1000, "reason": "baseline>=04.00"},
         "skipped": []},
        {"id": SCENES[1], "datetime": "2020-03-03T10:27:26Z", "score": 89.0,
         "relative_orbit": 65, "processing_baseline": "05.00", "contributed": True,
         "contribution": 0.375, "harmonization": {"offset": -1000, "reason": "baseline>=04.00"},
         "skipped": [{"band": "blue", "reason": "blue: read failed: x", "stage": "median"},
                     {"band": "rededge2", "reason": "404", "stage": "select"}]},
        {"id": SCENES[2], "datetime": "2020-03-04T10:27:26Z", "score": 88.0,
         "relative_orbit": 65, "processing_baseline": "05.00", "contributed": False,
         "contribution": 0.0, "harmonization": None, "skipped": []},
    ]  # fmt: skip
    assert props["cloudfree:excluded_scenes"] == [
        {"id": "S2A_32UNU_20200305_0_L2A", "reason": "scl: no asset"}]
    assert props["grid:code"] == "MGRS-32UNU"
    assert (props["mgrs:utm_zone"], props["mgrs:latitude_band"], props["mgrs:grid_square"]) == (
        32, "U", "NU",
    )  # fmt: skip
    assert props["processing:software"] == {"cloudfree": "0.1.0"}
    assert props["processing:level"] == "L3"
    assert "32UNU in 2020" in props["processing:lineage"]
    assert (
        "zoom 14 (9.55 m/px at the equator): blue, green, red, nir, visual, count"
        in (props["cloudfree:resolution"])
    )
    assert "zoom 11 (76.44 m/px at the equator): coastal, nir09" in props["cloudfree:resolution"]


def test_item_extensions(item_dict):
    assert set(item_dict["stac_extensions"]) == {
        "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
        "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
        "https://stac-extensions.github.io/file/v2.1.0/schema.json",
        "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
        "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
        PROCESSING_EXTENSION,
    }


def test_reflectance_asset(item_dict):
    blue = item_dict["assets"]["blue"]
    info = asset_infos()["blue"]
    assert blue["href"] == info.href
    assert blue["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert blue["roles"] == ["data", "reflectance"]
    assert blue["proj:code"] == "EPSG:3857"
    assert blue["proj:shape"] == list(info.shape)
    assert blue["proj:transform"] == list(info.transform)
    assert blue["file:size"] == 1004 and blue["file:checksum"] == CHECKSUM
    assert blue["cloudfree:zoom"] == 14 and blue["cloudfree:source_resolution"] == 10
    lat = sum(parse_tile(TILE).bbox()[1::2]) / 2
    assert blue["raster:bands"] == [{
        "nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": 0.0,
        "spatial_resolution": round(Z0 / 2**14 * math.cos(math.radians(lat)), 2),
    }]  # fmt: skip
    assert blue["eo:bands"] == [{
        "name": "B02", "common_name": "blue", "description": "Blue (band 2)",
        "center_wavelength": 0.49, "full_width_half_max": 0.098,
    }]  # fmt: skip
    assert item_dict["assets"]["swir22"]["cloudfree:zoom"] == 13
    assert item_dict["assets"]["nir09"]["eo:bands"][0]["name"] == "B09"


def test_visual_and_count_assets(item_dict):
    visual, count = item_dict["assets"]["visual"], item_dict["assets"]["count"]
    assert set(item_dict["assets"]) == set(ASSET_KEYS) and len(ASSET_KEYS) == 14
    assert visual["roles"] == ["visual"]
    assert [b["data_type"] for b in visual["raster:bands"]] == ["uint8"] * 3
    assert [b["common_name"] for b in visual["eo:bands"]] == ["red", "green", "blue"]
    assert count["roles"] == ["data"]
    assert count["raster:bands"][0]["data_type"] == "uint8"
    assert count["raster:bands"][0]["nodata"] == 0  # as in the COG: no valid observation
    assert count["cloudfree:flags"] == [{"bit": 7, "value": 128, "name": "snow", "description":
                                         "median of snow/ice observations only (no snow-free "
                                         "clear one)"}]
    assert "count = value & 127; snow = value & 128" in count["description"]


def test_snow_pixel_fraction_and_fused_granules():
    m = manifest()
    m["scenes"][1]["observation"] = m["scenes"][2]["observation"] = "32UNU_S2A_20200305T103021"
    st = {"good_pixels": 8, "footprint_pixels": 10, "snow_pixels": 3,
          "observations": {"min": 1, "mean": 2.0, "max": 3}}
    item = build_item(TILE, YEAR, asset_infos(), m, st, software_version="9.9")
    validate_item(item)
    props = item.to_dict()["properties"]
    assert props["cloudfree:snow_pixel_fraction"] == 0.3
    assert [s.get("observation") for s in props["cloudfree:scenes"]] == [
        None, "32UNU_S2A_20200305T103021", "32UNU_S2A_20200305T103021"]


def test_links(item_dict):
    derived = [link["href"] for link in item_dict["links"] if link["rel"] == "derived_from"]
    assert derived == [
        "https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a/items/X",
        f"http://127.0.0.1:8081/collections/sentinel-2-l2a/items/{SCENES[1]}",
        f"http://127.0.0.1:8081/collections/sentinel-2-l2a/items/{SCENES[2]}",
    ]
    rels = {link["rel"] for link in item_dict["links"]}
    assert {"license", "collection", "parent"} <= rels


def test_asset_info_and_stats_from_dicts():
    m = manifest()
    assets = {k: {"href": v.href, "shape": list(v.shape), "transform": list(v.transform)}
              for k, v in asset_infos().items()}  # fmt: skip
    st = {
        "good_pixels": 5, "footprint_pixels": 10,
        "observations": {"min": 1, "mean": 2.0, "max": 3, "percentiles": {"p50": 2}},
        "contributions": {SCENES[0]: 1.0},
    }  # fmt: skip
    item = build_item(TILE, YEAR, assets, m, st, software_version="9.9", api_url="http://api")
    validate_item(item)
    d = item.to_dict()
    assert d["properties"]["cloudfree:good_pixel_fraction"] == 0.5
    assert "file:size" not in d["assets"]["red"]
    assert "https://stac-extensions.github.io/file/v2.1.0/schema.json" not in d["stac_extensions"]
    assert [lnk["href"] for lnk in d["links"] if lnk["rel"] == "derived_from"][1] == (
        f"http://api/collections/sentinel-2-l2a/items/{SCENES[1]}"
    )


def test_missing_or_unknown_assets_are_input_errors():
    infos = asset_infos()
    del infos["count"]
    with pytest.raises(InputError, match=r"missing \['count'\]"):
        build_item(TILE, YEAR, infos, manifest(), stats(), software_version="0")
    infos = asset_infos() | {"scl": asset_infos()["red"]}
    with pytest.raises(InputError, match=r"unknown \['scl'\]"):
        build_item(TILE, YEAR, infos, manifest(), stats(), software_version="0")
    with pytest.raises(InputError):
        AssetInfo.from_dict({"href": "x"})


# --- broken items fail validation ---------------------------------------------------------------
def _broken(item_dict, edit):
    d = copy.deepcopy(item_dict)
    edit(d)
    return d


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda d: d["assets"]["blue"].pop("href"), "assets/blue"),
        (lambda d: d["assets"]["red"].__setitem__("proj:code", 3857), "assets/red/proj:code"),
        (lambda d: d["assets"]["green"].__setitem__("file:checksum", "xyz"),
         "assets/green/file:checksum"),
        (lambda d: d["properties"].__setitem__("mgrs:utm_zone", "32"),
         "properties/mgrs:utm_zone"),
        (lambda d: d["properties"].__setitem__("processing:software", "cloudfree"),
         "properties/processing:software"),
        (lambda d: d["assets"]["nir"]["raster:bands"][0].__setitem__("data_type", "u16"),
         "assets/nir/raster:bands/0/data_type"),
        (lambda d: d["properties"].__setitem__("grid:code", "33UUP"), "properties/grid:code"),
    ],
)  # fmt: skip
def test_broken_items_fail(item_dict, edit, path):
    with pytest.raises(ValidationError) as info:
        validate_item(_broken(item_dict, edit))
    assert info.value.path == path
    assert path in str(info.value)


def test_missing_datetime_fails(item_dict):
    def edit(d):
        del d["properties"]["start_datetime"]

    with pytest.raises(ValidationError):
        validate_item(_broken(item_dict, edit))


def test_unknown_extension_or_version_fails(item_dict):
    d = _broken(item_dict, lambda d: d["stac_extensions"].append(
        "https://stac-extensions.github.io/sar/v1.0.0/schema.json"))  # fmt: skip
    with pytest.raises(ValidationError, match="no offline copy"):
        validate_item(d)
    with pytest.raises(ValidationError, match="no offline copy"):
        validate_item(_broken(item_dict, lambda d: d.__setitem__("stac_version", "0.9.0")))
    with pytest.raises(ValidationError, match="not a STAC"):
        validate({"type": "FeatureCollection"})


def test_validation_is_offline(item, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("validation touched the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    validate_item(item)


def test_packaged_schemas_are_the_mirror(stac_schemas):
    files = [p for p in schema_root().rglob("*") if p.is_file() and "LICENSES" not in p.parts]
    files = [p for p in files if p.name != "NOTICE"]
    assert len(files) == 21
    for path in files:
        rel = path.relative_to(schema_root())
        assert path.read_bytes() == (stac_schemas / rel).read_bytes(), rel
    assert (schema_root() / "NOTICE").is_file()


# --- collection ----------------------------------------------------------------------------------
def test_collection_validates():
    coll = build_collection(software_version="0.1.0", years=(2020, 2023))
    validate_collection(coll)
    d = coll.to_dict(include_self_link=False)
    assert d["id"] == "sentinel-2-annual-median"
    assert d["extent"]["temporal"]["interval"] == [["2020-01-01T00:00:00Z", "2023-12-31T23:59:59Z"]]
    assert set(d["item_assets"]) == set(ASSET_KEYS)
    assert d["license"] == "other"
    assert PROCESSING_EXTENSION in d["stac_extensions"]


def test_multihash(tmp_path):
    assert multihash_sha256(b"") == (
        "1220e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    assert multihash_sha256(path) == multihash_sha256(b"abc")


# --- pystac's own validator, pointed at the offline mirror --------------------------------------
def test_pystac_validate_with_mirror(item, stac_schemas):
    from pystac.validation import JsonSchemaSTACValidator, RegisteredValidator, set_validator

    class MirrorValidator(JsonSchemaSTACValidator):
        def _get_schema(self, uri):
            if uri not in self.schema_cache:
                u = urlsplit(urldefrag(uri)[0])
                path = stac_schemas / u.netloc / u.path.lstrip("/")
                self.schema_cache[uri] = json.loads(path.read_text())
            return self.schema_cache[uri]

    previous = RegisteredValidator.get_validator()
    set_validator(MirrorValidator())
    try:
        validated = item.validate()
        assert PROCESSING_EXTENSION in validated
        broken = item.clone()
        broken.assets["blue"].extra_fields["proj:code"] = 3857
        with pytest.raises(pystac.errors.STACValidationError):
            broken.validate()
    finally:
        set_validator(previous)


@pytest.mark.parametrize("tile", ["01WCV", "60WWD"])
def test_antimeridian_item_geometry_split_and_valid(tile):
    """Zone 1 and 60 tiles that cross 180 deg: a MultiPolygon cut at +-180 and a bbox with
    west > east (RFC 7946 3.1.9 and 5.2), and the item still validates offline."""
    m = manifest()
    m["tile"] = tile
    created = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    it = build_item(tile, YEAR, asset_infos(), m, stats(), software_version="0.1.0",
                    created=created)
    d = it.to_dict(include_self_link=False)
    assert d["geometry"]["type"] == "MultiPolygon"
    lons = {p[0] for poly in d["geometry"]["coordinates"] for p in poly[0]}
    assert 180.0 in lons and -180.0 in lons and max(lons) <= 180 and min(lons) >= -180
    west, south, east, north = d["bbox"]
    assert west > 176 and east < -179 and west > east and south < north
    validate_item(it)
    validate(d)


def test_item_stats_carry_snow_pixels_from_the_count_band_stats():
    from cloudfree.publish import item_stats

    got = item_stats({"pixels": 100, "valid_pixels": 80, "observed_pixels": 90,
                      "snow_pixels": 9, "count_histogram": [20, 30, 50],
                      "contributions": {"a": 80, "b": 50}})
    assert got["snow_pixels"] == 9 and got["footprint_pixels"] == 90
    assert ItemStats.from_dict(got).snow_pixel_fraction == 0.1
    assert item_stats({"pixels": 4, "valid_pixels": 4})["snow_pixels"] == 0  # older stats


def test_scene_records_carry_outlier_and_masked_pixels():
    """Issue 8: per scene, the pixels the outlier test rejected beside those SCL masked."""
    from cloudfree.publish import item_stats

    m = manifest()
    ids = [s["id"] for s in m["scenes"]]
    count_stats = {"pixels": 10, "valid_pixels": 8, "observed_pixels": 10,
                   "count_histogram": [2, 3, 5], "contributions": {ids[0]: 8},
                   "outliers": {ids[0]: 2, ids[1]: 5}, "masked": {ids[0]: 1, ids[1]: 4}}
    item = build_item(TILE, YEAR, asset_infos(), m, item_stats(count_stats),
                      software_version="9.9")
    validate_item(item)
    records = {s["id"]: s for s in item.to_dict()["properties"]["cloudfree:scenes"]}
    assert (records[ids[0]]["outlier_pixels"], records[ids[0]]["masked_pixels"]) == (2, 1)
    assert (records[ids[1]]["outlier_pixels"], records[ids[1]]["masked_pixels"]) == (5, 4)
    assert (records[ids[2]]["outlier_pixels"], records[ids[2]]["masked_pixels"]) == (0, 0)
    old = build_item(TILE, YEAR, asset_infos(), m, item_stats({"pixels": 4, "valid_pixels": 4}),
                     software_version="9.9")  # stats from before issue 8: no such fields
    assert "outlier_pixels" not in old.to_dict()["properties"]["cloudfree:scenes"][0]
