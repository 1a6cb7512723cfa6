"""Plan for the whole world on the local stack: ``"aoi": "world"`` through ``tasks.plan`` writes
the land-tile list (the package data) to the control bucket for the Distributed Map's
ItemReader, inside the plan Lambda's limits."""

from __future__ import annotations

import time
import uuid

from cloudfree import storage, tasks
from cloudfree.grid import land_tile_ids
from cloudfree.settings import Settings


def test_plan_world_on_local_s3(local_env):
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(f"cf-work-{suffix}", f"cf-data-{suffix}", f"cf-control-{suffix}")
    storage.s3_client().create_bucket(Bucket=settings.control_bucket)
    t0 = time.perf_counter()
    out = tasks.plan({"input": {"year": 2023, "aoi": "world"}, "execution": f"world-{suffix}"},
                     settings)
    seconds = time.perf_counter() - t0
    body = storage.read_bytes(f"s3://{out['tiles_bucket']}/{out['tiles_key']}")
    rows = storage.read_json(f"s3://{out['tiles_bucket']}/{out['tiles_key']}")
    print(f"\nplan world on local S3: {out['count']} tiles in {seconds:.2f} s "
          f"(resolve {out['resolve_seconds']} s), tile list {len(body):,} bytes")
    assert out["count"] == len(land_tile_ids()) == len(rows)
    assert [r["tile"] for r in rows] == list(land_tile_ids())
    assert seconds < 30
    assert len(str(out)) < 1_000  # the state payload stays small
