"""Which zlib GDAL inflates the source COGs and deflates the published ones with.

Every Earth Search asset and every COG cloudfree publishes is DEFLATE, so the zlib behind GDAL
sets much of the pipeline's CPU. The layer and the project venv re-point rasterio's GDAL at
zlib-ng (``scripts/zlib_ng.py``); elsewhere (a ``pip install`` on a laptop) GDAL uses the
system zlib. Pixels are the same either way; the published files' compressed bytes are not
(two deflaters write different, equally valid streams), so byte-identical runs need the same
zlib.

:func:`gdal_zlib` finds out by behaviour, not by file names: GDAL's own ``CPLZLibDeflate`` at
level 1 compresses a probe, and exactly one of the zlib libraries mapped in this process gives
the same bytes (zlib-ng's level 1 is a different algorithm, ``deflate_quick``). On Lambda the
runtime's own libraries decide what the loader binds, which no test here can see; the median
Lambda logs this at a cold start so an operator can check it.
"""

from __future__ import annotations

import ctypes
import re
from functools import cache
from pathlib import Path

import numpy as np

#: A mapped file that is a zlib build: ``libz.so.1.2.13``, ``libz-ng-cloudfree.so.1`` (not
#: ``libzstd``).
_ZLIB_FILE = re.compile(r"^libz(?:-ng[\w-]*)?\.so(?:\.|$)")
#: 64 KiB of structured bytes: ``((i * 2654435761) >> 13 & 63) + i % 7`` (numpy: ~1 ms where a
#: Python loop took ~10 ms of every median cold start).
_I = np.arange(1 << 16, dtype=np.uint64)
_PROBE = (((_I * np.uint64(2654435761)) >> np.uint64(13) & np.uint64(0x3F))
          + _I % np.uint64(7)).astype(np.uint8).tobytes()
del _I


def _mapped(pattern: re.Pattern[str] | str) -> list[str]:
    """Paths of the files mapped in this process whose name matches ``pattern``."""
    pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
    seen: list[str] = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            path = parts[5]
            if pattern.search(Path(path).name) and path not in seen:
                seen.append(path)
    return seen


def _compress2(lib: ctypes.CDLL, data: bytes, level: int) -> bytes:
    size = ctypes.c_ulong(len(data) + len(data) // 10 + 1024)
    out = ctypes.create_string_buffer(size.value)
    if lib.compress2(out, ctypes.byref(size), data, ctypes.c_ulong(len(data)), level) != 0:
        raise OSError("compress2 failed")
    return out.raw[: size.value]


def _gdal_deflate(gdal: ctypes.CDLL, data: bytes, level: int) -> bytes:
    fn = gdal.CPLZLibDeflate
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p,
                   ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    out = ctypes.create_string_buffer(len(data) + len(data) // 10 + 1024)
    n = ctypes.c_size_t(0)
    if not fn(data, len(data), level, out, len(out), ctypes.byref(n)):
        raise OSError("CPLZLibDeflate failed")
    return out.raw[: n.value]


def system_zlib() -> str | None:
    """The system's ``libz.so.1`` (Debian's or Amazon Linux's path), None if neither exists.

    Preloaded (``LD_PRELOAD``), it comes first in a process's global scope, so the loader binds
    GDAL to it instead of the zlib-ng rasterio's libraries NEED: the benchmarks measure the codec
    floor of a stock rasterio that way (tests/unit/test_deflate.py checks the binding)."""
    for path in ("/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib64/libz.so.1",
                 "/usr/lib64/libz.so.1"):
        if Path(path).exists():
            return path
    return None


@cache
def gdal_zlib() -> dict[str, str]:
    """``{"version": zlibVersion(), "path": the library}`` of the zlib GDAL calls, or
    ``{"version": "unknown", ...}`` when no mapped zlib reproduces GDAL's output."""
    import rasterio  # noqa: F401  (loads libgdal and its zlib)

    gdal_paths = _mapped(r"^libgdal")
    if not gdal_paths:
        return {"version": "unknown", "path": "", "reason": "libgdal is not mapped"}
    candidates = _mapped(_ZLIB_FILE)
    try:
        expected = _gdal_deflate(ctypes.CDLL(gdal_paths[0]), _PROBE, 1)
        for path in candidates:
            lib = ctypes.CDLL(path)
            if _compress2(lib, _PROBE, 1) == expected:
                lib.zlibVersion.restype = ctypes.c_char_p
                return {"version": lib.zlibVersion().decode(), "path": path}
    except (OSError, AttributeError) as err:  # a GDAL or zlib without these entry points
        return {"version": "unknown", "path": "", "reason": str(err)}
    return {"version": "unknown", "path": "",
            "reason": f"none of {candidates} writes GDAL's DEFLATE bytes"}
