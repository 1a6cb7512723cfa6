"""RecordFailure: record why a tile failed (the report turns it into a request)."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloudfree import tasks
from cloudfree.events import RecordFailureEvent
from cloudfree.settings import Settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=RecordFailureEvent)
def lambda_handler(event: RecordFailureEvent, context: LambdaContext) -> dict:
    logger.append_keys(tile=event.tile, year=event.year)
    result = tasks.record_failure(event.tile, event.year, event.error.model_dump(),
                                  Settings.from_env())
    metrics.add_metric(name="TilesFailed", unit=MetricUnit.Count, value=1)
    logger.warning("tile failed", extra={"error": event.error.Error})
    return result
