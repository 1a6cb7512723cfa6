"""BOA offset decisions (metadata prior, pixels, the tile's other scenes) and apply_offset."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cloudfree import storage
from cloudfree.errors import InputError, SourceReadError
from cloudfree.harmonize import (
    PixelSample,
    SceneInput,
    apply_offset,
    cross_scene,
    decide,
    decide_tile,
    harmonize_scenes,
    metadata_prior,
    parse_baseline,
)

FLAG = "earthsearch:boa_offset_applied"


def _props(baseline: str | None, flag: bool | None) -> dict:
    props: dict = {"datetime": "2020-03-02T10:00:00Z"}
    if baseline is not None:
        props["s2:processing_baseline"] = baseline
    if flag is not None:
        props[FLAG] = flag
    return props


# --- 1. the metadata prior (Earth Search v1 convention; see cloudfree.harmonize) -------------
@pytest.mark.parametrize(("collection", "baseline", "flag", "offset", "confidence"), [
    ("sentinel-2-l2a", "02.14", False, 0, 0.98),  # the real _0 items of 2020
    ("sentinel-2-l2a", "02.14", True, 0, 0.98),  # before 04.00 there is nothing to remove
    ("sentinel-2-l2a", "05.00", True, 0, 0.9),  # the real _1 items: harmonised by E84 (#9)
    ("sentinel-2-l2a", "05.09", False, 1000, 0.7),  # usually +1000; wrong on some (#66, #71)
    ("sentinel-2-l2a", "04.00", None, 1000, 0.6),  # no flag: ESA's convention
    ("sentinel-2-c1-l2a", "05.10", None, 1000, 0.95),  # C1 keeps +1000 and says so (#41)
    ("sentinel-2-c1-l2a", "05.10", True, 1000, 0.95),
])
def test_prior_table(collection, baseline, flag, offset, confidence) -> None:
    prior = metadata_prior(_props(baseline, flag), collection)
    assert (prior.offset, prior.confidence) == (offset, confidence)
    h = decide(_props(baseline, flag), collection=collection)
    assert h.offset == offset and h.evidence["decided_by"] == "metadata"
    assert h.evidence["prior"] == {"offset": offset, "confidence": confidence,
                                   "reason": prior.reason}


def test_prior_reasons_cite_the_convention() -> None:
    assert metadata_prior(_props("02.14", False)).reason == \
        "processing baseline 02.14 < 04.00: never offset"
    assert "earth-search #9" in metadata_prior(_props("05.00", True)).reason
    assert "#66" in metadata_prior(_props("05.09", False)).reason


def test_collection1_without_baseline() -> None:
    h = decide({}, collection="sentinel-2-c1-l2a")
    assert h.offset == 1000 and "sentinel-2-c1-l2a" in h.reason


def test_prior_fallbacks() -> None:
    assert decide({"s2:product_uri": "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU"}).offset \
        == 1000  # raw ESA product name, no flag
    assert decide({"datetime": "2023-05-01T00:00:00Z"}).offset == 1000
    assert decide({"datetime": "2021-05-01T00:00:00Z"}).offset == 0
    assert decide({FLAG: True}).offset == 0  # the flag's meaning: the offset was removed
    assert decide({"datetime": "2023-05-01T00:00:00Z", FLAG: True}).offset == 0
    h = decide({})
    assert h.offset == 0 and h.reason.startswith("nothing known")
    assert metadata_prior({}).confidence == 0.5


def test_parse_baseline() -> None:
    assert parse_baseline({"s2:processing_baseline": "04.00"}) == 4.0
    assert parse_baseline({"s2:processing_baseline": "N0509"}) == 5.09  # ESA N-form
    assert parse_baseline({}) is None
    with pytest.raises(InputError):
        parse_baseline({"s2:processing_baseline": "abc"})


# --- 2. the scene's own pixels ------------------------------------------------------------------
def _scene(offset: int, n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic NIR band: land 2000-4000, 20 % water 20-200; plus ``offset``; and its SCL."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(2000, 4000, n)
    scl = np.full(n, 4, np.uint8)
    water = rng.random(n) < 0.2
    pixels[water] = rng.integers(20, 200, water.sum())
    scl[water] = 6
    return (pixels + offset).astype(np.uint16).reshape(50, -1), scl.reshape(50, -1)


def test_pixels_agree_with_prior() -> None:
    pixels, scl = _scene(1000)
    h = decide(_props("05.09", False), pixels, scl=scl)
    assert h.offset == 1000 and h.evidence["decided_by"] == "pixels"
    assert h.evidence["pixels"]["verdict"] == "offset"
    assert "contradicts_prior" not in h.evidence
    assert h.reason.endswith("pixels agree (offset)")
    json.dumps(h.to_dict())


def test_pixels_overrule_a_wrong_flag_false() -> None:
    """earth-search #66/#71: flag false, yet the pixels are harmonised."""
    pixels, scl = _scene(0)
    h = decide(_props("05.09", False), pixels, scl=scl)
    assert h.offset == 0
    assert h.evidence["contradicts_prior"] is True
    assert h.evidence["pixels"]["verdict"] == "no_offset"
    assert h.evidence["pixels"]["p0.1"] < 750


def test_pixels_overrule_a_wrong_flag_true() -> None:
    pixels, scl = _scene(1000)
    h = decide(_props("05.09", True), pixels, scl=scl)
    assert h.offset == 1000 and h.evidence["contradicts_prior"] is True
    assert h.evidence["pixels"]["dark_median"] >= 950


def test_pixels_inconclusive_keeps_prior() -> None:
    pixels = np.full((40, 40), 3000, np.uint16)  # bright, no dark surface, no SCL
    for baseline, flag, expected in (("02.14", None, 0), ("05.09", False, 1000),
                                     ("05.09", True, 0)):
        h = decide(_props(baseline, flag), pixels)
        assert h.offset == expected
        assert h.evidence["pixels"]["verdict"] == "inconclusive"
        assert h.evidence["decided_by"] == "metadata"


def test_dark_classes_too_bright_to_be_dark_prove_nothing() -> None:
    """SCL 2 on bright rock (median 2500) is no dark surface: inconclusive, not "offset"."""
    pixels = np.full((40, 40), 2500, np.uint16)
    scl = np.full((40, 40), 5, np.uint8)
    scl[:10] = 2
    px = decide(_props("05.09", True), pixels, scl=scl).evidence["pixels"]
    assert px["dark_median"] == 2500 and px["verdict"] == "inconclusive"
    pixels[:10] = 1200  # a real dark surface with the offset
    assert decide(_props("05.09", True), pixels, scl=scl).offset == 1000


def test_valid_restricts_pixels() -> None:
    pixels, scl = _scene(0)
    valid = (scl != 6).astype(np.uint8)  # hide the water: only bright land is left
    h = decide(_props("05.09", False), pixels, valid)
    assert h.evidence["pixels"]["verdict"] == "inconclusive"
    assert h.offset == 1000  # the prior (flag false); the other scenes decide in a tile


def test_to_dict() -> None:
    h = decide(_props("05.09", False))
    d = json.loads(json.dumps(h.to_dict()))
    assert set(d) == {"offset", "reason", "evidence"}
    assert d["offset"] == 1000 and d["evidence"][FLAG] is False
    assert d["evidence"]["prior"]["confidence"] == 0.7


# --- 3. the tile's other scenes -----------------------------------------------------------------
SIDE = 60


def _surface(seed: int = 1, bright: bool = True) -> np.ndarray:
    """A static surface in SWIR (DN, no offset): desert 3000-5500, or vegetation 1500-2500."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    smooth = np.sin(xx / 7.0) + np.cos(yy / 5.0)
    lo, hi = (3000, 5500) if bright else (1500, 2500)
    return lo + (hi - lo) * (smooth + 2) / 4 + rng.normal(0, 80, (SIDE, SIDE))


def _sample(surface: np.ndarray, offset: int, seed: int, cloud: float = 0.3,
            snow: float = 0.0, gain: float = 1.0) -> PixelSample:
    """One scene: surface * gain + noise + offset; random clouds (SCL 9) and snow (SCL 11)."""
    rng = np.random.default_rng(seed)
    dn = surface * gain + rng.normal(0, 60, surface.shape) + offset
    scl = np.full(surface.shape, 5, np.uint8)
    r = rng.random(surface.shape)
    scl[r < cloud] = 9
    scl[(r >= cloud) & (r < cloud + snow)] = 11
    dn = np.clip(dn, 1, 32766).astype(np.uint16)
    dn[scl == 9] = 8000
    return PixelSample(pixels=dn, scl=scl, compare=dn, compare_band="swir16")


def _inputs(truths: list[int], flags: list[bool], **kw) -> list[SceneInput]:
    surface = _surface()
    out = []
    for i, (t, f) in enumerate(zip(truths, flags, strict=True)):
        sample = _sample(surface, t, seed=100 + i, gain=1 + 0.03 * np.sin(i), **kw)
        out.append(SceneInput(_props("05.09", f), "sentinel-2-l2a", sample))
    return out


def test_desert_mixed_scenes_every_decision_right() -> None:
    """12 desert scenes, 4 still carry +1000; two flags wrong (one each way): all right."""
    truths = [0, 0, 1000, 0, 0, 1000, 0, 0, 1000, 0, 1000, 0]
    flags = [t == 0 for t in truths]
    flags[1] = False  # harmonised, flag says not (earth-search #66, #71)
    flags[8] = True  # +1000 still there, flag says removed
    decisions = decide_tile(_inputs(truths, flags))
    assert [d.offset for d in decisions] == truths
    for i, d in enumerate(decisions):
        assert d.evidence["pixels"]["verdict"] == "inconclusive", i  # no scene decides alone
        assert d.evidence["decided_by"] == "cross_scene"
        assert abs(d.evidence["cross_scene"]["step_dn"]) <= 300  # a 3 % gain change: ~120 DN
        assert d.evidence.get("contradicts_prior", False) == (i in (1, 8))
    assert decisions[1].evidence["cross_scene"]["flipped"] is True
    assert "overruling the prior" in decisions[8].reason


def test_single_level_tile_follows_the_confident_priors() -> None:
    """All scenes harmonised; 6 flags true (0.9) vs 5 wrong flags false (0.7): all 0."""
    truths = [0] * 11
    flags = [True] * 6 + [False] * 5
    decisions = decide_tile(_inputs(truths, flags))
    assert [d.offset for d in decisions] == truths
    vote = decisions[0].evidence["cross_scene"]["level_vote"]
    assert vote["0"] > vote["1000"]
    # all carrying +1000, 8 flags false (0.7) vs 2 wrong flags true (0.9): all 1000
    decisions = decide_tile(_inputs([1000] * 10, [False] * 8 + [True] * 2))
    assert [d.offset for d in decisions] == [1000] * 10
    # the stated confidences weigh: 4 flags true (0.9) outvote 6 flags false (0.7),
    # log-likelihood 4 ln .9 + 6 ln .3 = -7.65 against 4 ln .1 + 6 ln .7 = -11.35
    decisions = decide_tile(_inputs([1000] * 10, [False] * 6 + [True] * 4))
    vote = decisions[0].evidence["cross_scene"]["level_vote"]
    assert vote == {"0": -7.645, "1000": -11.35}
    assert [d.offset for d in decisions] == [0] * 10  # the limit: one level, no anchor


def test_anchor_beats_a_wrong_majority() -> None:
    """A scene whose own pixels decide (water) anchors the level for the desert scenes."""
    truths = [0] * 6
    flags = [False] * 5 + [True]  # 5 wrong flags false: the priors' majority is wrong
    inputs = _inputs(truths, flags)
    water_scene = inputs[5].sample
    pixels = water_scene.pixels.copy()
    scl = water_scene.scl.copy()
    pixels[:20] = 150  # dark water without the offset: the scene's own pixels say no offset
    scl[:20] = 6
    inputs[5] = SceneInput(inputs[5].properties, "sentinel-2-l2a",
                           PixelSample(pixels, scl, water_scene.compare, "swir16"))
    decisions = decide_tile(inputs)
    assert decisions[5].evidence["decided_by"] == "pixels"
    assert [d.offset for d in decisions] == truths
    assert all(d.evidence["cross_scene"].get("flipped") for d in decisions[:5])


def test_snow_and_few_clear_pixels() -> None:
    """A mostly snowy scene (SCL 11) and a nearly overcast one: decided on what stays clear."""
    surface = _surface()
    truths = [0, 0, 1000, 0, 1000, 0, 0]
    inputs = [SceneInput(_props("05.09", t == 0), "sentinel-2-l2a",
                         _sample(surface, t, seed=i, cloud=0.2)) for i, t in enumerate(truths)]
    snowy = _sample(surface, 1000, seed=50, cloud=0.05, snow=0.85)
    overcast = _sample(surface, 0, seed=51, cloud=0.96)
    inputs += [SceneInput(_props("05.09", True), "sentinel-2-l2a", snowy),  # wrong flag
               SceneInput(_props("05.09", False), "sentinel-2-l2a", overcast)]  # wrong flag
    decisions = decide_tile(inputs)
    assert decisions[-2].offset == 1000 and decisions[-2].evidence["decided_by"] == "cross_scene"
    assert decisions[-2].evidence["pixels"]["verdict"] == "inconclusive"
    n_overcast = decisions[-1].evidence["cross_scene"]["n_pixels"]
    assert n_overcast >= 100
    assert decisions[-1].offset == 0
    assert [d.offset for d in decisions[:-2]] == truths


def test_too_few_co_located_pixels_keep_the_prior() -> None:
    surface = _surface()
    inputs = [SceneInput(_props("05.09", True), "sentinel-2-l2a", _sample(surface, 0, seed=i))
              for i in range(4)]
    inputs.append(SceneInput(_props("05.09", True), "sentinel-2-l2a",
                             _sample(surface, 1000, seed=9, cloud=0.996)))  # ~14 clear pixels
    d = decide_tile(inputs)[-1]
    assert d.offset == 0 and d.evidence["decided_by"] == "metadata"
    assert d.evidence["cross_scene"]["step_dn"] is None
    assert "too few co-located clear pixels" in d.reason
    # ~36 clear pixels (MIN_OVERLAP is 30) are enough to see a 1000 DN step
    inputs[-1] = SceneInput(_props("05.09", True), "sentinel-2-l2a",
                            _sample(surface, 1000, seed=9, cloud=0.99))
    d = decide_tile(inputs)[-1]
    assert d.offset == 1000 and d.evidence["decided_by"] == "cross_scene"
    assert 30 <= d.evidence["cross_scene"]["n_pixels"] < 60


def test_vegetation_season_is_not_a_step() -> None:
    """A 15 % seasonal change of a vegetated surface stays far from a 1000 DN step."""
    surface = _surface(bright=False)
    inputs = [SceneInput(_props("05.09", i % 3 != 0), "sentinel-2-l2a",
                         _sample(surface, 0 if i % 3 else 1000, seed=i,
                                 gain=1 + 0.15 * np.sin(i))) for i in range(9)]
    decisions = decide_tile(inputs)
    assert [d.offset for d in decisions] == [0 if i % 3 else 1000 for i in range(9)]
    steps = [d.evidence["cross_scene"]["step_dn"] for d in decisions]
    assert max(abs(x) for x in steps) < 700 and not any(  # measured: at most 405 DN
        d.evidence["cross_scene"].get("flipped") for d in decisions)
    for d, step in zip(decisions, steps, strict=True):  # ambiguous steps: the prior stays
        assert d.evidence["decided_by"] == ("cross_scene" if abs(step) <= 300 else "metadata")


def test_cross_scene_errors() -> None:
    with pytest.raises(InputError):
        cross_scene([None], [], [None])
    a = np.zeros(4, np.float32)
    with pytest.raises(InputError):
        cross_scene([a, np.zeros(5, np.float32)], [metadata_prior({})] * 2, [None, None])


def test_harmonize_scenes_fills_the_manifest_and_survives_unreadable_samples() -> None:
    surface = _surface()
    truths = [0, 1000, 0, 0, 1000]
    samples = {f"s{i}": _sample(surface, t, seed=i) for i, t in enumerate(truths)}
    scenes = [{"id": f"s{i}", "assets": {"red": f"s{i}"}, "collection": "sentinel-2-l2a",
               "properties": _props("05.09", t == 0)} for i, t in enumerate(truths)]
    scenes.append({"id": "bad", "assets": {"red": "bad"}, "collection": "sentinel-2-l2a",
                   "properties": _props("05.09", False)})

    def read(assets: dict) -> PixelSample:
        if assets["red"] == "bad":
            raise SourceReadError("404")
        return samples[assets["red"]]

    decisions = harmonize_scenes(scenes, read)
    assert [d.offset for d in decisions] == [*truths, 1000]
    assert scenes[1]["harmonization"] == decisions[1].to_dict()
    assert set(scenes[1]["harmonization"]) == {"offset", "reason", "evidence"}
    bad = scenes[-1]["harmonization"]
    assert bad["evidence"]["decided_by"] == "metadata"
    assert "SourceReadError: 404" in bad["evidence"]["sample_error"]
    json.dumps([s["harmonization"] for s in scenes])


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


def test_apply_offset_is_the_masked_clamp_on_random_stacks() -> None:
    """The uint16 passes give the DNs of the masked copy they replaced (max(DN, offset + 1) -
    offset where valid and DN > 0), on every DN edge, uint8 masks of any value and views."""
    rng = np.random.default_rng(4)
    edges = np.array([0, 1, 2, 999, 1000, 1001, 1002, 65534, 65535], np.uint16)
    stack = rng.integers(0, 65536, (5, 3, 7, 9)).astype(np.uint16)
    stack[:, :, 0, :] = np.resize(edges, (5, 3, 9))
    valid = rng.integers(0, 3, (5, 7, 9)).astype(np.uint8)  # 2 is valid too
    offsets = [1000, 0, 1, 65534, 3000]
    want = stack[:, 1].copy()
    for s, off in enumerate(offsets):
        shifted = np.maximum(want[s], np.uint16(off + 1)) - np.uint16(off)
        np.copyto(want[s], shifted, where=(valid[s] != 0) & (want[s] > 0))
    before = stack.copy()
    apply_offset(stack[:, 1], offsets, valid)  # a view: written in place
    np.testing.assert_array_equal(stack[:, 1], want)
    np.testing.assert_array_equal(np.delete(stack, 1, axis=1), np.delete(before, 1, axis=1))


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


def test_harmonize_scenes_reads_the_samples_side_by_side_in_scene_order() -> None:
    """Samples of remote files are latency-bound reads: four readers must be inside ``read`` at
    once (a barrier that a one-by-one loop would never pass), and decisions keep the scene
    order. Local files are read on two threads at most (``storage.latency_threads``)."""
    import threading

    surface = _surface()
    truths = [0, 1000, 0, 1000]
    samples = {f"s{i}": _sample(surface, t, seed=i) for i, t in enumerate(truths)}

    def scenes_at(prefix: str) -> list[dict]:
        return [{"id": f"s{i}", "assets": {"red": f"{prefix}s{i}"},
                 "collection": "sentinel-2-l2a", "properties": _props("05.09", t == 0)}
                for i, t in enumerate(truths)]

    together = threading.Barrier(len(truths), timeout=10)
    threads = set()

    def read(assets: dict) -> PixelSample:
        threads.add(threading.get_ident())
        together.wait()
        return samples[assets["red"].rsplit("/", 1)[-1]]

    scenes = scenes_at("s3://sentinel-cogs/")
    decisions = harmonize_scenes(scenes, read)
    assert [d.offset for d in decisions] == truths
    assert [s["harmonization"]["offset"] for s in scenes] == truths
    assert len(threads) == len(truths)

    threads.clear()
    local = scenes_at("/data/")
    decisions = harmonize_scenes(local, lambda a: samples[a["red"].rsplit("/", 1)[-1]]
                                 if threads.add(threading.get_ident()) is None else None)
    assert [d.offset for d in decisions] == truths
    assert 1 <= len(threads) <= 2
    assert storage.latency_threads(["/data/a.tif"], 8, local=2) == min(2, os.cpu_count() or 1)


@pytest.mark.parametrize("n_scenes,among", [(16, None), (16, [0, 3, 9]), (5, None),
                                            (3, [1]), (2, None), (1, None)])
def test_steps_read_from_one_sort_are_the_leave_one_out_medians(n_scenes, among) -> None:
    """Each scene's reference (its others' median per pixel) read from the pool sorted once
    equals ``np.nanmedian`` of the others, with NaNs (not clear), ties (integer DNs) and
    offsets, for every scene in the pool or outside it (``among``: the anchors)."""
    from cloudfree.harmonize import MIN_OVERLAP, _steps

    rng = np.random.default_rng(n_scenes)
    values = rng.integers(300, 320, (n_scenes, 4000)).astype(np.float32)  # many ties
    values[rng.random(values.shape) < 0.35] = np.nan
    offsets = rng.choice([0, 1000], n_scenes).astype(np.int64)
    corrected = values - offsets[:, None].astype(np.float32)
    pool = list(range(n_scenes)) if among is None else among
    want_steps, want_support = [], []
    for i in range(n_scenes):
        rows = [j for j in pool if j != i]
        if not rows:
            want_steps.append(None)
            want_support.append(0)
            continue
        count = (~np.isnan(values[rows])).sum(axis=0)
        ok = ~np.isnan(values[i]) & (count >= min(2, len(rows)))
        want_support.append(int(ok.sum()))
        if ok.sum() < MIN_OVERLAP:
            want_steps.append(None)
            continue
        reference = np.nanmedian(corrected[rows][:, ok], axis=0)
        want_steps.append(float(np.median(corrected[i, ok] - reference)))
    steps, support = _steps(values, offsets, among)
    assert support == want_support
    assert steps == want_steps
    assert any(s is not None for s in steps) or n_scenes == 1
