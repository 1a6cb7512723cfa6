"""cloudfree against odc-stac + dask on the same generated scenes (``make bench-peer``).

    .venv/bin/python bench/bench_peer.py [--rounds 3] [--scenes 16] [--work /tmp/cf-peer]

The peer (``../shared/peer``, its own venv ``.venv-peer``) generates 16 Earth-Search-like scenes
of 29RKH (3072 px crops of the tile, 1024 px DEFLATE blocks). ``align_scenes.py`` places them
on the tile's block grid, as Earth Search's whole-tile COGs are (VRTs, not a pixel changed: the
generator puts them 2 px off it, so any read cut along the tile's block lines decoded two block
rows); the peer README's centred 2048 px AOI moves with them.

What each side does, each in its own process (wall time includes process start and imports):

- **odc** (``odc_median.py``): ``odc.stac.load`` of the 12 bands + SCL per resolution group,
  ``.where(SCL mask & band != 0).median('time')`` on 2 dask threads (float32), one GeoTIFF per
  band (median only). No harmonization, no outlier test, no count band.
- **cloudfree** (``cloudfree composite --bbox-native``, outlier rejection on: the default
  figure): select with its asset checks (every asset's header) and harmonization (overview
  samples), the outlier decision once for all bands (reads blue, red and nir08 again), per
  resolution in strips along the tile's block rows: SCL states once per strip, each band's
  stack, nodata dilation, fusion, snow fallback, compiled median; one UTM GeoTIFF per band
  (median + count). cloudfree's reads expect tile-sized rasters, so each crop's compressed
  tiles are copied into a GeoTIFF of the tile's extent where the crop lies, the other tiles
  sparse (``tile_tiff``: not a pixel re-encoded; the same bytes decoded as odc's).
- **cloudfree-off**: the same with ``--outliers off`` (what odc computes, plus selection,
  harmonization and the count band).

Alternating and repeated (``--rounds``); per run: wall seconds, peak RSS (``wait4``'s
``ru_maxrss`` of that process), CPU seconds (user + system, all threads: far less sensitive
than wall time to the other processes on a shared machine) and the 1-minute load average.
cloudfree's steps come from its ``--json`` summary (select, outliers, states, median, write;
wall and CPU), odc's from its JSON line. The codec floor, measured in the same round in a
process of its own: decoding exactly the source blocks the AOI needs (12 bands and the SCL
once per scene, straight from the crops' GeoTIFFs, 2 threads) plus encoding cloudfree's
outputs (same DEFLATE settings, 2 threads); its seconds exclude process start and imports,
so the floor ratio is conservative. It is GDAL's decode, on our zlib-ng and on the system
zlib; cloudfree no longer decodes with GDAL (``cloudfree.blocks``), so the same run also
measures the *inflate floor*: ISA-L inflating the same tiles' compressed bytes, already in
memory (no predictor, no placement, no I/O), plus the same encode: what no reader of these
DEFLATE tiles can beat. Pixel agreement: the peer's ``compare.py``. Ratios (medians over the
rounds), wall and CPU: odc / cloudfree (target >= 3), cloudfree peak / odc peak (<= 1/5),
cloudfree / codec floor (<= 1.3); also odc / floor, which bounds the first: cloudfree cannot be
more than (odc / floor) times faster than odc.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from align_scenes import source_tif  # noqa: E402

from cloudfree.deflate import system_zlib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEER = Path(os.environ.get("PEER_DIR", ROOT.parent / "shared" / "peer"))
PEER_PY = ROOT / ".venv-peer" / "bin" / "python"
CF = ROOT / ".venv" / "bin" / "cloudfree"
TILE, YEAR, EPSG = "29RKH", 2023, 32629
ORIGIN = (199980.0, 2800020.0)  # 29RKH's upper-left corner (make_test_scenes.py --origin)
#: The crops are moved onto the tile's block grid (``align_scenes.py``) at this offset; the
#: peer README's reference AOI (its centred 2048 px) moves with them.
ALIGN_OFFSET_PX = 6144
BANDS = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08",
         "nir09", "swir16", "swir22")


#: The system zlib: preloaded, GDAL binds it instead of our zlib-ng (``cloudfree.deflate``), so
#: the floor measured with it is the codec floor of a stock rasterio (odc's, in its own venv).
SYSTEM_ZLIB = system_zlib()


#: Runs a command and writes its own wall s and ``wait4`` rusage to a file. Measured commands
#: start from this small process, not from the bench's: Linux starts a child's ``ru_maxrss``
#: at its parent's peak RSS (``exec`` keeps the high-water mark of the mm it replaces,
#: fs/exec.c ``exec_mmap``: ``setmax_mm_hiwater_rss``), so children of a bench that had grown
#: to 1.4 GB generating scenes all reported 1,405 MB.
LAUNCHER = """import json, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"wall_s": time.perf_counter() - t0, "maxrss_kb": ru.ru_maxrss,
               "cpu_s": ru.ru_utime + ru.ru_stime}, f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> dict:
    """Run ``cmd``; wall s, peak RSS MB and CPU s of that process alone (``os.wait4`` in
    :data:`LAUNCHER`), the 1-minute load average before and after, and the last JSON document
    it printed on stdout (``report``: odc_median's line, cloudfree's ``--json`` summary, the
    floor's figures)."""
    load0 = os.getloadavg()[0]
    with open(log, "a") as f, tempfile.TemporaryFile("w+") as out, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as stats:
        f.write("+ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", LAUNCHER, stats.name,
                               *map(str, cmd)], stdout=out, stderr=f, env=env, check=False)
        out.seek(0)
        text = out.read()
        f.write(text)
        got = json.loads(stats.read() or "{}")
    if proc.returncode != 0 or not got:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))} (see {log})")
    return {"wall_s": got["wall_s"], "peak_rss_mb": got["maxrss_kb"] / 1024,
            "cpu_s": got["cpu_s"], "load": (load0 + os.getloadavg()[0]) / 2,
            "report": _last_json(text)}


def _last_json(text: str):
    """The last JSON document in ``text`` (a one-line object, or an indented list/object)."""
    starts = [i for i, ch in enumerate(text) if ch in "[{" and (i == 0 or text[i - 1] == "\n")]
    for i in reversed(starts):
        try:
            return json.loads(text[i:])
        except json.JSONDecodeError:
            continue
    return None


def crop_tiles(path: str) -> tuple[list[tuple[int, int]], dict]:
    """The (offset, size) of each full-resolution tile of ``path`` (row by row) and its
    layout: block, dtype, samples, predictor, tiles across and down."""
    import rasterio

    from cloudfree.blocks import tile_range

    with rasterio.open(path) as src:
        (bh, bw), = set(src.block_shapes)
        across, down = math.ceil(src.width / bw), math.ceil(src.height / bh)
        ranges = [tile_range(src, x, y) for y in range(down) for x in range(across)]
        if None in ranges:
            raise ValueError(f"{path} has sparse tiles: not one of the peer's crops")
        predictor = int(src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR", 1))
        lay = {"block": bw, "dtype": src.dtypes[0], "samples": src.count,
               "predictor": predictor, "across": across, "down": down,
               "transform": src.transform}
    return ranges, lay


def tile_tiff(placed: str, dst: Path) -> None:
    """A GeoTIFF of the whole tile grid holding the compressed tiles of the crop under
    ``placed`` (``align_scenes.py``'s VRT) where that VRT places it (on the tile's block
    grid), every other tile sparse (not stored, read as nodata), as Earth Search's whole-tile
    COGs with an empty swath part: the same bytes decoded as the crop's, through the same
    reader as a real asset."""
    import rasterio
    from fastscenes import BlockPool, write_tiff

    from cloudfree.grid import parse_tile

    crop = source_tif(placed)
    ranges, lay = crop_tiles(crop)
    with rasterio.open(placed) as src:  # where align_scenes.py put the crop
        where = src.transform
    res = where.a
    col, rem_c = divmod(round((where.c - ORIGIN[0]) / res), lay["block"])
    row, rem_r = divmod(round((ORIGIN[1] - where.f) / res), lay["block"])
    if rem_c or rem_r:
        raise ValueError(f"{placed} does not lie on the tile's block grid")
    raw = Path(crop).read_bytes()
    pool = BlockPool(lay["block"], lay["dtype"], lay["samples"],
                     tuple(raw[o:o + n] for o, n in ranges), lay["predictor"])
    size = math.ceil(109800 / res)
    per_side = math.ceil(size / lay["block"])
    picks: list[int | None] = [None] * per_side ** 2
    for y in range(lay["down"]):
        for x in range(lay["across"]):
            picks[(row + y) * per_side + col + x] = y * lay["across"] + x
    write_tiff(dst, size, pool, picks, parse_tile(TILE), int(res))
    add_overviews(dst)


def add_overviews(path: Path) -> None:
    """Overviews as Earth Search's COGs have them (a real 10 m B04: 5490, 2745, 1373, 687 px,
    ``OVR_RESAMPLING_ALG=AVERAGE``; halving down to 512 px or more, DEFLATE with the predictor):
    select's harmonization samples read an overview, and without one GDAL would decode the
    full-resolution tiles for every sample (select took 59 s instead of 0.6)."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.Env(COMPRESS_OVERVIEW="DEFLATE", PREDICTOR_OVERVIEW=2,
                      GDAL_TIFF_OVR_BLOCKSIZE=512), rasterio.open(path, "r+") as ds:
        factors = [2 ** k for k in range(1, 6) if ds.width / 2 ** k >= 512]
        if factors:
            ds.build_overviews(factors, Resampling.average)


def tile_items(scenes: Path, out: Path) -> Path:
    """items.ndjson whose hrefs are whole-tile GeoTIFFs over the peer's crops (:func:`tile_tiff`;
    cloudfree's reads expect tile-sized rasters)."""
    out.mkdir(parents=True, exist_ok=True)
    lines, jobs = [], []
    for line in (scenes / "items.ndjson").read_text().splitlines():
        item = json.loads(line)
        for key, asset in item["assets"].items():
            href = asset.get("href", "")
            if not href.endswith((".tif", ".vrt")):
                continue
            tif = out / f"{item['id']}_{key}.tif"
            if not tif.exists():
                jobs.append((href, tif))
            asset["href"] = str(tif)
        lines.append(json.dumps(item))
    with ThreadPoolExecutor(2) as pool:  # GDAL builds overviews without the GIL
        list(pool.map(lambda job: tile_tiff(*job), jobs))
    path = out / "items.ndjson"
    path.write_text("\n".join(lines) + "\n")
    return path


def codec_floor(scenes: Path, outputs: Path, n: int, aoi: str) -> dict:
    """Decode the AOI's source blocks (12 bands + SCL once per scene) and encode the outputs,
    2 threads each; seconds and CPU seconds (this process, all threads) of each part."""
    import resource

    import numpy as np
    import rasterio
    from rasterio.windows import Window as RWin

    x0, y0, x1, y1 = map(float, aoi.split(","))
    items = [json.loads(x) for x in (scenes / "items.ndjson").read_text().splitlines()]
    items = sorted(items, key=lambda i: i["properties"].get("eo:cloud_cover", 0))[:n]
    jobs = [it["assets"][k]["href"] for it in items for k in (*BANDS, "scl")]

    def blocks_of(href: str) -> tuple[int, int, int, int]:
        """The block-aligned window of the crop under ``href`` that covers the AOI."""
        with rasterio.open(href) as grid:  # the placed VRT: where the AOI lies in the crop
            c0, r0 = ~grid.transform * (x0, y1)
            c1, r1 = ~grid.transform * (x1, y0)
        with rasterio.open(source_tif(href)) as src:
            bx, by = src.block_shapes[0][1], src.block_shapes[0][0]
            c0, r0 = int(c0) // bx * bx, int(r0) // by * by
            c1, r1 = min(math.ceil(c1 / bx) * bx, src.width), min(math.ceil(r1 / by) * by,
                                                                    src.height)
        return c0, r0, c1, r1

    def decode(href: str) -> int:
        c0, r0, c1, r1 = blocks_of(href)
        with rasterio.open(source_tif(href)) as src:  # the crop's own blocks, no VRT
            return src.read(1, window=RWin(c0, r0, c1 - c0, r1 - r0)).nbytes

    def tile_bytes(href: str) -> list[bytes]:
        """The compressed bytes of the same blocks (the inflate floor's input)."""
        c0, r0, c1, r1 = blocks_of(href)
        ranges, lay = crop_tiles(source_tif(href))
        raw = Path(source_tif(href)).read_bytes()
        b = lay["block"]
        size = b * b * lay["samples"] * np.dtype(lay["dtype"]).itemsize
        return [(raw[o:o + n], size) for i, (o, n) in enumerate(ranges)
                if c0 <= i % lay["across"] * b < c1 and r0 <= i // lay["across"] * b < r1]

    def cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    t0, c0 = time.perf_counter(), cpu()
    with ThreadPoolExecutor(2) as pool:
        decoded = sum(pool.map(decode, jobs))
    t_dec, c_dec = time.perf_counter() - t0, cpu() - c0

    # the inflate floor: ISA-L (the fastest inflate measured, cloudfree.blocks) on the same
    # tiles' compressed bytes, read beforehand: no predictor, no placement, no I/O; each
    # output allocated at its size and reused from the heap (as cloudfree.blocks does)
    from isal.isal_zlib import decompress

    from cloudfree import allocator

    allocator.tune()
    compressed = [t for href in jobs for t in tile_bytes(href)]
    t0, c0 = time.perf_counter(), cpu()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda t: len(decompress(t[0], bufsize=t[1])), compressed))
    t_inf, c_inf = time.perf_counter() - t0, cpu() - c0

    def encode(band: str) -> None:
        with rasterio.open(outputs / f"{band}.tif") as src:
            data, profile = src.read(), src.profile
        with tempfile.TemporaryDirectory() as tmp, rasterio.open(
                Path(tmp) / "x.tif", "w", **profile) as dst:
            dst.write(np.ascontiguousarray(data))

    t0, c0 = time.perf_counter(), cpu()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(encode, BANDS))
    return {"decode_s": t_dec, "decoded_mb": decoded / 1e6, "decode_cpu_s": c_dec,
            "inflate_s": t_inf, "inflate_cpu_s": c_inf, "tiles": len(compressed),
            "encode_s": time.perf_counter() - t0, "encode_cpu_s": cpu() - c0}


def agreement(a: Path, b: Path) -> list[dict]:
    p = subprocess.run([str(PEER_PY), str(PEER / "compare.py"), "--a", str(a), "--b", str(b)],
                       capture_output=True, text=True)
    return [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]


ENGINES = ("odc", "cloudfree", "cloudfree-off")


def engine_cmd(engine: str, args, scenes: Path, items: Path, out: Path, aoi: str) -> list:
    """The command of one engine: odc-stac, cloudfree (outlier rejection on, the default) or
    cloudfree with it off (what odc computes: SCL mask + median)."""
    if engine == "odc":
        return [PEER_PY, PEER / "odc_median.py", "--items", scenes / "items.ndjson",
                "--bands", "all", "--native", "--n", args.scenes, "--aoi-native", aoi,
                "--threads", 2, "--out", out]
    return [CF, "composite", "--tile", TILE, "--year", YEAR, "--scenes", args.scenes,
            "--items", items, "--bbox-native", aoi, "--quiet", "--json", "--out", out,
            "--outliers", "off" if engine == "cloudfree-off" else "on"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenes", type=int, default=16)
    ap.add_argument("--work", default="/tmp/cf-peer")
    ap.add_argument("--floor", nargs=3, metavar=("SCENES", "OUTPUTS", "AOI"),
                    help=argparse.SUPPRESS)  # one codec-floor run (a process of its own)
    args = ap.parse_args(argv)
    if args.floor:
        print(json.dumps(codec_floor(Path(args.floor[0]), Path(args.floor[1]), args.scenes,
                                     args.floor[2])))
        return 0
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
    aligned = work / f"scenes-{ALIGN_OFFSET_PX}"
    if not (aligned / "items.ndjson").exists():
        shutil.rmtree(aligned, ignore_errors=True)
        measure([sys.executable, Path(__file__).with_name("align_scenes.py"), scenes, aligned,
                 "--offset-px", ALIGN_OFFSET_PX], log)
    scenes = aligned
    aoi = ",".join(f"{v:.0f}" for v in json.loads((scenes / "extent.json").read_text())[
        "aoi_native"])
    items = tile_items(scenes, work / f"tile-cog-{ALIGN_OFFSET_PX}")
    runs: dict[str, list[dict]] = {e: [] for e in (*ENGINES, "floor", "floor-zlib")}
    for r in range(args.rounds):
        order = ENGINES if r % 2 == 0 else ENGINES[::-1]
        for engine in order:
            out = work / f"{engine}_r{r}"
            runs[engine].append(measure(engine_cmd(engine, args, scenes, items, out, aoi), log))
            print(f"round {r + 1} {engine:13s} " + _brief(runs[engine][-1]), file=sys.stderr)
        outputs = work / f"cloudfree_r{r}" / f"{TILE}_{YEAR}_bands"
        floors = {"floor": None, "floor-zlib": SYSTEM_ZLIB} if SYSTEM_ZLIB else {"floor": None}
        for name, preload in floors.items():
            env = {**os.environ, "LD_PRELOAD": preload} if preload else None
            got = measure([sys.executable, __file__, "--scenes", args.scenes, "--floor", scenes,
                           outputs, aoi], log, env)
            floor = {**got.pop("report"), **got}
            floor["compute_s"] = floor["decode_s"] + floor["encode_s"]
            floor["compute_cpu_s"] = floor["decode_cpu_s"] + floor["encode_cpu_s"]
            runs[name].append(floor)
            print(f"round {r + 1} {name:13s} " + _brief(floor), file=sys.stderr)
    # the inflate floor: ISA-L on the same tiles' bytes (measured in the zlib-ng floor's run)
    runs["floor-inflate"] = [{"compute_s": r["inflate_s"] + r["encode_s"],
                              "compute_cpu_s": r["inflate_cpu_s"] + r["encode_cpu_s"],
                              "load": r["load"]} for r in runs["floor"]]
    agree = {e: agreement(work / "odc_r0", work / f"{e}_r0" / f"{TILE}_{YEAR}_bands")
             for e in ENGINES[1:]}
    report(runs, agree)
    return 0


def _brief(run: dict) -> str:
    return json.dumps({k: round(v, 2) for k, v in run.items() if isinstance(v, float)})


def report(runs: dict[str, list[dict]], agree: dict[str, list[dict]]) -> None:
    def med(engine: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[engine])

    def steps(engine: str) -> dict[str, float]:
        docs = [r["report"] for r in runs[engine] if r.get("report")]
        parts = [d[0]["steps"] if isinstance(d, list) else
                 {k: d[k] for k in ("import_s", "graph_s", "compute_s", "write_s") if k in d}
                 for d in docs]
        return {k: statistics.median(p.get(k, 0.0) for p in parts) for k in parts[0]} \
            if parts else {}

    loads = [r["load"] for e in runs for r in runs[e]]
    print(f"\nload average (1 min) during the runs: {min(loads):.1f}-{max(loads):.1f} "
          f"(median {statistics.median(loads):.1f}; 2 cores)")
    print(f"{'':14s} {'wall s':>20s} {'peak RSS MB':>22s} {'CPU s':>20s}")
    for e in ENGINES:
        cells = [", ".join(f"{r[k]:.1f}" for r in runs[e]) for k in ("wall_s", "peak_rss_mb",
                                                                      "cpu_s")]
        print(f"{e:14s} {cells[0]:>20s} {cells[1]:>22s} {cells[2]:>20s}")
    for e in ENGINES:
        st = steps(e)
        if st:
            print(f"  {e} steps (median s): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in st.items()))
    f = runs["floor"]
    for name, what in (("floor", "GDAL on our zlib-ng"), ("floor-zlib", "the system zlib")):
        if not runs.get(name):
            continue
        x = runs[name]
        walls = ", ".join(f"{r['compute_s']:.1f}" for r in x)
        cpus = ", ".join(f"{r['compute_cpu_s']:.1f}" for r in x)
        print(f"codec floor, {what}: {walls} s, {cpus} CPU-s (decode "
              f"{statistics.median(r['decode_s'] for r in x):.1f} s of "
              f"{x[0]['decoded_mb']:.0f} MB + encode "
              f"{statistics.median(r['encode_s'] for r in x):.1f} s; 2 threads; process start "
              f"and imports not counted)")
    print(f"inflate floor, ISA-L on the same {f[0]['tiles']} tiles' bytes (no predictor, no "
          "placement, bytes already read) + the same encode: "
          + ", ".join(f"{r['compute_s']:.1f}" for r in runs["floor-inflate"]) + " s, "
          + ", ".join(f"{r['compute_cpu_s']:.1f}" for r in runs["floor-inflate"]) + " CPU-s")
    for e, rows in agree.items():
        per_band = [a for a in rows if "band" in a]
        if per_band:
            print(f"pixel agreement odc vs {e} (equal / within 1): " + ", ".join(
                f"{a['band']} {a['equal_frac']:.4f}/{a['within1_frac']:.4f}" for a in per_band))
    print(f"\nratios (medians of {len(f)} rounds)        outliers on   off   target")
    for label, key in (("speed   odc / cloudfree wall      ", "wall_s"),
                       ("        odc / cloudfree CPU-s     ", "cpu_s")):
        on, off = (med("odc", key) / med(e, key) for e in ENGINES[1:])
        print(f"  {label} {on:9.2f}x {off:5.2f}x  >= 3")
    on, off = (med(e, "peak_rss_mb") / med("odc", "peak_rss_mb") for e in ENGINES[1:])
    print(f"  memory  cloudfree / odc peak RSS   {on:9.2f}  {off:5.2f}   <= 0.20")
    for name, title in (("floor", "  floor  "),
                        ("floor-zlib", "  against the system zlib's floor (what a stock "
                                       "rasterio decodes at; odc runs on it):\n         "),
                        ("floor-inflate", "  against the inflate floor (ISA-L: what no reader "
                                          "of these DEFLATE tiles can beat):\n         ")):
        if not runs.get(name):
            continue
        wall = statistics.median(x["compute_s"] for x in runs[name])
        cpu = statistics.median(x["compute_cpu_s"] for x in runs[name])
        on, off = (med(e, "wall_s") / wall for e in ENGINES[1:])
        print(f"{title} cloudfree wall / floor     {on:9.2f}x {off:5.2f}x  <= 1.3")
        on, off = (med(e, "cpu_s") / cpu for e in ENGINES[1:])
        print(f"          cloudfree CPU-s / floor    {on:9.2f}x {off:5.2f}x")
        print(f"  (odc itself: {med('odc', 'wall_s') / wall:.2f}x that floor's wall, "
              f"{med('odc', 'cpu_s') / cpu:.2f}x its CPU-s)")


if __name__ == "__main__":
    sys.exit(main())
