"""A year's tile status from listings: the classification rules, keys and versions (no S3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudfree import publish
from cloudfree.layout import Layout
from cloudfree.status import classify
from cloudfree.storage import ObjectInfo

LAYOUT = Layout("w", "d", "c")
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def obj(kind: str, seconds: int) -> ObjectInfo:
    return ObjectInfo(f"s3://w/{kind}", 10, T0 + timedelta(seconds=seconds), '"e"')


def test_done_is_published_only_when_the_index_record_is_as_new_as_the_marker():
    row = classify("33UUP", {"DONE": obj("DONE", 0)}, obj("idx", 5), LAYOUT, 2023)
    assert (row["status"], row["published"]) == ("done", True)
    row = classify("33UUP", {"DONE": obj("DONE", 0)}, obj("idx", 0), LAYOUT, 2023)
    assert row["published"] is True  # same second: publish runs after the marker
    # a forced rerun rewrote the marker after the item: republish
    row = classify("33UUP", {"DONE": obj("DONE", 60)}, obj("idx", 5), LAYOUT, 2023)
    assert (row["status"], row["published"]) == ("done", False)
    row = classify("33UUP", {"DONE": obj("DONE", 0)}, None, LAYOUT, 2023)
    assert (row["status"], row["published"]) == ("done", False)
    assert row["item"] == LAYOUT.item(2023, "33UUP")


def test_the_newest_marker_wins():
    rerun_failed = {"DONE": obj("DONE", 0), "FAILED": obj("FAILED", 30)}
    row = classify("33UUP", rerun_failed, obj("idx", 5), LAYOUT, 2023)
    assert row["status"] == "failed" and row["published"] is True  # old item still public
    recovered = {"DONE": obj("DONE", 30), "FAILED": obj("FAILED", 0)}
    assert classify("33UUP", recovered, obj("idx", 31), LAYOUT, 2023)["status"] == "done"
    tie = {"EMPTY": obj("EMPTY", 0), "FAILED": obj("FAILED", 0)}
    assert classify("33UUP", tie, None, LAYOUT, 2023)["status"] == "empty"


def test_no_marker_index_only_is_done_nothing_at_all_is_incomplete():
    assert classify("33UUP", {}, obj("idx", 0), LAYOUT, 2023)["status"] == "done"
    row = classify("33UUP", {}, None, LAYOUT, 2023)
    assert (row["status"], row["error"]) == ("failed", "Incomplete")


def test_marker_keys_share_one_prefix_per_year_and_match_the_publish_trigger():
    done = LAYOUT.tile_done(2023, "33UUP")
    assert done == "s3://w/work/2023/_markers/33UUP/DONE.json"
    assert done.startswith(LAYOUT.markers_prefix(2023))
    key = done.split("/", 3)[3]
    assert key.startswith("work/") and key.endswith("DONE.json")  # template's S3 filter
    assert LAYOUT.tile_failed(2023, "33UUP").endswith("/_markers/33UUP/FAILED.json")
    assert LAYOUT.index_part(2023, "33UUP").startswith(LAYOUT.index_prefix(2023))


def test_public_cogs_are_versioned_and_staged_cogs_are_not_public():
    assert LAYOUT.staged_cog(2023, "33UUP", "red").startswith("s3://w/work/2023/33UUP/")
    cog = LAYOUT.band_cog(2023, "33UUP", "red", "v0123")
    assert cog == "s3://d/sentinel-2-annual-median/2023/33UUP/v0123/33UUP_2023_red.tif"
    assert cog.startswith(LAYOUT.version_prefix(2023, "33UUP", "v0123"))


def test_asset_version_is_a_content_hash_of_every_asset():
    cogs = {k: {"sha256": f"{i:064x}", "size": 1} for i, k in enumerate(publish.ASSETS)}
    v = publish.asset_version(cogs)
    assert v.startswith("v") and len(v) == 17
    assert publish.asset_version(dict(reversed(list(cogs.items())))) == v  # order-free
    changed = {**cogs, "red": {"sha256": "f" * 64, "size": 1}}
    assert publish.asset_version(changed) != v


def test_asset_cogs_take_count_from_the_red_band_and_refuse_missing_checksums():
    import pytest

    from cloudfree.errors import IncompleteError

    stats = {b: {"cog": {"sha256": "a" * 64, "size": 5}} for b in publish.OUTPUT_BANDS}
    stats["red"]["cog"]["related"] = {"count": {"sha256": "b" * 64, "size": 3}}
    cogs = publish.asset_cogs(stats)
    assert set(cogs) == set(publish.ASSETS) and cogs["count"]["size"] == 3
    del stats["red"]["cog"]["related"]
    with pytest.raises(IncompleteError, match="count"):
        publish.asset_cogs(stats)


def test_collection_extent_from_the_grid_in_one_call_per_zone():
    bbox = publish.tiles_bbox({"33UUP", "33UVP", "32TMT"})
    # 33UUP is west of 15E around 48N; 32TMT is in Switzerland (~8E, 46-47N)
    assert 6 < bbox[0] < 8.5 and 45 < bbox[1] < 47 and 14 < bbox[2] < 16 and 48 < bbox[3] < 50


def test_catalog_rebuild_is_a_cli_sub_command():
    from cloudfree.cli import build_parser
    from cloudfree.pipeline import cli

    args = build_parser().parse_args(["catalog", "rebuild", "--stack", "demo"])
    assert args.func is cli._catalog_rebuild and args.stack == "demo"


def test_asset_uri_maps_public_hrefs_back_to_the_bucket():
    import pytest

    from cloudfree.errors import InputError
    from cloudfree.pipeline.run import asset_uri

    assert asset_uri("s3://d/k/a.tif", "d") == "s3://d/k/a.tif"
    href = "https://d.s3.us-west-2.amazonaws.com/sentinel-2-annual-median/2023/x.tif"
    assert asset_uri(href, "d") == "s3://d/sentinel-2-annual-median/2023/x.tif"
    with pytest.raises(InputError):
        asset_uri("https://elsewhere.example/x.tif", "d")


def test_collection_extent_keeps_a_tile_across_the_antimeridian():
    """01VCK crosses 180 deg (tests/unit/test_antimeridian.py): the union is then the whole
    longitude range (grid.union_bbox), never a min/max that drops it."""
    west, south, east, north = publish.tiles_bbox({"01VCK", "33UUP"})
    assert (west, east) == (-180.0, 180.0) and 47 < south < 63 < north < 64


def test_cost_summary_sets_the_measured_gb_s_against_the_plan():
    """Means of the sampled done tiles; the plan's projection and measured / planned only over
    the markers that carry it (older markers do not)."""
    from cloudfree.status import cost_summary

    costs = [{"lambda_gb_seconds": 1200.0, "state_transitions": 62,
              "planned_lambda_gb_seconds": 800.0},
             {"lambda_gb_seconds": 900.0, "state_transitions": 62,
              "planned_lambda_gb_seconds": 700.0},
             {"lambda_gb_seconds": 10.0, "state_transitions": 48}]
    assert cost_summary(costs) == {"lambda_gb_seconds": 703.33, "state_transitions": 57.33,
                                   "planned_lambda_gb_seconds": 750.0,
                                   "measured_over_planned": 1.4}
    assert cost_summary(costs[2:]) == {"lambda_gb_seconds": 10.0, "state_transitions": 48.0}
    assert cost_summary([]) == {}
