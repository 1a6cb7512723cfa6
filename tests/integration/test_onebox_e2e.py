"""``cloudfree composite`` against the deployed pipeline: the same tile and items (the small
synthetic archive, searched in the local STAC API) give byte-identical COGs and the same
provenance. The tile's 13 COGs are computed once more, over its observed cells: 58 s at load
~3 (minutes before the COGs were cropped to the observed cells)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cloudfree import onebox, storage
from cloudfree.pipeline import run

from .conftest import SMALL, wait_execution, wait_for

TILE, YEAR, SCENES = SMALL["tile"], SMALL["year"], 6
#: Properties that must agree; ``cloudfree:run`` (times, execution), hrefs and the STAC API's
#: address (the Lambdas may reach it by another host name) may not.
PROVENANCE = ("cloudfree:scenes", "cloudfree:excluded_scenes", "cloudfree:good_pixel_fraction",
              "cloudfree:observations", "cloudfree:snow_pixel_fraction",
              "cloudfree:scene_count", "cloudfree:resolution")


@pytest.fixture(scope="module")
def deployed_item(deployed_stack, small_archive) -> dict:
    """The pipeline's item for the tile (an execution is started when none is published)."""
    deployed = run.find_stack(deployed_stack.stack_name)
    uri = deployed.settings.layout.item(YEAR, TILE)
    if not storage.exists(uri):
        payload = run.execution_input(YEAR, [TILE], None, {"scenes": SCENES})
        desc = wait_execution(run.start(deployed, payload, name=f"onebox-{int(time.time())}"))
        assert desc["status"] == "SUCCEEDED", desc.get("why", desc)
        wait_for(lambda: storage.exists(uri), 180, "the published item")
    return storage.read_json(uri)


def test_composite_equals_the_deployed_pipeline(deployed_item, local_env, tmp_path):
    runs = onebox.composite([TILE], YEAR, tmp_path, {"scenes": SCENES},
                            stac_url=local_env["STAC_API_URL"], progress=False)
    assert [r.status for r in runs] == ["published"]
    local = storage.read_json(runs[0].item)
    assert set(local["assets"]) == set(deployed_item["assets"])
    for prop in PROVENANCE:
        assert local["properties"].get(prop) == deployed_item["properties"].get(prop), prop
    # the version folder is a hash of the 14 COGs' SHA-256s: equal versions, equal bytes
    assert (local["properties"]["cloudfree:run"]["version"]
            == deployed_item["properties"]["cloudfree:run"]["version"])
    with rasterio.Env(**storage.gdal_env_options()):
        for key, asset in local["assets"].items():
            assert asset["file:checksum"] == deployed_item["assets"][key]["file:checksum"], key
            with rasterio.open(asset["href"]) as a, \
                    rasterio.open(deployed_item["assets"][key]["href"]) as b:
                assert (a.transform, a.shape, a.count) == (b.transform, b.shape, b.count)
                np.testing.assert_array_equal(a.read(), b.read(), err_msg=key)
    assert Path(local["assets"]["red"]["href"]).name == f"{TILE}_{YEAR}_red.tif"


def test_lerc_zstd_composite_has_the_deployed_pixels_in_fewer_bytes(deployed_item, local_env,
                                                                    tmp_path):
    """CogCompression LERC_ZSTD (``cloudfree composite --compression``) is lossless: every
    asset holds the pipeline's DEFLATE pixels, overviews included, in fewer bytes in all."""
    runs = onebox.composite([TILE], YEAR, tmp_path, {"scenes": SCENES},
                            stac_url=local_env["STAC_API_URL"], progress=False,
                            compression="LERC_ZSTD")
    assert [r.status for r in runs] == ["published"]
    local = storage.read_json(runs[0].item)
    sizes = {"lerc_zstd": 0, "deflate": 0}
    with rasterio.Env(**storage.gdal_env_options()):
        for key, asset in local["assets"].items():
            theirs = deployed_item["assets"][key]["href"]
            with rasterio.open(asset["href"]) as a, rasterio.open(theirs) as b:
                assert a.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "LERC_ZSTD", key
                assert b.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE", key
                assert (a.transform, a.shape, a.count) == (b.transform, b.shape, b.count)
                np.testing.assert_array_equal(a.read(), b.read(), err_msg=key)
                assert a.overviews(1) == b.overviews(1), key
                for level in range(len(a.overviews(1))):
                    with rasterio.open(asset["href"], overview_level=level) as oa, \
                            rasterio.open(theirs, overview_level=level) as ob:
                        np.testing.assert_array_equal(oa.read(), ob.read(), err_msg=key)
            sizes["lerc_zstd"] += storage.head(asset["href"]).size
            sizes["deflate"] += storage.head(theirs).size
    assert sizes["lerc_zstd"] < sizes["deflate"], sizes
