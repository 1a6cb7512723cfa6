"""``cloudfree plan``: the projection's arithmetic, checked with values worked by hand."""

from __future__ import annotations

import json
import time

import pytest

from cloudfree import costs
from cloudfree.errors import ConfigError, InputError

CAL = {"decode_cpu_s_per_scene": 5.0, "encode_cpu_s_per_tile": 100.0, "pipeline_to_floor": 2.0,
       "phase_seconds": {"decide": 40.0, "median": {"10": 20.0, "20": 8.0, "60": 4.0},
                         "assemble": {"10": 16.0, "20": 5.0, "60": 1.0}},
       "output_bytes_per_tile": 10 * costs.PART_BYTES,
       "bytes_per_scene": {"blue": 1000, "scl": 10}}


def test_vcpus_follow_lambda_memory():
    assert costs.vcpus(1769) == 1.0
    assert costs.vcpus(3538) == 2.0
    assert costs.vcpus(10240) == pytest.approx(10240 / 1769)  # 5.79, below the cap of 6


def test_band_reads_of_one_coastal_window():
    # 60 m coastal, 1830 px, 1024 px blocks: one window at 10 GB and 1 scene, 2 block rows;
    # its SCL patch is 5490 rows at 20 m in 512 px blocks: 11 block rows; + 2 headers
    windows, batches, gets = costs.band_reads("coastal", 1, 10240)
    assert (windows, batches, gets) == (1, 1, 2 + 2 + 11)
    assert costs.band_reads("coastal", 4, 10240)[2] == 4 * 15  # per scene


def test_tile_cost_by_hand():
    c = costs.tile_cost("33UUP", 16, 3008, cal=CAL)
    assert c.floor_cpu_s == 5 * 16 + 100
    assert c.lambda_s == pytest.approx(2 * 180 / (3008 / 1769))
    assert c.gb_s == pytest.approx(c.lambda_s * 3008 / 1024)
    assert c.bytes_read == 16 * (1010 + 12 * 10)
    # 10 parts of 64 MiB, create + complete for each of the 14 COGs, 14 copies, 6 small objects
    assert costs.PART_BYTES == 64 * 1024 * 1024
    assert c.puts == 2 * c.windows + 10 + 2 * 14 + 14 + 6
    assert c.usd["lambda"] == pytest.approx(c.gb_s * 0.0000166667 + c.invocations * 2e-7)
    assert c.usd["step_functions"] == pytest.approx(c.transitions * 0.025 / 1000)
    assert c.usd["s3_requests"] == pytest.approx(c.puts * 0.005 / 1000 + c.gets * 0.0004 / 1000)
    # memory: twice the memory, twice the CPU, half the seconds, the same GB-s (up to 2 vCPU)
    c2 = costs.tile_cost("33UUP", 16, 1769, cal=CAL)
    c4 = costs.tile_cost("33UUP", 16, 3538, cal=CAL)
    assert c2.lambda_s == pytest.approx(2 * c4.lambda_s)
    assert c2.gb_s == pytest.approx(c4.gb_s)
    assert costs.tile_cost("x", 0).total_usd == 0


def test_decide_step_counted_as_the_manifest_plans_it():
    from cloudfree.manifest import Manifest
    from cloudfree.tasks import tile_transitions

    doc = {"tile": "33UUP", "year": 2023, "scenes": [{"id": f"s{i}", "assets": {}}
                                                     for i in range(16)]}
    m = Manifest.build(doc, mask_classes=(0,), median_memory_mb=3008)
    n = len(m.decision_plan().batches)
    assert costs.decide_batches() == n == 4
    c = costs.tile_cost("33UUP", 16, 3008, cal=CAL)
    assert c.transitions == tile_transitions(m.work(), n)
    assert c.invocations == 3 + n + sum(len(p.batches) for p in m.plan.values()) + 13


def test_projection_sums_tiles_and_spreads_them_over_the_concurrency():
    tiles = [f"{z:02d}UUP" for z in range(1, 11)]
    p = costs.project(2023, tiles, scenes=16, found={t: (3 if t == "01UUP" else 40)
                                                     for t in tiles}, tile_concurrency=4)
    one, few = costs.tile_cost("", 16), costs.tile_cost("", 3)
    assert [t.scenes for t in p.tiles[:2]] == [3, 16]  # min(found, SceneCount)
    assert p.total_usd() == pytest.approx(9 * one.total_usd + few.total_usd)
    assert p.wall_hours() == pytest.approx((9 * one.wall_s + few.wall_s) / 4 / 3600)
    empty = costs.project(2023, ["01UUP"], found={})
    assert empty.total_usd() == 0 and empty.wall_hours() == 0
    with pytest.raises(InputError):
        costs.project(2023, tiles, memory_mb=100)


def test_advice_names_the_parameters_or_says_within_goal():
    big = costs.project(2023, [f"t{i}" for i in range(20_000)], tile_concurrency=40,
                        band_concurrency=4, window_concurrency=5)
    text = "\n".join(big.advice())
    assert "pipeline/codec-floor ratio" in text and "TileConcurrency 40 ->" in text
    # the settings within the budget that would do it, found by the schedule
    assert (f"or, within the budget of 900 Lambdas: TileConcurrency {costs.TILE_CONCURRENCY}, "
            f"BandConcurrency {costs.BAND_CONCURRENCY}, WindowConcurrency "
            f"{costs.WINDOW_CONCURRENCY}") in text
    assert costs.project(2023, ["33UUP"]).advice() == [
        "within the goal ($200 and 4 h for the year)"]


def test_tile_schedule_by_hand():
    """Decide first, BandConcurrency at a time; then the bands, each started when a band slot
    frees up, in the given order, its batches WindowConcurrency at a time, then its assemble."""
    decide = (4, 10.0)  # two rounds of two
    bands = [(5, 2.0, 3.0), (2, 1.0, 1.0), (1, 1.0, 0.5)]  # (batches, s a batch, assemble s)
    # W = 1: slot 0 runs band 0 (5 x 2 + 3 = 13 s); slot 1 band 1 (2 + 1 = 3) then band 2
    assert costs.tile_schedule(decide, bands, 2, 1) == (20 + 13, 2)
    # W = 5: band 0's five batches at once (2 s, 5 Lambdas) beside band 1's two (1 s): 7
    assert costs.tile_schedule(decide, bands, 2, 5) == (20 + 5, 7)
    # the longest band last: it starts when a slot frees (after band 1 and band 2's 1.5 s)
    assert costs.tile_schedule((0, 0.0), bands[::-1], 2, 1)[0] == 1.5 + 13
    # one slot: everything in a row; an end and a start at one instant do not overlap
    assert costs.tile_schedule((1, 4.0), bands, 1, 8) == (4 + (2 + 3) + (1 + 1) + 1.5, 5)


def test_tile_wall_follows_the_calibrated_phases():
    c = costs.tile_cost("33UUP", 16, 3008, cal=CAL, band_concurrency=13, window_concurrency=8)
    # every band at once and all its batches: decide, then the longest band (a 10 m one)
    total = 40 + 5 * (20 + 16) + 6 * (8 + 5) + 2 * (4 + 1)
    k = c.lambda_s / total
    assert c.wall_s == pytest.approx((40 / 4 + 20 / 2 + 16) * k)  # one round of each
    assert c.peak_lambdas == 5 + 4 * 2 + 6 * 2 + 2 * 1  # visual's 5 batches, the bands' 2 or 1


def test_best_concurrency_stays_within_the_budget_and_beats_the_old_defaults():
    p = costs.project(2023, [f"t{i}" for i in range(1000)], tile_concurrency=40,
                      band_concurrency=4, window_concurrency=5)
    best = costs.best_concurrency(p)
    assert best.reserved_lambdas() <= costs.CONCURRENCY_BUDGET
    assert best.peak_lambdas() <= best.reserved_lambdas()
    assert best.wall_hours() < p.wall_hours()
    assert best.total_usd() == pytest.approx(p.total_usd())  # only the wall time changes
    for band, window in ((4, 5), (7, 1), (13, 1), (2, 3)):
        tile = costs.CONCURRENCY_BUDGET // (band * window + 1)
        assert costs.with_concurrency(p, tile, band, window).wall_hours() >= best.wall_hours()


def test_plan_world_offline_is_fast(capsys):
    from cloudfree.cli import main

    t0 = time.perf_counter()
    assert main(["plan", "--world", "--year", "2023", "--offline"]) == 0
    out = capsys.readouterr().out
    assert time.perf_counter() - t0 < 10
    assert "20,638 tiles" in out and "formula:" in out and "goal ($200, 4 h):" in out
    assert main(["plan", "--world", "--year", "2023"]) == 2  # online world: refused, said why
    assert "--offline" in capsys.readouterr().err


def test_memory_factor_interpolates_the_measured_seconds():
    cal = {**CAL, "memory_seconds": {"tile_s": {"2048": 400.0, "3008": 260.0, "3538": 240.0}}}
    assert costs.memory_factor(3008, cal) == 1.0
    assert costs.memory_factor(2048, cal) == pytest.approx(400 / 260)
    assert costs.memory_factor(2528, cal) == pytest.approx(330 / 260)  # halfway: linear
    # beyond the measured memories: the nearest point, scaled by Lambda's CPU share
    assert costs.memory_factor(1769, cal) == pytest.approx(400 / 260 * (2048 / 1769))
    assert costs.memory_factor(10240, cal) == pytest.approx(240 / 260)  # 2 threads at most
    # without measurements: the CPU share alone (the formula before they were made)
    assert costs.memory_factor(1769, CAL) == pytest.approx(3008 / 1769)
    c = costs.tile_cost("33UUP", 16, 2048, cal=cal)
    assert c.lambda_s == pytest.approx(2 * 180 / (3008 / 1769) * 400 / 260)
    assert c.gb_s == pytest.approx(c.lambda_s * 2048 / 1024)


def test_memory_advice_names_the_cheapest_measured_memory():
    cal = {**CAL, "memory_seconds": {"tile_s": {"2048": 400.0, "3008": 260.0, "3538": 240.0}}}
    text = costs._memory_advice(cal)
    # GB-s against 3008: 2048 x 400 / (3008 x 260) = +5 %, 3538 x 240 / (3008 x 260) = +9 %
    assert text.endswith("2048 MB +5%, 3538 MB +9%; 3008 MB is the cheapest measured: "
                         "memory cannot lower the bill"), text
    cheap = {**CAL, "memory_seconds": {"tile_s": {"2048": 300.0, "3008": 260.0}}}
    assert "2048 MB would cut the Lambda bill by 21%" in costs._memory_advice(cheap)
    assert "GB-s stay constant" in costs._memory_advice(CAL)  # nothing measured


def test_storage_by_class_worked_by_hand():
    """Two tiles with scenes, one without (nothing published): 2 x the calibrated COG bytes.
    STANDARD: $0.023 a GB every month. Intelligent-Tiering: $0.023 until nobody has read a COG
    for 30 days, $0.0125 from then, $0.004 from day 90, plus $0.0025 a month per 1,000 COGs
    (28 here); the first year unread = 1 month + 2 months + 9 months of those."""
    tiles = ["01UUP", "02UUP", "03UUP"]
    found = {"01UUP": 16, "02UUP": 5, "03UUP": 0}
    gb = 2 * costs.calibration()["output_bytes_per_tile"] / 1e9
    std = costs.project(2023, tiles, found=found, storage_class="STANDARD")
    it = costs.project(2023, tiles, found=found)
    assert it.storage_class == "INTELLIGENT_TIERING"
    assert std.storage_usd_month() == pytest.approx(gb * 0.023)
    assert std.storage_usd_month(365) == std.storage_usd_month()
    assert std.storage_usd_first_year() == pytest.approx(12 * gb * 0.023)
    fee = 28 * 0.0025 / 1000
    months = {0: 0.023, 29: 0.023, 30: 0.0125, 89: 0.0125, 90: 0.004, 400: 0.004}
    for days, price in months.items():
        assert it.storage_usd_month(days) == pytest.approx(gb * price + fee), days
    assert it.storage_usd_first_year() == pytest.approx(
        gb * (0.023 + 2 * 0.0125 + 9 * 0.004) + 12 * fee)
    with pytest.raises(ConfigError):
        costs.project(2023, tiles, storage_class="GLACIER_IR")


def test_plan_prints_storage_by_class(capsys):
    from cloudfree.cli import main

    main(["plan", "--year", "2023", "--tiles", "33UUP", "--offline"])
    out = capsys.readouterr().out
    p = costs.project(2023, ["33UUP"])
    assert (f"storage (INTELLIGENT_TIERING): ${p.storage_usd_month():,.2f} per month while the "
            f"COGs are read; COGs nobody reads: ${p.storage_usd_month(30):,.2f} per month after "
            f"30 days, ${p.storage_usd_month(90):,.2f} after 90") in out
    main(["plan", "--year", "2023", "--tiles", "33UUP", "--offline", "--storage-class",
          "STANDARD", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["storage_class"] == "STANDARD"
    assert doc["storage_usd_month_unread"]["90"] == doc["storage_usd_month"] == pytest.approx(
        costs.calibration()["output_bytes_per_tile"] / 1e9 * 0.023)


def test_cog_compression_changes_the_encoding_and_the_bytes_only():
    """LERC_ZSTD at encode share 0.4 and bytes share 0.9 (made-up calibration): the tile's
    Lambda CPU-s lose 0.6 of the 100 CPU-s of encoding and nothing else (2 x 180 - 60 =
    300); the staged COGs' parts shrink with the bytes (9 of 64 MiB instead of 10)."""
    cal = {**CAL, "codecs": {"LERC_ZSTD": {"encode_cpu_share": 0.4, "bytes_share": 0.9}}}
    d = costs.tile_cost("33UUP", 16, 3008, cal=cal)
    z = costs.tile_cost("33UUP", 16, 3008, cal=cal, compression="LERC_ZSTD")
    assert d.lambda_s == pytest.approx(2 * 180 / (3008 / 1769))
    assert z.lambda_s == pytest.approx((2 * 180 - 0.6 * 100) / (3008 / 1769))
    assert d.puts - z.puts == 10 - 9
    assert (z.transitions, z.invocations, z.windows) == (d.transitions, d.invocations, d.windows)
    assert costs.codec_shares("DEFLATE", cal) == (1.0, 1.0)
    with pytest.raises(InputError, match="no calibration"):
        costs.codec_shares("LERC_ZSTD", CAL)


def test_plan_projects_lerc_zstd_from_the_calibration(capsys):
    from cloudfree.cli import main

    share, size = costs.codec_shares("LERC_ZSTD")
    assert 0 < share < 1 and 0.8 < size < 1
    d = costs.project(2023, ["33UUP", "34UUP"])
    z = costs.project(2023, ["33UUP", "34UUP"], compression="LERC_ZSTD")
    cal = costs.calibration()
    assert z.total("lambda_s") == pytest.approx(
        d.total("lambda_s") - 2 * (1 - share) * cal["encode_cpu_s_per_tile"]
        / costs.cpu_share(3008))
    assert z.storage_usd_month() < d.storage_usd_month()
    main(["plan", "--year", "2023", "--tiles", "33UUP", "--offline", "--json",
          "--compression", "LERC_ZSTD"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["compression"] == "LERC_ZSTD"
    assert doc["total_usd"] == pytest.approx(costs.project(2023, ["33UUP"],
                                                           compression="LERC_ZSTD").total_usd())


def test_output_bytes_split_by_raw_size():
    # 4 uint16 10 m bands, visual 1.5, red's count 0.5, six 20 m 0.25, two 60 m 1/36
    weights = {b: costs._raw_weight(b) for b in costs.OUTPUT_BANDS}
    assert (weights["blue"], weights["visual"], weights["red"]) == (1.0, 1.5, 1.5)
    assert (weights["swir16"], weights["coastal"]) == (0.25, 1 / 36)
    assert sum(weights.values()) == pytest.approx(7 + 5 / 9)
    parts = costs._output_bytes(7.5e9, list(costs.OUTPUT_BANDS))
    assert sum(parts) == pytest.approx(7.5e9) and parts[1] == pytest.approx(7.5e9 / (7 + 5 / 9))


def test_s3_read_rate_by_hand():
    """Every band 1 MB a scene, SCL nothing (made-up calibration): a decide invocation reads
    16 scenes x blue, red and nir08 / 4 invocations = 12 MB; a 10 m median batch of blue
    16 MB / its batches. Below the rate the figures need, an invocation takes its bytes / rate;
    at or above it only the assembles' transfers are added."""
    cal = {**CAL, "bytes_per_scene": {**{b: 10**6 for b in costs.OUTPUT_BANDS}, "scl": 0}}
    base = costs.tile_cost("33UUP", 16, 3008, cal=cal)
    assert costs.decide_batches() == 4
    decide_s = base.lambda_s * 40 / (40 + 5 * 36 + 6 * 13 + 2 * 5) / 4  # its phase share
    blue_batches = costs.band_reads("blue", 16, 3008)[1]
    blue_s = base.lambda_s * 20 / (40 + 5 * 36 + 6 * 13 + 2 * 5) / blue_batches
    assert base.s3_mb_per_s_needed >= 12 / decide_s - 1e-9
    assert base.s3_mb_per_s_needed >= 16 / blue_batches / blue_s - 1e-9
    # at that rate no read waits; the assembles still move their windows in and their COGs
    # out, twice the tile's 10 parts of 64 MiB in all, in sequence with their work
    need = base.s3_mb_per_s_needed
    fast = costs.tile_cost("33UUP", 16, 3008, cal=cal, s3_mb_per_s=need)
    assert fast.lambda_s == pytest.approx(base.lambda_s + 2 * 10 * costs.PART_BYTES
                                          / (need * 1e6))
    rate = 12 / decide_s / 4  # a quarter of what decide needs: it takes 4x as long
    slow = costs.tile_cost("33UUP", 16, 3008, cal=cal, s3_mb_per_s=rate)
    assert slow.lambda_s >= base.lambda_s + 4 * (4 * decide_s - decide_s) - 1e-6
    assert slow.wall_s > base.wall_s and slow.gb_s == pytest.approx(slow.lambda_s * 3008 / 1024)


def test_plan_prints_the_s3_rate_it_assumes(capsys):
    from cloudfree.cli import main

    main(["plan", "--year", "2023", "--tiles", "33UUP", "--offline"])
    need = costs.project(2023, ["33UUP"]).s3_mb_per_s_needed()
    assert 50 < need < 1000
    assert (f"these figures hold while every decide and median Lambda reads S3 at {need:,.0f} "
            "MB/s or more") in capsys.readouterr().out
    main(["plan", "--year", "2023", "--tiles", "33UUP", "--offline", "--json",
          "--s3-mb-per-s", str(need / 2)])
    doc = json.loads(capsys.readouterr().out)
    assert doc["s3_mb_per_s"] == need / 2
    assert doc["total_usd"] > costs.project(2023, ["33UUP"]).total_usd()


def test_the_calibration_sizes_every_asset_the_invocations_read():
    from cloudfree.outliers import CLOUD_BAND, SHADOW_BAND, WHITE_BAND

    sizes = costs.calibration()["bytes_per_scene"]
    assert set(costs.OUTPUT_BANDS) | {CLOUD_BAND, WHITE_BAND, SHADOW_BAND, "scl"} <= set(sizes)


def test_memory_advice_at_a_read_rate_prices_each_measured_memory():
    """At a given S3 rate the world's advice prices every measured memory (each projected as
    the plan does) and names the cheapest; without a rate it keeps the CPU-bound verdict."""
    from cloudfree.tasks import resolve_tiles

    tiles = resolve_tiles(None, "world")
    p = costs.project(2023, tiles, s3_mb_per_s=70)
    line = next(a for a in p.advice() if a.startswith("memory at 70 MB/s: "))
    prices = {m: costs.project(2023, tiles, memory_mb=m, s3_mb_per_s=70).total_usd()
              for m in (2048, 2560, 3008, 3538)}
    for m, usd in prices.items():
        assert f"{m} MB ${usd:,.0f}" in line
    assert line.endswith(f"the cheapest is {min(prices, key=prices.__getitem__)} MB (the same "
                         "read rate taken at every memory)")
    assert any(a.startswith("memory: GB-s per tile") for a in costs.project(2023, tiles).advice())
