"""End to end through the deployed SAM application on MiniStack: the real state machine, the real
Lambdas (layer included), S3 events for publish and reprocess.

One tile and year (the small synthetic archive): an execution SUCCEEDS and publishes 12 band COGs
+ visual + count in EPSG:3857 and a valid STAC item; no state payload exceeds 256 KB and no Lambda
result 6 MB (MiniStack does not enforce them); a second run changes no output byte; a request
dropped under ``requests/`` reprocesses exactly the named tile; a malformed one is rejected with
its reason recorded.
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import rasterio

from cloudfree import storage
from cloudfree.bands import OUTPUT_BANDS
from cloudfree.pipeline import run

from .conftest import SMALL, wait_execution, wait_for

TILE, YEAR = SMALL["tile"], SMALL["year"]
STATE_LIMIT = 256 * 1024
LAMBDA_LIMIT = 6 * 1024 * 1024


@pytest.fixture(scope="module")
def deployed(deployed_stack) -> run.Deployed:
    return run.find_stack(deployed_stack.stack_name)


def _wait(arn: str, timeout: float = 900) -> dict:
    return wait_execution(arn, timeout, poll=2)


def _checksums(deployed: run.Deployed) -> dict[str, str]:
    prefix = deployed.settings.layout.output_prefix(YEAR, TILE) + "/"
    return {u: hashlib.sha256(storage.read_bytes(u)).hexdigest()
            for u in storage.list_uris(prefix)}


_wait_for = wait_for


@pytest.fixture(scope="module")
def first(deployed, small_archive) -> dict:
    payload = run.execution_input(YEAR, [TILE], None, {"scenes": 6})
    arn = run.start(deployed, payload, name=f"e2e-{int(time.time())}")
    desc = _wait(arn)
    # publish runs on the S3 event of the completion marker, after the execution's Complete step
    _wait_for(lambda: storage.exists(deployed.settings.layout.item(YEAR, TILE)), 180,
              "the published item")
    return {"arn": arn, "desc": desc}


def test_execution_succeeds_and_publishes_valid_cogs(first, deployed):
    from rio_cogeo.cogeo import cog_validate

    assert first["desc"]["status"] == "SUCCEEDED", first["desc"]
    item = storage.read_json(deployed.settings.layout.item(YEAR, TILE))
    with rasterio.Env(**storage.gdal_env_options()):
        for band in (*OUTPUT_BANDS, "count"):
            uri = item["assets"][band]["href"]
            ok, errors, _ = cog_validate(uri, quiet=True)
            assert ok, (band, errors)
            with rasterio.open(uri) as src:
                assert src.crs.to_epsg() == 3857
            # the deployed publish Lambda took the template's PublicStorageClass default
            assert storage.head(uri).storage_class == "INTELLIGENT_TIERING", band


def test_item_names_contributing_scenes_and_good_pixel_fraction(first, deployed):
    from cloudfree.stac import validate_item

    item = storage.read_json(deployed.settings.layout.item(YEAR, TILE))
    validate_item(item)
    props = item["properties"]
    assert len(props["cloudfree:scenes"]) == 6
    assert any(s["contribution"] > 0 for s in props["cloudfree:scenes"])
    assert 0.9 <= props["cloudfree:good_pixel_fraction"] <= 1.0


def _report(deployed, name: str) -> dict | None:
    """The execution's finished report (the report writes a "running" placeholder first)."""
    uri = deployed.settings.layout.report(name)
    doc = storage.read_json(uri) if storage.exists(uri) else None
    return doc if doc and doc.get("status") == "complete" else None


def _invoke(name: str, payload: dict) -> bytes:
    import boto3

    resp = boto3.client("lambda").invoke(FunctionName=name, Payload=json.dumps(payload).encode())
    body = resp["Payload"].read()
    assert "FunctionError" not in resp, body[:2000]
    return body


def _function(deployed, logical: str) -> str:
    import boto3

    res = boto3.client("cloudformation").describe_stack_resource(
        StackName=deployed.stack_name, LogicalResourceId=logical)
    return res["StackResourceDetail"]["PhysicalResourceId"]


def test_the_deployed_median_lambda_decodes_with_zlib_ng_and_isal(first, deployed):
    """The median Lambda, as deployed (the layer built by ``sam build``, run by MiniStack's
    worker), names on every log line the zlib its GDAL binds (``gdal_zlib``,
    ``cloudfree.deflate``): zlib-ng, as ``scripts/zlib_ng.py`` set the layer up. On AWS the same
    key tells whether the runtime keeps that binding."""
    import re

    import boto3

    group = f"/aws/lambda/{_function(deployed, 'MedianFunction')}"
    events = boto3.client("logs").filter_log_events(
        logGroupName=group, filterPattern="gdal_zlib").get("events", [])
    found = {m.group(1) for e in events
             for m in [re.search(r'"gdal_zlib":\s*"([^"]+)"', e["message"])] if m}
    assert found and all(v.endswith(".zlib-ng") for v in found), found
    # and the layer's isal and compiled _blocks inflate the source tiles (cloudfree.blocks),
    # with glibc's malloc thresholds set (cloudfree.allocator)
    lines = [e["message"] for e in events]
    assert all('"tile_decoder": "isal"' in m or '"tile_decoder":"isal"' in m for m in lines), \
        lines[:2]
    assert all(re.search(r'"mmap_threshold":\s*true', m) for m in lines), lines[:2]


def test_payloads_stay_within_step_functions_and_lambda_limits(first, deployed):
    """Largest state payload < 256 KB and Lambda result < 6 MB, checked on the history where
    MiniStack records it and on the real Lambdas' results for the tile (MiniStack enforces
    neither limit)."""
    stats = run.execution_history_stats(first["arn"])
    print(f"\nhistory: {json.dumps(stats)}")
    assert stats["tiles"] == 1
    child_input = {"tile": TILE, "year": YEAR, "options": {"scenes": 6}, "execution": "x"}
    select = _invoke(_function(deployed, "SelectFunction"),
                     {"tile": TILE, "year": YEAR, "options": {"scenes": 6, "force": True}})
    work = json.loads(select)["work"]
    # longest first, as the band Map starts them (Manifest.work; cloudfree plan's schedule)
    from cloudfree.bands import get_band

    assert work[0]["band"] == "visual"
    assert [get_band(w["band"]).resolution for w in work] == sorted(
        get_band(w["band"]).resolution for w in work)
    median = _invoke(_function(deployed, "MedianFunction"),
                     {"tile": TILE, "year": YEAR, "band": "visual", "batch": 0,
                      "options": {"scenes": 6}})
    # the child's largest state: its input with the select result attached, inside every map
    state = len(json.dumps({**child_input, "selected": json.loads(select)}).encode())
    per_tile = run.tile_transitions(work)
    print(f"select result {len(select)} B, median result {len(median)} B, child state {state} B, "
          f"{per_tile} transitions/tile = ${per_tile * run.TRANSITION_USD * 1000:.2f} per 1000 "
          "tiles")
    assert max(stats["max_payload_bytes"], state) < STATE_LIMIT
    assert max(stats["max_lambda_result_bytes"], len(select), len(median)) < LAMBDA_LIMIT
    assert 4 + 2 * len(OUTPUT_BANDS) < per_tile < 120  # O(bands), not O(windows)


def test_report_written_with_the_tile_done(first, deployed):
    name = first["desc"]["name"]
    report = _wait_for(lambda: _report(deployed, name), 60, "report")
    assert report["done"] == 1 and report["failed"] == 0
    assert [t["tile"] for t in report["tiles"]] == [TILE]
    # the measured cost beside cloudfree plan's for the tile's observed share of a whole tile
    # of as many scenes (markers this code wrote: a persisted local stack may hold older ones);
    # this synthetic tile is a few km: a small share, where invocations' fixed costs dominate
    cost = report["cost_per_done_tile"]
    if "planned_lambda_gb_seconds" not in report["tiles"][0].get("cost", {}):
        pytest.skip("the tile's completion marker predates planned_lambda_gb_seconds")
    share = report["tiles"][0]["cost"]["observed_share"]
    assert 0 < share < 0.05
    assert cost["lambda_gb_seconds"] > 0 and cost["planned_lambda_gb_seconds"] > 0
    assert cost["measured_over_planned"] == pytest.approx(
        cost["lambda_gb_seconds"] / cost["planned_lambda_gb_seconds"], rel=0.01)


def test_second_run_changes_no_output_byte(first, deployed):
    before = _checksums(deployed)
    assert len(before) == len(OUTPUT_BANDS) + 2
    arn = run.start(deployed, run.execution_input(YEAR, [TILE], None, {"scenes": 6}),
                    name=f"e2e-rerun-{int(time.time())}")
    desc = _wait(arn)
    assert desc["status"] == "SUCCEEDED", desc.get("why")
    time.sleep(3)  # a stray publish would land within this
    assert _checksums(deployed) == before


def _executions(deployed) -> dict[str, dict]:
    import boto3

    sfn = boto3.client("stepfunctions")
    out = {}
    for e in sfn.list_executions(stateMachineArn=deployed.state_machine_arn)["executions"]:
        out[e["executionArn"]] = e
    return out


def test_request_under_requests_reprocesses_exactly_that_tile(first, deployed):
    import boto3

    before = set(_executions(deployed))
    uri = run.submit_request(deployed, YEAR, [TILE], name=f"e2e-{int(time.time())}.json",
                             options={"scenes": 6})
    new = _wait_for(lambda: set(_executions(deployed)) - before, 60, "a reprocess execution")
    assert len(new) == 1, uri
    arn = new.pop()
    desc = _wait(arn)
    assert desc["status"] == "SUCCEEDED"
    started = json.loads(boto3.client("stepfunctions").describe_execution(
        executionArn=arn)["input"])
    assert started["tiles"] == [TILE] and started["year"] == YEAR
    report = _wait_for(lambda: _report(deployed, desc["name"]), 60, "reprocess report")
    assert [t["tile"] for t in report["tiles"]] == [TILE]
    assert report["done"] == 1


def test_malformed_request_is_rejected_with_a_reason(deployed):
    before = set(_executions(deployed))
    name = f"bad-{int(time.time())}.json"
    storage.write_bytes(deployed.settings.layout.request(name),
                        json.dumps({"year": YEAR, "tiles": ["NOT-A-TILE"]}).encode())
    rejected = f"s3://{deployed.control_bucket}/rejected/{name}.json"
    record = _wait_for(lambda: storage.exists(rejected) and storage.read_json(rejected), 60,
                       "the rejection record")
    assert "not an MGRS tile id" in record["reason"]
    time.sleep(2)
    assert set(_executions(deployed)) == before


def test_cli_run_status_fetch(first, deployed, tmp_path):
    """The user's path: `cloudfree run` follows an execution to the end, `status` and `fetch`."""
    import subprocess
    import sys
    from pathlib import Path

    cli = str(Path(sys.executable).with_name("cloudfree"))
    out = subprocess.run([cli, "run", "--stack", deployed.stack_name, "--year", str(YEAR),
                          "--tiles", TILE, "--scenes", "6"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{TILE}: done" in out.stdout and "execution SUCCEEDED" in out.stdout
    # the report's cost per done tile, against cloudfree plan's (the tile was already done:
    # its marker's cost is the earlier run's, measured and planned)
    assert "cost per done tile: " in out.stdout and "Lambda GB-s" in out.stdout
    arn = out.stdout.split("started ", 1)[1].split()[0]
    status = subprocess.run([cli, "status", "--stack", deployed.stack_name, arn],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    assert f"{TILE}: done" in status.stdout
    fetched = subprocess.run([cli, "fetch", "--stack", deployed.stack_name, "--year", str(YEAR),
                              "--tile", TILE, "--dest", str(tmp_path)], capture_output=True,
                             text=True, timeout=300)
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert f"{TILE}_{YEAR}.json" in names
    assert len([n for n in names if n.endswith(".tif")]) == len(OUTPUT_BANDS) + 1
