"""``cloudfree view``: serve the published composites on a MapLibre map (Ctrl-C stops it)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="serve the published composites on a map (MapLibre + "
                                    "rio-tiler tiles straight from the COGs)")
    p.add_argument("--stack", default="cloudfree", help="CloudFormation stack name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0: any free port")
    p.set_defaults(func=_view)


def _view(args: argparse.Namespace) -> int:
    from ..pipeline import run
    from .server import ViewerServer, stack_catalog, vendor_file

    vendor_file("maplibre-gl.js")  # fail now, with the fix, rather than on the first page load
    catalog = stack_catalog(run.find_stack(args.stack).settings)
    server = ViewerServer(catalog, args.host, args.port)
    print(f"{len(catalog.items)} published item(s); viewer at {server.url} (Ctrl-C stops it)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
