#!/usr/bin/env python3
"""Fail when a shared object needs a newer glibc than a Lambda runtime has.

    python3 scripts/check_glibc.py [--max 2.26] FILE.so ...

Reads the dynamic symbol table with ``objdump -T`` (binutils) and collects the ``GLIBC_x.y``
version each imported symbol is bound to. Lambda's python3.11 runs on Amazon Linux 2
(glibc 2.26); python3.12+ on AL2023 (glibc 2.34). A binary built on Debian 12 (glibc 2.36)
loads there only if every symbol version is at most that: e.g. ``pthread_create`` binds to
GLIBC_2.34 when linked on glibc >= 2.34, which is why the median kernel uses no pthreads.
Standard library only: the layer Makefile runs it with the build's python3.11.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

#: Amazon Linux 2's glibc, under Lambda's python3.11 runtime.
LAMBDA_PY311_GLIBC = (2, 26)
_VERSION = re.compile(r"\bGLIBC_(\d+)\.(\d+)(?:\.(\d+))?\b")


def parse_glibc_versions(objdump_text: str) -> dict[str, tuple[int, ...]]:
    """``{symbol: (major, minor[, patch])}`` for every GLIBC-versioned symbol in ``objdump -T``."""
    found = {}
    for line in objdump_text.splitlines():
        m = _VERSION.search(line)
        if m:
            version = tuple(int(g) for g in m.groups() if g is not None)
            found[line.split()[-1]] = version
    return found


def glibc_versions(path: str) -> dict[str, tuple[int, ...]]:
    """The GLIBC symbol versions ``path`` imports (runs ``objdump -T``)."""
    out = subprocess.run(["objdump", "-T", path], check=True, capture_output=True, text=True)
    return parse_glibc_versions(out.stdout)


def too_new(versions: dict[str, tuple[int, ...]], limit: tuple[int, int]) -> dict:
    """The symbols whose version is newer than ``limit``."""
    return {sym: v for sym, v in versions.items() if v[:2] > limit}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", default="2.26", help="newest allowed glibc (default 2.26)")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    limit = tuple(int(x) for x in args.max.split("."))[:2]
    bad = 0
    for path in args.files:
        versions = glibc_versions(path)
        newest = max(versions.values(), default=(0, 0))
        late = too_new(versions, limit)
        need = ".".join(map(str, newest))
        if late:
            bad += 1
            syms = ", ".join(f"{s}@GLIBC_{'.'.join(map(str, v))}" for s, v in sorted(late.items()))
            print(f"{path}: needs glibc {need} > {args.max}: {syms}", file=sys.stderr)
        else:
            print(f"{path}: newest glibc symbol {need} <= {args.max} ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
