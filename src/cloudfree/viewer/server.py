"""The viewer's HTTP server (standard library): the page, vendored MapLibre, and a tiny API.

    GET /                                   the MapLibre page (static/index.html)
    GET /static/<file>                      the page's own JS/CSS
    GET /vendor/<file>                      maplibre-gl.js/.css from node_modules (npm, setup)
    GET /api/items                          [{id, tile, year, bbox, geometry, count_max}]
    GET /api/layers                         the layer menu
    GET /api/legend?layer=L&item=ID         title, colour ramp, end labels
    GET /api/tiles/<item>/<z>/<x>/<y>.png?layer=L[&stretch=lo,hi]   a map tile (204 outside)
    GET /api/point?lon=..&lat=..[&item=..]  every asset's value at a point (of that item), the count
    GET /api/extent?item=ID                 lon/lat bounds of the item's pixels with data

Items come from a :class:`Catalog` (the deployed stack's published items, read once at start
and again on ``/api/items?reload=1``).
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import CloudfreeError, InputError
from ..httpserver import BackgroundServer
from . import layers

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
#: Where ``npm ci`` (scripts/setup.sh) puts MapLibre GL; see package.json beside this file.
NODE_MODULES = Path(__file__).parent / "node_modules"
VENDOR = {"maplibre-gl.js": "maplibre-gl/dist/maplibre-gl.js",
          "maplibre-gl.css": "maplibre-gl/dist/maplibre-gl.css"}
TILE_PATH = re.compile(r"^/api/tiles/([^/]+)/(\d+)/(\d+)/(\d+)\.png$")


def vendor_file(name: str) -> Path:
    """A vendored MapLibre file; an error saying how to install it when npm has not run."""
    path = NODE_MODULES / VENDOR[name]
    if not path.exists():
        raise CloudfreeError(f"{path} is missing: MapLibre GL is installed from npm by "
                             "`make setup` (scripts/setup.sh runs `npm ci` in "
                             f"{NODE_MODULES.parent})")
    return path


def point_in_bbox(bbox: list[float], lon: float, lat: float) -> bool:
    x0, y0, x1, y1 = bbox[:4]
    inside_x = x0 <= lon <= x1 if x0 <= x1 else (lon >= x0 or lon <= x1)  # antimeridian
    return inside_x and y0 <= lat <= y1


class Catalog:
    """The published items the viewer shows (``{id: item dict}``), from a loader."""

    def __init__(self, loader: Callable[[], list[dict[str, Any]]]) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self.items: dict[str, dict[str, Any]] = {}
        self.reload()

    def reload(self) -> None:
        items = {i["id"]: i for i in self._loader()}
        with self._lock:
            self.items = items

    def get(self, item_id: str) -> dict[str, Any]:
        try:
            return self.items[item_id]
        except KeyError as err:
            raise InputError(f"no published item {item_id!r}; known: "
                             f"{', '.join(sorted(self.items)) or 'none'}") from err

    def at(self, lon: float, lat: float) -> dict[str, Any] | None:
        """The newest item (highest year) whose bbox holds the point."""
        hits = [i for i in self.items.values() if point_in_bbox(i["bbox"], lon, lat)]
        return max(hits, key=lambda i: i["id"].split("_")[-1], default=None)

    def summary(self) -> list[dict[str, Any]]:
        return [{"id": i["id"], "tile": i["id"].split("_")[0],
                 "year": int(i["id"].split("_")[-1]), "bbox": i["bbox"],
                 "geometry": i["geometry"], "count_max": layers.count_max(i)}
                for i in sorted(self.items.values(), key=lambda i: i["id"])]


def stack_catalog(settings) -> Catalog:
    """The published items of a deployment (its index listing, then each item)."""
    from ..catalog_search import read_items
    from ..publish import indexed_items

    return Catalog(lambda: read_items(settings, indexed_items(settings)))


def _query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def _float(q: dict[str, str], key: str) -> float:
    try:
        return float(q[key])
    except (KeyError, ValueError) as err:
        raise InputError(f"query parameter {key!r} must be a number") from err


def _stretch(q: dict[str, str]) -> tuple[float, float] | None:
    if not q.get("stretch"):
        return None
    try:
        lo, hi = (float(v) for v in q["stretch"].split(","))
    except ValueError as err:
        raise InputError("stretch must be 'min,max'") from err
    return lo, hi


#: An answer: status, body, content type, cacheable.
Answer = tuple[int, bytes, str, bool]


def _json(obj: Any, status: int = 200) -> Answer:
    return status, json.dumps(obj).encode(), "application/json", False


def _file(path: Path) -> Answer:
    return 200, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "text/plain", True


def _items(catalog: Catalog, q: dict[str, str]) -> Answer:
    if q.get("reload"):
        catalog.reload()
    return _json(catalog.summary())


def _legend(catalog: Catalog, q: dict[str, str]) -> Answer:
    item = catalog.get(q["item"]) if q.get("item") else None
    return _json(layers.legend(layers.parse_layer(q.get("layer", "visual"), _stretch(q)), item))


def _point(catalog: Catalog, q: dict[str, str]) -> Answer:
    lon, lat = _float(q, "lon"), _float(q, "lat")
    item = catalog.get(q["item"]) if q.get("item") else None  # the item the page shows on top
    if item is None or not point_in_bbox(item["bbox"], lon, lat):
        item = catalog.at(lon, lat)
    if item is None:
        return _json({"error": f"no published item at {lon}, {lat}"}, 404)
    return _json(layers.point_values(item, lon, lat))


def _extent(catalog: Catalog, q: dict[str, str]) -> Answer:
    item = catalog.get(q.get("item", ""))
    return _json({"item": item["id"], "bbox": layers.data_bounds(item)})


def _tile(catalog: Catalog, q: dict[str, str], m: re.Match) -> Answer:
    layer = layers.parse_layer(q.get("layer", "visual"), _stretch(q))
    png = layers.render_tile(catalog.get(m[1]), layer, int(m[3]), int(m[4]), int(m[2]))
    return (204, b"", "image/png", False) if png is None else (200, png, "image/png", True)


API: dict[str, Callable[[Catalog, dict[str, str]], Answer]] = {
    "/api/items": _items,
    "/api/layers": lambda catalog, q: _json(layers.layer_choices()),
    "/api/legend": _legend,
    "/api/point": _point,
    "/api/extent": _extent,
}


def answer(catalog: Catalog, url: str) -> Answer:
    """The answer to ``GET url`` (errors become JSON ``{"error"}`` with 400/404/500)."""
    path, q = urlsplit(url).path, _query(url)
    try:
        if path in ("/", "/index.html"):
            return _file(STATIC / "index.html")
        if path == "/favicon.ico":
            return 204, b"", "image/x-icon", True
        if path.startswith("/static/") and ".." not in path and (STATIC / path[8:]).is_file():
            return _file(STATIC / path[8:])
        if path.startswith("/vendor/") and path[8:] in VENDOR:
            return _file(vendor_file(path[8:]))
        if path in API:
            return API[path](catalog, q)
        m = TILE_PATH.match(path)
        if m:
            return _tile(catalog, q, m)
        return _json({"error": f"not found: {path}"}, 404)
    except InputError as err:
        return _json({"error": str(err)}, 400)
    except CloudfreeError as err:
        return _json({"error": str(err)}, 500)
    except Exception as err:  # noqa: BLE001 - one bad tile must not kill the server
        log.exception("viewer: %s failed", url)
        return _json({"error": f"{type(err).__name__}: {err}"}, 500)


def make_handler(catalog: Catalog) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            status, body, ctype, cache = answer(catalog, self.path)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser that moved on (closed tab, cancelled tile) is no error."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ViewerServer(BackgroundServer):
    """The server on ``host:port`` (0: a free port) in a background thread, or the foreground."""

    thread_name = "cloudfree-viewer"
    server_class = _Server

    def __init__(self, catalog: Catalog, host: str = "127.0.0.1", port: int = 0) -> None:
        self.catalog = catalog
        super().__init__(make_handler(catalog), host, port)

    @property
    def url(self) -> str:
        return self.base_url + "/"
