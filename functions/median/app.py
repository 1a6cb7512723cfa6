"""Median: composite one batch of windows of one band."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloudfree import tasks
from cloudfree.events import MedianEvent
from cloudfree.settings import Settings

logger = Logger()
logger.append_keys(**tasks.pixel_worker_setup())  # malloc tuned; zlib-ng and isal expected
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=MedianEvent)
def lambda_handler(event: MedianEvent, context: LambdaContext) -> dict:
    logger.append_keys(tile=event.tile, year=event.year, band=event.band, batch=event.batch)
    result = tasks.median(event.tile, event.year, event.band, event.batch, event.options,
                          Settings.from_env())
    metrics.add_metric(name="WindowsComposited", unit=MetricUnit.Count, value=result["windows"])
    logger.info("median done", extra=result)
    return result
