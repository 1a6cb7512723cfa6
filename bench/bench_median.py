"""Benchmark cloudfree.median.masked_median against np.nanmedian (and bottleneck if installed).

One seeded 16 x 2048 x 2048 uint16 stack, 35 % of observations masked. np.nanmedian (and
bottleneck) are timed on a row subset and scaled to Mpx/s; the library runs the whole stack.
Peak memory of masked_median is measured with tracemalloc (numpy reports its allocations).
Runs in well under a minute on 2 vCPU.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np

from cloudfree.median import DEFAULT_CHUNK_PIXELS, masked_median, selection_network

S, H, W = 16, 2048, 2048
MASKED = 0.35
SUBSET_ROWS = 128  # rows timed for the slow baselines


def make_stack(seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """The seeded stack and its uint8 valid mask (1 = valid)."""
    rng = np.random.default_rng(seed)
    stack = rng.integers(1, 10000, (S, H, W), dtype=np.uint16)
    valid = (rng.random((S, H, W), dtype=np.float32) >= MASKED).astype(np.uint8)
    return stack, valid


def time_library(stack: np.ndarray, valid: np.ndarray, repeats: int = 3) -> float:
    """Best-of-``repeats`` Mpx/s of masked_median on the whole stack."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        masked_median(stack, valid)
        best = min(best, time.perf_counter() - t0)
    return H * W / best / 1e6


def time_nan_baseline(fn, stack: np.ndarray, valid: np.ndarray) -> float:
    """Mpx/s of ``fn(float32 stack with NaNs, axis=0)`` on SUBSET_ROWS rows (NaN fill included)."""
    sub, vsub = stack[:, :SUBSET_ROWS], valid[:, :SUBSET_ROWS]
    t0 = time.perf_counter()
    data = np.where(vsub == 1, sub.astype(np.float32), np.float32(np.nan))
    fn(data, axis=0)
    return SUBSET_ROWS * W / (time.perf_counter() - t0) / 1e6


def peak_memory_mb(stack: np.ndarray, valid: np.ndarray) -> float:
    """Peak bytes allocated while masked_median runs (outputs included), in MB."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    masked_median(stack, valid)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6


def main() -> None:
    stack, valid = make_stack()
    input_mb = (stack.nbytes + valid.nbytes) / 1e6
    print(
        f"stack {S}x{H}x{W} uint16, {MASKED:.0%} masked (seeded); input {input_mb:.0f} MB "
        f"(stack {stack.nbytes / 1e6:.0f} MB + mask {valid.nbytes / 1e6:.0f} MB)"
    )
    print(
        f"selection network for S={S}: {selection_network(S).cost} min/max passes "
        f"(full sort: 126); chunk {DEFAULT_CHUNK_PIXELS} px"
    )
    lib = time_library(stack, valid)
    print(f"cloudfree masked_median : {lib:7.1f} Mpx/s  (whole stack, best of 3)")
    nan = time_nan_baseline(np.nanmedian, stack, valid)
    print(
        f"np.nanmedian            : {nan:7.1f} Mpx/s  (first {SUBSET_ROWS} rows, scaled; float32)"
    )
    print(f"ratio library / nanmedian: {lib / nan:6.1f}x")
    try:
        import bottleneck
    except ImportError:
        print("bottleneck              : not installed")
    else:
        bn = time_nan_baseline(bottleneck.nanmedian, stack, valid)
        print(
            f"bottleneck.nanmedian    : {bn:7.1f} Mpx/s  (first {SUBSET_ROWS} rows, scaled); "
            f"ratio library / bottleneck {lib / bn:.1f}x"
        )
    peak = peak_memory_mb(stack, valid)
    print(
        f"masked_median peak memory: {peak:.1f} MB (tracemalloc, incl. {H * W * 3 / 1e6:.0f} MB "
        f"outputs) = {peak / input_mb:.1%} of the input"
    )


if __name__ == "__main__":
    main()
