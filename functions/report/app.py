"""Report: summarise an execution per tile; failed tiles become a pending request."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloudfree import tasks
from cloudfree.events import ReportEvent
from cloudfree.settings import Settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=ReportEvent)
def lambda_handler(event: ReportEvent, context: LambdaContext) -> dict:
    result = tasks.report(event.execution, event.year, event.tiles_bucket, event.tiles_key,
                          Settings.from_env())
    for status in ("done", "empty", "failed"):
        metrics.add_metric(name=f"Tiles{status.title()}", unit=MetricUnit.Count,
                           value=result[status])
    logger.info("report written", extra=result)
    return result
