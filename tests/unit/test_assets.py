"""Select-time asset checks: 404, truncated and corrupt COGs, transient errors retried, and the
selection that replaces a scene without SCL and excludes unreadable scene-bands."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cloudfree import assets, blocks, storage
from cloudfree.errors import UnreadableSourceError
from cloudfree.select import SelectOptions, select_readable

from .test_select import TILE, make_item

REAL = ("rio-tiler-pds/tests/fixtures/sentinel-cogs/sentinel-s2-l2a-cogs/29/R/KH/2020/2/"
        "S2A_29RKH_20200219_0_L2A")


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    slept = []
    monkeypatch.setattr(assets, "_sleep", slept.append)
    return slept


@pytest.fixture
def real_b02(realdata, tmp_path) -> Path:
    """A copy of a real Earth Search COG (B02 of S2A_29RKH_20200219_0_L2A, decimated 10x)."""
    return Path(shutil.copy(realdata / REAL / "B02.tif", tmp_path / "B02.tif"))


def test_a_real_earth_search_cog_passes(realdata, real_b02):
    assert assets.check_asset(str(real_b02), "blue") is None
    assert assets.check_asset(str(realdata / REAL / "SCL.tif"), "scl") is None


def test_missing_file_is_404(tmp_path):
    assert assets.check_asset(str(tmp_path / "B06.tif"), "rededge2") == "404"


def test_truncated_cog_is_corrupt_with_the_byte_counts(real_b02):
    size = real_b02.stat().st_size  # 2,251,637 bytes: the last block ends exactly there
    with open(real_b02, "r+b") as f:
        f.truncate(size - 5000)
    reason = assets.check_asset(str(real_b02), "blue")
    assert reason == f"corrupt: truncated ({size - 5000} bytes, blocks reach byte {size})"


def test_garbage_header_and_empty_object_and_wrong_type(tmp_path, real_b02):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a tiff at all" * 100)
    assert assets.check_asset(str(junk), "blue").startswith("corrupt: ")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    assert assets.check_asset(str(empty), "blue") == "corrupt: empty object"
    # a uint16 band where an 8 bit SCL is expected
    assert assets.check_asset(str(real_b02), "scl") == "corrupt: 1xuint16, expected 1xuint8"


def test_sparse_blocks_do_not_count_as_truncation(tmp_path):
    path = tmp_path / "sparse.tif"
    data = np.zeros((1024, 1024), dtype=np.uint16)
    data[:512, :512] = 7
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=1,
                       dtype="uint16", tiled=True, blockxsize=512, blockysize=512,
                       compress="DEFLATE", nodata=0, sparse_ok=True) as dst:
        dst.write(data, 1)
    assert assets.check_asset(str(path), "blue") is None


class FakeS3:
    """head_object answers from a script: an exception or a size per call."""

    def __init__(self, script):
        self.script, self.calls = list(script), 0

    def head_object(self, Bucket, Key):  # noqa: N803 - boto3's names
        self.calls += 1
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return {"ContentLength": step, "LastModified": None, "ETag": '"e"'}


def _client_error(code: str):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}}, "HeadObject")


def test_s3_head_classifies_404_403_and_retries_transient(monkeypatch, no_sleep):
    fake = FakeS3([_client_error("404")])
    monkeypatch.setattr(storage, "s3_client", lambda: fake)
    assert assets.check_asset("s3://sentinel-cogs/x/B06.tif", "rededge2") == "404"
    assert fake.calls == 1  # a 404 is not retried
    fake = FakeS3([_client_error("AccessDenied")])
    monkeypatch.setattr(storage, "s3_client", lambda: fake)
    assert assets.check_asset("s3://sentinel-cogs/x/B06.tif", "rededge2") == "403 forbidden"
    fake = FakeS3([_client_error("SlowDown")])
    monkeypatch.setattr(storage, "s3_client", lambda: fake)
    reason = assets.check_asset("s3://sentinel-cogs/x/B06.tif", "rededge2")
    assert reason.startswith("unreadable: S3 head s3://sentinel-cogs/x/B06.tif: ")
    assert fake.calls == assets.ATTEMPTS and no_sleep == [0.5, 1.0]  # bounded, with backoff
    fake = FakeS3([_client_error("503"), 0])  # transient once, then an empty object
    monkeypatch.setattr(storage, "s3_client", lambda: fake)
    assert assets.check_asset("s3://sentinel-cogs/x/B06.tif", "rededge2") == \
        "corrupt: empty object"
    assert fake.calls == 2


def test_check_assets_reports_only_the_bad_pairs():
    scenes = [{"id": "a", "assets": {"blue": "ok", "scl": "ok"}},
              {"id": "b", "assets": {"blue": "bad", "scl": "ok"}},
              {"id": "c", "assets": {"blue": "ok"}}]
    seen = []

    def check(href, key):
        seen.append((href, key))
        return "404" if href == "bad" else None

    out = assets.check_assets(scenes, ("blue", "scl"), check=check)
    assert out == {("b", "blue"): "404", ("c", "scl"): "no asset"}
    assert len(seen) == 5


# --- the selection ---------------------------------------------------------------------------
def _items():
    """Three candidates, best first: a (90), b (80), c (70) — distinct dates, one orbit."""
    out = []
    for day, cloud in ((1, 10.0), (2, 20.0), (3, 30.0)):
        out.append(make_item(when=f"2021-06-0{day}T10:00:00Z", cloud=cloud))
    return out


def test_a_scene_without_readable_scl_is_replaced_by_the_next_best():
    a, b, c = _items()
    del a["assets"]["scl"]  # an item without SCL cannot be masked
    bad = {(b["id"], "rededge2"): "404", (c["id"], "scl"): "corrupt: truncated"}
    checked_ids = []

    def check(scenes, keys):
        checked_ids.extend(s["id"] for s in scenes)
        out = {}
        for s in scenes:
            for k in keys:
                if k not in s["assets"]:
                    out[(s["id"], k)] = "no asset"
                elif (s["id"], k) in bad:
                    out[(s["id"], k)] = bad[(s["id"], k)]
        return out

    items = [a, b, c, make_item(when="2021-06-04T10:00:00Z", cloud=40.0)]
    d = items[3]
    res = select_readable(items, TILE, 2021, SelectOptions(n=2), check=check)
    assert [s.id for s in res.selection.scenes] == [b["id"], d["id"]]
    assert sorted(checked_ids) == sorted([a["id"], b["id"], c["id"], d["id"]])  # each once
    assert [(e.band, e.scene, e.reason) for e in res.excluded] == [("rededge2", b["id"], "404")]
    assert res.excluded_scenes == sorted([{"id": a["id"], "reason": "scl: no asset"},
                                          {"id": c["id"], "reason": "scl: corrupt: truncated"}],
                                         key=lambda e: e["id"])
    reasons = {x["id"]: x["reason"] for x in res.selection.dropped}
    assert reasons[a["id"]] == "unusable:scl no asset"
    assert reasons[c["id"]] == "unusable:scl corrupt: truncated"


def test_a_band_without_any_readable_scene_fails_the_tile():
    items = _items()

    def check(scenes, keys):
        return {(s["id"], "nir09"): "404" for s in scenes}

    with pytest.raises(UnreadableSourceError, match="no readable nir09 asset in any of the 3"):
        select_readable(items, TILE, 2021, SelectOptions(n=3), check=check)


def test_every_scl_unreadable_fails_rather_than_empty():
    def check(scenes, keys):
        return {(s["id"], "scl"): "404" for s in scenes}

    with pytest.raises(UnreadableSourceError, match="no readable SCL"):
        select_readable(_items(), TILE, 2021, SelectOptions(n=2), check=check)


def test_a_vrt_is_checked_without_asking_for_tiff_blocks(real_b02, tmp_path, monkeypatch):
    """A VRT (how bench-peer wraps its crops) has no ``TIFF`` metadata domain: the truncation
    scan is skipped for it (it asked 2 x 121 missing items, 5 ms an asset), not for a GTiff."""
    vrt = tmp_path / "B02.vrt"
    with rasterio.open(real_b02) as src:
        w, h = src.width, src.height
    vrt.write_text(
        f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><VRTRasterBand dataType="UInt16" '
        f'band="1"><SimpleSource><SourceFilename relativeToVRT="1">B02.tif</SourceFilename>'
        f'<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')
    asked = []
    real = assets._stored_end

    def spy(src, parsed):
        end = real(src, parsed)
        asked.append((src.driver, end))
        return end

    def one_by_one(src, bidx=1):
        raise AssertionError("the IFD's arrays answer for a real COG")

    monkeypatch.setattr(assets, "_stored_end", spy)
    monkeypatch.setattr(assets, "_blocks_end", one_by_one)
    assert assets.check_asset(str(vrt), "blue") is None
    assert asked == [("VRT", 0)]
    # a real COG: checked from its IFD, no dataset opened
    monkeypatch.setattr(rasterio, "open", lambda *a, **k: pytest.fail("rasterio.open called"))
    assert assets.check_asset(str(real_b02), "blue") is None
    assert asked == [("VRT", 0)]


def test_a_real_cogs_last_block_ends_at_its_last_byte(real_b02):
    """The IFD's arrays (``blocks.stored_end``) and GDAL block by block agree on a real Earth
    Search COG: its last block ends at the file's last byte, 2,251,637."""
    with rasterio.open(real_b02) as src:
        assert blocks.stored_end(str(real_b02)) == assets._blocks_end(src) \
            == real_b02.stat().st_size == 2_251_637


def test_a_file_the_ifd_parser_declines_is_checked_block_by_block(real_b02, tmp_path):
    """A big-endian GeoTIFF (``stored_end`` None): GDAL's block-by-block answer still catches
    its truncation."""
    with rasterio.open(real_b02) as src:
        profile, data = src.profile, src.read()
    path = tmp_path / "BE.tif"
    with rasterio.open(path, "w", **{**profile, "ENDIANNESS": "BIG"}) as dst:
        dst.write(data)
    assert blocks.stored_end(str(path)) is None
    assert assets.check_asset(str(path), "blue") is None
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) - 1000])
    assert assets.check_asset(str(path), "blue").startswith("corrupt: truncated")


def test_remote_assets_are_checked_side_by_side_and_local_ones_on_this_thread():
    """HEADs and headers of s3:// or https:// assets wait on the network: four checks must be
    inside ``check`` at once (a barrier one thread would never pass). Local files have no
    latency to hide and new threads pay GDAL's set-up: they are checked on the calling thread
    (``storage.latency_threads``)."""
    import threading

    def scenes_at(prefix: str) -> list[dict]:
        return [{"id": f"s{i}", "assets": {"blue": f"{prefix}s{i}/B02.tif"}} for i in range(4)]

    together = threading.Barrier(4, timeout=10)
    seen: set[int] = set()

    def check(href: str, key: str) -> str | None:
        seen.add(threading.get_ident())
        if "://" in href:
            together.wait()
        return "404" if href.endswith("s3/B02.tif") else None

    for prefix in ("s3://sentinel-cogs/", "https://example.com/"):
        seen.clear()
        got = assets.check_assets(scenes_at(prefix), ["blue"], check=check)
        assert got == {("s3", "blue"): "404"} and len(seen) == 4
    seen.clear()
    assert assets.check_assets(scenes_at("/data/"), ["blue"], check=check) == \
        {("s3", "blue"): "404"}
    assert seen == {threading.get_ident()}
    assert storage.latency_threads(["/a.tif", "file:///b.tif"], 16) == 1
    assert storage.latency_threads(["/a.tif", "s3://b/k.tif"], 16) == 16
