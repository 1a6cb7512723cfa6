"""The Lambda handlers (functions/*/app.py): sample event in, exact task call out.

Each handler is loaded from its folder, its task function replaced by a recorder, and invoked
with ``events/<name>.json`` and a tiny fake Lambda context (GIVEN / WHEN / THEN).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import ValidationError

from cloudfree import tasks
from cloudfree.settings import Settings

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = sorted(p.name for p in (REPO / "functions").iterdir() if (p / "app.py").exists())
ENV = {
    "WORK_BUCKET": "test-work", "DATA_BUCKET": "test-data", "CONTROL_BUCKET": "test-control",
    "STAC_API_URL": "http://127.0.0.1:9/stac", "SOURCE_COLLECTION": "sentinel-2-l2a",
    "SCENE_COUNT": "16", "MASK_CLASSES": "0,1,3,8,9,10,11", "MEDIAN_MEMORY_MB": "3008",
    "STATE_MACHINE_ARN": "arn:aws:states:us-west-2:123456789012:stateMachine:test-composite",
    "POWERTOOLS_SERVICE_NAME": "cloudfree", "POWERTOOLS_METRICS_NAMESPACE": "CloudfreeTest",
    "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING",
}
OPTIONS = {"scenes": 16, "months": None, "max_cloud": None, "mask_classes": None,
           "force": False}
#: What each recorder returns (the fields the handlers log or turn into metrics).
RESULTS = {
    "plan": {"year": 2023, "count": 1}, "select": {"status": "ready", "scenes": 16},
    "decide": {"batch": 0, "squares": 13, "computed": 13, "skipped": 0, "seconds": 1.0},
    "median": {"band": "red", "batch": 1, "windows": 8, "skipped": 0, "seconds": 1.0},
    "assemble": {"band": "red", "cog": "s3://test-data/x.tif", "bytes": 1234},
    "complete": {"tile": "33UUP", "status": "done"},
    "record_failure": {"tile": "33UUP", "status": "failed"},
    "report": {"report": "s3://test-control/reports/x.json", "done": 1, "empty": 0, "failed": 0},
    "publish": {"status": "published"}, "reprocess": {"status": "started"},
}


@dataclass
class FakeContext:
    function_name: str = "cloudfree-test"
    memory_limit_in_mb: int = 128
    invoked_function_arn: str = "arn:aws:lambda:us-west-2:123456789012:function:cloudfree-test"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"


@pytest.fixture(autouse=True)
def env(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)


def load_handler(name: str) -> ModuleType:
    """Import functions/<name>/app.py fresh, under a module name of its own."""
    spec = importlib.util.spec_from_file_location(f"handler_{name}",
                                                  REPO / "functions" / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def event(name: str) -> dict:
    return json.loads((REPO / "events" / f"{name}.json").read_text())


@pytest.fixture
def recorder(monkeypatch):
    """Replace one task function by a recorder of its positional arguments."""
    calls: list[tuple] = []

    def install(name: str):
        def record(*args, **kwargs):
            calls.append((args, kwargs))
            return dict(RESULTS[name])

        monkeypatch.setattr(tasks, name, record)
        return calls

    return install


def expected_calls(name: str, settings: Settings) -> list[tuple]:
    e = event(name)
    if name == "plan":
        return [((e, settings), {})]
    if name in ("publish", "reprocess"):
        s3 = e["Records"][0]["s3"]
        return [((s3["bucket"]["name"], s3["object"]["key"], settings), {})]
    fields = {"select": ("tile", "year", "options"),
              "decide": ("tile", "year", "batch", "options"),
              "median": ("tile", "year", "band", "batch", "options"),
              "assemble": ("tile", "year", "band", "options"),
              "complete": ("tile", "year", "execution"),
              "record_failure": ("tile", "year", "error"),
              "report": ("execution", "year", "tiles_bucket", "tiles_key")}[name]
    return [((*(e[f] for f in fields), settings), {})]


def test_every_handler_is_at_most_30_lines():
    for name in FUNCTIONS:
        lines = (REPO / "functions" / name / "app.py").read_text().splitlines()
        assert len(lines) <= 30, f"functions/{name}/app.py has {len(lines)} lines"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_handler_calls_its_task_with_the_parsed_event(name, recorder):
    # GIVEN the handler, its task replaced by a recorder, and the sample event
    handler = load_handler(name)
    calls = recorder(name)
    # WHEN the handler is invoked
    result = handler.lambda_handler(event(name), FakeContext())
    # THEN the task got exactly the event's values plus the settings from the environment
    assert calls == expected_calls(name, Settings.from_env(ENV))
    # AND the handler returns the task's small result (S3 handlers: one result per record)
    if name in ("publish", "reprocess"):
        assert result == {"results": [RESULTS[name]]}
    else:
        assert result == RESULTS[name]
    assert len(json.dumps(result)) < 4096


def test_handler_results_are_the_sample_options_verbatim(recorder):
    handler = load_handler("median")
    calls = recorder("median")
    handler.lambda_handler(event("median"), FakeContext())
    (tile, year, band, batch, options, _), _ = calls[0]
    assert (tile, year, band, batch, options) == ("33UUP", 2023, "red", 1, OPTIONS)
    assert type(year) is int and type(batch) is int


@pytest.mark.parametrize("name,bad", [
    ("select", {"tile": "33UUP"}),
    ("median", {"tile": "33UUP", "year": 2023, "band": "red", "batch": "first"}),
    ("report", {"execution": "x", "year": 2023}),
    ("complete", {"tile": "33UUP", "year": 2023, "extra": 1}),
    ("publish", {"Records": [{"s3": {}}]}),
    ("reprocess", {"detail-type": "Object Created"}),
])
def test_malformed_event_raises_a_validation_error_and_calls_nothing(name, bad, recorder):
    # GIVEN a handler and an event that does not match its model
    handler = load_handler(name)
    calls = recorder(name)
    # WHEN it is invoked THEN it fails with a pydantic validation error, the task never runs
    with pytest.raises(ValidationError):
        handler.lambda_handler(bad, FakeContext())
    assert calls == []


def test_missing_configuration_is_a_config_error(monkeypatch, recorder):
    from cloudfree.errors import ConfigError

    monkeypatch.delenv("WORK_BUCKET")
    handler = load_handler("select")
    recorder("select")
    with pytest.raises(ConfigError, match="WORK_BUCKET"):
        handler.lambda_handler(event("select"), FakeContext())
