"""Full-size Earth-Search-like scenes for benchmarks, in seconds instead of minutes.

    .venv/bin/python bench/fastscenes.py OUT_DIR --scenes 16 [--bands blue,swir16,coastal]

``cloudfree synth`` renders every pixel (about 2.7 min per full scene). Benchmarks of decode,
median and assemble need the *shape* of the archive, not its content: full 10980² / 5490² /
1830² grids, DEFLATE tiles of 1024 px (512 px for SCL, pixel-interleaved RGB for ``visual``),
nodata 0, realistic compressibility. So each asset is a tiled GeoTIFF written by hand whose
tiles are drawn from a small pool of pre-compressed blocks: the pool is compressed once (a few
seconds), every file is then only offsets and bytes. A TIFF's ``TileOffsets`` may point several
tiles at the same bytes; GDAL still decodes every tile it reads (its block cache is keyed by
tile index), so decode cost is that of a real file.

Profile checked against real Earth Search COGs: DEFLATE with the horizontal predictor
(:data:`PREDICTOR`), ``INTERLEAVE=BAND``, nodata 0, 1024 px blocks (a real B04's ``gdalinfo``;
the 512 px SCL blocks from DESIGN, ``bands.Band.block``). Reflectance
blocks are real reflectance (:data:`REAL_BLUE`, crops of a real Earth Search band; a smooth field
plus noise where ../shared/realdata is missing); SCL blocks are
blobs of clear (4, 5) and cloud (8, 9, 3) classes, so masks vary across scenes and pixels.
Overviews are not written: the pipeline reads full resolution only.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import time
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from cloudfree.bands import SCL, Band, get_band
from cloudfree.grid import Tile, parse_tile

#: Distinct compressed blocks per pool; each file draws ``PER_FILE`` of them.
POOL_SIZE = 8
PER_FILE = 4
ZLEVEL = 6  # what GDAL's DEFLATE writes by default (sentinel-cogs)
#: Earth Search's COGs carry PREDICTOR=2: ``gdalinfo`` of a real
#: ``s3://sentinel-cogs/sentinel-s2-l2a-cogs/22/L/HH/2023/7/S2A_22LHH_20230703_0_L2A/B04.tif``
#: prints ``COMPRESSION=DEFLATE``, ``PREDICTOR=2`` (quoted in ``cloudfree.windows``). Undoing it
#: costs a reader time (libtiff: about a third of the inflate), so the benchmarks' scenes have it
#: too: the reflectance bands (the SCL's and the visual image's predictor is not known to us;
#: they have none, as in the synthetic archive). Until 2026-12-02 none had it, after the
#: rio-tiler-pds test fixtures, which were re-encoded for its tests (decimated 10x, 512 px
#: tiles, no predictor).
PREDICTOR = 2

_SHORT, _LONG, _DOUBLE, _ASCII = 3, 4, 12, 2


@dataclass(frozen=True)
class BlockPool:
    """Pre-compressed tiles of one kind (dtype, block size, samples per pixel)."""

    block: int
    dtype: str
    samples: int
    blobs: tuple[bytes, ...]
    predictor: int = 1  # the TIFF predictor the blobs were encoded with

    @property
    def raw_bytes(self) -> int:
        return self.block * self.block * self.samples * np.dtype(self.dtype).itemsize


#: Real L2A reflectance: Earth Search's 29RKH B02 of 2020-02-19 as rio-tiler-pds keeps it
#: (decimated 10x, 1098 px). A pool block of it inflates like a real block: its texture (not
#: iid noise) is what an inflater's speed depends on. On the synthetic blocks below ISA-L was no
#: faster than zlib-ng (2026-12-02: 31.9 % against 28.3 % of a median batch's CPU), on these
#: real pixels tiled to 1024 px with the predictor it is 4.9 against 6.4 ms a block (GDAL
#: 9.0), and they compress to 0.62 of raw, as a real 10 m band does (195.6 MB of 241 MB at
#: full resolution plus overviews: plan_calibration.json ``bytes_per_scene``).
REAL_BLUE = ("realdata/rio-tiler-pds/tests/fixtures/sentinel-cogs/sentinel-s2-l2a-cogs/29/R/KH/"
             "2020/2/S2A_29RKH_20200219_0_L2A/B02.tif")


def _shared() -> Path:
    """``$CLOUDFREE_SHARED``, else ``../shared`` beside this checkout (tests/conftest.py)."""
    import os

    return Path(os.environ.get("CLOUDFREE_SHARED") or
                Path(__file__).resolve().parents[2] / "shared")


@cache
def _real_blue() -> np.ndarray | None:
    path = _shared() / REAL_BLUE
    if not path.exists():
        return None
    import rasterio

    with rasterio.open(path) as src:
        return src.read(1)


def _real_block(rng: np.random.Generator, block: int) -> np.ndarray | None:
    """A block of real reflectance: a random crop of the real band tiled 2 x 2, flipped at
    random, with a random brightness offset (so scenes differ); None without the file."""
    real = _real_blue()
    if real is None:
        return None
    big = np.tile(real, (2, 2))
    r, c = (int(v) for v in rng.integers(0, big.shape[0] - block, 2))
    out = big[r:r + block, c:c + block]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1]
    return np.clip(out.astype(np.int32) + int(rng.integers(-150, 150)), 1, 65535).astype(
        np.uint16)


def _reflectance_block(rng: np.random.Generator, block: int, samples: int, dtype: str):
    """A smooth field plus noise (without the real band: iid noise inflates unlike real pixels)."""
    y, x = np.mgrid[0:block, 0:block].astype(np.float32) / block
    phase = rng.random(4) * 6.28
    field = np.sin(3 * x + phase[0]) * np.cos(2 * y + phase[1])
    field += 0.5 * np.sin(9 * (x + y) + phase[2])
    if dtype == "uint8":
        base = 90 + 40 * field
        out = np.stack([base + rng.normal(0, 6, base.shape) for _ in range(samples)], axis=-1)
        return np.clip(out, 1, 255).astype(np.uint8)
    base = 1500 + 700 * field + 300 * rng.random()
    return np.clip(base + rng.normal(0, 60, base.shape), 1, 65535).astype(np.uint16)


def _scl_block(rng: np.random.Generator, block: int) -> np.ndarray:
    """Blobs of classes: mostly vegetation/bare (4, 5), some cloud (8, 9) and shadow (3)."""
    coarse = rng.random((block // 64 + 2, block // 64 + 2))
    up = np.kron(coarse, np.ones((64, 64)))[:block, :block]
    up += rng.normal(0, 0.04, up.shape)
    classes = np.select([up < 0.08, up < 0.5, up < 0.72, up < 0.86], [3, 4, 5, 8], 9)
    return classes.astype(np.uint8)


def horizontal_differences(block: np.ndarray) -> np.ndarray:
    """TIFF's horizontal predictor (PREDICTOR=2, TIFF 6.0 section 14): each sample minus the
    same sample of the pixel to its left, modulo the sample size; the first column as is.
    ``block`` is (h, w) or (h, w, samples)."""
    out = block.copy()
    out[:, 1:] = block[:, 1:] - block[:, :-1]  # unsigned: wraps as libtiff's does
    return out


@cache
def make_pool(kind: str, seed: int = 0, size: int = POOL_SIZE) -> BlockPool:
    """``kind``: "uint16" (reflectance), "visual" (RGB uint8) or "scl"."""
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(size):
        if kind == "scl":
            raw = _scl_block(rng, SCL.block)
        elif kind == "visual":
            raw = _reflectance_block(rng, 1024, 3, "uint8")
        else:  # real pixels when ../shared/realdata is there, else the synthetic field
            raw = _real_block(rng, 1024)
            if raw is None:
                raw = _reflectance_block(rng, 1024, 1, "uint16")
        if kind == "uint16":  # the reflectance bands: Earth Search's predictor
            raw = horizontal_differences(raw)
        blobs.append(zlib.compress(raw.astype(raw.dtype.newbyteorder("<")).tobytes(), ZLEVEL))
    if kind == "scl":
        return BlockPool(SCL.block, "uint8", 1, tuple(blobs))
    if kind == "visual":
        return BlockPool(1024, "uint8", 3, tuple(blobs))
    return BlockPool(1024, "uint16", 1, tuple(blobs), PREDICTOR)


def _entry(tag: int, typ: int, values) -> tuple[int, int, int, bytes]:
    fmt = {_SHORT: "H", _LONG: "I", _DOUBLE: "d", _ASCII: "s"}[typ]
    if typ == _ASCII:
        data = values.encode() + b"\0"
        return tag, typ, len(data), data
    values = list(values)
    return tag, typ, len(values), struct.pack(f"<{len(values)}{fmt}", *values)


def write_tiff(path: Path, size: int, pool: BlockPool, picks: list[int | None], tile: Tile,
               resolution: int) -> int:
    """A tiled little-endian GeoTIFF of ``size``² px whose tiles are ``pool.blobs[picks[i]]``
    (row by row; None: a sparse tile, not stored, read as nodata).

    Only the blobs in ``set(picks)`` are stored, once each. Returns the file size.
    """
    per_side = math.ceil(size / pool.block)
    if len(picks) != per_side * per_side:
        raise ValueError(f"need {per_side ** 2} picks, got {len(picks)}")
    used = sorted({i for i in picks if i is not None})
    body = bytearray(struct.pack("<2sHI", b"II", 42, 0))  # IFD offset patched below
    where = {}
    for i in used:
        where[i] = len(body)
        body += pool.blobs[i]
    if len(body) % 2:
        body += b"\0"
    ifd_at = len(body)
    struct.pack_into("<I", body, 4, ifd_at)
    bits = 8 * np.dtype(pool.dtype).itemsize
    grid = tile.transform(resolution)
    epsg = int(str(tile.crs).split(":")[-1])
    entries = [
        _entry(256, _LONG, [size]), _entry(257, _LONG, [size]),
        _entry(258, _SHORT, [bits] * pool.samples), _entry(259, _SHORT, [8]),
        _entry(262, _SHORT, [2 if pool.samples == 3 else 1]),
        _entry(277, _SHORT, [pool.samples]), _entry(284, _SHORT, [1]),
        _entry(317, _SHORT, [pool.predictor]),
        _entry(322, _LONG, [pool.block]), _entry(323, _LONG, [pool.block]),
        _entry(324, _LONG, [0 if i is None else where[i] for i in picks]),
        _entry(325, _LONG, [0 if i is None else len(pool.blobs[i]) for i in picks]),
        _entry(339, _SHORT, [1] * pool.samples),
        _entry(33550, _DOUBLE, [resolution, resolution, 0.0]),
        _entry(33922, _DOUBLE, [0.0, 0.0, 0.0, grid.c, grid.f, 0.0]),
        _entry(34735, _SHORT, [1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, epsg]),
        _entry(42113, _ASCII, "0"),
    ]
    n = len(entries)
    data_at = ifd_at + 2 + 12 * n + 4
    ifd, extra = bytearray(struct.pack("<H", n)), bytearray()
    for tag, typ, count, data in entries:
        if len(data) <= 4:
            ifd += struct.pack("<HHI", tag, typ, count) + data.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, typ, count, data_at + len(extra))
            extra += data + (b"\0" if len(data) % 2 else b"")
    ifd += struct.pack("<I", 0)
    path.write_bytes(bytes(body + ifd + extra))
    return path.stat().st_size


def _picks(per_side: int, scene: int, band_no: int, pool_size: int) -> list[int]:
    """``PER_FILE`` pool blocks per file, laid out so neighbours and scenes differ."""
    chosen = [(scene * 7 + band_no * 5 + k * 11) % pool_size for k in range(PER_FILE)]
    return [chosen[(r * 3 + c + scene) % PER_FILE] for r in range(per_side)
            for c in range(per_side)]


def asset_file(out: Path, scene: int, band: Band) -> Path:
    return out / f"s{scene:02d}" / f"{band.s2_name}.tif"


def generate(out: Path, n_scenes: int, bands: list[str], tile: str = "33UUP",
             year: int = 2023, pool_size: int = POOL_SIZE) -> dict:
    """Write ``n_scenes`` scenes (the ``bands`` and SCL) under ``out``; return the manifest.

    The manifest has the shape *select* writes (``tile``, ``year``, ``scenes`` with ``id``,
    ``assets`` and a zero harmonization offset), so ``composite_window`` reads it as is.
    """
    t = parse_tile(tile)
    wanted = [get_band(b) for b in bands]
    pools: dict[str, BlockPool] = {}
    scenes = []
    for s in range(n_scenes):
        assets = {}
        for no, band in enumerate([*wanted, SCL]):
            kind = "scl" if band is SCL else ("visual" if band.count == 3 else "uint16")
            if kind not in pools:
                pools[kind] = make_pool(kind, seed=len(pools), size=pool_size)
            pool = pools[kind]
            path = asset_file(out, s, band)
            path.parent.mkdir(parents=True, exist_ok=True)
            per_side = math.ceil(band.size / pool.block)
            write_tiff(path, band.size, pool, _picks(per_side, s, no, len(pool.blobs)), t,
                       band.resolution)
            assets[band.key] = str(path)
        scenes.append({"id": f"S2X_{t.id}_{year}{s + 1:04d}_0_L2A", "assets": assets,
                       "harmonization": {"offset": 0}})
    manifest = {"tile": t.id, "year": year, "scenes": scenes}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--scenes", type=int, default=16)
    ap.add_argument("--bands", default="blue,swir16,coastal")
    args = ap.parse_args()
    t0 = time.perf_counter()
    manifest = generate(args.out, args.scenes, args.bands.split(","))
    size = sum(p.stat().st_size for p in args.out.rglob("*.tif"))
    print(f"{len(manifest['scenes'])} scenes x {args.bands} + scl -> {args.out}: "
          f"{time.perf_counter() - t0:.1f} s, {size / 1e6:.0f} MB on disk")


if __name__ == "__main__":
    main()
