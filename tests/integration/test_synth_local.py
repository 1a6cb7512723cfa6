"""``cloudfree synth`` against the local stack: S3 (MiniStack) + STAC API (pgstac).

Runs the must-show command and checks that its items are searchable the way ``select`` searches
Earth Search (by ``grid:code``, sorted by cloud cover), that hrefs resolve and the truth exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration

NEEDED = ("STAC_API_URL", "AWS_ENDPOINT_URL")
MUST_SHOW = ["synth", "--tiles", "33UUP", "--year", "2023", "--scenes", "24", "--aoi",
             "12.95,48.25,13.05,48.32", "--json"]
BUDGET_S = float(os.environ.get("CLOUDFREE_SYNTH_BUDGET_S", "120"))


@pytest.fixture(scope="module")
def stack():
    missing = [k for k in NEEDED if not os.environ.get(k)]
    if missing:
        pytest.skip(f"local stack not configured ({', '.join(missing)} unset): run `make up` "
                    "and `eval \"$(cloudfree local env)\"`")
    return {k: os.environ[k] for k in NEEDED}


@pytest.fixture(scope="module")
def run(stack):
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cloudfree.cli", *MUST_SHOW],
                          capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"seconds": seconds, "info": json.loads(proc.stdout), "stderr": proc.stderr}


def test_must_show_runs_under_budget(run):
    assert run["seconds"] < BUDGET_S, f"synth took {run['seconds']:.1f}s"
    assert run["info"]["loaded"] == run["info"]["items"] >= 24
    assert run["stderr"].count("[33UUP") == 24  # one progress line per scene


def test_items_searchable(stack, run):
    import httpx

    body = {"collections": ["sentinel-2-l2a"], "limit": 100,
            "query": {"grid:code": {"eq": "MGRS-33UUP"}},
            "datetime": "2023-01-01T00:00:00Z/2023-12-31T23:59:59Z",
            "sortby": [{"field": "properties.eo:cloud_cover", "direction": "asc"}]}
    feats = httpx.post(f"{stack['STAC_API_URL']}/search", json=body, timeout=60).json()[
        "features"]
    assert len(feats) >= run["info"]["items"]
    covers = [f["properties"]["eo:cloud_cover"] for f in feats]
    assert covers == sorted(covers)
    blue = feats[0]["assets"]["blue"]["href"]
    assert blue.startswith(f"{stack['AWS_ENDPOINT_URL']}/sentinel-cogs/sentinel-s2-l2a-cogs/")
    one = httpx.get(f"{stack['STAC_API_URL']}/collections/sentinel-2-l2a/items/{feats[0]['id']}",
                    timeout=60)
    assert one.status_code == 200


def test_cogs_and_truth_in_s3(stack, run):
    import rasterio

    from cloudfree.storage import gdal_env_options, read_json

    manifest = read_json(run["info"]["manifests"][0])
    assert manifest["tile"] == "33UUP" and len(manifest["items"]) == run["info"]["items"]
    item = read_json(manifest["items"][0]["item"])
    with rasterio.Env(**gdal_env_options()):
        with rasterio.open(item["assets"]["scl"]["href"]) as ds:
            assert ds.block_shapes[0] == (512, 512) and ds.shape == (5490, 5490)
        with rasterio.open(manifest["truth"]["hrefs"]["red"]) as ds:
            assert ds.shape == (10980, 10980)
