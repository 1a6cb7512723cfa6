"""Move the peer's generated crops onto the tile's block grid (``make bench-peer``'s scenes).

    .venv/bin/python bench/align_scenes.py SRC DST --offset-px 6144

``make_test_scenes.py`` places its 3072 px crops 2046 px into the tile (a multiple of 6, for the
10/20/60 m grids), so their 1024 px blocks start 2 px off the tile's block grid. Earth Search's
COGs cover the whole tile from its origin (a real item's ``blue`` is [10980, 10980] at 10 m and its
``scl`` [5490, 5490] at 20 m, both from the tile's corner: ../shared/realdata/rio-tiler-pds/
tests/fixtures/.../S2A_29RKH_20200219_0_L2A.json), so their blocks lie on it (``windows.py``);
reads cut along the tile's block lines (windows, strips, decision squares) then decode every source
block once - on the shifted crops each such cut decodes two block rows. This writes
DST/items.ndjson whose assets are small VRTs over SRC's GeoTIFFs placed at ``--offset-px`` (a
multiple of 6144 = lcm(1024 x 6, 2048 x 3): on the block grid of all three resolutions): only the
georeferencing changes (``proj:transform``, ``bbox``, ``geometry``, ``extent.json``'s AOI), not a
pixel or a block, so every engine decodes the same blocks as before. (Rewriting the GeoTIFFs' tags
in place breaks their COG layout, and GDAL then warns on every open.)
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def source_tif(href: str) -> str:
    """The GeoTIFF under one of the VRTs written here (or ``href`` itself)."""
    if not href.endswith(".vrt"):
        return href
    m = re.search(r"<SourceFilename[^>]*>([^<]+)</SourceFilename>", Path(href).read_text())
    return m.group(1) if m else href


def shifted_vrt(tif: str, dx: float, dy: float) -> str:
    """A VRT of ``tif`` (every band, same size) moved by (dx, dy) metres."""
    import rasterio

    with rasterio.open(tif) as src:
        t, h, w = src.transform, src.height, src.width
        dtype = {"uint16": "UInt16", "uint8": "Byte"}[src.dtypes[0]]
        by, bx = src.block_shapes[0]
        bands = "".join(
            f'<VRTRasterBand dataType="{dtype}" band="{i}" blockXSize="{bx}" blockYSize="{by}">'
            f"<NoDataValue>0</NoDataValue><SimpleSource>"
            f'<SourceFilename relativeToVRT="0">{tif}</SourceFilename>'
            f"<SourceBand>{i}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            "</SimpleSource></VRTRasterBand>" for i in range(1, src.count + 1))
        return (f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{src.crs.to_wkt()}</SRS>'
                f"<GeoTransform>{t.c + dx}, {t.a}, 0, {t.f + dy}, 0, {t.e}</GeoTransform>"
                + bands + "</VRTDataset>")


def main(argv: list[str] | None = None) -> int:
    from rasterio.warp import transform as warp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--offset-px", type=int, default=6144)
    args = ap.parse_args(argv)
    if args.offset_px % 6144:
        raise SystemExit("--offset-px must be a multiple of 6144")
    src, dst = Path(args.src), Path(args.dst)
    dst.mkdir(parents=True, exist_ok=True)
    extent = json.loads((src / "extent.json").read_text())
    x0, y1 = extent["extent_utm"][0], extent["extent_utm"][3]
    origin = (x0 - 10 * 2046, y1 + 10 * 2046)  # make_test_scenes' default --offset-px
    dx, dy = (origin[0] + 10 * args.offset_px) - x0, (origin[1] - 10 * args.offset_px) - y1
    ext = [v + d for v, d in zip(extent["extent_utm"], (dx, dy, dx, dy), strict=True)]
    lon, lat = warp(f"EPSG:{extent['epsg']}", "EPSG:4326",
                    [ext[0], ext[2], ext[2], ext[0], ext[0]],
                    [ext[3], ext[3], ext[1], ext[1], ext[3]])
    lines = []
    for line in (src / "items.ndjson").read_text().splitlines():
        item = json.loads(line)
        for key, asset in item["assets"].items():
            t = asset.get("proj:transform")
            if t:
                asset["proj:transform"] = [t[0], t[1], t[2] + dx, t[3], t[4], t[5] + dy]
            if asset.get("href", "").endswith(".tif"):
                vrt = dst / item["id"] / f"{key}.vrt"
                vrt.parent.mkdir(exist_ok=True)
                vrt.write_text(shifted_vrt(asset["href"], dx, dy))
                asset["href"] = str(vrt)
        item["geometry"] = {"type": "Polygon", "coordinates": [[
            [round(a, 9), round(b, 9)] for a, b in zip(lon, lat, strict=True)]]}
        item["bbox"] = [min(lon), min(lat), max(lon), max(lat)]
        lines.append(json.dumps(item))
    (dst / "items.ndjson").write_text("\n".join(lines) + "\n")
    extent.update(dir=str(dst), extent_utm=ext, aoi_native=[
        v + d for v, d in zip(extent["aoi_native"], (dx, dy, dx, dy), strict=True)])
    (dst / "extent.json").write_text(json.dumps(extent, indent=1))
    print(json.dumps({"aoi_native": extent["aoi_native"], "shift_m": [dx, dy]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
