"""The synthetic cloud-free surface ("truth") as deterministic functions of UTM coordinates.

Every field is a sum of seeded plane waves evaluated at pixel centres, so any window of any grid
(10, 20 or 60 m) can be generated on its own, without allocating a whole tile, and overlapping
tiles of one UTM zone agree where they overlap.

Surface model (reflectance, 0..1) at a pixel and a date ``t``::

    clear(b, t) = base(b) + veg * season(t) * SEASONAL_DELTA[b]
    base(b)     = water ? WATER[b] : (veg * VEG[b] + (1 - veg) * SOIL[b]) * (1 + TEXTURE_GAIN * tex)

**Truth** is the per-pixel median over the year's distinct acquisition dates of the noise-free
clear-sky surface. Because the seasonal term is one scalar per date times a per-pixel constant,
that median is exact and cheap: ``truth(b) = base(b) + veg * median_t(season(t)) * DELTA[b]``.
The seasonal amplitude is kept small (at most 120 DN, NIR) so a perfect median of the clear
observations of any subset of dates stays within sensor noise plus that amplitude of the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from ..bands import REFLECTANCE_BANDS

BAND_KEYS: tuple[str, ...] = tuple(b.key for b in REFLECTANCE_BANDS)

#: Endmember spectra (reflectance) in REFLECTANCE_BANDS order:
#: coastal blue green red re1 re2 re3 nir nir08 nir09 swir16 swir22
WATER = (0.060, 0.050, 0.040, 0.025, 0.020, 0.015, 0.012, 0.010, 0.009, 0.006, 0.005, 0.003)
VEG = (0.030, 0.035, 0.075, 0.035, 0.110, 0.260, 0.320, 0.360, 0.370, 0.300, 0.190, 0.090)
SOIL = (0.090, 0.100, 0.130, 0.170, 0.195, 0.215, 0.235, 0.255, 0.265, 0.245, 0.320, 0.260)
#: Vegetation's seasonal change per unit of ``season(t)`` (+1 mid-July, -1 mid-January).
SEASONAL_DELTA = (0.0, -0.002, 0.002, -0.004, 0.001, 0.008, 0.010, 0.012, 0.012, 0.009,
                  -0.006, -0.005)
#: Sensor noise standard deviation in DN (reflectance * 10000) per band.
NOISE_SIGMA_DN = (30, 40, 40, 40, 40, 45, 50, 60, 60, 50, 60, 50)
#: Desert endmembers (``--landscape desert``): bright sand and darker, still bright rock; no
#: water, no vegetation, no dark surface, so no scene's own pixels reveal the BOA offset.
SAND = (0.200, 0.220, 0.280, 0.360, 0.400, 0.420, 0.440, 0.460, 0.470, 0.450, 0.580, 0.520)
ROCK = (0.110, 0.120, 0.150, 0.190, 0.210, 0.220, 0.230, 0.240, 0.250, 0.240, 0.310, 0.280)
LANDSCAPES = ("temperate", "desert")
TEXTURE_GAIN = 0.07
#: Fraction of the surface covered by water, and vegetation fraction parameters.
WATER_FRACTION = 0.06
SEASON_PEAK_DOY = 196


def season(day: date) -> float:
    """The seasonal scalar of a date: +1 in mid-July, -1 in mid-January."""
    doy = day.timetuple().tm_yday
    return math.cos(2 * math.pi * (doy - SEASON_PEAK_DOY) / 365.25)


def median_season(days: list[date]) -> float:
    """Median of ``season`` over the given dates (mean of the two middle values if even)."""
    return float(np.median([season(d) for d in days])) if days else 0.0


@dataclass(frozen=True)
class WaveField:
    """A smooth random field: a sum of plane waves with seeded directions and phases.

    Normalised to unit variance; evaluated separably (outer products), so a window costs
    ``2 * n_waves`` multiplications per pixel.
    """

    kx: np.ndarray
    ky: np.ndarray
    phase: np.ndarray
    amp: np.ndarray

    @classmethod
    def make(cls, seed: int, wavelengths_m: list[float], n_per_octave: int = 3,
             slope: float = 1.0) -> WaveField:
        """Waves at the given wavelengths (``n_per_octave`` random directions each)."""
        rng = np.random.default_rng(seed)
        kx, ky, ph, amp = [], [], [], []
        for lam in wavelengths_m:
            for _ in range(n_per_octave):
                theta = rng.uniform(0, math.pi)
                k = 2 * math.pi / (lam * rng.uniform(0.8, 1.25))
                kx.append(k * math.cos(theta))
                ky.append(k * math.sin(theta))
                ph.append(rng.uniform(0, 2 * math.pi))
                amp.append((lam / wavelengths_m[0]) ** slope)
        a = np.asarray(amp)
        a = a / math.sqrt(float(np.sum(a**2)) / 2)  # unit variance
        return cls(np.asarray(kx), np.asarray(ky), np.asarray(ph), a)

    def __call__(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Evaluate at the grid ``ys[:, None] x xs[None, :]`` (float32, shape (ny, nx))."""
        out = np.zeros((ys.size, xs.size), dtype=np.float32)
        for kx, ky, ph, a in zip(self.kx, self.ky, self.phase, self.amp, strict=True):
            ax = kx * xs + ph
            by = ky * ys
            sx, cx = (a * np.sin(ax)).astype(np.float32), (a * np.cos(ax)).astype(np.float32)
            sy, cy = np.cos(by).astype(np.float32), np.sin(by).astype(np.float32)
            # sin(ax + by) = sin(ax) cos(by) + cos(ax) sin(by)
            out += sy[:, None] * sx[None, :]
            out += cy[:, None] * cx[None, :]
        return out


@dataclass(frozen=True)
class Grid:
    """A window of a tile's grid: pixel-centre coordinates in UTM metres."""

    xs: np.ndarray  # (nx,) centre eastings
    ys: np.ndarray  # (ny,) centre northings

    @classmethod
    def from_window(cls, x0: float, y0: float, res: int, col_off: int, row_off: int,
                    width: int, height: int) -> Grid:
        """The window (col_off, row_off, width, height) of a grid with upper-left (x0, y0)."""
        xs = x0 + (col_off + np.arange(width) + 0.5) * res
        ys = y0 - (row_off + np.arange(height) + 0.5) * res
        return cls(xs.astype(np.float64), ys.astype(np.float64))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ys.size, self.xs.size)


class Landscape:
    """The static land cover of a UTM zone (water, vegetation fraction, texture) for a seed.

    ``kind="desert"``: no water; the "vegetation" fraction mixes sand and rock instead of
    vegetation and soil, with no seasonal change.
    """

    def __init__(self, seed: int, zone: int, kind: str = "temperate"):
        if kind not in LANDSCAPES:
            from ..errors import InputError

            raise InputError(f"unknown landscape {kind!r}; valid: {list(LANDSCAPES)}")
        self.kind = kind
        base = (seed * 1_000_003 + zone * 7919) % (2**32)
        self.water_field = WaveField.make(base + 1, [9000, 4500, 2200, 1100], n_per_octave=6,
                                          slope=1.2)
        self.veg_field = WaveField.make(base + 2, [7000, 3300, 1600, 800, 350], n_per_octave=7,
                                        slope=0.9)
        self.tex_field = WaveField.make(base + 3, [800, 300, 120, 50], n_per_octave=4,
                                        slope=0.5)
        # threshold for the upper WATER_FRACTION of a unit normal
        from statistics import NormalDist

        self.water_threshold = NormalDist().inv_cdf(1 - WATER_FRACTION)

    @property
    def desert(self) -> bool:
        return self.kind == "desert"

    def cover(self, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(water bool, veg fraction 0..1, texture ~N(0,1)) on a grid."""
        if self.desert:
            water = np.zeros(grid.shape, bool)
        else:
            water = self.water_field(grid.xs, grid.ys) > self.water_threshold
        veg = np.clip(0.55 + 0.45 * self.veg_field(grid.xs, grid.ys), 0.0, 1.0)
        tex = self.tex_field(grid.xs, grid.ys)
        return water, veg.astype(np.float32), tex

    def surface(self, grid: Grid) -> Surface:
        """The static surface on a grid (per-band arrays computed on first use)."""
        water, veg, tex = self.cover(grid)
        if self.desert:
            return Surface(water=water, veg=veg, tex=tex, spectra=(SAND, ROCK), seasonal=False)
        return Surface(water=water, veg=veg, tex=tex)


@dataclass
class Surface:
    """The static surface on one grid window; per band base and seasonal delta, lazily."""

    water: np.ndarray
    veg: np.ndarray
    tex: np.ndarray
    spectra: tuple[tuple[float, ...], tuple[float, ...]] = (VEG, SOIL)  # mixed by ``veg``
    seasonal: bool = True
    _base: dict[str, np.ndarray] = field(default_factory=dict)
    _delta: dict[str, np.ndarray] = field(default_factory=dict)

    def base(self, band: str) -> np.ndarray:
        """Clear-sky reflectance without the seasonal term."""
        if band not in self._base:
            i = BAND_KEYS.index(band)
            a, b = self.spectra
            land = (self.veg * a[i] + (1 - self.veg) * b[i]) * (1 + TEXTURE_GAIN * self.tex)
            self._base[band] = np.where(self.water, np.float32(WATER[i]), land).astype(
                np.float32)
        return self._base[band]

    def delta(self, band: str) -> np.ndarray:
        """Seasonal change per unit of ``season(t)`` (vegetation only)."""
        if band not in self._delta:
            i = BAND_KEYS.index(band)
            gain = SEASONAL_DELTA[i] if self.seasonal else 0.0
            self._delta[band] = np.where(self.water, np.float32(0),
                                         self.veg * gain).astype(np.float32)
        return self._delta[band]

    def clear(self, band: str, season_value: float) -> np.ndarray:
        """Noise-free clear-sky reflectance of a band at a date's seasonal value."""
        return self.base(band) + np.float32(season_value) * self.delta(band)

    def truth_dn(self, band: str, median_season_value: float) -> np.ndarray:
        """Truth DN (reflectance * 10000, no offset, >= 1) of a band."""
        refl = self.clear(band, median_season_value)
        return np.clip(np.rint(refl * 10000), 1, 32767).astype(np.uint16)
