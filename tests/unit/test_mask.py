"""SCL masks and the SCL -> band grid resampling, with exact expected arrays."""

from __future__ import annotations

import numpy as np
import pytest

from cloudfree.errors import InputError
from cloudfree.mask import (
    DEFAULT_MASK_CLASSES,
    dilate,
    keep_snow_when_alone,
    scl_to_band_grid,
    valid_mask,
)


def test_default_classes() -> None:
    assert DEFAULT_MASK_CLASSES == (0, 1, 3, 8, 9, 10, 11)


def test_valid_mask_all_classes() -> None:
    scl = np.arange(12, dtype=np.uint8).reshape(3, 4)
    got = valid_mask(scl)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, [[0, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(
        valid_mask(scl, (*DEFAULT_MASK_CLASSES, 2, 7)), [[0, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]
    )


def test_class_zero_always_masked() -> None:
    scl = np.array([[0, 9]], dtype=np.uint8)
    np.testing.assert_array_equal(valid_mask(scl, classes=()), [[0, 1]])


def test_dilate_nodata() -> None:
    scl = np.full((5, 6), 4, dtype=np.uint8)
    scl[0, 0] = 0
    scl[4, 5] = 9
    expected = np.array(
        [
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 0],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(valid_mask(scl, dilate_nodata=1), expected)
    expected2 = np.ones((5, 6), np.uint8)
    expected2[:3, :3] = 0
    expected2[4, 5] = 0
    np.testing.assert_array_equal(valid_mask(scl, dilate_nodata=2), expected2)


def test_dilate_square_and_stacked() -> None:
    m = np.zeros((2, 5, 5), bool)
    m[0, 2, 2] = True
    out = dilate(m, 1)
    exp = np.zeros((5, 5), bool)
    exp[1:4, 1:4] = True
    np.testing.assert_array_equal(out[0], exp)
    assert not out[1].any()
    np.testing.assert_array_equal(dilate(m, 10)[0], np.ones((5, 5), bool))
    with pytest.raises(InputError):
        dilate(m, -1)


def test_scl_to_10m() -> None:
    scl = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    np.testing.assert_array_equal(
        scl_to_band_grid(scl, 10),
        [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]],
    )


def test_scl_to_20m_identity() -> None:
    scl = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert scl_to_band_grid(scl, 20) is scl


def test_scl_to_60m_centre_pixel() -> None:
    scl = np.arange(36, dtype=np.uint8).reshape(6, 6)
    np.testing.assert_array_equal(scl_to_band_grid(scl, 60), [[7, 10], [25, 28]])
    stacked = np.stack([scl, scl + 100])
    np.testing.assert_array_equal(scl_to_band_grid(stacked, 60)[1], [[107, 110], [125, 128]])


def test_scl_to_band_grid_errors() -> None:
    with pytest.raises(InputError):
        scl_to_band_grid(np.zeros((5, 6), np.uint8), 60)
    with pytest.raises(InputError):
        scl_to_band_grid(np.zeros((6, 6), np.uint8), 30)
    with pytest.raises(InputError):
        scl_to_band_grid(np.zeros((6, 6), np.uint16), 20)
    with pytest.raises(InputError):
        valid_mask(np.zeros(6, np.uint8))


def test_keep_snow_when_alone() -> None:
    scl = np.array([[[11, 11, 4]], [[11, 9, 11]]], dtype=np.uint8)
    valid = valid_mask(scl)
    np.testing.assert_array_equal(valid, [[[0, 0, 1]], [[0, 0, 0]]])
    np.testing.assert_array_equal(keep_snow_when_alone(valid, scl), [[[1, 1, 1]], [[1, 0, 0]]])


# --- scene_state: clear / snow / masked / nodata on a band grid --------------------------------
def test_scene_state_codes_20m() -> None:
    from cloudfree.mask import CLEAR, MASKED, NODATA, SNOW, scene_state

    scl = np.array([[0, 4, 11, 9, 2, 5]], dtype=np.uint8)
    np.testing.assert_array_equal(scene_state(scl, 20), [[NODATA, CLEAR, SNOW, MASKED, CLEAR,
                                                          CLEAR]])
    # snow not masked (11 not in classes): snow is simply clear, never a fallback
    np.testing.assert_array_equal(scene_state(scl, 20, classes=(0, 9)),
                                  [[NODATA, CLEAR, CLEAR, MASKED, CLEAR, CLEAR]])
    # the ordering the fusion relies on
    assert NODATA < MASKED < SNOW < CLEAR


def test_scene_state_10m_repeats_and_dilates_in_band_pixels() -> None:
    from cloudfree.mask import CLEAR, MASKED, NODATA, scene_state

    scl = np.full((4, 4), 4, dtype=np.uint8)
    scl[0, :] = 0
    got = scene_state(scl, 10, dilate_nodata=1)
    assert got.shape == (8, 8)
    assert (got[:2] == NODATA).all()  # class 0 itself stays "not observed"
    assert (got[2] == MASKED).all()  # the 1-px fringe: observed but masked
    assert (got[3:] == CLEAR).all()


def test_scene_state_60m_needs_all_nine_clear() -> None:
    """A 60 m pixel is clear only if all nine 20 m SCL pixels inside it are (issue 7.5)."""
    from cloudfree.mask import CLEAR, MASKED, NODATA, SNOW, scene_state

    scl = np.full((6, 9), 4, dtype=np.uint8)  # 2 x 3 pixels at 60 m
    scl[0, 0] = 9  # one corner cloud in block (0, 0); its centre (1, 1) is clear
    scl[3:6, 3:6] = 11  # block (1, 1) all snow
    scl[3, 6] = 11  # block (1, 2): one snow pixel, the rest clear -> a snow observation
    scl[0:3, 6:9] = 0  # block (0, 2) all nodata
    scl[0, 3] = 0  # block (0, 1): one nodata pixel -> masked (observed), not nodata
    got = scene_state(scl, 60)
    np.testing.assert_array_equal(got, [[MASKED, MASKED, NODATA], [CLEAR, SNOW, SNOW]])
    # the old centre-pixel rule called block (0, 0) clear
    assert scl_to_band_grid(scl, 60)[0, 0] == 4


def test_scene_state_errors() -> None:
    from cloudfree.mask import scene_state

    with pytest.raises(InputError):
        scene_state(np.zeros((5, 6), np.uint8), 60)
    with pytest.raises(InputError):
        scene_state(np.zeros((2, 6, 6), np.uint8), 20)
    with pytest.raises(InputError):
        scene_state(np.zeros((6, 6), np.uint8), 30)


def _scene_state_reference(scl20, band_resolution, classes, dilate_nodata):
    """The rule written out plainly (one bool grid per condition), for the fast LUT version."""
    from cloudfree.mask import CLEAR, MASKED, NODATA, SNOW, dilate

    def grid(a, reduce_all):
        if band_resolution == 20:
            return a
        if band_resolution == 10:
            return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)
        h, w = a.shape
        blocks = a.reshape(h // 3, 3, w // 3, 3)
        return blocks.all(axis=(1, 3)) if reduce_all else blocks.any(axis=(1, 3))

    keep = np.ones(256, dtype=bool)
    keep[list(classes)] = False
    keep[0] = False
    keep20, nodata20 = keep[scl20], scl20 == 0
    state = np.full(grid(keep20, True).shape, MASKED, dtype=np.uint8)
    if 11 in classes:
        state[grid(keep20 | (scl20 == 11), True)] = SNOW
    state[grid(keep20, True)] = CLEAR
    nodata = grid(nodata20, False)
    state[dilate(nodata, dilate_nodata) if dilate_nodata else nodata] = MASKED
    state[grid(nodata20, True)] = NODATA
    return state


@pytest.mark.parametrize("res", [10, 20, 60])
@pytest.mark.parametrize("seed", range(6))
def test_scene_state_matches_the_plain_rule(res: int, seed: int) -> None:
    """The LUT + block-minimum version with its fast paths equals the rule written out per
    condition, on random SCLs with no, some and only class-0 pixels."""
    from cloudfree.mask import DEFAULT_MASK_CLASSES, scene_state

    rng = np.random.default_rng(seed)
    classes = DEFAULT_MASK_CLASSES if seed % 2 else (0, 3, 8, 9, 10)
    for nodata_share in (0.0, 0.05, 0.5, 1.0):
        scl = rng.integers(1, 12, size=(24, 27), dtype=np.uint8)
        scl[rng.random(scl.shape) < nodata_share] = 0
        scl[:, :6][rng.random((24, 6)) < nodata_share] = 0  # a swath edge
        for radius in (0, 1, 3):
            np.testing.assert_array_equal(
                scene_state(scl, res, classes, radius),
                _scene_state_reference(scl, res, classes, radius),
                err_msg=f"res {res} nodata {nodata_share} radius {radius}")


@pytest.mark.parametrize("res", [10, 20, 60])
@pytest.mark.parametrize("seed", range(8))
def test_scene_state_of_an_observed_patch_matches_the_plain_rule(res: int, seed: int) -> None:
    """A window all nodata but for a patch (a swath corner, a small AOI): the dilation runs
    only around the patch; the states equal the plain rule's over the whole window, with the
    patch at the window's edges, corners and inside, and ragged (partly nodata 60 m blocks)."""
    from cloudfree.mask import DEFAULT_MASK_CLASSES, scene_state

    rng = np.random.default_rng(100 + seed)
    h, w = 36, 45
    for _ in range(6):
        scl = np.zeros((h, w), np.uint8)
        r0, c0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
        r1, c1 = rng.integers(r0 + 1, h + 1), rng.integers(c0 + 1, w + 1)
        scl[r0:r1, c0:c1] = rng.integers(1, 12, size=(r1 - r0, c1 - c0))
        scl[rng.random(scl.shape) < 0.05] = 0  # holes inside the patch
        for radius in (0, 1, 2, 5):
            np.testing.assert_array_equal(
                scene_state(scl, res, DEFAULT_MASK_CLASSES, radius),
                _scene_state_reference(scl, res, DEFAULT_MASK_CLASSES, radius),
                err_msg=f"res {res} patch {(r0, c0, r1, c1)} radius {radius}")


def test_true_bbox() -> None:
    from cloudfree.mask import true_bbox

    a = np.zeros((5, 7), bool)
    assert true_bbox(a) is None
    a[1, 2] = a[3, 5] = True
    assert true_bbox(a) == (1, 2, 4, 6)
    assert true_bbox(np.ones((2, 3), np.uint8)) == (0, 0, 2, 3)


@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 3), (1, 1)])
def test_repeat2_is_numpy_repeat_on_the_last_two_axes(shape):
    from cloudfree.mask import repeat2

    a = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    expected = np.repeat(np.repeat(a, 2, axis=-2), 2, axis=-1)
    np.testing.assert_array_equal(repeat2(a), expected)
    out = np.zeros(expected.shape, np.uint8)
    assert repeat2(a, out=out) is out and np.array_equal(out, expected)
    with pytest.raises(InputError):
        repeat2(a, out=np.zeros(shape, np.uint8))


def test_usable_box_cuts_and_places_the_box_of_usable_pixels(monkeypatch) -> None:
    from cloudfree import mask
    from cloudfree.windows import Window

    states = np.zeros((2, 6, 8), np.uint8)
    states[0, 1:3, 2:5] = mask.MASKED  # observed, not usable: outside the box
    states[1, 2:4, 3:6] = mask.CLEAR
    states[0, 4, 6] = mask.SNOW
    box = mask.usable_box(states.max(axis=0))
    assert box.bounds == (2, 3, 5, 7) and box.shape == (6, 8) and box.crops
    cut = box.cut(states)
    assert cut.shape == (2, 3, 4) and cut.flags.c_contiguous
    np.testing.assert_array_equal(box.place(cut)[:, 2:5, 3:7], states[:, 2:5, 3:7])
    assert not box.place(cut)[:, :2].any() and box.place(cut).dtype == np.uint8
    assert Window(100, 200, 6, 8).sub(box.bounds) == Window(102, 203, 3, 4)
    monkeypatch.setattr(mask, "CROP_TO_USABLE", False)
    assert not box.crops
    monkeypatch.setattr(mask, "CROP_TO_USABLE", True)
    assert not mask.usable_box(np.full((3, 3), mask.CLEAR, np.uint8)).crops  # the whole window
    assert mask.usable_box(np.full((3, 3), mask.MASKED, np.uint8)) is None


@pytest.mark.parametrize("op,ref", [(np.minimum, "min"), (np.logical_or, "any"),
                                    (np.logical_and, "all")])
def test_block_reduce_equals_the_reshaped_reduction(op, ref) -> None:
    from cloudfree import mask

    rng = np.random.default_rng(2)
    a = rng.integers(0, 4, (3, 12, 15), dtype=np.uint8)
    if ref != "min":
        a = a > 2
    want = getattr(a.reshape(3, 4, 3, 5, 3), ref)(axis=(2, 4))
    got = mask.block_reduce(a, 3, op)
    assert got.dtype == a.dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mask.block_reduce(a[0], 3, op), want[0])
    with pytest.raises(InputError, match="whole 3 x 3 blocks"):
        mask.block_reduce(a[:, :11], 3, op)
