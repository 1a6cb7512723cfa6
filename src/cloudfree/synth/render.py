"""Pixels of one acquisition over one window: SCL at 20 m, reflectance, TCI, AOT, WVP.

The scene classification is decided once on the 20 m grid and carried to 10 m (each 20 m pixel
is 2x2 10 m pixels) and to 60 m (the centre 20 m pixel of each 3x3 block, i.e. nearest
resampling), so SCL and reflectance agree pixel for pixel at every resolution. Reflectance per
class: 9/8 clouds blended towards a bright, flat cloud spectrum (opacity 0.55..0.97); 10 thin
cirrus adds 0.02..0.05; 3 shadows scale the surface by 0.35..0.5; 11 snow is bright in the
visible and dark in the SWIR; 1 saturated is 32767 in every band; 0 is 0 in every asset;
2 (dark features) and 7 (unclassified, at cloud fringes) keep the clear surface.
Windows are in 60 m pixels so they align on every grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .scenes import Acquisition
from .truth import BAND_KEYS, NOISE_SIGMA_DN, Grid, Landscape, Surface, WaveField, season

RESOLUTIONS = (10, 20, 60)
BAND_RES = {"coastal": 60, "blue": 10, "green": 10, "red": 10, "rededge1": 20, "rededge2": 20,
            "rededge3": 20, "nir": 10, "nir08": 20, "nir09": 60, "swir16": 20, "swir22": 20}
#: Cloud, snow spectra and cirrus gain in BAND_KEYS order.
CLOUD = (0.62, 0.60, 0.58, 0.57, 0.57, 0.56, 0.56, 0.55, 0.55, 0.45, 0.42, 0.33)
SNOW = (0.88, 0.87, 0.86, 0.84, 0.82, 0.80, 0.78, 0.76, 0.75, 0.60, 0.09, 0.05)
CIRRUS_GAIN = (1.2, 1.1, 1.0, 1.0, 0.9, 0.9, 0.9, 0.8, 0.8, 0.7, 0.5, 0.4)
SATURATED_DN = 32767
SATURATION_RATE = 3e-5
TCI_GAIN = 3.5  # TCI = reflectance * 255 * TCI_GAIN, like ESA's TCI stretch
OFFSET_DN = 1000
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Win:
    """A window in 60 m pixels of a tile's grid."""

    col: int
    row: int
    width: int
    height: int

    def at(self, res: int) -> tuple[int, int, int, int]:
        """(col_off, row_off, width, height) on the ``res`` metre grid."""
        f = 60 // res
        return (self.col * f, self.row * f, self.width * f, self.height * f)

    def grid(self, origin: tuple[float, float], res: int) -> Grid:
        return Grid.from_window(origin[0], origin[1], res, *self.at(res))


@dataclass
class Rendered:
    """One acquisition over one window: DNs *without* the BOA offset (0 = nodata)."""

    bands: dict[str, np.ndarray]  # uint16 per band key, native resolution
    scl: np.ndarray  # uint8, 20 m
    tci: np.ndarray  # uint8 (3, h, w), 10 m
    aot: np.ndarray  # uint16, 20 m
    wvp: np.ndarray  # uint16, 20 m

    def with_offset(self, band: str, offset: bool) -> np.ndarray:
        """A band's DNs with the +1000 BOA offset added (when ``offset``), nodata kept 0."""
        dn = self.bands[band]
        if not offset:
            return dn
        shifted = np.minimum(dn.astype(np.uint32) + OFFSET_DN, SATURATED_DN).astype(np.uint16)
        return np.where(dn == 0, np.uint16(0), shifted)


def to_res(arr20: np.ndarray, res: int) -> np.ndarray:
    """Carry a 20 m array to 10 m (repeat) or 60 m (centre of each 3x3 block)."""
    if res == 20:
        return arr20
    if res == 10:
        return np.repeat(np.repeat(arr20, 2, axis=0), 2, axis=1)
    return arr20[1::3, 1::3]


class Renderer:
    """Renders acquisitions of one tile; caches the static surface per window."""

    def __init__(self, landscape: Landscape, origin: tuple[float, float],
                 swath_line: dict | None = None, cache: bool = True):
        self.landscape = landscape
        self.origin = origin
        self.swath_line = swath_line or {}
        self._cache: dict[tuple, Surface] = {}
        self._use_cache = cache
        snow_seed = int(landscape.tex_field.phase[0] * 1e6)
        self.snow_field = WaveField.make(snow_seed, [5000, 2000, 800, 300], slope=1.0)

    def surface(self, win: Win, res: int) -> Surface:
        """The static surface on a window at a resolution (cached)."""
        key = (win, res)
        if key in self._cache:
            return self._cache[key]
        surf = self.landscape.surface(win.grid(self.origin, res))
        if not self._use_cache:  # big areas: keep only the current window's surfaces
            self._cache = {k: v for k, v in self._cache.items() if k[0] == win}
        self._cache[key] = surf
        return surf

    # --- classification -----------------------------------------------------------------------
    def classify(self, acq: Acquisition, win: Win) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(SCL uint8, cloud opacity float32, cirrus strength float32) on the 20 m grid."""
        g = win.grid(self.origin, 20)
        surf = self.surface(win, 20)
        w = acq.weather
        cloud_f = WaveField.make(acq.seed % 2**32, [16000, 8000, 4000, 2000, 900, 400, 160],
                                 slope=1.1)
        f = cloud_f(g.xs, g.ys)
        t = _NORMAL.inv_cdf(1 - w.cloud_cover) if w.cloud_cover > 0 else 99.0
        dx, dy = acq.shadow_offset_m()
        shadow = cloud_f(g.xs - dx, g.ys - dy) > t
        if self.landscape.desert:  # sand and rock: not vegetated, nothing dark
            scl = np.full(g.shape, 5, np.uint8)
        else:
            scl = np.where(surf.water, np.uint8(6), np.where(surf.veg > 0.5, np.uint8(4),
                                                              np.uint8(5))).astype(np.uint8)
            scl[(surf.tex < -2.6) & ~surf.water] = 2
        if w.snow > 0:
            ts = _NORMAL.inv_cdf(1 - w.snow)
            scl[(self.snow_field(g.xs, g.ys) > ts) & ~surf.water] = 11
        scl[shadow] = 3
        cirrus = np.zeros(g.shape, np.float32)
        if w.cirrus > 0:
            ci_f = WaveField.make((acq.seed + 11) % 2**32, [20000, 9000, 3500], slope=1.0)(
                g.xs, g.ys)
            tc = _NORMAL.inv_cdf(1 - w.cirrus)
            thin = ci_f > tc
            scl[thin] = 10
            cirrus = np.where(thin, 0.02 + 0.03 * np.clip(ci_f - tc, 0, 1), 0).astype(np.float32)
        scl[(f > t - 0.12) & (f <= t)] = 7
        scl[f > t] = 8
        scl[f > t + 0.6] = 9
        opacity = np.clip(0.55 + (f - t) / 0.6 * 0.4, 0.55, 0.97).astype(np.float32)
        rng = np.random.default_rng([acq.seed, win.row, win.col, 1])
        scl[rng.random(g.shape, dtype=np.float32) < SATURATION_RATE] = 1
        scl[self.swath_nodata(acq, g)] = 0
        return scl, opacity, cirrus

    def swath_nodata(self, acq: Acquisition, g: Grid) -> np.ndarray:
        """True beyond the swath edge of the acquisition's track (if it has one)."""
        line = self.swath_line.get(acq.track.relative_orbit)
        if line is None:
            return np.zeros(g.shape, bool)
        (x0, y0), (nx, ny) = line["point"], line["normal"]
        return ((g.xs[None, :] - x0) * nx + (g.ys[:, None] - y0) * ny) > 0

    # --- reflectance ------------------------------------------------------------------------
    def render(self, acq: Acquisition, win: Win) -> Rendered:
        """Every asset's pixels for an acquisition over a window."""
        scl20, opacity20, cirrus20 = self.classify(acq, win)
        s = season(acq.day)
        bands = {}
        refl_vis = {}
        per_res = {r: (to_res(scl20, r), to_res(opacity20, r), to_res(cirrus20, r))
                   for r in RESOLUTIONS}
        for i, key in enumerate(BAND_KEYS):
            res = BAND_RES[key]
            scl, opacity, cirrus = per_res[res]
            refl = self.surface(win, res).clear(key, s)
            refl = np.where(scl == 3, refl * (0.35 + 0.15 * opacity), refl)
            refl = np.where(scl == 11, SNOW[i] * 0.9 + refl * 0.1, refl)
            refl = refl + cirrus * CIRRUS_GAIN[i]
            cloudy = (scl == 8) | (scl == 9)
            refl = np.where(cloudy, refl * (1 - opacity) + CLOUD[i] * opacity, refl)
            rng = np.random.default_rng([acq.seed, win.row, win.col, 100 + i])
            noise = rng.standard_normal(refl.shape, dtype=np.float32) * NOISE_SIGMA_DN[i]
            dn = np.clip(np.rint(refl * 10000 + noise), 1, SATURATED_DN).astype(np.uint16)
            dn[scl == 1] = SATURATED_DN
            dn[scl == 0] = 0
            bands[key] = dn
            if key in ("red", "green", "blue"):
                refl_vis[key] = dn
        tci = make_tci(refl_vis["red"], refl_vis["green"], refl_vis["blue"])
        aot, wvp = self.atmosphere(acq, win, scl20)
        return Rendered(bands=bands, scl=scl20, tci=tci, aot=aot, wvp=wvp)

    def atmosphere(self, acq: Acquisition, win: Win, scl20: np.ndarray) -> tuple[np.ndarray,
                                                                                   np.ndarray]:
        """AOT (DN = 1000 * tau) and WVP (DN = 1000 * cm) on the 20 m grid: smooth fields."""
        g = win.grid(self.origin, 20)
        field = WaveField.make((acq.seed + 21) % 2**32, [30000, 12000], slope=1.0)(g.xs, g.ys)
        aot = np.clip(150 + 40 * field, 20, 1000).astype(np.uint16)
        wvp = np.clip(1500 + 800 * season(acq.day) + 200 * field, 100, 6000).astype(np.uint16)
        aot[scl20 == 0] = 0
        wvp[scl20 == 0] = 0
        return aot, wvp


def make_tci(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """3-band uint8 true colour from offset-free DNs: DN/10000*255*TCI_GAIN, 0 = nodata."""
    out = np.empty((3, *red.shape), np.uint8)
    for i, dn in enumerate((red, green, blue)):
        v = np.clip(np.rint(dn.astype(np.float32) * (255 * TCI_GAIN / 10000)), 1, 255)
        out[i] = np.where(dn == 0, 0, v).astype(np.uint8)
    return out
