"""Decide, per scene, whether its DNs carry the +1000 BOA offset, and remove it.

Sentinel-2 L2A products of processing baseline >= 04.00 (all of Collection 1) store
``DN = 10000 * reflectance + 1000``. cloudfree outputs the pre-04.00 convention
(``reflectance = DN / 10000``), so such scenes get 1000 subtracted.

Decision rule (:func:`decide`), recorded in ``Harmonization.evidence``:

1. **Metadata**: ``s2:processing_baseline`` (or the ``_Nxxyy_`` of ``s2:product_uri``)
   >= 04.00 -> offset; the collection ``sentinel-2-c1-l2a`` -> offset (reprocessed at
   >= 05.00); failing both, an acquisition on/after 2022-01-25 (the switch to 04.00) ->
   offset. ``earthsearch:boa_offset_applied`` is known to be wrong both ways: it is only
   used when nothing else is known, and any disagreement is recorded.
2. **Pixels** (optional, one reflectance band of the scene; NIR bands separate best):
   * ``low`` = the 0.1th percentile of the valid non-zero pixels. With an offset that would
     mean a reflectance < -0.025 for 0.1 % of the clear pixels, which real offset products do
     not show (T29UNU: 850-1030), while products without it reach far lower (dark
     surfaces; even the bright 29RKH desert's blue band gives 669). ``low < 750`` -> *no
     offset*.
   * ``dark`` = the median of the non-zero pixels that SCL classes as dark area (2) or
     water (6), given ``scl`` and at least 100 of them. Such surfaces reflect little
     (water NIR ~0.00-0.03); ``dark >= 950`` (with ``low >= 750``) -> *offset* (T29UNU
     water: ~1090 in B8A, ~1180 in B02). Cloud shadows are not used: vegetation in shadow
     is bright in NIR.
   * otherwise *inconclusive* (e.g. a bright desert in NIR).
   A conclusive pixel verdict wins over the metadata (the pixels are what gets composited);
   the contradiction is recorded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import InputError

BOA_OFFSET = 1000
OFFSET_BASELINE = 4.0
#: First acquisitions processed with baseline 04.00 (used only when nothing else is known).
OFFSET_SINCE = "2022-01-25"
COLLECTION1 = "sentinel-2-c1-l2a"
FLAG = "earthsearch:boa_offset_applied"

NO_OFFSET_LOW_BELOW = 750  # DN: the 0.1th percentile below this -> no offset
OFFSET_DARK_AT_LEAST = 950  # DN: dark-surface median at or above this -> offset
LOW_PERCENTILE = 0.1
DARK_CLASSES = (2, 6)  # dark area, water (shadows are bright in NIR: not used)
MIN_PIXELS = 1000
MIN_DARK_PIXELS = 100


@dataclass
class Harmonization:
    """The decision for one scene: ``offset`` (0 or 1000) to subtract, and why."""

    offset: int
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the manifest's ``harmonization``)."""
        return asdict(self)


def parse_baseline(properties: dict) -> float | None:
    """Processing baseline as a float (``"05.00"`` -> 5.0), from the property or product URI."""
    value = properties.get("s2:processing_baseline")
    if value is None:
        match = re.search(r"_N(\d{2})(\d{2})_", str(properties.get("s2:product_uri", "")))
        if not match:
            return None
        value = f"{match.group(1)}.{match.group(2)}"
    text = str(value).strip()
    compact = re.fullmatch(r"[Nn]?(\d{2})(\d{2})", text)  # ESA form "N0509" -> 05.09
    if compact:
        text = f"{compact.group(1)}.{compact.group(2)}"
    try:
        return float(text)
    except ValueError:
        raise InputError(f"unreadable s2:processing_baseline {value!r}") from None


def _metadata_offset(properties: dict, collection: str | None) -> tuple[int | None, str]:
    baseline = parse_baseline(properties)
    if baseline is not None:
        offset = BOA_OFFSET if baseline >= OFFSET_BASELINE else 0
        cmp = ">=" if offset else "<"
        return offset, f"processing baseline {baseline:05.2f} {cmp} {OFFSET_BASELINE:05.2f}"
    if collection == COLLECTION1:
        return BOA_OFFSET, f"collection {COLLECTION1} (baseline >= 05.00)"
    when = str(properties.get("datetime") or "")[:10]
    if when:
        offset = BOA_OFFSET if when >= OFFSET_SINCE else 0
        side = "on/after" if offset else "before"
        return offset, f"no baseline; acquired {when} ({side} {OFFSET_SINCE})"
    flag = properties.get(FLAG)
    if isinstance(flag, bool):
        return (BOA_OFFSET if flag else 0), f"only {FLAG}={flag} known"
    return None, "no metadata"


def pixel_evidence(
    pixels: np.ndarray, valid: np.ndarray | None = None, scl: np.ndarray | None = None
) -> dict[str, Any]:
    """The pixel statistics and verdict (``"offset"``, ``"no_offset"``, ``"inconclusive"``)."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint16:
        raise InputError(f"pixels must be uint16 DNs, got {pixels.dtype}")
    usable = pixels > 0
    if valid is not None:
        if np.shape(valid) != pixels.shape:
            raise InputError(f"valid shape {np.shape(valid)} != pixels shape {pixels.shape}")
        usable &= np.asarray(valid) != 0
    values = pixels[usable]
    ev: dict[str, Any] = {"n_pixels": int(values.size)}
    low = None
    if values.size >= MIN_PIXELS:
        low = float(np.percentile(values, LOW_PERCENTILE))
        ev[f"p{LOW_PERCENTILE:g}"] = low
        ev["frac_below_1000"] = round(float(np.count_nonzero(values < BOA_OFFSET)) / values.size, 6)
    dark = None
    if scl is not None:
        if np.shape(scl) != pixels.shape:
            raise InputError(f"scl shape {np.shape(scl)} != pixels shape {pixels.shape}")
        dark_values = pixels[(pixels > 0) & np.isin(scl, DARK_CLASSES)]
        ev["n_dark"] = int(dark_values.size)
        if dark_values.size >= MIN_DARK_PIXELS:
            dark = float(np.median(dark_values))
            ev["dark_median"] = dark
    if low is not None and low < NO_OFFSET_LOW_BELOW:
        verdict = "no_offset"
    elif dark is not None and dark >= OFFSET_DARK_AT_LEAST:  # low is None or >= threshold here
        verdict = "offset"
    else:
        verdict = "inconclusive"
    ev["verdict"] = verdict
    return ev


def decide(
    properties: dict,
    pixels: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    collection: str | None = None,
    *,
    scl: np.ndarray | None = None,
) -> Harmonization:
    """Decide the BOA offset of one scene (see the module docstring for the rule).

    Args:
        properties: the STAC item's properties.
        pixels: optional uint16 DNs of one reflectance band of the scene.
        valid: optional mask (non-zero = clear) on the pixels' grid.
        collection: the item's collection id (``properties`` do not carry it).
        scl: optional SCL on the pixels' grid, to find dark surfaces.
    """
    if not isinstance(properties, dict):
        raise InputError(f"properties must be a dict, got {type(properties).__name__}")
    collection = collection or properties.get("collection")
    meta_offset, meta_reason = _metadata_offset(properties, collection)
    evidence: dict[str, Any] = {
        "processing_baseline": properties.get("s2:processing_baseline"),
        "collection": collection,
        "metadata_offset": meta_offset,
        "metadata_reason": meta_reason,
    }
    flag = properties.get(FLAG)
    if isinstance(flag, bool):
        evidence[FLAG] = flag
        if meta_offset is not None and flag != bool(meta_offset):
            evidence["flag_disagrees"] = True
    offset, reason = meta_offset, meta_reason
    if pixels is not None:
        px = pixel_evidence(pixels, valid, scl)
        evidence["pixels"] = px
        pixel_offset = {"offset": BOA_OFFSET, "no_offset": 0}.get(px["verdict"])
        if pixel_offset is not None:
            if meta_offset is not None and pixel_offset != meta_offset:
                evidence["pixels_contradict_metadata"] = True
                reason = f"pixels say {px['verdict']}, overriding metadata ({meta_reason})"
            elif meta_offset is None:
                reason = f"pixels say {px['verdict']} (no metadata)"
            else:
                reason = f"{meta_reason}; pixels agree"
            offset = pixel_offset
    if offset is None:
        offset, reason = 0, "nothing known: assuming no offset"
    return Harmonization(int(offset), reason, evidence)


def apply_offset(stack: np.ndarray, offsets: Sequence[int], valid: np.ndarray) -> np.ndarray:
    """Subtract ``offsets[s]`` in place from the valid, non-zero pixels of scene ``s``.

    Results are clamped at 1 so a valid pixel never becomes nodata (0); zero DNs (nodata)
    stay 0. Works scene by scene, so the extra memory is one scene, not the stack.
    """
    if not isinstance(stack, np.ndarray) or stack.dtype != np.uint16 or stack.ndim != 3:
        desc = f"{getattr(stack, 'dtype', None)} {np.shape(stack)}"
        raise InputError(f"stack must be a uint16 (S, H, W) array, got {desc}")
    if np.shape(valid) != stack.shape:
        raise InputError(f"valid shape {np.shape(valid)} != stack shape {stack.shape}")
    if len(offsets) != stack.shape[0]:
        raise InputError(f"{len(offsets)} offsets for {stack.shape[0]} scenes")
    for s, off in enumerate(offsets):
        off = int(off)
        if not 0 <= off < 65535:
            raise InputError(f"offset must be 0..65534, got {off}")
        if off == 0:
            continue
        band = stack[s]
        shifted = np.maximum(band, np.uint16(off + 1))
        shifted -= np.uint16(off)
        np.copyto(band, shifted, where=(np.asarray(valid[s]) != 0) & (band > 0))
    return stack
