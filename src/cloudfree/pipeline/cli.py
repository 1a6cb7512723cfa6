"""``cloudfree run|status|reprocess|fetch|deploy|demo|catalog``: drive the deployed pipeline."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..cli import bounded_int, checked
from ..errors import InputError
from ..grid import parse_bbox, parse_tile
from ..tasks import check_year


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stack", default="cloudfree", help="CloudFormation stack name")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="start one execution for a year and follow it")
    _common(p)
    p.add_argument("--year", type=checked(check_year), required=True)
    p.add_argument("--tiles", nargs="*", default=[], help="MGRS tiles, e.g. 33UUP 33UVP")
    p.add_argument("--aoi", type=checked(parse_bbox),
                   help="minlon,minlat,maxlon,maxlat (adds tiles)")
    p.add_argument("--world", action="store_true",
                   help='every Sentinel-2 land tile (execution input "aoi": "world")')
    p.add_argument("--scenes", type=bounded_int(1, 64),
                   help="scenes per tile, 1-64 (default: the stack's)")
    p.add_argument("--force", action="store_true", help="recompute finished work")
    p.add_argument("--no-follow", action="store_true", help="start and return")
    p.add_argument("--dry-run", action="store_true",
                   help="print the validated execution input and its tile count; start nothing")
    p.set_defaults(func=_run)

    p = sub.add_parser("status", help="an execution's status and its tiles")
    _common(p)
    p.add_argument("execution", help="execution ARN (as printed by `cloudfree run`)")
    p.set_defaults(func=_status)

    p = sub.add_parser("reprocess", help="drop a reprocessing request into the control bucket")
    _common(p)
    p.add_argument("--year", type=checked(check_year), required=True)
    p.add_argument("--tiles", nargs="+", required=True)
    p.add_argument("--dry-run", action="store_true",
                   help="print the request and where it would go; write nothing")
    p.set_defaults(func=_reprocess)

    p = sub.add_parser("fetch", help="copy a tile's published outputs to a local folder")
    _common(p)
    p.add_argument("--year", type=checked(check_year), required=True)
    p.add_argument("--tile", type=checked(lambda v: parse_tile(v).id), required=True)
    p.add_argument("--dest", type=Path, default=Path("out"))
    p.set_defaults(func=_fetch)

    p = sub.add_parser("deploy", help="sam build + sam deploy to the local stack (MiniStack)")
    _common(p)
    p.set_defaults(func=_deploy)

    p = sub.add_parser("catalog", help="the published catalog (collection.json)")
    catalog = p.add_subparsers(dest="catalog_command", required=True)
    p = catalog.add_parser("rebuild", help="rebuild collection.json from the index listing, "
                                           "and the geoparquet")
    _common(p)
    p.set_defaults(func=_catalog_rebuild)
    p = catalog.add_parser("load", help="load the published items into a STAC API (upsert, "
                                        "incremental) and write the stac-geoparquet file")
    _common(p)
    p.add_argument("--api", default=None, help="STAC API with transactions (default: the local "
                                               "stack's, $STAC_API_URL); 'none' to skip")
    p.add_argument("--parquet", default=None,
                   help="geoparquet path or s3:// URI (default: beside collection.json)")
    p.add_argument("--force", action="store_true", help="reload items already current")
    p.set_defaults(func=_catalog_load)

    p = sub.add_parser("demo", help="the whole thing locally: synth, deploy, run, fetch, score")
    _common(p)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default out/demo, or out/demo-desert)")
    p.add_argument("--scenes", type=int, default=None,
                   help="synthetic scenes per tile (default 24; desert 20)")
    p.add_argument("--landscape", choices=("temperate", "desert"), default="temperate",
                   help="desert: one bright desert tile; prints every scene's offset decision "
                        "against the synthetic truth")
    p.add_argument("--outliers", choices=("on", "off"), default=None,
                   help="deploy with OutlierRejection on/off (default: the template's, on); "
                        "to measure what the rejection costs and changes")
    p.set_defaults(func=_demo)


def _run(args: argparse.Namespace) -> int:
    from . import run

    options = {"force": args.force} | ({"scenes": args.scenes} if args.scenes is not None
                                        else {})
    if args.world and args.aoi:
        raise InputError("give --aoi or --world, not both")
    aoi = "world" if args.world else args.aoi
    payload = run.execution_input(args.year, args.tiles, aoi, options)  # before the stack
    if args.dry_run:
        from ..tasks import resolve_tiles

        n = len(resolve_tiles(args.tiles, aoi))
        print(json.dumps({"input": payload, "tiles": n}))
        print(f"{n} tile(s); nothing started (drop --dry-run to start)")
        return 0
    deployed = run.find_stack(args.stack)
    arn = run.start(deployed, payload)
    print(f"started {arn}")
    if args.no_follow:
        return 0
    from ..tasks import resolve_tiles

    tiles = resolve_tiles(args.tiles, aoi)
    desc = run.follow(deployed, arn, args.year, tiles)
    pending = run.wait_published(deployed, args.year, tiles)
    if pending:
        print(f"warning: items not yet published for {pending}")
    for row in run.tile_statuses(deployed, args.year, tiles):
        print(f"  {row['tile']}: {row['status']}" + (f" ({row.get('error')})"
                                                     if row["status"] == "failed" else ""))
    line = run.cost_line(deployed, desc)
    if line:
        print(line)
    print(f"execution {desc['status']}")
    return 0 if desc["status"] == "SUCCEEDED" else 1


def _status(args: argparse.Namespace) -> int:
    import boto3
    from botocore.exceptions import ClientError, ParamValidationError

    from . import run

    deployed = run.find_stack(args.stack)
    try:
        desc = boto3.client("stepfunctions").describe_execution(executionArn=args.execution)
    except (ClientError, ParamValidationError) as err:
        raise InputError(f"no execution {args.execution!r} ({err}); pass the ARN that "
                         "`cloudfree run` printed") from err
    print(f"{desc['name']}: {desc['status']}")
    if desc.get("error") or desc.get("cause"):
        print(f"  error: {desc.get('error')}: {desc.get('cause')}")
    try:
        request = run.check_request(json.loads(desc.get("input") or "null"))
    except (InputError, ValueError) as err:  # the execution failed (or will fail) its Plan
        print(f"  input not valid: {err}")
        return 0
    for row in run.tile_statuses(deployed, request["year"], request["tiles"]):
        status = row["status"]
        if desc["status"] == "RUNNING" and row.get("error") == "Incomplete":
            status = "in progress"  # no record yet: the tile has not finished, not failed
        print(f"  {row['tile']}: {status}")
    return 0


def _reprocess(args: argparse.Namespace) -> int:
    from ..tasks import resolve_tiles
    from . import run

    resolve_tiles(args.tiles)  # before the stack is looked up
    deployed = run.find_stack(args.stack)
    if args.dry_run:
        print(json.dumps({"year": args.year, "tiles": args.tiles, "options": {},
                          "to": deployed.settings.layout.request("<name>.json")}))
        return 0
    uri = run.submit_request(deployed, args.year, args.tiles)
    print(f"request written: {uri}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from ..progress import progress_bar
    from . import run

    deployed = run.find_stack(args.stack)
    with progress_bar(f"fetching {args.tile} {args.year}") as advance:
        files = run.fetch(deployed, args.year, args.tile, args.dest, progress=advance)
    for f in files:
        print(f)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from . import deploy

    info = deploy.deploy_local(stack_name=args.stack)
    print(json.dumps(dataclasses.asdict(info), indent=1, default=str))
    return 0


def _catalog_rebuild(args: argparse.Namespace) -> int:
    from ..publish import rebuild_collection
    from . import run

    settings = run.publishing_settings(args.stack)
    result = rebuild_collection(settings)
    print(f"{result['collection']}: {result['items']} items ({result['status']})")
    if result["items"]:  # the geoparquet is rebuilt with the collection (CLI only: rustac)
        from ..catalog_search import load_with_progress

        loaded = load_with_progress(settings, None, settings.layout.geoparquet())
        print(f"geoparquet {loaded.parquet}")
    return 0


def _catalog_load(args: argparse.Namespace) -> int:
    from ..catalog_search import load_with_progress
    from . import run

    settings = run.publishing_settings(args.stack)
    api = None if (args.api or "").lower() == "none" else (args.api or _local_api())
    result = load_with_progress(settings, api, args.parquet or settings.layout.geoparquet(),
                                force=args.force)
    where = f" into {api}" if api else ""
    print(f"{result.collection}: {result.loaded} item(s) loaded{where}, {result.unchanged} "
          f"already current; geoparquet {result.parquet}")
    return 0


def _local_api() -> str:
    import os

    from ..errors import ConfigError

    url = os.environ.get("STAC_API_URL")
    if not url:
        raise ConfigError("no STAC API to load into: pass --api URL, or point this shell at "
                          'the local stack with eval "$(.venv/bin/cloudfree local env)"')
    return url


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(out=args.out, stack_name=args.stack, scenes=args.scenes,
                    landscape=args.landscape, outliers=args.outliers)
