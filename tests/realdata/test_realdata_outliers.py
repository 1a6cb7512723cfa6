"""Outlier rejection (``outliers.py``, issue 8) checked on real Sentinel-2 L2A pixels.

The thresholds cite Fmask (Zhu & Woodcock 2012) and Zhang et al. 2002 but were tuned on our
synthetic archive. Here they meet real pixels (``../shared/realdata``, see its README):

- **29RKH** 2020-02-19, Earth Search COGs decimated 10x (baseline 02.14, no offset): a bright
  desert (SCL 5) with clouds (8, 9) and cirrus (10). Blue and red are reduced to the decision
  grid by ``outliers._mean_on_decision_grid`` (the pipeline's own 2 x 2 mean), as in a run.
- **29UNU** 2022-10-05, ESA's baseline 04.00 product at 60 m: vegetation, bare soil, water,
  much cloud and shadow. Its raw DNs carry +1000; ``harmonize.decide`` finds that from the
  pixels and ``harmonize.apply_offset`` removes it, as the pipeline does.

There is no real time series, so the multi-date tests run on pseudo-stacks: the real pixels
repeated with seeded variation (a per-scene gain of 5 %, a per-band gain of 2 %, 1 % + 20 DN per
pixel), one date replaced by real cloud or shadow pixels. The clear "surroundings" of a cloud
pixel are its nearest SCL-clear pixel at least ``EDGE`` px from any SCL cloud or shadow (cloud
edges are where SCL misses clouds: see the single-date test). Every rate below is
computed by the real code (``outliers.cloud_like``, ``outliers.hot2``, ``outliers.reject``);
each bound is the measured value with a margin, stated in the test.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cloudfree import outliers
from cloudfree.harmonize import apply_offset, decide
from cloudfree.mask import dilate, valid_mask
from cloudfree.median import masked_median
from cloudfree.windows import Window, read_stack

from .test_realdata_mask_harmonize import RKH, UNU

CLEAR = (4, 5, 6, 11)  # SCL classes the mask keeps (vegetation, bare soil, water, snow)
CLOUDS = (8, 9, 10)
SHADOW = 3
EDGE = 3  # px from SCL cloud/shadow: beyond it a clear pixel counts as "far"
RULE = outliers.DEFAULT_RULE


@dataclass(frozen=True, eq=False)
class Scene:
    """One real scene on one grid: (blue, red, nir08) DNs as the decision sees them, SCL."""

    name: str
    blue: np.ndarray
    red: np.ndarray
    nir: np.ndarray
    scl: np.ndarray

    def bands(self) -> np.ndarray:
        return np.stack([self.blue, self.red, self.nir])

    def valid(self) -> np.ndarray:
        return (self.bands() > 0).all(axis=0)

    def far_clear(self, classes=CLEAR) -> np.ndarray:
        dirty = np.isin(self.scl, (SHADOW, *CLOUDS))
        return np.isin(self.scl, classes) & self.valid() & ~dilate(dirty, EDGE)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def load_rkh(realdata: Path) -> Scene:
    root = realdata / RKH
    w20 = Window(0, 0, 549, 549)  # the 20 m role: SCL and B8A are 549 px, B02/B04 1098 px
    blue, red = (outliers._mean_on_decision_grid([str(root / f"{b}.tif")], w20, 1)[0]
                 for b in ("B02", "B04"))
    nir = read_stack([str(root / "B8A.tif")], w20, threads=1)[0]
    return Scene("29RKH", blue, red, nir, _read(root / "SCL.tif"))


def load_unu(realdata: Path) -> Scene:
    root = realdata / UNU / "R60m"
    # the north-west 576 px (34.6 km) of the tile: inside the swath, with every class
    # (vegetation, soil, water, shadow, clouds, cirrus); JP2 decoding of the whole tile costs
    # seconds, this window a third of it
    win = Window(0, 0, 576, 576)
    hrefs = [str(root / f"T29UNU_20221005T115411_{b}_60m.jp2") for b in ("B02", "B04", "B8A")]
    bands = read_stack(hrefs, win, threads=1)
    scl = read_stack([str(root / "T29UNU_20221005T115411_SCL_60m.jp2")], win, threads=1)[0]
    h = decide({"s2:processing_baseline": "04.00"}, bands[2], valid_mask(scl), scl=scl)
    assert h.offset == 1000 and h.evidence["decided_by"] == "pixels"
    for c in range(3):
        apply_offset(bands[c:c + 1], [h.offset], (scl != 0)[None])
    return Scene("29UNU", bands[0], bands[1], bands[2], scl.astype(np.uint8))


@pytest.fixture(scope="module")
def rkh(realdata: Path) -> Scene:
    return load_rkh(realdata)


@pytest.fixture(scope="module")
def unu(realdata: Path) -> Scene:
    return load_unu(realdata)


def _rate(flags: np.ndarray) -> float:
    return float(flags.mean()) if flags.size else float("nan")


@functools.lru_cache(maxsize=4)  # per scene (hashed by identity): shared by the tests
def _surroundings(scene: Scene, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the DNs of a nearby far-clear pixel (grown outwards from the far-clear ones,
    one 4-neighbour step at a time, at most ``reach`` steps), (3, h, w) float, and where
    there is one."""
    have = scene.far_clear()
    vals = np.where(have, scene.bands(), 0).astype(np.uint16)
    for _ in range(reach):
        if have.all():
            break
        for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)):
            came = np.roll(have, shift, axis=axis)
            came[(slice(None),) * axis + (0 if shift > 0 else -1,)] = False  # no wrap-around
            new = ~have & came
            np.copyto(vals, np.roll(vals, shift, axis=axis + 1), where=new[None])
            have |= new
    return vals.astype(np.float64), have


def _pseudo_stack(surface: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(3, n, N) float: ``surface`` (3, N) seen on ``n`` dates (module docstring's variation)."""
    rng = np.random.default_rng(seed)
    out = np.empty((3, n, surface.shape[1]))
    for s in range(n):
        gain = 1 + rng.normal(0, 0.05)
        for b in range(3):
            out[b, s] = (surface[b] * gain * (1 + rng.normal(0, 0.02))
                         * (1 + rng.normal(0, 0.01, surface.shape[1]))
                         + rng.normal(0, 20, surface.shape[1]))
    return out


def _reject(stack: np.ndarray, rule: outliers.OutlierRule = RULE) -> np.ndarray:
    """``outliers.reject`` on a (3, n, N) float stack (every observation SCL-clear): (n, N)."""
    dn = np.clip(np.rint(stack), 1, 32767).astype(np.uint16)[:, :, None, :]
    use = np.ones(dn.shape[1:], bool)
    return outliers.reject(dn[0], dn[1], dn[2], use, rule)[:, 0, :]


def _every(n_total: int, at_most: int) -> slice:
    """A regular subsample of at most ``at_most`` of ``n_total`` items (keeps tests fast)."""
    return slice(None, None, max(1, -(-n_total // at_most)))


def _with_one_date(surface: np.ndarray, obs: np.ndarray, n: int, seed: int
                   ) -> tuple[np.ndarray, dict[str, float]]:
    """``surface`` seen on ``n`` dates, the middle one replaced by ``obs`` (3, N), through
    ``reject``: (decision, rates): ``caught`` = share of the replaced date rejected,
    ``clear_lost`` = share of the other dates rejected, ``harm`` = share of pixels where the
    replaced date is kept while a clear one is rejected (worse than no rejection)."""
    stack = _pseudo_stack(surface, n, seed)
    at = n // 2
    stack[:, at] = obs
    rej = _reject(stack)
    others = [s for s in range(n) if s != at]
    return rej, {"caught": _rate(rej[at]), "clear_lost": _rate(rej[others]),
                 "harm": _rate(~rej[at] & rej[others].any(axis=0))}


# --- one date: Fmask's HOT test on real pixels ------------------------------------------------
def test_hot_test_single_date_on_real_clear_pixels(rkh: Scene, unu: Scene) -> None:
    """False alarms of the HOT test (``cloud_like``) on SCL-clear pixels, one date.

    Measured: the bright 29RKH desert (class 5, blue ~1660, red ~3400 DN) is never cloud-like:
    0 of 289,159 pixels; its HOT is -38 DN at the median, 400 at the 99.9th percentile, half
    of the 800 DN threshold (real Saharan sand is redder than the synthetic "sand", whose HOT
    is 400 DN). On 29UNU, clear pixels more than ``EDGE`` px (180 m) from SCL cloud or shadow:
    vegetation 0 of 157,944, bare soil 8 of 3,743 (0.2 %), water 9 of 8,533 (0.1 %). Within
    ``EDGE`` px of a cloud the rate is 37 times higher (60 of 16,025): the cloud-like "clear" pixels
    are missed cloud edges (over the whole tile 85 % of the cloud-like bare soil pixels lie
    within 3 px of SCL cloud or shadow), which is what the test is for. Bounds: the measured
    value with a margin of a few pixels.
    """
    assert rkh.name == "29RKH"
    desert = (rkh.scl == 5) & rkh.valid()
    assert int(desert.sum()) == 289_159
    assert int(outliers.cloud_like(rkh.blue, rkh.red)[desert].sum()) == 0
    hot = outliers.hot2(rkh.blue, rkh.red)[desert] / 2
    assert -60 < np.median(hot) < -20 and np.percentile(hot, 99.9) < RULE.hot_dn * 0.6
    cloud_like = outliers.cloud_like(unu.blue, unu.red)
    far = unu.far_clear()
    near = np.isin(unu.scl, CLEAR) & unu.valid() & ~far
    for cls, n_far, at_most in ((4, 157_944, 0.0002), (5, 3_743, 0.005), (6, 8_533, 0.003)):
        f = far & (unu.scl == cls)
        assert int(f.sum()) == n_far, cls
        assert _rate(cloud_like[f]) <= at_most, cls
    all_far = _rate(cloud_like[far & np.isin(unu.scl, (4, 5, 6))])
    assert _rate(cloud_like[near & np.isin(unu.scl, (4, 5, 6))]) > 20 * all_far


def test_hot_test_single_date_on_real_scl_clouds(rkh: Scene, unu: Scene) -> None:
    """Share of SCL cloud pixels the single-date HOT test calls cloud-like.

    Measured: 29RKH (desert) medium cloud (8) 64.4 %, high (9) 98.4 %, thin cirrus (10)
    3.1 %; 29UNU (Ireland) 98.2 %, 99.9 %, 65.1 %; cloud shadow (3) 0.16 %. Thick clouds are
    caught by HOT alone; thin cirrus over a bright red desert is not (its HOT, 121 DN at the
    median, stays far below 800): there the haze and temporal tests must act (see the stack
    tests). Bounds: measured +- a few points.
    """
    cases = {(rkh, 8): (0.55, 0.75), (rkh, 9): (0.95, 1.0), (rkh, 10): (0.0, 0.1),
             (unu, 8): (0.95, 1.0), (unu, 9): (0.99, 1.0), (unu, 10): (0.55, 0.75),
             (unu, SHADOW): (0.0, 0.01)}
    for (scene, cls), (lo, hi) in cases.items():
        sel = (scene.scl == cls) & scene.valid()
        rate = _rate(outliers.cloud_like(scene.blue, scene.red)[sel])
        assert lo <= rate <= hi, (scene.name, cls, rate)


def test_haze_test_premise_hot_of_real_clear_surfaces(rkh: Scene, unu: Scene) -> None:
    """The haze test compares a pixel's HOT across dates against ``haze_dn`` (250 DN), on the
    premise (Zhang et al. 2002) that HOT is about the same for every clear surface. Measured
    medians of HOT on far-clear pixels: 29RKH desert -37, 29UNU vegetation 67, bare soil 170,
    water 136 DN: a pixel turning from vegetation to soil (harvest) moves 103 DN, water to
    vegetation 69 DN, all under 250; even desert against soil of another tile differs by 207.
    """
    medians = {}
    for scene, cls in ((rkh, 5), (unu, 4), (unu, 5), (unu, 6)):
        f = scene.far_clear((cls,))
        medians[(scene.name, cls)] = float(np.median(outliers.hot2(scene.blue, scene.red)[f]) / 2)
    assert -45 <= medians[("29RKH", 5)] <= -30
    assert max(medians.values()) - min(medians.values()) < RULE.haze_dn
    assert abs(medians[("29UNU", 5)] - medians[("29UNU", 4)]) < RULE.haze_dn / 2


def test_dn_floors_stand_above_real_noise(unu: Scene) -> None:
    """The 150 DN floors (``cloud_floor_dn``, ``shadow_floor_dn``) keep noise on dark, flat
    surfaces (tiny MAD) from triggering the temporal test. Real noise, from neighbouring
    pixels deep inside 29UNU water (texture included, so an upper bound): robust sigma of one
    60 m pixel 7.3 DN in blue, 6.3 DN in nir08. The decision grid is 20 m: even if the 60 m
    pixel were a mean of 9 independent 20 m ones, 20 m noise is at most 3 x that, 22 DN, and
    150 DN stands at 6.8 sigma: the floors are not too tight for real noise (the docstring's
    "~40 DN" was conservative).
    """
    water = unu.far_clear((6,))
    inner = water & ~dilate(~water, 2)
    pair = inner[:, :-1] & inner[:, 1:]
    assert int(pair.sum()) > 3000
    for band, floor in ((unu.blue, RULE.cloud_floor_dn), (unu.nir, RULE.shadow_floor_dn)):
        b = band.astype(np.int64)
        d = (b[:, 1:] - b[:, :-1])[pair]
        sigma60 = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2)
        assert 3 <= sigma60 <= 10
        assert floor >= 5 * 3 * sigma60


# --- several dates: pseudo-stacks of real pixels through ``reject`` ---------------------------
@pytest.mark.parametrize("seed", [2, 3])
def test_steady_real_surfaces_are_kept(rkh: Scene, unu: Scene, seed: int) -> None:
    """Far-clear real pixels on 8 dates, no cloud: what the rule costs a steady surface.

    Measured (50,000-pixel subsamples, seeds 1-4): 29RKH desert loses 0.1-1.0 % of its
    observations (the brightest 1 % of pixels 1-4 %), nearly all to the haze test (see the
    margin test below); pixels losing more than a quarter of their dates 0.002-0.2 %; the blue
    median moves by -0.5..+1.6 DN on average, -3.9..+7.5 DN on the brightest 1 %. 29UNU
    (vegetation, soil, water) loses 0.000-0.011 %. Bounds: about twice the worst seed.
    """
    for scene, lost_at_most, bright_at_most in ((rkh, 0.02, 0.08), (unu, 0.001, 0.02)):
        surf = scene.bands()[:, scene.far_clear()].astype(np.float64)
        surf = surf[:, _every(surf.shape[1], 50_000)]
        stack = _pseudo_stack(surf, 8, seed)
        rej = _reject(stack)
        bright = surf[0] >= np.percentile(surf[0], 99)
        assert _rate(rej) <= lost_at_most, scene.name
        assert _rate(rej[:, bright]) <= bright_at_most, scene.name
        assert _rate(rej.mean(axis=0) > 0.25) <= 0.005, scene.name
        blue = np.clip(np.rint(stack[0]), 1, 32767).astype(np.uint16)[:, None, :]
        every = masked_median(blue, np.ones(blue.shape, bool)).median[0].astype(np.int64)
        kept = masked_median(blue, ~rej[:, None, :]).median[0].astype(np.int64)
        assert abs(float(np.mean(kept - every))) <= 3, scene.name
        assert abs(float(np.mean((kept - every)[bright]))) <= 15, scene.name


def test_haze_test_margin_on_real_desert(rkh: Scene, unu: Scene) -> None:
    """How far can blue and red drift apart between two dates before the haze test calls the
    real desert hazy? Date B = date A with blue x (1 + x) and red x (1 - x) (a relative
    calibration or aerosol-correction error between the two bands, no noise, no seed).

    Measured on 29RKH far-clear desert: x = 4 %: nothing rejected; 5 %: 0.05 % of the pixels,
    5 % of the brightest 1 %; 7 %: 29 % (all of the brightest 1 %). HOT's own change is
    x (blue + red / 2), ~3,400 DN x x on this desert, so 250 DN is reached near 7 % (5 % on
    its brightest sand). Darker 29UNU surfaces: nothing up to 7 %. So on real desert the
    haze threshold leaves a 4-5 % margin for band-to-band drift, and what it rejects past it
    is the hazier date (date A, the clearer, is never rejected); kept as is.
    """
    surf = rkh.bands()[:, rkh.far_clear()].astype(np.float64)
    surf = surf[:, _every(surf.shape[1], 50_000)]
    bright = surf[0] >= np.percentile(surf[0], 99)
    for x, lo, hi, bright_lo, bright_hi in ((0.04, 0, 0, 0, 0), (0.05, 0, 0.003, 0.01, 0.12),
                                            (0.07, 0.2, 0.4, 0.99, 1.0)):
        stack = np.stack([surf, surf * np.array([1 + x, 1 - x, 1.0])[:, None]], axis=1)
        rej = _reject(stack)
        assert not rej[0].any()
        assert lo <= _rate(rej[1]) <= hi, x
        assert bright_lo <= _rate(rej[1][bright]) <= bright_hi, x
    surf = unu.bands()[:, unu.far_clear()].astype(np.float64)
    stack = np.stack([surf, surf * np.array([1.07, 0.93, 1.0])[:, None]], axis=1)
    assert not _reject(stack).any()


#: Real SCL cloud/shadow pixels put into a stack of their own surroundings (seed 5):
#: (lowest share caught, highest share of "harm") per (scene, class) and number of dates;
#: measured values in the test's docstring.
OWN_BOUNDS_N = {
    8: {("29RKH", 8): (0.98, 0.01), ("29RKH", 9): (0.99, 0.005), ("29RKH", 10): (0.68, 0.04),
        ("29UNU", SHADOW): (0.74, 0.05), ("29UNU", 8): (0.97, 0.005),
        ("29UNU", 9): (0.99, 0.005), ("29UNU", 10): (0.83, 0.05)},
    3: {("29RKH", 8): (0.97, 0.01), ("29RKH", 9): (0.99, 0.005), ("29RKH", 10): (0.55, 0.03),
        ("29UNU", SHADOW): (0.72, 0.05), ("29UNU", 8): (0.96, 0.005),
        ("29UNU", 9): (0.99, 0.005), ("29UNU", 10): (0.82, 0.04)},
    2: {("29RKH", 8): (0.94, 0.05), ("29RKH", 9): (0.98, 0.01), ("29RKH", 10): (0.34, 0.22),
        ("29UNU", SHADOW): (0.65, 0.09), ("29UNU", 8): (0.91, 0.05),
        ("29UNU", 9): (0.99, 0.005), ("29UNU", 10): (0.56, 0.18)},
}


@pytest.mark.parametrize("n", [8, 3, 2])
def test_real_clouds_in_a_stack_of_their_surroundings(rkh: Scene, unu: Scene, n: int) -> None:
    """Each real SCL cloud (8, 9, 10) or shadow (3) pixel replaces one of ``n`` dates of its
    own surroundings (the nearest far-clear pixel, within 30 px): is it rejected, and are the
    clear dates kept? ``harm``: the cloud kept while a clear date is rejected (worse than no
    rejection at all).

    Measured (up to 8,000 pixels per class; caught % / harm %), rule of main -> this rule
    (the shade test's guards and second pass, ``outliers._shaded``):

    ======================  ===========================  ===========================
    class                   8 dates                      3 dates
    ======================  ===========================  ===========================
    29RKH medium cloud (8)  79.9 / 20.0 -> 99.6 / 0.0    78.4 / 21.5 -> 98.9 / 0.0
    29RKH high cloud (9)    98.4 / 1.6 -> 100 / 0.0      98.4 / 1.6 -> 99.9 / 0.0
    29RKH "cirrus" (10)     51.8 / 25.3 -> 74.7 / 1.4    38.6 / 25.7 -> 61.6 / 0.7
    29UNU shadow (3)        80.8 / 6.3 -> 79.7 / 2.3     78.2 / 6.1 -> 77.2 / 2.0
    29UNU cloud (8)         96.3 / 2.9 -> 98.9 / 0.06    94.8 / 3.8 -> 98.4 / 0.0
    29UNU cloud (9)         99.9 / 0.08 -> 99.98 / 0.0   99.9 / 0.1 -> 100 / 0.0
    29UNU cirrus (10)       77.9 / 14.0 -> 88.0 / 2.1    74.1 / 16.6 -> 87.3 / 1.6
    ======================  ===========================  ===========================

    The harm of main's rule: a missed cloud whose HOT stays under 800 DN was the shade test's
    brightest-NIR reference, and every clear date looked like its shadow. 2 dates (no robust
    centre: the hazier-reference guard alone): 29RKH (8) 68.7 / 31.2 -> 97.2 / 2.7, (10)
    32.0 / 24.4 -> 40.4 / 16.0; 29UNU (3) 71.6 / 5.3 -> 71.1 / 5.8, (8) 93.4 / 3.9 ->
    94.3 / 2.9, (10) 60.2 / 15.3 -> 62.0 / 13.5. What stays: with two dates nothing tells a
    uniformly brighter date (thin cloud) from a uniformly shaded one; the stand-in
    surroundings are only the nearest far-clear pixel (another surface at times: water beside
    a shadow over land).
    """
    bounds = OWN_BOUNDS_N[n]
    for scene in (rkh, unu):
        surr, ok = _surroundings(scene, 30)
        for (name, cls), (caught_at_least, harm_at_most) in bounds.items():
            if name != scene.name:
                continue
            sel = (scene.scl == cls) & scene.valid() & ok
            k = _every(int(sel.sum()), 8000)
            _, rates = _with_one_date(surr[:, sel][:, k], scene.bands()[:, sel][:, k]
                                      .astype(np.float64), n, seed=5)
            assert rates["caught"] >= caught_at_least, (name, cls, rates)
            assert rates["harm"] <= harm_at_most, (name, cls, rates)


def test_other_scenes_clouds_over_real_surfaces(rkh: Scene, unu: Scene) -> None:
    """One of 8 dates of far-clear real pixels replaced by real SCL cloud/shadow pixels of the
    *other* scene, drawn at random (8,000 pixels, seed 6).

    Measured over the 29RKH desert, 29UNU pixels: shadow (3) 99.1 %, clouds (8, 9, 10)
    99.96 %, 99.99 %, 99.7 % rejected, clear dates lost 1.0 %, harm <= 0.08 % (same with the
    rule of main). Over 29UNU vegetation/soil/water, 29RKH pixels, rule of main -> this rule:
    cloud (8) 87.7 -> 100 %, harm 12.3 -> 0.0 %; (9) 99.3 -> 100 %, harm 0.7 -> 0.0 %;
    "cirrus" (10, bright red desert spectra, HOT 121 DN) 74.9 -> 98.8 %, harm 25.2 -> 1.2 %:
    against a desert-bright date every vegetation date looked dimmed in every band, i.e.
    shaded, until the shade test also asked for a date darker than the pixel's NIR median.
    """
    cases = ((rkh, unu, {SHADOW: (0.98, 0.005), 8: (0.99, 0.005), 9: (0.99, 0.005),
                         10: (0.98, 0.005)}),
             (unu, rkh, {8: (0.98, 0.005), 9: (0.99, 0.005), 10: (0.95, 0.03)}))
    for scene, donor, bounds in cases:
        surf = scene.bands()[:, scene.far_clear()].astype(np.float64)
        surf = surf[:, _every(surf.shape[1], 8000)]
        for cls, (caught_at_least, harm_at_most) in bounds.items():
            pool = donor.bands()[:, (donor.scl == cls) & donor.valid()].astype(np.float64)
            pick = np.random.default_rng(6).integers(0, pool.shape[1], surf.shape[1])
            _, rates = _with_one_date(surf, pool[:, pick], 8, seed=6)
            assert rates["caught"] >= caught_at_least, (scene.name, cls, rates)
            assert rates["harm"] <= harm_at_most, (scene.name, cls, rates)
            assert rates["clear_lost"] <= 0.03, (scene.name, cls, rates)


def test_vectorised_rule_equals_reference_on_real_stacks(rkh: Scene, unu: Scene) -> None:
    """``reject`` and the per-pixel ``reference_reject`` agree bit for bit on real stacks
    (real clouds in their surroundings, 6 dates, shuffled time order)."""
    for scene, cls in ((rkh, 8), (rkh, 10), (unu, 10), (unu, SHADOW)):
        surr, ok = _surroundings(scene, 30)
        sel = (scene.scl == cls) & scene.valid() & ok
        k = _every(int(sel.sum()), 150)
        stack = _pseudo_stack(surr[:, sel][:, k], 6, seed=7)
        stack[:, 2] = scene.bands()[:, sel][:, k]
        dn = np.clip(np.rint(stack), 1, 32767).astype(np.uint16)[:, :, None, :]
        use = np.ones(dn.shape[1:], bool)
        order = [3, 0, 5, 1, 4, 2]
        got = outliers.reject(dn[0], dn[1], dn[2], use, order=order)
        np.testing.assert_array_equal(
            got, outliers.reference_reject(dn[0], dn[1], dn[2], use, order=order))
        assert got.any()
