"""The bad input table (issue 11.6): bad inputs through the real entry points of a deployed stack.

Four entry points, one parametrized test each, one row per input with its expected outcome and
message fragment:

- **execution input**: ``StartExecution`` on the deployed state machine (MiniStack);
- **reprocess requests**: an object put under the control bucket's ``requests/`` (S3 event);
- **the CLI**: ``cloudfree run|reprocess|fetch|status|synth`` as a subprocess;
- **STAC API answers**: 429/500 bursts, persistent 500s, malformed JSON and stalls, injected by a
  fault proxy (``cloudfree.local.faultproxy``) that the stack's ``StacApiUrl`` points at.

Every row ends in a clear error (an ``InputError`` saying what is wrong and what to do, a CLI
usage error, a ``FAILED.json`` naming the ``StacApiError``) or a recorded empty result
(``EMPTY.json``), never in a crash loop (Plan is attempted at most twice; a rejected request is
answered without a Lambda error, so S3's async retries never fire) and never in a partial item:
no row of this file has scenes, so nothing may ever appear under the published prefix.

One stack (``cloudfree-badinput``, its own buckets, ``StacApiUrl`` = the proxy,
``StacTimeoutSeconds`` = 2) serves every row; each table is run once, its rows side by side,
by a module fixture, and the parametrized tests check the recorded outcomes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cloudfree import storage
from cloudfree.grid import _COLUMN_SETS, _ROW_LETTERS
from cloudfree.local.faultproxy import Fault, FaultProxy
from cloudfree.pipeline import run

from .conftest import wait_execution, wait_for

STACK = os.environ.get("CLOUDFREE_BADINPUT_STACK", "cloudfree-badinput")
STAC_TIMEOUT_S = 2
NEXT_YEAR = datetime.now(UTC).year + 1
EMPTY_YEAR = 2019  # the synthetic archive has no scene in it: a searched tile is *empty*
T = "33TUN"
T2 = "33TUP"  # the accepted reprocessing request's tile
CLI = str(Path(sys.executable).with_name("cloudfree"))
REPO = Path(__file__).resolve().parents[2]


def tile_ids(n: int) -> list[str]:
    """``n`` distinct, syntactically valid MGRS tile ids (zone, band, column, row)."""
    out = []
    for zone in range(1, 61):
        for band in "CDEFGHJKLMNPQRSTUVWX":
            for col in _COLUMN_SETS[zone % 3]:
                for row in _ROW_LETTERS:
                    out.append(f"{zone:02d}{band}{col}{row}")
                    if len(out) == n:
                        return out
    raise ValueError(n)


@dataclass(frozen=True)
class Raw:
    """An execution input or request body sent as these exact characters (not JSON-encoded)."""

    text: str


def _encode(value: Any) -> str:
    return value.text if isinstance(value, Raw) else json.dumps(value)


# ------------------------------------------------------------------------------------------------
# The tables
# ------------------------------------------------------------------------------------------------
def _in(**kw) -> dict:
    return {"year": 2023, "tiles": [T], **kw}


#: Execution inputs: (id, input, expected outcome, message fragment). "rejected": the execution
#: FAILS at Plan with an InputError naming the problem; "empty": it SUCCEEDS, the tile EMPTY.
EXECUTION_ROWS = [
    ("empty-object", {}, "rejected", "year is required"),
    ("year-text", _in(year="abc"), "rejected", "year must be an integer, got 'abc'"),
    ("year-fraction", _in(year=2023.5), "rejected", "year must be an integer"),
    ("year-bool", _in(year=True), "rejected", "year must be an integer"),
    ("year-2014", _in(year=2014), "rejected", "year 2014 is outside 2015-"),
    ("year-future", _in(year=NEXT_YEAR), "rejected", f"year {NEXT_YEAR} is outside 2015-"),
    ("tiles-string", _in(tiles=T), "rejected", "tiles must be a list of MGRS tile ids"),
    ("tile-dotdot", _in(tiles=["../../" + T]), "rejected", "not an MGRS tile id: '../../"),
    ("tile-99ZZZ", _in(tiles=["99ZZZ"]), "rejected", "not an MGRS tile id: '99ZZZ'"),
    ("tile-33UUI", _in(tiles=["33UUI"]), "rejected", "not an MGRS tile id: '33UUI'"),
    ("tile-number", _in(tiles=[33]), "rejected", "tiles[0] must be an MGRS tile id string"),
    ("tiles-empty", _in(tiles=[]), "rejected", "no tiles: give `tiles`"),
    ("tiles-25001", _in(tiles=tile_ids(25_001)), "rejected",
     "25001 tiles exceed the limit of 25000"),
    ("options-string", _in(options="fast"), "rejected", "options must be a JSON object"),
    ("scenes-0", _in(options={"scenes": 0}), "rejected", "scenes must be within 1-64, got 0"),
    ("scenes-1000", _in(options={"scenes": 1000}), "rejected", "scenes must be within 1-64"),
    ("force-text", _in(options={"force": "yes"}), "rejected", "force must be true or false"),
    ("option-unknown", _in(options={"colour": "red"}), "rejected", "unknown option(s) ['colour']"),
    ("field-unknown", _in(tile=T), "rejected", "unknown execution input field(s) ['tile']"),
    ("aoi-lat-95", {"year": 2023, "aoi": [0, 89, 1, 95]}, "rejected",
     "latitudes must be within -90..90"),
    ("aoi-min-gt-max", {"year": 2023, "aoi": [13, 48, 12, 47]}, "rejected", "min < max"),
    ("aoi-polar", {"year": 2023, "aoi": [0, 85, 1, 86]}, "rejected",
     "no tiles: give `tiles`"),  # north of every Sentinel-2 tile
    ("aoi-worlds", {"year": 2023, "aoi": "worlds"}, "rejected", 'or the AOI "world"'),
    ("aoi-text", {"year": 2023, "aoi": "europe"}, "rejected", "bbox must be minlon,minlat"),
    ("json-array", Raw(f'[2023, ["{T}"]]'), "rejected", "execution input must be a JSON object"),
    ("json-string", Raw(f'"{T}"'), "rejected", "execution input must be a JSON object"),
    ("json-number", Raw("2023"), "rejected", "execution input must be a JSON object"),
    ("tile-without-data", {"year": EMPTY_YEAR, "tiles": [T]}, "empty",
     "the search returned no item"),
]

#: Reprocessing requests: (id, request body, expected outcome, message fragment). "rejected":
#: ``rejected/<name>.json`` records the reason and no execution starts; "empty": an execution
#: starts and records the tile EMPTY.
REQUEST_ROWS = [
    ("empty-body", Raw(""), "rejected", "request is empty"),
    ("whitespace-body", Raw(" \n"), "rejected", "request is empty"),
    ("not-json", Raw("year: 2023\ntiles: [33TUN]"), "rejected", "request is not JSON"),
    ("json-array", [2023, [T]], "rejected", "request must be a JSON object"),
    ("json-null", None, "rejected", "request must be a JSON object"),
    ("field-unknown", _in(tile=T), "rejected", "unknown request field(s) ['tile']"),
    ("year-missing", {"tiles": [T]}, "rejected", "year is required"),
    ("year-text", _in(year="abc"), "rejected", "year must be an integer"),
    ("year-2014", _in(year=2014), "rejected", "year 2014 is outside"),
    ("year-future", _in(year=NEXT_YEAR), "rejected", "is outside 2015-"),
    ("tiles-string", _in(tiles=T), "rejected", "tiles must be a list"),
    ("tile-dotdot", _in(tiles=["../" + T]), "rejected", "not an MGRS tile id"),
    ("tile-99ZZZ", _in(tiles=["99ZZZ"]), "rejected", "not an MGRS tile id: '99ZZZ'"),
    ("tile-33UUI", _in(tiles=["33UUI"]), "rejected", "not an MGRS tile id: '33UUI'"),
    ("tiles-25001", _in(tiles=tile_ids(25_001)), "rejected", "25001 tiles exceed the limit"),
    ("options-list", _in(options=[1]), "rejected", "options must be a JSON object"),
    ("scenes-1000", _in(options={"scenes": 1000}), "rejected", "scenes must be within 1-64"),
    ("aoi-lat-95", {"year": 2023, "aoi": [0, 89, 1, 95]}, "rejected", "latitudes must be"),
    ("huge-body", _in(reason="x" * 600_000), "rejected", "exceeds 524288 bytes"),
    ("binary", Raw("\udcff"), "rejected", "request is not JSON"),
    ("valid-but-no-data", {"year": EMPTY_YEAR, "tiles": [T2]}, "empty",
     "the search returned no item"),
]

#: CLI calls: (id, arguments, expected exit code, message fragment on stderr). ``{stack}`` is
#: replaced by this module's stack name.
CLI_ROWS = [
    ("run-year-text", ["run", "--year", "abc", "--tiles", T], 2,
     "argument --year: year must be an integer"),
    ("run-year-2014", ["run", "--year", "2014", "--tiles", T], 2, "year 2014 is outside"),
    ("run-year-future", ["run", "--year", str(NEXT_YEAR), "--tiles", T], 2, "is outside 2015-"),
    ("run-no-tiles", ["run", "--year", "2023"], 2, "no tiles: give `tiles`"),
    ("run-tile-dotdot", ["run", "--year", "2023", "--tiles", "../" + T], 2,
     "not an MGRS tile id"),
    ("run-tile-99ZZZ", ["run", "--year", "2023", "--tiles", "99ZZZ"], 2, "not an MGRS tile id"),
    ("run-tiles-25001", ["run", "--year", "2023", "--tiles", *tile_ids(25_001)], 2,
     "25001 tiles exceed the limit of 25000"),
    ("run-scenes-0", ["run", "--year", "2023", "--tiles", T, "--scenes", "0"], 2,
     "argument --scenes: must be within 1-64, got 0"),
    ("run-scenes-1000", ["run", "--year", "2023", "--tiles", T, "--scenes", "1000"], 2,
     "must be within 1-64"),
    ("run-aoi-lat-95", ["run", "--year", "2023", "--aoi", "0,89,1,95"], 2,
     "argument --aoi: bbox latitudes must be within -90..90"),
    ("run-aoi-min-gt-max", ["run", "--year", "2023", "--aoi", "13,48,12,47"], 2, "min < max"),
    ("run-aoi-text", ["run", "--year", "2023", "--aoi", "europe"], 2,
     "bbox must be minlon,minlat,maxlon,maxlat"),
    ("run-unknown-stack", ["run", "--stack", "no-such-stack", "--year", "2023", "--tiles", T],
     2, "stack 'no-such-stack' is not deployed here: deploy it first"),
    ("reprocess-year-2014", ["reprocess", "--stack", "{stack}", "--year", "2014", "--tiles", T],
     2, "year 2014 is outside"),
    ("reprocess-tile-33UUI", ["reprocess", "--stack", "{stack}", "--year", "2023", "--tiles",
                              "33UUI"], 2, "not an MGRS tile id: '33UUI'"),
    ("fetch-tile-dotdot", ["fetch", "--stack", "{stack}", "--year", "2023", "--tile",
                           "../../etc"], 2, "argument --tile: not an MGRS tile id"),
    ("fetch-nothing-published", ["fetch", "--stack", "{stack}", "--year", str(EMPTY_YEAR),
                                 "--tile", T, "--dest", "{tmp}"], 2, "nothing published for"),
    ("status-unknown-arn", ["status", "--stack", "{stack}",
                            "arn:aws:states:us-east-1:000000000000:execution:nope:nope"], 2,
     "no execution"),
    ("status-not-an-arn", ["status", "--stack", "{stack}", "../not-an-arn"], 2, "no execution"),
    ("synth-scenes-0", ["synth", "--tiles", T, "--year", "2021", "--scenes", "0", "--out",
                        "{tmp}", "--no-load"], 2, "argument --scenes: must be within 1-200"),
    ("synth-scenes-1000", ["synth", "--tiles", T, "--year", "2021", "--scenes", "1000",
                           "--out", "{tmp}", "--no-load"], 2, "must be within 1-200, got 1000"),
    ("synth-tile-99ZZZ", ["synth", "--tiles", "99ZZZ", "--year", "2021", "--out", "{tmp}",
                          "--no-load"], 2, "not an MGRS tile id: '99ZZZ'"),
    ("synth-year-text", ["synth", "--tiles", T, "--year", "abc", "--out", "{tmp}",
                         "--no-load"], 2, "argument --year: invalid int value"),
]

#: STAC API answers: (id, tile, fault, times (None: every request), expected outcome, message
#: fragment). Each row searches its own tile (the proxy matches the fault on the tile's
#: ``MGRS-...`` in the search body) in a year without scenes: "empty" means the search got
#: through (after the retries) and the tile was recorded EMPTY; "failed" means ``FAILED.json``
#: names the ``StacApiError`` and the execution fails without publishing anything.
STAC_ROWS = [
    ("429-burst", "31UDQ", Fault(status=429, headers={"Retry-After": "1"}, path="/search"), 2,
     "empty", None),
    ("500-burst", "31UEQ", Fault(status=500, path="/search"), 3, "empty", None),
    ("503-burst", "31UFQ", Fault(status=503, path="/search"), 2, "empty", None),
    ("stall-once", "32UMU", Fault(delay=STAC_TIMEOUT_S + 3, path="/search"), 1, "empty", None),
    ("500-persistent", "32TMT", Fault(status=500, path="/search"), None, "failed",
     "too many 500 error responses"),
    ("malformed-json", "32TNT", Fault(body=b'{"type": "FeatureCollection", "features": [',
                                      path="/search"), None, "failed", "STAC search failed"),
    ("not-an-item-collection", "32TPT", Fault(body=b"[1, 2, 3]", path="/search"), None,
     "failed", "malformed answer"),
    ("stall-persistent", "32ULU", Fault(delay=STAC_TIMEOUT_S + 3, path="/search"), None,
     "failed", "Read timed out"),
]


# ------------------------------------------------------------------------------------------------
# The stack, the proxy and the helpers
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def proxy(local_env):
    """The proxy, on the STAC API's port + 1 when free: the same ``StacApiUrl`` run after run,
    so an unchanged stack is not redeployed."""
    from urllib.parse import urlsplit

    try:
        p = FaultProxy(local_env["STAC_API_URL"], port=urlsplit(local_env["STAC_API_URL"]).port
                       + 1)
    except OSError:  # taken: any free port (the stack is then redeployed with it)
        p = FaultProxy(local_env["STAC_API_URL"])
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def stack(local_env, proxy) -> run.Deployed:
    from cloudfree.pipeline.deploy import deploy_local

    t0 = time.monotonic()
    info = deploy_local(stack_name=STACK, endpoint=local_env["AWS_ENDPOINT_URL"],
                        stac_api_url=proxy.url,
                        parameters={"StacTimeoutSeconds": str(STAC_TIMEOUT_S)})
    print(f"\nbad-input stack {info.stack_name} {info.status} (StacApiUrl {proxy.url}) in "
          f"{time.monotonic() - t0:.1f}s", file=sys.stderr)
    return run.find_stack(info.stack_name)


def _sfn():
    import boto3

    return boto3.client("stepfunctions")


def _wait(arn: str, timeout: float = 240) -> dict:
    return wait_execution(arn, timeout, poll=1)


_wait_for = wait_for


def _plan_attempts(arn: str) -> int:
    """Times the Plan task was scheduled (the first Task of the execution)."""
    events = _sfn().get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return sum(1 for e in events if e["type"] == "TaskScheduled")


def _execute(stack: run.Deployed, name: str, payload: str) -> dict:
    """Start one execution, wait for it; the outcome the rows are checked against."""
    t0 = time.monotonic()
    try:
        arn = _sfn().start_execution(stateMachineArn=stack.state_machine_arn, name=name,
                                     input=payload)["executionArn"]
    except Exception as err:  # noqa: BLE001 - AWS refuses some inputs at StartExecution
        return {"status": "REFUSED", "cause": f"{type(err).__name__}: {err}", "seconds": 0}
    desc = _wait(arn)
    return {"arn": arn, "name": name, "status": desc["status"], "error": desc.get("error"),
            "cause": desc.get("cause") or "", "seconds": time.monotonic() - t0}


def _published(stack: run.Deployed) -> list[str]:
    """Everything under the published prefix but the collection document (Report rebuilds it
    once per execution, with no item links when nothing was published)."""
    layout = stack.settings.layout
    prefix = f"s3://{stack.data_bucket}/{layout.data_prefix}/"
    return [u for u in storage.list_uris(prefix) if u != layout.collection()]


def _tile_record(stack: run.Deployed, year: int, tile: str, marker: str) -> dict | None:
    """A tile's EMPTY/FAILED/DONE marker (``marker`` as ``"EMPTY.json"``), or None."""
    kind = marker.removesuffix(".json")
    uri = stack.settings.layout.tile_marker(year, tile, kind)
    return storage.read_json(uri) if storage.exists(uri) else None


def _reset_tile(stack: run.Deployed, year: int, tile: str) -> None:
    """Forget earlier runs of a row's tile (its markers), so the row's outcome is its own."""
    import boto3

    layout = stack.settings.layout
    s3 = boto3.client("s3")
    for prefix in (layout.run_prefix(year, tile) + "/",
                   layout.markers_prefix(year) + f"{tile}/"):
        for uri in list(storage.list_uris(prefix)):
            bucket, key = storage.split_s3(uri)
            s3.delete_object(Bucket=bucket, Key=key)


@dataclass
class Outcomes:
    """What each row of a table led to, by row id."""

    rows: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0


def _stamp() -> str:
    return datetime.now(UTC).strftime("%H%M%S") + f"{time.time_ns() % 1000:03d}"


# ------------------------------------------------------------------------------------------------
# 1. Execution input
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def execution_outcomes(stack) -> Outcomes:
    _reset_tile(stack, EMPTY_YEAR, T)
    stamp, t0 = _stamp(), time.monotonic()
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {rid: pool.submit(_execute, stack, f"bad-{rid}-{stamp}", _encode(value))
                   for rid, value, _, _ in EXECUTION_ROWS}
        out = Outcomes({rid: f.result() for rid, f in futures.items()})
    out.seconds = time.monotonic() - t0
    print(f"\nexecution input table: {len(EXECUTION_ROWS)} executions in {out.seconds:.1f}s",
          file=sys.stderr)
    return out


@pytest.mark.parametrize("rid,value,expect,fragment", EXECUTION_ROWS,
                         ids=[r[0] for r in EXECUTION_ROWS])
def test_execution_input(stack, execution_outcomes, rid, value, expect, fragment):
    got = execution_outcomes.rows[rid]
    if expect == "rejected":
        assert (got["status"], got["error"]) == ("FAILED", "InputError"), got
        assert fragment in got["cause"], got["cause"]
        # no crash loop: Plan answers bad input (InvalidInput fails the execution), so it runs
        # once: nothing is retried
        assert _plan_attempts(got["arn"]) == 1
        plan_list = stack.settings.layout.plan_list(got["name"])
        assert not storage.exists(plan_list)
    else:
        assert got["status"] == "SUCCEEDED", got.get("why", got)
        empty = _tile_record(stack, EMPTY_YEAR, T, "EMPTY.json")
        assert empty and fragment in empty["reason"] and empty["searched"] == 0
        report = storage.read_json(stack.settings.layout.report(got["name"]))
        assert (report["done"], report["empty"], report["failed"]) == (0, 1, 0)


def test_execution_name_with_dotdot_cannot_escape_the_plan_prefix(stack):
    """MiniStack accepts any execution name (AWS refuses ``/`` with InvalidName): Plan refuses
    a name that would make its S3 keys climb out of ``plans/``."""
    got = _execute(stack, f"../../bad-{_stamp()}", json.dumps(_in()))
    if got["status"] != "REFUSED":
        assert (got["status"], got["error"]) == ("FAILED", "InputError"), got
        assert "execution name" in got["cause"], got
    assert not [u for u in storage.list_uris(f"s3://{stack.control_bucket}/") if ".." in u]


def test_25000_tiles_are_accepted_by_plan(stack):
    """The limit itself: 25,000 tiles plan (invoking the deployed Plan function with the payload
    the state machine sends; a real execution would start 25,000 children on this machine)."""
    import boto3

    res = boto3.client("lambda").invoke(
        FunctionName=stack_function(stack, "PlanFunction"),
        Payload=json.dumps({"input": {"year": 2023, "tiles": tile_ids(25_000)},
                            "execution": f"plan-25000-{_stamp()}"}).encode())
    body = json.loads(res["Payload"].read())
    assert "FunctionError" not in res, body
    assert body["count"] == 25_000
    listed = storage.read_json(f"s3://{body['tiles_bucket']}/{body['tiles_key']}")
    assert len(listed) == 25_000 and listed[0] == {"tile": sorted(tile_ids(25_000))[0]}


def stack_function(stack: run.Deployed, logical: str) -> str:
    import boto3

    res = boto3.client("cloudformation").describe_stack_resource(
        StackName=stack.stack_name, LogicalResourceId=logical)
    return res["StackResourceDetail"]["PhysicalResourceId"]


# ------------------------------------------------------------------------------------------------
# 2. Reprocessing requests
# ------------------------------------------------------------------------------------------------
def _executions(stack: run.Deployed) -> dict[str, dict]:
    pages = _sfn().get_paginator("list_executions").paginate(
        stateMachineArn=stack.state_machine_arn)
    return {e["executionArn"]: e for p in pages for e in p["executions"]}


def _body(value: Any) -> bytes:
    if isinstance(value, Raw):
        return value.text.encode("utf-8", "surrogateescape")
    return json.dumps(value).encode()


def _submit(stack: run.Deployed, rid: str, name: str, value: Any, expect: str) -> dict:
    """Put one request under ``requests/`` and wait for what the S3 event led to."""
    before = set(_executions(stack)) if expect != "rejected" else set()
    storage.write_bytes(stack.settings.layout.request(name), _body(value))
    if expect == "rejected":
        uri = stack.settings.layout.rejected(name)
        return {"record": _wait_for(lambda: storage.exists(uri) and storage.read_json(uri), 180,
                                    f"rejected/ of {rid}")}
    tag = name.rsplit(".", 1)[0][:40]
    mine = _wait_for(lambda: [a for a in set(_executions(stack)) - before if tag in a], 180,
                     f"the execution of {rid}")
    return {"executions": mine, "desc": [_wait(a) for a in mine]}


def _reinvoke(stack: run.Deployed, key: str) -> dict:
    """Invoke the deployed reprocess function again with the S3 event of ``key`` (the sample
    event, ``events/reprocess.json``, pointed at this stack's bucket and the key)."""
    import boto3

    event = json.loads((REPO / "events" / "reprocess.json").read_text())
    event["Records"][0]["s3"]["bucket"].update(name=stack.control_bucket,
                                               arn=f"arn:aws:s3:::{stack.control_bucket}")
    event["Records"][0]["s3"]["object"]["key"] = key
    res = boto3.client("lambda").invoke(FunctionName=stack_function(stack, "ReprocessFunction"),
                                        Payload=json.dumps(event).encode())
    return {"error": res.get("FunctionError"), "body": json.loads(res["Payload"].read())}


@pytest.fixture(scope="module")
def request_outcomes(stack) -> Outcomes:
    """Requests go in two lanes, one after the other in each: MiniStack runs every S3 event's
    invocation in a thread of its own, so 21 puts at once would mean 21 concurrent cold
    Lambda workers on this 2-core machine; in lanes, two warm workers answer them all."""
    _reset_tile(stack, EMPTY_YEAR, T2)
    stamp, t0 = _stamp(), time.monotonic()
    before = set(_executions(stack))
    names = {rid: f"bad-{rid}-{stamp}.json" for rid, *_ in REQUEST_ROWS}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {rid: pool.submit(_submit, stack, rid, names[rid], value, expect)
                   for rid, value, expect, _ in REQUEST_ROWS}
        out = Outcomes({rid: f.result() for rid, f in futures.items()})
    time.sleep(3)  # a stray execution from a rejected request would have started by now
    out.rows["_all_new"] = {"executions": sorted(set(_executions(stack)) - before)}
    # a rejected request is answered, not raised: the same S3 event invoked again returns
    # without a FunctionError, so S3's async retries never fire (no crash loop)
    for rid, _, expect, _ in REQUEST_ROWS:
        if expect == "rejected":
            out.rows[rid]["invoke"] = _reinvoke(stack, "requests/" + names[rid])
    out.seconds = time.monotonic() - t0
    print(f"\nrequest table: {len(REQUEST_ROWS)} requests in {out.seconds:.1f}s",
          file=sys.stderr)
    return out


@pytest.mark.parametrize("rid,value,expect,fragment", REQUEST_ROWS,
                         ids=[r[0] for r in REQUEST_ROWS])
def test_reprocess_request(stack, request_outcomes, rid, value, expect, fragment):
    got = request_outcomes.rows[rid]
    if expect == "rejected":
        assert fragment in got["record"]["reason"], got["record"]
        assert got["invoke"]["error"] is None, got["invoke"]
        (result,) = got["invoke"]["body"]["results"]
        assert result["status"] == "rejected" and fragment in result["reason"]
    else:
        assert len(got["executions"]) == 1, got
        (desc,) = got["desc"]
        assert desc["status"] == "SUCCEEDED", desc.get("why", desc)
        empty = _tile_record(stack, EMPTY_YEAR, T2, "EMPTY.json")
        assert empty and fragment in empty["reason"]


def test_rejected_requests_start_nothing(stack, request_outcomes):
    started = [rid for rid, _, expect, _ in REQUEST_ROWS if expect != "rejected"]
    assert len(request_outcomes.rows["_all_new"]["executions"]) == len(started)


# ------------------------------------------------------------------------------------------------
# 3. The CLI
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_outcomes(stack, local_env, tmp_path_factory) -> Outcomes:
    tmp = tmp_path_factory.mktemp("cli")

    def call(rid: str, args: list[str]) -> dict:
        argv = [a.replace("{stack}", stack.stack_name).replace("{tmp}", str(tmp / rid))
                for a in args]
        res = subprocess.run([CLI, *argv], capture_output=True, text=True, timeout=120,
                             env={**os.environ, **local_env})
        return {"rc": res.returncode, "stderr": res.stderr, "stdout": res.stdout,
                "dest": tmp / rid}

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {rid: pool.submit(call, rid, args) for rid, args, _, _ in CLI_ROWS}
        out = Outcomes({rid: f.result() for rid, f in futures.items()})
    out.seconds = time.monotonic() - t0
    print(f"\nCLI table: {len(CLI_ROWS)} calls in {out.seconds:.1f}s", file=sys.stderr)
    return out


@pytest.mark.parametrize("rid,args,rc,fragment", CLI_ROWS, ids=[r[0] for r in CLI_ROWS])
def test_cli(cli_outcomes, rid, args, rc, fragment):
    got = cli_outcomes.rows[rid]
    assert got["rc"] == rc, got
    assert fragment in got["stderr"], got["stderr"][-2000:]
    assert "Traceback" not in got["stderr"]
    assert "started " not in got["stdout"]  # nothing was started
    if "synth" in args:  # refused before writing anything
        assert not Path(got["dest"]).exists() or not any(Path(got["dest"]).rglob("*"))


# ------------------------------------------------------------------------------------------------
# 4. STAC API answers (through the fault proxy)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stac_outcomes(stack, proxy) -> Outcomes:
    stamp, t0 = _stamp(), time.monotonic()
    for _, tile, fault, times, _, _ in STAC_ROWS:
        _reset_tile(stack, EMPTY_YEAR, tile)
        proxy.inject(replace(fault, match=f"MGRS-{tile}".encode()), times)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {rid: pool.submit(_execute, stack, f"stac-{rid}-{stamp}",
                                    json.dumps({"year": EMPTY_YEAR, "tiles": [tile]}))
                   for rid, tile, *_ in STAC_ROWS}
        out = Outcomes({rid: f.result() for rid, f in futures.items()})
    for rid, tile, *_ in STAC_ROWS:
        match = f"MGRS-{tile}".encode()
        out.rows[rid].update(injected=proxy.injected_for(match),
                             forwarded=proxy.forwarded_for(match),
                             empty=_tile_record(stack, EMPTY_YEAR, tile, "EMPTY.json"),
                             failed=_tile_record(stack, EMPTY_YEAR, tile, "FAILED.json"))
    out.seconds = time.monotonic() - t0
    print(f"\nSTAC fault table: {len(STAC_ROWS)} executions in {out.seconds:.1f}s; "
          + ", ".join(f"{rid}: {o['status']} {o['seconds']:.0f}s, {len(o['injected'])} faults"
                      for rid, o in out.rows.items()), file=sys.stderr)
    proxy.clear()
    return out


@pytest.mark.parametrize("rid,tile,fault,times,expect,fragment", STAC_ROWS,
                         ids=[r[0] for r in STAC_ROWS])
def test_stac_api_answer(stack, stac_outcomes, rid, tile, fault, times, expect, fragment):
    got = stac_outcomes.rows[rid]
    if expect == "empty":  # the burst was retried (in select, by urllib3) and the search got
        assert got["status"] == "SUCCEEDED", got.get("why", got)  # through
        assert len(got["injected"]) == times and 200 in got["forwarded"], got
        assert got["empty"] and got["empty"]["searched"] == 0 and got["failed"] is None
    else:
        assert got["status"] == "FAILED", got
        assert got["failed"] and got["empty"] is None, got
        cause = got["failed"]["cause"]
        assert "StacApiError" in cause and fragment in cause, cause
        if not fault.delay:  # (a stalled request is answered, late, after the client left)
            assert 200 not in got["forwarded"]
        # bounded, not a loop: select gives up after its retries (urllib3: 4 retries of a
        # 5xx, 1 of a read timeout, none of a 200 with a bad body), the state machine after
        # the table's retries (MiniStack names every error Runtime.HandlerError; on AWS the
        # StacApiError rule retries as many times)
        from cloudfree import retry

        per_try = 2 if fault.delay else (5 if fault.status else 1)
        tries = 1 + retry.policy("Runtime.HandlerError").attempts
        assert tries == 1 + retry.policy("StacApiError").attempts
        assert len(got["injected"]) <= tries * per_try, got["injected"]
        assert got["seconds"] < 240  # wall time, cold Lambda starts on a busy machine included


def test_nothing_was_ever_published(stack, execution_outcomes, request_outcomes, cli_outcomes,
                                    stac_outcomes):
    """No row had scenes: whatever failed or was refused, no object under the published
    prefix (no partial item, no stray COG)."""
    assert _published(stack) == []
