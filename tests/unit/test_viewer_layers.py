"""Unit tests of the viewer's layers and HTTP answers on tiny EPSG:3857 COGs (no stack)."""

from __future__ import annotations

import io
import json

import morecantile
import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.warp import transform, transform_bounds

from cloudfree.errors import InputError
from cloudfree.viewer import layers
from cloudfree.viewer.server import Catalog, answer

X0, Y0, PX, N = 1_000_000.0, 6_000_000.0, 10.0, 512
#: A point 1 km inside the north-west corner (the west half: snow-only in the count band).
(LON,), (LAT,) = transform("EPSG:3857", "EPSG:4326", [X0 + 1000], [Y0 - 1000])


def _cog(path, data: np.ndarray) -> str:
    profile = {"driver": "GTiff", "width": N, "height": N, "count": data.shape[0],
               "dtype": data.dtype, "crs": "EPSG:3857", "transform": Affine(PX, 0, X0, 0, -PX, Y0),
               "nodata": 0, "tiled": True, "blockxsize": 256, "blockysize": 256}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


@pytest.fixture(scope="module")
def item(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("cogs")
    ramp = (np.arange(N * N, dtype=np.uint32).reshape(N, N) % 3000 + 1).astype("uint16")
    count = np.full((N, N), 7, "uint8")
    count[:, : N // 2] = 5 | 128  # west half: snow only
    count[:10, :10] = 0
    assets = {k: {"href": _cog(tmp / f"{k}.tif", (ramp + i)[None])}
              for i, k in enumerate(("red", "green", "nir"))}
    assets["visual"] = {"href": _cog(tmp / "visual.tif",
                                     np.stack([(ramp % 250 + 1).astype("uint8")] * 3))}
    assets["count"] = {"href": _cog(tmp / "count.tif", count[None])}
    with rasterio.open(assets["red"]["href"]) as src:
        lon0, lat0, lon1, lat1 = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    return {"id": "32TNT_2021", "bbox": [lon0, lat0, lon1, lat1],
            "geometry": {"type": "Polygon", "coordinates": [[[lon0, lat0], [lon1, lat0],
                                                             [lon1, lat1], [lon0, lat0]]]},
            "properties": {"cloudfree:observations": {"max": 7}}, "assets": assets}


def test_parse_layer():
    assert layers.parse_layer("visual").kind == "visual"
    assert layers.parse_layer("count").assets == ("count",)
    assert layers.parse_layer("red").kind == "band"
    combo = layers.parse_layer(" nir, red ,green", (100, 4000))
    assert combo.assets == ("nir", "red", "green") and combo.stretch == (100, 4000)
    with pytest.raises(InputError, match="one band or three bands 'r,g,b' from coastal"):
        layers.parse_layer("red,green")
    with pytest.raises(InputError, match="'visual', 'count'"):
        layers.parse_layer("b04")
    with pytest.raises(InputError, match="maximum must exceed"):
        layers.parse_layer("red", (3000, 0))


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def test_band_tile_is_the_stretched_cog(item):
    tms = morecantile.tms.get("WebMercatorQuad")
    t = tms.tile(LON, LAT, 14)
    png = _png(layers.render_tile(item, layers.parse_layer("red", (0, 3000)), t.x, t.y, t.z))
    assert png.shape == (256, 256, 4)
    drawn = png[..., 3] > 0
    assert drawn.mean() > 0.2  # the COG covers part of this tile
    # grey: R == G == B, and the stretch maps DN linearly onto 0-255
    assert (png[drawn, 0] == png[drawn, 1]).all() and png[drawn, 0].std() > 10
    assert layers.render_tile(item, layers.parse_layer("red"), 0, 0, 14) is None


def test_count_tile_uses_the_colormap_and_ignores_the_snow_bit(item):
    from rio_tiler.colormap import cmap

    tms = morecantile.tms.get("WebMercatorQuad")
    t = tms.tile(LON, LAT, 14)
    png = _png(layers.render_tile(item, layers.parse_layer("count"), t.x, t.y, t.z))
    colors = {tuple(c) for c in png[png[..., 3] > 0][:, :3]}
    viridis = cmap.get("viridis")
    # 5 of 7 and 7 of 7 -> viridis at round(5*255/7) and 255
    assert colors <= {tuple(viridis[182][:3]), tuple(viridis[255][:3])}
    assert len(colors) == 2


def test_point_values_match_the_cogs(item):
    values = layers.point_values(item, LON, LAT)
    x, y = transform("EPSG:4326", "EPSG:3857", [LON], [LAT])
    for key in ("red", "green", "nir"):
        with rasterio.open(item["assets"][key]["href"]) as src:
            assert values["bands"][key] == next(src.sample([(x[0], y[0])]))[0]
    assert values["count"] == (5 if x[0] < X0 + N * PX / 2 else 7)
    assert values["snow"] is (x[0] < X0 + N * PX / 2)
    assert len(values["visual"]) == 3


def test_legend():
    lg = layers.legend(layers.parse_layer("count"), {"properties": {
        "cloudfree:observations": {"max": 12}}})
    assert (lg["min"], lg["max"], len(lg["colors"])) == (0, 12, 9)
    lg = layers.legend(layers.parse_layer("swir16,nir,blue", (0, 5000)))
    assert lg["title"].startswith("Agriculture") and lg["max"] == 5000


def test_http_answers(item):
    catalog = Catalog(lambda: [item])
    status, body, ctype, _ = answer(catalog, "/api/items")
    assert status == 200 and json.loads(body)[0]["count_max"] == 7
    status, body, _, _ = answer(catalog, f"/api/point?lon={LON}&lat={LAT}")
    assert status == 200 and json.loads(body)["item"] == "32TNT_2021"
    status, body, _, _ = answer(catalog, "/api/point?lon=-60&lat=-10")
    assert status == 404 and "no published item at" in json.loads(body)["error"]
    status, body, _, _ = answer(catalog, "/api/tiles/32TNT_2021/14/1/1.png?layer=b4")
    assert status == 400 and "give 'visual', 'count'" in json.loads(body)["error"]
    status, body, _, _ = answer(catalog, "/api/tiles/nope_2021/14/1/1.png")
    assert status == 400 and "no published item 'nope_2021'" in json.loads(body)["error"]
    status, body, _, _ = answer(catalog, "/api/extent?item=32TNT_2021")
    assert status == 200 and json.loads(body)["bbox"] == pytest.approx(item["bbox"], abs=1e-4)
    assert answer(catalog, "/static/../../errors.py")[0] == 404
    status, body, ctype, _ = answer(catalog, "/")
    assert status == 200 and b"maplibre-gl.js" in body and ctype == "text/html"


def test_point_answers_the_item_the_page_shows(item):
    """Years of one tile overlap: a click answers the item the page chose (drawn on top), the
    newest year only when none is chosen (CI found the 2022 item answering over 2021's map)."""
    newer = {**item, "id": "32TNT_2022"}
    catalog = Catalog(lambda: [item, newer])
    ask = f"/api/point?lon={LON}&lat={LAT}"
    assert json.loads(answer(catalog, ask)[1])["item"] == "32TNT_2022"
    assert json.loads(answer(catalog, ask + "&item=32TNT_2021")[1])["item"] == "32TNT_2021"
    assert json.loads(answer(catalog, ask + "&item=32TNT_2022")[1])["item"] == "32TNT_2022"


def test_data_bounds_is_where_the_count_has_data(item, tmp_path):
    whole = layers.data_bounds(item)
    assert whole == pytest.approx(item["bbox"], abs=1e-4)
    count = np.zeros((1, N, N), "uint8")
    count[0, N // 4: N // 2, N // 2:] = 3 | 128  # a quarter-size patch, snow flagged
    half = {**item, "assets": {**item["assets"], "count": {
        "href": _cog(tmp_path / "count.tif", count)}}}
    (x0, x1), (y1, y0) = transform("EPSG:3857", "EPSG:4326", [X0 + N * PX / 2, X0 + N * PX],
                                   [Y0 - N * PX / 4, Y0 - N * PX / 2])
    assert layers.data_bounds(half) == pytest.approx([x0, y0, x1, y1], abs=1e-4)
    empty = {**item, "assets": {**item["assets"], "count": {
        "href": _cog(tmp_path / "empty.tif", np.zeros((1, N, N), "uint8"))}}}
    assert layers.data_bounds(empty) == item["bbox"]
