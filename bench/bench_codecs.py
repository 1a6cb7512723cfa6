"""The published COGs' compressions (template CogCompression): encoding CPU and bytes.

    .venv/bin/python bench/bench_codecs.py [--dir FULLTILE_DIR] [--rounds 3]

1. A full blue COG (17920² px at zoom 14 with its overviews): blue's median windows from a
   ``bench/bench_fulltile.py`` work folder (``--dir``; made with ``--bands blue`` when missing),
   assembled as the assemble Lambda does (``assemble.assemble_band``), DEFLATE and LERC_ZSTD
   alternating. The COG copy (``rasterio.shutil.copy``: the encoding, the one step where the
   codecs differ) is timed in CPU-s of this process (GDAL's 2 threads included).
2. Real Sentinel-2 pixels (``../shared/realdata``: Earth Search's 29RKH B02 and B11, ESA's T29UNU
   B04, a true-colour image of them), warped to web COGs the same way: bytes.

Prints each figure and the ``codecs`` entry of ``plan_calibration.json``: LERC_ZSTD's encoding
CPU as a share of DEFLATE's, and its bytes as a share of DEFLATE's on the real pixels.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

CODECS = ("deflate", "lerc_zstd")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def full_blue(folder: Path, rounds: int) -> dict[str, dict[str, list[float]]]:
    """CPU-s of the COG copy and bytes of blue's COG, per codec, ``rounds`` alternating."""
    import rasterio.shutil
    from bench_fulltile import TEMPLATE_MEMORY_MB, TILE, YEAR, LocalLayout

    from cloudfree import assemble
    from cloudfree.bands import get_band
    from cloudfree.windows import plan_windows

    windows = plan_windows(get_band("blue"), 16, TEMPLATE_MEMORY_MB)
    layout = LocalLayout("w", "d", "c", root=str(folder))
    if not Path(assemble.band_window_uris(layout, YEAR, TILE, "blue", windows)[-1]).exists():
        print(f"no blue windows under {folder}: bench_fulltile.py --bands blue first ...",
              file=sys.stderr)
        subprocess.run([sys.executable, str(HERE / "bench_fulltile.py"), "--bands", "blue",
                        "--dir", str(folder)], check=True)
    real_copy, spent = rasterio.shutil.copy, [0.0]

    def timed_copy(*args, **kwargs):
        c = _cpu()
        try:
            return real_copy(*args, **kwargs)
        finally:
            spent[0] += _cpu() - c

    rasterio.shutil.copy = timed_copy
    out: dict[str, dict[str, list[float]]] = {c: {"copy_cpu_s": [], "bytes": []}
                                              for c in CODECS}
    try:
        for r in range(rounds):
            for codec in (CODECS if r % 2 == 0 else CODECS[::-1]):
                spent[0] = 0.0
                info = assemble.assemble_band(layout, YEAR, TILE, "blue", windows,
                                              profile=codec)
                out[codec]["copy_cpu_s"].append(round(spent[0], 2))
                out[codec]["bytes"].append(info.size)
                print(f"round {r + 1} {codec:9s} COG copy {spent[0]:5.1f} CPU-s, "
                      f"{info.size / 1e6:6.1f} MB", file=sys.stderr)
    finally:
        rasterio.shutil.copy = real_copy
    return out


def real_bytes(work: Path) -> dict[str, dict[str, int]]:
    """Bytes of the web COGs of real pixels, per source and codec (the real-data test's)."""
    from tests.realdata import test_realdata_codecs as real

    from cloudfree.assemble import write_web_cog

    out = {}
    for source, zoom in real.CASES:
        name = real.case_name(source)
        folder = work / name.replace(" ", "_")
        folder.mkdir(parents=True)
        src, indexes = real.case_input(source, folder)
        out[name] = {c: write_web_cog(src, str(folder / c / "out.tif"), indexes=indexes,
                                      zoom_level=zoom, profile=c).size for c in CODECS}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/cloudfree-fulltile-codecs"),
                    help="a bench_fulltile.py --dir work folder (kept)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    blue = full_blue(args.dir, args.rounds)
    with tempfile.TemporaryDirectory(prefix="cloudfree-codecs-") as tmp:
        real = real_bytes(Path(tmp))
    med = {c: {k: statistics.median(v) for k, v in blue[c].items()} for c in CODECS}
    print("\nfull blue COG, 17920² px with overviews (median of the rounds):")
    for c in CODECS:
        print(f"  {c:9s} COG copy {med[c]['copy_cpu_s']:5.1f} CPU-s "
              f"({', '.join(map(str, blue[c]['copy_cpu_s']))}), {med[c]['bytes'] / 1e6:6.1f} MB")
    print("real Sentinel-2 pixels, web COGs (bytes):")
    shares = []
    for name, sizes in real.items():
        shares.append(sizes["lerc_zstd"] / sizes["deflate"])
        print(f"  {name:40s} deflate {sizes['deflate']:9,d}  lerc_zstd {sizes['lerc_zstd']:9,d}"
              f"  {shares[-1]:.3f}")
    entry = {"LERC_ZSTD": {
        "encode_cpu_share": round(med["lerc_zstd"]["copy_cpu_s"] / med["deflate"]["copy_cpu_s"],
                                  3),
        "bytes_share": round(statistics.mean(shares), 3),
        "bytes_share_synthetic": round(med["lerc_zstd"]["bytes"] / med["deflate"]["bytes"], 3)}}
    print("\nplan_calibration.json codecs entry:\n" + json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
