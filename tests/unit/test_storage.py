"""storage: local-path round trips, listing, corrupt JSON, GDAL options."""

from __future__ import annotations

import pytest

from cloudfree import storage
from cloudfree.errors import CorruptObjectError, InputError


def test_local_round_trip_and_listing(tmp_path):
    uri = str(tmp_path / "a" / "b.json")
    storage.write_json(uri, {"x": [1, 2]})
    assert storage.exists(uri) and storage.read_json(uri) == {"x": [1, 2]}
    storage.write_bytes(str(tmp_path / "a" / "c.bin"), b"\x00\x01")
    assert list(storage.list_uris(str(tmp_path / "a"))) == [uri, str(tmp_path / "a" / "c.bin")]
    assert not storage.exists(str(tmp_path / "missing"))


def test_corrupt_json_names_the_object(tmp_path):
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    with pytest.raises(CorruptObjectError, match="manifest.json"):
        storage.read_json(str(bad))


def test_split_s3():
    assert storage.split_s3("s3://bucket/a/b.tif") == ("bucket", "a/b.tif")
    with pytest.raises(InputError):
        storage.split_s3("https://bucket/a")


def test_gdal_options_follow_the_local_endpoint(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("CLOUDFREE_LOCAL_S3", raising=False)
    assert "AWS_S3_ENDPOINT" not in storage.gdal_env_options()
    assert isinstance(storage.gdal_env_options()["GDAL_CACHEMAX"], int)
    monkeypatch.setenv("CLOUDFREE_LOCAL_S3", "127.0.0.1:4566")
    opts = storage.gdal_env_options()
    assert (opts["AWS_S3_ENDPOINT"], opts["AWS_HTTPS"], opts["AWS_VIRTUAL_HOSTING"]) == (
        "127.0.0.1:4566", "NO", "FALSE")


def test_gdal_env_makes_one_rasterio_session_per_set_of_credentials(monkeypatch, tmp_path):
    """rasterio.Env() alone builds a boto3 Session (~30 ms) whenever keys are in the
    environment; storage.gdal_env() reuses one per credentials, and the GDAL options and
    credentials still reach GDAL inside it."""
    import boto3
    import rasterio
    from rasterio.session import AWSSession, DummySession

    made = []
    real = boto3.Session

    def counting(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(boto3, "Session", counting)
    for k in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_NO_SIGN_REQUEST"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-one")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-one")
    storage._gdal_session.cache_clear()
    with rasterio.Env():  # the behaviour worked around: a session per Env
        pass
    with rasterio.Env():
        pass
    assert len(made) == 2
    made.clear()
    envs = [storage.gdal_env() for _ in range(5)]
    assert len(made) == 1 and len({id(e.session) for e in envs}) == 1
    assert isinstance(envs[0].session, AWSSession)
    with envs[0]:
        from rasterio.env import getenv

        cfg = getenv()
        assert cfg["AWS_ACCESS_KEY_ID"] == "key-one"
        assert cfg["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-two")  # new credentials: a new session
    assert storage.gdal_env().session is not envs[0].session and len(made) == 2
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # none: no boto3 at all, as rasterio does
    assert isinstance(storage.gdal_env().session, DummySession) and len(made) == 2
    storage._gdal_session.cache_clear()


def test_read_bytes_reads_at_most_max_bytes(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b"x" * 100)
    assert storage.read_bytes(str(path), max_bytes=10) == b"x" * 10
    assert storage.read_bytes(str(path)) == b"x" * 100
    (tmp_path / "empty.json").write_bytes(b"")
    assert storage.read_bytes(str(tmp_path / "empty.json"), max_bytes=10) == b""


def test_local_listing_is_a_prefix_match_without_partial_writes(tmp_path):
    """Local folders list like S3 keys (a prefix, not only a folder) and never show the
    ``.part`` file of a write in progress; list_uris and list_objects agree."""
    for name in ("red/a.json", "red/b.json", "red2/c.json", "red/d.json.part"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    folder, prefix = f"{tmp_path}/red/", f"{tmp_path}/red"
    assert list(storage.list_uris(folder)) == [f"{folder}a.json", f"{folder}b.json"]
    assert list(storage.list_uris(prefix)) == [f"{folder}a.json", f"{folder}b.json",
                                               f"{tmp_path}/red2/c.json"]
    assert [o.uri for o in storage.list_objects(prefix)] == list(storage.list_uris(prefix))


def _gdal_cache_max() -> int:
    import ctypes

    import rasterio  # noqa: F401  (maps libgdal)

    from cloudfree.deflate import _mapped

    lib = ctypes.CDLL(_mapped(r"^libgdal")[0])
    lib.GDALGetCacheMax64.restype = ctypes.c_int64
    return lib.GDALGetCacheMax64()


def test_the_gdal_block_cache_is_256_mib_not_256_bytes():
    """rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64 as bytes: the reads' cache
    is the 256 MiB the memory model counts (windows._gdal_cache_bytes), not 256 bytes (what
    ``GDAL_CACHEMAX: 256`` gave until 2026-12-02: a decimated overview read then decoded each
    block once per output row)."""
    with storage.gdal_env():
        assert _gdal_cache_max() == 256 * 2**20 == storage.GDAL_CACHE_BYTES
    from cloudfree.windows import _gdal_cache_bytes

    assert _gdal_cache_bytes() == 256 * 2**20
