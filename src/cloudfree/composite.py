"""One band window end to end: read every scene + SCL, mask, harmonize, median, write.

``composite_window`` is pure computation on pixels (reads only); ``write_window_result`` writes
the window GeoTIFF (band 1 median, band 2 count for reflectance; 3 bands for visual) and its
statistics JSON; ``composite_band_windows`` runs a batch of windows rerun-safely.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import storage
from .bands import Band, get_band
from .errors import InputError, NoScenesError
from .windows import DEFAULT_THREADS, Window, read_scl_stack, read_stack

#: Pixels of SCL class 0 (no data) grown by this many band pixels before masking.
DEFAULT_DILATE_NODATA = 2
#: Internal tile size of the window GeoTIFFs.
RESULT_BLOCK = 512


@dataclass
class WindowResult:
    """The composite of one band window."""

    band: str
    window: Window
    median: np.ndarray  # (h, w) uint16, or (3, h, w) uint8 for visual
    count: np.ndarray  # (h, w) uint8: valid observations per pixel
    contributions: dict[str, int]  # scene id -> valid pixels it contributed
    offsets: dict[str, int] = field(default_factory=dict)  # scene id -> offset subtracted
    observed: int | None = None  # pixels some scene has data for (SCL != 0): the footprint

    @property
    def valid_pixels(self) -> int:
        """Pixels with at least one valid observation."""
        return int(np.count_nonzero(self.count))

    def stats(self) -> dict[str, Any]:
        """Small JSON-able statistics (the window stats object)."""
        n = max(len(self.contributions), int(self.count.max(initial=0)))
        hist = np.bincount(self.count.ravel(), minlength=n + 1)
        return {
            "band": self.band,
            "window": self.window.to_dict(),
            "key": self.window.key,
            "pixels": self.window.size,
            "valid_pixels": self.valid_pixels,
            "observed_pixels": self.window.size if self.observed is None else self.observed,
            "count_histogram": [int(v) for v in hist],
            "contributions": {k: int(v) for k, v in self.contributions.items()},
            "offsets": {k: int(v) for k, v in self.offsets.items()},
        }


def _scene_hrefs(scenes: Sequence[dict], asset: str) -> list[str]:
    hrefs = []
    for scene in scenes:
        try:
            hrefs.append(scene["assets"][asset])
        except KeyError as err:
            raise InputError(f"scene {scene.get('id')!r} has no {asset!r} asset") from err
    return hrefs


def _offsets(scenes: Sequence[dict]) -> np.ndarray:
    values = [int((s.get("harmonization") or {}).get("offset", 0) or 0) for s in scenes]
    return np.asarray(values, dtype=np.int64)


def build_valid(scl: np.ndarray, mask_classes: Iterable[int] | None,
                dilate_nodata: int) -> np.ndarray:
    """Per-scene valid mask (S, h, w) uint8 from SCL on the band grid (S, h, w)."""
    from . import mask

    classes = tuple(mask.DEFAULT_MASK_CLASSES if mask_classes is None else mask_classes)
    valid = np.empty(scl.shape, dtype=np.uint8)
    for i in range(scl.shape[0]):
        valid[i] = mask.valid_mask(scl[i], classes, dilate_nodata)
    return valid


def _reflectance_median(stack: np.ndarray, valid: np.ndarray, offsets: np.ndarray):
    from .harmonize import apply_offset
    from .median import masked_median

    np.logical_and(valid, stack != 0, out=valid, casting="unsafe")
    if np.any(offsets):
        apply_offset(stack, offsets, valid)
    return masked_median(stack, valid)


def _visual_median(stack: np.ndarray, valid: np.ndarray):
    """Per-channel exact median of a (S, 3, h, w) uint8 stack -> (median (3,h,w) uint8, first)."""
    from .median import masked_median

    np.logical_and(valid, stack.any(axis=1), out=valid, casting="unsafe")
    channels, first = [], None
    for c in range(stack.shape[1]):
        res = masked_median(stack[:, c].astype(np.uint16), valid)
        channels.append(res.median.astype(np.uint8))  # median of uint8 values fits uint8
        if first is None:
            first = res
    return np.stack(channels), first


def composite_window(manifest: dict, band_key: str, window: Window | dict, *,
                     mask_classes: Iterable[int] | None = None,
                     dilate_nodata: int = DEFAULT_DILATE_NODATA,
                     threads: int = DEFAULT_THREADS) -> WindowResult:
    """Composite one window of one band from every scene of the manifest.

    Valid = SCL not in ``mask_classes`` (class-0 edges dilated) AND the pixel is not nodata (0).
    Reflectance bands get each scene's harmonization offset subtracted from valid pixels;
    the visual image (3-band uint8) takes an exact per-channel median under the same mask.
    """
    band = get_band(band_key)
    window = Window.from_dict(window)
    scenes = manifest.get("scenes") or []
    if not scenes:
        raise NoScenesError(f"manifest for {manifest.get('tile')} {manifest.get('year')} "
                            "has no scenes")
    ids = [str(s.get("id", i)) for i, s in enumerate(scenes)]
    scl = read_scl_stack(_scene_hrefs(scenes, "scl"), band, window, threads=threads)
    observed = int(np.count_nonzero(scl.any(axis=0)))
    valid = build_valid(scl, mask_classes, dilate_nodata)
    del scl
    if not valid.any():  # nothing clear anywhere (outside the swaths): skip decoding the band
        return _empty_result(band, window, ids, scenes, observed)
    hrefs = _scene_hrefs(scenes, band.key)
    offsets = np.zeros(len(scenes), dtype=np.int64)
    if band.count > 1:
        stack = read_stack(hrefs, window, threads=threads, band_index=list(range(1, band.count
                                                                                  + 1)))
        median, res = _visual_median(stack, valid)
    else:
        stack = read_stack(hrefs, window, threads=threads)
        offsets = _offsets(scenes)
        res = _reflectance_median(stack, valid, offsets)
        median = res.median
    contributions = dict(zip(ids, (int(v) for v in res.contributions), strict=True))
    return WindowResult(band.key, window, median, res.count.astype(np.uint8), contributions,
                        dict(zip(ids, (int(v) for v in offsets), strict=True)), observed)


def _empty_result(band: Band, window: Window, ids: list[str], scenes: Sequence[dict],
                  observed: int) -> WindowResult:
    """The result of a window without a single valid observation (all nodata)."""
    h, w = window.shape
    shape = (band.count, h, w) if band.count > 1 else (h, w)
    median = np.zeros(shape, dtype=np.uint8 if band.count > 1 else np.uint16)
    offsets = _offsets(scenes) if band.count == 1 else np.zeros(len(ids), dtype=np.int64)
    return WindowResult(band.key, window, median, np.zeros((h, w), dtype=np.uint8),
                        dict.fromkeys(ids, 0), dict(zip(ids, (int(v) for v in offsets),
                                                         strict=True)), observed)


# --- writing ---------------------------------------------------------------------------------
def result_array(result: WindowResult, band: Band) -> np.ndarray:
    """The bands of the window GeoTIFF: [median, count] uint16, or the 3 visual channels."""
    if band.count > 1:
        return result.median
    return np.stack([result.median, result.count.astype(np.uint16)])


def result_profile(tile, band: Band, window: Window, count: int, dtype: str) -> dict[str, Any]:
    """GeoTIFF profile of a window result in the tile's UTM grid at the band's resolution."""
    block = RESULT_BLOCK if min(window.height, window.width) >= RESULT_BLOCK else 256
    profile = {
        "driver": "GTiff", "dtype": dtype, "count": count,
        "height": window.height, "width": window.width,
        "crs": tile.crs, "transform": window.transform(tile.transform(band.resolution)),
        "nodata": 0, "compress": "DEFLATE", "predictor": 2, "zlevel": 6,
        "interleave": "pixel" if band.count > 1 else "band",
    }
    if min(window.height, window.width) >= 256:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    return profile


def write_window_result(result: WindowResult, uri: str, tile, band: Band | str,
                        stats_uri: str | None = None,
                        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the window GeoTIFF to ``uri`` (temp file, then upload) and the stats JSON.

    ``stats_uri`` defaults to ``uri`` with ``.json`` instead of ``.tif`` (as ``Layout``).
    Returns the stats dict. The JSON is written last: its presence marks a finished window.
    """
    import rasterio

    from .grid import parse_tile

    tile = parse_tile(tile)
    band = get_band(band) if isinstance(band, str) else band
    data = result_array(result, band)
    profile = result_profile(tile, band, result.window, data.shape[0], str(data.dtype))
    with tempfile.TemporaryDirectory(prefix="cloudfree-win-") as tmp:
        path = Path(tmp) / f"{result.window.key}.tif"
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK="YES"), rasterio.open(path, "w",
                                                                         **profile) as dst:
            dst.write(data)
            if band.count == 1:
                dst.set_band_description(1, band.key)
                dst.set_band_description(2, "count")
        storage.upload_file(path, uri, "image/tiff")
    stats = {**result.stats(), **(extra or {})}
    storage.write_json(stats_uri or _stats_uri(uri), stats)
    return stats


def _stats_uri(uri: str) -> str:
    return uri[: -len(".tif")] + ".json" if uri.endswith(".tif") else uri + ".json"


def composite_band_windows(manifest: dict, band: str, windows: Iterable[Window | dict], layout,
                           year: int, tile, *, overwrite: bool = False,
                           **options: Any) -> list[dict[str, Any]]:
    """Composite and write a batch of windows of one band; skip windows already written.

    A window counts as done when both its GeoTIFF and its stats JSON exist (rerun-safe after a
    timeout or retry). ``options`` go to ``composite_window``. Returns one small summary dict
    per window (key, uri, skipped, valid_pixels, seconds) — safe for a Step Functions payload.
    """
    from .grid import parse_tile

    tile = parse_tile(tile)
    out = []
    for w in windows:
        window = Window.from_dict(w)
        uri = layout.window_result(year, tile.id, band, window.row_off, window.col_off)
        stats_uri = layout.window_stats(year, tile.id, band, window.row_off, window.col_off)
        if not overwrite and storage.exists(stats_uri) and storage.exists(uri):
            out.append({"key": window.key, "uri": uri, "skipped": True})
            continue
        t0 = time.perf_counter()
        result = composite_window(manifest, band, window, **options)
        stats = write_window_result(result, uri, tile, band, stats_uri,
                                    {"seconds": round(time.perf_counter() - t0, 3)})
        out.append({"key": window.key, "uri": uri, "skipped": False,
                    "valid_pixels": stats["valid_pixels"], "pixels": stats["pixels"],
                    "seconds": round(time.perf_counter() - t0, 3)})
    return out
