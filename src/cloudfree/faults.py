"""Injected faults: make median, assemble and publish fail at random, to prove that retries and
reruns give the same outputs as a clean run.

Off unless the template parameter ``FaultRate`` (env ``FAULT_RATE``) is above 0; it is 0 by
default and never set in production. ``FaultRate`` is the probability that one *attempt* of a
task fails; the failing attempt fails at one of its points, chosen at random: ``before`` any
write, ``during`` (some outputs written, not all) or ``after`` every write (before it returns).
The error is a :class:`~cloudfree.errors.TransientError`, so the state machine's retries apply.

Every injected fault is also recorded as a small object under the work bucket's ``faults/``
prefix (``WORK_BUCKET``), so a test can count the faults and retries a run survived.

Bounded: one task key (a tile's median batch, a band's assemble, a tile's publish) gets at most
``MAX_PER_KEY`` injected faults, counted from those records. That stays below every retry budget
the faulty tasks have, so a FaultRate run tests that retries recover, never that they run out
(``test_a_failing_tile_is_recorded_and_reported`` tests that). Unbounded, FaultRate 0.2 failed
one key's five attempts (4 retries: ``retry.LOCAL_HANDLER``) with probability 0.2^5, about 1 %
of runs over the small tile's 31 keys: CI saw it once (TooManyTileFailures).

Determinism: every attempt draws from its own RNG, seeded by ``FAULT_SEED`` (env) or a fresh
random token, plus the task and its key (tile/band/batch). The seed is in the error message, so
a failing attempt can be replayed exactly by setting ``FAULT_SEED`` to it.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
from dataclasses import dataclass, field

from .errors import ConfigError, TransientError

log = logging.getLogger(__name__)

POINTS = ("before", "during", "after")
#: Injected faults per task key at most: below the smallest retry budget of a faulty task
#: (publish: Lambda's 2 retries of an asynchronous invocation; median and assemble: 4).
MAX_PER_KEY = 2


#: The error raised: exactly ``TransientError`` (not a subclass), because on AWS the exception's
#: class name is the Step Functions error name and Retry matches names, not class hierarchies.
#: Its message starts with ``injected fault`` so logs and tests can tell it from a real one.
InjectedFault = TransientError
def fault_rate(env: dict[str, str] | None = None) -> float:
    """``FAULT_RATE`` as a probability (0 when unset); a bad value is a ConfigError."""
    raw = (os.environ if env is None else env).get("FAULT_RATE") or "0"
    try:
        rate = float(raw)
    except ValueError as err:
        raise ConfigError(f"FAULT_RATE must be a number within 0-1, got {raw!r}") from err
    if not 0 <= rate <= 1:
        raise ConfigError(f"FAULT_RATE must be within 0-1, got {rate}")
    return rate


@dataclass
class Attempt:
    """One attempt of one task: decides once whether and where it fails."""

    task: str
    key: str
    rate: float = 0.0
    seed: str = ""
    point: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            return
        self.seed = self.seed or secrets.token_hex(8)
        rng = random.Random(f"{self.seed}|{self.task}|{self.key}")
        if rng.random() < self.rate:
            self.point = rng.choice(POINTS)

    def check(self, point: str) -> None:
        """Raise ``TransientError("injected fault …")`` if drawn to fail at ``point``."""
        if point not in POINTS:
            raise ValueError(f"fault point must be one of {POINTS}, got {point!r}")
        if self.point == point:
            log.warning("injected fault: %s %s %s (seed %s)", self.task, self.key, point,
                        self.seed)
            _record(self, point)
            raise InjectedFault(f"injected fault: {self.task} {self.key} {point} "
                                f"(FAULT_SEED={self.seed})")


def attempt(task: str, key: str, env: dict[str, str] | None = None) -> Attempt:
    """The fault plan of one attempt from the environment (``FAULT_RATE``, ``FAULT_SEED``); no
    fault once the key has had ``MAX_PER_KEY`` of them (counted from their records)."""
    env = os.environ if env is None else env
    planned = Attempt(task, key, fault_rate(env), env.get("FAULT_SEED") or "")
    if planned.point is not None and len(_records(task, key, env)) >= MAX_PER_KEY:
        planned.point = None  # this key had its share: retries recover, they never run out
    return planned


def _prefix(task: str, key: str, env: dict[str, str] | None = None) -> str | None:
    """Where the faults of one task key are recorded: ``s3://$WORK_BUCKET/faults/{task}/{key}/``
    (None without a work bucket: nothing recorded, nothing bounded)."""
    bucket = (os.environ if env is None else env).get("WORK_BUCKET")
    return f"s3://{bucket}/faults/{task}/{key}/" if bucket else None


def _records(task: str, key: str, env: dict[str, str] | None = None) -> list[str]:
    """The faults recorded for one task key (an unreadable listing counts as none)."""
    prefix = _prefix(task, key, env)
    if prefix is None:
        return []
    from . import storage

    try:
        return list(storage.list_uris(prefix))
    except Exception as err:  # noqa: BLE001 - the bound is best effort, like the records
        log.warning("could not list the injected faults of %s %s: %s", task, key, err)
        return []


def _record(attempt: Attempt, point: str) -> None:
    """Best effort: ``{_prefix}/{seed}-{point}.json``."""
    prefix = _prefix(attempt.task, attempt.key)
    if prefix is None:
        return
    from . import storage

    try:
        storage.write_json(f"{prefix}{attempt.seed}-{point}.json",
                           {"point": point, "seed": attempt.seed})
    except Exception as err:  # noqa: BLE001 - the record never hides the fault itself
        log.warning("could not record the injected fault: %s", err)
