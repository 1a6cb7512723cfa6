"""Source tiles inflated here (cloudfree.blocks) over the network file systems the pipeline reads.

GIVEN the local archive's reflectance COGs in MiniStack's S3 (sparse, DEFLATE, PREDICTOR=2, as
Earth Search's), addressed as the items give them (path-style ``http://`` URLs: GDAL's
``/vsicurl/``, like Earth Search's ``https://`` hrefs) and as ``s3://`` URIs (``/vsis3/`` with
the local endpoint, as the pipeline's own buckets),
WHEN a window across a stored and a sparse tile is read with windows.read_window into an array,
THEN GDAL's own read is never called (the tiles' bytes came through VSIFReadMultiRangeL) and
the pixels equal GDAL's read of the same window.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from cloudfree import blocks, storage, windows
from cloudfree.windows import Window

from .conftest import SMALL

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(blocks._compiled() is None, reason="no isal or no _blocks")]


def _stored_tile(href: str) -> tuple[int, int]:
    """(row, col) of a tile the file stores (the synthetic AOI's data), and the tile size."""
    with storage.gdal_env(), rasterio.open(href) as src:
        (bh, bw), = set(src.block_shapes)
        for ty in range(-(-src.height // bh)):
            for tx in range(-(-src.width // bw)):
                size = src.get_tag_item(f"BLOCK_SIZE_{tx}_{ty}", "TIFF", bidx=1)
                if size and int(size) > 0:
                    return ty * bh, tx * bw
    raise AssertionError(f"{href} stores no tile")


def test_http_and_s3_hrefs_are_read_here(local_env, small_archive, monkeypatch):
    from cloudfree.select import search_items

    items = search_items(local_env["STAC_API_URL"], SMALL["tile"], SMALL["year"])
    href = items[0]["assets"]["blue"]["href"]
    assert href.startswith("http://")
    endpoint = local_env["AWS_ENDPOINT_URL"].rstrip("/")
    s3_uri = "s3://" + href[len(endpoint) + 1:]
    row, col = _stored_tile(href)
    with storage.gdal_env(), rasterio.open(href) as src:
        assert blocks.layout(src, 1).predictor == 2  # the archive's reflectance bands
        r0, c0 = max(0, row - 300), max(0, col - 200)  # reaches into the sparse neighbours
        window = Window(r0, c0, min(1500, src.height - r0), min(1400, src.width - c0))
        want = src.read(1, window=window.to_rasterio())
    assert want.any() and not want.all()

    def no_gdal(*a, **k):
        raise AssertionError("GDAL read called")

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", no_gdal)
    for source in (href, s3_uri):
        got = windows.read_window(source, window, out=np.empty(window.shape, np.uint16))
        np.testing.assert_array_equal(got, want, err_msg=source)
