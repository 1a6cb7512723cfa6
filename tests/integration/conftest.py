"""Integration tests run against the local stack (started here if needed; idempotent)."""

from __future__ import annotations

import os

import pytest

from cloudfree.local import stack

#: Files whose every test is heavy: minutes of compute each, more than `make test`'s CI budget
#: (30 min on 2 cores) allows. A single test can be heavy too (``@pytest.mark.heavy``).
#: `make test-heavy` runs them (CLOUDFREE_HEAVY=1).
HEAVY_FILES: tuple[str, ...] = ()  # test_onebox_e2e.py left it: 58 s since the COG crop


def pytest_collection_modifyitems(config, items):
    heavy = os.environ.get("CLOUDFREE_HEAVY") == "1"
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if item.fspath.basename in HEAVY_FILES:
                item.add_marker(pytest.mark.heavy)
            if item.get_closest_marker("heavy") and not heavy:
                item.add_marker(pytest.mark.skip(
                    reason="heavy (minutes of compute): run `make test-heavy`"))


@pytest.fixture(scope="session")
def local_env() -> dict[str, str]:
    """Bring the local stack up (reusing what runs) and point this process at it."""
    endpoints = stack().up()
    env = endpoints.environment()
    os.environ.update(env)
    from cloudfree.storage import s3_client

    s3_client.cache_clear()
    return env


# ------------------------------------------------------------------------------------------------
# The deployed SAM application (template.yaml -> sam build -> sam deploy to MiniStack), once per
# session. Added by the template/deploy owner; reuse `deployed_stack` in end-to-end tests.
# ------------------------------------------------------------------------------------------------
#: A small synthetic archive shared by the task-chain and end-to-end tests (one tile, ~2 km AOI).
SMALL = {"tile": "33TUN", "year": 2021, "scenes": 10, "aoi": (12.96, 47.35, 12.99, 47.37)}


@pytest.fixture(scope="session")
def small_archive(local_env) -> dict:
    """Synthesize (once per session) the small archive; returns its truth manifest."""
    from cloudfree.synth.archive import generate_archive

    summary = generate_archive([SMALL["tile"]], SMALL["year"], SMALL["scenes"],
                               aoi=SMALL["aoi"], api_url=local_env["STAC_API_URL"])
    return summary.tile_results[0].manifest


@pytest.fixture(scope="session")
def deployed_stack(local_env):
    """Build (cached) and deploy the stack locally; a no-op when it is already up to date."""
    import sys
    import time

    from cloudfree.pipeline.deploy import deploy_local

    t0 = time.monotonic()
    info = deploy_local(stack_name=os.environ.get("CLOUDFREE_TEST_STACK", "cloudfree"),
                        endpoint=local_env["AWS_ENDPOINT_URL"],
                        stac_api_url=local_env["STAC_API_URL"])
    print(f"\ndeployed_stack: {info.stack_name} {info.status} in {time.monotonic() - t0:.1f}s",
          file=sys.stderr)
    return info


def wait_for(predicate, timeout: float = 120, what: str = "condition", poll: float = 1.0):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` s pass."""
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def wait_execution(arn: str, timeout: float = 900, poll: float = 2.0) -> dict:
    """``describe_execution`` of ``arn`` once it has ended (AssertionError after ``timeout``);
    an execution that did not succeed also gets ``why`` (:func:`cloudfree.pipeline.run.failure`:
    its error and cause, and its failed children's), since pytest cuts a long dict short."""
    import time

    import boto3

    from cloudfree.pipeline import run

    sfn = boto3.client("stepfunctions")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        desc = sfn.describe_execution(executionArn=arn)
        if desc["status"] in run.TERMINAL:
            if desc["status"] != "SUCCEEDED":  # for the assertion: what failed, and why
                desc["why"] = run.failure(arn)
            return desc
        time.sleep(poll)
    raise AssertionError(f"{arn} still running after {timeout}s")



@pytest.fixture(scope="session")
def computed_tile(local_env, small_archive) -> dict:
    """The small tile computed and published once per session by the task chain, in fresh
    buckets (``test_tasks_chain``'s first run). Tests that change a tile work on a
    :func:`clone_tile` of it instead of computing it again (minutes on 2 cores)."""
    from .test_tasks_chain import _run_tile, fresh_settings

    settings = fresh_settings(local_env)
    return {"settings": settings, "run": _run_tile(settings, "chain-1"), "execution": "chain-1"}


def clone_tile(src, dst, tile: str, year: int, marker: bool = True) -> None:
    """Copy a computed tile's work state (manifest, windows, band statistics, staged COGs and,
    with ``marker``, its DONE marker) from ``src``'s work bucket to ``dst``'s (server-side);
    nothing public is copied. The band statistics are rewritten with the copies' ETags (they
    record the staged objects' ETags, which a copy may change)."""
    from concurrent.futures import ThreadPoolExecutor

    from cloudfree import storage
    from cloudfree.bands import OUTPUT_BANDS

    s, d = src.layout, dst.layout
    prefix = s.run_prefix(year, tile)
    pairs = [(o.uri, d.run_prefix(year, tile) + o.uri[len(prefix):])
             for o in storage.list_objects(prefix + "/")]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: storage.copy(*p), pairs))
    for band in OUTPUT_BANDS:
        stats = storage.read_json(d.band_stats(year, tile, band))
        stats["cog"]["etag"] = storage.head(d.staged_cog(year, tile, band)).etag
        if (stats["cog"].get("related") or {}).get("count"):
            stats["cog"]["related"]["count"]["etag"] = storage.head(
                d.staged_cog(year, tile, "count")).etag
        storage.write_json(d.band_stats(year, tile, band), stats)
    if marker:
        storage.copy(s.tile_done(year, tile), d.tile_done(year, tile))
