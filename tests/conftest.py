"""Shared fixtures: where the shared real data and the offline STAC schemas live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLOUDFREE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata`` (real Earth Search items, cassettes and L2A pixels)."""
    path = SHARED / "realdata"
    if not path.is_dir():
        pytest.fail(f"real data not found at {path} (set CLOUDFREE_SHARED)")
    return path


@pytest.fixture(scope="session")
def stac_schemas() -> Path:
    """``../shared/stac-schemas``: the offline mirror of STAC/extension JSON schemas."""
    path = SHARED / "stac-schemas"
    if not path.is_dir():
        pytest.fail(f"STAC schema mirror not found at {path} (set CLOUDFREE_SHARED)")
    return path
