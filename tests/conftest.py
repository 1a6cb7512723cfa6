"""Shared fixtures: where the shared real data and the offline STAC schemas live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_shared() -> Path:
    """``$CLOUDFREE_SHARED``, else ``../shared`` beside this checkout, else beside the checkout
    it was cloned from (a CI clone in a scratch folder still finds the team's shared data)."""
    if os.environ.get("CLOUDFREE_SHARED"):
        return Path(os.environ["CLOUDFREE_SHARED"])
    here = REPO.parent / "shared"
    if here.is_dir():
        return here
    import subprocess

    try:
        origin = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and Path(origin).is_dir() and (Path(origin).resolve().parent / "shared").is_dir():
        return Path(origin).resolve().parent / "shared"
    return here


SHARED = _find_shared()


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
