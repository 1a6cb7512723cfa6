"""``cloudfree synth`` sky settings (issue 8): patches SCL misses, a cloudy year, edge haze.

Renders one small window with the library's renderer (no files): cheap and exact.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from cloudfree.errors import InputError
from cloudfree.grid import parse_tile
from cloudfree.synth.render import PATCH_CELL_M, Renderer, Sky, Win
from cloudfree.synth.scenes import draw_weather, plan_acquisitions
from cloudfree.synth.truth import Landscape

TILE = parse_tile("33UUP")
WIN = Win(100, 100, 40, 32)  # 2.4 x 1.9 km: two patch cells across


def _renderer(sky: Sky) -> Renderer:
    return Renderer(Landscape(3, TILE.zone), TILE.origin, sky=sky)


@pytest.fixture(scope="module")
def cloudy_acquisition():
    acqs = plan_acquisitions(TILE, 2023, 12, 3, "cloudy")
    return max(acqs, key=lambda a: abs(a.weather.cloud_cover - 0.5) * -1)


def test_missed_patches_keep_the_pixels_and_hide_only_clouds_and_shadows(cloudy_acquisition):
    acq = cloudy_acquisition
    faithful = _renderer(Sky("cloudy", 0.0)).render(acq, WIN)
    missing = _renderer(Sky("cloudy", 0.5))
    r = missing.render(acq, WIN)
    for key, dn in faithful.bands.items():  # the pixels stay cloudy / shadowed
        np.testing.assert_array_equal(r.bands[key], dn)
    np.testing.assert_array_equal(r.scl_true, faithful.scl)
    changed = r.scl != faithful.scl
    assert changed.any()
    assert np.isin(faithful.scl[changed], (3, 8, 9)).all()  # only cloud/shadow are hidden
    assert np.isin(r.scl[changed], (2, 4, 5, 6, 11)).all()  # shown as the ground below
    report = missing.missed_report(WIN, r)
    assert report["cloud_pixels"] + report["shadow_pixels"] == int(changed.sum())
    # whole cells: a cell is either missed or not, for every cloud pixel inside it
    g = WIN.grid(TILE.origin, 20)
    cx = np.floor((g.xs - TILE.origin[0]) / PATCH_CELL_M).astype(int)
    cy = np.floor((TILE.origin[1] - g.ys) / PATCH_CELL_M).astype(int)
    cloud = np.isin(faithful.scl, (8, 9))
    for kind, col, row in report["cells"]:
        inside = (cy[:, None] == row) & (cx[None, :] == col)
        if kind == "cloud":
            assert not np.isin(r.scl[inside & cloud], (8, 9)).any()
    # deterministic per cell: rendering the window again misses the same patches
    np.testing.assert_array_equal(missing.render(acq, WIN).scl, r.scl)


def test_share_of_missed_cells_follows_the_setting():
    acq = plan_acquisitions(TILE, 2023, 12, 3)[0]
    g = Win(0, 0, 1830, 1).grid(TILE.origin, 20)
    for share in (0.1, 0.3):
        miss, _ = _renderer(Sky("normal", share)).missed_cells(acq, g)
        cols = miss[0, :: PATCH_CELL_M // 20]  # one pixel per cell along a row: 58 cells
        assert abs(cols.mean() - share) < 0.15


def test_cloudy_year_is_cloudier():
    def mean_cover(kind):
        rng = np.random.default_rng(0)
        return np.mean([draw_weather(rng, date(2023, 7, 1), 10.0, kind).cloud_cover
                        for _ in range(400)])

    normal, cloudy = mean_cover("normal"), mean_cover("cloudy")
    assert 0.3 < normal < 0.4 and 0.45 < cloudy < 0.58
    with pytest.raises(InputError, match="cloudiness"):
        draw_weather(np.random.default_rng(0), date(2023, 7, 1), 10.0, "stormy")


def test_edge_haze_is_unflagged_and_brightens_the_blue(cloudy_acquisition):
    acq = cloudy_acquisition
    plain = _renderer(Sky("cloudy", 0.0, 0.0)).render(acq, WIN)
    hazy = _renderer(Sky("cloudy", 0.0, 0.2)).render(acq, WIN)
    np.testing.assert_array_equal(hazy.scl, plain.scl)  # SCL does not see it
    haze10 = np.repeat(np.repeat(hazy.haze, 2, axis=0), 2, axis=1)
    thick = haze10 > 0.1
    assert thick.any() and np.isin(hazy.scl[hazy.haze > 0], (2, 4, 5, 6, 7)).all()
    diff = hazy.bands["blue"].astype(int) - plain.bands["blue"].astype(int)
    assert diff[thick].min() > 300 and (diff[haze10 == 0] == 0).all()
    assert not hazy.truly_clear()[hazy.haze >= 0.01].any()
    assert hazy.truly_clear()[(hazy.haze == 0) & (hazy.scl_true == 4)].all()


def test_sky_validation():
    with pytest.raises(InputError, match="scl_miss"):
        Sky("normal", 1.5)
    with pytest.raises(InputError, match="edge_haze"):
        Sky("normal", 0.1, 0.9)
    with pytest.raises(InputError, match="cloudiness"):
        Sky("stormy")
    assert Sky().to_dict() == {"cloudiness": "normal", "scl_miss": 0.0, "edge_haze": 0.0}


def test_cli_options(capsys):
    import argparse

    from cloudfree.synth.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["synth", "--tiles", "33UUP", "--year", "2023", "--cloudiness",
                              "cloudy", "--scl-miss", "0.3", "--edge-haze", "0.2"])
    assert (args.cloudiness, args.scl_miss, args.edge_haze) == ("cloudy", 0.3, 0.2)
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--tiles", "33UUP", "--year", "2023", "--scl-miss", "2"])
    assert "share in 0..1" in capsys.readouterr().err


def test_a_faithful_sky_writes_the_true_classes_and_reports_nothing_missed(cloudy_acquisition):
    """The default sky (the demo's, CI's): the written SCL is the true one, no edge haze."""
    renderer = _renderer(Sky("cloudy"))
    r = renderer.render(cloudy_acquisition, WIN)
    assert np.isin(r.scl, (3, 8, 9)).any()  # clouds or shadows to miss, and none missed
    np.testing.assert_array_equal(r.scl, r.scl_true)
    assert not r.haze.any()
    assert renderer.missed_report(WIN, r) == {"cloud_pixels": 0, "shadow_pixels": 0,
                                              "haze_pixels": 0, "cells": set()}
