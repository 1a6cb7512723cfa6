"""glibc malloc settings of the pixel workers (cloudfree.allocator), each in a fresh process."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)


def test_arenas_are_capped():
    """With the cap, a process that then allocates in 8 threads keeps within 2 arenas (glibc's
    default would make one arena per thread here: 8 per core)."""
    err = _run(
        "import threading, numpy as np\n"
        "from cloudfree import allocator\n"
        "assert allocator.tune(arenas=2) == {'mmap_threshold': True, 'trim_threshold': True,"
        " 'arenas': True}\n"
        "def work():\n"
        "    for _ in range(50): np.ones(300_000).sum()\n"  # 2.4 MB: below the mmap threshold
        "ts = [threading.Thread(target=work) for _ in range(8)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "import ctypes; ctypes.CDLL('libc.so.6').malloc_stats()\n").stderr
    assert 1 <= err.count("Arena ") <= 2, err


FAULTS = (
    "import sys\n"
    "from cloudfree import allocator\n"
    "if sys.argv[1] == 'tuned': allocator.tune()\n"
    "def minflt(): return int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[7])\n"
    "for _ in range(3): b = bytearray(2 << 20); del b\n"  # warm: the heap grows once
    "f0 = minflt()\n"
    "for i in range(50):\n"
    "    b = bytearray((2 << 20) + i * 8192); b[::4096] = b'x' * len(b[::4096]); del b\n"
    "print(minflt() - f0)\n")


def test_a_tile_sized_block_is_reused_not_faulted_in_again():
    """Buffers of about a tile's size (2 MiB, each a little larger than the last, as compressed
    tiles and their inflated copies come) allocated and freed 50 times: from fresh mmapped
    pages each time by default (512 page faults apiece: the kernel zeroes them), from the heap
    once the thresholds are set."""
    default = int(subprocess.run([sys.executable, "-c", FAULTS, "default"], capture_output=True,
                                 text=True, check=True).stdout)
    tuned = int(subprocess.run([sys.executable, "-c", FAULTS, "tuned"], capture_output=True,
                               text=True, check=True).stdout)
    assert default > 50 * 400, default
    assert tuned < 1000, tuned


def test_a_pixel_worker_says_how_it_decodes():
    """The decide and median Lambdas' cold-start keys (tasks.pixel_worker_setup): here, as in
    the layer, GDAL on zlib-ng, the tiles inflated by ISA-L, glibc's thresholds set (run in a
    fresh process: the thresholds are the process's)."""
    out = _run("import json; from cloudfree import tasks\n"
               "print(json.dumps(tasks.pixel_worker_setup()))\n").stdout
    import json

    keys = json.loads(out)
    assert keys["gdal_zlib"].endswith("zlib-ng") and keys["tile_decoder"] == "isal"
    assert keys["malloc"] == {"mmap_threshold": True, "trim_threshold": True}
