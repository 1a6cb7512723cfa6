"""``cloudfree plan``: the command over :mod:`cloudfree.costs` (kept out of the Lambda layer
with the rest of the CLI; ``costs`` itself ships, for the complete step's planned cost)."""

from __future__ import annotations

import json

from . import costs
from .costs import (
    BAND_CONCURRENCY,
    TILE_CONCURRENCY,
    WINDOW_CONCURRENCY,
    project,
    report,
    summary,
)
from .errors import InputError


def register(sub) -> None:
    """Add the ``plan`` sub-command."""
    from .cli import bounded_int, checked
    from .grid import parse_bbox
    from .settings import COG_COMPRESSIONS, DEFAULT_STAC_API, PUBLIC_STORAGE_CLASSES

    p = sub.add_parser("plan", help="dry run: scenes, bytes, GETs, GB-s, transitions and "
                       "dollars of a year of tiles on AWS",
                       description=(costs.__doc__ or "").splitlines()[0])
    p.add_argument("--year", required=True, type=int)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tiles", help="comma-separated MGRS tiles")
    where.add_argument("--aoi", type=checked(parse_bbox), help="minlon,minlat,maxlon,maxlat")
    where.add_argument("--world", action="store_true", help="every land tile (20,638)")
    p.add_argument("--offline", action="store_true",
                   help="no STAC search: every tile gets --scenes scenes")
    p.add_argument("--scenes", type=bounded_int(1, 64), default=16, help="SceneCount (16)")
    p.add_argument("--memory-mb", type=bounded_int(512, 10240), default=3008,
                   help="MedianMemoryMB = AssembleMemoryMB (3008)")
    p.add_argument("--tile-concurrency", type=bounded_int(1, 10000), default=TILE_CONCURRENCY)
    p.add_argument("--band-concurrency", type=bounded_int(1, 40), default=BAND_CONCURRENCY)
    p.add_argument("--window-concurrency", type=bounded_int(1, 40),
                   default=WINDOW_CONCURRENCY)
    p.add_argument("--storage-class", default=PUBLIC_STORAGE_CLASSES[0],
                   choices=PUBLIC_STORAGE_CLASSES,
                   help="PublicStorageClass of the published COGs (INTELLIGENT_TIERING)")
    p.add_argument("--compression", default=COG_COMPRESSIONS[0], choices=COG_COMPRESSIONS,
                   help="CogCompression of the published COGs (DEFLATE)")
    p.add_argument("--s3-mb-per-s", type=float, default=None,
                   help="each Lambda's S3 read rate in MB/s: invocations that read more than "
                        "they decode in that time wait for S3 (default: never; the plan prints "
                        "the rate its figures need)")
    p.add_argument("--stac-url", default=DEFAULT_STAC_API)
    p.add_argument("--json", action="store_true", help="JSON on stdout")
    p.set_defaults(func=_run)


def _found(tiles: list[str], year: int, stac_url: str) -> dict[str, int]:
    from .select import search_items

    return {t: len(search_items(stac_url, t, year)) for t in tiles}


def _run(args) -> int:
    from .tasks import check_year, resolve_tiles

    year = check_year(args.year)
    tiles = resolve_tiles(args.tiles.split(",") if args.tiles else None,
                          "world" if args.world else args.aoi)
    if args.world and not args.offline:
        raise InputError("--world searches 20,638 tiles one by one (hours): add --offline "
                         "(every tile gets --scenes scenes), or plan an --aoi")
    found = None if args.offline else _found(tiles, year, args.stac_url)
    p = project(year, tiles, scenes=args.scenes, memory_mb=args.memory_mb, found=found,
                tile_concurrency=args.tile_concurrency,
                band_concurrency=args.band_concurrency,
                window_concurrency=args.window_concurrency, storage_class=args.storage_class,
                compression=args.compression, s3_mb_per_s=args.s3_mb_per_s)
    if args.json:
        print(json.dumps(summary(p), indent=1))
    else:
        print(report(p))
    return 0

