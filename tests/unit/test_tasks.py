"""The task layer's pure parts: option and request validation, keys, statistics, transitions."""

from __future__ import annotations

import json
import re

import pytest

from cloudfree import publish, tasks
from cloudfree.errors import ConfigError, InputError
from cloudfree.pipeline.run import tile_transitions
from cloudfree.settings import Settings


def test_run_options_round_trip_and_defaults():
    opts = tasks.RunOptions.from_dict({"scenes": 8, "months": [6, 7], "max_cloud": 40,
                                       "mask_classes": [0, 3, 8, 9], "force": True})
    assert opts.to_dict() == {"scenes": 8, "months": [6, 7], "max_cloud": 40.0,
                              "mask_classes": [0, 3, 8, 9], "force": True}
    s = Settings("w", "d", "c", scene_count=16, mask_classes=(0, 1))
    assert tasks.RunOptions.from_dict(None).scene_count(s) == 16
    assert tasks.RunOptions.from_dict(None).masks(s) == (0, 1)
    assert opts.scene_count(s) == 8


@pytest.mark.parametrize("bad", [{"scenes": 0}, {"scenes": 65}, {"months": [13]},
                                 {"max_cloud": 101}, {"mask_classes": [12]}, {"colour": 1},
                                 {"scenes": "many"}])
def test_run_options_reject_bad_values(bad):
    with pytest.raises(InputError):
        tasks.RunOptions.from_dict(bad)


def test_resolve_tiles_from_list_and_aoi():
    assert tasks.resolve_tiles(["T33UVP", "33uup", "MGRS-33UUP"]) == ["33UUP", "33UVP"]
    assert tasks.resolve_tiles(None, "13.62,48.12,13.76,48.18") == ["33UUP", "33UVP"]
    with pytest.raises(InputError, match="no tiles"):
        tasks.resolve_tiles([], None)
    with pytest.raises(InputError, match="not an MGRS tile"):
        tasks.resolve_tiles(["33UUPX"])


def test_check_year():
    assert tasks.check_year("2023") == 2023
    for bad in (2014, 3000, "x", None):
        with pytest.raises(InputError):
            tasks.check_year(bad)


def test_parse_request_accepts_a_good_request_and_names_what_is_wrong():
    body = json.dumps({"year": 2023, "tiles": ["33UUP"], "options": {"scenes": 4}}).encode()
    assert tasks.parse_request(body) == {"year": 2023, "tiles": ["33UUP"], "aoi": None,
                                         "options": {"scenes": 4, "months": None,
                                                     "max_cloud": None, "mask_classes": None,
                                                     "force": False}}
    cases = {b"not json": "not JSON", b"[1]": "JSON object",
             b'{"year": 2023, "tiles": "33UUP"}': "list of MGRS",
             b'{"year": 2023, "tiles": ["33UUP"], "when": 1}': "unknown request field",
             b'{"tiles": ["33UUP"]}': "year"}
    for body, msg in cases.items():
        with pytest.raises(InputError, match=msg):
            tasks.parse_request(body)


def test_parse_done_key():
    """The marker moved under ``work/{year}/_markers/`` (listed by the report in one go); the
    old per-tile place is no longer a marker (intended change)."""
    assert tasks.parse_done_key("work/2023/_markers/33UUP/DONE.json") == (2023, "33UUP")
    layout = Settings("w", "d", "c").layout
    assert tasks.parse_done_key(layout.tile_done(2023, "33UUP").split("/", 3)[3]) == \
        (2023, "33UUP")
    for bad in ("work/2023/33UUP/manifest.json", "other/2023/_markers/33UUP/DONE.json",
                "DONE.json", "work/2023/33UUP/DONE.json", "work/2023/_markers/33UUP/EMPTY.json",
                "work/x/_markers/33UUP/DONE.json"):
        with pytest.raises(InputError):
            tasks.parse_done_key(bad)


def test_settings_from_env_requires_the_buckets():
    with pytest.raises(ConfigError, match="WORK_BUCKET"):
        Settings.from_env({"DATA_BUCKET": "d", "CONTROL_BUCKET": "c"})
    s = Settings.from_env({"WORK_BUCKET": "w", "DATA_BUCKET": "d", "CONTROL_BUCKET": "c",
                           "MASK_CLASSES": "0,3,9", "SCENE_COUNT": "12"})
    assert (s.mask_classes, s.scene_count) == ((0, 3, 9), 12)
    with pytest.raises(ConfigError):
        Settings.from_env({"WORK_BUCKET": "w", "DATA_BUCKET": "d", "CONTROL_BUCKET": "c",
                           "MASK_CLASSES": "a,b"})


def test_tile_transitions_grow_with_bands_and_batches_not_windows():
    work = [{"band": "blue", "batches": [0, 1]}, {"band": "coastal", "batches": [0]}]
    assert tile_transitions(work) == 5 + (2 + 2) + (2 + 1)
    assert tile_transitions(work, decide=5) == 5 + 5 + (2 + 2) + (2 + 1)


def test_band_work_for_a_full_tile_keeps_transitions_low():
    from cloudfree.manifest import Manifest

    doc = {"tile": "33UUP", "year": 2023, "scenes": [{"id": f"s{i}", "assets": {}}
                                                     for i in range(16)]}
    work = Manifest.build(doc, mask_classes=(0, 3), median_memory_mb=3008).work()
    assert [w["band"] for w in work][0] == "visual" and len(work) == 13  # longest first
    per_tile = tile_transitions(work)
    # 21,000 tiles at $0.025 per 1000 transitions: well under $100 for the world
    assert per_tile * 21_000 * 0.025 / 1000 < 100


def test_observation_stats_from_a_count_histogram():
    # 10 pixels never observed clear, 2 with 1 obs, 5 with 3, 3 with 4
    stats = publish.observation_stats([10, 2, 0, 5, 3])
    assert stats["min"] == 1 and stats["max"] == 4
    assert stats["mean"] == pytest.approx((2 * 1 + 5 * 3 + 3 * 4) / 10)
    assert stats["percentiles"] == {"p10": 1, "p50": 3, "p90": 4}
    assert publish.observation_stats([7]) == {"min": 0, "mean": 0.0, "max": 0,
                                              "percentiles": {}}


def test_item_stats_uses_the_observed_footprint():
    s = publish.item_stats({"pixels": 100, "valid_pixels": 45, "observed_pixels": 50,
                            "count_histogram": [55, 20, 25],
                            "contributions": {"a": 45, "b": 25}})
    assert s["good_pixels"] == 45 and s["footprint_pixels"] == 50
    assert s["contributions"] == {"a": 1.0, "b": round(25 / 45, 6)}


@pytest.mark.parametrize("value,msg", [
    (None, "execution input must be a JSON object"), ([2023], "got a list"),
    ("2023", "got a string"), ({"year": 2023, "tiles": ["33UUP"], "tile": "x"},
                               "unknown execution input field(s) ['tile']"),
    ({"tiles": ["33UUP"]}, "year is required"),
    ({"year": 2023.5, "tiles": ["33UUP"]}, "year must be an integer"),
    ({"year": True, "tiles": ["33UUP"]}, "year must be an integer, got a boolean"),
    ({"year": 2023, "tiles": "33UUP"}, "tiles must be a list of MGRS tile ids"),
    ({"year": 2023, "tiles": [33]}, "tiles[0] must be an MGRS tile id string"),
    ({"year": 2023, "tiles": ["33UUP"], "options": "fast"}, "options must be a JSON object"),
    ({"year": 2023, "tiles": ["33UUP"], "options": [1]}, "options must be a JSON object"),
    ({"year": 2023, "tiles": ["33UUP"], "options": {"force": "no"}}, "force must be true"),
    ({"year": 2023, "tiles": ["33UUP"], "options": {"scenes": 2.5}}, "scenes must be an int"),
    ({"year": 2023, "aoi": [0, 89, 1, 95]}, "latitudes must be within -90..90"),
    ({"year": 2023, "aoi": [13, 48, 12, 47]}, "min < max"),
])
def test_check_request_names_what_is_wrong(value, msg):
    with pytest.raises(InputError, match=re.escape(msg)):
        tasks.check_request(value)


def test_check_request_normalizes_a_good_input():
    got = tasks.check_request({"year": "2023", "tiles": ["t33uup", "33UUP"], "reason": "x"})
    assert (got["year"], got["tiles"], got["aoi"]) == (2023, ["33UUP"], None)
    assert got["options"]["force"] is False


def test_tile_limit_is_25000_distinct_tiles():
    from tests.integration.test_bad_input import tile_ids

    assert len(tasks.resolve_tiles(tile_ids(25_000))) == 25_000
    assert len(tasks.resolve_tiles(tile_ids(25_000) * 2)) == 25_000  # duplicates count once
    with pytest.raises(InputError, match="25001 tiles exceed the limit of 25000"):
        tasks.resolve_tiles(tile_ids(25_001))


def test_parse_request_refuses_empty_and_huge_bodies():
    with pytest.raises(InputError, match="request is empty"):
        tasks.parse_request(b" \n")
    huge = json.dumps({"year": 2023, "tiles": ["33UUP"], "reason": "x" * 600_000}).encode()
    with pytest.raises(InputError, match="exceeds 524288 bytes"):
        tasks.parse_request(huge)


@pytest.mark.parametrize("name", ["../../x", "a b", "x/y", "", "a" * 81])
def test_execution_names_that_would_shape_s3_keys_are_refused(name):
    with pytest.raises(InputError, match="execution name"):
        tasks.check_execution_name(name)
    assert tasks.check_execution_name("y2023-20261201T000000_1") == "y2023-20261201T000000_1"


def test_plan_answers_bad_input_without_raising_or_writing():
    # the buckets do not exist: a write would fail, so a rejection writes nothing
    s = Settings("no-such-work", "no-such-data", "no-such-control")
    got = tasks.plan({"input": {"year": 2014, "tiles": ["33UUP"]}, "execution": "x"}, s)
    assert (got["status"], got["error"], got["count"]) == ("rejected", "InputError", 0)
    assert "year 2014 is outside" in got["cause"]
    got = tasks.plan({"input": {"year": 2023, "tiles": ["33UUP"]}, "execution": "../../x"}, s)
    assert got["status"] == "rejected" and "execution name" in got["cause"]


def test_median_and_cost_take_the_plan_from_the_manifest_not_the_settings(monkeypatch):
    """Select fixed the plan at 3008 MB; a median deployed with another memory setting still
    computes exactly the manifest's windows (no recomputation from MedianMemoryMB)."""
    from cloudfree import composite, storage
    from cloudfree.manifest import Manifest

    doc = {"tile": "33UUP", "year": 2023, "scenes": [{"id": f"s{i}", "assets": {}}
                                                     for i in range(16)]}
    manifest = Manifest.build(doc, mask_classes=(0, 3), median_memory_mb=3008)
    monkeypatch.setattr(Manifest, "read", classmethod(lambda cls, uri: manifest))
    seen = {"windows": []}

    def fake(m, band, windows, layout, year, tile, **kw):  # called once per batch
        seen.update(band=band, masks=kw["mask_classes"])
        seen["windows"] += list(windows)
        return [{"skipped": False, "excluded": ["s3"]} for _ in windows]

    monkeypatch.setattr(composite, "composite_band_windows", fake)
    s = Settings("w", "d", "c", median_memory_mb=10240)
    out = tasks.median("33UUP", 2023, "blue", 1, None, s)
    assert seen["windows"] == manifest.band_plan("blue").batch(1) and seen["masks"] == (0, 3)
    assert out["windows"] == len(seen["windows"]) and out["excluded"] == ["s3"]
    monkeypatch.setattr(storage, "read_json", lambda uri: {"median_seconds": 1.0,
                                                           "seconds": 2.0})
    monkeypatch.setattr(storage, "list_uris", lambda prefix: iter(
        [f"{prefix}/000.json", f"{prefix}/001.json"] if prefix.endswith("/decide") else []))
    cost = tasks.tile_cost("33UUP", 2023, s)
    # outlier rejection on (the default): 4 decide batches, whose seconds count as median time
    assert cost["state_transitions"] == tile_transitions(manifest.work(), 4)
    assert cost["median_seconds"] == 13 * 1.0 + 2 * 2.0
    # what cloudfree plan projects for a whole tile of its 16 scenes at the deployed memory
    from cloudfree.costs import tile_cost

    assert cost["scenes"] == 16 and cost["observed_share"] == 1.0  # no pixel counts: whole
    assert cost["planned_lambda_gb_seconds"] == round(tile_cost("", 16, 10240).gb_s, 1) > 0
    # a tile observed over a quarter of its pixels: a quarter of the whole tile's plan
    monkeypatch.setattr(storage, "read_json", lambda uri: {
        "median_seconds": 1.0, "seconds": 2.0, "pixels": 4000, "observed_pixels": 1000})
    cost = tasks.tile_cost("33UUP", 2023, s)
    assert cost["observed_share"] == 0.25
    assert cost["planned_lambda_gb_seconds"] == round(0.25 * tile_cost("", 16, 10240).gb_s, 1)
    # a plan that cannot be made (here: no calibration) leaves the figure out, not the tile
    from cloudfree import costs

    monkeypatch.setattr(costs, "calibration", lambda: {})
    cost = tasks.tile_cost("33UUP", 2023, s)
    assert "planned_lambda_gb_seconds" not in cost and cost["scenes"] == 16
