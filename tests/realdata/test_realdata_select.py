"""Selection on real Earth Search items (derived FeatureCollections and the raw VCR cassettes).

PyYAML is not a project dependency, so the cassettes' response bodies (YAML single- or
double-quoted scalars) are decoded by the small reader below; it was checked to give exactly
PyYAML's strings for every cassette in shared/realdata.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cloudfree.errors import NoScenesError
from cloudfree.select import SelectOptions, select_scenes

pytestmark = pytest.mark.realdata

XCUBE = "derived/xcube-stac_earthsearch_v1_s2l2a_bbox9-10E47-48N_2020-03-01_05.json"
PYSTAC_CLIENT = "derived/pystac-client_earthsearch_v1_s2_l2a_and_c1_2025-07-31.json"
XCUBE_CASSETTE = (
    "xcube-stac/test/cassettes/test_store/"
    "StacDataStoreTest.test_search_data_searchable_catalog.yaml"
)
FILTER_CASSETTE = "pystac-client/tests/cassettes/test_cli/TestCLISearch.test_filter[inprocess].yaml"
MULTI_CASSETTE = "pystac-client/tests/cassettes/test_item_search/test_multiple_collections.yaml"
CASSETTES = (XCUBE_CASSETTE, FILTER_CASSETTE, MULTI_CASSETTE)


# --- a reader for VCR cassette bodies (YAML quoted scalars) -----------------------------------
_ESC = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "\t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}
_ESC_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")


def _unescape(m: re.Match) -> str:
    s = m.group(1)
    return chr(int(s[1:], 16)) if s[0] in "xuU" and len(s) > 1 else _ESC[s]


def _scan(text: str, start: int, quote: str) -> tuple[str, int]:
    """Raw content of a quoted scalar starting after its opening quote; (content, end)."""
    i = start
    while True:
        j = text.index(quote, i)
        if quote == "'":
            if text.startswith("''", j):
                i = j + 2
                continue
            return text[start:j], j + 1
        k = j - 1
        while text[k] == "\\":
            k -= 1
        if (j - 1 - k) % 2 == 0:
            return text[start:j], j + 1
        i = j + 1


def _fold(raw: str, double: bool) -> str:
    lines = raw.split("\n")
    out, pending = lines[0], ""
    for line in lines[1:]:
        line = line.lstrip(" \t")
        if double and _escaped_break(out):
            out = out[:-1] + line
            continue
        out = out.rstrip(" \t")
        if not line:
            pending += "\n"
            continue
        out += (pending or " ") + line
        pending = ""
    return out + pending


def _escaped_break(s: str) -> bool:
    n = len(s) - len(s.rstrip("\\"))
    return n % 2 == 1


def quoted_bodies(path: Path):
    """Every ``string:`` body (single- or double-quoted YAML scalar) of a VCR cassette."""
    text = Path(path).read_text()
    for m in re.finditer(r"\n\s+string: (['\"])", text):
        quote = m.group(1)
        raw, _ = _scan(text, m.end(), quote)
        if quote == "'":
            yield _fold(raw, False).replace("''", "'")
        else:
            yield _ESC_RE.sub(_unescape, _fold(raw, True))


def cassette_items(path: Path) -> list[dict]:
    """Unique STAC items (by collection and id) in the JSON bodies of a cassette."""
    found = {}
    for body in quoted_bodies(path):
        try:
            doc = json.loads(body)
        except ValueError:
            continue
        feats = doc.get("features", []) if doc.get("type") == "FeatureCollection" else [doc]
        for f in feats:
            if isinstance(f, dict) and f.get("type") == "Feature":
                found.setdefault((f.get("collection"), f["id"]), f)
    return list(found.values())


def features(path: Path) -> list[dict]:
    return json.loads(path.read_text())["features"]


# --- tests -------------------------------------------------------------------------------------
def test_xcube_32unu_collapses_to_baseline_05(realdata):
    sel = select_scenes(features(realdata / XCUBE), "32UNU", 2020)
    assert [s.id for s in sel.scenes] == ["S2A_32UNU_20200302_1_L2A", "S2A_32UNU_20200305_1_L2A"]
    assert {s.processing_baseline for s in sel.scenes} == {"05.00"}
    assert all(s.boa_offset_applied is True for s in sel.scenes)
    assert [s.relative_orbit for s in sel.scenes] == [65, 108]
    reasons = {d["id"]: d["reason"] for d in sel.dropped}
    assert reasons["S2A_32UNU_20200302_0_L2A"] == "superseded-by:S2A_32UNU_20200302_1_L2A"
    assert reasons["S2A_32UNU_20200305_0_L2A"] == "superseded-by:S2A_32UNU_20200305_1_L2A"
    assert sum(r == "other-tile" for r in reasons.values()) == 12
    assert len(sel.dropped) == 14


def test_xcube_scores_from_real_percentages(realdata):
    sel = select_scenes(features(realdata / XCUBE), "32UNU", 2020)
    # (100 - 0) * (1 - (49.727982 + 37.895522 + 0.453794 + 11.897724) / 100)
    assert sel.scenes[0].score == pytest.approx(0.024978, abs=1e-6)
    assert sel.scenes[0].assets["blue"] == (
        "s3://sentinel-cogs/sentinel-s2-l2a-cogs/32/U/NU/2020/3/S2A_32UNU_20200302_1_L2A/B02.tif"
    )
    assert set(sel.scenes[0].assets) == {
        "coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08",
        "nir09", "swir16", "swir22", "scl", "visual",
    }  # fmt: skip


@pytest.mark.parametrize("tile", ["32TMT", "32TNT", "32UMU", "32UNU"])
def test_xcube_every_tile_keeps_only_05_00(realdata, tile):
    sel = select_scenes(features(realdata / XCUBE), tile, 2020)
    assert len(sel.scenes) == 2
    assert all(s.id.endswith("_1_L2A") for s in sel.scenes)


def test_xcube_wrong_year_is_empty(realdata):
    with pytest.raises(
        NoScenesError, match=r"all 16 items dropped \(12 other-tile, 4 outside-year\)"
    ):
        select_scenes(features(realdata / XCUBE), "32UNU", 2021)


def test_pystac_client_c1_items_drop_out(realdata):
    items = features(realdata / PYSTAC_CLIENT)
    sel = select_scenes(items, "24MUA", 2025)
    assert [s.id for s in sel.scenes] == ["S2B_24MUA_20250731_0_L2A"]
    reasons = {d["id"]: d["reason"] for d in sel.dropped}
    assert reasons["S2B_T24MUA_20250731T130245_L2A"] == "other-collection"
    c1 = [i["id"] for i in items if i["collection"] == "sentinel-2-c1-l2a"]
    assert len(c1) == 6 and all(reasons[i] == "other-collection" for i in c1)


def test_pystac_client_c1_collection_can_be_chosen(realdata):
    items = features(realdata / PYSTAC_CLIENT)
    sel = select_scenes(items, "20EPT", 2025, SelectOptions(collection="sentinel-2-c1-l2a"))
    assert [s.id for s in sel.scenes] == ["S2B_T20EPT_20250731T131905_L2A"]


def test_decoder_reads_the_cassettes(realdata):
    counts = {c: len(cassette_items(realdata / c)) for c in CASSETTES}
    assert counts == {XCUBE_CASSETTE: 16, FILTER_CASSETTE: 20, MULTI_CASSETTE: 2}


def test_xcube_cassette_matches_derived(realdata):
    raw = {i["id"]: i for i in cassette_items(realdata / XCUBE_CASSETTE)}
    derived = {i["id"]: i for i in features(realdata / XCUBE)}
    assert set(raw) == set(derived)
    sel = select_scenes(list(raw.values()), "32UNU", 2020)
    assert [s.id for s in sel.scenes] == ["S2A_32UNU_20200302_1_L2A", "S2A_32UNU_20200305_1_L2A"]


def test_filter_cassette_drops_other_collections(realdata):
    items = cassette_items(realdata / FILTER_CASSETTE)
    collections = {i["collection"] for i in items}
    assert collections == {
        "sentinel-1-grd",
        "sentinel-2-c1-l2a",
        "sentinel-2-l1c",
        "sentinel-2-l2a",
    }
    l2a = [i for i in items if i["collection"] == "sentinel-2-l2a"]
    for item in l2a:
        tile = item["properties"]["grid:code"]
        sel = select_scenes(items, tile, 2025)
        assert [s.id for s in sel.scenes] == [item["id"]]
        reasons = {d["id"]: d["reason"] for d in sel.dropped}
        assert all(
            reasons[i["id"]] == "other-collection"
            for i in items
            if i["collection"] != "sentinel-2-l2a"
        )


def test_multiple_collections_cassette(realdata):
    items = cassette_items(realdata / MULTI_CASSETTE)
    sel = select_scenes(items, "13TDE", 2023)
    assert [s.id for s in sel.scenes] == ["S2A_13TDE_20231008_0_L2A"]
    assert [d["reason"] for d in sel.dropped] == ["other-collection"]


@pytest.mark.parametrize("tile", ["32TMT", "32TNT", "32UMU", "32UNU"])
def test_xcube_republications_told_apart_by_real_footprints(realdata, tile):
    """The real _0 (02.14) / _1 (05.00) pairs are re-publications by their footprints: the
    _0 geometry adds (almost) nothing to the _1 one, far below NEW_COVERAGE, so no pair becomes a
    two-granule observation (that would double-count the date)."""
    from cloudfree.grid import parse_tile
    from cloudfree.select import NEW_COVERAGE, duplicate_of, footprint_cells

    t = parse_tile(tile)
    items = {i["id"]: i for i in features(realdata / XCUBE)}
    for day in ("20200302", "20200305"):
        old, new = items[f"S2A_{tile}_{day}_0_L2A"], items[f"S2A_{tile}_{day}_1_L2A"]
        a, b = footprint_cells(old, t), footprint_cells(new, t)
        assert a is not None and b is not None and a.sum() > 0
        # the footprint is the data area: its share of the tile matches 100 - nodata %
        nodata = new["properties"]["s2:nodata_pixel_percentage"]
        assert abs(100 * b.mean() - (100 - nodata)) < 3
        assert (a & ~b).sum() / a.sum() < NEW_COVERAGE / 5
        assert duplicate_of(old, [new], t) == 0
    sel = select_scenes(list(items.values()), tile, 2020)
    assert all(s.observation is None for s in sel.scenes)
