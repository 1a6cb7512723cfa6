"""Integration tests run against the local stack (started here if needed; idempotent)."""

from __future__ import annotations

import os

import pytest

from cloudfree.local import stack


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


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
