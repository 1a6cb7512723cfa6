"""The desert demo's offset table: decisions from the manifest against the synthetic truth."""

from __future__ import annotations

from cloudfree.pipeline.demo import DEMOS, offset_decisions, print_offset_decisions


def _scene(sid: str, offset: int, by: str, flag: bool) -> dict:
    return {"id": sid, "harmonization": {"offset": offset, "reason": "r", "evidence": {
        "processing_baseline": "05.09", "earthsearch:boa_offset_applied": flag,
        "decided_by": by, "pixels": {"verdict": "inconclusive"},
        "cross_scene": {"step_dn": -2.0}}}}


def test_offset_decisions_against_truth(capsys) -> None:
    truth = {"items": [{"id": "a", "offset_in_pixels": True, "flag_wrong": True},
                       {"id": "b", "offset_in_pixels": False, "flag_wrong": False}]}
    rows = offset_decisions([_scene("a", 1000, "cross_scene", True),
                             _scene("b", 1000, "metadata", True)], truth)
    assert [(r["truth"], r["decided"], r["right"]) for r in rows] == [(1000, 1000, True),
                                                                      (0, 1000, False)]
    print_offset_decisions(rows)
    out = capsys.readouterr().out.splitlines()
    assert "true!" in out[1] and out[1].endswith("right") and out[2].endswith("WRONG")
    assert out[-1].startswith("offset decisions: 1/2 right")


def test_demo_specs() -> None:
    assert DEMOS["temperate"].tiles == ("33UUP", "33UVP") and DEMOS["temperate"].scenes == 24
    assert DEMOS["desert"].landscape == "desert" and DEMOS["desert"].tiles == ("29RKH",)
