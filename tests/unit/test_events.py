"""The event models (cloudfree.events) against the sample events and malformed ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from cloudfree.events import (
    MODELS,
    MedianEvent,
    PlanEvent,
    RecordFailureEvent,
    S3Notification,
    SelectEvent,
    s3_objects,
)

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
FUNCTIONS = sorted(p.name for p in (REPO / "functions").iterdir() if (p / "app.py").exists())


def load(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


def test_one_model_and_one_sample_event_per_function():
    assert sorted(MODELS) == FUNCTIONS
    assert sorted(p.stem for p in EVENTS.glob("*.json")) == FUNCTIONS


@pytest.mark.parametrize("name", FUNCTIONS)
def test_sample_event_validates(name):
    # GIVEN the sample event of a function
    event = load(name)
    # WHEN it is validated with the function's model
    model = MODELS[name].model_validate(event)
    # THEN it parses; the task events round-trip without loss
    if name not in ("publish", "reprocess"):
        assert model.model_dump() == {**model.model_dump(), **event}


def test_task_events_use_tile_33uup_year_2023():
    for name in ("select", "median", "assemble", "complete", "record_failure"):
        event = load(name)
        assert (event["tile"], event["year"]) == ("33UUP", 2023)


@pytest.mark.parametrize("model,event,field", [
    (SelectEvent, {"tile": "33UUP"}, "year"),
    (SelectEvent, {"tile": "33UUP", "year": "twenty"}, "year"),
    (SelectEvent, {"tile": "33UUP", "year": 2023, "option": {}}, "option"),
    (MedianEvent, {"tile": "33UUP", "year": 2023, "band": "red", "batch": -1}, "batch"),
    (MedianEvent, {"tile": "33UUP", "year": 2023, "band": "red"}, "batch"),
    (PlanEvent, {"year": 2023, "tiles": ["33UUP"]}, "year"),  # the input goes under `input`
    (RecordFailureEvent, {"tile": "33UUP", "year": 2023, "error": "boom"}, "error"),
])
def test_malformed_events_raise_a_validation_error_naming_the_field(model, event, field):
    with pytest.raises(ValidationError) as err:
        model.model_validate(event)
    assert field in str(err.value)


@pytest.mark.parametrize("bad", [{"records": []}, {"Records": []}, {"Records": [{"s3": {}}]},
                                 {"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}])
def test_malformed_s3_notification_is_a_validation_error(bad):
    with pytest.raises(ValidationError, match="not an S3 notification"):
        S3Notification.model_validate(bad)


def test_s3_objects_url_decodes_keys():
    # GIVEN an S3 notification whose key has a space (S3 encodes it as '+') and a '%2B'
    event = load("reprocess")
    event["Records"][0]["s3"]["object"]["key"] = "requests/retry+2023%2B33UUP.json"
    # WHEN the objects are listed
    objects = s3_objects(S3Notification.model_validate(event))
    # THEN the key is the real object key
    bucket = event["Records"][0]["s3"]["bucket"]["name"]
    assert objects == [(bucket, "requests/retry 2023+33UUP.json")]


def test_record_failure_error_defaults_to_empty():
    event = RecordFailureEvent.model_validate({"tile": "33UUP", "year": 2023})
    assert event.error.model_dump() == {"Error": None, "Cause": None}
