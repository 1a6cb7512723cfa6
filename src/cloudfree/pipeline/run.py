"""Start and follow executions of the deployed state machine (local MiniStack or AWS).

The stack is found by name (CloudFormation outputs); boto3 goes wherever ``AWS_ENDPOINT_URL`` /
the AWS profile points. Progress is read from the objects the pipeline writes: tiles done
(items), windows done (window statistics) out of the windows the manifests imply.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import storage
from ..errors import CloudfreeError, InputError
from ..settings import Settings
from ..tasks import (
    check_request,
    check_year,
    resolve_tiles,
    tile_status,
    tile_transitions,  # noqa: F401 (re-exported: the CLI reports it)
)

TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


@dataclass(frozen=True)
class Deployed:
    """What the CLI needs of a deployed stack (from its CloudFormation outputs)."""

    stack_name: str
    work_bucket: str
    data_bucket: str
    control_bucket: str
    state_machine_arn: str
    memory_mb: int = 3008

    @property
    def settings(self) -> Settings:
        return Settings(self.work_bucket, self.data_bucket, self.control_bucket,
                        state_machine_arn=self.state_machine_arn,
                        median_memory_mb=self.memory_mb)


def find_stack(stack_name: str = "cloudfree") -> Deployed:
    """The stack's buckets and state machine (outputs) and median memory (parameter)."""
    from .deploy import stack_info

    info = stack_info(stack_name)
    return Deployed(stack_name, info.work_bucket, info.data_bucket, info.control_bucket,
                    info.state_machine_arn, int(info.parameters.get("MedianMemoryMB") or 3008))


def publishing_settings(stack_name: str) -> Settings:
    """The settings the publish Lambda runs with (public base URL included), so a collection
    rebuilt from the CLI is byte for byte the one the pipeline writes."""
    from dataclasses import replace

    from .deploy import stack_info

    info = stack_info(stack_name)
    base = None
    if info.parameters.get("Local", "false") != "true" and info.data_public_url:
        base = info.data_public_url.rstrip("/").rsplit("/", 1)[0]
    return replace(find_stack(stack_name).settings, public_base_url=base)


def execution_input(year: int, tiles: list[str] | None, aoi: Any = None,
                    options: dict | None = None) -> dict:
    """The validated execution input (checked here too, to fail before starting)."""
    aoi = aoi if isinstance(aoi, str) or not aoi else list(aoi)  # a bbox or "world"
    payload = {"year": year, "tiles": list(tiles or []), "aoi": aoi, "options": options or {}}
    check_request(payload)
    return {**payload, "year": check_year(year)}


def start(deployed: Deployed, payload: dict, name: str | None = None) -> str:
    import boto3

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    name = name or f"y{payload['year']}-{stamp}"
    resp = boto3.client("stepfunctions").start_execution(
        stateMachineArn=deployed.state_machine_arn, name=name, input=json.dumps(payload))
    return resp["executionArn"]


_EXPECTED: dict[tuple[str, int, str], int] = {}


def expected_windows(deployed: Deployed, year: int, tile: str) -> int | None:
    """Windows of a tile (once its manifest exists), from the window plan select wrote into
    the manifest; remembered, so polling reads each manifest once."""
    from ..manifest import Manifest

    cache_key = (deployed.work_bucket, int(year), tile)
    if cache_key in _EXPECTED:
        return _EXPECTED[cache_key]
    uri = deployed.settings.layout.manifest(year, tile)
    if not storage.exists(uri):
        return None
    _EXPECTED[cache_key] = Manifest.read(uri).window_count()
    return _EXPECTED[cache_key]


#: Above this many tiles, progress comes from the Map Run's counters, not from listing windows.
DETAILED_PROGRESS_TILES = 20


def map_run_counts(execution_arn: str) -> dict | None:
    """The Distributed Map's item counters (succeeded, failed, running, total), if started."""
    import boto3

    sfn = boto3.client("stepfunctions")
    runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
    if not runs:
        return None
    return sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"]).get("itemCounts")


def progress(deployed: Deployed, year: int, tiles: list[str],
             execution_arn: str | None = None) -> dict:
    """Tiles finished and windows written so far.

    For a few tiles both are read from the objects the pipeline writes; for many (a continent)
    only the Map Run's counters are read, so polling stays cheap whatever the run's size.
    """
    if len(tiles) > DETAILED_PROGRESS_TILES and execution_arn:
        counts = map_run_counts(execution_arn) or {}
        done = int(counts.get("succeeded", 0)) + int(counts.get("failed", 0))
        return {"tiles_done": done, "tiles": len(tiles), "windows_done": done,
                "windows": len(tiles)}
    layout = deployed.settings.layout
    done = windows = total = 0
    for tile in tiles:
        if storage.exists(layout.item(year, tile)):
            done += 1
        exp = expected_windows(deployed, year, tile)
        if exp:
            total += exp
            windows += sum(1 for u in storage.list_uris(
                f"{layout.run_prefix(year, tile)}/windows/") if u.endswith(".json"))
    return {"tiles_done": done, "tiles": len(tiles), "windows_done": windows,
            "windows": total}


def _bar(frac: float, width: int = 28) -> str:
    n = int(round(frac * width))
    return "#" * n + "-" * (width - n)


def follow(deployed: Deployed, execution_arn: str, year: int, tiles: list[str],
           poll: float = 2.0, timeout: float = 3600, out=sys.stderr) -> dict:
    """Poll until the execution ends, printing a progress bar; return describe_execution."""
    import boto3

    sfn = boto3.client("stepfunctions")
    t0 = time.monotonic()
    tty = out.isatty()
    last, last_t = "", -1e9
    while True:
        desc = sfn.describe_execution(executionArn=execution_arn)
        p = progress(deployed, year, tiles, execution_arn)
        frac = p["windows_done"] / p["windows"] if p["windows"] else 0.0
        line = (f"[{_bar(frac)}] tiles {p['tiles_done']}/{p['tiles']}  windows "
                f"{p['windows_done']}/{p['windows'] or '?'}  {desc['status'].lower()}  "
                f"{time.monotonic() - t0:5.0f}s")
        now = time.monotonic()
        if tty:
            print("\r" + line, end="", file=out, flush=True)
        elif (line.split("  ")[:2] != last.split("  ")[:2] and now - last_t >= 15) or \
                desc["status"] in TERMINAL:  # a line every 15 s at most when logging to a file
            print(line, file=out, flush=True)
            last, last_t = line, now
        if desc["status"] in TERMINAL:
            if tty:
                print(file=out)
            return desc
        if time.monotonic() - t0 > timeout:
            raise CloudfreeError(f"execution still {desc['status']} after {timeout:.0f}s")
        time.sleep(poll)


def wait_published(deployed: Deployed, year: int, tiles: list[str], timeout: float = 300,
                   poll: float = 2.0) -> list[str]:
    """Wait until every completed tile's item is published (publish runs on the completion
    marker's S3 event, so it can finish after the execution); return the tiles still pending."""
    layout = deployed.settings.layout
    t0 = time.monotonic()
    while True:
        pending = [t for t in tiles if storage.exists(layout.tile_done(year, t))
                   and not storage.exists(layout.item(year, t))]
        if not pending or time.monotonic() - t0 > timeout:
            return pending
        time.sleep(poll)


def tile_statuses(deployed: Deployed, year: int, tiles: list[str]) -> list[dict]:
    return [tile_status(t, year, deployed.settings) for t in tiles]


def fetch(deployed: Deployed, year: int, tile: str, dest: Path,
          progress: Any = None) -> list[Path]:
    """Copy a tile's published item and the assets it points at to a local folder;
    ``progress(done, total)`` after each file."""
    from ..grid import parse_tile

    tile = parse_tile(tile).id
    item_uri = deployed.settings.layout.item(check_year(year), tile)
    raw = storage.read_if_exists(item_uri)  # one GET: the item is parsed and saved as read
    if raw is None:
        raise InputError(not_published(deployed, year, tile))
    item = storage.parse_json(item_uri, raw)
    files = [Path(dest) / item_uri.rsplit("/", 1)[-1]]
    files[0].parent.mkdir(parents=True, exist_ok=True)
    files[0].write_bytes(raw)
    for i, asset in enumerate(item["assets"].values(), 1):
        uri = asset_uri(asset["href"], deployed.data_bucket)
        files.append(Path(dest) / uri.rsplit("/", 1)[-1])
        storage.download_file(uri, files[-1])
        if progress:
            progress(i, len(item["assets"]))
    return files


def not_published(deployed: Deployed, year: int, tile: str) -> str:
    """Why a tile-year has no item, and what to do about it (from its markers)."""
    layout = deployed.settings.layout
    row = tile_status(tile, year, deployed.settings)
    head = f"nothing published for {tile} {year}: "
    if row["status"] == "empty":
        reason = storage.read_json(layout.tile_empty(year, tile)).get("reason", "")
        return (head + f"no scenes for that year{f' ({reason})' if reason else ''}; pick "
                "another year, or check the source archive with pystac-client (collection "
                f"sentinel-2-l2a, grid:code MGRS-{tile})")
    if row["status"] == "failed" and row.get("marker_at"):
        return (head + f"the tile failed; reprocess it with `cloudfree reprocess --year {year} "
                f"--tiles {tile}`")
    if row["status"] == "done":
        return head + "computed but not published yet; wait a minute and fetch again"
    return head + f"run it first with `cloudfree run --year {year} --tiles {tile}`"


def asset_uri(href: str, data_bucket: str) -> str:
    """An item's asset href (``s3://`` or the bucket's public https URL) as an ``s3://`` URI."""
    if href.startswith("s3://"):
        return href
    marker = f"{data_bucket}."
    host_and_key = href.split("://", 1)[-1]
    if host_and_key.startswith(marker):
        return f"s3://{data_bucket}/{host_and_key.split('/', 1)[1]}"
    raise InputError(f"asset href {href!r} is not in the data bucket {data_bucket}")


def submit_request(deployed: Deployed, year: int, tiles: list[str], name: str | None = None,
                   options: dict | None = None) -> str:
    """Drop a reprocessing request under the control bucket's ``requests/`` (S3 event → run)."""
    check_year(year)
    resolve_tiles(tiles)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    uri = deployed.settings.layout.request(name or f"{year}-{'-'.join(tiles)[:60]}-{stamp}.json")
    storage.write_json(uri, {"year": year, "tiles": tiles, "options": options or {}})
    return uri


def _history(sfn, execution_arn: str) -> list[dict]:
    events, token = [], None
    while True:
        kw = {"executionArn": execution_arn, "maxResults": 1000}
        if token:
            kw["nextToken"] = token
        page = sfn.get_execution_history(**kw)
        events.extend(page["events"])
        token = page.get("nextToken")
        if not token:
            return events


def _children(sfn, execution_arn: str) -> list[str]:
    """Child executions of the execution's Distributed Map runs (one per tile)."""
    arns = []
    for run_ in sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", []):
        token = None
        while True:
            kw = {"mapRunArn": run_["mapRunArn"], "maxResults": 1000}
            if token:
                kw["nextToken"] = token
            page = sfn.list_executions(**kw)
            arns.extend(e["executionArn"] for e in page["executions"])
            token = page.get("nextToken")
            if not token:
                break
    return arns


def failure(execution_arn: str, events: int = 6) -> str:
    """Why an execution failed, for a person: its error and cause, then each failed Distributed
    Map child's, then the last failure events of their histories (a task's error after its
    retries ran out, a map run's tolerated-failure breach)."""
    import boto3

    sfn = boto3.client("stepfunctions")
    lines = []
    for arn in (execution_arn, *_children(sfn, execution_arn)):
        desc = sfn.describe_execution(executionArn=arn)
        if desc["status"] == "SUCCEEDED":
            continue
        lines.append(f"{desc['name']}: {desc['status']} {desc.get('error')}: "
                     f"{(desc.get('cause') or '')[:600]}")
        failed = [e for e in _history(sfn, arn) if e["type"].endswith(("Failed", "TimedOut"))]
        for e in failed[-events:]:
            det = next((v for k, v in e.items() if k.endswith("EventDetails")), {}) or {}
            lines.append(f"  {e['type']}: {det.get('error')}: {(det.get('cause') or '')[:400]}")
    return "\n".join(lines) or f"{execution_arn}: nothing failed"


def _sizes(events: list[dict]) -> tuple[int, int, int]:
    """(state transitions, largest state payload, largest Lambda result) of a history."""
    transitions = sum(1 for e in events if e["type"].endswith("StateEntered"))
    max_state = max_lambda = 0
    for e in events:
        for key, det in e.items():
            if not key.endswith("EventDetails") or not isinstance(det, dict):
                continue
            for field in ("input", "output"):
                size = len((det.get(field) or "").encode())
                max_state = max(max_state, size)
                if key.startswith(("lambdaFunctionSucceeded", "taskSucceeded")):
                    max_lambda = max(max_lambda, size)
    return transitions, max_state, max_lambda


#: Standard workflow price per state transition (USD).
TRANSITION_USD = 0.025 / 1000


def execution_history_stats(execution_arn: str) -> dict:
    """State transitions and the largest state payload / Lambda result over the execution and
    every Distributed Map child, from their histories (and their inputs/outputs).

    MiniStack records no events for the states inside a Distributed Map child; there the child
    count and its execution input/output are still checked, and ``tile_transitions`` gives the
    per-tile transitions from the select result (what AWS bills).
    """
    import boto3

    sfn = boto3.client("stepfunctions")
    parent, max_state, max_lambda = _sizes(_history(sfn, execution_arn))
    per_child = []
    for arn in _children(sfn, execution_arn):
        t, s, lam = _sizes(_history(sfn, arn))
        desc = sfn.describe_execution(executionArn=arn)
        io = max(len((desc.get(k) or "").encode()) for k in ("input", "output"))
        per_child.append(t)
        max_state, max_lambda = max(max_state, s, io), max(max_lambda, lam)
    return {"transitions": parent + sum(per_child), "parent_transitions": parent,
            "tiles": len(per_child), "child_events_recorded": any(per_child),
            "max_payload_bytes": max_state, "max_lambda_result_bytes": max_lambda}


def cost_line(deployed: Deployed, desc: dict) -> str | None:
    """The finished execution's cost per done tile from its report (None when it wrote
    none): the Lambda GB-s measured against ``cloudfree plan``'s for the same tiles."""
    data = storage.read_if_exists(deployed.settings.layout.report(desc["name"]))
    if data is None:
        return None
    cost = json.loads(data).get("cost_per_done_tile") or {}
    if not cost:
        return None
    line = (f"cost per done tile: {cost['lambda_gb_seconds']:,.1f} Lambda GB-s, "
            f"{cost['state_transitions']:,.0f} state transitions")
    if cost.get("planned_lambda_gb_seconds"):
        line += (f"; cloudfree plan says {cost['planned_lambda_gb_seconds']:,.1f} GB-s for the "
                 f"observed part of tiles of as many scenes (measured / planned "
                 f"{cost['measured_over_planned']})")
    return line

