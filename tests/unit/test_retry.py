"""cloudfree.retry: the error table renders the state machine's Retry and TimeoutSeconds.

GIVEN a small definition with two Lambda Tasks (one nested in a Map) and numeric placeholders,
WHEN it is rendered, THEN every Task gets the table's Retry array and its function's Task timeout
placeholder, the placeholders survive as unquoted numbers, rendering is idempotent, a hand edit is
reported stale by ``--check`` and fixed by a rewrite, and a Task that names no function fails.
"""

from __future__ import annotations

import json

import pytest

from cloudfree import retry

DEFINITION = """{
  "StartAt": "A",
  "States": {
    "A": {"Type": "Task", "Resource": "arn:${Partition}:states:::lambda:invoke",
          "Parameters": {"FunctionName": "${PlanFunctionArn}"}, "Next": "M"},
    "M": {"Type": "Map", "MaxConcurrency": ${TileConcurrency}, "End": true,
          "ItemProcessor": {"StartAt": "B", "States": {
            "B": {"Type": "Task", "Resource": "arn:${Partition}:states:::lambda:invoke",
                  "Parameters": {"FunctionName": "${MedianFunctionArn}"},
                  "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 9}], "End": true}}}}
  }
}
"""


def _parse(text: str) -> dict:
    return json.loads(text.replace("${TileConcurrency}", "3").replace(
        "${PlanTaskTimeout}", "90").replace("${MedianTaskTimeout}", "930"))


def test_render_sets_retry_and_timeout_on_every_task():
    out = retry.render_definition(DEFINITION)
    doc = _parse(out)
    a, b = doc["States"]["A"], doc["States"]["M"]["ItemProcessor"]["States"]["B"]
    assert a["Retry"] == b["Retry"] == retry.retriers()
    assert (a["TimeoutSeconds"], b["TimeoutSeconds"]) == (90, 930)
    assert '"MaxConcurrency": ${TileConcurrency}' in out  # unquoted, as CloudFormation needs
    assert '"arn:${Partition}:states:::lambda:invoke"' in out
    assert retry.render_definition(out) == out


def test_check_reports_a_hand_edit_and_a_rewrite_fixes_it(tmp_path, capsys):
    path = tmp_path / "x.asl.json"
    path.write_text(retry.render_definition(DEFINITION))
    assert retry.main([str(path), "--check"]) == 0
    path.write_text(path.read_text().replace('"MaxAttempts": 12', '"MaxAttempts": 3'))
    assert retry.main([str(path), "--check"]) == 1
    assert "stale" in capsys.readouterr().out
    assert retry.main([str(path)]) == 0
    assert retry.main([str(path), "--check"]) == 0


def test_a_task_without_a_function_placeholder_is_refused():
    bad = DEFINITION.replace("${PlanFunctionArn}", "arn:aws:lambda:us-east-1:1:function:x")
    with pytest.raises(ValueError, match="FunctionArn"):
        retry.render_definition(bad)


def test_rendered_retriers_follow_the_table_order_and_ask_nothing_of_unknown_names():
    rendered = retry.retriers()
    assert [tuple(r["ErrorEquals"]) for r in rendered] == [rule.errors for rule in retry.TABLE]
    assert [r["MaxAttempts"] for r in rendered] == [
        rule.backoff.attempts if rule.backoff else 0 for rule in retry.TABLE]
    with pytest.raises(KeyError):
        retry.policy("NoSuchError")
    # worst-case waits: the throttling rule waits ~16 min, the transient one half a minute
    assert round(retry.THROTTLED.worst_wait()) == 995
    assert round(retry.TRANSIENT.worst_wait()) == 30
