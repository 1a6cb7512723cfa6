"""A frozen copy of ``cloudfree.outliers.reject`` as of commit e4d1d4a (before the speed-up of
the decide step), kept verbatim (names prefixed, docstrings kept) so tests and
``bench/bench_reject.py`` can prove the fast :func:`cloudfree.outliers.reject` bit-identical to
it and time both in one run. Never edit the rule here: it is the yardstick.

Also :func:`realistic_stack`: (S, h, w) reference stacks like the decide step's (clear surfaces
with seasonal change, SCL-masked observations, missed clouds, shadows, haze, bright surfaces).
"""
# ruff: noqa: E501

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cloudfree.errors import InputError
from cloudfree.median import masked_median
from cloudfree.outliers import DEFAULT_RULE, OutlierRule


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


def hot2(blue: np.ndarray, red: np.ndarray) -> np.ndarray:
    """``2 x HOT`` in DN, exact in int32: ``2 blue - red`` (HOT = blue - red / 2, Zhang et al.
    2002); Fmask's HOT test and the haze test compare it with twice their DN thresholds."""
    return 2 * np.asarray(blue).astype(np.int32) - np.asarray(red).astype(np.int32)


def _absdiff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| of uint16 arrays, in uint16 (exact)."""
    return np.maximum(a, b) - np.minimum(a, b)


def _centre_spread(stack: np.ndarray, keep: np.ndarray, kernel: str | None,
                   threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(median, MAD) per pixel of the kept observations, int32 (h, w)."""
    centre = masked_median(stack, keep, kernel=kernel, threads=threads).median
    mad = masked_median(_absdiff(stack, centre[None]), keep, kernel=kernel,
                        threads=threads).median
    return centre.astype(np.int32), mad.astype(np.int32)


def _end_run(cand: np.ndarray, used: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """(S, h, w): the cloud-like observations before the first used clear-like one, in
    ``order`` (unused observations are skipped)."""
    open_ = np.ones(used.shape[1:], bool)
    members = np.zeros(used.shape, bool)
    for s in order:
        members[s] = open_ & used[s] & cand[s]
        open_ &= ~(used[s] & ~cand[s])
    return members


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
    order = list(order)
    n_used = np.count_nonzero(used, axis=0)
    out = np.zeros(used.shape, bool)
    for members in (_end_run(cand, used, order), _end_run(cand, used, order[::-1])):
        n = np.count_nonzero(members, axis=0)
        ok = (n >= min_run) | ((n == n_used) & (n > 0))
        if blue is not None:
            hi = np.where(members, blue, 0).max(axis=0).astype(np.int32)
            lo = np.where(members, blue, 65535).min(axis=0).astype(np.int32)
            ok &= (hi - lo <= np.maximum(tolerance_dn, hi // 32)) | (n == n_used)
        out |= members & ok[None]
    return out


def _shaded(blue: np.ndarray, red: np.ndarray, nir: np.ndarray, keep: np.ndarray,
            rule: OutlierRule, kernel: str | None = None, threads: int = 1) -> np.ndarray:
    """(S, h, w): kept observations that look like the pixel's brightest-NIR kept one in shade
    (see :func:`reject`, step 2); never that one itself.

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
      observation's by more than ``haze_dn``, the reference is the hazy one (a cloud).

    Without them, with 8 dates, the cloud was kept while clear dates were rejected at 20 %
    (29RKH medium cloud), 25 % (29RKH cirrus) and 14 % (29UNU cirrus) of those pixels; with
    them (and :func:`reject`'s second pass) 0.0 %, 1.4 % and 2.1 % (with 2 dates, the second
    guard alone: 31 -> 2.7 % for the 29RKH medium cloud).
    """
    n32 = nir.astype(np.int32)
    best = np.argmax(np.where(keep, n32, -1), axis=0)[None]  # (1, h, w) scene index
    nb = np.take_along_axis(n32, best, axis=0)
    bb = np.take_along_axis(blue, best, axis=0)
    rb = np.take_along_axis(red, best, axis=0)
    floor = rule.shadow_floor_dn
    shade = keep & (nb - n32 > np.maximum(floor, nb // rule.shadow_rel_den)) & (
        blue <= bb) & (red <= rb)
    if not shade.any():
        return shade
    # the guards, on the few candidates only (shadows, and clear dates beside a bright one)
    s_i, y_i, x_i = np.nonzero(shade)
    n_c = n32[s_i, y_i, x_i].astype(np.int64)
    nb_c = nb[0, y_i, x_i].astype(np.int64)
    hot_c = hot2(blue[s_i, y_i, x_i], red[s_i, y_i, x_i]).astype(np.int64)
    hot_ref = hot2(bb[0, y_i, x_i], rb[0, y_i, x_i]).astype(np.int64)
    ok = n_c * hot_ref - nb_c * hot_c <= 2 * rule.haze_dn * nb_c  # k hot_ref - hot <= haze
    pix = np.zeros(shade.shape[1:], bool)
    pix[y_i, x_i] = True
    ys, xs = np.nonzero(pix & (np.count_nonzero(keep, axis=0) >= rule.min_obs))  # robust
    if ys.size:
        centre = np.zeros(shade.shape[1:], np.int64)
        centre[ys, xs] = masked_median(np.ascontiguousarray(nir[:, ys, xs][:, None]),
                                       np.ascontiguousarray(keep[:, ys, xs][:, None]),
                                       kernel=kernel, threads=threads).median[0]
        robust = np.zeros(shade.shape[1:], bool)
        robust[ys, xs] = True
        c_c = centre[y_i, x_i]
        ok &= ~robust[y_i, x_i] | (c_c - n_c > np.maximum(floor, c_c // rule.shadow_rel_den))
    shade[s_i[~ok], y_i[~ok], x_i[~ok]] = False
    return shade


def frozen_reject(blue: np.ndarray, red: np.ndarray, nir: np.ndarray, use: np.ndarray,
           rule: OutlierRule = DEFAULT_RULE, *, order: Sequence[int] | None = None,
           kernel: str | None = None, threads: int = 1) -> np.ndarray:
    """Observations to reject, bool (S, h, w), from (S, h, w) uint16 reference stacks.

    ``blue``/``red``: for the cloud tests (brighter, whiter = cloud/haze); ``nir``: for the
    shadow test (darker); ``use``: the observations the median would use (uint8/bool);
    ``order``: scene indices in time order (default: stack order). Only used observations are
    ever rejected, never all of a pixel's; see the module docstring for the rule.
    """
    _check_refs(blue=blue, red=red, nir=nir, use=np.asarray(use))
    used = np.asarray(use).astype(bool)
    out = np.zeros(used.shape, bool)
    if not rule.enabled or not used.any():
        return out
    order = _time_order(order, used.shape[0])
    # 1. spectral: Fmask's HOT test (:func:`cloud_like`), B - 0.5 R - 0.08 > 0, in DN:
    # 2 B - R > 2 x 800; ``hot`` is computed once here, the haze test below reuses it
    b32 = blue.astype(np.int32)
    hot = 2 * b32 - red.astype(np.int32)  # hot2(blue, red)
    cand = used & (hot > 2 * rule.hot_dn)
    surface = persistent(cand, used, order, rule.persistent_run, blue, rule.cloud_floor_dn)
    cand &= ~surface
    clear_like = used & ~cand
    has_clear = clear_like.any(axis=0)
    if cand.any():
        c_cl = masked_median(blue, clear_like, kernel=kernel, threads=threads).median
        cand &= (b32 - c_cl.astype(np.int32) > rule.cloud_floor_dn) & has_clear
    # 2. shade: darker than the pixel's brightest-NIR clear-like observation in NIR by more than
    # a quarter (and the NIR floor) while not brighter in blue or red: a shadow dims every band
    # (direct beam gone); real changes that darken the NIR (harvest, senescence, a burn, a
    # flood) brighten the blue or red. Works with two observations, where no MAD exists.
    keep = used & ~cand
    shade = _shaded(blue, red, nir, keep, rule, kernel, threads)
    # haze: HOT (blue - red / 2) is the distance from the clear-sky line in blue-red space, the
    # same for dark and bright clear surfaces and raised by haze (Zhang, Guindon & Cihlar 2002);
    # an observation whose HOT exceeds the pixel's lowest (clear-like, unshaded) by more than
    # ``haze_dn`` is hazy. Works with two observations; steady bright runs are exempt.
    clear_keep = keep & ~shade
    low = np.where(clear_keep, hot, np.iinfo(np.int32).max).min(axis=0)
    hazy = keep & (hot - low > 2 * rule.haze_dn) & ~surface
    ys, xs = np.nonzero(hazy.any(axis=0))
    if ys.size:  # a hazy date may have been the shade test's reference, sparing a shadow
        # (the hazier-reference guard): the shade test once more on the dates left there
        def cols(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a[:, ys, xs][:, None])

        left = keep & ~shade & ~hazy
        shade[:, ys, xs] |= _shaded(cols(blue), cols(red), cols(nir), cols(left), rule,
                                    kernel, threads)[:, 0]
    shade |= hazy
    # 3. temporal: robust centre and MAD of what is left, cloud (blue) and shadow (NIR)
    testable = np.count_nonzero(used, axis=0) >= rule.min_obs
    keep &= ~shade
    rejected = cand | shade
    for _ in range(rule.passes):
        c_b, mad_b = _centre_spread(blue, keep, kernel, threads)
        thr_b = np.maximum(mad_b * rule.k_num // rule.k_den, rule.cloud_floor_dn)
        cloud = (b32 - c_b > thr_b) & ~surface  # a steady bright run is no cloud
        c_n, mad_n = _centre_spread(nir, keep, kernel, threads)
        thr_n = np.maximum(np.maximum(mad_n * rule.k_num // rule.k_den, rule.shadow_floor_dn),
                           c_n // rule.shadow_rel_den)
        shadow = c_n - nir.astype(np.int32) > thr_n
        rejected = cand | shade | ((cloud | shadow) & used & testable)
        rejected &= np.any(used & ~rejected, axis=0)  # never every used observation
        keep = used & ~rejected
    out = rejected
    return out


# --- realistic stacks ---------------------------------------------------------------------------
#: Surfaces (blue, red, nir DN = reflectance x 10000, as tests/unit/test_outliers.py) and their
#: share of pixels: vegetation, soil, water, bright sand, white roofs (cloud-like all year: the
#: persistent bright surfaces the HOT test must spare).
SURFACES = ((350, 300, 3600, 0.55), (900, 1300, 2400, 0.20), (500, 250, 100, 0.12),
            (2200, 3600, 4600, 0.08), (4500, 4500, 4600, 0.05))


def _blobs(rng: np.random.Generator, shape: tuple[int, int, int], share: float,
           cell: int) -> np.ndarray:
    """(S, h, w) bool, about ``share`` True in spatially coherent cells of ``cell`` px (clouds
    and their shadows cover fields, not scattered pixels)."""
    s, h, w = shape
    coarse = rng.random((s, -(-h // cell), -(-w // cell))) < share
    return np.repeat(np.repeat(coarse, cell, axis=1), cell, axis=2)[:, :h, :w]


def realistic_stack(shape: tuple[int, int, int], seed: int = 0, *, masked: float = 0.3,
                    clouds: float = 0.08, shadows: float = 0.04, haze: float = 0.06,
                    noise: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                              list[int]]:
    """(blue, red, nir, use, order): uint16 (S, h, w) reference stacks like the decide step's,
    ``use`` bool and the time order (a seeded permutation). Per pixel a surface of
    :data:`SURFACES` (+-20 %), a seasonal NIR cycle (vegetation +-30 %), sensor noise;
    per scene, in coherent cells, SCL-masked observations (``masked``, plus 3 % scattered),
    missed clouds (blended 30-90 % towards a flat 0.6 spectrum), shadows (35-55 % of the light)
    and haze (HOT raised 0.03-0.06)."""
    rng = np.random.default_rng(seed)
    s, h, w = shape
    table = np.array([t[:3] for t in SURFACES], np.float32)
    kind = rng.choice(len(SURFACES), (h, w), p=[t[3] for t in SURFACES])
    base = table[kind].transpose(2, 0, 1) * rng.uniform(0.8, 1.2, (1, h, w)).astype(np.float32)
    order = [int(i) for i in rng.permutation(s)]
    season = np.empty(s, np.float32)
    season[order] = np.sin(np.linspace(0, 2 * np.pi, s, endpoint=False))
    bands = np.repeat(base[None], s, axis=0)  # (S, 3, h, w)
    bands[:, 2] *= 1 + 0.3 * season[:, None, None] * (kind == 0)
    bands += rng.integers(-noise, noise + 1, bands.shape).astype(np.float32)
    cloud = _blobs(rng, shape, clouds, 24)
    opacity = rng.uniform(0.3, 0.9, (s, 1, 1)).astype(np.float32)
    bands += (cloud * opacity)[:, None] * (6000 - bands)
    shade = _blobs(rng, shape, shadows, 16) & ~cloud
    bands *= np.where(shade, rng.uniform(0.35, 0.55, (s, 1, 1)), 1)[:, None].astype(np.float32)
    hazy = _blobs(rng, shape, haze, 32) & ~cloud
    lift = rng.uniform(300, 600, (s, 1, 1)).astype(np.float32)
    bands[:, 0] += hazy * lift
    bands[:, 1] += hazy * lift / 2
    values = np.clip(bands, 1, 65535).astype(np.uint16)
    use = ~(_blobs(rng, shape, masked, 48) | (rng.random(shape) < 0.03))
    blue, red, nir = (np.ascontiguousarray(values[:, c]) for c in range(3))
    return blue, red, nir, use, order
