"""``generate_archive``: a synthetic Earth Search archive for tiles and a year, with its truth.

Output layout (in the bucket, or under ``--out DIR``)::

    sentinel-s2-l2a-cogs/{zone}/{band}/{sq}/{year}/{month}/{id}/{B01..B12,B8A,SCL,TCI,AOT,WVP}.tif
    sentinel-s2-l2a-cogs/.../{id}/thumbnail.jpg and {id}.json (the item, like Earth Search)
    truth/{tile}/{year}/{band}.tif      truth DNs (reflectance * 10000, no offset, nodata 0)
    truth/{tile}/{year}/visual.tif      truth TCI; clear_count.tif: clear observations (20 m)
    truth/{tile}/{year}/manifest.json   see ``build_manifest``
    stac/sentinel-2-l2a/collection.json and stac/sentinel-2-l2a/items/{id}.json

Items are loaded into a STAC API (Transactions) when ``api_url`` is given.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from ..grid import Tile, parse_bbox, parse_tile
from . import truth as truth_mod
from .cogs import CogSpec, SparseRaster, write_thumbnail
from .items import ASSET_FILES, COLLECTION_ID, build_collection, build_item, item_prefix
from .render import BAND_RES, PATCH_CELL_M, Renderer, Sky, Win, make_tci
from .scenes import Acquisition, plan_acquisitions, plan_publications, stable_seed
from .truth import BAND_KEYS, LANDSCAPES, Landscape

STRIP_ROWS_60 = 64  # 384 rows at 10 m: strips for full-tile generation (bounded memory)
CACHE_LIMIT_PX10 = 25_000_000
CLEAR_CLASSES = (2, 4, 5, 6, 7)  # valid under cloudfree's default SCL mask
MANIFEST_VERSION = 1


# --- where files go --------------------------------------------------------------------------
class Sink:
    """Destination of the archive: a folder (``--out``) or an S3 bucket on a local endpoint."""

    def uri(self, key: str) -> str:
        raise NotImplementedError

    def href(self, key: str) -> str:
        raise NotImplementedError

    def put_file(self, path: Path, key: str, content_type: str) -> None:
        raise NotImplementedError

    def put_json(self, key: str, obj: dict) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Wait for pending writes."""


class LocalSink(Sink):
    """Writes the bucket layout under a folder; hrefs are absolute file paths."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def uri(self, key: str) -> str:
        return str(self.root / key)

    def href(self, key: str) -> str:
        return self.uri(key)

    def put_file(self, path: Path, key: str, content_type: str) -> None:
        dst = self.root / key
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), dst)

    def put_json(self, key: str, obj: dict) -> None:
        dst = self.root / key
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(json.dumps(obj, indent=1))


class S3Sink(Sink):
    """Uploads to ``s3://bucket`` (created if missing); hrefs are path-style endpoint URLs."""

    def __init__(self, bucket: str, endpoint_url: str, workers: int = 4):
        from ..storage import s3_client

        self.bucket = bucket
        self.endpoint = endpoint_url.rstrip("/")
        self.client = s3_client(endpoint_url)
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._pending: list[Future] = []
        self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception:  # noqa: BLE001 - missing bucket: create it
            self.client.create_bucket(Bucket=self.bucket)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def href(self, key: str) -> str:
        return f"{self.endpoint}/{self.bucket}/{key}"

    def _upload(self, path: Path, key: str, content_type: str) -> None:
        self.client.upload_file(str(path), self.bucket, key,
                                ExtraArgs={"ContentType": content_type})
        path.unlink(missing_ok=True)

    def put_file(self, path: Path, key: str, content_type: str) -> None:
        self._pending.append(self._pool.submit(self._upload, path, key, content_type))
        if len(self._pending) > 64:
            self._drain(32)

    def put_json(self, key: str, obj: dict) -> None:
        body = json.dumps(obj, indent=1).encode()
        self._pending.append(self._pool.submit(
            self.client.put_object, Bucket=self.bucket, Key=key, Body=body,
            ContentType="application/json"))

    def _drain(self, keep: int = 0) -> None:
        while len(self._pending) > keep:
            self._pending.pop(0).result()

    def flush(self) -> None:
        self._drain(0)


# --- data area --------------------------------------------------------------------------------
def data_window(tile: Tile, aoi: tuple[float, float, float, float] | None) -> Win:
    """The window (60 m pixels) holding data: the whole tile, or the AOI's UTM envelope."""
    n60 = tile.shape(60)[0]
    if aoi is None:
        return Win(0, 0, n60, n60)
    from rasterio.warp import transform as warp

    minlon, minlat, maxlon, maxlat = parse_bbox(aoi)
    lons, lats = [], []
    for i in range(11):
        f = i / 10
        lons += [minlon + f * (maxlon - minlon)] * 2 + [minlon, maxlon]
        lats += [minlat, maxlat, minlat + f * (maxlat - minlat), minlat + f * (maxlat - minlat)]
    xs, ys = warp("EPSG:4326", tile.crs, lons, lats)
    x0, y0 = tile.origin
    col0 = max(0, math.floor((min(xs) - x0) / 60))
    col1 = min(n60, math.ceil((max(xs) - x0) / 60))
    row0 = max(0, math.floor((y0 - max(ys)) / 60))
    row1 = min(n60, math.ceil((y0 - min(ys)) / 60))
    if col1 <= col0 or row1 <= row0:
        raise InputError(f"AOI {aoi} does not intersect tile {tile.id}")
    return Win(col0, row0, col1 - col0, row1 - row0)


def strips(area: Win, rows: int = STRIP_ROWS_60) -> list[Win]:
    """Split a window into horizontal strips of at most ``rows`` 60 m rows."""
    return [Win(area.col, r, area.width, min(rows, area.row + area.height - r))
            for r in range(area.row, area.row + area.height, rows)]


def swath_lines(tile: Tile, area: Win, acquisitions: list[Acquisition], seed: int) -> dict:
    """Swath-edge line per edge orbit: through the data area, slanted ~12 degrees from N-S."""
    lines = {}
    x0, y0 = tile.origin
    rng = np.random.default_rng(stable_seed("swath", tile.id, seed))
    for track in {a.track for a in acquisitions if a.track.swath_edge}:
        frac = rng.uniform(0.2, 0.45)
        theta = math.radians(12)
        minx, maxx = x0 + area.col * 60, x0 + (area.col + area.width) * 60
        cy = y0 - (area.row + area.height / 2) * 60
        if track.distance_km > 0:  # track to the east: nodata on the west side
            point, normal = (minx + frac * (maxx - minx), cy), (-math.cos(theta), math.sin(theta))
        else:
            point, normal = (maxx - frac * (maxx - minx), cy), (math.cos(theta), -math.sin(theta))
        lines[track.relative_orbit] = {"point": point, "normal": normal, "fraction": frac}
    return lines


# --- results ----------------------------------------------------------------------------------
@dataclass
class TileResult:
    """What was written for one tile."""

    tile: str
    items: list[dict]
    manifest_uri: str
    manifest: dict


@dataclass
class ArchiveSummary:
    """What ``generate_archive`` wrote."""

    tiles: list[str]
    year: int
    items: list[dict]
    manifests: list[str]
    collection: dict
    seconds: float
    loaded: int = 0
    root: str = ""
    tile_results: list[TileResult] = field(default_factory=list)

    @property
    def item_ids(self) -> list[str]:
        return [i["id"] for i in self.items]


# --- generation -------------------------------------------------------------------------------
def _specs() -> dict[str, CogSpec]:
    specs = {k: CogSpec("uint16", 1, BAND_RES[k]) for k in BAND_KEYS}
    specs["scl"] = CogSpec("uint8", 1, 20, block=512)
    specs["visual"] = CogSpec("uint8", 3, 10)
    specs["aot"] = CogSpec("uint16", 1, 20)
    specs["wvp"] = CogSpec("uint16", 1, 20)
    return specs


def _open(tile: Tile, tmp: Path, name: str, spec: CogSpec, area: Win) -> SparseRaster:
    return SparseRaster(tmp / f"{name}.src.tif", spec, tile.crs, tile.transform(spec.res),
                        tile.shape(spec.res)[0], area.at(spec.res))


class TileGenerator:
    """Generates one tile's year: scenes, items and truth."""

    def __init__(self, tile: Tile, year: int, scenes: int, area: Win, sink: Sink, seed: int,
                 tmp: Path, api_url: str | None, progress: Callable[[str], None],
                 landscape: str = "temperate", sky: Sky | None = None):
        self.tile, self.year, self.area, self.sink, self.seed = tile, year, area, sink, seed
        self.landscape = landscape
        self.sky = sky or Sky()
        self.tmp, self.api_url, self.progress = tmp, api_url, progress
        self.acquisitions = plan_acquisitions(tile, year, scenes, seed, self.sky.cloudiness)
        plan_publications(self.acquisitions, seed)
        self.lines = swath_lines(tile, area, self.acquisitions, seed)
        px10 = area.width * area.height * 36
        self.renderer = Renderer(Landscape(seed, tile.zone, landscape), tile.origin, self.lines,
                                 cache=px10 <= CACHE_LIMIT_PX10, sky=self.sky)
        self.strips = strips(area)
        self.clear_count = np.zeros((area.height * 3, area.width * 3), np.uint8)
        self.specs = _specs()

    def run(self) -> TileResult:
        items, records = [], []
        n = len(self.acquisitions)
        for acq in self.acquisitions:
            t0 = time.perf_counter()
            new_items, new_records = self.write_acquisition(acq)
            items += new_items
            records += new_records
            ids = ",".join(i["id"] for i in new_items)
            self.progress(f"[{self.tile.id} {acq.index + 1:>3}/{n}] {ids} "
                          f"cloud {new_items[0]['properties']['eo:cloud_cover']:5.1f}% "
                          f"{time.perf_counter() - t0:4.1f}s")
        manifest_uri, manifest = self.write_truth(records)
        return TileResult(self.tile.id, items, manifest_uri, manifest)

    def write_acquisition(self, acq: Acquisition) -> tuple[list[dict], list[dict]]:
        """Render an acquisition strip by strip into every publication's assets."""
        tmp = Path(tempfile.mkdtemp(dir=self.tmp, prefix=f"{acq.index:03d}-"))
        rasters = {p.id: {k: _open(self.tile, tmp, f"{p.id}-{k}", s, self.area)
                          for k, s in self.specs.items()} for p in acq.publications}
        counts = np.zeros(256, np.int64)
        missed = {"cloud_pixels": 0, "shadow_pixels": 0, "haze_pixels": 0, "cells": set()}
        for win in self.strips:
            r = self.renderer.render(acq, win)
            counts += np.bincount(r.scl.ravel(), minlength=256)
            for k, v in self.renderer.missed_report(win, r).items():
                missed[k] = missed[k] | v if k == "cells" else missed[k] + v
            self._count_clear(r.scl, win)
            for pub in acq.publications:
                out = rasters[pub.id]
                for key in BAND_KEYS:
                    c, rw, _, _ = win.at(BAND_RES[key])
                    out[key].write(r.with_offset(key, pub.offset), c, rw)
                for key, arr, res in (("scl", r.scl, 20), ("visual", r.tci, 10),
                                      ("aot", r.aot, 20), ("wvp", r.wvp, 20)):
                    c, rw, _, _ = win.at(res)
                    out[key].write(arr, c, rw)
        total20 = self.tile.shape(20)[0] ** 2
        counts[0] += total20 - int(counts.sum())
        items, records = [], []
        for pub in acq.publications:
            item = self._publish(pub, rasters[pub.id], tmp, counts[:12].tolist())
            items.append(item)
            records.append(self._record(pub, item, counts, missed))
        shutil.rmtree(tmp, ignore_errors=True) if isinstance(self.sink, LocalSink) else None
        return items, records

    def _count_clear(self, scl: np.ndarray, win: Win) -> None:
        r0 = (win.row - self.area.row) * 3
        clear = np.isin(scl, CLEAR_CLASSES)
        self.clear_count[r0:r0 + scl.shape[0]] += clear.astype(np.uint8)

    def _publish(self, pub, rasters: dict[str, SparseRaster], tmp: Path,
                 counts: list[int]) -> dict:
        prefix = item_prefix(pub)
        hrefs = {}
        for key, raster in rasters.items():
            cog = raster.to_cog(tmp / f"{pub.id}-{ASSET_FILES[key]}")
            if key == "visual":
                thumb = write_thumbnail(cog, tmp / f"{pub.id}-thumbnail.jpg")
                self.sink.put_file(thumb, f"{prefix}/thumbnail.jpg", "image/jpeg")
                hrefs["thumbnail"] = self.sink.href(f"{prefix}/thumbnail.jpg")
            self.sink.put_file(cog, f"{prefix}/{ASSET_FILES[key]}", raster_type())
            hrefs[key] = self.sink.href(f"{prefix}/{ASSET_FILES[key]}")
        canonical = self.sink.uri(f"{prefix}/{pub.id}.json")
        s3_path = f"s3://{getattr(self.sink, 'bucket', 'sentinel-cogs')}/{prefix}"
        item = build_item(pub, counts, hrefs, canonical, s3_path, self.api_url)
        self.sink.put_json(f"{prefix}/{pub.id}.json", item)
        self.sink.put_json(f"stac/{COLLECTION_ID}/items/{pub.id}.json", item)
        return item

    def _record(self, pub, item: dict, counts: np.ndarray, missed: dict | None = None) -> dict:
        acq = pub.acquisition
        missed = missed or {"cloud_pixels": 0, "shadow_pixels": 0, "haze_pixels": 0,
                            "cells": set()}
        return {
            "id": pub.id, "datetime": item["properties"]["datetime"],
            "platform": acq.platform, "relative_orbit": acq.track.relative_orbit,
            "sequence": pub.sequence, "processing_baseline": pub.baseline,
            "offset_in_pixels": pub.offset, "boa_offset_applied_flag": pub.flag,
            "flag_wrong": pub.flag_wrong, "raster_offset": pub.raster_offset,
            "acquisition": acq.index,
            "duplicate_of": None if pub.sequence == 0 else acq.publications[0].id,
            "superseded_by": (acq.publications[-1].id
                              if pub is not acq.publications[-1] else None),
            "swath_edge": acq.track.relative_orbit in self.lines,
            "weather": vars(acq.weather),
            "eo:cloud_cover": item["properties"]["eo:cloud_cover"],
            "scl_counts": {str(k): int(v) for k, v in enumerate(counts[:12]) if v},
            # what the written SCL leaves out (Sky.scl_miss) and the unflagged edge haze, 20 m
            "scl_missed": {"cloud_pixels": missed["cloud_pixels"],
                           "shadow_pixels": missed["shadow_pixels"],
                           "patches": [list(c) for c in sorted(missed["cells"])]},
            "edge_haze_pixels": missed["haze_pixels"],
            "item": self.sink.uri(f"{item_prefix(pub)}/{pub.id}.json"),
        }

    # --- truth ---------------------------------------------------------------------------------
    def write_truth(self, records: list[dict]) -> tuple[str, dict]:
        """Truth COGs per band (+ visual, clear count) and the manifest."""
        days = sorted({a.day for a in self.acquisitions})
        med = truth_mod.median_season(days)
        prefix = f"truth/{self.tile.id}/{self.year}"
        specs = {k: CogSpec("uint16", 1, BAND_RES[k]) for k in BAND_KEYS}
        specs["visual"] = CogSpec("uint8", 3, 10)
        specs["clear_count"] = CogSpec("uint8", 1, 20, block=512)
        tmp = Path(tempfile.mkdtemp(dir=self.tmp, prefix="truth-"))
        rasters = {k: _open(self.tile, tmp, f"truth-{k}", s, self.area) for k, s in specs.items()}
        for win in self.strips:
            dn = {}
            for key in BAND_KEYS:
                c, r, _, _ = win.at(BAND_RES[key])
                dn[key] = self.renderer.surface(win, BAND_RES[key]).truth_dn(key, med)
                rasters[key].write(dn[key], c, r)
            c, r, _, _ = win.at(10)
            rasters["visual"].write(make_tci(dn["red"], dn["green"], dn["blue"]), c, r)
            c, r, _, h = win.at(20)
            r0 = (win.row - self.area.row) * 3
            cc = np.maximum(self.clear_count[r0:r0 + h], 0)
            rasters["clear_count"].write(cc, c, r)
        hrefs = {}
        for key, raster in rasters.items():
            cog = raster.to_cog(tmp / f"{key}.tif")
            self.sink.put_file(cog, f"{prefix}/{key}.tif", raster_type())
            hrefs[key] = self.sink.uri(f"{prefix}/{key}.tif")
        manifest = self.build_manifest(records, hrefs, med, days)
        self.sink.put_json(f"{prefix}/manifest.json", manifest)
        return self.sink.uri(f"{prefix}/manifest.json"), manifest

    def build_manifest(self, records: list[dict], hrefs: dict, med: float,
                       days: list[date]) -> dict:
        """The truth manifest: what was generated and what is deliberately wrong."""
        wrong = [r["id"] for r in records if r["flag_wrong"]]
        dups = [{"acquisition": a.index, "items": [p.id for p in a.publications],
                 "newest": a.publications[-1].id}
                for a in self.acquisitions if len(a.publications) > 1]
        x0, y0 = self.tile.origin
        a = self.area
        return {
            "type": "cloudfree-synth-manifest", "version": MANIFEST_VERSION,
            "tile": self.tile.id, "year": self.year, "seed": self.seed,
            "landscape": self.landscape, "collection": COLLECTION_ID, "epsg": self.tile.epsg,
            "data_window": {"col_off_60m": a.col, "row_off_60m": a.row, "width_60m": a.width,
                            "height_60m": a.height,
                            "bounds_utm": [x0 + a.col * 60, y0 - (a.row + a.height) * 60,
                                           x0 + (a.col + a.width) * 60, y0 - a.row * 60]},
            "truth": {
                "definition": "per-pixel median over the year's distinct acquisition dates of "
                              "the noise-free clear-sky surface (base + veg * season(t) * delta)",
                "convention": "DN = reflectance * 10000, no BOA offset, nodata 0 outside the "
                              "data window; visual = TCI stretch of the truth red/green/blue; "
                              "clear_count = acquisitions with SCL in 2,4,5,6,7 (20 m)",
                "median_season": med, "acquisition_dates": [d.isoformat() for d in days],
                "hrefs": hrefs,
                "noise_sigma_dn": dict(zip(BAND_KEYS, truth_mod.NOISE_SIGMA_DN, strict=True)),
                "seasonal_amplitude_dn": {k: round(abs(d) * 10000)
                                          for k, d in zip(BAND_KEYS, truth_mod.SEASONAL_DELTA,
                                                          strict=True)},
            },
            "items": records,
            "wrong_flags": wrong,
            "offset_convention": "Earth Search v1 sentinel-2-l2a: >= 04.00 items harmonised "
                                 "by the publisher (flag true) or not (flag false, +1000); "
                                 "wrong_flags contradict their pixels; offset_in_pixels is "
                                 "the truth",
            "duplicates": dups,
            "swath_edges": {str(k): {"point": v["point"], "normal": v["normal"]}
                            for k, v in self.lines.items()},
            "parameters": {"scenes": len(self.acquisitions), "seed": self.seed,
                           "landscape": self.landscape, "sky": self.sky.to_dict(),
                           "patch_cell_m": PATCH_CELL_M,
                           "tci_gain": 3.5, "offset_dn": 1000, "scl_resolution": 20,
                           "overview_resampling": "nearest",
                           "orbits": sorted({acq.track.relative_orbit
                                             for acq in self.acquisitions})},
        }


def raster_type() -> str:
    from .cogs import COG_TYPE

    return COG_TYPE


def _check_year(year: int) -> int:
    year = int(year)
    if not 2016 <= year <= date.today().year + 1:
        raise InputError(f"year {year} outside the Sentinel-2 L2A era (2016..)")
    return year


def _load(api_url: str, collection: dict, items: list[dict]) -> int:
    from ..local.stacapi import load_items

    return load_items(api_url, collection, items)


def generate_archive(tiles: list[str | Tile] | str, year: int, scenes: int,
                     aoi: str | tuple | None = None, bucket: str = "sentinel-cogs",
                     out: str | Path | None = None, seed: int = 0, api_url: str | None = None,
                     endpoint_url: str | None = None,
                     progress: Callable[[str], None] | None = None,
                     landscape: str = "temperate", sky: Sky | None = None) -> ArchiveSummary:
    """Write a synthetic Earth Search archive and its truth; load items into ``api_url``.

    ``out``: a folder (files, file-path hrefs); otherwise the S3 bucket on ``endpoint_url``
    (default ``AWS_ENDPOINT_URL``), hrefs ``{endpoint}/{bucket}/{key}``. ``landscape``:
    ``"temperate"`` (vegetation, soil, water) or ``"desert"`` (bright sand and rock).
    ``sky``: cloudiness, the share of cloud/shadow patches SCL misses and edge haze
    (:class:`~cloudfree.synth.render.Sky`; default: a normal year, a faithful SCL).
    """
    t0 = time.perf_counter()
    if isinstance(tiles, str):
        tiles = [t for t in tiles.split(",") if t.strip()]
    parsed = [parse_tile(t) for t in tiles]
    if not parsed:
        raise InputError("no tiles given")
    year = _check_year(year)
    if landscape not in LANDSCAPES:
        raise InputError(f"unknown landscape {landscape!r}; valid: {list(LANDSCAPES)}")
    bbox = parse_bbox(aoi) if aoi is not None else None
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    sink = _make_sink(out, bucket, endpoint_url)
    collection = build_collection(parsed[0])
    results = []
    import rasterio

    from ..storage import GDAL_CACHE_BYTES

    with tempfile.TemporaryDirectory(prefix="cloudfree-synth-") as tmp, \
            rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):  # bytes, as the reads' (storage)
        for tile in parsed:
            area = data_window(tile, bbox)
            gen = TileGenerator(tile, year, scenes, area, sink, seed, Path(tmp), api_url,
                                progress, landscape, sky)
            results.append(gen.run())
        sink.put_json(f"stac/{COLLECTION_ID}/collection.json", collection)
        sink.flush()
    items = [i for r in results for i in r.items]
    loaded = _load(api_url, collection, items) if api_url else 0
    return ArchiveSummary(tiles=[t.id for t in parsed], year=year, items=items,
                          manifests=[r.manifest_uri for r in results], collection=collection,
                          seconds=time.perf_counter() - t0, loaded=loaded,
                          root=sink.uri(""), tile_results=results)


def _make_sink(out, bucket: str, endpoint_url: str | None) -> Sink:
    if out is not None:
        return LocalSink(out)
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        raise ConfigError("no --out folder and no AWS_ENDPOINT_URL: run "
                          "`eval \"$(cloudfree local env)\"` or pass --out DIR")
    return S3Sink(bucket, endpoint)
