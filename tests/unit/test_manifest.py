"""The typed scene manifest: round trip, the window plan fixed at select, clear errors."""

from __future__ import annotations

import json

import pytest

from cloudfree.bands import OUTPUT_BANDS, get_band
from cloudfree.errors import InputError
from cloudfree.manifest import MANIFEST_VERSION, BandPlan, Exclusion, Manifest
from cloudfree.windows import batch_windows, plan_windows


def selection_doc(n: int = 16) -> dict:
    scenes = [{"id": f"S2A_33UUP_202306{i:02d}_0_L2A", "datetime": f"2023-06-{i + 1:02d}",
               "assets": {"blue": f"s3://b/{i}/B02.tif", "scl": f"s3://b/{i}/SCL.tif"},
               "harmonization": {"offset": 0, "reason": "flag", "evidence": {"n": i}}}
              for i in range(n)]
    scenes[1]["observation"] = "S2A_33UUP_20230601_dt"  # a fused granule keeps its observation
    return {"tile": "33UUP", "year": 2023, "collection": "sentinel-2-l2a", "api_url": "http://x",
            "options": {"n": n}, "scenes": scenes,
            "dropped": [{"id": "gone", "reason": "not-selected"}]}


@pytest.fixture
def manifest() -> Manifest:
    return Manifest.build(selection_doc(), mask_classes=[0, 3, 8, 9], median_memory_mb=3008,
                          excluded=[Exclusion("rededge2", "S2A_33UUP_20230603_0_L2A", "404")],
                          excluded_scenes=[{"id": "noscl", "reason": "scl: no asset"}])


def test_round_trip_through_json(manifest):
    again = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again == manifest
    assert again.version == MANIFEST_VERSION == manifest.to_dict()["version"]
    assert again.scenes[1]["observation"] == "S2A_33UUP_20230601_dt"
    assert again.scenes[0]["observation"] is None  # default: its own observation
    assert again.scenes[3]["harmonization"]["evidence"] == {"n": 3}


def test_plan_is_the_memory_plan_computed_once(manifest):
    for band in OUTPUT_BANDS:
        expected = plan_windows(get_band(band), 16, 3008)
        plan = manifest.band_plan(band)
        assert list(plan.windows) == expected
        batches = batch_windows(expected, 8)
        assert [plan.batch(i) for i in range(len(plan.batches))] == batches
    work = manifest.work()
    # longest first (the band Map starts them in this order): 10 m, the visual image's five
    # batches before the bands' two, then 20 m and 60 m, each group in OUTPUT_BANDS order
    assert [w["band"] for w in work] == [
        "visual", "blue", "green", "red", "nir", "rededge1", "rededge2", "rededge3", "nir08",
        "swir16", "swir22", "coastal", "nir09"]
    assert sorted(w["band"] for w in work) == sorted(OUTPUT_BANDS)
    assert [len(w["batches"]) for w in work] == [5] + [2] * 10 + [1] * 2
    assert work[1] == {"band": "blue", "batches": list(range(len(manifest.plan["blue"].batches)))}
    assert manifest.window_count() == sum(len(plan_windows(get_band(b), 16, 3008))
                                          for b in OUTPUT_BANDS)
    # the state payload carries batch indices only, never windows
    assert len(json.dumps(work)) < 1000
    with pytest.raises(InputError, match="out of range"):
        manifest.band_plan("blue").batch(99)
    with pytest.raises(InputError, match="no plan for band"):
        manifest.band_plan("aot")


def test_scenes_for_a_band_leave_out_its_exclusions(manifest):
    ids = [s["id"] for s in manifest.scenes]
    assert [s["id"] for s in manifest.scenes_for("rededge2")] == ids[:3] + ids[4:]
    assert [s["id"] for s in manifest.scenes_for("blue")] == ids
    runtime = [Exclusion("blue", ids[0], "blue: read failed", "median")]
    assert [s["id"] for s in manifest.scenes_for("blue", runtime)] == ids[1:]


def test_decision_plan_covers_the_20m_grid_once_in_four_batches(manifest):
    plan = manifest.decision_plan()
    covered = {(r, c) for w in plan.windows
               for r in range(w.row_off, w.row_off + w.height, 6)
               for c in range(w.col_off, w.col_off + w.width, 6)}
    assert len(plan.windows) == 16 and len(plan.batches) == 4  # 1536 px squares of 5490
    assert covered == {(r, c) for r in range(0, 5490, 6) for c in range(0, 5490, 6)}
    assert sum(w.height * w.width for w in plan.windows) == 5490 ** 2  # no overlap
    assert all(w.height % 3 == 0 and w.width % 3 == 0 for w in plan.windows)  # whole 60 m px


def test_decision_scenes_are_the_set_most_bands_use(manifest):
    ids = [s["id"] for s in manifest.scenes]
    # rededge2 lost a scene at select; the 12 other bands decide with all 16 scenes
    assert [s["id"] for s in manifest.decision_scenes()] == ids
    most = Manifest.build(selection_doc(), mask_classes=[0], median_memory_mb=3008,
                          excluded=[Exclusion(b, ids[2], "404") for b in OUTPUT_BANDS[:7]])
    assert [s["id"] for s in most.decision_scenes()] == ids[:2] + ids[3:]


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("version"), "version None"),
    (lambda d: d.update(version=1), "version 1"),
    (lambda d: d.pop("plan"), "lacks \\['plan'\\]"),
    (lambda d: d.update(scenes={"a": 1}), "must be a list"),
    (lambda d: d["scenes"].append({"assets": {}}), "with an 'id'"),
    (lambda d: d["scenes"][0].pop("assets"), "no 'assets'"),
    (lambda d: d["scenes"][0].update(harmonization={"reason": "x"}), "needs an 'offset'"),
    (lambda d: d["plan"]["blue"].update(batches=[[0]]), "cover every window"),
    (lambda d: d["plan"].update(blue={"windows": 3}), "bad band plan"),
    (lambda d: d["excluded"].append({"band": "blue"}), "lacks"),
    (lambda d: d.update(year="twenty"), "malformed"),
])
def test_wrong_version_or_shape_is_a_clear_input_error(manifest, change, message):
    doc = json.loads(json.dumps(manifest.to_dict()))
    change(doc)
    with pytest.raises(InputError, match=message):
        Manifest.from_dict(doc)


def test_read_names_the_object(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="manifest.json"):
        Manifest.read(str(path))
    path.write_text(json.dumps({"tile": "33UUP", "year": 2023, "scenes": []}))  # release 1
    with pytest.raises(InputError, match="version None is not 2"):
        Manifest.read(str(path))


def test_band_plan_rejects_gaps():
    with pytest.raises(InputError):
        BandPlan.from_dict({"windows": [[0, 0, 10, 10], [0, 10, 10, 10]], "batches": [[1]]})


def test_build_needs_a_scene():
    with pytest.raises(InputError, match="at least one scene"):
        Manifest.build({"tile": "33UUP", "year": 2023, "scenes": []}, mask_classes=(0,),
                       median_memory_mb=3008)


def test_work_lists_the_visual_image_first_when_batches_tie():
    """With 6 scenes at 3008 MB the visual image and the 10 m bands have 2 batches and 9
    windows each: the visual image, 3 bytes a pixel against 2, still goes first."""
    doc = {"tile": "33UUP", "year": 2023, "scenes": [{"id": f"s{i}", "assets": {}}
                                                     for i in range(6)]}
    m = Manifest.build(doc, mask_classes=(0,), median_memory_mb=3008)
    assert len(m.plan["visual"].batches) == len(m.plan["blue"].batches) == 2
    assert len(m.plan["visual"].windows) == len(m.plan["blue"].windows)
    assert [w["band"] for w in m.work()][:5] == ["visual", "blue", "green", "red", "nir"]
