"""The local stack: idempotent up, health, `cloudfree local env` usable from a shell."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

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
