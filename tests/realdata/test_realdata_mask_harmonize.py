"""Masking and harmonization on real Sentinel-2 L2A pixels (../shared/realdata)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cloudfree.harmonize import PixelSample, SceneInput, decide, decide_tile, metadata_prior
from cloudfree.mask import DEFAULT_MASK_CLASSES, scl_to_band_grid, valid_mask

RKH = (
    "rio-tiler-pds/tests/fixtures/sentinel-cogs/sentinel-s2-l2a-cogs/"
    "29/R/KH/2020/2/S2A_29RKH_20200219_0_L2A"
)
UNU = (
    "stactools-sentinel2/tests/data-files/S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE/"
    "GRANULE/L2A_T29UNU_A038058_20221005T115407/IMG_DATA"
)
FLAG = "earthsearch:boa_offset_applied"


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def rkh(realdata: Path) -> Path:
    return realdata / RKH


@pytest.fixture(scope="module")
def unu(realdata: Path) -> Path:
    return realdata / UNU


def _unu_band(unu: Path, band: str) -> np.ndarray:
    path = unu / "R60m" / f"T29UNU_20221005T115411_{band}_60m.jp2"
    with rasterio.open(path) as src:
        assert src.driver == "JP2OpenJPEG"
        return src.read(1)


def test_rkh_mask_removes_exactly_the_masked_classes(rkh: Path) -> None:
    scl = _read(rkh / "SCL.tif")
    assert scl.shape == (549, 549)
    classes, counts = np.unique(scl, return_counts=True)
    per_class = dict(zip(classes.tolist(), counts.tolist(), strict=True))
    assert per_class[5] > 250_000 and {8, 9, 10} <= set(per_class)
    keep = valid_mask(scl)
    removed = sum(n for c, n in per_class.items() if c in DEFAULT_MASK_CLASSES)
    assert int(keep.sum()) == scl.size - removed
    assert not keep[np.isin(scl, DEFAULT_MASK_CLASSES)].any()
    assert keep[~np.isin(scl, DEFAULT_MASK_CLASSES)].all()
    with_options = valid_mask(scl, (*DEFAULT_MASK_CLASSES, 2, 7))
    assert int(keep.sum() - with_options.sum()) == per_class.get(2, 0) + per_class.get(7, 0)


def test_rkh_mask_on_the_10m_band_grid(rkh: Path) -> None:
    scl = _read(rkh / "SCL.tif")
    b04 = _read(rkh / "B04.tif")
    assert b04.shape == (1098, 1098)
    scl10 = scl_to_band_grid(scl, 10)
    assert scl10.shape == b04.shape
    keep = valid_mask(scl10)
    assert int(keep.sum()) == 4 * int(valid_mask(scl).sum())
    np.testing.assert_array_equal(keep[::2, ::2], valid_mask(scl))
    np.testing.assert_array_equal(keep[1::2, 1::2], valid_mask(scl))
    masked = np.where(keep == 1, b04, 0)
    assert masked.dtype == np.uint16 and int(np.count_nonzero(masked)) <= int(keep.sum())


def test_unu_scl_20m_to_60m_matches_esa_60m(unu: Path) -> None:
    """Our 60 m SCL (centre pixel) against ESA's own 60 m SCL of the same product."""
    scl20 = _read(unu / "R20m" / "T29UNU_20221005T115411_SCL_20m.jp2")
    scl60 = _read(unu / "R60m" / "T29UNU_20221005T115411_SCL_60m.jp2")
    ours = scl_to_band_grid(scl20, 60)
    assert ours.shape == scl60.shape == (1830, 1830)
    agree = float(np.mean(ours == scl60))
    assert agree > 0.99, agree  # measured 0.994
    # the centre pixel (1, 1) of each 3x3 block agrees better than any other choice
    for oy in range(3):
        for ox in range(3):
            if (oy, ox) != (1, 1):
                assert float(np.mean(scl20[oy::3, ox::3] == scl60)) < agree


def test_60m_all_nine_rule_on_real_scl(unu: Path) -> None:
    """Measured comparison of the 60 m rules on the real T29UNU product (issue 7.5).

    The centre-pixel rule calls 3.8 % more 60 m pixels clear than the all-nine rule (596,953 vs
    574,094). Those contested pixels hold medium cloud (8), thin cirrus (10) or shadow (3) in
    some of their nine 20 m SCL pixels, and ESA's own 60 m B02 (an aggregate of the 20 m
    ground) shows the contamination: where medium cloud is inside, its median is 2410 DN
    against 1863 DN for all-nine-clear pixels within 2 px; with cirrus 1613 vs 1495. Shadow
    barely shows (1292 vs 1307). So the composite keeps the all-nine rule (``scene_state``).
    """
    from cloudfree.mask import CLEAR, dilate, scene_state

    scl20 = _read(unu / "R20m" / "T29UNU_20221005T115411_SCL_20m.jp2")
    b02 = _unu_band(unu, "B02").astype(np.float64)
    centre = valid_mask(scl_to_band_grid(scl20, 60)).astype(bool)
    all9 = scene_state(scl20, 60) == CLEAR
    assert not (all9 & ~centre).any()  # all nine clear implies the centre is
    contested = centre & ~all9
    assert (int(centre.sum()), int(all9.sum())) == (596_953, 574_094)
    blocks = scl20.reshape(1830, 3, 1830, 3).transpose(0, 2, 1, 3).reshape(1830, 1830, 9)
    for cls, excess in ((8, 500), (10, 100)):
        with_cls = contested & (blocks == cls).any(axis=2)
        near_clear = dilate(with_cls, 2) & all9
        assert np.median(b02[with_cls]) - np.median(b02[near_clear]) > excess


@pytest.mark.parametrize("flag", [False, None, True])
def test_unu_baseline_0400_raw_pixels_detected_as_offset(unu: Path, flag: bool | None) -> None:
    """ESA's raw 04.00 product carries +1000 (MTD_MSIL2A.xml: BOA_ADD_OFFSET -1000).

    Whatever an Earth Search flag would say, the pixels decide: flag false or absent predicts
    +1000 and the pixels agree; flag true predicts a harmonised COG and the pixels overrule it.
    """
    scl = _unu_band(unu, "SCL")
    nir = _unu_band(unu, "B8A")
    props = {"s2:processing_baseline": "04.00"}
    if flag is not None:
        props[FLAG] = flag
    h = decide(props, nir, valid_mask(scl), scl=scl)
    assert h.offset == 1000 and h.evidence["decided_by"] == "pixels"
    px = h.evidence["pixels"]
    assert px["verdict"] == "offset"
    assert px["dark_median"] >= 1000 and px["n_dark"] > 10_000
    assert px["p0.1"] > 1000
    assert h.evidence["prior"]["offset"] == (0 if flag else 1000)
    assert h.evidence.get("contradicts_prior", False) is bool(flag)


def test_unu_metadata_states_the_offset(unu: Path) -> None:
    mtd = (unu.parents[2] / "MTD_MSIL2A.xml").read_text()
    assert mtd.count('<BOA_ADD_OFFSET band_id="') == 13
    assert '<BOA_ADD_OFFSET band_id="8">-1000</BOA_ADD_OFFSET>' in mtd


@pytest.mark.parametrize("band", ["B02", "B03", "B04", "B8A"])
def test_unu_pixels_alone_say_offset(unu: Path, band: str) -> None:
    scl = _unu_band(unu, "SCL")
    pixels = _unu_band(unu, band)
    h = decide({"s2:processing_baseline": "02.14", FLAG: False}, pixels, valid_mask(scl), scl=scl)
    assert h.evidence["prior"]["offset"] == 0
    assert h.evidence["pixels"]["verdict"] == "offset"
    assert h.evidence["contradicts_prior"] is True
    assert h.offset == 1000


def test_rkh_baseline_0214_detected_as_no_offset(rkh: Path) -> None:
    scl10 = scl_to_band_grid(_read(rkh / "SCL.tif"), 10)
    blue = _read(rkh / "B02.tif")
    h = decide({"s2:processing_baseline": "02.14", FLAG: False}, blue, valid_mask(scl10), scl=scl10)
    assert h.offset == 0
    assert h.evidence["pixels"]["verdict"] == "no_offset"
    assert "contradicts_prior" not in h.evidence
    # the same pixels as a _1 re-publication (05.00, flag true): harmonised, and they agree
    props = {"s2:processing_baseline": "05.00", FLAG: True}
    republished = decide(props, blue, valid_mask(scl10), scl=scl10)
    assert republished.offset == 0 and "contradicts_prior" not in republished.evidence
    # a wrong flag false (earth-search #66, #71) on harmonised pixels: the pixels overrule it
    props = {"s2:processing_baseline": "05.09", FLAG: False}
    wrong = decide(props, blue, valid_mask(scl10), scl=scl10)
    assert wrong.offset == 0 and wrong.evidence["contradicts_prior"] is True


def test_rkh_bright_desert_is_inconclusive_alone(rkh: Path) -> None:
    """A bright desert without water cannot prove either way in NIR or SWIR: the prior stays."""
    scl = _read(rkh / "SCL.tif")
    for band in ("B8A", "B11"):
        pixels = _read(rkh / f"{band}.tif")
        h = decide({"s2:processing_baseline": "02.14"}, pixels, valid_mask(scl), scl=scl)
        assert h.evidence["pixels"]["verdict"] == "inconclusive", band
        assert h.offset == 0 and h.evidence["decided_by"] == "metadata"
        assert h.reason == ("processing baseline 02.14 < 04.00: never offset; "
                            "own pixels inconclusive")


def test_rkh_real_desert_cross_scene(rkh: Path) -> None:
    """Real 29RKH desert texture (B11 + SCL) as the surface of 8 scenes of one tile.

    Each scene: the real DNs, times a small gain change, plus noise, plus +1000 for three of
    them; two flags are wrong. No scene's own pixels decide; the other scenes decide all.
    """
    scl = _read(rkh / "SCL.tif")
    swir = _read(rkh / "B11.tif").astype(np.float64)
    rng = np.random.default_rng(0)
    truths = [0, 1000, 0, 0, 1000, 0, 1000, 0]
    flags = [t == 0 for t in truths]
    flags[0], flags[4] = False, True  # wrong both ways
    scenes = []
    for i, t in enumerate(truths):
        dn = swir * (1 + 0.04 * np.sin(i)) + rng.normal(0, 60, swir.shape) + t
        dn = np.where(swir > 0, np.clip(dn, 1, 32766), 0).astype(np.uint16)
        sample = PixelSample(pixels=dn, scl=scl, compare=dn, compare_band="swir16")
        scenes.append(SceneInput({"s2:processing_baseline": "05.09", FLAG: flags[i]},
                                 "sentinel-2-l2a", sample))
    decisions = decide_tile(scenes)
    assert [d.offset for d in decisions] == truths
    assert all(d.evidence["pixels"]["verdict"] == "inconclusive" for d in decisions)
    assert all(d.evidence["decided_by"] == "cross_scene" for d in decisions)
    assert decisions[0].evidence["contradicts_prior"] and decisions[4].evidence["contradicts_prior"]
    assert max(abs(d.evidence["cross_scene"]["step_dn"]) for d in decisions) < 300


def test_real_items_priors(realdata: Path) -> None:
    """Real Earth Search items: _0 (02.14) and _1 (05.00, flag true) of one acquisition both
    hold harmonised pixels; C1 items of the same datatake carry +1000."""
    name = "xcube-stac_earthsearch_v1_s2l2a_bbox9-10E47-48N_2020-03-01_05.json"
    cassette = realdata / "derived" / name
    items = json.loads(cassette.read_text())["features"]
    pairs: dict[str, list[int]] = {}
    for item in items:
        prior = metadata_prior(item["properties"], item["collection"])
        pairs.setdefault(item["id"][:-6], []).append(prior.offset)
        assert prior.offset == 0, item["id"]
        rb = item["assets"]["red"]["raster:bands"][0]
        if item["properties"]["s2:processing_baseline"] == "05.00":  # says -0.1, yet harmonised
            assert rb["offset"] == -0.1 and item["properties"][FLAG] is True
    assert pairs and all(len(v) == 2 for v in pairs.values())
    # one datatake in both collections (2025-07-31): sentinel-2-l2a, flag true, harmonised by
    # Element 84 -> 0; sentinel-2-c1-l2a keeps +1000 and declares it (earth-search #41) -> 1000
    both = realdata / "derived" / "pystac-client_earthsearch_v1_s2_l2a_and_c1_2025-07-31.json"
    priors: dict[str, dict[str, int]] = {}
    for item in json.loads(both.read_text())["features"]:
        if not item["collection"].startswith("sentinel-2"):
            continue
        tile = item["properties"]["grid:code"]
        priors.setdefault(tile, {})[item["collection"]] = metadata_prior(
            item["properties"], item["collection"]).offset
    assert len(priors) >= 6
    for tile, by_collection in priors.items():
        assert by_collection == {"sentinel-2-l2a": 0, "sentinel-2-c1-l2a": 1000}, tile


def test_overview_sample_of_the_real_rkh_cogs(rkh: Path) -> None:
    """sampling reads red, swir16 and SCL of real Earth Search COGs onto one 549 px grid."""
    from cloudfree.errors import SourceReadError
    from cloudfree.harmonize import harmonize_scenes
    from cloudfree.sampling import read_overview_sample

    assets = {"red": str(rkh / "B04.tif"), "swir16": str(rkh / "B11.tif"),
              "scl": str(rkh / "SCL.tif")}
    sample = read_overview_sample(assets)
    assert sample.pixels.shape == sample.compare.shape == sample.scl.shape == (549, 549)
    assert sample.pixels.dtype == np.uint16 and sample.scl.dtype == np.uint8
    np.testing.assert_array_equal(sample.compare, _read(rkh / "B11.tif"))  # already 549 px
    np.testing.assert_array_equal(sample.scl, _read(rkh / "SCL.tif"))
    item = json.loads((rkh / "S2A_29RKH_20200219_0_L2A.json").read_text())
    scene = {"id": item["id"], "assets": assets, "collection": "sentinel-2-l2a",
             "properties": item["properties"]}
    (h,) = harmonize_scenes([scene])
    assert h.offset == 0 and scene["harmonization"]["offset"] == 0
    assert h.evidence["prior"]["offset"] == 0  # 02.14
    with pytest.raises(SourceReadError):
        read_overview_sample({**assets, "red": str(rkh / "B99.tif")})


def test_scl_class_constants_match_esa_product_metadata(realdata: Path) -> None:
    """The SCL codes the mask relies on are ESA's own (MTD_MSIL2A.xml Scene_Classification_List
    of the real T29UNU product), not a belief of ours."""
    import xml.etree.ElementTree as ET

    from cloudfree import mask

    (mtd,) = realdata.glob("stactools-sentinel2/**/MTD_MSIL2A.xml")
    root = ET.parse(mtd).getroot()
    legend = {int(e.findtext("SCENE_CLASSIFICATION_INDEX")): e.findtext("SCENE_CLASSIFICATION_TEXT")
              for e in root.iter("Scene_Classification_ID")}
    assert legend[mask.NODATA_CLASS] == "SC_NODATA"
    assert legend[mask.SNOW_CLASS] == "SC_SNOW_ICE"
    masked = {legend[c] for c in mask.DEFAULT_MASK_CLASSES}
    assert masked == {"SC_NODATA", "SC_SATURATED_DEFECTIVE", "SC_CLOUD_SHADOW",
                      "SC_CLOUD_MEDIUM_PROBA", "SC_CLOUD_HIGH_PROBA", "SC_THIN_CIRRUS",
                      "SC_SNOW_ICE"}
    assert {legend[c] for c in mask.OPTIONAL_MASK_CLASSES} == {"SC_DARK_FEATURE_SHADOW",
                                                               "SC_UNCLASSIFIED"}

