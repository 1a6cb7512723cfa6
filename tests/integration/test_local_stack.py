"""The local stack: idempotent up, health, `cloudfree local env` usable from a shell."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from cloudfree.local import stack

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("cloudfree"))


def test_up_is_idempotent(local_env):
    s = stack()
    before = json.loads(s.state_file.read_text())
    endpoints = s.up()
    after = json.loads(s.state_file.read_text())
    assert endpoints.aws_endpoint_url == local_env["AWS_ENDPOINT_URL"]
    assert endpoints.stac_api_url == local_env["STAC_API_URL"]
    for name in ("ministack", "stacapi"):
        assert after[name]["pid"] == before[name]["pid"], f"{name} was restarted"
        assert after[name]["port"] == before[name]["port"]


def test_health_reports_every_service_up(local_env):
    health = stack().health()
    assert set(health) == {"ministack", "postgres", "stacapi"}
    assert all(h["up"] for h in health.values()), health
    out = subprocess.run([CLI, "local", "status"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.count("up ") == 3


def test_env_exports_point_boto3_and_pystac_client_here(local_env):
    script = (
        f'eval "$({CLI} local env)"; '
        f'{sys.executable} -c "import boto3, os; '
        "s3 = boto3.client('s3'); s3.create_bucket(Bucket='cf-env-test'); "
        "print(os.environ['STAC_API_URL']); "
        "print('cf-env-test' in [b['Name'] for b in s3.list_buckets()['Buckets']])\""
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    api, found = out.stdout.split()
    assert api == local_env["STAC_API_URL"]
    assert found == "True"


def test_stac_api_serves_queryables_as_numbers(local_env):
    from cloudfree.local.stacapi import upsert_collection

    upsert_collection(local_env["STAC_API_URL"], {
        "type": "Collection", "id": "cloudfree-queryables-test", "stac_version": "1.0.0",
        "description": "test", "license": "proprietary", "links": [],
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                   "temporal": {"interval": [[None, None]]}}})
    with urllib.request.urlopen(f"{local_env['STAC_API_URL']}/queryables") as resp:
        q = json.load(resp)
    props = q["properties"]
    assert props["eo:cloud_cover"]["type"] == "number"
    assert props["grid:code"]["type"] == "string"
    assert props["mgrs:utm_zone"]["type"] == "integer"


def test_file_transfers_are_one_request_up_to_64_mib_then_64_mib_parts(local_env, tmp_path):
    """``storage.upload_file`` (window GeoTIFFs, staged COGs): a 20 MiB file is one PUT (its ETag
    is its MD5, with no part count); a 70 MiB file is a multipart upload of two 64 MiB parts
    (S3's multipart ETag ends in ``-2``). With s3transfer's default 8 MiB they were 3 and 9
    parts: every part is a billed PUT (``costs``). ``download_file`` brings the same bytes back."""
    import hashlib

    import numpy as np

    from cloudfree import storage

    storage.s3_client().create_bucket(Bucket="cf-transfer-test")
    rng = np.random.default_rng(7)
    for mib, parts in ((20, None), (70, 2)):
        data = rng.integers(0, 256, mib * 2**20, dtype=np.uint8).tobytes()
        src = tmp_path / f"{mib}.bin"
        src.write_bytes(data)
        uri = f"s3://cf-transfer-test/{mib}.bin"
        storage.upload_file(src, uri)
        etag = storage.head(uri).etag.strip('"')
        if parts is None:
            assert etag == hashlib.md5(data).hexdigest()
        else:
            assert etag.endswith(f"-{parts}"), etag
        storage.download_file(uri, tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == data


@pytest.mark.parametrize("managed", [False, True])
def test_copy_writes_the_storage_class_asked_and_standard_otherwise(local_env, monkeypatch,
                                                                      managed):
    """``storage.copy(storage_class=)`` (publish's copies of the staged COGs into the public
    bucket, ``PublicStorageClass``): CopyObject, and the multipart managed copy of objects of
    5 GB or more (taken here for a small object by lowering the limit), both ask S3 for that
    class; HEAD and listings report it. Without it a copy of a STANDARD object is STANDARD.
    (Of a tiered one, AWS's CopyObject makes STANDARD, "If the x-amz-storage-class header is
    not used, the copied object will be stored in the STANDARD Storage Class by default" (S3
    API reference), while MiniStack keeps the source's class: publish always names it.)"""
    from cloudfree import storage

    if managed:
        monkeypatch.setattr(storage, "_COPY_LIMIT", 0)
    bucket = f"cf-class-test-{int(managed)}"
    storage.s3_client().create_bucket(Bucket=bucket)
    src = f"s3://{bucket}/staged.tif"
    storage.write_bytes(src, b"\x49\x49" * 70_000)
    storage.copy(src, f"s3://{bucket}/pub/tiered.tif", if_match=storage.head(src).etag,
                 storage_class="INTELLIGENT_TIERING")
    storage.copy(src, f"s3://{bucket}/pub/plain.tif")
    assert storage.head(f"s3://{bucket}/pub/tiered.tif").storage_class == "INTELLIGENT_TIERING"
    assert storage.head(f"s3://{bucket}/pub/plain.tif").storage_class == "STANDARD"
    assert storage.head(src).storage_class == "STANDARD"
    listed = {o.uri.rsplit("/", 1)[1]: o.storage_class
              for o in storage.list_objects(f"s3://{bucket}/pub/")}
    assert listed == {"plain.tif": "STANDARD", "tiered.tif": "INTELLIGENT_TIERING"}
    assert storage.read_bytes(f"s3://{bucket}/pub/tiered.tif") == b"\x49\x49" * 70_000
