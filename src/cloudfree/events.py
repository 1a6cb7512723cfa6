"""The events the Lambda handlers receive, as pydantic models (validated at the boundary).

One model per state machine task (``docs/architecture.md``, "The state machine and its task
contracts"); *publish* and *reprocess* receive S3 notifications, parsed with Powertools'
``S3Model``. The models check shapes and types only: the task layer (``cloudfree.tasks``) owns
the domain rules (tile ids, year range, option values) and raises ``InputError`` for those.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.parser.models import S3Model
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Event(BaseModel):
    """Unknown fields are an error: a typo in the state machine must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanEvent(_Event):
    """The whole execution input (``$``, as started: any JSON, validated by ``tasks.plan`` so a
    missing, mistyped or unknown field gets an ``InputError`` naming it) plus the execution name
    (``$$.Execution.Name``)."""

    input: Any = None
    execution: str | None = None


class SelectEvent(_Event):
    tile: str = Field(min_length=5, max_length=5)
    year: int
    options: dict[str, Any] | None = None


class DecideEvent(_Event):
    tile: str = Field(min_length=5, max_length=5)
    year: int
    batch: int = Field(ge=0)
    options: dict[str, Any] | None = None


class MedianEvent(_Event):
    tile: str = Field(min_length=5, max_length=5)
    year: int
    band: str = Field(min_length=1)
    batch: int = Field(ge=0)
    options: dict[str, Any] | None = None


class AssembleEvent(_Event):
    tile: str = Field(min_length=5, max_length=5)
    year: int
    band: str = Field(min_length=1)
    options: dict[str, Any] | None = None


class CompleteEvent(_Event):
    tile: str = Field(min_length=5, max_length=5)
    year: int
    execution: str | None = None


class StepError(BaseModel):
    """The ``{"Error", "Cause"}`` a Step Functions Catch puts at ``$.error``."""

    model_config = ConfigDict(frozen=True)

    Error: str | None = None
    Cause: str | None = None


class RecordFailureEvent(_Event):
    tile: str = Field(min_length=5, max_length=5)
    year: int
    error: StepError = Field(default_factory=StepError)


class ReportEvent(_Event):
    execution: str = Field(min_length=1)
    year: int
    tiles_bucket: str = Field(min_length=3)
    tiles_key: str = Field(min_length=1)


class S3Notification(S3Model):
    """Powertools' ``S3Model``, with a shape check first: Powertools' record validator raises
    a ``TypeError`` (not a validation error) on records without ``eventName``/``s3.object``."""

    @model_validator(mode="before")
    @classmethod
    def _records_shape(cls, data: Any) -> Any:
        records = data.get("Records") if isinstance(data, dict) else None
        ok = isinstance(records, list) and records and all(
            isinstance(r, dict) and isinstance(r.get("eventName"), str)
            and isinstance(r.get("s3"), dict) and isinstance(r["s3"].get("object"), dict)
            for r in records)
        if not ok:
            raise ValueError("not an S3 notification: expected a non-empty `Records` list, "
                             "each record with `eventName` and `s3.object`")
        return data


#: The model of each function's event, by function folder name (``functions/<name>/``).
MODELS: dict[str, type[BaseModel]] = {
    "plan": PlanEvent,
    "select": SelectEvent,
    "decide": DecideEvent,
    "median": MedianEvent,
    "assemble": AssembleEvent,
    "complete": CompleteEvent,
    "record_failure": RecordFailureEvent,
    "report": ReportEvent,
    "publish": S3Notification,
    "reprocess": S3Notification,
}


def s3_objects(event: S3Model) -> list[tuple[str, str]]:
    """``(bucket, key)`` of every record; S3 notifications URL-encode keys (``+`` = space)."""
    return [(r.s3.bucket.name, unquote_plus(r.s3.object.key)) for r in event.Records]


__all__ = ["MODELS", "S3Model", "S3Notification", "s3_objects", "PlanEvent", "SelectEvent",
           "DecideEvent", "MedianEvent", "AssembleEvent", "CompleteEvent", "RecordFailureEvent",
           "ReportEvent", "StepError"]
