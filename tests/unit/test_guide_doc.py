"""docs/guide.md stays runnable: its blocks are marked, and every AWS-only block is followed by
a local equivalent that tests/integration/test_viewer_guide.py runs."""

from __future__ import annotations

from tests.guide import blocks


def test_every_block_is_marked_and_aws_blocks_have_a_local_equivalent():
    found = blocks()
    assert len(found) >= 15
    unmarked = [b.name for b in found if b.mark not in ("test", "aws")]
    assert not unmarked, f"mark these blocks 'test' or 'aws': {unmarked}"
    assert {b.lang for b in found if b.mark == "test"} == {"bash", "python"}
    for i, b in enumerate(found):
        if b.mark == "aws":
            following = [x.mark for x in found[i + 1:]]
            assert "test" in following and set(following[:following.index("test")]) <= {"aws"}, \
                f"{b.name}: an AWS-only block needs a local equivalent ('test') after it"


def test_guide_covers_the_issue_topics():
    text = "\n".join(b.code for b in blocks())
    for needle in ("sam deploy --guided", "--aoi", "--world", "cloudfree status",
                   "cloudfree reprocess", "gdalinfo", "rasterio", "cloudfree catalog load",
                   "cost_per_done_tile", "cloudfree view"):
        assert needle in text, needle
