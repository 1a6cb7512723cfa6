"""BOA offset decisions (metadata, lying flags, pixels) and apply_offset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cloudfree.errors import InputError
from cloudfree.harmonize import apply_offset, decide, parse_baseline

FLAG = "earthsearch:boa_offset_applied"


def _props(baseline: str | None, flag: bool | None) -> dict:
    props: dict = {"datetime": "2020-03-02T10:00:00Z"}
    if baseline is not None:
        props["s2:processing_baseline"] = baseline
    if flag is not None:
        props[FLAG] = flag
    return props


def test_baseline_0214_flag_false() -> None:
    h = decide(_props("02.14", False))
    assert h.offset == 0
    assert h.reason == "processing baseline 02.14 < 04.00"
    assert "flag_disagrees" not in h.evidence
    assert h.evidence[FLAG] is False


def test_baseline_0500_flag_true() -> None:
    h = decide(_props("05.00", True))
    assert h.offset == 1000
    assert h.reason == "processing baseline 05.00 >= 04.00"
    assert "flag_disagrees" not in h.evidence


def test_baseline_0500_flag_lying_false() -> None:
    h = decide(_props("05.00", False))
    assert h.offset == 1000
    assert h.evidence["flag_disagrees"] is True


def test_baseline_0214_flag_lying_true() -> None:
    h = decide(_props("02.14", True))
    assert h.offset == 0
    assert h.evidence["flag_disagrees"] is True


def test_collection1_without_baseline() -> None:
    h = decide({}, collection="sentinel-2-c1-l2a")
    assert h.offset == 1000 and "sentinel-2-c1-l2a" in h.reason


def test_fallbacks() -> None:
    assert decide({"s2:product_uri": "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU"}).offset == 1000
    assert decide({"datetime": "2023-05-01T00:00:00Z"}).offset == 1000
    assert decide({"datetime": "2021-05-01T00:00:00Z"}).offset == 0
    assert decide({FLAG: True}).offset == 1000
    h = decide({})
    assert h.offset == 0 and h.reason.startswith("nothing known")


def test_parse_baseline() -> None:
    assert parse_baseline({"s2:processing_baseline": "04.00"}) == 4.0
    assert parse_baseline({"s2:processing_baseline": "N0509"}) == 5.09  # ESA N-form
    assert parse_baseline({}) is None
    with pytest.raises(InputError):
        parse_baseline({"s2:processing_baseline": "abc"})


def _scene(offset: int, n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic NIR band: land 2000-4000, 20 % water 20-200; plus ``offset``; and its SCL."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(2000, 4000, n)
    scl = np.full(n, 4, np.uint8)
    water = rng.random(n) < 0.2
    pixels[water] = rng.integers(20, 200, water.sum())
    scl[water] = 6
    return (pixels + offset).astype(np.uint16).reshape(50, -1), scl.reshape(50, -1)


def test_pixels_agree_with_metadata() -> None:
    pixels, scl = _scene(1000)
    h = decide(_props("05.00", True), pixels, scl=scl)
    assert h.offset == 1000
    assert h.evidence["pixels"]["verdict"] == "offset"
    assert h.reason.endswith("pixels agree")
    json.dumps(h.to_dict())


def test_pixels_contradict_metadata_no_offset() -> None:
    pixels, scl = _scene(0)
    h = decide(_props("05.00", True), pixels, scl=scl)
    assert h.offset == 0
    assert h.evidence["pixels_contradict_metadata"] is True
    assert h.evidence["pixels"]["verdict"] == "no_offset"
    assert h.evidence["pixels"]["p0.1"] < 750


def test_pixels_contradict_metadata_offset() -> None:
    pixels, scl = _scene(1000)
    h = decide(_props("02.14", False), pixels, scl=scl)
    assert h.offset == 1000
    assert h.evidence["pixels_contradict_metadata"] is True
    assert h.evidence["pixels"]["dark_median"] >= 950


def test_pixels_inconclusive_keeps_metadata() -> None:
    pixels = np.full((40, 40), 3000, np.uint16)  # bright, no dark surface, no SCL
    for baseline, expected in (("02.14", 0), ("05.00", 1000)):
        h = decide(_props(baseline, None), pixels)
        assert h.offset == expected
        assert h.evidence["pixels"]["verdict"] == "inconclusive"


def test_valid_restricts_pixels() -> None:
    pixels, scl = _scene(0)
    valid = (scl != 6).astype(np.uint8)  # hide the water: only bright land is left
    h = decide(_props("05.00", True), pixels, valid)
    assert h.evidence["pixels"]["verdict"] == "inconclusive"
    assert h.offset == 1000


def test_to_dict() -> None:
    h = decide(_props("05.00", False))
    d = json.loads(json.dumps(h.to_dict()))
    assert d["offset"] == 1000 and d["evidence"]["flag_disagrees"] is True


def test_apply_offset_exact() -> None:
    row = [0, 1, 999, 1000, 1001, 65535]
    stack = np.array([[row], [row]], np.uint16)
    valid = np.array([[[1, 1, 1, 1, 1, 0]], [[1, 1, 1, 1, 1, 1]]], np.uint8)
    out = apply_offset(stack, [1000, 0], valid)
    assert out is stack
    np.testing.assert_array_equal(stack[0], [[0, 1, 1, 1, 1, 65535]])
    np.testing.assert_array_equal(stack[1], [[0, 1, 999, 1000, 1001, 65535]])
    stack2 = np.array([[[5000, 1500]]], np.uint16)
    apply_offset(stack2, [1000], np.ones_like(stack2, np.uint8))
    np.testing.assert_array_equal(stack2, [[[4000, 500]]])


def test_apply_offset_errors() -> None:
    stack = np.zeros((2, 2, 2), np.uint16)
    with pytest.raises(InputError):
        apply_offset(stack, [1000], np.ones_like(stack))
    with pytest.raises(InputError):
        apply_offset(stack.astype(np.int32), [0, 0], np.ones_like(stack))
    with pytest.raises(InputError):
        apply_offset(stack, [0, 0], np.ones((2, 2), np.uint8))
    with pytest.raises(InputError):
        decide("not a dict")  # type: ignore[arg-type]
