"""glibc malloc settings for the processes that decode and composite pixels.

Two defaults of glibc's malloc cost a pixel worker time or memory (``mallopt(3)``):

- **Arenas.** glibc gives each thread that allocates its own arena, up to 8 per core; the reader
  threads' freed decode buffers then stay resident in a dozen arenas. ``make bench-peer``'s
  scenes, rejection on, two alternating runs each (2026-12-02): peak RSS 377.7 / 373.2 MB ->
  327.8 / 330.1 MB with 2 arenas, 9.8 / 8.5 s -> 8.8 / 8.4 s.
- **The mmap threshold.** A block of 128 KiB or more is mmapped, and freeing it unmaps it; the
  threshold then rises to that block's size, but a request of exactly that size is still
  mmapped (``>=``). So every inflated 1024 px tile (2 MiB, :mod:`cloudfree.blocks`) and its
  compressed bytes came as fresh pages that the kernel zeroes and faults in: 27 % of a
  single-threaded 16-scene read in the kernel (``clear_page_erms`` and page faults, ``perf``),
  4.9-7.0 ms per block against 4.5-5.0 ms with blocks below :data:`MMAP_THRESHOLD` served and
  reused from the heap (and :data:`TRIM_THRESHOLD` of free heap kept rather than handed back at
  once). Stacks of scenes (tens to hundreds of MB) are still mmapped and returned on free.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: Arenas of the one-machine mode (``cloudfree composite``).
ARENAS = 2
#: Blocks below this come from the heap (glibc allows up to 32 MiB on 64-bit).
MMAP_THRESHOLD = 16 * 2**20
#: Free memory at the top of a heap kept before it is returned to the system.
TRIM_THRESHOLD = 64 * 2**20
# glibc's malloc.h
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def _mallopt(param: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(param, int(value)))
    except (OSError, AttributeError):  # not glibc (macOS's libc has no mallopt)
        return False


def tune(arenas: int | None = None) -> dict[str, bool]:
    """Set the thresholds (and cap the arenas at ``arenas`` when given) for this process;
    which settings glibc took (all False off glibc)."""
    done = {"mmap_threshold": _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            "trim_threshold": _mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)}
    if arenas is not None:
        done["arenas"] = _mallopt(_M_ARENA_MAX, arenas)
    return done
