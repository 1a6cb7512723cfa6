"""The one table mapping every error name a Task can end with to *retry* (how) or *catch*.

The state machine's ``Retry`` blocks and ``TimeoutSeconds`` are generated from this table:
``python -m cloudfree.retry statemachine/composite.asl.json`` (``make asl``) rewrites them in
place, and ``tests/unit/test_template.py`` fails when the committed definition differs from the
rendering. Nothing else in the repository types an error name into a Retry block.

Error names, and where each one comes from:

- Ours (``cloudfree.errors``): on AWS a handler's exception class name becomes the Step
  Functions error name (``errorType`` of the Lambda response).
- AWS Lambda service errors, reported by the ``lambda:invoke`` integration as ``Lambda.<name>``:
  ``ClientExecutionTimeoutException``, ``ServiceException``, ``AWSLambdaException`` and
  ``SdkClientException`` are transient 500s (Step Functions developer guide, "Handle Lambda
  service exceptions", bp-lambda-serviceexception.html); ``Lambda.TooManyRequestsException`` is
  the account/function concurrency limit; ``Lambda.Unknown`` is an unhandled error such as
  running out of memory or a function timeout (same page).
- ``Sandbox.Timedout``: the function ran past its Timeout (Lambda developer guide,
  troubleshooting-invocation.html#troubleshooting-timeouts). ``Runtime.ExitError``: the runtime
  process exited (killed for memory, for one).
- ``States.Timeout``: the Task ran past its own ``TimeoutSeconds`` (set below, a bit above the
  function's Timeout, so it only fires when the invoke itself hangs). ``States.TaskFailed``
  matches any Task error but ``States.Timeout`` (Step Functions "Error names"): it is the table's
  last, non-retried row, so it can only catch what the rows above did not name.
- ``Runtime.HandlerError``: MiniStack reports every handler exception under this one name
  (shared/DESIGN.md, measured on 1.5.33), so ours cannot be told apart there: it gets a small
  retry of its own.

Every error that is not retried (or whose retries run out) reaches the tile's ``Catch``
(``States.ALL`` -> RecordFailure), which writes FAILED.json; the report turns those into a
reprocessing request.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import errors


@dataclass(frozen=True)
class Backoff:
    """How a Retry retries: first wait, growth, attempts after the first, cap, full jitter."""

    interval: int
    rate: float
    attempts: int
    max_delay: int | None = None
    jitter: bool = True

    def worst_wait(self) -> float:
        """Seconds of waiting across all retries when every wait hits its (capped) maximum."""
        waits = [self.interval * self.rate ** k for k in range(self.attempts)]
        return sum(min(w, self.max_delay) if self.max_delay else w for w in waits)


#: Not retried: the error is the same on every attempt. Caught by the tile's Catch.
CATCH: Backoff | None = None


@dataclass(frozen=True)
class Rule:
    errors: tuple[str, ...]
    backoff: Backoff | None  # None: not retried (caught)
    why: str


TRANSIENT = Backoff(interval=2, rate=2, attempts=4, max_delay=60)
LAMBDA_SERVICE = Backoff(interval=2, rate=2, attempts=6, max_delay=60)
#: Concurrency bursts: 5, 10, 20, 40, 80, then 120 s (capped) waits, 12 retries, jittered:
#: up to ~16 minutes for the account's concurrency to free up before a tile is given up.
THROTTLED = Backoff(interval=5, rate=2, attempts=12, max_delay=120)
TIMED_OUT = Backoff(interval=5, rate=2, attempts=2, max_delay=60)
#: MiniStack names every handler exception ``Runtime.HandlerError`` (our TransientError
#: included), so locally this name carries the transient budget: a FaultRate run behaves as on
#: AWS. On AWS a Python handler's error is named after its class, so this rule rarely fires there.
LOCAL_HANDLER = Backoff(interval=2, rate=2, attempts=4, max_delay=30)

#: The table. Order matters: Step Functions uses the first retrier whose ErrorEquals names the
#: error, so the non-retried names of ours come first and the ``States.TaskFailed`` wildcard last.
TABLE: tuple[Rule, ...] = (
    Rule(("InputError", "ConfigError", "NoScenesError", "IncompleteError", "ValidationError",
          "CorruptObjectError", "UnreadableSourceError"), CATCH,
         "deterministic: bad input, missing setting, no scenes, missing or invalid inputs, "
         "a band without any readable scene"),
    Rule(("TransientError", "SourceReadError", "StacApiError"), TRANSIENT,
         "ours: S3 throttling/5xx, STAC API failures, source reads that may succeed again"),
    Rule(("Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
          "Lambda.ClientExecutionTimeoutException"), LAMBDA_SERVICE,
         "transient Lambda service 500s (AWS: retry with backoff, 6 attempts)"),
    Rule(("Lambda.TooManyRequestsException",), THROTTLED,
         "concurrency limit reached: wait for bursts to drain"),
    Rule(("Sandbox.Timedout", "States.Timeout", "Lambda.Unknown", "Runtime.ExitError"),
         TIMED_OUT, "timeouts and out-of-memory: slow reads can pass on a retry, a few times"),
    Rule(("Runtime.HandlerError",), LOCAL_HANDLER,
         "MiniStack's one name for every handler exception: the transient budget"),
    Rule(("States.TaskFailed",), CATCH, "anything else: caught and recorded"),
)


def policy(name: str) -> Backoff | None:
    """The retry policy of one error name (the first rule naming it); KeyError if unknown."""
    for rule in TABLE:
        if name in rule.errors:
            return rule.backoff
    raise KeyError(f"{name!r} is not in the error table")


def our_error_names() -> set[str]:
    """Every error class cloudfree raises on purpose (each must be in the table)."""
    out, todo = set(), [errors.CloudfreeError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__ == errors.__name__:
                out.add(sub.__name__)
            todo.append(sub)
    return out - {"ServiceDownError"}  # local tooling only (never raised in a Lambda)


def retriers() -> list[dict]:
    """The ``Retry`` array every Lambda Task carries, rendered from :data:`TABLE`."""
    out = []
    for rule in TABLE:
        b = rule.backoff
        if b is None:
            out.append({"ErrorEquals": list(rule.errors), "MaxAttempts": 0})
            continue
        r: dict = {"ErrorEquals": list(rule.errors), "IntervalSeconds": b.interval,
                   "BackoffRate": b.rate, "MaxAttempts": b.attempts}
        if b.max_delay:
            r["MaxDelaySeconds"] = b.max_delay
        if b.jitter:
            r["JitterStrategy"] = "FULL"
        out.append(r)
    return out


#: Extra seconds a Task waits beyond its function's Timeout before ``States.Timeout``.
TASK_TIMEOUT_MARGIN = 30
_FUNCTION = re.compile(r"^\$\{(\w+)FunctionArn\}$")
_NUMERIC = re.compile(r"(\"\s*:\s*)\$\{(\w+)\}")
_MARK = "@@sub:{}@@"


def task_timeout_placeholder(function: str) -> str:
    """The DefinitionSubstitutions name of a function's Task timeout (``MedianTaskTimeout``)."""
    return f"{function}TaskTimeout"


def _tasks(states: dict):
    for state in states.values():
        if state.get("Type") == "Task":
            yield state
        proc = state.get("ItemProcessor") or state.get("Iterator")
        if proc:
            yield from _tasks(proc["States"])


def render_definition(text: str) -> str:
    """The ASL text with every Lambda Task's Retry and TimeoutSeconds set from the table.

    The definition holds unquoted numeric placeholders (``"MaxConcurrency": ${X}``) that are
    not JSON: they are quoted for parsing and unquoted again on output.
    """
    doc = json.loads(_NUMERIC.sub(lambda m: f'{m.group(1)}"{_MARK.format(m.group(2))}"', text))
    for task in _tasks(doc["States"]):
        fn = _FUNCTION.match(str(task.get("Parameters", {}).get("FunctionName", "")))
        if not fn:
            raise ValueError(f"Task {task.get('Comment')!r} invokes no ${{...FunctionArn}}")
        task["TimeoutSeconds"] = _MARK.format(task_timeout_placeholder(fn.group(1)))
        task["Retry"] = retriers()
    out = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return re.sub(r'"@@sub:(\w+)@@"', r"${\1}", out)


def main(argv: list[str] | None = None) -> int:
    """``python -m cloudfree.retry FILE [--check]``: rewrite (or check) a definition in place."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [Path(a) for a in args if a != "--check"] or [Path("statemachine/composite.asl.json")]
    stale = []
    for path in paths:
        text = path.read_text()
        new = render_definition(text)
        if new != text:
            stale.append(str(path))
            if not check:
                path.write_text(new)
    if stale:
        print(("stale: " if check else "rendered: ") + ", ".join(stale))
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
