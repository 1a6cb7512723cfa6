"""Mid-median failures: a read is retried as transient, then the scene is excluded for that band
with a record, and every window of the band ends up computed from the same scene set — so the
band's bytes do not depend on which window met the bad block first."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from cloudfree import composite as _composite
from cloudfree import windows
from cloudfree.assemble import stitch
from cloudfree.errors import SourceReadError
from cloudfree.manifest import band_exclusions
from cloudfree.windows import Window

from .test_composite import LocalLayout, make_scenes

# These stacks hold only blue + SCL: they test masking and the median, so outlier rejection
# (issue 8, default on, needs the blue/red/nir08 reference bands) is off here; it is tested in
# test_outliers.py and test_composite_outliers.py.
composite_band_windows = partial(_composite.composite_band_windows, outliers="off")
reconcile_band = partial(_composite.reconcile_band, outliers="off")

WINDOWS = [Window(r, c, 1024, 1024) for r in (0, 1024) for c in (0, 1024)]
BAD = 1  # the scene whose blue asset has an unreadable block


@pytest.fixture(scope="module")
def scenes_doc(tmp_path_factory) -> dict:
    return make_scenes(tmp_path_factory.mktemp("scenes"))


@pytest.fixture(autouse=True, params=["in-turn", "read-ahead"])
def read_ahead(request):
    """Every test twice: windows read in turn, and each next window read while the current one
    is composited (``composite._ReadAhead``: a failing read then surfaces from the reader)."""
    with pytest.MonkeyPatch.context() as mp:  # the tests' own monkeypatch.undo() keeps it
        if request.param == "read-ahead":
            mp.setattr(_composite, "read_ahead_fits", lambda *args, **kwargs: True)
        yield request.param


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    slept = []
    monkeypatch.setattr(windows, "_sleep", slept.append)
    return slept


def _failing(monkeypatch, href: str, bad_windows: set[str], times: int | None = None):
    """Make reads of ``href`` fail in ``bad_windows`` (always, or the first ``times`` tries)."""
    real = windows._read_once
    calls = {"n": 0}

    def fake(h, window, band_index, out_dtype, out=None):
        if h == href and window.key in bad_windows and (times is None or calls["n"] < times):
            calls["n"] += 1
            raise OSError(f"TIFFReadEncodedTile() failed on {window.key}")
        return real(h, window, band_index, out_dtype, out)

    monkeypatch.setattr(windows, "_read_once", fake)
    return calls


def _run_band(doc: dict, root: Path, batches: list[list[Window]]) -> tuple[LocalLayout, bytes]:
    """Median over the batches in order, then reconcile and stitch: the band's bytes."""
    layout = LocalLayout(root)
    for batch in batches:
        composite_band_windows(doc, "blue", batch, layout, 2023, "33UUP", threads=2)
    reconcile_band(doc, "blue", WINDOWS, layout, 2023, "33UUP", threads=2)
    uris = [layout.window_result(2023, "33UUP", "blue", w.row_off, w.col_off) for w in WINDOWS]
    out = stitch(uris, "33UUP", "blue", workdir=root / "stitch", tile_size=2048)
    return layout, Path(out).read_bytes()


def test_transient_failure_is_retried_and_excludes_nothing(scenes_doc, tmp_path, monkeypatch,
                                                           no_sleep):
    href = scenes_doc["scenes"][BAD]["assets"]["blue"]
    calls = _failing(monkeypatch, href, {WINDOWS[2].key}, times=windows.READ_ATTEMPTS - 1)
    layout, got = _run_band(scenes_doc, tmp_path / "a", [WINDOWS])
    assert calls["n"] == windows.READ_ATTEMPTS - 1 and no_sleep == [1.0, 2.0]
    assert band_exclusions(layout, 2023, "33UUP", "blue") == []
    monkeypatch.undo()
    _, clean = _run_band(scenes_doc, tmp_path / "b", [WINDOWS])
    assert got == clean


def test_persistent_failure_excludes_the_scene_for_the_band_only(scenes_doc, tmp_path,
                                                                 monkeypatch):
    sid = scenes_doc["scenes"][BAD]["id"]
    href = scenes_doc["scenes"][BAD]["assets"]["blue"]
    _failing(monkeypatch, href, {WINDOWS[3].key})
    layout, got = _run_band(scenes_doc, tmp_path / "fail", [WINDOWS])
    records = band_exclusions(layout, 2023, "33UUP", "blue")
    assert [(e.band, e.scene, e.stage) for e in records] == [("blue", sid, "median")]
    assert records[0].reason.startswith(f"blue: read failed: reading {WINDOWS[3].key} of {href}")
    for w in WINDOWS:  # every window of the band uses the final scene set
        stats = json.loads(Path(layout.window_stats(2023, "33UUP", "blue", w.row_off,
                                                    w.col_off)).read_text())
        assert sid not in stats["scenes"] and len(stats["scenes"]) == 3
        assert sid not in stats["contributions"]
    # the same bytes as a manifest that never had the scene's blue asset
    without = {**scenes_doc, "scenes": [s for s in scenes_doc["scenes"] if s["id"] != sid]}
    monkeypatch.undo()
    _, expected = _run_band(without, tmp_path / "without", [WINDOWS])
    assert got == expected


def test_same_bytes_whether_the_bad_block_is_in_the_first_or_a_later_window(
        scenes_doc, tmp_path, monkeypatch):
    href = scenes_doc["scenes"][BAD]["assets"]["blue"]
    _failing(monkeypatch, href, {WINDOWS[0].key})
    _, first = _run_band(scenes_doc, tmp_path / "first", [WINDOWS[:2], WINDOWS[2:]])
    monkeypatch.undo()
    _failing(monkeypatch, href, {WINDOWS[3].key})
    # later: windows 0-2 were written with the scene by an earlier invocation, then excluded
    layout, later = _run_band(scenes_doc, tmp_path / "later", [WINDOWS[:2], WINDOWS[2:]])
    assert first == later
    # and a rerun of the median changes nothing (the record stays, windows are skipped)
    again = composite_band_windows(scenes_doc, "blue", WINDOWS, layout, 2023, "33UUP")
    assert [d["skipped"] for d in again] == [True] * 4


def test_every_scene_failing_raises_and_records_nothing(scenes_doc, tmp_path, monkeypatch):
    def down(*args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(windows, "_read_once", down)
    layout = LocalLayout(tmp_path)
    with pytest.raises(SourceReadError, match="4 of 4 sources failed"):
        composite_band_windows(scenes_doc, "blue", WINDOWS[:1], layout, 2023, "33UUP")
    assert band_exclusions(layout, 2023, "33UUP", "blue") == []


def test_read_stack_tries_every_href_and_lists_the_failures(scenes_doc, monkeypatch):
    hrefs = [s["assets"]["blue"] for s in scenes_doc["scenes"]]
    _failing(monkeypatch, hrefs[0], {WINDOWS[0].key})
    with pytest.raises(SourceReadError) as info:
        windows.read_stack(hrefs, WINDOWS[0], threads=2)
    assert list(info.value.failures) == [hrefs[0]]
    assert windows.read_stack(hrefs, WINDOWS[1], threads=2).shape == (4, 1024, 1024)


def test_records_are_idempotent_and_a_new_manifest_clears_them(tmp_path):
    from cloudfree.manifest import Exclusion, clear_exclusions, record_exclusion

    layout = LocalLayout(tmp_path)
    first = Exclusion("blue", "S2A_X", "blue: read failed: a", "median")
    record_exclusion(layout, 2023, "33UUP", first)
    record_exclusion(layout, 2023, "33UUP", Exclusion("blue", "S2A_X", "later reason", "median"))
    record_exclusion(layout, 2023, "33UUP", Exclusion("nir", "S2A_Y", "nir: x", "median"))
    assert band_exclusions(layout, 2023, "33UUP", "blue") == [first]  # the first reason stays
    assert clear_exclusions(layout, 2023, "33UUP") == 2
    assert band_exclusions(layout, 2023, "33UUP", "blue") == []
    assert band_exclusions(layout, 2023, "33UUP", "nir") == []
