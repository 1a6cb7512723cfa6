"""Per-pixel median of the valid observations of a uint16 stack (pure numpy, exact).

The kernel
----------
For each pixel the ``S`` observations are turned into ``S`` *filled* values: a valid
observation keeps its DN; the invalid ones are replaced, in scene order, alternately by
``0`` (1st, 3rd, ... invalid) and ``65535`` (2nd, 4th, ... invalid). With ``k`` valid and
``m = S - k`` invalid values, ``ceil(m / 2)`` fills sort before every valid value and
``floor(m / 2)`` after (ties with real 0/65535 DNs do not matter: equal values are equal).
The valid values therefore occupy sorted positions ``z .. z + k - 1`` with
``z = ceil((S - k) / 2)``, and the median of the valid values lands at fixed positions:

* ``S`` even: ``k`` odd -> position ``S/2``; ``k`` even -> mean of ``S/2 - 1`` and ``S/2``;
* ``S`` odd:  ``k`` odd -> position ``(S-1)/2``; ``k`` even -> mean of ``(S-1)/2`` and ``(S+1)/2``.

So ``k`` odd always reads position ``S // 2`` and ``k`` even reads the pair
:func:`middle_positions`. Only those two order statistics are needed, so instead of a full
sort we run a *selection network*: a sorting network (Batcher odd-even merge, Parberry
pairwise or bitonic, padded to a power of two with constant 0 / 65535 inputs), with the
constant inputs propagated away (a comparator against a constant is a wire relabelling) and
every comparator that cannot reach the two wanted outputs pruned; a comparator whose min
(or max) output is dead computes only the other one. The cheapest candidate is cached per
``S`` (for S = 16: 88 ufunc passes instead of 126 for a full sort).

The comparators run as ``np.minimum``/``np.maximum`` with ``out=`` on row chunks small
enough to stay in the L2 cache, so memory stays bounded (chunk buffers plus the outputs)
and nothing is converted to float.

Even counts take the mean of the two middle values rounded half to even, computed in uint16
without overflow: ``q = (a>>1) + (b>>1) + (a&b&1)`` is ``floor((a+b)/2)`` and
``q + ((a^b) & q & 1)`` rounds a ``.5`` up only when ``q`` is odd.

Two implementations
-------------------
``kernel="compiled"`` runs the same network, fill and rounding in C (``_median.c``, built by
``pip install -e .`` and by the Lambda layer's Makefile): pixels in L1-sized blocks, every
comparator a SIMD min/max loop, the GIL released and the pixel range split over
:data:`DEFAULT_THREADS` Python threads. ``kernel="numpy"`` is the pure numpy path above.
:func:`masked_median` picks the compiled one when it is importable; both are exact and are
tested against :func:`reference_median`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import numpy as np

from .errors import ConfigError, InputError

try:
    from . import _median as _compiled
except ImportError:  # no C compiler at install time: the numpy network still works
    _compiled = None

#: Largest number of scenes a stack may hold (``count`` is uint8 and networks grow fast).
MAX_SCENES = 64
#: Pixels per chunk: S wires of this many uint16 values (+ scratch) stay in a 1 MiB L2.
DEFAULT_CHUNK_PIXELS = 32768

#: Threads the compiled kernel splits a stack over (it releases the GIL): the visible cores.
#: Lambda shows 2 vCPUs up to 3008 MB and up to 6 at 10,240 MB, with CPU credit proportional
#: to memory (1 vCPU-second per second at 1769 MB; AWS "Configuring Lambda function memory",
#: thresholds measured in rwnx/lambda-cpuinfo). This machine: 2.
DEFAULT_THREADS = max(1, min(6, os.cpu_count() or 1))
#: Below this many pixels one thread is faster than starting a second.
MIN_PIXELS_PER_THREAD = 1 << 16
#: Implementations :func:`masked_median` accepts as ``kernel``.
KERNELS = ("compiled", "numpy")

FILL_LOW = np.uint16(0)
FILL_HIGH = np.uint16(65535)


@dataclass(frozen=True)
class MedianResult:
    """Output of :func:`masked_median`."""

    median: np.ndarray  # uint16 (H, W), 0 where no valid observation
    count: np.ndarray  # uint8 (H, W), number of valid observations
    contributions: np.ndarray  # int64 (S,), pixels where each scene was a valid observation


# --------------------------------------------------------------------------- networks


@dataclass(frozen=True)
class Comparator:
    """``lo, hi = min(a, b), max(a, b)`` on wires ``a`` (gets min) and ``b`` (gets max)."""

    a: int
    b: int
    want_min: bool
    want_max: bool


@dataclass(frozen=True)
class SelectionNetwork:
    """A pruned network for ``n_inputs`` wires whose ``outputs`` hold the wanted ranks."""

    n_inputs: int
    comparators: tuple[Comparator, ...]
    outputs: tuple[int, ...]  # wire ids holding the wanted sorted positions, in order

    @property
    def cost(self) -> int:
        """Number of min/max ufunc passes."""
        return sum(int(c.want_min) + int(c.want_max) for c in self.comparators)


def batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sort network for ``n`` (a power of two) inputs."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def pairwise_pairs(n: int) -> list[tuple[int, int]]:
    """Parberry's pairwise sorting network for ``n`` (a power of two) inputs."""
    pairs = []
    a = 1
    while a < n:
        b, c = a, 0
        while b < n:
            pairs.append((b - a, b))
            b, c = b + 1, (c + 1) % a
            if c == 0:
                b += a
        a *= 2
    a //= 4
    e = 1
    while a > 0:
        d = e
        while d > 0:
            b, c = (d + 1) * a, 0
            while b < n:
                pairs.append((b - d * a, b))
                b, c = b + 1, (c + 1) % a
                if c == 0:
                    b += a
            d //= 2
        a //= 2
        e = e * 2 + 1
    return pairs


def bitonic_pairs(n: int) -> list[tuple[int, int]]:
    """Bitonic sorting network for ``n`` (a power of two) inputs, as min-first pairs."""
    pairs = []
    k = 2
    while k <= n:
        j = k // 2
        while j > 0:
            for i in range(n):
                partner = i ^ j
                if partner > i:
                    pairs.append((i, partner) if i & k == 0 else (partner, i))
            j //= 2
        k *= 2
    return pairs


def _propagate_constants(
    layout: list, pairs: list[tuple[int, int]]
) -> tuple[list[tuple[int, int]], list]:
    """Drop comparators touching a constant pad ("lo" = 0, "hi" = 65535) by relabelling.

    ``layout[p]`` is what network position ``p`` holds: an input wire id or a pad. Returns
    comparators on wire ids and the final position -> content map.
    """
    pos = list(layout)
    ops = []
    for i, j in pairs:
        a, b = pos[i], pos[j]
        if a == "lo" or b == "hi":
            continue  # already in order
        if a == "hi" or b == "lo":
            pos[i], pos[j] = b, a  # a fixed swap: just relabel
            continue
        ops.append((a, b))
    return ops, pos


def _prune(ops: list[tuple[int, int]], outputs: tuple[int, ...]) -> tuple[Comparator, ...]:
    """Keep only comparators that can reach ``outputs``; mark which of their results are used."""
    needed = set(outputs)
    kept = []
    for a, b in reversed(ops):
        want_min, want_max = a in needed, b in needed
        if not (want_min or want_max):
            continue
        kept.append(Comparator(a, b, want_min, want_max))
        needed.update((a, b))
    return tuple(reversed(kept))


def middle_positions(n_scenes: int) -> tuple[int, ...]:
    """Sorted positions (of the filled stack) whose values make every possible median.

    Odd valid counts read ``n_scenes // 2``; even counts average the two returned positions
    (``S/2-1, S/2`` for even ``S``; ``(S-1)/2, (S+1)/2`` for odd ``S``). ``S = 1`` has
    only position 0 (an even count there is 0: nodata).
    """
    if n_scenes == 1:
        return (0,)
    half = n_scenes // 2
    return (half - 1, half) if n_scenes % 2 == 0 else (half, half + 1)


@cache
def selection_network(n_scenes: int) -> SelectionNetwork:
    """The cheapest pruned network giving :func:`middle_positions` of ``n_scenes`` inputs."""
    if not 1 <= n_scenes <= MAX_SCENES:
        raise InputError(f"number of scenes must be 1..{MAX_SCENES}, got {n_scenes}")
    wanted = middle_positions(n_scenes)
    size = 1 << (n_scenes - 1).bit_length()
    n_pads = size - n_scenes
    best: SelectionNetwork | None = None
    for generator in (pairwise_pairs, batcher_pairs, bitonic_pairs):
        pairs = generator(size)
        for n_low in range(n_pads + 1):
            n_high = n_pads - n_low
            inputs = list(range(n_scenes))
            for layout in (
                ["lo"] * n_low + inputs + ["hi"] * n_high,
                ["hi"] * n_high + inputs + ["lo"] * n_low,
                inputs + ["lo"] * n_low + ["hi"] * n_high,
            ):
                ops, final = _propagate_constants(layout, pairs)
                # ``n_low`` zero pads sort before every input: ranks shift by n_low.
                outputs = tuple(final[p + n_low] for p in wanted)
                if not all(isinstance(o, int) for o in outputs):  # pragma: no cover
                    raise AssertionError("a wanted output landed on a pad")
                net = SelectionNetwork(n_scenes, _prune(ops, outputs), outputs)
                if best is None or net.cost < best.cost:
                    best = net
    assert best is not None
    return best


def run_network(net: SelectionNetwork, wires: list[np.ndarray], scratch: np.ndarray) -> list:
    """Apply ``net`` in place on ``wires`` (same-shape uint16 arrays); returns the outputs.

    Buffers rotate instead of being copied: a full comparator writes the min into
    ``scratch`` and the max over ``b``; the old ``a`` buffer becomes the next scratch.
    """
    w = list(wires)
    minimum, maximum = np.minimum, np.maximum
    for c in net.comparators:
        a, b = w[c.a], w[c.b]
        if c.want_min and c.want_max:
            minimum(a, b, out=scratch)
            maximum(a, b, out=b)
            w[c.a], scratch = scratch, a
        elif c.want_min:
            minimum(a, b, out=a)
        else:
            maximum(a, b, out=b)
    return [w[o] for o in net.outputs]


# --------------------------------------------------------------------------- median


def _check_inputs(stack: np.ndarray, valid: np.ndarray) -> None:
    if not isinstance(stack, np.ndarray) or stack.dtype != np.uint16 or stack.ndim != 3:
        desc = f"{getattr(stack, 'dtype', type(stack).__name__)} {np.shape(stack)}"
        raise InputError(f"stack must be a uint16 array of shape (S, H, W), got {desc}")
    if not isinstance(valid, np.ndarray) or valid.dtype not in (np.uint8, np.bool_):
        raise InputError(
            f"valid must be a uint8 or bool array, got {getattr(valid, 'dtype', type(valid))}"
        )
    if valid.shape != stack.shape:
        raise InputError(f"valid shape {valid.shape} != stack shape {stack.shape}")
    if not 1 <= stack.shape[0] <= MAX_SCENES:
        raise InputError(f"stack must hold 1..{MAX_SCENES} scenes, got {stack.shape[0]}")


def round_half_even_mean(a: np.ndarray, b: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
    """``out = round_half_even((a + b) / 2)`` for uint16 arrays, without overflow."""
    np.right_shift(a, 1, out=out)
    np.right_shift(b, 1, out=tmp)
    out += tmp
    np.bitwise_and(a, b, out=tmp)
    tmp &= 1
    out += tmp  # out = floor((a + b) / 2)
    np.bitwise_xor(a, b, out=tmp)
    tmp &= out
    tmp &= 1  # 1 where the sum was odd and the floor is odd: round up to even
    out += tmp


class _Kernel:
    """Chunk buffers for one stack shape; :meth:`run` medians one (S, rows, W) chunk."""

    def __init__(self, n_scenes: int, rows: int, width: int) -> None:
        self.net = selection_network(n_scenes)
        shape = (rows, width)
        self.wires = [np.empty(shape, np.uint16) for _ in range(n_scenes)]
        self.scratch = np.empty(shape, np.uint16)
        self.fill = np.empty(shape, np.uint16)
        self.tmp = np.empty(shape, np.uint16)
        self.invalid = np.empty((n_scenes, *shape), np.uint16)
        self.valid = np.empty((n_scenes, *shape), np.bool_)

    def _valid_bool(self, valid: np.ndarray, rows: int) -> np.ndarray:
        """``valid`` as bool (a view for bool input; ``!= 0`` for uint8)."""
        if valid.dtype == np.bool_:
            return valid
        out = self.valid[:, :rows]
        np.not_equal(valid, 0, out=out)
        return out

    def _fill(self, stack: np.ndarray, vb: np.ndarray, rows: int) -> list[np.ndarray]:
        """Copy the chunk into the wires, invalid values alternately 0 then 65535."""
        invalid = self.invalid[:, :rows]
        np.copyto(invalid, vb)  # 1 valid, 0 invalid
        invalid -= 1  # 0 valid, 0xFFFF invalid
        fill = self.fill[:rows]
        fill.fill(65535)  # toggled at each invalid value before use: the 1st gets 0
        wires = [w[:rows] for w in self.wires]
        for s, wire in enumerate(wires):
            fill ^= invalid[s]
            np.bitwise_xor(stack[s], fill, out=wire)
            wire &= invalid[s]
            wire ^= stack[s]  # invalid ? fill : stack
        return wires

    def run(
        self,
        stack: np.ndarray,
        valid: np.ndarray,
        median: np.ndarray,
        count: np.ndarray,
        contributions: np.ndarray,
    ) -> None:
        """Median of ``stack`` (S, rows, W) under ``valid`` into the ``median``/``count`` views."""
        n, rows = stack.shape[:2]
        vb = self._valid_bool(valid, rows)
        np.add.reduce(vb.view(np.uint8), axis=0, out=count)
        for s in range(n):  # the axis= form of count_nonzero is ~10x slower
            contributions[s] += np.count_nonzero(vb[s])
        wires = self._fill(stack, vb, rows)
        outs = run_network(self.net, wires, self.scratch[:rows])
        if len(outs) == 1:  # S == 1
            np.copyto(median, outs[0])
        else:
            # odd counts read rank S // 2: the upper middle for even S, the lower for odd S
            odd_value = outs[1] if n % 2 == 0 else outs[0]
            tmp = self.tmp[:rows]
            round_half_even_mean(outs[0], outs[1], median, tmp)
            # median = odd count ? odd_value : mean, in bit arithmetic (a masked copyto is slow)
            np.copyto(tmp, count)
            tmp &= 1
            np.negative(tmp, out=tmp)  # 0xFFFF where the count is odd
            np.bitwise_xor(median, odd_value, out=odd_value)
            odd_value &= tmp
            median ^= odd_value
        np.copyto(median, 0, where=count == 0)


def compiled_available() -> bool:
    """True when the C kernel (``cloudfree._median``) was built and imports."""
    return _compiled is not None


@cache
def _network_ops(n_scenes: int) -> tuple[bytes, int, int, int]:
    """The selection network as ``(a, b, flags)`` bytes for the C kernel, and its outputs."""
    net = selection_network(n_scenes)
    ops = bytes(
        v
        for c in net.comparators
        for v in (c.a, c.b, int(c.want_min) | (int(c.want_max) << 1))
    )
    outs = net.outputs
    return ops, outs[0], outs[-1], len(outs)


def _compiled_median(
    stack: np.ndarray, valid: np.ndarray, threads: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median/count/contributions of a checked stack with the C kernel."""
    n, height, width = stack.shape
    pixels = height * width
    stack = np.ascontiguousarray(stack)
    valid = np.ascontiguousarray(valid).view(np.uint8)  # bool is 0/1 bytes
    median = np.empty((height, width), np.uint16)
    count = np.empty((height, width), np.uint8)
    ops, out0, out1, n_out = _network_ops(n)
    parts = max(1, min(threads, pixels // MIN_PIXELS_PER_THREAD))
    bounds = [pixels * i // parts for i in range(parts + 1)]
    contribs = np.zeros((parts, n), np.int64)

    def run(i: int) -> None:
        _compiled.masked_median(
            stack, valid, median, count, contribs[i], ops, n, out0, out1, n_out,
            bounds[i], bounds[i + 1],
        )

    if parts == 1:
        run(0)
    else:
        with ThreadPoolExecutor(parts) as pool:
            list(pool.map(run, range(parts)))
    return median, count, contribs.sum(axis=0)


def _numpy_median(
    stack: np.ndarray, valid: np.ndarray, chunk_pixels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median/count/contributions of a checked stack with the numpy network, in row chunks."""
    n, height, width = stack.shape
    median = np.zeros((height, width), np.uint16)
    count = np.zeros((height, width), np.uint8)
    contributions = np.zeros(n, np.int64)
    rows = max(1, min(height, chunk_pixels // max(width, 1)))
    kernel = _Kernel(n, rows, width)
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        kernel.run(stack[:, r0:r1], valid[:, r0:r1], median[r0:r1], count[r0:r1], contributions)
    return median, count, contributions


def masked_median(
    stack: np.ndarray,
    valid: np.ndarray,
    chunk_pixels: int = DEFAULT_CHUNK_PIXELS,
    *,
    kernel: str | None = None,
    threads: int = DEFAULT_THREADS,
) -> MedianResult:
    """Per-pixel median of the valid observations of ``stack`` (see the module docstring).

    Args:
        stack: uint16 (S, H, W) DNs; values under invalid observations are ignored.
        valid: uint8 or bool (S, H, W); non-zero marks a valid observation.
        chunk_pixels: pixels processed at a time by the numpy kernel (rounded to whole rows).
        kernel: ``"compiled"``, ``"numpy"`` or None for the compiled one when it was built.
        threads: threads the compiled kernel splits the pixels over.

    Returns:
        :class:`MedianResult` with the uint16 median (0 where nothing is valid; even counts
        give the mean of the two middle values rounded half to even), the uint8 count of
        valid observations and the int64 per-scene contributions.
    """
    _check_inputs(stack, valid)
    if kernel is None:
        kernel = "compiled" if _compiled is not None else "numpy"
    if kernel not in KERNELS:
        raise ConfigError(f"median kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "compiled" and _compiled is None:
        raise ConfigError("the compiled median kernel is not built (pip install -e . needs gcc)")
    n, height, width = stack.shape
    if height * width == 0:
        empty = np.zeros((height, width), np.uint16)
        return MedianResult(empty, empty.astype(np.uint8), np.zeros(n, np.int64))
    if kernel == "compiled":
        return MedianResult(*_compiled_median(stack, valid, threads))
    return MedianResult(*_numpy_median(stack, valid, chunk_pixels))


def reference_median(stack: np.ndarray, valid: np.ndarray) -> MedianResult:
    """Slow, obviously-correct median for tests: per pixel, sort the valid values.

    Uses Python integers, so the rounding is explicit: ``(a + b) / 2`` with a ``.5`` goes to
    the even neighbour.
    """
    _check_inputs(stack, valid)
    n, height, width = stack.shape
    median = np.zeros((height, width), np.uint16)
    count = np.zeros((height, width), np.uint8)
    ok = valid != 0
    for y in range(height):
        for x in range(width):
            values = sorted(int(v) for v, k in zip(stack[:, y, x], ok[:, y, x], strict=True) if k)
            count[y, x] = len(values)
            if not values:
                continue
            mid = len(values) // 2
            if len(values) % 2:
                median[y, x] = values[mid]
            else:
                total = values[mid - 1] + values[mid]
                half = total // 2
                if total % 2 and half % 2:
                    half += 1
                median[y, x] = half
    contributions = ok.reshape(n, -1).sum(axis=1).astype(np.int64)
    return MedianResult(median, count, contributions)
