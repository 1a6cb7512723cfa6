"""cloudfree against odc-stac + dask on the same generated scenes (``make bench-peer``).

    .venv/bin/python bench/bench_peer.py [--rounds 3] [--scenes 16] [--work /tmp/cf-peer]

The peer (``../shared/peer``, its own venv ``.venv-peer``) generates 16 Earth-Search-like scenes
of 29RKH (3072 px crops of the tile, 1024 px DEFLATE blocks) and composites the 12 bands at
native resolution over the centred 2048 px AOI with ``odc.stac.load`` + ``.median`` on 2 dask
threads. cloudfree composites the same AOI with ``cloudfree composite --bbox-native`` (select
with its asset checks, harmonization, SCL once per window and resolution, the compiled median,
one UTM GeoTIFF per band). cloudfree's reads expect tile-sized rasters, so each crop is wrapped
in a VRT of the tile's extent (a pass-through: GDAL reads the crop's blocks).

Each engine runs in its own process, alternating and repeated (``--rounds``); per run: wall
seconds, peak RSS (``wait4``'s ``ru_maxrss`` of that process) and CPU seconds. The codec floor
is measured in the same run: decoding exactly the source blocks the AOI needs (12 bands and the
SCL once per scene, 2 threads) plus encoding cloudfree's outputs (same DEFLATE settings, 2
threads). Pixel agreement: the peer's ``compare.py``. Ratios (medians over the rounds):
odc wall / cloudfree wall (target >= 3), cloudfree peak / odc peak (<= 1/5), cloudfree wall /
codec floor (<= 1.3).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = Path(os.environ.get("PEER_DIR", ROOT.parent / "shared" / "peer"))
PEER_PY = ROOT / ".venv-peer" / "bin" / "python"
CF = ROOT / ".venv" / "bin" / "cloudfree"
TILE, YEAR, EPSG = "29RKH", 2023, 32629
ORIGIN = (199980.0, 2800020.0)  # 29RKH's upper-left corner (make_test_scenes.py --origin)
AOI = "225540,2753980,246020,2774460"  # the peer README's reference AOI (2048 px at 10 m)
BANDS = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08",
         "nir09", "swir16", "swir22")


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; wall s, peak RSS MB and CPU s of that process alone (``os.wait4``)."""
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write("+ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        proc = subprocess.Popen(list(map(str, cmd)), stdout=f, stderr=f)
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))} (see {log})")
    return {"wall_s": wall, "peak_rss_mb": ru.ru_maxrss / 1024,
            "cpu_s": ru.ru_utime + ru.ru_stime}


def vrt_xml(src_path: str, tile_px: int, off_px: tuple[int, int]) -> str:
    """A VRT of the whole tile grid whose only source is the crop at ``off_px`` (col, row)."""
    import rasterio

    with rasterio.open(src_path) as src:
        t, h, w = src.transform, src.height, src.width
        dtype = {"uint16": "UInt16", "uint8": "Byte"}[src.dtypes[0]]
        gt = f"{t.c - off_px[0] * t.a}, {t.a}, 0, {t.f - off_px[1] * t.e}, 0, {t.e}"
        bands = []
        for i in range(1, src.count + 1):
            bands.append(
                f'<VRTRasterBand dataType="{dtype}" band="{i}"><NoDataValue>0</NoDataValue>'
                f'<SimpleSource><SourceFilename relativeToVRT="0">{src_path}</SourceFilename>'
                f"<SourceBand>{i}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                f'<DstRect xOff="{off_px[0]}" yOff="{off_px[1]}" xSize="{w}" ySize="{h}"/>'
                "</SimpleSource></VRTRasterBand>")
        return (f'<VRTDataset rasterXSize="{tile_px}" rasterYSize="{tile_px}">'
                f"<SRS>EPSG:{EPSG}</SRS><GeoTransform>{gt}</GeoTransform>"
                + "".join(bands) + "</VRTDataset>")


def tile_items(scenes: Path, out: Path) -> Path:
    """items.ndjson whose hrefs are full-tile VRTs over the peer's crops."""
    import rasterio

    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for line in (scenes / "items.ndjson").read_text().splitlines():
        item = json.loads(line)
        for key, asset in item["assets"].items():
            href = asset.get("href", "")
            if not href.endswith(".tif"):
                continue
            with rasterio.open(href) as src:
                res = src.transform.a
                col = round((src.transform.c - ORIGIN[0]) / res)
                row = round((ORIGIN[1] - src.transform.f) / res)
            vrt = out / f"{item['id']}_{key}.vrt"
            vrt.write_text(vrt_xml(href, math.ceil(109800 / res), (col, row)))
            asset["href"] = str(vrt)
        lines.append(json.dumps(item))
    path = out / "items.ndjson"
    path.write_text("\n".join(lines) + "\n")
    return path


def codec_floor(scenes: Path, outputs: Path, n: int) -> dict:
    """Decode the AOI's source blocks (12 bands + SCL once per scene) and encode the outputs,
    2 threads each; seconds of each part."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window as RWin

    x0, y0, x1, y1 = map(float, AOI.split(","))
    items = [json.loads(x) for x in (scenes / "items.ndjson").read_text().splitlines()]
    items = sorted(items, key=lambda i: i["properties"].get("eo:cloud_cover", 0))[:n]
    jobs = [it["assets"][k]["href"] for it in items for k in (*BANDS, "scl")]

    def decode(href: str) -> int:
        with rasterio.open(href) as src:
            bx, by = src.block_shapes[0][1], src.block_shapes[0][0]
            c0, r0 = ~src.transform * (x0, y1)
            c1, r1 = ~src.transform * (x1, y0)
            c0, r0 = int(c0) // bx * bx, int(r0) // by * by
            c1, r1 = min(math.ceil(c1 / bx) * bx, src.width), min(math.ceil(r1 / by) * by,
                                                                    src.height)
            return src.read(1, window=RWin(c0, r0, c1 - c0, r1 - r0)).nbytes

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        decoded = sum(pool.map(decode, jobs))
    t_dec = time.perf_counter() - t0

    def encode(band: str) -> None:
        with rasterio.open(outputs / f"{band}.tif") as src:
            data, profile = src.read(), src.profile
        with tempfile.TemporaryDirectory() as tmp, rasterio.open(
                Path(tmp) / "x.tif", "w", **profile) as dst:
            dst.write(np.ascontiguousarray(data))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(encode, BANDS))
    return {"decode_s": t_dec, "decoded_mb": decoded / 1e6,
            "encode_s": time.perf_counter() - t0}


def agreement(a: Path, b: Path) -> list[dict]:
    p = subprocess.run([str(PEER_PY), str(PEER / "compare.py"), "--a", str(a), "--b", str(b)],
                       capture_output=True, text=True)
    return [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenes", type=int, default=16)
    ap.add_argument("--work", default="/tmp/cf-peer")
    args = ap.parse_args(argv)
    if not PEER_PY.exists():
        raise SystemExit(f"no {PEER_PY}: run `make bench-peer` (it builds .venv-peer)")
    work = Path(args.work)
    scenes = work / "scenes"
    log = work / "bench-peer.log"
    work.mkdir(parents=True, exist_ok=True)
    if not (scenes / "items.ndjson").exists():
        print(f"generating {args.scenes} scenes in {scenes} ...", file=sys.stderr)
        measure([PEER_PY, PEER / "make_test_scenes.py", "--out", scenes, "--scenes",
                 args.scenes, "--size", 3072, "--aoi-size", 2048], log)
    items = tile_items(scenes, work / "tile-vrt")
    runs: dict[str, list[dict]] = {"odc": [], "cloudfree": [], "floor": []}
    for r in range(args.rounds):
        order = ("odc", "cloudfree") if r % 2 == 0 else ("cloudfree", "odc")
        for engine in order:
            out = work / f"{engine}_r{r}"
            if engine == "odc":
                cmd = [PEER_PY, PEER / "odc_median.py", "--items", scenes / "items.ndjson",
                       "--bands", "all", "--native", "--n", args.scenes, "--aoi-native", AOI,
                       "--threads", 2, "--out", out]
            else:
                cmd = [CF, "composite", "--tile", TILE, "--year", YEAR, "--scenes",
                       args.scenes, "--items", items, "--bbox-native", AOI, "--quiet",
                       "--out", out]
            runs[engine].append(measure(cmd, log))
            print(f"round {r + 1} {engine:9s} " + json.dumps(
                {k: round(v, 2) for k, v in runs[engine][-1].items()}), file=sys.stderr)
        floor = codec_floor(scenes, work / f"cloudfree_r{r}" / f"{TILE}_{YEAR}_bands",
                            args.scenes)
        floor["wall_s"] = floor["decode_s"] + floor["encode_s"]
        runs["floor"].append(floor)
        print(f"round {r + 1} floor     " + json.dumps({k: round(v, 2) for k, v in
                                                       floor.items()}), file=sys.stderr)
    agree = agreement(work / "odc_r0", work / "cloudfree_r0" / f"{TILE}_{YEAR}_bands")
    report(runs, agree)
    return 0


def report(runs: dict[str, list[dict]], agree: list[dict]) -> None:
    def med(engine: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[engine])

    print(f"\n{'':10s} {'wall s':>18s} {'peak RSS MB':>18s} {'CPU s':>18s}")
    for e in ("odc", "cloudfree"):
        cells = [", ".join(f"{r[k]:.1f}" for r in runs[e]) for k in ("wall_s", "peak_rss_mb",
                                                                      "cpu_s")]
        print(f"{e:10s} {cells[0]:>18s} {cells[1]:>18s} {cells[2]:>18s}")
    f = runs["floor"]
    walls = ", ".join(f"{x['wall_s']:.1f}" for x in f)
    dec = statistics.median(x["decode_s"] for x in f)
    enc = statistics.median(x["encode_s"] for x in f)
    print(f"codec floor {walls} s (decode {dec:.1f} s of {f[0]['decoded_mb']:.0f} MB + "
          f"encode {enc:.1f} s)")
    per_band = [a for a in agree if "band" in a]
    if per_band:
        print("pixel agreement (odc vs cloudfree, equal / within 1): " + ", ".join(
            f"{a['band']} {a['equal_frac']:.4f}/{a['within1_frac']:.4f}" for a in per_band))
    speed = med("odc", "wall_s") / med("cloudfree", "wall_s")
    memory = med("cloudfree", "peak_rss_mb") / med("odc", "peak_rss_mb")
    floor = med("cloudfree", "wall_s") / statistics.median(x["wall_s"] for x in f)
    print(f"\nratios (medians of {len(f)} rounds):")
    print(f"  speed   odc / cloudfree wall       {speed:5.2f}x  (target >= 3)")
    print(f"  memory  cloudfree / odc peak RSS   {memory:5.2f}   (target <= 0.20)")
    print(f"  floor   cloudfree / codec floor    {floor:5.2f}x  (target <= 1.3)")


if __name__ == "__main__":
    sys.exit(main())
