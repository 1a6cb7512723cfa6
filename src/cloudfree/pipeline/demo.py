"""``make demo``: the whole pipeline on the local stack, from a synthetic archive to scored COGs.

1. synthesize two adjacent tiles (33UUP, 33UVP) for one year, data inside a small AOI that
   straddles their shared edge (so it runs in minutes on 2 cores);
2. ``sam build`` + ``sam deploy`` the real template to MiniStack;
3. run the year through the real state machine, following it with a progress bar;
4. copy the outputs to ``out/demo/{tile}/``, score every band against the synthetic truth,
   write a quicklook PNG per tile, ``summary.json`` and an ``index.html`` to look at.

``--landscape desert`` (``make demo-desert``) runs one bright desert tile (29RKH) instead, where
no scene's own pixels reveal the BOA offset, and prints every selected scene's offset decision
against the synthetic truth (``N/N right``) and the per-band error.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import storage
from ..bands import REFLECTANCE_BANDS

DEMO_TILES = ("33UUP", "33UVP")
DEMO_YEAR = 2023
DEMO_AOI = (13.62, 48.12, 13.76, 48.18)
SYNTH_BUCKET = "sentinel-cogs"


@dataclass(frozen=True)
class DemoSpec:
    """What a demo synthesizes and runs."""

    tiles: tuple[str, ...]
    year: int
    aoi: tuple[float, float, float, float]
    landscape: str = "temperate"
    scenes: int = 24


DEMOS = {
    "temperate": DemoSpec(DEMO_TILES, DEMO_YEAR, DEMO_AOI),
    # 29RKH: the real desert tile of shared/realdata (Western Sahara), ~12 x 12 km of it
    "desert": DemoSpec(("29RKH",), 2023, (-11.48, 24.74, -11.36, 24.85), "desert", 20),
}


def say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def ensure_archive(scenes: int, tiles=DEMO_TILES, year=DEMO_YEAR, aoi=DEMO_AOI,
                   landscape: str = "temperate") -> dict:
    """Synthesize the archive unless the same one is already in the local S3 and STAC API."""
    from ..synth.archive import generate_archive

    manifests = {t: f"s3://{SYNTH_BUCKET}/truth/{t}/{year}/manifest.json" for t in tiles}
    try:
        existing = {t: storage.read_json(u) for t, u in manifests.items()}
        same = all(m.get("parameters", {}).get("scenes") == scenes and
                   m.get("parameters", {}).get("landscape", "temperate") == landscape and
                   "wrong_flags" in m  # archives of the Earth Search offset convention
                   for m in existing.values())
    except Exception:  # noqa: BLE001 - absent or unreadable: regenerate
        same = False
    if same and _items_searchable(tiles, year):
        say(f"synthetic archive already present ({', '.join(tiles)} {year}, {scenes} scenes)")
        return existing
    say(f"synthesizing {len(tiles)} tiles x {scenes} scenes ({landscape}) for {year} "
        f"inside AOI {aoi}")
    summary = generate_archive(list(tiles), year, scenes, aoi=aoi, bucket=SYNTH_BUCKET,
                               api_url=os.environ["STAC_API_URL"], landscape=landscape)
    say(f"archive: {len(summary.items)} items in {summary.seconds:.0f}s")
    return {r.tile: r.manifest for r in summary.tile_results}


def offset_decisions(scenes: list[dict], truth: dict) -> list[dict]:
    """Each selected scene's offset decision beside the synthetic truth (``offset_in_pixels``)."""
    items = {r["id"]: r for r in truth["items"]}
    rows = []
    for scene in scenes:
        harm = scene.get("harmonization") or {}
        ev = harm.get("evidence") or {}
        rec = items.get(scene["id"])
        expected = None if rec is None else (1000 if rec["offset_in_pixels"] else 0)
        rows.append({
            "id": scene["id"], "baseline": ev.get("processing_baseline"),
            "flag": ev.get("earthsearch:boa_offset_applied"),
            "flag_wrong": None if rec is None else rec.get("flag_wrong"),
            "truth": expected, "decided": harm.get("offset"),
            "decided_by": ev.get("decided_by"),
            "own_pixels": (ev.get("pixels") or {}).get("verdict"),
            "step_dn": (ev.get("cross_scene") or {}).get("step_dn"),
            "right": expected is not None and harm.get("offset") == expected,
        })
    return rows


def print_offset_decisions(rows: list[dict]) -> None:
    """The decision table, ending with ``N/N right``."""
    print(f"{'scene':<26} {'baseline':>8} {'flag':>5} {'truth':>5} {'decided':>7}  "
          f"{'by':<11} {'own pixels':<12} {'step DN':>7}")
    for r in rows:
        flag = "-" if r["flag"] is None else str(r["flag"]).lower()
        flag += "!" if r["flag_wrong"] else ""
        step = "-" if r["step_dn"] is None else f"{r['step_dn']:+.0f}"
        print(f"{r['id']:<26} {r['baseline'] or '-':>8} {flag:>5} {r['truth']!s:>5} "
              f"{r['decided']!s:>7}  {r['decided_by'] or '-':<11} {r['own_pixels'] or '-':<12} "
              f"{step:>7}  {'right' if r['right'] else 'WRONG'}")
    print(f"offset decisions: {sum(r['right'] for r in rows)}/{len(rows)} right "
          "(flag! = earthsearch:boa_offset_applied contradicts the pixels)")


def _items_searchable(tiles, year) -> bool:
    from ..select import search_items

    try:
        return all(search_items(os.environ["STAC_API_URL"], t, year) for t in tiles)
    except Exception:  # noqa: BLE001
        return False


def score_band(cog: Path, truth_href: str, count_cog: Path | None = None) -> dict:
    """Error of a composite band (EPSG:3857 COG) against the truth (UTM), on the truth grid."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    with storage.gdal_env(), rasterio.open(truth_href) as t:
        truth = t.read(1)
        dst = np.zeros_like(truth)
        with rasterio.open(cog) as src:
            reproject(rasterio.band(src, 1), dst, dst_transform=t.transform, dst_crs=t.crs,
                      dst_nodata=0, resampling=Resampling.nearest)
    both = (truth > 0) & (dst > 0)
    if not both.any():
        return {"pixels": 0}
    diff = dst[both].astype(np.float64) - truth[both].astype(np.float64)
    return {"pixels": int(both.sum()),
            "coverage": round(float(both.sum() / max((truth > 0).sum(), 1)), 4),
            "mae_dn": round(float(np.abs(diff).mean()), 2),
            "rmse_dn": round(float(np.sqrt((diff ** 2).mean())), 2),
            "bias_dn": round(float(diff.mean()), 2),
            "mae_reflectance": round(float(np.abs(diff).mean()) / 10000, 5),
            "within_100dn": round(float((np.abs(diff) <= 100).mean()), 4)}


def quicklook(visual_cog: Path, dst: Path, size: int = 1024) -> tuple[Path, list[float]]:
    """A PNG of the visual COG's data area: find it on an overview, then read just that window
    at up to ``size`` px (transparent where there is no data)."""
    import rasterio
    from PIL import Image
    from rasterio.windows import Window

    with rasterio.open(visual_cog) as src:
        scale = max(src.width, src.height) / 2048
        low = src.read(1, out_shape=(int(src.height / scale), int(src.width / scale)))
        rows, cols = np.nonzero(low)
        if rows.size:
            r0, r1 = int(rows.min() * scale), int((rows.max() + 1) * scale)
            c0, c1 = int(cols.min() * scale), int((cols.max() + 1) * scale)
        else:
            r0, r1, c0, c1 = 0, src.height, 0, src.width
        win = Window(c0, r0, c1 - c0, r1 - r0)
        f = max(win.width, win.height) / size
        shape = (3, max(int(win.height / max(f, 1)), 1), max(int(win.width / max(f, 1)), 1))
        rgb = src.read(window=win, out_shape=shape)
        bounds = list(rasterio.windows.bounds(win, src.transform))  # EPSG:3857
    alpha = (rgb.any(axis=0) * 255).astype(np.uint8)
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.dstack([*rgb, alpha]), "RGBA").save(dst)
    return dst, bounds


def validate_cogs(folder: Path, item: dict) -> dict:
    """``assemble.validate_cog`` (rio-cogeo with GDAL's tiling rule) and the CRS of every asset
    copied locally."""
    import rasterio

    from ..assemble import validate_cog

    out = {}
    for key, asset in item["assets"].items():
        path = folder / Path(asset["href"]).name
        ok, errors, _ = validate_cog(str(path))
        with rasterio.open(path) as src:
            out[key] = {"valid": bool(ok), "errors": errors, "crs": f"EPSG:{src.crs.to_epsg()}",
                        "shape": [src.height, src.width], "bands": src.count}
    return out


def tile_summary(tile: str, year: int, folder: Path, truth: dict, out: Path) -> dict:
    """Per tile: item, assets, scenes selected/contributing, good-pixel fraction, errors."""
    item_path = folder / f"{tile}_{year}.json"
    item = json.loads(item_path.read_text())
    props = item["properties"]
    scenes = props.get("cloudfree:scenes", [])
    contributing = [s for s in scenes if (s.get("contribution") or 0) > 0]
    errors = {}
    for band in REFLECTANCE_BANDS:
        href = truth["truth"]["hrefs"].get(band.key)
        if href:
            errors[band.key] = score_band(folder / f"{tile}_{year}_{band.key}.tif", href)
    mae = [e["mae_dn"] for e in errors.values() if e.get("pixels")]
    cogs = validate_cogs(folder, item)
    png, bounds = quicklook(folder / f"{tile}_{year}_visual.tif",
                            out / f"{tile}_{year}_quicklook.png")
    return {
        "tile": tile, "item": str(item_path),
        "assets": {k: str(folder / Path(a["href"]).name) for k, a in item["assets"].items()},
        "cogs_valid": all(c["valid"] for c in cogs.values()), "cogs": cogs,
        "scenes_selected": len(scenes), "scenes_contributing": len(contributing),
        "good_pixel_fraction": props.get("cloudfree:good_pixel_fraction"),
        "observations": props.get("cloudfree:observations"),
        "error_vs_truth": errors,
        "mean_mae_dn": round(float(np.mean(mae)), 2) if mae else None,
        "quicklook": str(png), "quicklook_bounds_3857": bounds,
        "footprint": item["geometry"],
    }


def _mercator(lon: float, lat: float) -> tuple[float, float]:
    import math

    r = 6378137.0
    return r * math.radians(lon), r * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def map_svg(summary: dict, width: int = 900) -> str:
    """An offline map (Web Mercator): tile footprints, the AOI and each quicklook in place."""
    shapes = [[_mercator(*p) for p in t["footprint"]["coordinates"][0]] for t in summary["tiles"]]
    xs = [x for s in shapes for x, _ in s]
    ys = [y for s in shapes for _, y in s]
    pad = 0.03 * (max(xs) - min(xs))
    x0, x1, y0, y1 = min(xs) - pad, max(xs) + pad, min(ys) - pad, max(ys) + pad
    height = int(width * (y1 - y0) / (x1 - x0))

    def px(x: float, y: float) -> tuple[float, float]:
        return round((x - x0) / (x1 - x0) * width, 1), round((y1 - y) / (y1 - y0) * height, 1)

    def rect(minx: float, miny: float, maxx: float, maxy: float) -> str:
        (ax, ay), (bx, by) = px(minx, maxy), px(maxx, miny)
        return f'x="{ax}" y="{ay}" width="{bx - ax}" height="{by - ay}"'

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'style="background:#eef">']
    for t, shape in zip(summary["tiles"], shapes, strict=True):
        parts.append(f'<image href="{Path(t["quicklook"]).name}" '
                     f'{rect(*t["quicklook_bounds_3857"])} preserveAspectRatio="none"/>')
        pts = " ".join("{},{}".format(*px(x, y)) for x, y in shape)
        cx, cy = px(sum(x for x, _ in shape) / len(shape), max(y for _, y in shape))
        parts.append(f'<polygon points="{pts}" fill="none" stroke="#c00" stroke-width="1.5"/>'
                     f'<text x="{cx}" y="{cy + 16}" fill="#c00" font-size="14" '
                     f'text-anchor="middle">{t["tile"]}</text>')
    a = summary["aoi"]
    (ax, ay), (bx, by) = _mercator(a[0], a[1]), _mercator(a[2], a[3])
    parts.append(f'<rect {rect(ax, ay, bx, by)} fill="none" stroke="#06c" '
                 'stroke-dasharray="4 3"/></svg>')
    return "".join(parts)


def write_index(out: Path, summary: dict) -> Path:
    """A small page to look at: quicklooks, scores, links to the COGs and items."""
    rows = []
    for t in summary["tiles"]:
        errs = "".join(f"<tr><td>{b}</td><td>{e.get('mae_dn')}</td><td>{e.get('rmse_dn')}</td>"
                       f"<td>{e.get('coverage')}</td></tr>" for b, e in t["error_vs_truth"].items())
        assets = " ".join(f'<a href="{Path(p).relative_to(out.resolve())}">{k}</a>'
                          for k, p in t["assets"].items())
        rows.append(f"""<section><h2>{t['tile']} {summary['year']}</h2>
<img src="{Path(t['quicklook']).name}" style="max-width:48%;float:right">
<p>good-pixel fraction <b>{t['good_pixel_fraction']}</b>, scenes selected
{t['scenes_selected']}, contributing {t['scenes_contributing']}, mean MAE vs truth
<b>{t['mean_mae_dn']} DN</b></p><p>assets: {assets}</p>
<table><tr><th>band</th><th>MAE DN</th><th>RMSE DN</th><th>coverage</th></tr>{errs}</table>
<p><a href="{Path(t['item']).relative_to(out.resolve())}">STAC item</a></p></section>""")
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>cloudfree demo</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}td,th{{padding:2px 8px}}
section{{overflow:auto;border-top:1px solid #ccc}}</style></head><body>
<h1>cloudfree demo: {summary['year']}, {len(summary['tiles'])} tiles</h1>
<p>execution {summary['status']} in {summary['seconds']}s; red: tile footprints (EPSG:3857),
blue dashed: the synthetic data AOI, imagery: the composites' visual COGs</p>
{map_svg(summary)}{''.join(rows)}</body></html>"""
    path = out / "index.html"
    path.write_text(html)
    return path


def announce_viewer(deployed, out: Path) -> None:
    """Load the published items into the local STAC API and a geoparquet, and say how to
    browse them: the demo ends (a make target returns); ``make view`` serves the map."""
    from ..catalog_search import load
    from ..local import stack

    api = stack().endpoints().stac_api_url
    result = load(deployed.settings, api, out / "items.parquet")
    say(f"catalog: {result.total} item(s) in the local STAC API "
        f"({api}, collection {result.collection}) and "
        f"{result.parquet}")
    say("viewer: `make view`, then open http://127.0.0.1:8765/")


def run_demo(out: Path | None = None, stack_name: str = "cloudfree",
             scenes: int | None = None, landscape: str = "temperate",
             outliers: str | None = None) -> int:
    """The demo, end to end; returns a process exit code. ``outliers``: deploy with
    ``OutlierRejection`` "on" or "off" (None: the template's default)."""
    from ..local import stack
    from . import deploy, run

    spec = DEMOS[landscape]
    scenes = scenes or spec.scenes
    out = Path(out or ("out/demo" if landscape == "temperate" else f"out/demo-{landscape}"))
    t0 = time.monotonic()
    os.environ.update(stack().require().environment())
    storage.s3_client.cache_clear()
    out = out.resolve()
    truth = ensure_archive(scenes, spec.tiles, spec.year, spec.aoi, spec.landscape)
    say("deploying the SAM application to MiniStack (sam build + sam deploy)")
    deploy.deploy_local(stack_name=stack_name,
                        parameters={"OutlierRejection": outliers} if outliers else None)
    deployed = run.find_stack(stack_name)
    payload = run.execution_input(spec.year, list(spec.tiles), None, {})
    arn = run.start(deployed, payload)
    say(f"started {arn}")
    desc = run.follow(deployed, arn, spec.year, list(spec.tiles))
    say(f"execution {desc['status']}; waiting for publish (S3 event) to write the items")
    pending = run.wait_published(deployed, spec.year, list(spec.tiles))
    if pending:
        say(f"items not published for {pending}: see the publish function's log")
        return 1
    tiles = []
    for tile in spec.tiles:
        folder = out / tile
        run.fetch(deployed, spec.year, tile, folder)
        tiles.append(tile_summary(tile, spec.year, folder, truth[tile], out))
        manifest = storage.read_json(deployed.settings.layout.manifest(spec.year, tile))
        tiles[-1]["offset_decisions"] = offset_decisions(manifest["scenes"], truth[tile])
    report = storage.read_json(deployed.settings.layout.report(desc["name"]))
    for t in tiles:
        t["cost"] = next((r.get("cost") for r in report["tiles"] if r["tile"] == t["tile"]), None)
    summary = {"year": spec.year, "aoi": spec.aoi, "landscape": spec.landscape,
               "status": desc["status"], "execution": arn,
               "seconds": round(time.monotonic() - t0, 1),
               "report": deployed.settings.layout.report(desc["name"]),
               "cost_per_done_tile": report.get("cost_per_done_tile"),
               "history": run.execution_history_stats(arn), "tiles": tiles}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    page = write_index(out, summary)
    say(f"cost per tile: {report.get('cost_per_done_tile')} (Lambda GB-s, state transitions)")
    for t in tiles:
        say(f"{t['tile']}: good-pixel fraction {t['good_pixel_fraction']}, scenes "
            f"{t['scenes_contributing']}/{t['scenes_selected']} contributing, mean error vs "
            f"truth {t['mean_mae_dn']} DN (MAE over {len(t['error_vs_truth'])} bands), "
            f"{len(t['cogs'])} COGs in {sorted({c['crs'] for c in t['cogs'].values()})} "
            f"{'all valid' if t['cogs_valid'] else 'NOT ALL VALID'}")
    say(f"outputs: {out}\n  summary: {out / 'summary.json'}\n  page: {page}")
    announce_viewer(deployed, out)
    ok = desc["status"] == "SUCCEEDED" and all(t["cogs_valid"] for t in tiles)
    if landscape != "temperate":
        for t in tiles:
            print(f"{t['tile']} {spec.year} ({spec.landscape}): error vs truth per band")
            for band, e in t["error_vs_truth"].items():
                print(f"  {band:<8} MAE {e.get('mae_dn')} DN, bias {e.get('bias_dn')} DN, "
                      f"within 100 DN {e.get('within_100dn')}")
            print_offset_decisions(t["offset_decisions"])
            ok = ok and all(r["right"] for r in t["offset_decisions"])
    return 0 if ok else 1
