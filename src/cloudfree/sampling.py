"""Small pixel samples of a scene, read from COG overviews (cheap: a few hundred KB per scene).

Used by *select* to check each scene's BOA offset against its pixels (see ``harmonize``).
"""

from __future__ import annotations

import numpy as np

from . import storage
from .errors import SourceReadError

#: Red separates offset from no-offset well: dark surfaces and vegetation sit far below 750 DN
#: without the offset, water stays at or above ~1000 with it (see harmonize).
SAMPLE_BAND = "red"
SAMPLE_SIZE = 549  # pixels per side: the 10x-decimated 20 m grid (one overview level)


def _read_decimated(href: str, size: int) -> np.ndarray:
    import rasterio
    from rasterio.enums import Resampling

    try:
        with rasterio.Env(**storage.gdal_env_options()), rasterio.open(href) as src:
            return src.read(1, out_shape=(size, size), resampling=Resampling.nearest)
    except rasterio.errors.RasterioError as err:
        raise SourceReadError(f"cannot read a sample of {href}: {err}") from err


def read_overview_sample(assets: dict[str, str], band: str = SAMPLE_BAND,
                         size: int = SAMPLE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint16, scl uint8) of one scene on a common decimated grid."""
    pixels = _read_decimated(assets[band], size).astype(np.uint16, copy=False)
    scl = _read_decimated(assets["scl"], size).astype(np.uint8, copy=False)
    return pixels, scl
