"""``cloudfree synth``: generate a synthetic Earth Search archive (local S3 + STAC API or --out)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..cli import bounded_int
from .render import SKY_CLOUDINESS
from .truth import LANDSCAPES

#: A year holds about 150 Sentinel-2 acquisitions of a tile (5-day revisit, overlapping orbits).
MAX_SCENES = 200

def share(text: str) -> float:
    """argparse type: a number in 0..1."""
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a share in 0..1, got {text!r}") from err
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in 0..1, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``synth`` sub-command."""
    p = sub.add_parser("synth", help="generate a synthetic Sentinel-2 L2A archive with a truth",
                       description=__doc__)
    p.add_argument("--tiles", required=True, help="comma-separated MGRS tiles, e.g. 33UUP")
    p.add_argument("--year", required=True, type=int)
    p.add_argument("--scenes", type=bounded_int(1, MAX_SCENES), default=24,
                   help=f"acquisitions per tile, 1-{MAX_SCENES} (default 24)")
    p.add_argument("--aoi", default=None, help="minlon,minlat,maxlon,maxlat: data only there")
    p.add_argument("--bucket", default="sentinel-cogs")
    p.add_argument("--out", default=None, help="write to this folder instead of S3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--landscape", choices=LANDSCAPES, default="temperate",
                   help="temperate (vegetation, soil, water) or desert (bright sand and rock, "
                        "no water: no single scene's pixels reveal the BOA offset)")
    p.add_argument("--cloudiness", choices=SKY_CLOUDINESS, default="normal",
                   help="normal (a third each clear, broken, overcast) or cloudy (mostly "
                        "overcast: with --scenes 12 about 3-5 clear observations per pixel)")
    p.add_argument("--scl-miss", type=share, default=0.0, metavar="F",
                   help="share 0..1 of cloud and shadow patches left out of the written SCL "
                        "(the pixels stay cloudy; the truth manifest lists them)")
    p.add_argument("--edge-haze", type=float, default=0.0, metavar="OPACITY",
                   help="peak opacity (0..0.5) of unflagged thin haze around clouds")
    p.add_argument("--api-url", default=None,
                   help="STAC API to load items into (default $STAC_API_URL unless --out)")
    p.add_argument("--no-load", action="store_true", help="do not load items into a STAC API")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``cloudfree synth``."""
    from .archive import generate_archive
    from .render import Sky

    api_url = args.api_url
    if api_url is None and args.out is None:
        api_url = os.environ.get("STAC_API_URL")
    if args.no_load:
        api_url = None
    summary = generate_archive(args.tiles, args.year, args.scenes, aoi=args.aoi,
                               bucket=args.bucket, out=args.out, seed=args.seed,
                               api_url=api_url, landscape=args.landscape,
                               sky=Sky(args.cloudiness, args.scl_miss, args.edge_haze))
    info = {"tiles": summary.tiles, "year": summary.year, "items": len(summary.items),
            "loaded": summary.loaded, "manifests": summary.manifests, "root": summary.root,
            "seconds": round(summary.seconds, 1)}
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(f"synth: {len(summary.items)} items for {','.join(summary.tiles)} {summary.year} "
              f"in {summary.seconds:.1f}s; loaded {summary.loaded} into "
              f"{api_url or '(no STAC API)'}; truth: {', '.join(summary.manifests)}",
              file=sys.stderr)
    return 0
