"""Assemble: stitch one band's windows into its web-optimized COG."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from cloudfree import tasks
from cloudfree.events import AssembleEvent
from cloudfree.settings import Settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@event_parser(model=AssembleEvent)
def lambda_handler(event: AssembleEvent, context: LambdaContext) -> dict:
    logger.append_keys(tile=event.tile, year=event.year, band=event.band)
    result = tasks.assemble(event.tile, event.year, event.band, event.options,
                            Settings.from_env())
    metrics.add_metric(name="CogBytes", unit=MetricUnit.Bytes, value=result["bytes"])
    logger.info("assembled", extra=result)
    return result
