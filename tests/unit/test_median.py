"""masked_median: exact against reference_median, adversarial cases, network checks.

Every median test runs on both kernels (the compiled C one and the numpy network) through the
``kernel`` fixture.
"""

from __future__ import annotations

import numpy as np
import pytest

from cloudfree.errors import ConfigError, InputError
from cloudfree.median import (
    KERNELS,
    compiled_available,
    masked_median,
    middle_positions,
    reference_median,
    run_network,
    selection_network,
)


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest) -> str:
    return request.param


def _same(stack: np.ndarray, valid: np.ndarray, kernel: str, **kw) -> None:
    got = masked_median(stack, valid, kernel=kernel, **kw)
    ref = reference_median(stack, valid)
    assert got.median.dtype == np.uint16 and got.count.dtype == np.uint8
    assert got.contributions.dtype == np.int64
    np.testing.assert_array_equal(got.median, ref.median)
    np.testing.assert_array_equal(got.count, ref.count)
    np.testing.assert_array_equal(got.contributions, ref.contributions)


def _one(values, valid, kernel: str) -> int:
    stack = np.array(values, dtype=np.uint16).reshape(-1, 1, 1)
    mask = np.array(valid, dtype=np.uint8).reshape(-1, 1, 1)
    _same(stack, mask, kernel)
    return int(masked_median(stack, mask, kernel=kernel).median[0, 0])


def test_random_stacks_match_reference(kernel: str) -> None:
    """10,000 random stacks: S 1..20, masks 0..100 %, full and narrow value ranges."""
    rng = np.random.default_rng(20240601)
    for i in range(10_000):
        n = int(rng.integers(1, 21))
        h, w = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        kind = i % 4
        if kind == 0:
            stack = rng.integers(0, 65536, (n, h, w))
        elif kind == 1:  # narrow: ties everywhere
            stack = rng.integers(0, 4, (n, h, w))
        elif kind == 2:  # extremes as real values
            stack = rng.choice([0, 1, 65534, 65535], (n, h, w))
        else:
            stack = rng.integers(990, 1010, (n, h, w))
        valid = rng.random((n, h, w)) < rng.random()
        valid = valid if i % 2 else valid.astype(np.uint8)
        _same(stack.astype(np.uint16), valid, kernel, chunk_pixels=int(rng.integers(1, 30)))


@pytest.mark.parametrize("n", range(1, 65))
def test_every_scene_count_with_default_chunks(n: int, kernel: str) -> None:
    rng = np.random.default_rng(n)
    stack = rng.integers(0, 65536, (n, 7, 9)).astype(np.uint16)
    valid = (rng.random((n, 7, 9)) < 0.6).astype(np.uint8)
    _same(stack, valid, kernel)


def test_large_multi_chunk_s16(kernel: str) -> None:
    rng = np.random.default_rng(16)
    stack = rng.integers(0, 10000, (16, 40, 300)).astype(np.uint16)
    valid = (rng.random((16, 40, 300)) >= 0.35).astype(np.uint8)
    got = masked_median(stack, valid, chunk_pixels=2048, kernel=kernel)
    ref = reference_median(stack, valid)
    np.testing.assert_array_equal(got.median, ref.median)
    np.testing.assert_array_equal(got.contributions, valid.reshape(16, -1).sum(axis=1))


def test_rounding_half_to_even(kernel: str) -> None:
    assert _one([1, 2], [1, 1], kernel) == 2
    assert _one([2, 3], [1, 1], kernel) == 2
    assert _one([3, 4], [1, 1], kernel) == 4
    assert _one([4, 5], [1, 1], kernel) == 4
    assert _one([65534, 65535], [1, 1], kernel) == 65534
    assert _one([0, 65535], [1, 1], kernel) == 32768  # 32767.5 -> even
    assert _one([0, 1], [1, 1], kernel) == 0


def test_adversarial_single_pixels(kernel: str) -> None:
    assert _one([5, 6, 7], [0, 0, 0], kernel) == 0  # all masked -> nodata
    assert _one([5, 6, 7], [0, 1, 0], kernel) == 6  # one valid
    assert _one([9, 1, 5, 3], [1, 1, 1, 1], kernel) == 4  # all valid, even
    assert _one([7, 7, 7, 7, 7], [1, 0, 1, 0, 1], kernel) == 7  # ties
    assert _one([0, 0, 65535], [1, 1, 1], kernel) == 0  # 0 is a real value
    assert _one([65535, 65535, 0], [1, 1, 1], kernel) == 65535
    assert _one([65535, 0, 0, 0], [1, 0, 0, 1], kernel) == 32768  # 65535 and 0 valid, 0s masked
    assert _one([42], [1], kernel) == 42  # S = 1
    assert _one([42], [0], kernel) == 0
    assert _one([3, 100, 200, 1], [1, 0, 0, 1], kernel) == 2  # (3 + 1) / 2
    assert _one(list(range(16)), [1] * 16, kernel) == 8  # 7.5 -> 8
    assert _one(list(range(1, 17)), [1] * 16, kernel) == 8  # 8.5 -> 8
    assert _one(list(range(16)), [1] * 15 + [0], kernel) == 7
    assert _one([65535] * 16, [0] * 16, kernel) == 0


def test_count_and_contributions(kernel: str) -> None:
    stack = np.arange(3 * 2 * 2, dtype=np.uint16).reshape(3, 2, 2)
    valid = np.array([[[1, 1], [0, 0]], [[1, 0], [1, 0]], [[1, 1], [1, 0]]], dtype=np.uint8)
    res = masked_median(stack, valid, kernel=kernel)
    np.testing.assert_array_equal(res.count, [[3, 2], [2, 0]])
    np.testing.assert_array_equal(res.contributions, [2, 2, 3])
    np.testing.assert_array_equal(res.median, [[4, 5], [8, 0]])


def test_nonbinary_uint8_mask_counts_as_valid(kernel: str) -> None:
    stack = np.array([10, 20, 30], dtype=np.uint16).reshape(3, 1, 1)
    valid = np.array([255, 0, 7], dtype=np.uint8).reshape(3, 1, 1)
    res = masked_median(stack, valid, kernel=kernel)
    assert res.median[0, 0] == 20 and res.count[0, 0] == 2


def test_does_not_modify_inputs(kernel: str) -> None:
    rng = np.random.default_rng(3)
    stack = rng.integers(0, 65536, (5, 4, 4)).astype(np.uint16)
    valid = (rng.random((5, 4, 4)) < 0.5).astype(np.uint8)
    s0, v0 = stack.copy(), valid.copy()
    masked_median(stack, valid, kernel=kernel)
    np.testing.assert_array_equal(stack, s0)
    np.testing.assert_array_equal(valid, v0)


def test_non_contiguous_inputs(kernel: str) -> None:
    rng = np.random.default_rng(4)
    big = rng.integers(0, 65536, (6, 10, 12)).astype(np.uint16)
    vbig = rng.random((6, 10, 12)) < 0.5
    _same(big[:, ::2, 1::3], vbig[:, ::2, 1::3], kernel)


def test_empty_spatial_shape(kernel: str) -> None:
    res = masked_median(
        np.zeros((3, 0, 4), np.uint16), np.zeros((3, 0, 4), np.uint8), kernel=kernel
    )
    assert res.median.shape == (0, 4)
    np.testing.assert_array_equal(res.contributions, [0, 0, 0])


@pytest.mark.parametrize(
    ("stack", "valid"),
    [
        (np.zeros((2, 2, 2), np.float32), np.ones((2, 2, 2), np.uint8)),
        (np.zeros((2, 2), np.uint16), np.ones((2, 2), np.uint8)),
        (np.zeros((2, 2, 2), np.uint16), np.ones((2, 2, 2), np.int32)),
        (np.zeros((2, 2, 2), np.uint16), np.ones((2, 2, 3), np.uint8)),
        (np.zeros((0, 2, 2), np.uint16), np.ones((0, 2, 2), np.uint8)),
    ],
)
def test_bad_inputs(stack: np.ndarray, valid: np.ndarray, kernel: str) -> None:
    with pytest.raises(InputError):
        masked_median(stack, valid, kernel=kernel)


def test_middle_positions() -> None:
    assert middle_positions(1) == (0,)
    assert middle_positions(16) == (7, 8)
    assert middle_positions(15) == (7, 8)
    assert middle_positions(2) == (0, 1)
    assert middle_positions(3) == (1, 2)


@pytest.mark.parametrize("n", range(1, 17))
def test_networks_select_by_zero_one_principle(n: int) -> None:
    """All 2**n 0/1 inputs: the outputs are the wanted order statistics (0-1 principle)."""
    net = selection_network(n)
    bits = ((np.arange(2**n)[None, :] >> np.arange(n)[:, None]) & 1).astype(np.uint16)
    wires = [bits[i].copy() for i in range(n)]
    outs = run_network(net, wires, np.empty(2**n, np.uint16))
    ranked = np.sort(bits, axis=0)
    for out, pos in zip(outs, middle_positions(n), strict=True):
        np.testing.assert_array_equal(out, ranked[pos])


def test_pruned_network_is_cheaper_than_a_sort() -> None:
    assert selection_network(16).cost <= 90  # a full 16-input Batcher sort is 126 passes


# --------------------------------------------------------------------------- both kernels


def test_compiled_kernel_is_built() -> None:
    """``pip install -e .`` (and CI) builds cloudfree._median; without it the fallback runs."""
    assert compiled_available(), "cloudfree._median missing: run `pip install -e .` with gcc"


def test_unknown_kernel_is_a_config_error() -> None:
    stack = np.zeros((2, 2, 2), np.uint16)
    with pytest.raises(ConfigError, match="numpy"):
        masked_median(stack, np.ones_like(stack, np.uint8), kernel="fortran")


def _one_hot(n: int, picks: np.ndarray) -> np.ndarray:
    """(n, H, W) bool, True at scene ``picks[y, x]`` of each pixel."""
    return np.arange(n)[:, None, None] == picks[None]


def _odd_pairs(rng: np.random.Generator, shape: tuple[int, int, int]):
    """Two valid scenes per pixel, one even and one odd value: every mean ends in .5."""
    n, h, w = shape
    stack = rng.integers(0, 65535, shape).astype(np.uint16)
    i = rng.integers(0, n, (h, w))
    j = (i + 1 + rng.integers(0, n - 1, (h, w))) % n
    yy, xx = np.indices((h, w))
    stack[i, yy, xx] &= 0xFFFE
    stack[j, yy, xx] |= 1
    return stack, _one_hot(n, i) | _one_hot(n, j)


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 64])
def test_adversarial_blocks(n: int, kernel: str) -> None:
    """Whole images of the hard cases, crossing the C kernel's 256-pixel blocks with a tail."""
    shape = (n, 3, 301)
    rng = np.random.default_rng(n)
    cases = {
        "all masked": (rng.integers(0, 65536, shape), np.zeros(shape, bool)),
        "one valid": (rng.integers(0, 65536, shape), _one_hot(n, rng.integers(0, n, shape[1:]))),
        "all 65535": (np.full(shape, 65535), rng.random(shape) < 0.5),
        "all 65535 valid": (np.full(shape, 65535), np.ones(shape, bool)),
        "all 0 valid": (np.zeros(shape), np.ones(shape, bool)),
    }
    if n > 1:
        cases["even counts, odd sums"] = _odd_pairs(rng, shape)
    for name, (values, mask) in cases.items():
        stack, valid = values.astype(np.uint16), mask.astype(np.uint8)
        got = masked_median(stack, valid, kernel=kernel)
        ref = reference_median(stack, valid)
        np.testing.assert_array_equal(got.median, ref.median, err_msg=name)
        np.testing.assert_array_equal(got.count, ref.count, err_msg=name)
        np.testing.assert_array_equal(got.contributions, ref.contributions, err_msg=name)
        if name == "all masked":
            assert not got.median.any() and not got.count.any()
        if name == "all 65535 valid":
            assert (got.median == 65535).all() and (got.count == n).all()
        if name == "even counts, odd sums":
            assert (got.count == 2).all() and (got.median % 2 == 0).all()


def test_odd_sums_round_to_even_exactly(kernel: str) -> None:
    """Every pair (a, a + 1) of adjacent values: the mean a + .5 goes to the even neighbour."""
    a = np.arange(0, 65535, dtype=np.uint16).reshape(1, 255, 257)
    stack = np.concatenate([a, a + 1, np.full_like(a, 7)])
    valid = np.ones(stack.shape, np.uint8)
    valid[2] = 0
    got = masked_median(stack, valid, kernel=kernel).median.astype(np.int64)
    lo = a[0].astype(np.int64)
    np.testing.assert_array_equal(got, np.where(lo % 2 == 0, lo, lo + 1))


@pytest.mark.skipif(not compiled_available(), reason="compiled kernel not built")
@pytest.mark.parametrize("n", [3, 16, 40])
def test_compiled_threads_agree_with_numpy(n: int) -> None:
    """A stack large enough to split over 2 threads (1 << 16 px each): identical to numpy."""
    rng = np.random.default_rng(100 + n)
    shape = (n, 300, 500)
    stack = rng.integers(0, 65536, shape, dtype=np.uint16)
    valid = rng.random(shape) < 0.65
    one = masked_median(stack, valid, kernel="compiled", threads=1)
    two = masked_median(stack, valid, kernel="compiled", threads=2)
    ref = masked_median(stack, valid, kernel="numpy")
    for got in (one, two):
        np.testing.assert_array_equal(got.median, ref.median)
        np.testing.assert_array_equal(got.count, ref.count)
        np.testing.assert_array_equal(got.contributions, ref.contributions)
    np.testing.assert_array_equal(ref.contributions, valid.reshape(n, -1).sum(axis=1))
