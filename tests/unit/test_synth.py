"""Unit tests of ``cloudfree.synth`` (no services: writes a small archive to a temp folder)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from cloudfree.errors import InputError
from cloudfree.synth import generate_archive
from cloudfree.synth.items import SCL_PERCENTAGES, percentages
from cloudfree.synth.render import BAND_RES
from cloudfree.synth.scenes import has_offset, nominal_baseline

TILE, YEAR, SCENES = "33UUP", 2023, 12
AOI = "12.95,48.25,12.985,48.275"  # ~2.6 x 2.8 km


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    lines: list[str] = []
    summary = generate_archive([TILE], YEAR, SCENES, aoi=AOI, out=out, seed=7,
                               progress=lines.append)
    manifest = json.loads(Path(summary.manifests[0]).read_text())
    return {"out": out, "summary": summary, "manifest": manifest, "progress": lines,
            "items": {i["id"]: i for i in summary.items}}


def _window(manifest: dict, res: int) -> Window:
    w = manifest["data_window"]
    f = 60 // res
    return Window(w["col_off_60m"] * f, w["row_off_60m"] * f, w["width_60m"] * f,
                  w["height_60m"] * f)


def _read(href: str, manifest: dict, res: int) -> np.ndarray:
    with rasterio.open(href) as ds:
        return ds.read(window=_window(manifest, res)).squeeze()


def _up(scl20: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(scl20, 2, axis=0), 2, axis=1)


# --- shape of the archive -------------------------------------------------------------------
def test_scene_count_progress_and_layout(archive):
    m, items = archive["manifest"], archive["items"]
    assert len({r["acquisition"] for r in m["items"]}) == SCENES
    assert len(items) == SCENES + len(m["duplicates"])
    assert len(archive["progress"]) == SCENES
    for item in items.values():
        assert re.fullmatch(r"S2[ABC]_33UUP_2023\d{4}_[01]_L2A", item["id"])
        prefix = item["properties"]["earthsearch:s3_path"]
        d = item["properties"]["datetime"]
        assert prefix == (f"s3://sentinel-cogs/sentinel-s2-l2a-cogs/33/U/UP/{d[:4]}/"
                          f"{int(d[5:7])}/{item['id']}")
        for key, asset in item["assets"].items():
            assert Path(asset["href"]).is_file(), key
        assert item["assets"]["blue"]["href"].endswith(f"/{item['id']}/B02.tif")


def test_orbits_platforms_and_revisit(archive):
    items = archive["items"].values()
    orbits = {re.search(r"_R(\d{3})_", i["properties"]["s2:product_uri"]).group(1)
              for i in items}
    assert 2 <= len(orbits) <= 3
    assert {i["properties"]["platform"] for i in items} <= {"sentinel-2a", "sentinel-2b"}
    days = sorted({i["properties"]["datetime"][:10] for i in items})
    assert len(days) == SCENES


# --- STAC validity and Earth Search parity --------------------------------------------------
def _validator_factory(mirror: Path):
    import jsonschema
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource
    from referencing.jsonschema import DRAFT7

    def retrieve(uri: str):
        u = urlsplit(urldefrag(uri)[0])
        p = mirror / u.netloc / u.path.lstrip("/")
        if not p.is_file():
            raise NoSuchResource(ref=uri)
        return Resource.from_contents(json.loads(p.read_text()), default_specification=DRAFT7)

    registry = Registry(retrieve=retrieve)

    def validate(obj: dict, schema_urls: list[str]) -> None:
        for url in schema_urls:
            jsonschema.Draft7Validator({"$ref": url}, registry=registry).validate(obj)

    return validate


def test_items_and_collection_validate_offline(archive, stac_schemas):
    validate = _validator_factory(stac_schemas)
    for item in archive["items"].values():
        v = item["stac_version"]
        validate(item, [f"https://schemas.stacspec.org/v{v}/item-spec/json-schema/item.json",
                        *item["stac_extensions"]])
    coll = archive["summary"].collection
    validate(coll, ["https://schemas.stacspec.org/v1.0.0/collection-spec/json-schema/"
                    "collection.json"])
    import pystac

    item = pystac.Item.from_dict(next(iter(archive["items"].values())))
    assert item.properties["proj:code"] == "EPSG:32633"  # pystac 1.15 renames proj:epsg


SKIPPED_ASSETS = re.compile(r".*-jp2$|^(granule_metadata|tileinfo_metadata|product_metadata|"
                            r"cloud|snow)$")


def _real_items(realdata: Path) -> list[dict]:
    items = []
    for path in (realdata / "derived").glob("*.json"):
        items += [f for f in json.loads(path.read_text())["features"]
                  if f.get("collection") == "sentinel-2-l2a"]
    fixture = next((realdata / "rio-tiler-pds").rglob("S2A_29RKH_20200219_0_L2A.json"))
    items.append(json.loads(fixture.read_text()))
    assert len(items) >= 10
    return items


def test_keys_match_real_earth_search_items(archive, realdata):
    ours = next(iter(archive["items"].values()))
    for real in _real_items(realdata):
        missing_props = set(real["properties"]) - set(ours["properties"])
        assert not missing_props, (real["id"], missing_props)
        assert set(real) <= set(ours), real["id"]
        real_assets = {k for k in real["assets"] if not SKIPPED_ASSETS.match(k)}
        assert real_assets <= set(ours["assets"]), (real["id"], real_assets - set(ours["assets"]))
        for key in real_assets:
            ra, oa = real["assets"][key], ours["assets"][key]
            assert set(ra) <= set(oa), (real["id"], key, set(ra) - set(oa))
            for rb, ob in zip(ra.get("raster:bands", []), oa.get("raster:bands", []),
                              strict=False):
                assert set(rb) - {"bits_per_sample"} <= set(ob), (key, rb, ob)
                assert rb["data_type"] == ob["data_type"] and rb["nodata"] == ob["nodata"]
                if "scale" in rb:
                    assert rb["scale"] == ob["scale"]
            if key != "thumbnail":
                assert ra["type"] == oa["type"]
                assert set(ra["roles"]) <= set(oa["roles"]), (key, ra["roles"])
                assert len(ra["proj:shape"]) == 2 and oa["proj:shape"] == ra["proj:shape"]
        # same kinds of values
        for k in ("s2:processing_baseline", "s2:sequence", "grid:code", "mgrs:latitude_band"):
            assert isinstance(ours["properties"][k], type(real["properties"][k]))
    v1_2020 = [r for r in _real_items(realdata) if r["id"] == "S2A_32UNU_20200302_1_L2A"][0]
    assert set(ours["stac_extensions"]) == set(v1_2020["stac_extensions"])


def test_item_grid_matches_tile(archive):
    from cloudfree.grid import parse_tile

    tile = parse_tile(TILE)
    item = next(iter(archive["items"].values()))
    assert item["properties"]["proj:epsg"] == 32633
    assert item["assets"]["blue"]["proj:transform"] == [10, 0, 300000, 0, -10, 5400000]
    assert item["assets"]["scl"]["proj:shape"] == [5490, 5490]
    assert item["assets"]["coastal"]["proj:shape"] == [1830, 1830]
    assert item["bbox"] == pytest.approx(tile.bbox(), abs=1e-6)
    with rasterio.open(item["assets"]["nir08"]["href"]) as ds:
        assert ds.crs.to_epsg() == 32633 and ds.shape == (5490, 5490)
        assert list(ds.transform)[:6] == [20, 0, 300000, 0, -20, 5400000]


# --- pixels ---------------------------------------------------------------------------------
def test_cogs_valid_blocks_dtype_nodata(archive):
    from rio_cogeo.cogeo import cog_validate

    item = next(iter(archive["items"].values()))
    for key, asset in item["assets"].items():
        if key == "thumbnail":
            assert Path(asset["href"]).read_bytes()[:2] == b"\xff\xd8"
            continue
        valid, errors, _ = cog_validate(asset["href"], quiet=True)
        assert valid, (key, errors)
        with rasterio.open(asset["href"]) as ds:
            assert ds.nodata == 0
            assert ds.profile["compress"] == "deflate"
            assert ds.block_shapes[0] == ((512, 512) if key == "scl" else (1024, 1024))
            assert ds.dtypes[0] == ("uint8" if key in ("scl", "visual") else "uint16")
            assert ds.count == (3 if key == "visual" else 1)
            assert ds.overviews(1)


def test_outside_aoi_is_nodata_and_sparse(archive):
    item = next(iter(archive["items"].values()))
    with rasterio.open(item["assets"]["blue"]["href"]) as ds:
        assert ds.read(1, window=Window(0, 0, 512, 512)).max() == 0
    assert Path(item["assets"]["blue"]["href"]).stat().st_size < 5_000_000


def _offset(item: dict, manifest: dict) -> int:
    """The +1000 the item's pixels carry, from the truth manifest (not from the metadata)."""
    rec = next(r for r in manifest["items"] if r["id"] == item["id"])
    return 1000 if rec["offset_in_pixels"] else 0


def test_scl_and_reflectance_agree(archive):
    m = archive["manifest"]
    truth_red = _read(m["truth"]["hrefs"]["red"], m, 10).astype(float)
    seen = set()
    for item in archive["items"].values():
        a = item["assets"]
        scl = _up(_read(a["scl"]["href"], m, 20))
        red = _read(a["red"]["href"], m, 10).astype(float)
        swir = _read(a["swir16"]["href"], m, 20).astype(float)
        tci = _read(a["visual"]["href"], m, 10)
        off = _offset(item, m)
        refl = np.where(red > 0, red - off, 0)
        if (scl == 9).any():
            assert np.median(refl[scl == 9]) > 3000
            seen.add(9)
        if (scl == 3).sum() > 50:
            assert np.median(refl[scl == 3] / truth_red[scl == 3]) < 0.7
            seen.add(3)
        if (scl == 10).sum() > 50:
            assert np.median(refl[scl == 10] - truth_red[scl == 10]) > 100
            seen.add(10)
        if (scl == 11).sum() > 50:
            s20 = _read(a["scl"]["href"], m, 20)
            assert np.median(refl[scl == 11]) > 6000
            assert np.median(swir[s20 == 11] - off) < 1500
            seen.add(11)
        nodata = scl == 0
        assert (red[nodata] == 0).all() and (tci[:, nodata] == 0).all()
        assert (red[~nodata] > 0).all() and (tci[:, ~nodata] > 0).all()
        for key in ("coastal", "nir", "swir22", "aot"):
            res = BAND_RES.get(key, 20)
            arr = _read(a[key]["href"], m, res)
            s = _read(a["scl"]["href"], m, 20)
            s = _up(s) if res == 10 else s[1::3, 1::3] if res == 60 else s
            assert ((arr == 0) == (s == 0)).all(), key
        if (scl == 0).any():
            seen.add(0)
    assert {9, 3, 0} <= seen, seen


def test_spectra_plausible(archive):
    m = archive["manifest"]
    water = None
    nir = _read(m["truth"]["hrefs"]["nir"], m, 10).astype(float)
    red = _read(m["truth"]["hrefs"]["red"], m, 10).astype(float)
    re1 = _read(m["truth"]["hrefs"]["rededge1"], m, 20).astype(float)
    re3 = _read(m["truth"]["hrefs"]["rededge3"], m, 20).astype(float)
    ndvi = (nir - red) / (nir + red)
    assert ndvi.max() > 0.6 and (ndvi > 0.4).mean() > 0.3  # vegetation bright in NIR
    assert np.median(re1) < np.median(re3)  # red edge rises
    water = ndvi < 0  # water: dark in NIR
    if water.any():
        assert np.median(nir[water]) < 300


def test_percentages_equal_scl_shares(archive):
    for item in archive["items"].values():
        with rasterio.open(item["assets"]["scl"]["href"]) as ds:
            counts = np.bincount(ds.read(1).ravel(), minlength=256)
        p = item["properties"]
        total = counts.sum()
        valid = total - counts[0]
        assert p["s2:nodata_pixel_percentage"] == pytest.approx(100 * counts[0] / total,
                                                                abs=1e-5)
        for cls, name in SCL_PERCENTAGES.items():
            assert p[name] == pytest.approx(100 * counts[cls] / valid, abs=1e-5), name
        assert p["eo:cloud_cover"] == pytest.approx(
            100 * (counts[8] + counts[9] + counts[10]) / valid, abs=1e-5)
        assert p["eo:cloud_cover"] == pytest.approx(
            p["s2:medium_proba_clouds_percentage"] + p["s2:high_proba_clouds_percentage"]
            + p["s2:thin_cirrus_percentage"], abs=1e-4)


def test_percentages_function():
    counts = [50, 0, 5, 5, 20, 10, 5, 0, 2, 2, 1, 0]
    p = percentages(counts, 100)
    assert p["s2:nodata_pixel_percentage"] == 50
    assert p["s2:vegetation_percentage"] == 40
    assert p["eo:cloud_cover"] == 10


def test_offset_exactly_as_recorded(archive):
    """Pixels carry +1000 exactly where the truth manifest says (Earth Search's convention)."""
    m = archive["manifest"]
    truth = _read(m["truth"]["hrefs"]["green"], m, 10).astype(float)
    seen = set()
    for item in archive["items"].values():
        scl = _up(_read(item["assets"]["scl"]["href"], m, 20))
        green = _read(item["assets"]["green"]["href"], m, 10).astype(float)
        clear = np.isin(scl, (4, 5, 6))
        if clear.sum() < 100:
            continue
        bias = np.median(green[clear] - truth[clear])
        expected = _offset(item, m)
        assert abs(bias - expected) < 150, (item["id"], bias, expected)
        seen.add((item["properties"]["s2:processing_baseline"] >= "04.00", expected))
    # >= 04.00 items of both kinds (harmonised by the publisher, and still +1000), and older
    assert {(True, 0), (True, 1000)} <= seen, seen
    assert {i["properties"]["s2:processing_baseline"] < "04.00" for i in items_of(archive)} == \
        {True, False}
    # the same acquisition published twice: _0 (old baseline, no offset) and _1 (05.00, flag
    # true, harmonised by the publisher): the same DNs, as the real 2020 pairs
    for dup in archive["manifest"]["duplicates"]:
        old, new = (archive["items"][i] for i in dup["items"])
        assert _offset(old, m) == 0 and _offset(new, m) == 0
        assert new["properties"]["earthsearch:boa_offset_applied"] is True
        for band in ("blue", "swir22", "coastal"):
            a = _read(old["assets"][band]["href"], archive["manifest"], BAND_RES[band])
            b = _read(new["assets"][band]["href"], archive["manifest"], BAND_RES[band])
            np.testing.assert_array_equal(a, b)


def items_of(archive) -> list[dict]:
    return list(archive["items"].values())


def test_with_offset_keeps_nodata_and_saturation():
    from cloudfree.synth.render import Rendered

    dn = np.array([[0, 1, 5000, 32767]], np.uint16)
    r = Rendered(bands={"blue": dn}, scl=dn, tci=dn, aot=dn, wvp=dn)
    assert r.with_offset("blue", True).tolist() == [[0, 1001, 6000, 32767]]
    assert r.with_offset("blue", False).tolist() == dn.tolist()


def test_flags_follow_earth_search_and_wrong_ones_are_recorded(archive):
    m, items = archive["manifest"], archive["items"]
    wrong = set(m["wrong_flags"])
    directions = set()
    for rec in m["items"]:
        p = items[rec["id"]]["properties"]
        flag, raw = p["earthsearch:boa_offset_applied"], rec["offset_in_pixels"]
        modern = has_offset(p["s2:processing_baseline"])
        if not modern:
            assert raw is False and flag is False  # before 04.00: no offset, flag false
        # flag true = the publisher removed the offset; wrong flags are exactly the recorded
        assert (modern and flag == raw) == (rec["id"] in wrong) == rec["flag_wrong"]
        if rec["id"] in wrong:
            directions.add(flag)
        rb = items[rec["id"]]["assets"]["blue"]["raster:bands"][0]
        assert rb["offset"] == (-0.1 if modern else 0) and rb["scale"] == 0.0001
    assert directions == {True, False}  # wrong both ways
    assert m["duplicates"]
    for dup in m["duplicates"]:
        first, second = (items[i]["properties"] for i in dup["items"])
        assert first["datetime"] == second["datetime"]
        assert first["s2:sequence"] == "0" and second["s2:sequence"] == "1"
        assert second["s2:processing_baseline"] == "05.00" > first["s2:processing_baseline"]
        assert second["earthsearch:boa_offset_applied"] is True
        assert second["s2:generation_time"] > first["s2:generation_time"]
        assert dup["newest"] == dup["items"][-1]


def test_nominal_baselines():
    from datetime import date

    assert nominal_baseline(date(2020, 3, 2)) == "02.14"
    assert nominal_baseline(date(2023, 7, 4)) == "05.09"
    assert not has_offset("03.01") and has_offset("04.00") and has_offset("05.10")


def test_swath_edge_nodata(archive):
    m, items = archive["manifest"], archive["items"]
    edge = [r for r in m["items"] if r["swath_edge"]]
    assert edge and m["swath_edges"]
    for rec in edge:
        p = items[rec["id"]]["properties"]
        assert f"_R{rec['relative_orbit']:03d}_" in p["s2:product_uri"]
        scl = _read(items[rec["id"]]["assets"]["scl"]["href"], m, 20)
        assert 0.05 < (scl == 0).mean() < 0.95


def test_perfect_composite_is_within_noise_of_truth(archive):
    """A median of the clear observations (offset removed, newest duplicate) is ~ the truth."""
    m, items = archive["manifest"], archive["items"]
    newest = {}
    for rec in m["items"]:
        newest[rec["acquisition"]] = rec["id"]
    for band, res in (("red", 10), ("nir", 10), ("swir16", 20)):
        stack, valid = [], []
        for item_id in newest.values():
            a = items[item_id]["assets"]
            scl = _read(a["scl"]["href"], m, 20)
            scl = _up(scl) if res == 10 else scl
            dn = _read(a[band]["href"], m, res).astype(float) - _offset(items[item_id], m)
            stack.append(dn)
            valid.append(np.isin(scl, (2, 4, 5, 6, 7)))
        data = np.where(np.array(valid), np.array(stack), np.nan)
        count = np.array(valid).sum(0)
        med = np.nanmedian(data[:, count >= 3], axis=0)
        truth = _read(m["truth"]["hrefs"][band], m, res).astype(float)[count >= 3]
        err = np.abs(med - truth)
        sigma = m["truth"]["noise_sigma_dn"][band]
        amp = m["truth"]["seasonal_amplitude_dn"][band]
        assert np.median(err) < sigma + amp, (band, np.median(err))
        assert np.percentile(err, 95) < 3 * sigma + amp, (band, np.percentile(err, 95))
    cc = _read(m["truth"]["hrefs"]["clear_count"], m, 20)
    assert cc.max() <= SCENES and cc.mean() > 1


def test_manifest_format(archive):
    m = archive["manifest"]
    for key in ("tile", "year", "seed", "items", "wrong_flags", "duplicates", "truth",
                "parameters", "data_window", "landscape", "offset_convention"):
        assert key in m
    assert m["tile"] == TILE and m["year"] == YEAR and m["seed"] == 7
    assert set(m["truth"]["hrefs"]) >= {*BAND_RES, "visual", "clear_count"}
    for href in m["truth"]["hrefs"].values():
        assert Path(href).is_file()
    with rasterio.open(m["truth"]["hrefs"]["blue"]) as ds:
        assert ds.block_shapes[0] == (1024, 1024) and ds.shape == (10980, 10980)


# --- determinism and inputs -----------------------------------------------------------------
def test_deterministic(tmp_path):
    tiny = "12.96,48.26,12.97,48.265"
    a = generate_archive(TILE, YEAR, 2, aoi=tiny, out=tmp_path / "a", seed=3,
                         progress=lambda _: None)
    b = generate_archive(TILE, YEAR, 2, aoi=tiny, out=tmp_path / "b", seed=3,
                         progress=lambda _: None)
    c = generate_archive(TILE, YEAR, 2, aoi=tiny, out=tmp_path / "c", seed=4,
                         progress=lambda _: None)
    assert a.item_ids == b.item_ids
    for ia, ib in zip(a.items, b.items, strict=True):
        strip = json.loads(json.dumps(ia).replace(str(tmp_path / "a"), ""))
        assert strip == json.loads(json.dumps(ib).replace(str(tmp_path / "b"), ""))
        for key in ("scl", "blue", "visual"):
            with rasterio.open(ia["assets"][key]["href"]) as x, \
                    rasterio.open(ib["assets"][key]["href"]) as y:
                assert (x.read() == y.read()).all()
    assert a.item_ids != c.item_ids or a.items[0]["properties"] != c.items[0]["properties"]


@pytest.mark.parametrize("kwargs", [
    {"tiles": ["33XYZ1"]}, {"tiles": ["99UUP"]}, {"aoi": "1,2,3"}, {"aoi": "13,48,12,49"},
    {"aoi": "-70,-30,-69.9,-29.9"}, {"year": 2010}, {"scenes": 0}, {"scenes": 500},
])
def test_input_errors(tmp_path, kwargs):
    args = {"tiles": [TILE], "year": YEAR, "scenes": 2, "aoi": AOI, "out": tmp_path, **kwargs}
    with pytest.raises(InputError):
        generate_archive(**args, progress=lambda _: None)


def test_cli_registers_synth(tmp_path, capsys):
    from cloudfree.cli import main

    rc = main(["synth", "--tiles", TILE, "--year", str(YEAR), "--scenes", "1", "--aoi",
               "12.96,48.26,12.965,48.263", "--out", str(tmp_path), "--json"])
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    assert info["items"] >= 1 and info["loaded"] == 0
