"""The task chain on the local stack without Step Functions: synth → plan → select → median →
assemble → complete → publish → report, then a rerun that must leave every byte as it was.

This is the pipeline's data flow exactly as the Lambdas run it (same task functions, real S3 on
MiniStack, real STAC API), scored against the synthetic truth.
"""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pytest
import rasterio
from rasterio.warp import Resampling, reproject

from cloudfree import storage, tasks
from cloudfree.bands import OUTPUT_BANDS, REFLECTANCE_BANDS
from cloudfree.settings import Settings

from .conftest import SMALL

TILE, YEAR, N = SMALL["tile"], SMALL["year"], 6


@pytest.fixture(scope="module")
def archive(small_archive):
    return small_archive


def fresh_settings(local_env, n: int = N) -> Settings:
    """Settings over three new, empty buckets (a tile's whole chain runs in them)."""
    suffix = uuid.uuid4().hex[:8]
    s = Settings(f"cf-work-{suffix}", f"cf-data-{suffix}", f"cf-control-{suffix}",
                 stac_api_url=local_env["STAC_API_URL"], scene_count=n, median_memory_mb=1024)
    for b in (s.work_bucket, s.data_bucket, s.control_bucket):
        storage.s3_client().create_bucket(Bucket=b)
    return s


@pytest.fixture(scope="module")
def settings(computed_tile):
    return computed_tile["settings"]


def _run_tile(settings: Settings, execution: str) -> dict:
    plan = tasks.plan({"input": {"year": YEAR, "tiles": [TILE]}, "execution": execution},
                      settings)
    sel = tasks.select(TILE, YEAR, plan["options"], settings)
    if sel["status"] == "ready":
        for work in sel["work"]:
            for batch in work["batches"]:
                tasks.median(TILE, YEAR, work["band"], batch, plan["options"], settings)
            tasks.assemble(TILE, YEAR, work["band"], plan["options"], settings)
        tasks.complete(TILE, YEAR, execution, settings)
        key = storage.split_s3(settings.layout.tile_done(YEAR, TILE))[1]
        tasks.publish(settings.work_bucket, key, settings)  # what the S3 event does
    rep = tasks.report(execution, YEAR, plan["tiles_bucket"], plan["tiles_key"], settings)
    return {"plan": plan, "select": sel, "report": rep}


def _checksums(settings: Settings) -> dict[str, str]:
    prefix = settings.layout.output_prefix(YEAR, TILE) + "/"
    return {u: hashlib.sha256(storage.read_bytes(u)).hexdigest()
            for u in storage.list_uris(prefix)}


def asset_hrefs(settings: Settings, tile: str = TILE, year: int = YEAR) -> dict[str, str]:
    """The published COGs: where the item points (versioned keys)."""
    item = storage.read_json(settings.layout.item(year, tile))
    return {k: a["href"] for k, a in item["assets"].items()}


@pytest.fixture(scope="module")
def first_run(archive, computed_tile):
    """The chain's first run (shared with test_publish_redo, which works on copies)."""
    return computed_tile["run"]


def test_select_collapses_duplicates_and_decides_offsets(first_run, archive, settings):
    sel = first_run["select"]
    assert sel["status"] == "ready" and sel["scenes"] == N
    manifest = storage.read_json(sel["manifest"])
    truth = {r["id"]: r for r in archive["items"]}
    ids = [s["id"] for s in manifest["scenes"]]
    assert len({truth[i]["acquisition"] for i in ids}) == N  # one publication per acquisition
    assert all(truth[i]["superseded_by"] is None for i in ids)
    for scene in manifest["scenes"]:  # the flag may lie; the decision must not
        expected = 1000 if truth[scene["id"]]["offset_in_pixels"] else 0
        assert scene["harmonization"]["offset"] == expected, scene


def test_every_asset_is_a_valid_web_cog(first_run, settings):
    from rio_cogeo.cogeo import cog_validate

    hrefs = asset_hrefs(settings)
    with rasterio.Env(**storage.gdal_env_options()):
        for band in (*OUTPUT_BANDS, "count"):
            uri = hrefs[band]
            ok, errors, _ = cog_validate(uri, quiet=True)
            assert ok, (band, errors)
            with rasterio.open(uri) as src:
                assert src.crs.to_epsg() == 3857
                assert src.nodata == 0
                assert src.dtypes[0] == ("uint16" if band in {b.key for b in REFLECTANCE_BANDS}
                                         else "uint8")


def test_item_validates_and_names_contributing_scenes(first_run, settings):
    from cloudfree.stac import validate_item

    item = storage.read_json(settings.layout.item(YEAR, TILE))
    validate_item(item)
    props = item["properties"]
    assert item["id"] == f"{TILE}_{YEAR}"
    assert set(item["assets"]) == {*OUTPUT_BANDS, "count"}
    assert 0.9 <= props["cloudfree:good_pixel_fraction"] <= 1.0
    scenes = props["cloudfree:scenes"]
    assert len(scenes) == N
    assert sum(1 for lnk in item["links"] if lnk["rel"] == "derived_from") == N
    collection = storage.read_json(settings.layout.collection())
    assert any(lnk["rel"] == "item" and lnk["title"] == item["id"]
               for lnk in collection["links"])


def test_composite_matches_truth(first_run, archive, settings):
    """Median of clear observations vs the noise-free truth: within a few noise sigmas."""
    for band in REFLECTANCE_BANDS:
        with rasterio.Env(**storage.gdal_env_options()), \
                rasterio.open(archive["truth"]["hrefs"][band.key]) as t:
            truth = t.read(1)
            got = np.zeros_like(truth)
            with rasterio.open(asset_hrefs(settings)[band.key]) as src:
                reproject(rasterio.band(src, 1), got, dst_transform=t.transform, dst_crs=t.crs,
                          dst_nodata=0, resampling=Resampling.nearest)
        both = (truth > 0) & (got > 0)
        assert both.sum() > 0.8 * (truth > 0).sum(), band.key
        err = np.abs(got[both].astype(float) - truth[both])
        sigma = archive["truth"]["noise_sigma_dn"][band.key]
        seasonal = archive["truth"]["seasonal_amplitude_dn"][band.key]
        # reprojection (nearest, 10 m grid → EPSG:3857 → back) shifts pixels by up to one cell on
        # a smooth surface: allow noise + seasonal spread + that, not cloud-sized errors
        assert np.median(err) < 2 * sigma + seasonal / 2 + 40, (band.key, np.median(err))


def test_report_counts_the_tile_done(first_run):
    assert first_run["report"]["done"] == 1
    assert first_run["report"]["failed"] == 0
    rep = storage.read_json(first_run["report"]["report"])
    assert rep["tiles"][0]["status"] == "done"


def test_rerun_changes_no_byte(first_run, settings):
    before = _checksums(settings)
    assert len(before) == len(OUTPUT_BANDS) + 2  # 13 COGs + count + item
    again = _run_tile(settings, "chain-2")
    assert again["select"]["status"] == "complete"
    assert _checksums(settings) == before
