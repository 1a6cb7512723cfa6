"""Load collections and items into the local STAC API through its Transactions extensions."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable

from ..errors import StacApiError


def _request(method: str, url: str, body: dict | None = None, ok=(200, 201, 204)) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 (loopback)
            return resp.status
    except urllib.error.HTTPError as err:
        if err.code in ok:
            return err.code
        detail = err.read().decode(errors="replace")[:500]
        raise StacApiError(f"{method} {url} -> {err.code}: {detail}") from err
    except urllib.error.URLError as err:
        raise StacApiError(f"{method} {url} failed: {err.reason}") from err


def upsert_collection(api_url: str, collection: dict) -> None:
    """Create the collection, or replace it if it exists."""
    base = api_url.rstrip("/")
    try:
        _request("POST", f"{base}/collections", collection)
    except StacApiError as err:
        if "409" not in str(err) and "exists" not in str(err).lower():
            raise
        _request("PUT", f"{base}/collections/{collection['id']}", collection)


def load_items(api_url: str, collection: dict, items: Iterable[dict], chunk: int = 200) -> int:
    """Upsert a collection and its items (bulk, ``method=upsert``); return the item count."""
    upsert_collection(api_url, collection)
    base = api_url.rstrip("/")
    batch: dict[str, dict] = {}
    n = 0
    for item in items:
        item = {**item, "collection": collection["id"]}
        batch[item["id"]] = item
        if len(batch) >= chunk:
            n += _bulk(base, collection["id"], batch)
            batch = {}
    if batch:
        n += _bulk(base, collection["id"], batch)
    return n


def _bulk(base: str, collection_id: str, items: dict[str, dict]) -> int:
    _request("POST", f"{base}/collections/{collection_id}/bulk_items",
             {"items": items, "method": "upsert"})
    return len(items)
