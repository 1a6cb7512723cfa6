"""The Sentinel-2 L2A bands cloudfree composites, keyed by Earth Search v1 asset names."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Band:
    """One Earth Search ``sentinel-2-l2a`` asset."""

    key: str  # Earth Search asset key, e.g. "blue"
    s2_name: str  # ESA band id, e.g. "B02" (file name on sentinel-cogs)
    resolution: int  # metres
    common_name: str | None
    description: str
    center_wavelength: float | None = None  # micrometres
    full_width_half_max: float | None = None
    dtype: str = "uint16"
    count: int = 1
    block: int = 1024  # internal COG tile size on Earth Search

    @property
    def size(self) -> int:
        """Pixels per side of a full 109.8 km tile at this band's resolution."""
        return 109800 // self.resolution

    @property
    def title(self) -> str:
        return f"{self.description} - {self.resolution}m"


REFLECTANCE_BANDS: tuple[Band, ...] = (
    Band("coastal", "B01", 60, "coastal", "Coastal aerosol (band 1)", 0.443, 0.027),
    Band("blue", "B02", 10, "blue", "Blue (band 2)", 0.49, 0.098),
    Band("green", "B03", 10, "green", "Green (band 3)", 0.56, 0.045),
    Band("red", "B04", 10, "red", "Red (band 4)", 0.665, 0.038),
    Band("rededge1", "B05", 20, "rededge", "Red edge 1 (band 5)", 0.704, 0.019),
    Band("rededge2", "B06", 20, "rededge", "Red edge 2 (band 6)", 0.74, 0.018),
    Band("rededge3", "B07", 20, "rededge", "Red edge 3 (band 7)", 0.783, 0.028),
    Band("nir", "B08", 10, "nir", "NIR 1 (band 8)", 0.842, 0.145),
    Band("nir08", "B8A", 20, "nir08", "NIR 2 (band 8A)", 0.865, 0.033),
    Band("nir09", "B09", 60, "nir09", "NIR 3 (band 9)", 0.945, 0.026),
    Band("swir16", "B11", 20, "swir16", "SWIR 1 (band 11)", 1.61, 0.143),
    Band("swir22", "B12", 20, "swir22", "SWIR 2 (band 12)", 2.19, 0.242),
)
SCL = Band("scl", "SCL", 20, None, "Scene classification map (SCL)", dtype="uint8", block=512)
VISUAL = Band("visual", "TCI", 10, None, "True color image", dtype="uint8", count=3)
#: Bands of the visual asset, in order.
VISUAL_BANDS = ("red", "green", "blue")

BANDS: dict[str, Band] = {b.key: b for b in (*REFLECTANCE_BANDS, SCL, VISUAL)}
#: What a composite produces per tile: the 12 reflectance bands and the visual image.
OUTPUT_BANDS: tuple[str, ...] = (*(b.key for b in REFLECTANCE_BANDS), "visual")


def get_band(key: str) -> Band:
    """Return the band for an Earth Search asset key (or ESA name like ``B8A``)."""
    if key in BANDS:
        return BANDS[key]
    for band in BANDS.values():
        if band.s2_name.lower() == key.lower():
            return band
    raise InputError(f"unknown band {key!r}; valid: {', '.join(BANDS)}")
