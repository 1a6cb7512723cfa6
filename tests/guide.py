"""The fenced blocks of docs/guide.md: ```bash test / ```python test are run against the local
stack (tests/integration/test_viewer_guide.py); ```bash aws are AWS-only and shown, not run."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
FENCE = re.compile(r"^```(\w+)(?: (\w+))?\n(.*?)^```$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    lang: str
    mark: str | None
    code: str
    line: int

    @property
    def name(self) -> str:
        return f"guide.md:{self.line}"


def blocks(path: Path = GUIDE) -> list[Block]:
    text = path.read_text()
    return [Block(m[1], m[2], m[3], text.count("\n", 0, m.start()) + 1)
            for m in FENCE.finditer(text)]
