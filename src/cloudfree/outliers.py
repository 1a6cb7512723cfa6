"""Clouds and shadows that SCL misses: per-pixel outlier tests before the median (issue 8).

Sen2Cor's SCL misses thin cloud, cloud edges and many shadows. A per-pixel median hides a missed
cloud only while most observations are clear; in a cloudy year (3-5 clear observations per
pixel) one or two missed clouds move it. So, per pixel, the observations SCL let through are
tested before the median (:func:`reject`), on uint16/int32 integers (exact, deterministic):

1. **cloud, spectral** - Fmask's HOT test (Zhu & Woodcock 2012, after Zhang et al. 2002):
   ``blue - 0.5 red > 0.08`` reflectance marks a cloud-like observation: clouds are bright and
   white, clear land and water are not (vegetation 0.035 - 0.015, bright sand 0.22 - 0.18,
   both below 0.08). A cloud-like observation is rejected when the pixel also has clear-like
   ones and its blue is above their median by more than ``cloud_floor_dn``. This works when
   missed clouds are the *majority* of a pixel's observations.
   A **surface** is protected: cloud-like observations that open or close the year as one run
   (in time order) of at least ``persistent_run`` steady observations (blue within
   ``max(cloud_floor_dn, max / 32)``) are a roof, a new building from some date on, bright sand
   - a persistent change, not an outlier; so is a pixel whose observations are all cloud-like.
   Clouds of different days differ far more than that.
2. **shade** - an observation darker than the pixel's brightest-NIR clear-like one by more than a
   quarter of the NIR (and ``shadow_floor_dn``) and not brighter in blue or red: a shadow removes
   the direct beam and dims every band; real changes that darken the NIR (harvest, senescence, a
   burn, a flood) brighten the blue or the red. Also darker than the pixel's NIR median by a
   quarter, and not where the brightest-NIR observation is the hazier one (its HOT, scaled by
   the NIR ratio, above the observation's by ``haze_dn``): a missed cloud as the reference
   made every clear observation "shade" (measured on real cloud pixels, see :func:`_shaded`).
3. **haze** - HOT (``blue - red / 2``) is the distance from the clear-sky line in blue-red space:
   about the same for dark and bright clear surfaces, raised by haze (Zhang, Guindon & Cihlar
   2002). An observation whose HOT exceeds the pixel's lowest clear-like one by more than
   ``haze_dn`` (0.025 reflectance) is hazy; without the hazy ones, the shade test runs again (a
   hazy date may have been its reference). Tests 2 and 3 work with two observations.
4. **temporal** - on what is left, the exact median and the median absolute deviation (MAD) of
   blue and NIR (``median.masked_median``; ``kernel`` picks the compiled or numpy kernel): blue
   above the centre by more than 4.45 MAD (3 robust sigmas, ``k_num / k_den``) and
   ``cloud_floor_dn`` (cloud/haze), NIR below by more than 4.45 MAD, ``shadow_floor_dn`` and a
   quarter of the centre (shadow); two passes, the second with the centre of what the first kept.

Thresholds' physical basis: ``cloud_floor_dn`` / ``shadow_floor_dn`` = 150 DN = 0.015
reflectance, above the L2A surface-reflectance uncertainty in the blue (about 0.005 + 5 %) and
sensor noise over dark water (~40 DN; real 29UNU water: at most 22 DN at 20 m, see
tests/realdata/test_realdata_outliers.py), so dark-water noise, with its tiny MAD, does not
trigger a test; a shadow loses far more than a quarter of the NIR (the diffuse share of NIR
irradiance is small). Pixels keep at least one used observation; fewer than ``min_obs`` used
observations skip the temporal test (no robust centre).

**One decision for every band.** The tests run on the 20 m grid (the SCL grid), from the
reference bands blue and red (10 m; each 20 m pixel the exact integer mean of its 2 x 2) and
nir08 (20 m), with the same states as the band (SCL, nodata, harmonization offsets, granule
fusion, snow fallback). The 20 m decision is carried to a band grid like SCL: 10 m repeats it,
60 m rejects an observation when any of the nine 20 m pixels inside is rejected (as
``mask.scene_state``'s all-nine rule). Without a cache, each band window computes it from the
reference bands in chunks of ``DECISION_CHUNK`` 20 m pixels (bounded memory for every
resolution). In the pipeline the decision is made once per tile: the *decide* step
(:func:`decide_squares`, before the bands' medians) stores it per ``CACHE_CHUNK`` square as a
small bit-packed file, and every band window takes its part from those
(:func:`band_window_rejection` with ``cache``), so the reference bands are read once per tile
instead of once per band. Same bits either way.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from . import mask
from .bands import Band, get_band
from .errors import ConfigError, InputError
from .windows import DEFAULT_THREADS, Window, read_stack

#: Reference bands of the decision: cloud/haze test, HOT's red, shadow test.
CLOUD_BAND, WHITE_BAND, SHADOW_BAND = "blue", "red", "nir08"
#: Grid of the decision (m): the SCL grid.
DECISION_RESOLUTION = mask.SCL_RESOLUTION
SETTING_VALUES = ("on", "off")
#: Side (20 m pixels) of the squares the decision is computed in: the SCL's 512 px blocks, so
#: reads stay block-aligned (10 m windows of 1024 px have a 512 px footprint: one chunk);
#: memory about S x 512^2 x 22 bytes (3 reference planes, the 10 m reads, temporaries):
#: 92 MB at S = 16, beside the window's own stack.
DECISION_CHUNK = 512


@dataclass(frozen=True)
class OutlierRule:
    """Parameters of the temporal outlier test (see the module docstring)."""

    enabled: bool = True
    k_num: int = 89  # k = k_num / k_den robust sigmas x MAD: 4.45 = 3 x 1.4826
    k_den: int = 20
    cloud_floor_dn: int = 150  # 0.015 reflectance in the blue
    shadow_floor_dn: int = 150  # 0.015 reflectance in the NIR
    shadow_rel_den: int = 4  # a shadow loses more than 1/4 of the NIR centre
    min_obs: int = 3  # fewer used observations: no temporal test
    passes: int = 2
    hot_dn: int = 800  # Fmask HOT test: blue - red / 2 > 0.08 reflectance = cloud-like
    haze_dn: int = 250  # HOT above the pixel's clearest observation's by more = haze
    persistent_run: int = 3  # cloud-like obs forming a run this long at either end of the
    # year (in time order) are a surface change (a new roof), not clouds

    def __post_init__(self) -> None:
        if min(self.k_num, self.k_den, self.shadow_rel_den, self.min_obs, self.passes) < 1 or \
                min(self.cloud_floor_dn, self.shadow_floor_dn) < 0:
            raise ConfigError(f"bad outlier rule {self}")

    def to_dict(self) -> dict:
        """The rule as recorded in window statistics and the STAC item."""
        return {"method": "hot+temporal-mad" if self.enabled else "off",
                "reference_bands": [CLOUD_BAND, WHITE_BAND, SHADOW_BAND], **asdict(self)}


OFF = OutlierRule(enabled=False)
DEFAULT_RULE = OutlierRule()


def parse_rule(value: OutlierRule | str | bool | None) -> OutlierRule:
    """``"on"`` (default rule) / ``"off"`` / a bool / None (default) / a rule."""
    if isinstance(value, OutlierRule):
        return value
    if value is None or value is True:
        return DEFAULT_RULE
    if value is False:
        return OFF
    text = str(value).strip().lower()
    if text in ("on", "true", "1", "temporal-mad"):
        return DEFAULT_RULE
    if text in ("off", "false", "0", "none"):
        return OFF
    raise ConfigError(f"outlier rejection must be one of {SETTING_VALUES}, got {value!r}")


def _absdiff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| of uint16 arrays, in uint16 (exact)."""
    return np.maximum(a, b) - np.minimum(a, b)


def _centre_spread(stack: np.ndarray, keep: np.ndarray, kernel: str | None,
                   threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(median, MAD) per pixel of the kept observations, int32 (h, w)."""
    from .median import masked_median

    centre = masked_median(stack, keep, kernel=kernel, threads=threads).median
    mad = masked_median(_absdiff(stack, centre[None]), keep, kernel=kernel,
                        threads=threads).median
    return centre.astype(np.int32), mad.astype(np.int32)


def _check_refs(**arrays: np.ndarray) -> None:
    shape = None
    for name, arr in arrays.items():
        if not isinstance(arr, np.ndarray) or arr.ndim != 3 or (
                arr.dtype != np.uint16 and name != "use"):
            raise InputError(f"{name} must be a (S, h, w) array (uint16 for the bands)")
        if shape is not None and arr.shape != shape:
            raise InputError(f"{name} shape {arr.shape} != {shape}")
        shape = arr.shape


def _time_order(order: Sequence[int] | None, n: int) -> list[int]:
    order = list(range(n)) if order is None else [int(i) for i in order]
    if sorted(order) != list(range(n)):
        raise InputError(f"order must be a permutation of 0..{n - 1}, got {order}")
    return order


def _below(lim: np.ndarray) -> np.ndarray:
    """An int (h, w) bound as uint16, clipped to 0..65535: for uint16 ``v``, ``v < lim`` and
    ``v > lim`` keep their truth when ``lim`` is clipped (no uint16 is below 0 or above
    65535), so the tests compare uint16 stacks with a plane instead of making int32 copies."""
    return np.clip(lim, 0, 65535).astype(np.uint16)


def _count(mask: np.ndarray) -> np.ndarray:
    """Observations per pixel of a (S, h, w) bool: ``count_nonzero(axis=0)``, whose axis form
    is ~10x slower than this reduction (see ``median._Kernel.run``)."""
    return np.add.reduce(mask, axis=0, dtype=np.uint8 if mask.shape[0] < 256 else np.int32)


def _first(mask: np.ndarray) -> np.ndarray:
    """(S, h, w) bool: the first True of each pixel along the scenes (none where none).
    ``np.argmax(axis=0)`` is ~10x slower than these three passes."""
    n = mask.shape[0]
    dtype = np.uint8 if n < 256 else np.int32
    rank = np.arange(n, 0, -1, dtype=dtype)[:, None, None]  # n for scene 0 ... 1 for the last
    top = (mask * rank).max(axis=0)  # rank of the first True, 0 where none
    return (rank == top[None]) & mask


def _max_under(stack: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(h, w): the largest uint16 of ``stack`` under ``mask``, 0 where none (a product and a
    reduction: ~5x faster than a masked ``np.maximum.reduce`` or ``np.where``)."""
    return (stack * mask).max(axis=0)


def persistent(cand: np.ndarray, used: np.ndarray, order: Sequence[int], min_run: int,
               blue: np.ndarray | None = None, tolerance_dn: int = 0) -> np.ndarray:
    """(S, h, w) bool: cloud-like observations that are a surface, not clouds.

    In time ``order``, the cloud-like observations that open the year (before its first
    clear-like used one) and those that close it are *runs*; a run of at least ``min_run``
    observations is a surface change: a roof all year, a building from some date on, a
    surface bright until some date. With ``blue`` given, a run must also be steady: its blue
    DNs within ``max(tolerance_dn, max / 32)`` of each other (clouds of different days differ by
    far more; noise and a roof's seasonal change do not). A pixel whose used observations are
    all cloud-like is a surface too. Missed clouds come and go, so they rarely form a run.
    """
    cand = cand & used
    out = np.zeros(used.shape, bool)
    if not cand.any():
        return out
    n = used.shape[0]
    dtype = np.uint8 if n < 255 else np.int32
    when = np.empty(n, dtype)  # 1 + the scene's place in time order
    when[list(order)] = np.arange(1, n + 1, dtype=dtype)
    when = when[:, None, None]
    clear = used & ~cand
    last_clear = (clear * when).max(axis=0)  # 0 where none
    first_clear = n + 1 - (clear * (n + 1 - when)).max(axis=0)  # n + 1 where none
    n_used = _count(used)
    dark = None if blue is None else np.invert(blue)  # 65535 - blue: its minimum as a maximum
    for members in (cand & (when < first_clear[None]),  # the opening run
                    cand & (when > last_clear[None])):  # the closing run
        count = _count(members)
        whole = count == n_used
        ok = (count >= min_run) | (whole & (count > 0))
        if dark is not None:
            hi = _max_under(blue, members).astype(np.int32)
            lo = np.invert(_max_under(dark, members)).astype(np.int32)  # 65535 where none
            ok &= (hi - lo <= np.maximum(tolerance_dn, hi // 32)) | whole
        members &= ok[None]
        out |= members
    return out


def hot2(blue: np.ndarray, red: np.ndarray) -> np.ndarray:
    """``2 x HOT`` in DN, exact in int32: ``2 blue - red`` (HOT = blue - red / 2, Zhang et al.
    2002); Fmask's HOT test and the haze test compare it with twice their DN thresholds."""
    return 2 * np.asarray(blue).astype(np.int32) - np.asarray(red).astype(np.int32)


def cloud_like(blue: np.ndarray, red: np.ndarray, rule: OutlierRule = DEFAULT_RULE
               ) -> np.ndarray:
    """Fmask's single-date HOT test: ``blue - 0.5 red - 0.08 > 0`` in reflectance, i.e.
    ``2 blue - red > 2 x hot_dn`` in DN (step 1 of :func:`reject`, before the surface runs
    and the clear-like median decide what is rejected)."""
    return hot2(blue, red) > 2 * rule.hot_dn


def _shaded(blue: np.ndarray, red: np.ndarray, nir: np.ndarray, keep: np.ndarray,
            rule: OutlierRule, kernel: str | None = None, threads: int = 1) -> np.ndarray:
    """(S, h, w): kept observations that look like the pixel's brightest-NIR kept one in shade
    (see :func:`_shade_test`)."""
    return _shade_test(blue, red, nir, keep, rule, kernel, threads)[0]


def _shade_test(blue: np.ndarray, red: np.ndarray, nir: np.ndarray, keep: np.ndarray,
                rule: OutlierRule, kernel: str | None = None, threads: int = 1
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shade, primary, best), (S, h, w) each: the kept observations that look like the
    pixel's brightest-NIR kept one in shade (see :func:`reject`, step 2), never that one
    itself; those that passed the test before its guards; that reference (where it is
    brighter than 0).

    The brightest-NIR observation is the reference, so a missed cloud (bright in every band)
    would make every clear observation look shaded, and be kept alone. Two guards, measured
    on real pixels (tests/realdata/test_realdata_outliers.py: real SCL cloud and cirrus pixels
    of 29RKH and 29UNU put into a stack of their clear surroundings):

    - with ``min_obs`` kept observations or more, a shade is darker in NIR than the pixel's
      NIR *median* by more than a quarter (and ``shadow_floor_dn``), not only darker than the
      brightest: a shadow is one date among clear ones, and one bright date does not make
      the others shade (with two observations there is no robust centre: the next guard);
    - a shadow keeps at least the NIR's share ``k = nir / nir_ref`` of the light in blue and
      red (the skylight left in a shadow is bluer than the sun), so its HOT is at least ``k``
      times the reference's; where the reference's HOT scaled by ``k`` exceeds the
      observation's by more than ``haze_dn``, the reference is the hazier one (a cloud).

    Without them, with 8 dates, the cloud was kept while clear dates were rejected at 20 %
    (29RKH medium cloud), 25 % (29RKH cirrus) and 14 % (29UNU cirrus) of those pixels; with
    them (and :func:`reject`'s second pass) 0.0 %, 1.4 % and 2.1 % (with 2 dates, the second
    guard alone: 31 -> 2.7 % for the 29RKH medium cloud).
    """
    from .median import masked_median

    knir = nir * keep
    nb = knir.max(axis=0)  # 0 where nothing is kept (and no shade: nothing is darker)
    best = _first(knir == nb[None])  # np.argmax's pick among equal NIRs
    bb, rb = _max_under(blue, best), _max_under(red, best)
    nb32 = nb.astype(np.int32)
    floor, den = rule.shadow_floor_dn, rule.shadow_rel_den
    # nb - nir > max(floor, nb // den), as nir below a uint16 bound (:func:`_below`)
    shade = nir < _below(nb32 - np.maximum(floor, nb32 // den))[None]
    shade &= blue <= bb[None]
    shade &= red <= rb[None]
    shade &= keep
    if not shade.any():
        return shade, shade, best
    primary = shade.copy()
    # the guards (shadows, and clear dates beside a bright one): the NIR median, where robust
    med = masked_median(nir, keep, kernel=kernel, threads=threads)
    centre = med.median.astype(np.int32)
    far = nir < _below(centre - np.maximum(floor, centre // den))[None]  # c - nir > ...
    far |= (med.count < rule.min_obs)[None]
    shade &= far
    # the hazier reference, on the few candidates left (int64 products)
    flat = np.flatnonzero(shade)
    s_i, y_i, x_i = np.unravel_index(flat, shade.shape)
    n_c = nir[s_i, y_i, x_i].astype(np.int64)
    nb_c = nb[y_i, x_i].astype(np.int64)
    hot_c = hot2(blue[s_i, y_i, x_i], red[s_i, y_i, x_i]).astype(np.int64)
    hot_ref = hot2(bb[y_i, x_i], rb[y_i, x_i]).astype(np.int64)
    hazier = n_c * hot_ref - nb_c * hot_c > 2 * rule.haze_dn * nb_c  # k hot_ref - hot > haze
    shade.reshape(-1)[flat[hazier]] = False
    return shade, primary, best


#: Elements (scenes x pixels) of one row strip of :func:`reject`: the strip's int32 HOT, bool
#: masks and uint16 temporaries then stay in the L2 cache (1 MiB per core and more on
#: Lambda's x86 and Graviton hosts; 4 MiB here) instead of streaming (S, h, w) int32 stacks
#: through memory once per operation. Measured in bench/bench_reject.py.
STRIP_ELEMENTS = 1 << 18


def reject(blue: np.ndarray, red: np.ndarray, nir: np.ndarray, use: np.ndarray,
           rule: OutlierRule = DEFAULT_RULE, *, order: Sequence[int] | None = None,
           kernel: str | None = None, threads: int = 1) -> np.ndarray:
    """Observations to reject, bool (S, h, w), from (S, h, w) uint16 reference stacks.

    ``blue``/``red``: for the cloud tests (brighter, whiter = cloud/haze); ``nir``: for the
    shadow test (darker); ``use``: the observations the median would use (uint8/bool);
    ``order``: scene indices in time order (default: stack order). Only used observations are
    ever rejected, never all of a pixel's; see the module docstring for the rule.

    The rule is per pixel, so it runs on row strips of about :data:`STRIP_ELEMENTS` values
    (cache-sized; ``threads`` work on different strips, each median on one thread): the same
    bits as on the whole stack (tests/unit/test_outliers_fast.py holds it to the slower
    whole-stack code it replaced, tests/unit/test_outliers.py to :func:`reference_reject`).
    """
    use = np.asarray(use)
    _check_refs(blue=blue, red=red, nir=nir, use=use)
    out = np.zeros(use.shape, bool)
    if not rule.enabled or not use.any():
        return out
    order = _time_order(order, use.shape[0])
    n, h, w = use.shape
    rows = max(1, min(h, STRIP_ELEMENTS // max(1, n * w)))

    def run(y0: int) -> None:
        part = np.s_[:, y0:y0 + rows]
        used = use[part] != 0 if use.dtype != np.bool_ else np.ascontiguousarray(use[part])
        out[part] = _reject_strip(*(np.ascontiguousarray(a[part]) for a in (blue, red, nir)),
                                  used, rule, order, kernel)

    starts = range(0, h, rows)
    if threads > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(threads, len(starts))) as pool:
            list(pool.map(run, starts))
    else:
        for y0 in starts:
            run(y0)
    return out


def _reject_strip(blue: np.ndarray, red: np.ndarray, nir: np.ndarray, used: np.ndarray,
                  rule: OutlierRule, order: list[int], kernel: str | None) -> np.ndarray:
    """:func:`reject` on contiguous (S, rows, w) strips. Tests on uint16 stacks against
    per-pixel bounds where exact (:func:`_below`); int32 only for HOT."""
    from .median import masked_median

    if not used.any():
        return np.zeros(used.shape, bool)
    # 1. spectral: Fmask's HOT test (:func:`cloud_like`), B - 0.5 R - 0.08 > 0, in DN:
    # 2 B - R > 2 x 800; ``hot`` is computed once here, the haze test below reuses it
    hot = np.multiply(blue, 2, dtype=np.int32)
    hot -= red  # hot2(blue, red)
    cand = hot > 2 * rule.hot_dn
    cand &= used
    surface = persistent(cand, used, order, rule.persistent_run, blue, rule.cloud_floor_dn)
    cand &= ~surface
    if cand.any():
        clear_like = used & ~cand
        c_cl = masked_median(blue, clear_like, kernel=kernel, threads=1).median
        # blue - c_cl > floor, where the pixel has clear-like observations
        cand &= blue > _below(c_cl.astype(np.int32) + rule.cloud_floor_dn)[None]
        cand &= clear_like.any(axis=0)[None]
    # 2. shade: darker than the pixel's brightest-NIR clear-like observation in NIR by more than
    # a quarter (and the NIR floor) while not brighter in blue or red: a shadow dims every band
    # (direct beam gone); real changes that darken the NIR (harvest, senescence, a burn, a
    # flood) brighten the blue or red. Works with two observations, where no MAD exists.
    keep = used & ~cand
    shade, primary, best = _shade_test(blue, red, nir, keep, rule, kernel, 1)
    # haze: HOT (blue - red / 2) is the distance from the clear-sky line in blue-red space, the
    # same for dark and bright clear surfaces and raised by haze (Zhang, Guindon & Cihlar 2002);
    # an observation whose HOT exceeds the pixel's lowest (clear-like, unshaded) by more than
    # ``haze_dn`` is hazy. Works with two observations; steady bright runs are exempt.
    # lowest HOT of the clear-like kept: hot + 65535 >= 0, so a masked max of its complement
    span = 2 * 65535 + 1  # hot2 spans -65535 .. 131070
    low = np.multiply(span - 65535 - hot, keep & ~shade).max(axis=0)
    low = span - 65535 - low  # 131071 where none (nothing kept there: nothing hazy)
    hazy = hot > (low + 2 * rule.haze_dn)[None]
    hazy &= keep
    hazy &= ~surface
    # a hazy date may have been the shade test's reference, sparing a shadow (the
    # hazier-reference guard): the shade test once more on the dates left, where there are
    # hazy ones. It can change only where the reference was hazy (a new one) or a date left
    # passed the test but not its guards (the NIR median and count of fewer dates differ):
    # elsewhere it would shade nothing new.
    left = keep & ~shade & ~hazy
    redo = (best & hazy).any(axis=0) | (primary & left).any(axis=0)
    redo &= hazy.any(axis=0)
    at = np.flatnonzero(redo)
    if at.size:
        _flat_pixels(shade)[:, at] |= _shaded(*(_columns(a, at) for a in (blue, red, nir, left)),
                                              rule, kernel, 1)[:, 0]
    shade |= hazy
    # 3. temporal: robust centre and MAD of what is left, cloud (blue) and shadow (NIR)
    return _temporal(blue, nir, used, cand | shade, surface, rule, kernel)


def _temporal(blue: np.ndarray, nir: np.ndarray, used: np.ndarray, fixed: np.ndarray,
              surface: np.ndarray, rule: OutlierRule, kernel: str | None) -> np.ndarray:
    """Step 3 of :func:`reject`: ``fixed`` (the spectral, shade and haze rejections) and the
    temporal test's, ``rule.passes`` times, never every used observation of a pixel.

    A pass depends on a pixel's kept observations only, so where a pass kept what the one
    before kept, every later pass decides the same: passes after the first run on the pixels
    whose kept set changed (a few percent: 3.9 % of the square in bench/bench_reject.py)."""
    testable = _count(used) >= rule.min_obs
    keep = used & ~fixed
    rejected = _temporal_pass(blue, nir, used, fixed, surface, testable, keep, rule, kernel)
    for _ in range(rule.passes - 1):
        kept = used & ~rejected
        at = np.flatnonzero((kept != keep).any(axis=0))
        if not at.size:
            break
        keep = kept
        sub = [_columns(a, at) for a in (blue, nir, used, fixed, surface, testable, keep)]
        _flat_pixels(rejected)[:, at] = _temporal_pass(*sub, rule, kernel)[:, 0]
    return rejected


def _columns(a: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The pixels ``at`` (flat indices) of a C-contiguous (..., h, w) array as a (..., 1, n)
    one (``np.take`` on the flat pixels: ~2x faster than indexing with rows and columns)."""
    flat = a.reshape(*a.shape[:-2], -1)
    return np.take(flat, at, axis=-1)[..., None, :]


def _flat_pixels(a: np.ndarray) -> np.ndarray:
    """(S, h * w) view of a C-contiguous (S, h, w) array, to write :func:`_columns` back."""
    if not a.flags.c_contiguous:  # a reshape would be a copy: the writes would be lost
        raise InputError("the pixels of a non-contiguous array have no flat view")
    return a.reshape(a.shape[0], -1)


def _temporal_pass(blue: np.ndarray, nir: np.ndarray, used: np.ndarray, fixed: np.ndarray,
                   surface: np.ndarray, testable: np.ndarray, keep: np.ndarray,
                   rule: OutlierRule, kernel: str | None) -> np.ndarray:
    """One pass of :func:`_temporal` with the centres and MADs of ``keep``."""
    c_b, mad_b = _centre_spread(blue, keep, kernel, 1)
    thr_b = np.maximum(mad_b * rule.k_num // rule.k_den, rule.cloud_floor_dn)
    rejected = blue > _below(c_b + thr_b)[None]  # b - c_b > thr_b: cloud
    rejected &= ~surface  # a steady bright run is no cloud
    c_n, mad_n = _centre_spread(nir, keep, kernel, 1)
    thr_n = np.maximum(np.maximum(mad_n * rule.k_num // rule.k_den, rule.shadow_floor_dn),
                       c_n // rule.shadow_rel_den)
    rejected |= nir < _below(c_n - thr_n)[None]  # c_n - nir > thr_n: shadow
    rejected &= used
    rejected &= testable[None]
    rejected |= fixed
    rejected &= np.any(used & ~rejected, axis=0)  # never every used observation
    return rejected


def _reference_runs(idx: list[int], flags: dict[int, bool], bl: dict[int, int],
                    rule: OutlierRule) -> set[int]:
    """:func:`persistent` for one pixel (``idx``: used scenes in time order)."""
    protected: set[int] = set()
    for seq in (idx, idx[::-1]):
        run = []
        for s in seq:
            if not flags[s]:
                break
            run.append(s)
        vals = [bl[s] for s in run]
        steady = not run or max(vals) - min(vals) <= max(rule.cloud_floor_dn, max(vals) // 32)
        if len(run) == len(idx) or (len(run) >= rule.persistent_run and steady):
            protected |= set(run)
    return protected


def _reference_shaded(dates: list[int], bl: dict[int, int], rd: dict[int, int],
                      nr: dict[int, int], rule: OutlierRule,
                      med: Callable[[list[int]], int]) -> set[int]:
    """:func:`_shaded` for one pixel (``dates``: its kept scenes), with Python integers."""
    best = max(dates, key=lambda s: (nr[s], -s))  # lowest index of the max, like argmax
    cr = med([nr[s] for s in dates])
    hot = {s: 2 * bl[s] - rd[s] for s in dates}
    floor, den = rule.shadow_floor_dn, rule.shadow_rel_den
    return {s for s in dates if nr[best] - nr[s] > max(floor, nr[best] // den)
            and (len(dates) < rule.min_obs or cr - nr[s] > max(floor, cr // den))
            and bl[s] <= bl[best] and rd[s] <= rd[best]
            and nr[s] * hot[best] - nr[best] * hot[s] <= 2 * rule.haze_dn * nr[best]}


def reference_reject(blue: np.ndarray, red: np.ndarray, nir: np.ndarray, use: np.ndarray,
                     rule: OutlierRule = DEFAULT_RULE,
                     order: Sequence[int] | None = None) -> np.ndarray:
    """Slow, obviously-correct :func:`reject` for tests: per pixel with Python integers."""

    def med(values: list[int]) -> int:
        v = sorted(values)
        m = len(v) // 2
        if len(v) % 2:
            return v[m]
        total = v[m - 1] + v[m]
        half = total // 2
        return half + 1 if total % 2 and half % 2 else half

    used = np.asarray(use).astype(bool)
    out = np.zeros(used.shape, bool)
    if not rule.enabled:
        return out
    n, h, w = used.shape
    order = _time_order(order, n)
    for y in range(h):
        for x in range(w):
            idx = [s for s in order if used[s, y, x]]  # time order
            if not idx:
                continue
            bl = {s: int(blue[s, y, x]) for s in idx}
            nr = {s: int(nir[s, y, x]) for s in idx}
            flags = {s: 2 * bl[s] - int(red[s, y, x]) > 2 * rule.hot_dn for s in idx}
            protected = _reference_runs(idx, flags, bl, rule)
            clear_like = [bl[s] for s in idx if not flags[s]]
            cand = set()
            if clear_like:
                c = med(clear_like)
                cand = {s for s in idx if flags[s] and s not in protected
                        and bl[s] - c > rule.cloud_floor_dn}
            rest = [s for s in idx if s not in cand]
            rd = {s: int(red[s, y, x]) for s in idx}
            hot = {s: 2 * bl[s] - rd[s] for s in idx}
            shade = _reference_shaded(rest, bl, rd, nr, rule, med)
            low = min(hot[s] for s in rest if s not in shade)
            hazy = {s for s in rest if hot[s] - low > 2 * rule.haze_dn and s not in protected}
            if hazy:
                shade |= _reference_shaded([s for s in rest if s not in shade and s not in hazy],
                                           bl, rd, nr, rule, med)
            shade |= hazy
            rej = cand | shade
            keep = [s for s in idx if s not in rej]
            for _ in range(rule.passes):
                cb = med([bl[s] for s in keep])
                tb = max(med([abs(bl[s] - cb) for s in keep]) * rule.k_num // rule.k_den,
                         rule.cloud_floor_dn)
                cn = med([nr[s] for s in keep])
                tn = max(med([abs(nr[s] - cn) for s in keep]) * rule.k_num // rule.k_den,
                         rule.shadow_floor_dn, cn // rule.shadow_rel_den)
                rej = cand | shade
                if len(idx) >= rule.min_obs:
                    rej |= {s for s in idx if (bl[s] - cb > tb and s not in protected)
                            or cn - nr[s] > tn}
                if len(rej) == len(idx):
                    rej = set()
                keep = [s for s in idx if s not in rej]
            for s in rej:
                out[s, y, x] = True
    return out


# --- on a band window ------------------------------------------------------------------------
def decision_window(band: Band, window: Window) -> Window:
    """The 20 m window covering a band window (the grid the decision is made on)."""
    return window.scaled(band.resolution / DECISION_RESOLUTION)


def to_band_grid(reject20: np.ndarray, band: Band, window: Window) -> np.ndarray:
    """Carry a (S, h20, w20) decision made on :func:`decision_window` to the band window."""
    res = band.resolution
    w20 = decision_window(band, window)
    if reject20.shape[1:] != w20.shape:
        raise InputError(f"decision of shape {reject20.shape[1:]} is not the 20 m footprint "
                         f"{w20.shape} of {band.key} window {window.key}")
    if res == DECISION_RESOLUTION:
        return reject20
    if res == 10:
        from .composite import scratch

        s_n, h20, w20_ = reject20.shape  # a median batch reuses the (S, 2h, 2w) array
        up = mask.repeat2(reject20, out=scratch("decision", (s_n, 2 * h20, 2 * w20_), bool))
        r0, c0 = window.row_off - 2 * w20.row_off, window.col_off - 2 * w20.col_off
        return up[:, r0:r0 + window.height, c0:c0 + window.width]
    if res == 60:
        return mask.block_reduce(reject20, 3, np.logical_or)
    raise InputError(f"band resolution must be 10, 20 or 60 m, got {res!r}")


def mean_on_decision_grid(stack10: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A 10 m band stack (S, 2h, 2w) on the 20 m grid (S, h, w): each 20 m pixel the rounded-down
    integer mean of its 2 x 2 block; 0 (nodata) where any of the four is 0. ``stack10`` must
    start on the 20 m grid (even row and column offsets); it is not modified. ``out``: the
    (S, h, w) uint16 array (or view) to write into. Scene by scene, so the temporaries are one
    scene's (a uint32 sum of a whole 10 m strip would be twice the stack's 20 m size)."""
    s_n, h2, w2 = stack10.shape
    if h2 % 2 or w2 % 2:
        raise InputError(f"a 10 m stack of {h2} x {w2} px is not whole 20 m pixels")
    if out is None:
        out = np.empty((s_n, h2 // 2, w2 // 2), np.uint16)
    elif out.shape != (s_n, h2 // 2, w2 // 2) or out.dtype != np.uint16:
        raise InputError(f"mean of shape {out.shape} {out.dtype} for a stack of "
                         f"{stack10.shape}")
    # row pairs first (each a contiguous row), then column pairs: 0.39 -> 0.32 s for 16 x 3072²
    # against the four pixels as views strided in both axes (themselves several times faster
    # than reducing a (h, 2, w, 2) reshape over axes (1, 3)); in strips of MEAN_STRIP output
    # rows, whose temporaries (~0.8 MB) stay in the cache and are made once per call: whole-
    # scene ones (42 MB) were fresh pages for every call of the decide step's per-scene means
    h, w = h2 // 2, w2 // 2
    from .composite import _states_kernel

    kernel = _states_kernel(stack10)
    if kernel is not None and stack10.dtype == np.uint16 and all(
            out[s].flags.c_contiguous for s in range(s_n)):
        # one pass, compiled (cloudfree._median.mean2x2): 0.058 -> 0.016 s for 16 x 2048² px
        for s in range(s_n):
            kernel.mean2x2(stack10[s], out[s], h, w)
        return out
    k = min(MEAN_STRIP, h)
    rows = np.empty((k, w2), np.uint32)
    total = np.empty((k, w), np.uint32)
    low_rows = np.empty((k, w2), np.uint16)
    low = np.empty((k, w), np.uint16)
    for s in range(s_n):
        for r0 in range(0, h, k):
            n = min(k, h - r0)
            x, o = stack10[s, 2 * r0:2 * (r0 + n)], out[s, r0:r0 + n]
            np.add(x[0::2], x[1::2], out=rows[:n], dtype=np.uint32)
            np.add(rows[:n, 0::2], rows[:n, 1::2], out=total[:n])
            total[:n] >>= 2  # // 4
            np.copyto(o, total[:n], casting="unsafe")  # < 65536: the mean of four uint16
            np.minimum(x[0::2], x[1::2], out=low_rows[:n])
            np.minimum(low_rows[:n, 0::2], low_rows[:n, 1::2], out=low[:n])
            o[low[:n] == 0] = 0
    return out


#: Output rows per strip of :func:`mean_on_decision_grid`.
MEAN_STRIP = 64


def _mean_on_decision_grid(hrefs: Sequence[str], w20: Window, threads: int) -> np.ndarray:
    """A 10 m band read under a 20 m window, on the 20 m grid (:func:`mean_on_decision_grid`)."""
    return mean_on_decision_grid(read_stack(hrefs, w20.scaled(2), threads=threads))


def decision_states(scenes: Sequence[dict], w20: Window, mask_classes: Iterable[int] | None,
                    dilate_nodata: int, threads: int) -> np.ndarray:
    """The scenes' states (S, h, w) on a 20 m window as the decision sees them: the SCL with the
    nodata fringe of the finest band (``dilate_nodata`` 10 m pixels) on the 20 m grid, so every
    observation any band uses is tested (testing one a band drops costs nothing)."""
    from .composite import _scene_hrefs, build_states, scratch

    fringe20 = math.ceil(dilate_nodata * 10 / DECISION_RESOLUTION)
    return build_states(_scene_hrefs(scenes, "scl"), get_band(SHADOW_BAND), w20,
                        mask_classes, fringe20, threads=threads,
                        out=scratch("decide-states", (len(scenes), *w20.shape), np.uint8))


def states_from_10m(states10: np.ndarray, dilate_nodata: int) -> np.ndarray | None:
    """:func:`decision_states` taken from states already built on the 10 m grid
    (``composite.build_states`` of a 10 m band window starting on the 20 m grid, with the same
    ``dilate_nodata``), or None when they cannot give the same bits.

    A 10 m state is its 20 m SCL pixel's state repeated 2 x 2, then the nodata fringe grown by
    ``dilate_nodata`` 10 m pixels (``mask.scene_state``, a square dilation). With an even
    ``dilate_nodata`` = 2k, the 10 m pixel (2i, 2j) is in the fringe exactly when a class-0
    20 m pixel lies within k rows and columns of (i, j): the decision's own fringe of
    ``ceil(2k * 10 / 20)`` = k 20 m pixels; the SCL window read (the band window grown by 2k
    10 m pixels, clipped at the tile) is the 20 m window grown by k. So every other pixel is
    the decision's state, bit for bit (tests/unit/test_onebox.py checks it against
    :func:`decision_states`). An odd ``dilate_nodata`` has no such 20 m equivalent: None.
    """
    if dilate_nodata % 2 or states10.shape[1] % 2 or states10.shape[2] % 2:
        return None
    return np.ascontiguousarray(states10[:, ::2, ::2])


def decide_references(scenes: Sequence[dict], states: np.ndarray, refs: np.ndarray,
                      rule: OutlierRule, *, threads: int = DEFAULT_THREADS,
                      kernel: str | None = None) -> np.ndarray:
    """The decision (S, h, w) bool from the reference planes already on the 20 m grid.

    ``states``: :func:`decision_states` of the window; ``refs``: (S, 3, h, w) uint16, the
    blue and red 2 x 2 means (:func:`mean_on_decision_grid`) and nir08, as read (no offset
    subtracted). Both are modified in place (a 0 reference DN masks the observation, offsets
    are subtracted, granules fused: what ``composite.composite_window`` does to a band), so
    views of larger arrays may be passed for disjoint windows. Made of arrays read by the
    caller (:func:`_decide` reads them; ``onebox.composite_bands`` reuses the bands' own reads).
    """
    from .composite import _offsets, fuse_observations, observation_groups, snow_fallback

    if states.shape != (len(scenes), *refs.shape[2:]) or refs.shape[:2] != (len(scenes), 3):
        raise InputError(f"states {states.shape} and references {refs.shape} do not match "
                         f"{len(scenes)} scenes")
    if states.max() < mask.SNOW:  # nothing usable: nothing to test
        return np.zeros(states.shape, bool)
    states[~refs.all(axis=1) & (states > mask.MASKED)] = mask.MASKED
    offsets = _offsets(scenes)
    if np.any(offsets):
        from .harmonize import apply_offset

        usable = states >= mask.SNOW
        for c in range(3):  # in place, scene plane by scene plane (no copy of the band)
            apply_offset(refs[:, c], offsets, usable)
    fuse_observations(refs, states, observation_groups(scenes))
    use, _ = snow_fallback(states, in_place=True)
    order = sorted(range(len(scenes)), key=lambda i: (str(scenes[i].get("datetime") or ""),
                                                      str(scenes[i].get("id") or ""), i))
    return reject(*(refs[:, c] for c in range(3)), use, rule,  # reject copies its strips
                  order=order, kernel=kernel, threads=min(threads, 2))


@dataclass
class _DecideInputs:
    """What one 20 m window's decision reads (:func:`_decide_inputs`): the states over the
    window; over the box of its usable pixels, the three reference planes."""

    states: np.ndarray
    box: mask.UsableBox | None = None
    refs: np.ndarray | None = None


def _decide_inputs(scenes: Sequence[dict], w20: Window, mask_classes: Iterable[int] | None,
                   dilate_nodata: int, threads: int) -> _DecideInputs:
    """Read the SCL, then the reference bands over the usable box only: a box cropping the
    window (a swath edge) is read and tested alone (exact: the test is per pixel; nothing
    outside it is usable, so nothing there is rejected); no usable pixel, nothing read."""
    states = decision_states(scenes, w20, mask_classes, dilate_nodata, threads)
    box = mask.usable_box(states.max(axis=0))
    if box is None:
        return _DecideInputs(states)
    return _DecideInputs(states, box, _references(scenes, w20.sub(box.bounds) if box.crops
                                                  else w20, threads))


def _decide_from(scenes: Sequence[dict], got: _DecideInputs, rule: OutlierRule, threads: int,
                 kernel: str | None) -> np.ndarray:
    """The decision (S, h, w) bool on the window ``got`` was read for."""
    if got.box is None:  # nothing usable: nothing to test
        return np.zeros(got.states.shape, bool)
    if got.box.crops:
        return got.box.place(decide_references(scenes, got.box.cut(got.states), got.refs,
                                               rule, threads=threads, kernel=kernel))
    return decide_references(scenes, got.states, got.refs, rule, threads=threads, kernel=kernel)


def _decide(scenes: Sequence[dict], w20: Window, rule: OutlierRule,
            mask_classes: Iterable[int] | None, dilate_nodata: int, threads: int,
            kernel: str | None) -> np.ndarray:
    """The decision (S, h, w) bool on one 20 m window (see :func:`band_window_rejection`):
    reads the SCL and the reference bands, then :func:`decide_references`."""
    return _decide_from(scenes, _decide_inputs(scenes, w20, mask_classes, dilate_nodata,
                                               threads), rule, threads, kernel)


def _references(scenes: Sequence[dict], w20: Window, threads: int) -> np.ndarray:
    """The reference planes (S, 3, h, w) uint16 of a 20 m window, as read: blue and red as 2 x 2
    means (:func:`mean_on_decision_grid`), nir08."""
    from .composite import _scene_hrefs, scratch, scratch_slot
    from .windows import read_each_into

    # inside a decide invocation (composite.reused_buffers) the squares after the first reuse
    # these arrays: a fresh 226 MB refs array costs its first-touch page faults (~1.8 ms per MB
    # on this VM, about half a second per square)
    refs = scratch("decide-refs", (len(scenes), 3, w20.height, w20.width), np.uint16)
    w10 = w20.scaled(2)
    with scratch_slot(-1):  # the reader's own: one set whichever slot the refs fill
        ten = scratch("decide-10m", (min(threads, len(scenes)), *w10.shape), np.uint16)
    for c, key in enumerate((CLOUD_BAND, WHITE_BAND)):
        # each scene reduced on its reader thread as soon as it is decoded: a few 10 m
        # buffers instead of the whole 10 m stack (302 MB for 16 scenes), the means on both
        # cores and from the cache (before: 0.25 s per band and square on one core)
        read_each_into(_scene_hrefs(scenes, key), w10,
                       lambda i, px, c=c: mean_on_decision_grid(px[None], out=refs[i:i + 1, c]),
                       ten, threads=threads)
    read_stack(_scene_hrefs(scenes, SHADOW_BAND), w20, threads=threads, out=refs[:, 2])
    return refs


# --- one decision per place, shared by the bands ------------------------------------------------
#: Squares (20 m px) of the shared decision, on a grid anchored at the tile's origin: whole 60 m
#: pixels (a multiple of 3), and the 20 m footprint of a 3072 px 10 m median window. Blue and red
#: are read at 10 m (3072 px: 3 of Earth Search's 1024 px blocks, DESIGN.md) and the SCL at 20 m
#: (3 of its 512 px blocks) block-aligned; only nir08 (20 m, 1024 px blocks) decodes 1.33x per
#: axis. The 768 px squares used before decoded whole blocks they did not need: 1.78x the area
#: for blue, red and SCL, 4x for nir08, and neighbours decoded the shared blocks again (each read
#: opens the file anew: no block cache). Measured on the full-size synthetic scenes (16 scenes,
#: 2 vCPUs): the same area took 13.8 s wall / 22.5 CPU-s in four 768 px squares and 7.4 s /
#: 11.4 CPU-s in one 1536 px square; peak RSS 757 MB for two 1536 px squares (359 MB for 768).
CACHE_CHUNK = 1536
#: Bumped whenever the rule's code changes what it decides (old cached decisions then unused).
DECISION_VERSION = 2  # 2: the shade test's guards (NIR median, hazier reference)


def decision_key(scenes: Sequence[dict], rule: OutlierRule, mask_classes: Iterable[int] | None,
                 dilate_nodata: int) -> str:
    """What a decision depends on, hashed: the scenes (ids, dates, granule groups, offsets, the
    hrefs read), the rule, the mask classes and the nodata fringe. Bands whose scene sets differ
    (a scene-band excluded) get different keys, so never each other's decisions."""
    doc = {
        "version": DECISION_VERSION, "rule": asdict(rule), "dilate": int(dilate_nodata),
        "square": CACHE_CHUNK,  # squares of another size are other files
        "classes": None if mask_classes is None else sorted(int(c) for c in mask_classes),
        "scenes": [[s.get("id"), s.get("datetime"), s.get("observation"),
                    (s.get("harmonization") or {}).get("offset", 0),
                    [(s.get("assets") or {}).get(k) for k in
                     ("scl", CLOUD_BAND, WHITE_BAND, SHADOW_BAND)]] for s in scenes],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:20]


def pack_decision(rejected: np.ndarray) -> bytes:
    """(S, h, w) bool -> bytes: the shape, then the bits, zlib-compressed."""
    head = np.asarray(rejected.shape, dtype="<u4").tobytes()
    return zlib.compress(head + np.packbits(rejected, axis=None).tobytes(), 1)


def unpack_decision(data: bytes, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The decision packed by :func:`pack_decision`, or None when it is not of ``shape`` or
    damaged (the caller computes it again)."""
    try:
        raw = zlib.decompress(data)
    except zlib.error:
        return None
    if len(raw) < 12 or tuple(int(v) for v in np.frombuffer(raw[:12], "<u4")) != tuple(shape):
        return None
    n = int(np.prod(shape))
    bits = np.frombuffer(raw[12:], np.uint8)
    if bits.size != (n + 7) // 8:
        return None
    return np.unpackbits(bits, count=n).reshape(shape).view(bool)  # 0/1 bytes: no copy


def _stored(uri: str, shape: tuple[int, int, int]) -> np.ndarray | None:
    """The decision stored at ``uri`` when it is there, of ``shape`` and sound; else None."""
    from . import storage

    data = storage.read_if_exists(uri)
    return None if data is None else unpack_decision(data, shape)


def _shared(uri: str, shape: tuple[int, int, int], compute: Callable[[], np.ndarray]
            ) -> np.ndarray:
    """The decision stored at ``uri``, else computed and stored. Concurrent invocations may
    both compute one square: the rule is deterministic, so they write the same bytes."""
    from . import storage

    got = _stored(uri, shape)
    if got is not None:
        return got
    rejected = compute()
    storage.write_bytes(uri, pack_decision(rejected), "application/octet-stream")
    return rejected


def decision_uri(cache: str, key: str, square: Window) -> str:
    """Where the decision of one square (its 20 m origin) is stored under ``cache``."""
    return f"{cache.rstrip('/')}/{key}/{square.row_off}_{square.col_off}.bits"


def decision_squares(height20: int, width20: int | None = None) -> list[Window]:
    """The squares of the shared decision covering a 20 m grid, row-major (the last row and
    column clipped at the edge): the units the *decide* step computes, one file each."""
    width20 = height20 if width20 is None else width20
    k = CACHE_CHUNK
    return [Window(r, c, min(k, height20 - r), min(k, width20 - c))
            for r in range(0, height20, k) for c in range(0, width20, k)]


def decide_squares(scenes: Sequence[dict], squares: Iterable[Window | dict], cache: str, *,
                   rule: OutlierRule | str | bool | None = DEFAULT_RULE,
                   mask_classes: Iterable[int] | None = None, dilate_nodata: int = 0,
                   threads: int = DEFAULT_THREADS, kernel: str | None = None) -> dict:
    """Compute and store the shared decision of ``squares`` (the *decide* step, before the
    bands' medians): each square once per tile, instead of once per band that reaches it first.
    Squares already stored (a rerun) are skipped. Returns counts: squares, computed, skipped.

    The files are exactly those :func:`band_window_rejection` reads and would otherwise write
    itself (same key, same squares), so a band finding a square missing (a decide invocation
    lost) still computes it: this step saves work, it never changes a byte.
    """
    rule = parse_rule(rule)
    squares = [Window.from_dict(s) for s in squares]
    if not rule.enabled or not squares:
        return {"squares": len(squares), "computed": 0, "skipped": len(squares)}
    mask_classes = None if mask_classes is None else tuple(mask_classes)
    key = decision_key(scenes, rule, mask_classes, dilate_nodata)
    from . import storage
    from .composite import _ReadAhead, reused_buffers

    todo = [sq for sq in squares  # a rerun: what is stored (and sound) is not read again
            if _stored(decision_uri(cache, key, sq), (len(scenes), sq.height, sq.width)) is None]
    # each next square's SCL and reference bands are read while this one is decided (the
    # test runs on 2 threads of numpy; the reads, on the reader pool): two sets of states and
    # references, used in turn (composite._ReadAhead)
    def read(square: Window) -> _DecideInputs:
        return _decide_inputs(scenes, square, mask_classes, dilate_nodata, threads)

    # one set of states and reference arrays per slot for the batch's squares
    with reused_buffers(), _ReadAhead() as ahead:
        for square, got in ahead.pipeline(read, todo):
            rejected = _decide_from(scenes, got.result(), rule, threads, kernel)
            storage.write_bytes(decision_uri(cache, key, square), pack_decision(rejected),
                                "application/octet-stream")
    return {"squares": len(squares), "computed": len(todo),
            "skipped": len(squares) - len(todo)}


@functools.lru_cache(maxsize=64)
def _scl_shape(href: str) -> tuple[int, int]:
    """(height, width) of an SCL raster: the tile on the 20 m grid (one header read)."""
    import rasterio

    from . import storage

    with storage.gdal_env(), rasterio.open(href) as src:
        return src.height, src.width


def _shared_rejection(scenes: Sequence[dict], band: Band, window: Window, rule: OutlierRule,
                      cache: str, mask_classes: Iterable[int] | None, dilate_nodata: int,
                      threads: int, kernel: str | None) -> np.ndarray:
    """:func:`band_window_rejection` from the shared squares under ``cache`` (see there)."""
    from .composite import scratch

    h20, w20_ = _scl_shape(str((scenes[0].get("assets") or {}).get("scl")))  # 5490 x 5490
    key = decision_key(scenes, rule, mask_classes, dilate_nodata)
    w20 = decision_window(band, window)
    shape = (len(scenes), window.height, window.width)
    if band.resolution == 60 and (h20 % 3 or w20_ % 3):
        out = np.zeros(shape, bool)  # "odd" squares below may leave pixels unset
    else:  # the squares tile the grid: every pixel is set below; a median batch reuses it
        out = scratch("rejection", shape, bool)
    for chunk20 in decision_squares(h20, w20_):  # the squares the decide step stores
        if (chunk20.row_off >= w20.row_off + w20.height or chunk20.col_off >= w20.col_off
                + w20.width or chunk20.row_off + chunk20.height <= w20.row_off
                or chunk20.col_off + chunk20.width <= w20.col_off):
            continue
        odd = band.resolution == 60 and (chunk20.height % 3 or chunk20.width % 3)
        if odd:  # an SCL not a whole number of 60 m pixels (never on the 5490 px grid)
            chunk20 = Window(chunk20.row_off, chunk20.col_off, chunk20.height // 3 * 3,
                             chunk20.width // 3 * 3)
        on_band = chunk20.scaled(DECISION_RESOLUTION / band.resolution)
        r0 = max(window.row_off, on_band.row_off)
        c0 = max(window.col_off, on_band.col_off)
        r1 = min(window.row_off + window.height, on_band.row_off + on_band.height)
        c1 = min(window.col_off + window.width, on_band.col_off + on_band.width)
        if r1 <= r0 or c1 <= c0:
            continue

        def decide(c: Window = chunk20) -> np.ndarray:
            return _decide(scenes, c, rule, mask_classes, dilate_nodata, threads, kernel)

        rej20 = decide() if odd else _shared(decision_uri(cache, key, chunk20),
                                             (len(scenes), chunk20.height, chunk20.width),
                                             decide)
        if band.resolution == 10 and not (r0 % 2 or c0 % 2 or r1 % 2 or c1 % 2):
            # straight into the window's part (no (S, 2h, 2w) copy of the whole square)
            mask.repeat2(rej20[:, r0 // 2 - chunk20.row_off:r1 // 2 - chunk20.row_off,
                               c0 // 2 - chunk20.col_off:c1 // 2 - chunk20.col_off],
                         out=out[:, r0 - window.row_off:r1 - window.row_off,
                                 c0 - window.col_off:c1 - window.col_off])
            continue
        part = to_band_grid(rej20, band, on_band)
        out[:, r0 - window.row_off:r1 - window.row_off,
            c0 - window.col_off:c1 - window.col_off] = \
            part[:, r0 - on_band.row_off:r1 - on_band.row_off,
                 c0 - on_band.col_off:c1 - on_band.col_off]
    return out


def band_window_rejection(scenes: Sequence[dict], band: Band | str, window: Window, *,
                          rule: OutlierRule = DEFAULT_RULE,
                          mask_classes: Iterable[int] | None = None, dilate_nodata: int = 0,
                          threads: int = DEFAULT_THREADS, kernel: str | None = None,
                          chunk: int = DECISION_CHUNK,
                          cache: str | None = None) -> np.ndarray | None:
    """The outlier decision (S, h, w) bool on a band window, or None when the rule is off.

    Reads the SCL and the reference bands under the window's 20 m footprint, applies the same
    masking, harmonization, fusion and snow fallback as ``composite.composite_window`` and runs
    :func:`reject` there; then carries the decision to the band grid (:func:`to_band_grid`).
    The footprint is processed in squares of ``chunk`` 20 m pixels (for 60 m bands rounded
    down to a multiple of 3, so chunks hold whole 60 m pixels): memory stays bounded whatever
    the band's resolution (a 60 m window's footprint is 9 times its pixels, its blue 36
    times). The test is per pixel and the states are read with their margin, so the result
    does not depend on ``chunk``.

    ``cache`` (a folder or S3 prefix, e.g. under the tile's work prefix): the decision is made
    once per square of ``CACHE_CHUNK`` 20 m pixels on a grid anchored at the tile origin and
    stored there (:func:`decision_key` names what it depends on); every band window, of any
    band and resolution, takes its part from the stored squares. The 13 outputs of a tile then
    read the three reference bands about once, instead of once per band. Same result either way
    (the test is per pixel).
    """
    rule = parse_rule(rule)
    if not rule.enabled:
        return None
    band = get_band(band) if isinstance(band, str) else band
    if cache:
        return _shared_rejection(scenes, band, Window.from_dict(window), rule, cache,
                                 mask_classes, dilate_nodata, threads, kernel)
    if band.resolution == 60:
        chunk -= chunk % 3
    if chunk < 3:
        raise ConfigError(f"decision chunk must be at least 3 pixels, got {chunk}")
    w20 = decision_window(band, window)
    out = np.zeros((len(scenes), window.height, window.width), bool)
    f = band.resolution / DECISION_RESOLUTION  # band pixel -> 20 m pixels
    for r in range(0, w20.height, chunk):
        for c in range(0, w20.width, chunk):
            sub20 = Window(w20.row_off + r, w20.col_off + c, min(chunk, w20.height - r),
                           min(chunk, w20.width - c))
            # the band pixels inside this chunk, clipped to the window
            r0 = max(window.row_off, math.ceil(sub20.row_off / f - 1e-9))
            c0 = max(window.col_off, math.ceil(sub20.col_off / f - 1e-9))
            r1 = min(window.row_off + window.height,
                     math.ceil((sub20.row_off + sub20.height) / f - 1e-9))
            c1 = min(window.col_off + window.width,
                     math.ceil((sub20.col_off + sub20.width) / f - 1e-9))
            if r1 <= r0 or c1 <= c0:
                continue
            sub_band = Window(r0, c0, r1 - r0, c1 - c0)
            sub20 = decision_window(band, sub_band)
            rej20 = _decide(scenes, sub20, rule, mask_classes, dilate_nodata, threads, kernel)
            out[:, r0 - window.row_off:r1 - window.row_off,
                c0 - window.col_off:c1 - window.col_off] = to_band_grid(rej20, band, sub_band)
    return out
