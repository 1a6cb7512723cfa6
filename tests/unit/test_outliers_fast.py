"""The fast :func:`cloudfree.outliers.reject` (row strips, uint16 bounds, whole-strip passes)
decides exactly what the slower whole-stack code it replaced decided: bit for bit, against the
frozen copy in tests/frozen_reject.py, on realistic and adversarial stacks (ties, extreme DNs,
no used observation, all cloud-like, one or two scenes, odd and even counts, strip edges),
with both median kernels and several rules."""

from __future__ import annotations

import numpy as np
import pytest

from cloudfree import outliers
from cloudfree.median import KERNELS, compiled_available
from cloudfree.outliers import DEFAULT_RULE, OutlierRule, persistent, reject
from tests.frozen_reject import frozen_reject, realistic_stack
from tests.frozen_reject import persistent as frozen_persistent

RULES = (DEFAULT_RULE, OutlierRule(min_obs=1, passes=1, persistent_run=1),
         OutlierRule(passes=3, persistent_run=2, haze_dn=100, hot_dn=300, shadow_rel_den=2),
         OutlierRule(min_obs=5, cloud_floor_dn=0, shadow_floor_dn=0, k_num=1, k_den=1))


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest) -> str:
    if request.param == "compiled" and not compiled_available():
        pytest.skip("compiled kernel not built")
    return request.param


def adversarial(rng: np.random.Generator, shape: tuple[int, int, int], used: float = 0.7):
    """(blue, red, nir, use, order): DNs from a few levels (ties in every test, equal NIR
    maxima), clouds, shadows, the extremes 0 and 65535, and random SCL masking."""
    levels = np.array([0, 1, 150, 300, 301, 450, 800, 1600, 1601, 3000, 3600, 6000, 65534,
                       65535])
    blue, red, nir = (levels[rng.integers(0, levels.size, shape)] for _ in range(3))
    clear = rng.random(shape) < 0.6  # most observations: a steady surface, +- a little
    for band, base in ((blue, 400), (red, 300), (nir, 3000)):
        band[clear] = base + rng.integers(-200, 201, int(clear.sum())) // 50 * 50
    use = rng.random(shape) < used
    order = [int(i) for i in rng.permutation(shape[0])]
    return (*(b.astype(np.uint16) for b in (blue, red, nir)), use, order)


def assert_same(blue, red, nir, use, order, rule=DEFAULT_RULE, kernel=None, threads=1):
    want = frozen_reject(blue, red, nir, use, rule, order=order, kernel=kernel)
    got = reject(blue, red, nir, use, rule, order=order, kernel=kernel, threads=threads)
    assert got.dtype == bool and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    return got


@pytest.mark.parametrize("shape", [(16, 40, 56), (9, 33, 17), (4, 21, 30), (3, 5, 7)])
def test_identical_on_realistic_stacks(shape, kernel):
    blue, red, nir, use, order = realistic_stack(shape, seed=sum(shape))
    got = assert_same(blue, red, nir, use, order, kernel=kernel)
    assert got.any()  # clouds, shadows and haze are there to be rejected


@pytest.mark.parametrize("rule", RULES, ids=range(len(RULES)))
@pytest.mark.parametrize("shape", [(1, 9, 11), (2, 12, 13), (5, 10, 10), (8, 11, 9),
                                   (13, 7, 16)])
def test_identical_on_adversarial_stacks(shape, rule, kernel):
    rng = np.random.default_rng(shape[0] * 100 + rule.passes)
    for used in (0.3, 0.7, 1.0):
        assert_same(*adversarial(rng, shape, used), rule=rule, kernel=kernel)


def test_identical_across_row_strips(monkeypatch):
    """Strips of 1, 2 and 3 rows (and two threads over them): the rule is per pixel."""
    blue, red, nir, use, order = realistic_stack((7, 23, 19), seed=5)
    for elements in (1, 7 * 19 * 2, 7 * 19 * 3):
        monkeypatch.setattr(outliers, "STRIP_ELEMENTS", elements)
        for threads in (1, 2):
            assert_same(blue, red, nir, use, order, threads=threads)


def test_edge_stacks():
    rng = np.random.default_rng(3)
    blue, red, nir, use, order = adversarial(rng, (6, 8, 9))
    none = np.zeros(use.shape, bool)
    assert not assert_same(blue, red, nir, none, order).any()  # no used observation
    bright = np.full(use.shape, 6000, np.uint16)  # every observation cloud-like (a surface)
    assert not assert_same(bright, bright // 4, bright, use, order).any()
    half = use.copy()
    half[:, :4] = False  # pixels with no used observation beside used ones
    assert_same(blue, red, nir, half.astype(np.uint8), order)  # uint8 use as bool
    one = use & (np.arange(6) == 2)[:, None, None]  # one used observation per pixel
    assert not assert_same(blue, red, nir, one, order).any()
    assert_same(blue, red, nir, use, order, rule=OutlierRule(enabled=False))


def test_persistent_matches_the_frozen_one():
    rng = np.random.default_rng(8)
    for s in (1, 2, 5, 12):
        cand = rng.random((s, 9, 10)) < 0.6
        used = rng.random((s, 9, 10)) < 0.8
        blue = rng.integers(3000, 3400, (s, 9, 10)).astype(np.uint16)
        order = [int(i) for i in rng.permutation(s)]
        for args in ((), (blue, 150), (blue, 0)):
            for run in (0, 1, 3):
                np.testing.assert_array_equal(persistent(cand, used, order, run, *args),
                                              frozen_persistent(cand, used, order, run, *args))


@pytest.mark.parametrize("row,col,h,w", [(0, 0, 6, 8), (1, 3, 5, 7), (2, 2, 4, 4)])
def test_to_band_grid_at_10m_is_each_20m_pixel_repeated_2x2(row, col, h, w):
    from cloudfree.bands import get_band
    from cloudfree.outliers import decision_window, to_band_grid
    from cloudfree.windows import Window

    band, window = get_band("blue"), Window(row, col, h, w)
    w20 = decision_window(band, window)
    reject20 = np.random.default_rng(row + col).random((3, *w20.shape)) < 0.4
    got = to_band_grid(reject20, band, window)
    full = np.repeat(np.repeat(reject20, 2, axis=1), 2, axis=2)
    r0, c0 = row - 2 * w20.row_off, col - 2 * w20.col_off
    np.testing.assert_array_equal(got, full[:, r0:r0 + h, c0:c0 + w])
