"""Injected faults: off by default, deterministic for a given seed, at the advertised rate."""

from __future__ import annotations

import pytest

from cloudfree import faults, retry
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


def test_a_key_fails_at_most_max_per_key_times_so_retries_never_run_out(tmp_path, monkeypatch):
    """Counted from the fault records (local files here, the work bucket on a stack): with
    FAULT_RATE 1 a key fails MAX_PER_KEY attempts, then passes; other keys are not affected."""
    monkeypatch.setattr(faults, "_prefix",
                        lambda task, key, env=None: f"{tmp_path}/faults/{task}/{key}/")
    env = {"FAULT_RATE": "1"}

    def run(key):
        a = faults.attempt("median", key, env)
        try:
            for point in faults.POINTS:
                a.check(point)
        except TransientError:
            return False
        return True

    assert [run("33UUP/2023/blue/0") for _ in range(5)] == \
        [False] * faults.MAX_PER_KEY + [True] * (5 - faults.MAX_PER_KEY)
    assert len(faults._records("median", "33UUP/2023/blue/0")) == faults.MAX_PER_KEY
    assert not run("33UUP/2023/blue/1")  # a key of its own
    # below every budget: median and assemble's retries (TransientError on AWS, MiniStack's
    # Runtime.HandlerError), publish's 2 retries of an asynchronous invocation (S3 event)
    assert faults.MAX_PER_KEY <= min(retry.TRANSIENT.attempts, retry.LOCAL_HANDLER.attempts, 2)
    monkeypatch.setattr(faults, "_prefix", lambda task, key, env=None: None)
    assert not any(run("33UUP/2023/blue/0") for _ in range(3))  # nothing recorded: unbounded
