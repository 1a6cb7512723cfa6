"""One full 10980² tile through the median and assemble code paths, against the codec floor.

    .venv/bin/python bench/bench_fulltile.py                  # blue, swir16, coastal (~minutes)
    .venv/bin/python bench/bench_fulltile.py --full           # all 12 bands + visual
    .venv/bin/python bench/bench_fulltile.py --bands red,nir --memory-mb 1769 --scenes 16

Scenes come from ``fastscenes`` (full-size Earth-Search-like COGs, written in seconds). Each
band runs the way the Lambdas run it, on local files instead of S3:

* *median*: the band's windows from ``plan_windows(band, scenes, MedianMemoryMB)`` grouped by
  ``batch_windows(…, WINDOWS_PER_BATCH)``; every batch is one invocation, a fresh process
  calling ``composite_band_windows`` (read, mask, median, write the window GeoTIFFs);
* *assemble*: one fresh process calling ``assemble_band`` (stitch + web COG at native zoom;
  10 m stays at zoom 14).

Every invocation reports its seconds (inside the process: imports excluded, like a warm
Lambda) and its peak RSS (``ru_maxrss``: runtime + libraries + pixels), compared with the
memory setting. The codec floor is measured in the same run: decoding exactly the source
blocks the band needs (every block of every scene once, 2 threads), SCL once per tile, plus
encoding the published pixels (the output COG's full-resolution pixels, same DEFLATE level,
predictor and 2 threads; overviews excluded). Ratio = pipeline seconds / floor seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fastscenes import generate  # noqa: E402

from cloudfree.bands import OUTPUT_BANDS, SCL, get_band  # noqa: E402
from cloudfree.deflate import system_zlib  # noqa: E402
from cloudfree.layout import Layout  # noqa: E402
from cloudfree.manifest import WINDOWS_PER_BATCH  # noqa: E402
from cloudfree.median import DEFAULT_THREADS, compiled_available  # noqa: E402
from cloudfree.windows import batch_windows, plan_windows  # noqa: E402

TILE, YEAR = "33UUP", 2023
DEFAULT_BANDS = "blue,swir16,coastal"  # one band per resolution: minutes, not a quarter hour
TEMPLATE_MEMORY_MB = 3008  # MedianMemoryMB / AssembleMemoryMB defaults in template.yaml


@dataclass(frozen=True)
class LocalLayout(Layout):
    """The deployment's key layout under a local folder (storage handles plain paths)."""

    root: str = "."

    def run_prefix(self, year: int, tile: str) -> str:
        return f"{self.root}/work/{int(year)}/{tile}"

    def output_prefix(self, year: int, tile: str) -> str:
        return f"{self.root}/data/{int(year)}/{tile}"


def _peak_mb() -> float:
    """This process's peak resident memory (MB).

    ``VmHWM`` of /proc/self/status: the high-water mark of this address space. ``ru_maxrss``
    is wrong here: Linux carries the parent's peak across fork + exec into a spawned child
    (exec folds the old mm's high-water mark into the process's maxrss), so every child
    reported the parent's 789 MB.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_invocation(manifest: dict, band: str, windows: list[dict], root: str,
                      outliers: str = "on", memory_mb: int = TEMPLATE_MEMORY_MB) -> dict:
    """One median Lambda invocation: a batch of windows of one band (fresh process), with the
    function's memory (``tasks.median`` passes MedianMemoryMB: it decides reading ahead), set
    up as the median Lambda is at a cold start (``tasks.pixel_worker_setup``)."""
    from cloudfree import tasks
    from cloudfree.composite import composite_band_windows

    tasks.pixel_worker_setup()

    t0 = time.perf_counter()
    done = composite_band_windows(manifest, band, windows, LocalLayout("w", "d", "c", root=root),
                                  YEAR, TILE, overwrite=True, outliers=outliers,
                                  memory_mb=memory_mb)
    return {"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb(), "windows": len(done)}


def decide_invocation(manifest: dict, squares: list[dict], root: str) -> dict:
    """One decide Lambda invocation: a batch of the tile's outlier-decision squares (the
    pipeline's *decide* step, ``tasks.decide``), stored where the medians read them; set up
    as the decide Lambda is at a cold start (``tasks.pixel_worker_setup``)."""
    from cloudfree import tasks
    from cloudfree.composite import DEFAULT_DILATE_NODATA

    tasks.pixel_worker_setup()
    from cloudfree.outliers import decide_squares

    t0 = time.perf_counter()
    done = decide_squares(manifest["scenes"], squares,
                          LocalLayout("w", "d", "c", root=root).outlier_decisions(YEAR, TILE),
                          rule="on", mask_classes=manifest.get("mask_classes"),
                          dilate_nodata=DEFAULT_DILATE_NODATA)
    return {"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb(), **done}


def run_decide(manifest: dict, root: Path) -> dict:
    """The tile's decide step: ``manifest.decision_plan()``'s batches, one fresh process each
    (4 invocations of 4 squares of 1536 px on the 20 m grid), before any band."""
    from cloudfree.manifest import decision_plan

    plan = decision_plan()
    runs = [_fresh(decide_invocation, manifest, [w.to_dict() for w in plan.batch(i)], str(root))
            for i in range(len(plan.batches))]
    return {"invocations": len(runs), "seconds": sum(r["seconds"] for r in runs),
            "peak_mb": max(r["peak_mb"] for r in runs),
            "squares": sum(r["computed"] for r in runs)}


def assemble_invocation(band: str, windows: list[dict], root: str,
                        compression: str = "DEFLATE") -> dict:
    """One assemble Lambda invocation: stitch + web COG (+ the count COG for red), in the
    template's CogCompression ``compression``."""
    from cloudfree.assemble import assemble_band

    t0 = time.perf_counter()
    info = assemble_band(LocalLayout("w", "d", "c", root=root), YEAR, TILE, band, windows,
                         write_count=band == "red", profile=compression.lower())
    cogs = [info.href] + [c.href for c in info.related.values()]
    return {"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb(), "shape": info.shape,
            "zoom": info.zoom, "cogs": cogs, "bytes": info.size}


def _fresh(fn, *args, env: dict[str, str] | None = None):
    """Run ``fn(*args)`` in a new interpreter, like a Lambda invocation (own peak RSS), with
    ``env`` added to its environment (a spawned child starts with the parent's at submit)."""
    ctx = multiprocessing.get_context("spawn")
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        with ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=1) as pool:
            return pool.submit(fn, *args).result()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- the codec floor ---------------------------------------------------------------------------
def decode_all_blocks(paths: list[str], threads: int = 2) -> tuple[float, int]:
    """Seconds to decode every internal block of every file once; returns (seconds, bytes)."""
    import rasterio
    from rasterio.windows import Window

    def one(path: str) -> int:
        n = 0
        with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(path) as src:
            bh, bw = src.block_shapes[0]
            for r in range(0, src.height, bh):
                for c in range(0, src.width, bw):
                    n += src.read(window=Window(c, r, min(bw, src.width - c),
                                                min(bh, src.height - r))).nbytes
        return n

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(one, paths))
    return time.perf_counter() - t0, total


def encode_outputs(cogs: list[str], work: Path, threads: int = 2) -> float:
    """Seconds to DEFLATE-encode the published full-resolution pixels of ``cogs``."""
    import rasterio

    from cloudfree.assemble import cog_profile

    seconds = 0.0
    for href in cogs:
        with rasterio.open(href) as src:
            data, profile = src.read(), src.profile
        prof = cog_profile("deflate")
        profile.update(driver="GTiff", tiled=True, blockxsize=prof["blockxsize"],
                       blockysize=prof["blockysize"], compress="DEFLATE",
                       predictor=prof["predictor"], zlevel=prof["zlevel"])
        t0 = time.perf_counter()
        with rasterio.Env(GDAL_NUM_THREADS=str(threads)), \
                rasterio.open(work / "encode.tif", "w", **profile) as dst:
            dst.write(data)
        seconds += time.perf_counter() - t0
    return seconds


def codec_floor(paths: list[str], cogs: list[str], work: str) -> dict:
    """The floor of one band (decode its source blocks, encode its outputs) and the zlib GDAL
    ran it on (run in a fresh process: :func:`floors`)."""
    from cloudfree.deflate import gdal_zlib

    decode_s, decoded = decode_all_blocks(paths)
    encode_s = encode_outputs(cogs, Path(work)) if cogs else 0.0
    return {"decode_s": decode_s, "decoded": decoded, "encode_s": encode_s,
            "zlib": gdal_zlib()["version"]}


def floors(paths: list[str], cogs: list[str], work: Path) -> dict[str, dict]:
    """The codec floor twice, each in a fresh process: on the zlib GDAL binds here (zlib-ng,
    ``scripts/zlib_ng.py``) and on the system zlib preloaded (a stock rasterio's, which
    ``plan_calibration.json``'s decode and encode figures were measured with)."""
    ours = _fresh(codec_floor, paths, cogs, str(work))
    preload = system_zlib()  # none found: the system floor is ours
    return {"ours": ours, "system": _fresh(codec_floor, paths, cogs, str(work),
                                           env={"LD_PRELOAD": preload}) if preload else ours}


# --- one band, one tile ------------------------------------------------------------------------
def run_band(manifest: dict, band_key: str, root: Path, memory_mb: int,
             outliers: str = "on", compression: str = "DEFLATE") -> dict:
    band = get_band(band_key)
    n = len(manifest["scenes"])
    windows = plan_windows(band, n, memory_mb)
    batches = [[w.to_dict() for w in b] for b in batch_windows(windows, WINDOWS_PER_BATCH)]
    med = [_fresh(median_invocation, manifest, band.key, b, str(root), outliers, memory_mb)
           for b in batches]
    asm = _fresh(assemble_invocation, band.key, [w.to_dict() for w in windows], str(root),
                 compression)
    fl = floors([s["assets"][band.key] for s in manifest["scenes"]], asm["cogs"], root)
    system = fl["system"]
    return {
        "band": band.key, "res": band.resolution, "windows": len(windows),
        "side": windows[0].width, "invocations": len(batches),
        "median_s": sum(m["seconds"] for m in med), "assemble_s": asm["seconds"],
        "median_peak_mb": max(m["peak_mb"] for m in med), "assemble_peak_mb": asm["peak_mb"],
        "decode_s": fl["ours"]["decode_s"], "decoded_mb": fl["ours"]["decoded"] / 1e6,
        "encode_s": fl["ours"]["encode_s"], "zlib": fl["ours"]["zlib"],
        "sys_decode_s": system["decode_s"], "sys_encode_s": system["encode_s"],
        "sys_zlib": system["zlib"], "zoom": asm["zoom"], "shape": asm["shape"],
    }


def _print_band(r: dict, memory_mb: int) -> None:
    total = r["median_s"] + r["assemble_s"]
    floor = r["decode_s"] + r["encode_s"]
    sys_floor = r["sys_decode_s"] + r["sys_encode_s"]
    print(f"{r['band']:9s} {r['res']:2d} m  {r['windows']:3d} win of {r['side']:5d} px "
          f"in {r['invocations']:2d} inv | median {r['median_s']:6.1f} s  assemble "
          f"{r['assemble_s']:5.1f} s  = {total:6.1f} s | floor {floor:5.1f} s (decode "
          f"{r['decoded_mb']:5.0f} MB {r['decode_s']:5.1f} s + encode z{r['zoom']} "
          f"{r['encode_s']:4.1f} s) = {total / floor:4.1f}x; on {r['sys_zlib']} "
          f"{sys_floor:5.1f} s = {total / sys_floor:4.1f}x | peak RSS median "
          f"{r['median_peak_mb']:5.0f} / assemble {r['assemble_peak_mb']:5.0f} of {memory_mb} MB")


def _projection(rows: list[dict], scl: dict[str, float], decide_s: float = 0.0) -> None:
    """Per-tile figures: measured for the bands run, per-resolution means for the others,
    plus the decide step once (``decide_s``: above the floor, it decodes nothing the floor
    counts as output work)."""
    by_res: dict[int, list[dict]] = {}
    for r in rows:
        by_res.setdefault(r["res"], []).append(r)
    pipe = floor = sys_floor = 0.0
    projected, unknown = [], []
    for key in OUTPUT_BANDS:
        band = get_band(key)
        got = [r for r in rows if r["band"] == key]
        if not got:
            got = by_res.get(band.resolution, [])
            (projected if got else unknown).append(key)
        if got:
            pipe += sum(r["median_s"] + r["assemble_s"] for r in got) / len(got)
            floor += sum(r["decode_s"] + r["encode_s"] for r in got) / len(got)
            sys_floor += sum(r["sys_decode_s"] + r["sys_encode_s"] for r in got) / len(got)
    floor += scl["ours"]
    sys_floor += scl["system"]
    pipe += decide_s
    if unknown:
        print(f"tile: not projected (no band run at the resolution of {', '.join(unknown)}); "
              f"bands run and their same-resolution siblings: pipeline {pipe:.1f} s, floor "
              f"{floor:.1f} s = {pipe / floor:.1f}x")
        return
    kind = "projected" if projected else "measured"
    zlib = rows[0]["zlib"] if rows else "?"
    print(f"tile ({kind}, 12 bands + visual): pipeline {pipe:6.1f} s (decide step "
          f"{decide_s:.1f} s), codec floor {floor:5.1f} s on {zlib} (SCL once: "
          f"{scl['ours']:.1f} s) = {pipe / floor:.2f}x the floor")
    print(f"  against the floor on the system zlib ({rows[0]['sys_zlib']}, a stock rasterio's; "
          f"plan_calibration.json's decode and encode figures): {sys_floor:5.1f} s = "
          f"{pipe / sys_floor:.2f}x")
    if projected:
        print("  projected from the mean of the bands run at the same resolution: "
              f"{', '.join(projected)} (the visual image as a 10 m uint16 band)")
    print("  plan_calibration.json phase_seconds (cloudfree plan's tile schedule): "
          + json.dumps(phase_seconds(by_res, decide_s)))


def phase_seconds(by_res: dict[int, list[dict]], decide_s: float) -> dict:
    """This run's ``phase_seconds`` for ``cloudfree plan``: the decide step, then a band's
    median and assemble seconds per resolution (the mean of the bands run at it)."""
    def mean(res: int, key: str) -> float:
        rows = by_res.get(res, [])
        return round(sum(r[key] for r in rows) / len(rows), 2) if rows else 0.0

    return {"decide": round(decide_s, 2),
            "median": {str(res): mean(res, "median_s") for res in sorted(by_res)},
            "assemble": {str(res): mean(res, "assemble_s") for res in sorted(by_res)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=16)
    ap.add_argument("--bands", default=DEFAULT_BANDS)
    ap.add_argument("--full", action="store_true", help="every output band (12 + visual)")
    ap.add_argument("--memory-mb", type=int, default=TEMPLATE_MEMORY_MB)
    ap.add_argument("--dir", type=Path, help="work folder (default: a temp dir, removed)")
    ap.add_argument("--outliers", choices=("on", "off"), default="on",
                    help="outlier rejection (the template's default: on): the decide step runs "
                         "first, as in the pipeline, and the medians read its squares")
    ap.add_argument("--compression", choices=("DEFLATE", "LERC_ZSTD"), default="DEFLATE",
                    help="the published COGs' (the template's CogCompression); the floor's "
                         "encoding stays DEFLATE's")
    args = ap.parse_args()
    bands = list(OUTPUT_BANDS) if args.full else args.bands.split(",")
    refs = ["blue", "red", "nir08"] if args.outliers == "on" else []
    root = Path(args.dir or tempfile.mkdtemp(prefix="cloudfree-fulltile-"))
    try:
        t0 = time.perf_counter()
        manifest = generate(root / "scenes", args.scenes,
                            bands + [b for b in refs if b not in bands], TILE, YEAR)
        kernel = "compiled" if compiled_available() else "numpy (compiled kernel NOT built)"
        print(f"{args.scenes} full-size scenes of {TILE} ({', '.join(bands)} + scl) generated "
              f"in {time.perf_counter() - t0:.1f} s; median kernel {kernel}, "
              f"{DEFAULT_THREADS} threads; MedianMemoryMB {args.memory_mb}")
        decide = {"seconds": 0.0}
        if refs:
            decide = run_decide(manifest, root)
            print(f"decide    {decide['invocations']} invocations, {decide['squares']} squares: "
                  f"{decide['seconds']:6.1f} s | peak RSS {decide['peak_mb']:5.0f} of "
                  f"{args.memory_mb} MB")
        rows = []
        for key in bands:
            rows.append(run_band(manifest, key, root, args.memory_mb, args.outliers,
                                 args.compression))
            _print_band(rows[-1], args.memory_mb)
        scl = floors([s["assets"][SCL.key] for s in manifest["scenes"]], [], root)
        _projection(rows, {k: v["decode_s"] for k, v in scl.items()}, decide["seconds"])
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
