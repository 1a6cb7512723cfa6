"""Pixels of one acquisition over one window: SCL at 20 m, reflectance, TCI, AOT, WVP.

The scene classification is decided once on the 20 m grid and carried to 10 m (each 20 m pixel
is 2x2 10 m pixels) and to 60 m (the centre 20 m pixel of each 3x3 block, i.e. nearest
resampling), so SCL and reflectance agree pixel for pixel at every resolution. Reflectance per
class: 9/8 clouds blended towards a bright, flat cloud spectrum (opacity 0.55..0.97); 10 thin
cirrus adds 0.02..0.05; 3 shadows scale the surface by 0.35..0.5; 11 snow is bright in the
visible and dark in the SWIR; 1 saturated is 32767 in every band; 0 is 0 in every asset;
2 (dark features) and 7 (unclassified, at cloud fringes) keep the clear surface.
Windows are in 60 m pixels so they align on every grid.

Where Sen2Cor fails (issue 8), modelled by :class:`Sky`:

- ``scl_miss``: a share of the cloud (8/9) and shadow (3) *patches* is left out of the written
  SCL: those pixels get the class of the ground below (4/5/6/2/11) while their reflectance stays
  cloudy or shadowed. A patch is the part of a cloud (or shadow) inside one
  ``PATCH_CELL_M`` square of the UTM grid; whether a patch is missed is a hash of the
  acquisition's seed, the cell and the kind, so every window and strip agrees.
- ``edge_haze``: thin haze around every cloud, outside the cloud class: opacity rises from 0
  to ``edge_haze`` over ``HAZE_WIDTH`` (units of the unit-variance cloud field) towards the
  cloud edge; the inner part is class 7 (unclassified), the outer part keeps the ground class.
  Sen2Cor misses such edges (issue 8); with ``edge_haze = 0`` nothing changes.

:meth:`Renderer.render` returns both the written SCL and the true classes (``scl_true``,
``haze``), so a benchmark knows which observations were truly clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .scenes import CLOUDINESS, Acquisition
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
#: Side of the square cells (m) that cut clouds and shadows into patches for ``scl_miss``:
#: 1.92 km = 32 pixels of 60 m, so cells align on every band grid.
PATCH_CELL_M = 1920
#: Width of the haze fringe around clouds, in units of the unit-variance cloud field (the
#: unclassified fringe, class 7, is the inner 0.12 of it).
HAZE_WIDTH = 0.3
CLOUD_CLASSES = (8, 9)
SHADOW_CLASS = 3
SKY_CLOUDINESS = tuple(CLOUDINESS)  # the weather regimes scenes.draw_weather knows
#: Edge haze below this opacity counts as clear: it adds < 0.006 reflectance to the blue
#: (cloud 0.6 - surface ~0.04, x 0.01), below the blue's sensor noise (40 DN).
CLEAR_HAZE = 0.01


@dataclass(frozen=True)
class Sky:
    """How the atmosphere and Sen2Cor behave (see the module docstring)."""

    cloudiness: str = "normal"  # a key of scenes.CLOUDINESS
    scl_miss: float = 0.0  # share of cloud and shadow patches missing from the written SCL
    edge_haze: float = 0.0  # peak opacity of the thin haze around clouds (0 = none)

    def __post_init__(self) -> None:
        from ..errors import InputError

        if self.cloudiness not in SKY_CLOUDINESS:
            raise InputError(f"unknown cloudiness {self.cloudiness!r}; "
                             f"valid: {list(SKY_CLOUDINESS)}")
        if not 0.0 <= self.scl_miss <= 1.0:
            raise InputError(f"scl_miss must be a share in 0..1, got {self.scl_miss}")
        if not 0.0 <= self.edge_haze <= 0.5:
            raise InputError(f"edge_haze must be an opacity in 0..0.5, got {self.edge_haze}")

    def to_dict(self) -> dict:
        return {"cloudiness": self.cloudiness, "scl_miss": self.scl_miss,
                "edge_haze": self.edge_haze}


def _cell_uniform(seed: int, cx: np.ndarray, cy: np.ndarray, kind: int) -> np.ndarray:
    """A uniform 0..1 per (seed, cell, kind): splitmix64 of the packed key (vectorised)."""
    with np.errstate(over="ignore"):
        z = (np.uint64(seed % 2**63) * np.uint64(0x9E3779B97F4A7C15)
             + cx.astype(np.int64).astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
             + cy.astype(np.int64).astype(np.uint64) * np.uint64(0x94D049BB133111EB)
             + np.uint64(kind))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


@dataclass
class Classified:
    """One acquisition's classification on the 20 m grid of a window."""

    scl: np.ndarray  # uint8: the SCL as written (some patches missed)
    scl_true: np.ndarray  # uint8: what the pixels really are
    opacity: np.ndarray  # float32 cloud opacity
    cirrus: np.ndarray  # float32 cirrus strength
    haze: np.ndarray  # float32 opacity of unflagged edge haze (0 = none)


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
    scl: np.ndarray  # uint8, 20 m (as written: missed patches show the ground class)
    tci: np.ndarray  # uint8 (3, h, w), 10 m
    aot: np.ndarray  # uint16, 20 m
    wvp: np.ndarray  # uint16, 20 m
    scl_true: np.ndarray | None = None  # uint8, 20 m: the true classes
    haze: np.ndarray | None = None  # float32, 20 m: unflagged edge-haze opacity

    def truly_clear(self) -> np.ndarray:
        """20 m bool: ground really seen (no cloud, shadow, cirrus, snow or bad pixel, and edge
        haze below ``CLEAR_HAZE``)."""
        clear = np.isin(self.scl_true, (2, 4, 5, 6, 7))
        return clear & (self.haze < CLEAR_HAZE) if self.haze is not None else clear

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
                 swath_line: dict | None = None, cache: bool = True, sky: Sky | None = None):
        self.landscape = landscape
        self.sky = sky or Sky()
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
    def classify(self, acq: Acquisition, win: Win) -> Classified:
        """The written and the true classes, opacities and edge haze on the 20 m grid."""
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
        ground = scl.copy()  # what a missed patch is written as
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
        haze = np.zeros(g.shape, np.float32)
        if self.sky.edge_haze > 0:
            ramp = np.clip((f - (t - HAZE_WIDTH)) / HAZE_WIDTH, 0, 1)
            edge = (ramp > 0) & (f <= t) & ((scl == 7) | np.isin(scl, (2, 4, 5, 6)))
            haze = np.where(edge, self.sky.edge_haze * ramp**2, 0).astype(np.float32)
        written = self.miss_patches(acq, g, scl, ground)
        return Classified(written, scl, opacity, cirrus, haze)

    def missed_cells(self, acq: Acquisition, g: Grid) -> tuple[np.ndarray, np.ndarray]:
        """(cloud, shadow) bool maps on the grid: pixels whose patch SCL misses (``scl_miss``)."""
        if self.sky.scl_miss <= 0:
            z = np.zeros(g.shape, bool)
            return z, z
        cx, cy = self.patch_cells(g)
        out = []
        for kind in (1, 2):
            u = _cell_uniform(acq.seed, cx[None, :], cy[:, None], kind)
            out.append(u < self.sky.scl_miss)
        return out[0], out[1]

    def patch_cells(self, g: Grid) -> tuple[np.ndarray, np.ndarray]:
        """(column, row) of the ``PATCH_CELL_M`` cell of each grid column and row, counted from
        the tile's corner."""
        cx = np.floor((g.xs - self.origin[0]) / PATCH_CELL_M).astype(np.int64)
        cy = np.floor((self.origin[1] - g.ys) / PATCH_CELL_M).astype(np.int64)
        return cx, cy

    def missed_report(self, win: Win, r: Rendered) -> dict:
        """What SCL missed in a rendered window: pixel counts and the missed patches' cells
        (``[kind, cell_col, cell_row]``, cells of ``PATCH_CELL_M`` from the tile's corner)."""
        cloud = np.isin(r.scl_true, CLOUD_CLASSES) & ~np.isin(r.scl, CLOUD_CLASSES)
        shadow = (r.scl_true == SHADOW_CLASS) & (r.scl != SHADOW_CLASS)
        cx, cy = self.patch_cells(win.grid(self.origin, 20))
        cells = set()
        for kind, m in (("cloud", cloud), ("shadow", shadow)):
            rows, cols = np.nonzero(m)
            cells |= {(kind, int(a), int(b)) for a, b in set(zip(cx[cols], cy[rows],
                                                                 strict=True))}
        haze = r.haze if r.haze is not None else np.zeros(r.scl.shape, np.float32)
        return {"cloud_pixels": int(cloud.sum()), "shadow_pixels": int(shadow.sum()),
                "haze_pixels": int(np.count_nonzero(haze > 0)), "cells": cells}

    def miss_patches(self, acq: Acquisition, g: Grid, scl: np.ndarray,
                     ground: np.ndarray) -> np.ndarray:
        """The SCL as written: cloud/shadow pixels of missed patches show the ground class."""
        miss_cloud, miss_shadow = self.missed_cells(acq, g)
        hide = (np.isin(scl, CLOUD_CLASSES) & miss_cloud) | ((scl == SHADOW_CLASS) & miss_shadow)
        if not hide.any():
            return scl
        return np.where(hide, ground, scl).astype(np.uint8)

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
        cls = self.classify(acq, win)
        s = season(acq.day)
        bands = {}
        refl_vis = {}
        per_res = {r: (to_res(cls.scl_true, r), to_res(cls.opacity, r), to_res(cls.cirrus, r),
                       to_res(cls.haze, r)) for r in RESOLUTIONS}
        for i, key in enumerate(BAND_KEYS):
            res = BAND_RES[key]
            scl, opacity, cirrus, haze = per_res[res]  # pixels follow the TRUE classes
            refl = self.surface(win, res).clear(key, s)
            refl = np.where(scl == 3, refl * (0.35 + 0.15 * opacity), refl)
            refl = np.where(scl == 11, SNOW[i] * 0.9 + refl * 0.1, refl)
            refl = refl + cirrus * CIRRUS_GAIN[i]
            cloudy = (scl == 8) | (scl == 9)
            refl = np.where(cloudy, refl * (1 - opacity) + CLOUD[i] * opacity, refl)
            if self.sky.edge_haze > 0:
                refl = refl * (1 - haze) + np.float32(CLOUD[i]) * haze
            rng = np.random.default_rng([acq.seed, win.row, win.col, 100 + i])
            noise = rng.standard_normal(refl.shape, dtype=np.float32) * NOISE_SIGMA_DN[i]
            dn = np.clip(np.rint(refl * 10000 + noise), 1, SATURATED_DN).astype(np.uint16)
            dn[scl == 1] = SATURATED_DN
            dn[scl == 0] = 0
            bands[key] = dn
            if key in ("red", "green", "blue"):
                refl_vis[key] = dn
        tci = make_tci(refl_vis["red"], refl_vis["green"], refl_vis["blue"])
        aot, wvp = self.atmosphere(acq, win, cls.scl)
        return Rendered(bands=bands, scl=cls.scl, tci=tci, aot=aot, wvp=wvp,
                        scl_true=cls.scl_true, haze=cls.haze)

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
