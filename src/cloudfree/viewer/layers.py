"""Map layers over published items: which assets a layer reads, how they are stretched to
colours, the PNG of one web-mercator tile, the values at a point and the legend.

A layer is ``visual`` (the RGB uint8 COG as is), ``count`` (valid observations, bit 7 the snow
flag, coloured with viridis), one reflectance band (grey stretch of its DNs, 0 = nodata), or
three band keys ``r,g,b`` (a false-colour composite, each stretched the same way).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bands import BANDS, REFLECTANCE_BANDS
from ..errors import InputError
from ..mask import COUNT_SNOW_FLAG

#: DN range stretched to 0-255 for reflectance layers (harmonised DN = 10000 x reflectance:
#: 0-3000 is reflectance 0-0.3, where most land lies; ``stac.REFLECTANCE_SCALE``).
DEFAULT_STRETCH = (0, 3000)
COUNT_COLORMAP = "viridis"
#: Named band combinations offered by the page (any three band keys work too).
COMBINATIONS = {
    "nir,red,green": "Colour infrared (B8, B4, B3)",
    "swir16,nir,blue": "Agriculture (B11, B8, B2)",
    "swir22,swir16,red": "SWIR (B12, B11, B4)",
}
REFLECTANCE_KEYS = tuple(b.key for b in REFLECTANCE_BANDS)


@dataclass(frozen=True)
class Layer:
    """A parsed layer: its name, the assets it reads, and its DN stretch (reflectance)."""

    name: str
    assets: tuple[str, ...]
    stretch: tuple[float, float] = DEFAULT_STRETCH

    @property
    def kind(self) -> str:
        if self.name in ("visual", "count"):
            return self.name
        return "band" if len(self.assets) == 1 else "combination"


def parse_layer(name: str, stretch: tuple[float, float] | None = None) -> Layer:
    """``visual`` | ``count`` | a band key | three band keys ``r,g,b`` -> :class:`Layer`;
    anything else is an :class:`InputError` listing the valid names."""
    name = (name or "").strip().lower()
    if name in ("visual", "count"):
        return Layer(name, (name,))
    keys = tuple(k.strip() for k in name.split(","))
    unknown = [k for k in keys if k not in REFLECTANCE_KEYS]
    if unknown or len(keys) not in (1, 3):
        raise InputError(f"layer {name!r}: give 'visual', 'count', one band or three bands "
                         f"'r,g,b' from {', '.join(REFLECTANCE_KEYS)}")
    lo, hi = stretch or DEFAULT_STRETCH
    if not hi > lo:
        raise InputError(f"stretch {lo},{hi}: the maximum must exceed the minimum")
    return Layer(",".join(keys), keys, (float(lo), float(hi)))


def count_max(item: Mapping[str, Any]) -> int:
    """The top of the count legend: the item's maximum observation count (at least 1)."""
    obs = item.get("properties", {}).get("cloudfree:observations") or {}
    return max(1, int(obs.get("max") or 1))


def _gdal_env():
    from ..storage import gdal_env

    return gdal_env()


def _read_tile(href: str, x: int, y: int, z: int):
    from rio_tiler.io import Reader

    with _gdal_env(), Reader(href) as src:
        return src.tile(x, y, z)


def render_tile(item: Mapping[str, Any], layer: Layer, x: int, y: int, z: int) -> bytes | None:
    """PNG of tile ``z/x/y`` of ``layer`` over ``item`` (transparent where nodata); None when
    the tile lies outside the item's COGs."""
    from rio_tiler.colormap import cmap
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.models import ImageData

    hrefs = [item["assets"][key]["href"] for key in layer.assets]
    try:
        with ThreadPoolExecutor(len(hrefs)) as pool:
            images = list(pool.map(lambda h: _read_tile(h, x, y, z), hrefs))
    except TileOutsideBounds:
        return None
    if layer.kind == "visual":
        return images[0].render(img_format="PNG")
    if layer.kind == "count":
        img = images[0]
        data = img.array.data.astype(np.int32) & (COUNT_SNOW_FLAG - 1)
        top = count_max(item)
        scaled = np.clip(np.round(data * 255.0 / top), 0, 255).astype("uint8")
        out = ImageData(np.ma.MaskedArray(scaled, mask=img.array.mask), bounds=img.bounds,
                        crs=img.crs)
        return out.render(img_format="PNG", colormap=cmap.get(COUNT_COLORMAP))
    bands = np.ma.concatenate([im.array for im in images], axis=0)
    mask = np.ma.getmaskarray(bands).any(axis=0, keepdims=True) | (bands.data == 0).any(
        axis=0, keepdims=True)
    img = ImageData(np.ma.MaskedArray(bands.data, mask=np.broadcast_to(mask, bands.shape)),
                    bounds=images[0].bounds, crs=images[0].crs)
    img = img.rescale(in_range=(layer.stretch,) * len(images))
    return img.render(img_format="PNG")


def _read_point(href: str, lon: float, lat: float) -> list[int]:
    from rio_tiler.errors import PointOutsideBounds
    from rio_tiler.io import Reader

    try:
        with _gdal_env(), Reader(href) as src:
            return [int(v) for v in src.point(lon, lat).data]
    except PointOutsideBounds:
        return []


def point_values(item: Mapping[str, Any], lon: float, lat: float) -> dict[str, Any]:
    """Every asset's value at ``lon, lat``: ``{"item", "lon", "lat", "bands": {key: DN},
    "visual": [r, g, b], "count": n, "snow": bool}`` (reflectance DN 0 = nodata)."""
    keys = [k for k in (*REFLECTANCE_KEYS, "visual", "count") if k in item["assets"]]
    with ThreadPoolExecutor(4) as pool:
        values = dict(zip(keys, pool.map(
            lambda k: _read_point(item["assets"][k]["href"], lon, lat), keys), strict=True))
    raw = (values.get("count") or [0])[0]
    return {"item": item["id"], "lon": lon, "lat": lat,
            "bands": {k: values[k][0] for k in REFLECTANCE_KEYS if values.get(k)},
            "visual": values.get("visual") or [],
            "count": raw & (COUNT_SNOW_FLAG - 1), "snow": bool(raw & COUNT_SNOW_FLAG)}


def data_bounds(item: Mapping[str, Any], size: int = 256) -> list[float]:
    """Lon/lat bounds of the pixels with data (count > 0), from a ``size``-pixel decimated read
    of the count COG (its overviews): where to zoom to see a tile that was computed for a small
    AOI only. The item's bbox when the count has no data at all."""
    import rasterio
    from rasterio.warp import transform_bounds

    with _gdal_env(), rasterio.open(item["assets"]["count"]["href"]) as src:
        scale = max(src.width, src.height) / size
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        rows, cols = np.nonzero(src.read(1, out_shape=shape) & (COUNT_SNOW_FLAG - 1))
        if rows.size == 0:
            return list(item["bbox"])
        t = src.transform * src.transform.scale(src.width / shape[1], src.height / shape[0])
        x0, y1 = t * (cols.min(), rows.min())
        x1, y0 = t * (cols.max() + 1, rows.max() + 1)
        return [round(v, 6) for v in transform_bounds(src.crs, "EPSG:4326", x0, y0, x1, y1)]


def legend(layer: Layer, item: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the page draws as legend: a title, a colour ramp (CSS colours) and its end labels."""
    from rio_tiler.colormap import cmap

    if layer.kind == "visual":
        return {"title": "True colour (B4, B3, B2), 8-bit", "colors": [], "min": None,
                "max": None}
    if layer.kind == "count":
        top = count_max(item or {})
        ramp = cmap.get(COUNT_COLORMAP)
        colors = ["#{:02x}{:02x}{:02x}".format(*ramp[int(i)][:3]) for i in np.linspace(0, 255, 9)]
        return {"title": "Valid observations per pixel", "colors": colors, "min": 0,
                "max": top}
    lo, hi = layer.stretch
    if layer.kind == "band":
        title = f"{BANDS[layer.assets[0]].description}: DN (reflectance x 10000)"
        colors = ["#000000", "#ffffff"]
    else:
        title = COMBINATIONS.get(layer.name, f"R={layer.assets[0]} G={layer.assets[1]} "
                                             f"B={layer.assets[2]}") + ": DN"
        colors = ["#000000", "#ffffff"]
    return {"title": title, "colors": colors, "min": lo, "max": hi}


def layer_choices() -> list[dict[str, str]]:
    """The page's layer menu: visual, count, each band, the named combinations."""
    out = [{"value": "visual", "label": "Visual (true colour)"},
           {"value": "count", "label": "Observation count"}]
    out += [{"value": b.key, "label": f"{b.key}: {b.description}"} for b in REFLECTANCE_BANDS]
    out += [{"value": k, "label": v} for k, v in COMBINATIONS.items()]
    return out
