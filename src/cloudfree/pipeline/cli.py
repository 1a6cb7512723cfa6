"""``cloudfree run|status|reprocess|fetch|deploy|demo|catalog``: drive the deployed pipeline."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..grid import parse_bbox


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stack", default="cloudfree", help="CloudFormation stack name")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="start one execution for a year and follow it")
    _common(p)
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--tiles", nargs="*", default=[], help="MGRS tiles, e.g. 33UUP 33UVP")
    p.add_argument("--aoi", type=parse_bbox, help="minlon,minlat,maxlon,maxlat (adds tiles)")
    p.add_argument("--world", action="store_true",
                   help='every Sentinel-2 land tile (execution input "aoi": "world")')
    p.add_argument("--scenes", type=int, help="scenes per tile (default: the stack's)")
    p.add_argument("--force", action="store_true", help="recompute finished work")
    p.add_argument("--no-follow", action="store_true", help="start and return")
    p.set_defaults(func=_run)

    p = sub.add_parser("status", help="an execution's status and its tiles")
    _common(p)
    p.add_argument("execution", help="execution ARN (as printed by `cloudfree run`)")
    p.set_defaults(func=_status)

    p = sub.add_parser("reprocess", help="drop a reprocessing request into the control bucket")
    _common(p)
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--tiles", nargs="+", required=True)
    p.set_defaults(func=_reprocess)

    p = sub.add_parser("fetch", help="copy a tile's published outputs to a local folder")
    _common(p)
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--tile", required=True)
    p.add_argument("--dest", type=Path, default=Path("out"))
    p.set_defaults(func=_fetch)

    p = sub.add_parser("deploy", help="sam build + sam deploy to the local stack (MiniStack)")
    _common(p)
    p.set_defaults(func=_deploy)

    p = sub.add_parser("catalog", help="the published catalog (collection.json)")
    catalog = p.add_subparsers(dest="catalog_command", required=True)
    p = catalog.add_parser("rebuild", help="rebuild collection.json from the index listing")
    _common(p)
    p.set_defaults(func=_catalog_rebuild)

    p = sub.add_parser("demo", help="the whole thing locally: synth, deploy, run, fetch, score")
    _common(p)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default out/demo, or out/demo-desert)")
    p.add_argument("--scenes", type=int, default=None,
                   help="synthetic scenes per tile (default 24; desert 20)")
    p.add_argument("--landscape", choices=("temperate", "desert"), default="temperate",
                   help="desert: one bright desert tile; prints every scene's offset decision "
                        "against the synthetic truth")
    p.set_defaults(func=_demo)


def _run(args: argparse.Namespace) -> int:
    from . import run

    deployed = run.find_stack(args.stack)
    options = {"force": args.force} | ({"scenes": args.scenes} if args.scenes else {})
    if args.world and args.aoi:
        raise SystemExit("give --aoi or --world, not both")
    aoi = "world" if args.world else args.aoi
    payload = run.execution_input(args.year, args.tiles, aoi, options)
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
    print(f"execution {desc['status']}")
    return 0 if desc["status"] == "SUCCEEDED" else 1


def _status(args: argparse.Namespace) -> int:
    import boto3

    from . import run

    deployed = run.find_stack(args.stack)
    desc = boto3.client("stepfunctions").describe_execution(executionArn=args.execution)
    payload = json.loads(desc.get("input") or "{}")
    print(f"{desc['name']}: {desc['status']}")
    if payload.get("year"):
        from ..tasks import resolve_tiles

        tiles = resolve_tiles(payload.get("tiles"), payload.get("aoi"))
        for row in run.tile_statuses(deployed, payload["year"], tiles):
            print(f"  {row['tile']}: {row['status']}")
    return 0


def _reprocess(args: argparse.Namespace) -> int:
    from . import run

    uri = run.submit_request(run.find_stack(args.stack), args.year, args.tiles)
    print(f"request written: {uri}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from . import run

    files = run.fetch(run.find_stack(args.stack), args.year, args.tile, args.dest)
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

    result = rebuild_collection(run.publishing_settings(args.stack))
    print(f"{result['collection']}: {result['items']} items ({result['status']})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(out=args.out, stack_name=args.stack, scenes=args.scenes,
                    landscape=args.landscape)
