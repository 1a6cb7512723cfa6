"""A synthetic desert tile (``synth --landscape desert``): every offset decision against the truth.

Bright sand and rock, no water, no dark surface: no scene's own pixels can tell whether they
carry +1000. The archive follows Earth Search's convention (most >= 04.00 items harmonised by
the publisher, some still +1000, wrong flags both ways, ``_1`` re-publications), so only the
comparison across the tile's scenes gets every scene right.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from cloudfree.harmonize import PixelSample, harmonize_scenes
from cloudfree.select import to_scene
from cloudfree.synth import generate_archive

TILE, YEAR, SCENES, SEED = "29RKH", 2023, 14, 1
AOI = "-11.45,24.78,-11.42,24.805"  # ~3 x 2.8 km of the real desert tile
MAX_CLOUD = 90  # like a run's max_cloud: a fully overcast scene composites nothing anyway


@pytest.fixture(scope="module")
def desert(tmp_path_factory):
    out = tmp_path_factory.mktemp("desert")
    summary = generate_archive([TILE], YEAR, SCENES, aoi=AOI, out=out, seed=SEED,
                               progress=lambda _: None, landscape="desert")
    manifest = json.loads(Path(summary.manifests[0]).read_text())
    return summary, manifest


def _reader(manifest: dict):
    """Samples of the data window on the 20 m grid (the AOI is too small for overviews)."""
    w = manifest["data_window"]

    def read(href: str, res: int) -> np.ndarray:
        f = 60 // res
        win = Window(w["col_off_60m"] * f, w["row_off_60m"] * f, w["width_60m"] * f,
                     w["height_60m"] * f)
        shape = (w["height_60m"] * 3, w["width_60m"] * 3)
        with rasterio.open(href) as src:
            return src.read(1, window=win, out_shape=shape, resampling=Resampling.nearest)

    def sample(assets: dict) -> PixelSample:
        return PixelSample(pixels=read(assets["red"], 10), scl=read(assets["scl"], 20),
                           compare=read(assets["swir16"], 20), compare_band="swir16")

    return sample


def test_synth_desert_every_decision_right(desert):
    summary, manifest = desert
    assert manifest["landscape"] == "desert"
    truth = {r["id"]: r for r in manifest["items"]}
    items = [i for i in summary.items if i["properties"]["eo:cloud_cover"] < MAX_CLOUD]
    scenes = [dict(vars(to_scene(i))) for i in items]
    decisions = harmonize_scenes(scenes, _reader(manifest))
    kinds = set()
    for scene, d in zip(scenes, decisions, strict=True):
        rec = truth[scene["id"]]
        expected = 1000 if rec["offset_in_pixels"] else 0
        assert d.offset == expected, (scene["id"], rec, d.reason)
        # no scene's own pixels reveal the offset in the desert
        assert d.evidence["pixels"]["verdict"] == "inconclusive", scene["id"]
        assert d.evidence["pixels"]["p0.1"] >= 750
        assert d.evidence["decided_by"] == "cross_scene", (scene["id"], d.reason)
        kinds.add((rec["processing_baseline"] >= "04.00", expected, rec["flag_wrong"]))
    # mixed: harmonised and +1000 items of >= 04.00, older ones, and wrong flags
    assert {(True, 0, False), (True, 1000, False)} <= kinds, kinds
    assert any(k[0] is False for k in kinds) and any(k[2] for k in kinds), kinds
    assert any(s["id"].endswith("_1_L2A") for s in scenes)
