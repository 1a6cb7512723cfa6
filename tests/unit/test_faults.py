"""Injected faults: off by default, deterministic for a given seed, at the advertised rate."""

from __future__ import annotations

import pytest

from cloudfree import faults
from cloudfree.errors import ConfigError, TransientError


def test_off_unless_fault_rate_is_set():
    a = faults.attempt("median", "33UUP/2023/blue/0", env={})
    assert a.rate == 0 and a.point is None
    for point in faults.POINTS:
        a.check(point)  # never raises


@pytest.mark.parametrize("raw", ["x", "-0.1", "1.5"])
def test_bad_fault_rate_is_a_config_error(raw):
    with pytest.raises(ConfigError, match="FAULT_RATE"):
        faults.fault_rate({"FAULT_RATE": raw})


def test_same_seed_same_decision_and_the_error_names_the_seed():
    env = {"FAULT_RATE": "1", "FAULT_SEED": "abc"}
    a, b = faults.attempt("publish", "33UUP/2023", env), faults.attempt("publish", "33UUP/2023",
                                                                       env)
    assert a.point == b.point and a.point in faults.POINTS
    with pytest.raises(TransientError, match=r"injected fault: publish 33UUP/2023 .*abc"):
        a.check(a.point)
    other = [p for p in faults.POINTS if p != a.point]
    for p in other:
        a.check(p)


def test_without_a_seed_every_attempt_draws_again():
    env = {"FAULT_RATE": "1"}
    seeds = {faults.attempt("median", "k", env).seed for _ in range(20)}
    assert len(seeds) == 20


def test_rate_is_the_share_of_failing_attempts_spread_over_the_three_points():
    env = {"FAULT_RATE": "0.2"}
    drawn = [faults.Attempt("median", "k", 0.2, f"s{i}").point for i in range(5000)]
    failing = [p for p in drawn if p]
    assert 0.18 < len(failing) / len(drawn) < 0.22
    for p in faults.POINTS:
        assert 0.28 < failing.count(p) / len(failing) < 0.39, p
    assert faults.attempt("median", "k", env).rate == 0.2


def test_the_error_is_exactly_transient_error_so_step_functions_retries_it_by_name():
    a = faults.Attempt("assemble", "k", 1.0, "seed")
    with pytest.raises(TransientError) as info:
        a.check(a.point)
    assert type(info.value).__name__ == "TransientError"
    with pytest.raises(ValueError):
        a.check("sometime")
