"""Publishing that can be redone, on the local S3 with the real task functions (no Step
Functions; the S3 event that runs publish is called by hand, as in test_tasks_chain). Each test
starts from a copy of the session's computed tile (``computed_tile``: test_tasks_chain's first
run) in fresh buckets; only the forced rerun computes the tile again:

- a forced rerun republishes: new marker (execution id), new item provenance, new version of
  the assets whose checksums match the files; the previous version stays readable;
- a failed publish (fault injected after the copies, before the item) is found by the report
  and republished;
- a tile whose band fails publishes nothing public;
- 50 concurrent publishes (threads, duplicates included) lose no item, index record or link.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cloudfree import faults, publish, storage, tasks
from cloudfree.bands import OUTPUT_BANDS
from cloudfree.errors import CloudfreeError, TransientError
from cloudfree.settings import Settings

from .conftest import SMALL, clone_tile
from .test_tasks_chain import fresh_settings

TILE, YEAR = SMALL["tile"], SMALL["year"]


_settings = fresh_settings


@pytest.fixture(scope="module")
def settings(local_env, computed_tile):
    """The computed tile's work state copied to fresh buckets, then published (its marker's S3
    event, called by hand)."""
    s = _settings(local_env)
    clone_tile(computed_tile["settings"], s, TILE, YEAR)
    _publish_event(s)
    return s


def _item(s: Settings, tile: str = TILE) -> dict:
    return storage.read_json(s.layout.item(YEAR, tile))


def _sha(uri: str) -> str:
    return hashlib.sha256(storage.read_bytes(uri)).hexdigest()


def _assert_consistent(item: dict) -> str:
    """Every asset exists, is in one version folder, and its bytes match its checksum."""
    version = item["properties"]["cloudfree:run"]["version"]
    assert set(item["assets"]) == {*OUTPUT_BANDS, "count"}
    for key, asset in item["assets"].items():
        assert f"/{version}/" in asset["href"], key
        assert "1220" + _sha(asset["href"]) == asset["file:checksum"], key
    return version


def _publish_event(s: Settings, tile: str = TILE) -> dict:
    key = storage.split_s3(s.layout.tile_done(YEAR, tile))[1]
    return tasks.publish(s.work_bucket, key, s)


def test_first_publish_is_consistent_and_nothing_public_but_the_version_and_item(
        settings, computed_tile):
    item = _item(settings)
    version = _assert_consistent(item)
    assert item["properties"]["cloudfree:run"]["execution"] == computed_tile["execution"]
    public = sorted(storage.list_uris(settings.layout.output_prefix(YEAR, TILE) + "/"))
    assert len(public) == len(OUTPUT_BANDS) + 2
    assert all(f"/{version}/" in u for u in public if u.endswith(".tif"))
    # the COGs in the template's default PublicStorageClass, the small item JSON in STANDARD
    assert settings.public_storage_class == "INTELLIGENT_TIERING"
    classes = {o.uri.rsplit(".", 1)[1]: set() for o in
               storage.list_objects(settings.layout.output_prefix(YEAR, TILE) + "/")}
    for o in storage.list_objects(settings.layout.output_prefix(YEAR, TILE) + "/"):
        classes[o.uri.rsplit(".", 1)[1]].add(o.storage_class)
    assert classes == {"tif": {"INTELLIGENT_TIERING"}, "json": {"STANDARD"}}, classes


def test_forced_rerun_republishes_with_new_provenance_and_checksums(settings, small_archive):
    before = _item(settings)
    s5 = dataclasses.replace(settings, scene_count=5)
    plan = tasks.plan({"input": {"year": YEAR, "tiles": [TILE],
                                 "options": {"force": True, "scenes": 5}},
                       "execution": "redo-2"}, s5)
    sel = tasks.select(TILE, YEAR, plan["options"], s5)
    assert sel["status"] == "ready" and sel["scenes"] == 5
    for work in sel["work"]:
        for batch in work["batches"]:
            tasks.median(TILE, YEAR, work["band"], batch, plan["options"], s5)
        tasks.assemble(TILE, YEAR, work["band"], plan["options"], s5)
    tasks.complete(TILE, YEAR, "redo-2", s5)
    assert storage.read_json(s5.layout.tile_done(YEAR, TILE))["execution"] == "redo-2"
    out = _publish_event(s5)
    after = _item(s5)
    assert out["item_write"] == "written"
    assert after["properties"]["cloudfree:run"]["execution"] == "redo-2"
    assert len(after["properties"]["cloudfree:scenes"]) == 5
    new_version = _assert_consistent(after)
    old_version = before["properties"]["cloudfree:run"]["version"]
    assert new_version != old_version
    changed = [k for k in after["assets"] if after["assets"][k]["file:checksum"]
               != before["assets"][k]["file:checksum"]]
    assert len(changed) >= len(OUTPUT_BANDS) - 1, changed
    _assert_consistent(before)  # a reader holding the previous item still gets its files


def test_failed_publish_is_found_by_the_report_and_republished(settings, monkeypatch):
    # a new completion marker (as a rerun writes), then a publish that dies half-way through
    # copying the assets, before the item (S3's async retries exhausted)
    published = _item(settings)["properties"]["cloudfree:run"]["execution"]
    time.sleep(1.1)  # LastModified has 1 s resolution
    tasks.complete(TILE, YEAR, "redo-3", settings)
    monkeypatch.setenv("FAULT_RATE", "1")
    seed = next(f"s{i}" for i in range(1000) if faults.Attempt(
        "publish", f"{TILE}/{YEAR}", 1.0, f"s{i}").point == "during")
    monkeypatch.setenv("FAULT_SEED", seed)
    with pytest.raises(TransientError, match="injected fault"):
        _publish_event(settings)
    monkeypatch.delenv("FAULT_RATE")
    assert _item(settings)["properties"]["cloudfree:run"]["execution"] == published  # old, whole
    _assert_consistent(_item(settings))
    plan = tasks.plan({"input": {"year": YEAR, "tiles": [TILE]}, "execution": "redo-3r"},
                      settings)
    marker_before = storage.head(settings.layout.tile_done(YEAR, TILE))
    rep = tasks.report("redo-3r", YEAR, plan["tiles_bucket"], plan["tiles_key"], settings,
                       settle_seconds=0)
    assert rep["done"] == 1 and rep["republished"] == 1
    marker = storage.read_json(settings.layout.tile_done(YEAR, TILE))
    assert marker["republish"]["by"] == "redo-3r" and marker["execution"] == "redo-3"
    assert storage.head(settings.layout.tile_done(YEAR, TILE)).etag != marker_before.etag
    _publish_event(settings)  # what the rewritten marker's S3 event does
    assert _item(settings)["properties"]["cloudfree:run"]["execution"] == "redo-3"
    rep = tasks.report("redo-3s", YEAR, plan["tiles_bucket"], plan["tiles_key"], settings,
                       settle_seconds=0)
    assert rep["done"] == 1 and rep["republished"] == 0
    doc = storage.read_json(rep["report"])
    assert doc["tiles"][0]["published"] is True
    _assert_consistent(_item(settings))


def test_a_tile_whose_band_fails_publishes_nothing(local_env, computed_tile, monkeypatch):
    """Every band but nir assembled and staged (a copy of the computed tile's work, no marker),
    then nir's assemble fails for good after writing its staged COG (an injected fault at
    "during": the retries exhausted). A lost window would not do: assemble recomputes missing
    windows first (``composite.reconcile_band``)."""
    s = _settings(local_env)
    clone_tile(computed_tile["settings"], s, TILE, YEAR, marker=False)
    layout = s.layout
    storage.remove(layout.band_stats(YEAR, TILE, "nir"))  # nir not assembled yet
    plan = tasks.plan({"input": {"year": YEAR, "tiles": [TILE]}, "execution": "broken"}, s)
    monkeypatch.setenv("FAULT_RATE", "1")
    monkeypatch.setenv("FAULT_SEED", next(f"s{i}" for i in range(1000) if faults.Attempt(
        "assemble", f"{TILE}/{YEAR}/nir", 1.0, f"s{i}").point == "during"))
    staged_before = storage.head(layout.staged_cog(YEAR, TILE, "nir"))
    time.sleep(1.1)  # LastModified has 1 s resolution
    with pytest.raises(TransientError, match="injected fault") as err:
        tasks.assemble(TILE, YEAR, "nir", plan["options"], s)
    monkeypatch.delenv("FAULT_RATE")
    staged = storage.head(layout.staged_cog(YEAR, TILE, "nir"))
    assert staged.last_modified > staged_before.last_modified  # its COG was rewritten, ...
    assert not storage.exists(layout.band_stats(YEAR, TILE, "nir"))  # ... its stats were not
    assert all(storage.exists(layout.staged_cog(YEAR, TILE, b)) for b in OUTPUT_BANDS)
    # the state machine's Bands map fails and the tile's Catch goes to RecordFailure
    tasks.record_failure(TILE, YEAR, {"Error": type(err.value).__name__,
                                      "Cause": str(err.value)}, s)
    assert list(storage.list_uris(f"s3://{s.data_bucket}/")) == []  # nothing public at all
    rep = tasks.report("broken", YEAR, plan["tiles_bucket"], plan["tiles_key"], s,
                       settle_seconds=0)
    assert (rep["done"], rep["failed"]) == (0, 1)
    with pytest.raises(CloudfreeError):  # and a stray publish event cannot publish it
        storage.write_json(s.layout.tile_done(YEAR, TILE), {"completed_at": "x"})
        _publish_event(s)
    assert [u for u in storage.list_uris(f"s3://{s.data_bucket}/")
            if not u.endswith("collection.json")] == []


def test_50_concurrent_publishes_lose_nothing(settings):
    """40 tiles (the staged outputs of one, copied under 40 tile ids), 50 publishes at once
    (10 duplicated events), 5 collection rebuilds racing them: every item, index record and
    collection link is there."""
    layout = settings.layout
    from .test_report_scale import world_tiles

    tiles = [t for t in world_tiles(41) if t != TILE][:40]
    src = {"manifest": layout.manifest(YEAR, TILE), "done": layout.tile_done(YEAR, TILE),
           **{f"b-{b}": layout.band_stats(YEAR, TILE, b) for b in OUTPUT_BANDS},
           **{f"c-{k}": layout.staged_cog(YEAR, TILE, k) for k in publish.ASSETS}}

    def stage(tile: str) -> None:
        dst = {"manifest": layout.manifest(YEAR, tile), "done": layout.tile_done(YEAR, tile),
               **{f"b-{b}": layout.band_stats(YEAR, tile, b) for b in OUTPUT_BANDS},
               **{f"c-{k}": layout.staged_cog(YEAR, tile, k) for k in publish.ASSETS}}
        for k, uri in src.items():
            if k.startswith("b-"):  # band stats record the staged object's ETag
                continue
            storage.copy(uri, dst[k])
        for b in OUTPUT_BANDS:
            stats = storage.read_json(src[f"b-{b}"])
            stats["cog"]["etag"] = storage.head(dst[f"c-{b}"]).etag
            if stats["cog"].get("related", {}).get("count"):
                stats["cog"]["related"]["count"]["etag"] = storage.head(dst["c-count"]).etag
            storage.write_json(dst[f"b-{b}"], stats)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(stage, tiles))
    jobs = [("publish", t) for t in tiles + tiles[:10]] + [("rebuild", None)] * 5
    os.environ.pop("FAULT_RATE", None)

    def run(job):
        kind, tile = job
        return _publish_event(settings, tile) if kind == "publish" else \
            publish.rebuild_collection(settings)

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(run, jobs))
    writes = [r["item_write"] for r in results[:50]]
    assert writes.count("written") >= 40 and set(writes) <= {"written", "unchanged"}
    _assert_consistent(_item(settings, tiles[0]))
    for t in tiles:
        assert _item(settings, t)["id"] == f"{t}_{YEAR}"
        assert storage.exists(layout.index_part(YEAR, t))
    publish.rebuild_collection(settings)
    links = {lnk["title"] for lnk in storage.read_json(layout.collection())["links"]
             if lnk["rel"] == "item"}
    assert {f"{t}_{YEAR}" for t in [*tiles, TILE]} == links
