"""Decide: the shared outlier decision of one batch of squares, before the bands' medians."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloudfree import tasks
from cloudfree.events import DecideEvent
from cloudfree.settings import Settings

logger = Logger()
logger.append_keys(**tasks.pixel_worker_setup())  # malloc tuned; zlib-ng and isal expected
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=DecideEvent)
def lambda_handler(event: DecideEvent, context: LambdaContext) -> dict:
    logger.append_keys(tile=event.tile, year=event.year, batch=event.batch)
    result = tasks.decide(event.tile, event.year, event.batch, event.options,
                          Settings.from_env())
    metrics.add_metric(name="SquaresDecided", unit=MetricUnit.Count, value=result["computed"])
    logger.info("decide done", extra=result)
    return result
