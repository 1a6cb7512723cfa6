"""``cloudfree plan``: what a year of tiles will cost on AWS, before running it (a dry run).

Per tile, from the number of scenes selected ``S`` and ``MedianMemoryMB`` ``M``::

    floor CPU-s   = decode_cpu_s_per_scene x S + encode_cpu_s_per_tile      (the codec floor)
    Lambda CPU-s  = pipeline_to_floor x floor CPU-s
                    - (1 - encode_cpu_share(C)) x encode_cpu_s_per_tile
                    C = CogCompression: the assembles encode each COG once, and another codec
                    changes that encoding only (DEFLATE: share 1; calibration codecs)
    Lambda s      = Lambda CPU-s / min(vCPU(3008), 2) x memory_factor(M)
                    vCPU(M) = M / 1769 (AWS: 1,769 MB = 1 vCPU); memory_factor: the tile's
                    seconds at M over those at 3008 MB, measured under a CPU quota of vCPU(M)
                    (calibration memory_seconds; beyond the measured memories, by vCPU share)
                    with --s3-mb-per-s R: each decide and median invocation takes the longer of
                    its share of those seconds and its source bytes / R (reads overlap decoding);
                    each assemble adds 2 x its COG's bytes / R (windows in, COG out, in sequence)
    GB-s          = Lambda s x M / 1024
    tile wall     = tile_schedule: the Lambda s split into invocations as the full-tile benchmark
                    split them (calibration phase_seconds); decide in rounds of BandConcurrency,
                    then the bands longest first (Manifest.work) on BandConcurrency slots, each
                    band's batches WindowConcurrency at a time, then its assemble
    year wall     = sum of the tiles' walls / TileConcurrency
    transitions   = tasks.tile_transitions(the manifest's band work for S scenes at M)
    source GETs   = sum over bands, windows and scenes of (1 header + block rows of the window),
                    the same again for the SCL read with every band window
    bytes read    = S x (sum of the 13 assets' sizes + 12 more SCL reads)
    our S3 PUTs   = 2 per window (GeoTIFF + stats: one request each, below the 64 MiB multipart
                    threshold) + the staged COGs' parts of 64 MiB + 2 per COG (create and
                    complete the multipart upload) + 14 copies + 6 (manifest, markers, item, index)
    storage       = tiles x output_bytes_per_tile x bytes_share(C) x the storage class's price
                    (Intelligent-Tiering: by days without a read, plus its per-object fee)
    $ = GB-s x Lambda price + invocations x request price + transitions x SFN price
        + PUTs x PUT price + GETs on our buckets x GET price;  storage $/month separately

The calibration (package data ``data/plan_calibration.json``) records where each figure was
measured. Prices: us-west-2, on-demand, read on 2026-12-01 from the pages in ``PRICES``.
Source reads from Earth Search's ``sentinel-cogs`` bucket cost us nothing per request: it is an
AWS Open Data bucket, not Requester Pays (https://registry.opendata.aws/sentinel-2-l2a-cogs/),
and us-west-2 to us-west-2 transfer is free; they are counted, not priced.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from importlib import resources
from itertools import pairwise
from typing import Any

from .bands import OUTPUT_BANDS, SCL, get_band
from .errors import InputError
from .manifest import BandPlan, work_order
from .settings import cog_compression, public_storage_class
from .storage import TRANSFER_PART_BYTES

#: us-west-2 on-demand prices (USD), read 2026-12-01.
PRICES = {
    "lambda_gb_s": 0.0000166667,  # x86_64, first 6 billion GB-s/month
    "lambda_request": 0.20 / 1e6,  # https://aws.amazon.com/lambda/pricing/
    "sfn_transition": 0.025 / 1000,  # Standard workflows: https://aws.amazon.com/step-functions/pricing/
    "s3_put": 0.005 / 1000,  # PUT, COPY, POST, LIST: https://aws.amazon.com/s3/pricing/
    "s3_get": 0.0004 / 1000,  # GET, SELECT and all other requests
    "s3_gb_month": 0.023,  # S3 Standard, first 50 TB/month
    # S3 Intelligent-Tiering (PublicStorageClass, cloudfree.settings): the tiers' storage per
    # GB-month and the monitoring fee per object of 128 KB or more; no retrieval fee
    "s3_it_frequent_gb_month": 0.023,  # Frequent Access tier, first 50 TB/month
    "s3_it_infrequent_gb_month": 0.0125,  # Infrequent Access tier (not read for 30 days)
    "s3_it_archive_instant_gb_month": 0.004,  # Archive Instant Access tier (90 days)
    "s3_it_monitoring_object_month": 0.0025 / 1000,  # monitoring and automation
}
#: Days without a read after which Intelligent-Tiering moves an object to a cheaper tier, and
#: that tier's price (``PRICES``); before the first, Frequent Access.
TIERING_DAYS = ((30, "s3_it_infrequent_gb_month"), (90, "s3_it_archive_instant_gb_month"))
PRICES_SOURCE = ("us-west-2 on-demand, read 2026-12-01: aws.amazon.com/lambda/pricing, "
                 "aws.amazon.com/step-functions/pricing, aws.amazon.com/s3/pricing")
#: Lambda memory with one full vCPU (https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html).
MB_PER_VCPU = 1769
#: Threads the median and assemble steps keep busy (assemble's GDAL threads, median's kernel).
PIPELINE_THREADS = 2
#: The MedianMemoryMB the calibration's ratio stands for (the template's default).
CALIBRATED_MEMORY_MB = 3008
#: boto3's multipart threshold and part size (``storage.transfer_config``).
PART_BYTES = TRANSFER_PART_BYTES
#: COGs published per tile (12 bands, visual, count).
COGS_PER_TILE = 14
#: Template defaults (template.yaml): tiles at once, bands per tile, median batches per band.
TILE_CONCURRENCY, BAND_CONCURRENCY, WINDOW_CONCURRENCY = 112, 7, 1
#: Concurrent Lambdas the template's defaults may reserve: TileConcurrency x (BandConcurrency x
#: WindowConcurrency + 1) within 900 of the account's default 1,000 (template.yaml's budget).
CONCURRENCY_BUDGET = 900
#: The issue's goal for one world-year.
GOAL_USD, GOAL_HOURS = 200.0, 4.0


@lru_cache(maxsize=1)
def calibration() -> dict[str, Any]:
    """The measured inputs (``cloudfree/data/plan_calibration.json``)."""
    text = resources.files("cloudfree").joinpath("data/plan_calibration.json").read_text()
    return json.loads(text)


@dataclass
class TileCost:
    """One tile's projected work and dollars."""

    tile: str
    scenes_found: int | None
    scenes: int
    floor_cpu_s: float = 0.0
    lambda_s: float = 0.0
    wall_s: float = 0.0  # the tile's own critical path at the template's concurrency
    peak_lambdas: int = 0  # the most Lambdas the tile runs at once (its schedule)
    gb_s: float = 0.0
    invocations: int = 0
    transitions: int = 0
    windows: int = 0
    source_gets: int = 0
    bytes_read: int = 0
    puts: int = 0
    gets: int = 0
    #: the S3 read rate (MB/s) each decide and median Lambda needs for its reads to hide
    #: behind its decoding (its bytes over its CPU-bound seconds; the most any invocation needs)
    s3_mb_per_s_needed: float = 0.0
    usd: dict[str, float] = field(default_factory=dict)

    @property
    def total_usd(self) -> float:
        return sum(self.usd.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_usd": self.total_usd}


def vcpus(memory_mb: int) -> float:
    """Lambda's CPU share at ``memory_mb`` (linear, 1 vCPU at 1,769 MB, 6 at 10,240 MB)."""
    return min(memory_mb / MB_PER_VCPU, 6.0)


def cpu_share(memory_mb: float) -> float:
    """The cores a tile's invocations can keep busy at ``memory_mb``: Lambda's vCPU share,
    at most the pipeline's threads."""
    return min(vcpus(int(memory_mb)), PIPELINE_THREADS)


def memory_factor(memory_mb: int, cal: dict | None = None) -> float:
    """A tile's Lambda seconds at ``memory_mb`` over those at ``CALIBRATED_MEMORY_MB``.

    From ``cal["memory_seconds"]`` (the full-tile benchmark at several MedianMemoryMB, each
    under a CPU quota of M / 1,769 cores as Lambda shares its CPU): linear between the measured
    memories; beyond them, the nearest measured point scaled by the CPU share (min(vCPU, 2)),
    as if the pipeline used every extra share. Without measurements, the CPU share alone."""
    cal = cal if cal is not None else calibration()
    points = sorted((int(m), float(v)) for m, v in
                    (cal.get("memory_seconds") or {}).get("tile_s", {}).items())
    base = dict(points).get(CALIBRATED_MEMORY_MB)
    if base is None:
        return cpu_share(CALIBRATED_MEMORY_MB) / cpu_share(memory_mb)
    lo, hi = points[0], points[-1]
    if memory_mb <= lo[0]:
        return lo[1] / base * cpu_share(lo[0]) / cpu_share(memory_mb)
    if memory_mb >= hi[0]:
        return hi[1] / base * cpu_share(hi[0]) / cpu_share(memory_mb)
    for (m0, s0), (m1, s1) in pairwise(points):
        if m0 <= memory_mb <= m1:
            return (s0 + (s1 - s0) * (memory_mb - m0) / (m1 - m0)) / base
    raise AssertionError("unreachable")  # pragma: no cover


@lru_cache(maxsize=1024)  # the same for every tile and concurrency setting (best_concurrency)
def band_reads(band: str, scenes: int, memory_mb: int) -> tuple[int, int, int]:
    """(windows, median batches, source GETs) of one band: per window and scene one header
    read plus one ranged GET per block row (GDAL merges a row's consecutive blocks:
    ``GDAL_HTTP_MERGE_CONSECUTIVE_RANGES``), for the band and again for its SCL patch."""
    plan = BandPlan.build(band, scenes, memory_mb)
    b = get_band(band)
    gets = 0
    for w in plan.windows:
        rows = math.ceil((w.row_off + w.height) / b.block) - w.row_off // b.block
        scale = b.resolution / SCL.resolution  # the window on SCL's 20 m grid
        r0, r1 = int(w.row_off * scale), math.ceil((w.row_off + w.height) * scale)
        scl_rows = math.ceil(r1 / SCL.block) - r0 // SCL.block
        gets += scenes * (2 + rows + scl_rows)
    return len(plan.windows), len(plan.batches), gets


def decide_batches() -> int:
    """*decide* invocations per tile (the shared outlier decision's squares, in batches)."""
    from .manifest import decision_plan

    return len(decision_plan().batches)


def tile_schedule(decide: tuple[int, float], bands: list[tuple[int, float, float]],
                  band_concurrency: int, window_concurrency: int) -> tuple[float, int]:
    """(wall seconds, peak concurrent Lambdas) of one tile as the state machine runs it.

    ``decide``: (batches, seconds each), run ``band_concurrency`` at a time before the bands.
    ``bands``: per band in the order of ``select``'s work (``Manifest.work``), (median batches,
    seconds each, assemble seconds). The band Map starts each band when one of its
    ``band_concurrency`` slots frees up (a list schedule, in order); a band runs its batches
    ``window_concurrency`` at a time, in rounds, then its assemble.
    """
    n_dec, t_dec = decide
    wall = math.ceil(n_dec / band_concurrency) * t_dec if n_dec else 0.0
    peak = min(n_dec, band_concurrency)
    free = [0.0] * band_concurrency  # when each band slot is next free
    spans: list[tuple[float, float, int]] = []  # (start, end, Lambdas)
    for n, t_batch, t_asm in bands:
        slot = min(range(band_concurrency), key=free.__getitem__)
        start = free[slot]
        medians = math.ceil(n / window_concurrency) * t_batch
        spans += [(start, start + medians, min(n, window_concurrency)),
                  (start + medians, start + medians + t_asm, 1)]
        free[slot] = start + medians + t_asm
    events = sorted([(a, k) for a, _, k in spans] + [(b, -k) for _, b, k in spans])
    running = 0
    for _, k in events:  # at equal times the ends (negative) come first: no false overlap
        running += k
        peak = max(peak, running)
    return wall + max(free), peak


def _phase_seconds(cal: dict, work: list[tuple[str, int]], lambda_s: float
                   ) -> tuple[float, list[tuple[int, float, float]]]:
    """The tile's Lambda seconds split into its invocations, as the full-tile benchmark split
    them (``cal["phase_seconds"]``: decide, then median and assemble per band resolution; the
    visual image as a 10 m band): (decide seconds, [(batches, seconds a batch, assemble
    seconds)] per band of ``work``), scaled to add up to ``lambda_s``."""
    ph = cal["phase_seconds"]
    rows = [(n, ph["median"][str(get_band(b).resolution)],
             ph["assemble"][str(get_band(b).resolution)]) for b, n in work]
    total = ph["decide"] + sum(m + a for _, m, a in rows)
    k = lambda_s / total
    return ph["decide"] * k, [(n, m * k / n, a * k) for n, m, a in rows]


def codec_shares(compression: str, cal: dict | None = None) -> tuple[float, float]:
    """(encoding CPU, bytes) of the COGs in ``compression`` as shares of DEFLATE's (the
    calibration's ``codecs``, measured by ``bench/bench_codecs.py``)."""
    if compression == "DEFLATE":
        return 1.0, 1.0
    entry = (cal or calibration()).get("codecs", {}).get(compression)
    if entry is None:
        raise InputError(f"no calibration for COG compression {compression!r}")
    return float(entry["encode_cpu_share"]), float(entry["bytes_share"])


def tile_cost(tile: str, scenes: int, memory_mb: int = 3008, *,
              scenes_found: int | None = None, cal: dict | None = None,
              band_concurrency: int = BAND_CONCURRENCY,
              window_concurrency: int = WINDOW_CONCURRENCY,
              compression: str = "DEFLATE", s3_mb_per_s: float | None = None) -> TileCost:
    """Project one tile (module docstring formula); ``compression``: CogCompression;
    ``s3_mb_per_s``: each Lambda's S3 read rate, when the invocations should wait for it
    (None: they never do, the calibrated CPU-bound seconds)."""
    from .tasks import tile_transitions

    if scenes < 1:
        return TileCost(tile, scenes_found, 0)
    cal = cal or calibration()
    c = TileCost(tile, scenes_found, scenes)
    c.floor_cpu_s = cal["decode_cpu_s_per_scene"] * scenes + cal["encode_cpu_s_per_tile"]
    encode_share, bytes_share = codec_shares(compression, cal)
    # the assembles encode each COG once: another codec changes that CPU, not the rest
    cpu = (cal["pipeline_to_floor"] * c.floor_cpu_s
           - (1 - encode_share) * cal["encode_cpu_s_per_tile"])
    c.lambda_s = cpu / cpu_share(CALIBRATED_MEMORY_MB) * memory_factor(memory_mb, cal)
    c.gb_s = c.lambda_s * memory_mb / 1024
    work, n_batches = [], 0
    for band in OUTPUT_BANDS:
        windows, batches, gets = band_reads(band, scenes, memory_mb)
        c.windows += windows
        c.source_gets += gets
        n_batches += batches
        work.append({"band": band, "batches": list(range(batches)), "windows": windows})
    # the order select gives the state machine (Manifest.work): longest first
    work.sort(key=lambda w: work_order(w["band"], len(w["batches"]), w["windows"]))
    decide = decide_batches()
    c.transitions = tile_transitions(work, decide)
    c.invocations = 3 + decide + n_batches + len(OUTPUT_BANDS)  # select, complete, publish
    sizes = cal["bytes_per_scene"]
    c.bytes_read = scenes * (sum(sizes.values()) + (len(OUTPUT_BANDS) - 1) * sizes["scl"])
    out_parts = math.ceil(cal["output_bytes_per_tile"] * bytes_share / PART_BYTES)
    c.puts = 2 * c.windows + out_parts + 2 * COGS_PER_TILE + COGS_PER_TILE + 6
    c.gets = 2 * c.windows + COGS_PER_TILE + 30  # assemble's downloads and stats, publish's checks
    t_decide, bands = _phase_seconds(cal, [(w["band"], len(w["batches"])) for w in work],
                                     c.lambda_s)
    per_decide = t_decide / max(decide, 1)
    reads = _invocation_reads(sizes, scenes, decide, work)
    c.s3_mb_per_s_needed = max([reads[0] / per_decide] + [
        b / t for b, (_, t, _) in zip(reads[1], bands, strict=True)]) / 1e6
    if s3_mb_per_s:  # each invocation takes its reads' time when that is the longer
        rate = s3_mb_per_s * 1e6
        per_decide = max(per_decide, reads[0] / rate)
        # an assemble downloads its windows and uploads its COG before and after its work:
        # about twice its output bytes, in sequence with it
        out = _output_bytes(cal["output_bytes_per_tile"] * bytes_share,
                            [w["band"] for w in work])
        bands = [(n, max(t, b / rate), a + 2 * o / rate)
                 for (n, t, a), b, o in zip(bands, reads[1], out, strict=True)]
        c.lambda_s = decide * per_decide + sum(n * t + a for n, t, a in bands)
        c.gb_s = c.lambda_s * memory_mb / 1024
    c.wall_s, c.peak_lambdas = tile_schedule((decide, per_decide), bands,
                                             band_concurrency, window_concurrency)
    c.usd = {"lambda": c.gb_s * PRICES["lambda_gb_s"]
             + c.invocations * PRICES["lambda_request"],
             "step_functions": c.transitions * PRICES["sfn_transition"],
             "s3_requests": c.puts * PRICES["s3_put"] + c.gets * PRICES["s3_get"]}
    return c


def _invocation_reads(sizes: dict[str, int], scenes: int, decide: int, work: list[dict]
                      ) -> tuple[float, list[float]]:
    """Source bytes one decide invocation reads (its share of the reference bands and SCL of
    every scene), and one median invocation of each band of ``work`` (its batches' share of
    the band and SCL of every scene); the assembles' own transfers are not counted."""
    from .outliers import CLOUD_BAND, SHADOW_BAND, WHITE_BAND

    per_decide = scenes * sum(sizes.get(b, 0)
                              for b in (CLOUD_BAND, WHITE_BAND, SHADOW_BAND, "scl"))
    return (per_decide / max(decide, 1),
            [scenes * (sizes.get(w["band"], 0) + sizes.get("scl", 0)) / len(w["batches"])
             for w in work])


#: Raw bytes of each published COG against a 10 m uint16 band's, at the same zoom: the visual
#: image is 3 x uint8, red's assemble also writes the uint8 count COG, 20 m bands have a
#: quarter of the pixels and 60 m bands a 36th.
def _raw_weight(band: str) -> float:
    b = get_band(band)
    weight = b.count * {"uint8": 1, "uint16": 2}[b.dtype] / 2 * (10 / b.resolution) ** 2
    return weight + (0.5 if band == "red" else 0.0)


def _output_bytes(total: float, bands: list[str]) -> list[float]:
    """``total`` COG bytes of a tile split over ``bands`` by their raw size (_raw_weight)."""
    weights = [_raw_weight(b) for b in bands]
    return [total * w / sum(weights) for w in weights]


@dataclass
class Projection:
    """A year of tiles: sums, wall time at the concurrency, storage, and the goal's check."""

    year: int
    tiles: list[TileCost]
    memory_mb: int
    tile_concurrency: int = TILE_CONCURRENCY
    band_concurrency: int = BAND_CONCURRENCY
    window_concurrency: int = WINDOW_CONCURRENCY
    storage_class: str = "INTELLIGENT_TIERING"  # PublicStorageClass
    compression: str = "DEFLATE"  # CogCompression
    s3_mb_per_s: float | None = None  # each Lambda's S3 read rate (None: reads never wait)

    def total(self, attr: str) -> float:
        return sum(getattr(t, attr) for t in self.tiles)

    def usd(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in self.tiles:
            for k, v in t.usd.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def total_usd(self) -> float:
        return sum(self.usd().values())

    def storage_usd_month(self, unread_days: int = 0) -> float:
        """The published COGs' storage for one month, once nobody has read them for
        ``unread_days`` (STANDARD: the same whatever the days). Intelligent-Tiering: the tier's
        price (:data:`TIERING_DAYS`) plus the monitoring fee of every COG (each taken as at
        least 128 KB: an upper bound)."""
        n = sum(1 for t in self.tiles if t.scenes)
        gb = (n * calibration()["output_bytes_per_tile"]
              * codec_shares(self.compression)[1] / 1e9)
        if self.storage_class == "STANDARD":
            return gb * PRICES["s3_gb_month"]
        price = "s3_it_frequent_gb_month"
        for days, tier in TIERING_DAYS:
            if unread_days >= days:
                price = tier
        return gb * PRICES[price] + n * COGS_PER_TILE * PRICES["s3_it_monitoring_object_month"]

    def storage_usd_first_year(self) -> float:
        """The first 12 months of storage if nobody reads the COGs (month m is the one that
        starts on day 30 x m)."""
        return sum(self.storage_usd_month(30 * m) for m in range(12))

    def s3_mb_per_s_needed(self) -> float:
        """The S3 read rate per Lambda below which some invocation waits for its reads."""
        return max((t.s3_mb_per_s_needed for t in self.tiles if t.scenes), default=0.0)

    def wall_hours(self) -> float:
        """Tiles run ``tile_concurrency`` at a time, each for its own critical path."""
        walls = sorted((t.wall_s for t in self.tiles if t.scenes), reverse=True)
        if not walls:
            return 0.0
        return sum(walls) / min(self.tile_concurrency, len(walls)) / 3600

    def peak_lambdas(self) -> int:
        """Concurrent Lambdas at most: the tiles at once, each at its schedule's peak plus
        the publish of a tile that just completed."""
        peaks = [t.peak_lambdas for t in self.tiles if t.scenes]
        return min(self.tile_concurrency, len(peaks)) * (max(peaks) + 1) if peaks else 0

    def reserved_lambdas(self) -> int:
        """The template's budget of these settings, whatever the memory and scene count:
        TileConcurrency x (BandConcurrency x WindowConcurrency + 1)."""
        return self.tile_concurrency * (self.band_concurrency * self.window_concurrency + 1)

    def advice(self) -> list[str]:
        """What would reach the goal ($200 and 4 h for the year), by how much."""
        lines = []
        cost, hours = self.total_usd(), self.wall_hours()
        lam = self.usd().get("lambda", 0.0)
        cal = calibration()
        if cost > GOAL_USD and lam > 0:
            rest = cost - lam
            need = (GOAL_USD - rest) / lam  # Lambda $ is proportional to the CPU-seconds
            if need <= 0:
                lines.append(f"${GOAL_USD:.0f} is out of reach by Lambda alone: the other "
                             f"items cost ${rest:,.0f}")
            else:
                ratio = cal["pipeline_to_floor"] * need
                lines.append(f"cost ${cost:,.0f} > ${GOAL_USD:.0f}: Lambda CPU-seconds must "
                             f"fall to {need:.0%} of today's: pipeline/codec-floor ratio "
                             f"{cal['pipeline_to_floor']} -> {ratio:.2f}"
                             + (" (below the floor: also cut the work)" if ratio < 1 else "")
                             + ("" if self.s3_mb_per_s is None else
                                f"; at {self.s3_mb_per_s:,.0f} MB/s the Lambdas also wait for "
                                "S3"))
                lines.append(_scene_advice(self, need, cal))
                lines.append(_memory_advice(cal) if self.s3_mb_per_s is None
                             else _network_memory_advice(self, cal))
                lines.extend(_codec_advice(self, cal))
        if hours > GOAL_HOURS:
            tc = math.ceil(self.tile_concurrency * hours / GOAL_HOURS)
            peak = tc * (self.band_concurrency * self.window_concurrency + 1)
            lines.append(f"wall {hours:,.1f} h > {GOAL_HOURS:.0f} h: TileConcurrency "
                         f"{self.tile_concurrency} -> {tc} (peak {peak:,} concurrent Lambdas: "
                         "raise the account's concurrency quota from 1,000 first)")
            best = best_concurrency(self)
            if best is not None and best.wall_hours() < hours:
                lines.append(
                    f"  or, within the budget of {CONCURRENCY_BUDGET} Lambdas: TileConcurrency "
                    f"{best.tile_concurrency}, BandConcurrency {best.band_concurrency}, "
                    f"WindowConcurrency {best.window_concurrency} (reserves "
                    f"{best.reserved_lambdas()}): {best.wall_hours():,.1f} h")
        return lines or ["within the goal ($200 and 4 h for the year)"]


def _reproject(p: Projection, **changes: Any) -> Projection:
    """``p``'s tiles (their scene counts) projected again with some of its settings changed
    (``project``'s keywords)."""
    settings = {"memory_mb": p.memory_mb, "tile_concurrency": p.tile_concurrency,
                "band_concurrency": p.band_concurrency,
                "window_concurrency": p.window_concurrency, "storage_class": p.storage_class,
                "compression": p.compression, "s3_mb_per_s": p.s3_mb_per_s, **changes}
    return project(p.year, [t.tile for t in p.tiles],
                   scenes=max((t.scenes for t in p.tiles), default=0) or 1,
                   found={t.tile: t.scenes for t in p.tiles}, **settings)


def _codec_advice(p: Projection, cal: dict) -> list[str]:
    """What CogCompression LERC_ZSTD would cost instead of DEFLATE (its CPU and bytes measured
    by ``bench/bench_codecs.py``), and what it asks of the readers."""
    if p.compression != "DEFLATE" or "LERC_ZSTD" not in cal.get("codecs", {}):
        return []
    other = _reproject(p, compression="LERC_ZSTD")
    return [f"CogCompression LERC_ZSTD (lossless): ${other.total_usd():,.0f} instead of "
            f"${p.total_usd():,.0f}, storage ${other.storage_usd_month():,.0f} instead of "
            f"${p.storage_usd_month():,.0f} a month; its readers need GDAL >= 2.4 with zstd "
            "or geotiff.js >= 2.1 (docs/guide.md section 5)"]


def _memory_advice(cal: dict) -> str:
    """GB-s per tile at each measured memory, against the calibrated one."""
    measured = sorted(int(m) for m in (cal.get("memory_seconds") or {}).get("tile_s", {}))
    if CALIBRATED_MEMORY_MB not in measured:
        return ("memory: does not lower the bill (CPU-bound: GB-s stay constant up to "
                f"{PIPELINE_THREADS * MB_PER_VCPU} MB, {PIPELINE_THREADS} threads); more "
                "memory only shortens the wall time")
    gb_s = {m: memory_factor(m, cal) * m / CALIBRATED_MEMORY_MB for m in measured}
    best = min(gb_s, key=gb_s.__getitem__)
    listed = ", ".join(f"{m} MB {gb_s[m] - 1:+.0%}" for m in measured
                       if m != CALIBRATED_MEMORY_MB)
    verdict = (f"{CALIBRATED_MEMORY_MB} MB is the cheapest measured: memory cannot lower the "
               "bill" if best == CALIBRATED_MEMORY_MB else
               f"{best} MB would cut the Lambda bill by {1 - gb_s[best]:.0%}")
    return (f"memory: GB-s per tile against {CALIBRATED_MEMORY_MB} MB, measured under Lambda's "
            f"CPU share: {listed}; {verdict}")


def _network_memory_advice(p: Projection, cal: dict) -> str:
    """The bill at each measured memory when the Lambdas read S3 at ``p.s3_mb_per_s``: less
    memory decodes slower, so it waits less for the same reads (taken as the same rate at
    every memory: unmeasured)."""
    measured = sorted({int(m) for m in (cal.get("memory_seconds") or {}).get("tile_s", {})}
                      | {p.memory_mb})
    usd = {m: _reproject(p, memory_mb=m).total_usd() for m in measured}
    best = min(usd, key=usd.__getitem__)
    return (f"memory at {p.s3_mb_per_s:,.0f} MB/s: " + ", ".join(
        f"{m} MB ${v:,.0f}" for m, v in usd.items()) + f"; the cheapest is {best} MB (the "
        "same read rate taken at every memory)")


def _scene_advice(p: Projection, need: float, cal: dict) -> str:
    """Scenes per tile that would bring the Lambda CPU-seconds down to ``need`` x today's."""
    tiles = [t for t in p.tiles if t.scenes]
    mean_s = sum(t.scenes for t in tiles) / len(tiles)
    target = need * (cal["decode_cpu_s_per_scene"] * mean_s + cal["encode_cpu_s_per_tile"])
    scenes = (target - cal["encode_cpu_s_per_tile"]) / cal["decode_cpu_s_per_scene"]
    if scenes < 1:
        return (f"scene count: not enough alone (encoding the outputs is "
                f"{cal['encode_cpu_s_per_tile']:.0f} CPU-s per tile whatever the scenes)")
    return f"scene count: {mean_s:.0f} -> {math.floor(scenes)} scenes per tile"


def project(year: int, tiles: list[str], *, scenes: int = 16, memory_mb: int = 3008,
            found: dict[str, int] | None = None,
            tile_concurrency: int = TILE_CONCURRENCY,
            band_concurrency: int = BAND_CONCURRENCY,
            window_concurrency: int = WINDOW_CONCURRENCY,
            storage_class: str = "INTELLIGENT_TIERING",
            compression: str = "DEFLATE", s3_mb_per_s: float | None = None) -> Projection:
    """The projection; ``found``: scenes a search found per tile (None: offline, ``scenes``
    each). Tiles with the same scene count share one computation (the world in seconds)."""
    if not 512 <= memory_mb <= 10240:
        raise InputError(f"memory must be within 512-10240 MB, got {memory_mb}")
    cache: dict[int, TileCost] = {}
    out = []
    for t in tiles:
        n_found = None if found is None else int(found.get(t, 0))
        n = scenes if n_found is None else min(n_found, scenes)
        if n not in cache:
            cache[n] = tile_cost("", n, memory_mb, band_concurrency=band_concurrency,
                                 window_concurrency=window_concurrency,
                                 compression=cog_compression(compression),
                                 s3_mb_per_s=s3_mb_per_s)
        # a shallow copy: tiles of one scene count share the (never modified) usd dict
        out.append(replace(cache[n], tile=t, scenes_found=n_found))
    return Projection(year, out, memory_mb, tile_concurrency, band_concurrency,
                      window_concurrency, public_storage_class(storage_class),
                      cog_compression(compression), s3_mb_per_s)


def with_concurrency(p: Projection, tile: int, band: int, window: int) -> Projection:
    """``p`` at other concurrency settings: the same tiles, scenes and memory, each tile's
    schedule again (the dollars do not change, only the wall time)."""
    cache: dict[int, tuple[float, int]] = {}
    out = []
    for t in p.tiles:
        if t.scenes and t.scenes not in cache:
            c = tile_cost("", t.scenes, p.memory_mb, band_concurrency=band,
                          window_concurrency=window, compression=p.compression,
                          s3_mb_per_s=p.s3_mb_per_s)
            cache[t.scenes] = (c.wall_s, c.peak_lambdas)
        wall, peak = cache.get(t.scenes, (0.0, 0))
        out.append(replace(t, wall_s=wall, peak_lambdas=peak))
    return replace(p, tiles=out, tile_concurrency=tile, band_concurrency=band,
                   window_concurrency=window)


def best_concurrency(p: Projection, budget: int = CONCURRENCY_BUDGET) -> Projection | None:
    """The settings with the shortest wall time whose reservation, TileConcurrency x
    (BandConcurrency x WindowConcurrency + 1), stays within ``budget`` (the most tiles those
    bands and windows allow); ties go to the shorter tile."""
    counts: dict[int, int] = {}
    for t in p.tiles:
        if t.scenes:
            counts[t.scenes] = counts.get(t.scenes, 0) + 1
    if not counts:
        return None
    n = sum(counts.values())
    best = None
    for band in range(1, len(OUTPUT_BANDS) + 1):
        for window in range(1, 9):
            tile = budget // (band * window + 1)
            if tile < 1:
                continue
            walls = {s: tile_cost("", s, p.memory_mb, band_concurrency=band,
                                  window_concurrency=window, compression=p.compression,
                                  s3_mb_per_s=p.s3_mb_per_s).wall_s for s in counts}
            hours = sum(walls[s] * k for s, k in counts.items()) / min(tile, n) / 3600
            key = (round(hours, 6), max(walls.values()))
            if best is None or key < best[0]:
                best = (key, (tile, band, window))
    return with_concurrency(p, *best[1])


def formula() -> str:
    """The module docstring's formula block, for the CLI."""
    doc = __doc__ or ""
    return doc[doc.index("Per tile"): doc.index("The calibration")].rstrip()


def summary(p: Projection) -> dict[str, Any]:
    """The projection as JSON (per tile when at most 50 tiles)."""
    return {"year": p.year, "tiles": len(p.tiles), "memory_mb": p.memory_mb,
            "tile_concurrency": p.tile_concurrency, "band_concurrency": p.band_concurrency,
            "window_concurrency": p.window_concurrency, "compression": p.compression,
            "s3_mb_per_s": p.s3_mb_per_s, "s3_mb_per_s_needed": p.s3_mb_per_s_needed(),
            "peak_lambdas": p.peak_lambdas(), "reserved_lambdas": p.reserved_lambdas(),
            "scenes": sum(t.scenes for t in p.tiles),
            "scenes_found": None if p.tiles and p.tiles[0].scenes_found is None else
            sum(t.scenes_found or 0 for t in p.tiles),
            "bytes_read": p.total("bytes_read"), "source_gets": p.total("source_gets"),
            "lambda_gb_s": p.total("gb_s"), "invocations": p.total("invocations"),
            "transitions": p.total("transitions"), "usd": p.usd(), "total_usd": p.total_usd(),
            "storage_class": p.storage_class, "storage_usd_month": p.storage_usd_month(),
            "storage_usd_month_unread": {str(d): p.storage_usd_month(d) for d in (0, 30, 90)},
            "storage_usd_first_year_unread": p.storage_usd_first_year(),
            "wall_hours": p.wall_hours(),
            "advice": p.advice(), "prices": PRICES, "prices_source": PRICES_SOURCE,
            "per_tile": [t.to_dict() for t in p.tiles] if len(p.tiles) <= 50 else None}


def _network_line(p: Projection) -> str:
    """Which S3 read rate the figures assume (no measurement of Lambda's exists here)."""
    need = p.s3_mb_per_s_needed()
    per_tile = p.total("bytes_read") / max(1, sum(1 for t in p.tiles if t.scenes))
    if p.s3_mb_per_s is None:
        return (f"S3 reads: {per_tile / 1e9:,.1f} GB a tile; these figures hold while every "
                f"decide and median Lambda reads S3 at {need:,.0f} MB/s or more (its reads then "
                "hide behind its decoding) and count no time for the assembles' transfers; not "
                "measurable here: compare the first run's report (cost_per_done_tile); "
                "--s3-mb-per-s R projects a rate")
    return (f"S3 reads: {per_tile / 1e9:,.1f} GB a tile at {p.s3_mb_per_s:,.0f} MB/s per "
            f"Lambda: the invocations that read more than they decode in that time wait for S3 "
            f"(CPU-bound from {need:,.0f} MB/s), and the assembles move their windows in and "
            "their COGs out at that rate")


def _storage_line(p: Projection) -> str:
    """Storage per month: one price (STANDARD), or the tiers' prices once nobody reads."""
    month, year = p.storage_usd_month(), p.storage_usd_first_year()
    if p.storage_class == "STANDARD":
        return (f"storage (STANDARD): ${month:,.2f} per month, ${year:,.0f} the first year; "
                f"INTELLIGENT_TIERING would charge as much while the COGs are read, and "
                f"${replace(p, storage_class='INTELLIGENT_TIERING').storage_usd_first_year():,.0f}"
                " the first year if nobody reads them")
    standard = replace(p, storage_class="STANDARD")
    return (f"storage (INTELLIGENT_TIERING): ${month:,.2f} per month while the COGs are read; "
            f"COGs nobody reads: ${p.storage_usd_month(30):,.2f} per month after 30 days, "
            f"${p.storage_usd_month(90):,.2f} after 90; the first year ${year:,.0f} if "
            f"nobody reads them (STANDARD: ${standard.storage_usd_month():,.2f} every month, "
            f"${standard.storage_usd_first_year():,.0f})")


def report(p: Projection) -> str:
    """The human-readable projection: per tile (up to 50), totals, formula, advice."""
    s = summary(p)
    lines = [f"cloudfree plan {p.year}: {s['tiles']:,} tiles, MedianMemoryMB {p.memory_mb}, "
             f"TileConcurrency {p.tile_concurrency}, BandConcurrency {p.band_concurrency}, "
             f"WindowConcurrency {p.window_concurrency}, CogCompression {p.compression}"]
    if s["per_tile"]:
        lines.append(f"{'tile':6s} {'found':>5s} {'sel':>4s} {'GB read':>8s} {'GETs':>7s} "
                     f"{'GB-s':>8s} {'trans':>5s} {'$':>8s}")
        for t in p.tiles:
            lines.append(f"{t.tile:6s} {'-' if t.scenes_found is None else t.scenes_found:>5} "
                         f"{t.scenes:4d} {t.bytes_read / 1e9:8.1f} {t.source_gets:7,d} "
                         f"{t.gb_s:8,.0f} {t.transitions:5d} {t.total_usd:8.4f}")
    usd = s["usd"]
    lines += [
        f"scenes selected {s['scenes']:,}"
        + ("" if s["scenes_found"] is None else f" of {s['scenes_found']:,} found")
        + f"; bytes read {s['bytes_read'] / 1e12:,.2f} TB in {s['source_gets']:,} GETs "
          "(Earth Search's open bucket: not billed to us)",
        f"Lambda {s['lambda_gb_s']:,.0f} GB-s in {s['invocations']:,} invocations: "
        f"${usd.get('lambda', 0):,.2f}",
        f"Step Functions {s['transitions']:,} transitions: ${usd.get('step_functions', 0):,.2f}",
        f"S3 requests (our buckets): ${usd.get('s3_requests', 0):,.2f}",
        f"total ${s['total_usd']:,.2f}; wall {s['wall_hours']:,.1f} h",
        _storage_line(p),
        _network_line(p),
        f"concurrent Lambdas: at most {s['peak_lambdas']:,} by the tiles' schedules "
        f"(TileConcurrency x (a tile's peak + 1 publish)); the settings reserve "
        f"{s['reserved_lambdas']:,} (TileConcurrency x (BandConcurrency x WindowConcurrency "
        "+ 1); the account's default quota is 1,000)",
        "", "formula:", formula(), "",
        f"prices: {PRICES_SOURCE}: " + ", ".join(f"{k} {v:.10g}" for k, v in PRICES.items()),
        f"calibration: cloudfree/data/plan_calibration.json (measured "
        f"{calibration()['measured']}, pipeline/codec floor {calibration()['pipeline_to_floor']})",
        "", "goal ($200, 4 h):"] + [f"  {a}" for a in s["advice"]]
    return "\n".join(lines)
