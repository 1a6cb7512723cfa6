"""Small pixel samples of a scene, read from COG overviews (cheap: a few hundred KB per scene).

Used by *select* to check each scene's BOA offset against its pixels (see ``harmonize``). Every
band is read onto the same decimated grid (the tile's extent at ``SAMPLE_SIZE`` pixels), so the
samples of a tile's scenes are co-located pixel for pixel: all Sentinel-2 items of one MGRS tile
share the tile grid (checked on real items' ``proj:transform``, see ``tests/realdata``).
"""

from __future__ import annotations

import numpy as np

from . import storage
from .errors import SourceReadError
from .harmonize import PixelSample

#: Red decides a scene on its own: dark surfaces and vegetation sit far below 750 DN without
#: the offset, water stays at or above ~1000 with it (see harmonize).
SAMPLE_BAND = "red"
#: SWIR 1.6 um (B11, 20 m) is compared across scenes: bright and stable over bare ground and
#: rock, less touched by haze and by vegetation's seasons than the visible bands.
COMPARE_BAND = "swir16"
SAMPLE_SIZE = 549  # pixels per side: the 10x-decimated 20 m grid (one overview level)


def _read_decimated(href: str, size: int) -> np.ndarray:
    import rasterio
    from rasterio.enums import Resampling

    try:
        with storage.gdal_env(), rasterio.open(href) as src:
            return src.read(1, out_shape=(size, size), resampling=Resampling.nearest)
    except rasterio.errors.RasterioError as err:
        raise SourceReadError(f"cannot read a sample of {href}: {err}") from err


def read_overview_sample(assets: dict[str, str], band: str = SAMPLE_BAND,
                         compare_band: str | None = COMPARE_BAND,
                         size: int = SAMPLE_SIZE) -> PixelSample:
    """One scene's verdict band, comparison band and SCL on a common decimated grid."""
    pixels = _read_decimated(assets[band], size).astype(np.uint16, copy=False)
    scl = _read_decimated(assets["scl"], size).astype(np.uint8, copy=False)
    compare = None
    if compare_band is not None:
        compare = _read_decimated(assets[compare_band], size).astype(np.uint16, copy=False)
    return PixelSample(pixels=pixels, scl=scl, compare=compare, compare_band=compare_band)
