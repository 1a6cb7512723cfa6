"""Scene classification (SCL) -> valid-observation masks on a band's pixel grid.

SCL classes (Sen2Cor): 0 no data, 1 saturated/defective, 2 dark area, 3 cloud shadow,
4 vegetation, 5 not vegetated, 6 water, 7 unclassified, 8 cloud medium probability,
9 cloud high probability, 10 thin cirrus, 11 snow/ice.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .errors import InputError

NODATA_CLASS = 0
SNOW_CLASS = 11
#: Classes masked by default (DESIGN "Masking"); 2 (dark) and 7 (unclassified) are options.
DEFAULT_MASK_CLASSES: tuple[int, ...] = (0, 1, 3, 8, 9, 10, 11)
OPTIONAL_MASK_CLASSES: tuple[int, ...] = (2, 7)
#: Resolutions (m) of the Sentinel-2 band grids; SCL is delivered at 20 m.
SCL_RESOLUTION = 20


def _check_scl(scl: np.ndarray) -> None:
    if not isinstance(scl, np.ndarray) or scl.ndim < 2:
        raise InputError(f"SCL must be an array of shape (..., H, W), got {np.shape(scl)}")
    if scl.dtype != np.uint8:
        raise InputError(f"SCL must be uint8, got {scl.dtype}")


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square (Chebyshev) binary dilation of the last two axes by ``radius`` pixels.

    Separable: a 1-D dilation along rows then along columns, each made of shifted ORs, so the
    result is True wherever a True pixel lies within ``radius`` rows *and* columns.
    """
    if radius < 0:
        raise InputError(f"dilation radius must be >= 0, got {radius}")
    out = mask.astype(bool, copy=True)
    for axis in (-2, -1):
        src = out.copy()
        n = src.shape[axis]
        for shift in range(1, min(radius, n - 1) + 1):
            lead = [slice(None)] * src.ndim
            lag = [slice(None)] * src.ndim
            lead[axis], lag[axis] = slice(shift, None), slice(None, n - shift)
            out[tuple(lag)] |= src[tuple(lead)]  # pull from below/right
            out[tuple(lead)] |= src[tuple(lag)]  # pull from above/left
    return out


def valid_mask(
    scl: np.ndarray,
    classes: Iterable[int] = DEFAULT_MASK_CLASSES,
    dilate_nodata: int = 0,
) -> np.ndarray:
    """uint8 mask (1 = keep) of ``scl`` (..., H, W) with ``classes`` removed.

    Class 0 (no data) is always removed, and its regions grow by ``dilate_nodata`` pixels
    (square dilation) to drop the fringe of bad values along swath edges.
    """
    _check_scl(scl)
    classes = tuple(int(c) for c in classes)
    if any(not 0 <= c <= 255 for c in classes):
        raise InputError(f"SCL classes must be 0..255, got {classes}")
    lut = np.ones(256, dtype=np.uint8)
    lut[list(classes)] = 0
    lut[NODATA_CLASS] = 0
    keep = lut[scl]
    if dilate_nodata:
        keep[dilate(scl == NODATA_CLASS, dilate_nodata)] = 0
    return keep


def scl_to_band_grid(scl20: np.ndarray, band_resolution: int) -> np.ndarray:
    """Nearest-neighbour SCL (20 m) exactly on a 10, 20 or 60 m band grid (last two axes).

    All grids share the tile's upper-left corner, so (row, col) index math is exact:

    * 10 m: 10 m pixel ``(i, j)`` lies inside 20 m pixel ``(i // 2, j // 2)``: every SCL
      pixel repeated 2x2 (shape doubles).
    * 20 m: identity (the input array itself is returned).
    * 60 m: 60 m pixel ``(i, j)`` covers 20 m pixels ``3i .. 3i+2``; its centre
      ``(3i + 1.5) * 20 m`` is the centre of 20 m pixel ``3i + 1``: ``scl20[..., 1::3, 1::3]``.
      Needs H and W divisible by 3 (a full tile is 5490 = 3 x 1830).
    """
    _check_scl(scl20)
    if band_resolution == 20:
        return scl20
    if band_resolution == 10:
        return np.repeat(np.repeat(scl20, 2, axis=-2), 2, axis=-1)
    if band_resolution == 60:
        h, w = scl20.shape[-2:]
        if h % 3 or w % 3:
            raise InputError(
                f"a 20 m SCL of shape {(h, w)} does not tile a 60 m grid (need multiples of 3)"
            )
        return np.ascontiguousarray(scl20[..., 1::3, 1::3])
    raise InputError(f"band resolution must be 10, 20 or 60 m, got {band_resolution!r}")


def keep_snow_when_alone(valid: np.ndarray, scl: np.ndarray) -> np.ndarray:
    """Re-admit snow (class 11) observations at pixels with no other valid observation.

    ``valid`` (S, H, W) uint8 and ``scl`` (S, H, W) on the same grid. Returns a new uint8
    mask: where a pixel has no valid observation in any scene, its snow observations count.
    """
    _check_scl(scl)
    if valid.shape != scl.shape or valid.ndim != 3:
        raise InputError(f"valid {valid.shape} and SCL {scl.shape} must both be (S, H, W)")
    out = valid.astype(np.uint8, copy=True)
    alone = ~out.any(axis=0)
    out[(scl == SNOW_CLASS) & alone[None]] = 1
    return out
