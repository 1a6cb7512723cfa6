"""A bad asset costs a scene-band, not the tile — through the deployed stack on MiniStack.

A small synthetic archive of its own (the shared tile, another year) is damaged the ways the real
archive is: one picked item has no SCL asset (it cannot be masked: replaced by the next best),
one scene's B06 object is deleted (404), one scene's B08 COG is truncated, and one scene's B11
has a garbled data block behind an intact header (found only when the median reads it). The
execution succeeds; the item records each skipped scene-band with its reason; the outputs
exclude exactly those scene-bands and nothing else.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from cloudfree import storage
from cloudfree.pipeline import run
from cloudfree.select import SelectOptions, search_items, select_scenes

from .conftest import SMALL

TILE, YEAR, N = SMALL["tile"], 2022, 6


@pytest.fixture(scope="module")
def deployed(deployed_stack) -> run.Deployed:
    return run.find_stack(deployed_stack.stack_name)


def _bucket_key(href: str) -> tuple[str, str]:
    """``http://127.0.0.1:port/bucket/key`` (the local archive's hrefs) -> (bucket, key)."""
    path = href.split("://", 1)[1].split("/", 1)[1]
    bucket, key = path.split("/", 1)
    return bucket, key


def _garble_a_data_block(href: str) -> None:
    """Overwrite the middle of the first non-empty full-resolution block (header intact)."""
    import rasterio

    with rasterio.Env(**storage.gdal_env_options()), rasterio.open(href) as src:
        bw, bh = src.block_shapes[0]
        blocks = [(x, y) for y in range(-(-src.height // bh)) for x in range(-(-src.width // bw))]
        for x, y in blocks:
            off = src.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1)
            size = src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1)
            if off and size and int(size) > 64:
                off, size = int(off), int(size)
                break
    bucket, key = _bucket_key(href)
    body = bytearray(storage.read_bytes(f"s3://{bucket}/{key}"))
    body[off + 16: off + size - 16] = b"\xff" * (size - 32)
    storage.write_bytes(f"s3://{bucket}/{key}", bytes(body))


def _drop_asset(api_url: str, item_id: str, key: str) -> None:
    from cloudfree.local.stacapi import load_items

    base = api_url.rstrip("/")
    with urllib.request.urlopen(f"{base}/collections/sentinel-2-l2a/items/{item_id}") as r:
        item = json.load(r)
    with urllib.request.urlopen(f"{base}/collections/sentinel-2-l2a") as r:
        collection = json.load(r)
    del item["assets"][key]
    load_items(api_url, {**collection, "links": []}, [{**item, "links": []}])


@pytest.fixture(scope="module")
def damaged(local_env) -> dict:
    from cloudfree.synth.archive import generate_archive

    api = local_env["STAC_API_URL"]
    generate_archive([TILE], YEAR, N + 3, aoi=SMALL["aoi"], api_url=api)
    items = search_items(api, TILE, YEAR)
    picks = select_scenes(items, TILE, YEAR, SelectOptions(n=N)).scenes
    no_scl, gone, cut, garbled = (p.id for p in picks[:4])
    _drop_asset(api, no_scl, "scl")
    bucket, key = _bucket_key(picks[1].assets["rededge2"])
    storage.s3_client().delete_object(Bucket=bucket, Key=key)
    bucket, key = _bucket_key(picks[2].assets["nir"])
    body = storage.read_bytes(f"s3://{bucket}/{key}")
    storage.write_bytes(f"s3://{bucket}/{key}", body[: len(body) - 1500])
    _garble_a_data_block(picks[3].assets["swir16"])
    return {"no_scl": no_scl, "gone": gone, "cut": cut, "garbled": garbled,
            "picked": [p.id for p in picks]}


@pytest.fixture(scope="module")
def finished(deployed, damaged) -> dict:
    payload = run.execution_input(YEAR, [TILE], None, {"scenes": N, "force": True})
    arn = run.start(deployed, payload, name=f"bad-assets-{int(time.time())}")
    desc = run.follow(deployed, arn, YEAR, [TILE], timeout=1200)
    pending = run.wait_published(deployed, YEAR, [TILE], timeout=300)
    layout = deployed.settings.layout
    return {"desc": desc, "pending": pending,
            "item": storage.read_json(layout.item(YEAR, TILE)) if not pending else None,
            "manifest": storage.read_json(layout.manifest(YEAR, TILE))}


def test_execution_succeeds_and_publishes(finished):
    assert finished["desc"]["status"] == "SUCCEEDED", finished["desc"]
    assert finished["pending"] == []


def test_the_item_records_each_skipped_scene_band_with_its_reason(finished, damaged):
    from cloudfree.stac import validate_item

    item = finished["item"]
    validate_item(item)
    props = item["properties"]
    scenes = {s["id"]: s for s in props["cloudfree:scenes"]}
    # the item without SCL was replaced by the next-best candidate: still N scenes
    assert len(scenes) == N and damaged["no_scl"] not in scenes
    assert {damaged["gone"], damaged["cut"], damaged["garbled"]} <= set(scenes)
    assert len(set(scenes) - set(damaged["picked"])) == 1  # the replacement
    assert props["cloudfree:excluded_scenes"] == [{"id": damaged["no_scl"],
                                                   "reason": "scl: no asset"}]
    skipped = {sid: s["skipped"] for sid, s in scenes.items() if s["skipped"]}
    assert set(skipped) == {damaged["gone"], damaged["cut"], damaged["garbled"]}
    assert skipped[damaged["gone"]] == [{"band": "rededge2", "reason": "404",
                                         "stage": "select"}]
    [cut] = skipped[damaged["cut"]]
    assert (cut["band"], cut["stage"]) == ("nir", "select")
    assert cut["reason"].startswith("corrupt: truncated (")
    [garbled] = skipped[damaged["garbled"]]
    assert (garbled["band"], garbled["stage"]) == ("swir16", "median")
    assert garbled["reason"].startswith("swir16: read failed: reading r")


def test_outputs_exclude_exactly_those_scene_bands(finished, damaged, deployed):
    from cloudfree.bands import OUTPUT_BANDS

    layout = deployed.settings.layout
    left_out = {("rededge2", damaged["gone"]), ("nir", damaged["cut"]),
                ("swir16", damaged["garbled"])}
    scene_ids = {s["id"] for s in finished["manifest"]["scenes"]}
    for band in OUTPUT_BANDS:
        stats = storage.read_json(layout.band_stats(YEAR, TILE, band))
        used = set(stats["contributions"])
        assert used == scene_ids - {sid for b, sid in left_out if b == band}, band
        for w in storage.list_uris(layout.windows_prefix(YEAR, TILE, band)):
            if w.endswith(".json"):  # every window of the band used the same final scene set
                assert set(storage.read_json(w)["scenes"]) == used, w
    # the damaged scenes still count for every other band
    blue = storage.read_json(layout.band_stats(YEAR, TILE, "blue"))["contributions"]
    assert all(blue[sid] > 0 for _, sid in left_out)
