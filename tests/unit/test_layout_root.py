"""Layout with a local ``root`` (one-machine mode): every key it hands out is under the root."""

from __future__ import annotations

import inspect

from cloudfree.layout import Layout

#: A value for each parameter name the Layout's methods take.
ARGS = {"year": 2023, "tile": "33UUP", "band": "red", "row": 0, "col": 1024, "scene": "S2A_x",
        "kind": "DONE", "version": "v1", "name": "req.json", "execution": "exec-1",
        "batch": 2}


def _uris(layout: Layout) -> dict[str, str]:
    out = {}
    for name, fn in inspect.getmembers(layout, inspect.ismethod):
        if name.startswith("_"):
            continue
        params = inspect.signature(fn).parameters
        out[name] = fn(**{p: ARGS[p] for p in params})
    return out


def test_every_key_of_a_rooted_layout_is_under_its_root(tmp_path):
    s3, local = _uris(Layout("w", "d", "c")), _uris(Layout("w", "d", "c", root=str(tmp_path)))
    assert len(s3) >= 25 and "geoparquet" in s3
    for name, uri in s3.items():
        assert uri.startswith("s3://"), name
        assert local[name] == f"{tmp_path}/{uri[len('s3://'):]}", name
