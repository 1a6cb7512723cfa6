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
