"""Run every ```bash test / ```python test block of docs/guide.md, in order, against the local
stack and the tile the session published (so the guide cannot rot). Named to run after
test_pipeline_e2e.py and test_viewer.py, whose published tile it reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.guide import blocks

from .conftest import SMALL
from .test_viewer import published  # noqa: F401 (the fixture: the session's published tile)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def guide_env(local_env, published) -> dict[str, str]:  # noqa: F811
    venv = Path(sys.executable).parent
    return {**os.environ, **local_env, "PATH": f"{venv}:{os.environ['PATH']}",
            "TILE": SMALL["tile"], "YEAR": str(SMALL["year"])}


def test_guide_commands_run(guide_env):
    import time

    ran = []
    for block in (b for b in blocks() if b.mark == "test"):
        cmd = ["bash", "-euo", "pipefail", "-c", block.code] if block.lang == "bash" else \
            [sys.executable, "-c", block.code]
        t0 = time.monotonic()
        res = subprocess.run(cmd, cwd=REPO, env=guide_env, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, f"{block.name} failed:\n{block.code}\n{res.stdout}\n" \
                                    f"{res.stderr[-3000:]}"
        ran.append(f"{block.name} {time.monotonic() - t0:.1f}s")
    print("\nguide blocks:", ", ".join(ran))
    assert len(ran) >= 12
